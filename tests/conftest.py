"""Shared fixtures: the real-kernel samples and the checks every tier applies."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "vmcore_samples"))
sys.path.insert(0, str(HERE))

import samples  # noqa: E402


@pytest.fixture(scope="session")
def real_kernel() -> str:
    """The kernel the real-dump tests use; fails (not skips) when it is not installed."""
    why = samples.missing_message()
    if why:
        pytest.fail(why + "\nrun the README's set-up command (./setup.sh)")
    return samples.DEFAULT_KERNEL
