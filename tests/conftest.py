"""Shared fixtures: the real-kernel samples and the checks every tier applies."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "vmcore_samples"))
sys.path.insert(0, str(HERE))

import samples  # noqa: E402


@pytest.fixture(scope="session", params=samples.KERNELS)
def real_kernel(request: pytest.FixtureRequest) -> str:
    """Each kernel the real-dump tests run on, in turn; fails (not skips) when one is not installed."""
    kernel: str = request.param
    why = samples.missing_message(kernel)
    if why:
        pytest.fail(why + "\nrun the README's set-up command (./setup.sh)")
    return kernel


@pytest.fixture(scope="session")
def crash_kernel(real_kernel: str) -> str:
    """``real_kernel`` when the installed crash opens its dumps (with this checkout's extension built);
    a skip naming crash's own error when it does not (Debian 12's crash 8.0.2 stops on 6.4+ kernels)."""
    import realcrash

    realcrash.build_extension()
    why = realcrash.cannot_open(samples.ensure_dump(samples.SCENARIOS[0], False, real_kernel))
    if why:
        pytest.skip(why)
    return real_kernel
