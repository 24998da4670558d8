"""Shared fixtures: the real-kernel samples and the checks every tier applies."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "vmcore_samples"))
sys.path.insert(0, str(HERE))

import samples  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true",
                     help="run every real-kernel case: every product of kernel, scenario, KASLR, form (before a "
                          "release); by default every dimension on every kernel (tests/matrix.py)")
    parser.addoption("--fuzz-cases", type=int, default=0, metavar="N",
                     help="the fuzzing tier (tests/test_fuzz.py) runs N cases across its three kinds instead of its "
                          "fixed default budget (e.g. 100000, outside CI)")
    parser.addoption("--fuzz-seed", type=int, default=0, help="the fuzzing tier's seed (default 0)")
    parser.addoption("--fuzz-case", metavar="KIND:CASE", help="run only this fuzz case, as a failure names it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --full, leave out the cases marked ``full``."""
    if config.getoption("--full"):
        return
    left_out = [item for item in items if item.get_closest_marker("full")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("full")]


@pytest.fixture(scope="session", autouse=True)
def _shared_debuggers():
    """The gdbs (and crash sessions) kept open for many tests end with the test session."""
    yield
    import realgdb

    realgdb.close_shared()


@pytest.fixture(scope="session", params=samples.KERNELS)
def real_kernel(request: pytest.FixtureRequest) -> str:
    """Each kernel the real-dump tests run on, in turn; fails (not skips) when one is not installed."""
    kernel: str = request.param
    why = samples.missing_message(kernel)
    if why:
        pytest.fail(why + "\nrun the README's set-up command (./setup.sh)")
    return kernel


_crash_cannot_open: dict[str, str] = {}


@pytest.fixture(scope="session")
def crash_kernel(real_kernel: str, request: pytest.FixtureRequest) -> str:
    """``real_kernel`` when the installed crash opens its dumps (with this checkout's extension built);
    a skip naming crash's own error when it does not (Debian 12's crash 8.0.2 stops on 6.4+ kernels)."""
    import realcrash

    if real_kernel not in _crash_cannot_open:  # once a kernel: the fixture comes back when the kernel does
        realcrash.build_extension()
        dump = samples.ensure_dump(samples.SCENARIOS[0], False, real_kernel)
        # crash's own refusal (it stops before the extension loads: 7 s of CPU) is remembered in pytest's
        # cache for every worker and run, keyed by crash's binary, the vmlinux and the dump; an answer that
        # involves kdlgdb is asked again each time, so a broken extension fails tests instead of skipping them.
        key = "kdlgdb/crash_refuses/" + "-".join(
            f"{path.stat().st_mtime_ns:x}" for path in (Path(shutil.which("crash") or "/"), dump.vmlinux, dump.path))
        known = request.config.cache.get(key, "")
        if not known:
            known, stopped_before_the_extension = realcrash.cannot_open(dump)
            if known and stopped_before_the_extension:
                request.config.cache.set(key, known)
        _crash_cannot_open[real_kernel] = known
    why = _crash_cannot_open[real_kernel]
    if why:
        pytest.skip(why)
    return real_kernel
