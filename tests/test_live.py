"""A live Debian kernel in QEMU, read through its gdbstub (`target remote`)."""
from __future__ import annotations

import pytest

import matrix
import samples
from expectations import check_wait_sources, check_waitfor
from realgdb import gdb, waitfor_json

pytestmark = pytest.mark.realkernel


# A boot each (~8 s). The dump tests run every scenario on every kernel; live, what differs is how memory
# and registers are read, so by default: on the default kernel the canonical ABBA, the tasks found on CPUs
# from the vCPUs' registers (a spinner, a spinner in an interrupt), a filesystem freeze with user processes,
# a work item; two rotated scenarios on each other kernel. --full boots them all.
LIVE_ON_THE_DEFAULT_KERNEL = ("kdl_abba", "kdl_spin", "kdl_irq", "kdl_freeze", "kdl_flush")


@matrix.over("scenario", samples.SCENARIOS, other_kernels=2, default_cases=LIVE_ON_THE_DEFAULT_KERNEL)
def test_kdlgdb_waitfor_live(real_kernel: str, scenario: str) -> None:
    with samples.boot_live(scenario, kaslr=True, kernel=real_kernel) as live:
        remote = f"127.0.0.1:{live.gdb_port}"
        status, doc = waitfor_json(live.vmlinux, remote=remote)
        expected = samples.expected(scenario, real_kernel)
        check_waitfor(doc, expected, live.truth)
        check_wait_sources(doc, expected, live.truth, real_kernel)  # frame variables over the gdbstub too
        assert status == (1 if expected["cycles"] else 0)
        assert int(doc["kaslr_offset"], 16) == live.kernel_offset  # found by probing, not told
        # kdlgdb detached: the guest still runs and answers a second session.
        assert live.guest.qmp("query-status")["status"] == "running"
        states = expected.get("states", {})
        # A state is a letter, or the letters it may take (which one depends on the boot: kdl_exit on RT).
        letters = "".join(sorted({letter for comm in expected["waits"] for letter in
                                  (lambda a: a.split("|") if isinstance(a, str) else a)(states.get(comm, "D"))}))
        again = gdb(live.vmlinux, None, f"kd-tasks -s {letters}", f"kd-bt {next(iter(expected['waits']))}", remote=remote)
        # (a kworker the truth names by role, "kworker_reset", is listed under its own name)
        assert all(comm in again.stdout for comm in expected["waits"] if comm not in expected.get("workers", []))
        assert "(no stack frames)" not in again.stdout  # on-CPU tasks too: from their vCPU's registers


def test_dropped_gdbstub_is_one_line(real_kernel: str) -> None:
    with samples.boot_live("kdl_abba", kaslr=False, kernel=real_kernel) as live:
        remote = f"127.0.0.1:{live.gdb_port}"
        # QEMU goes away under gdb (as when a guest dies), then the user asks for the graph.
        done = gdb(live.vmlinux, None, "monitor quit", "kd-waitfor", remote=remote)
    lines = [line for line in done.stderr.splitlines() if line.startswith("kd-waitfor")]
    assert lines and "Traceback" not in done.stderr, done.stderr
