"""Real gdb on real dumps of Debian's kernel: every scenario, KASLR on and off."""
from __future__ import annotations

import pytest

import samples
from expectations import check_waitfor
from realgdb import gdb, waitfor_json

pytestmark = pytest.mark.realkernel

CASES = [(s, k) for s in samples.SCENARIOS for k in (False, True)]


@pytest.mark.parametrize("scenario,kaslr", CASES, ids=[f"{s}-{'kaslr' if k else 'nokaslr'}" for s, k in CASES])
def test_kdlgdb_waitfor_on_dump(real_kernel: str, scenario: str, kaslr: bool) -> None:
    dump = samples.ensure_dump(scenario, kaslr, real_kernel)
    status, doc = waitfor_json(dump.vmlinux, dump.path)
    expected = samples.expected(scenario)
    check_waitfor(doc, expected, dump.truth)
    assert status == (1 if expected["cycles"] else 0)
    assert doc["release"] == real_kernel
    assert int(doc["kaslr_offset"], 16) == dump.kernel_offset
    assert doc["problems"] == []


def test_gdb_session_commands(real_kernel: str) -> None:
    """What a user types in gdb after `source gdbext/kdlgdb.py`, on the KASLR ABBA dump."""
    dump = samples.ensure_dump("kdl_abba", True, real_kernel)
    a, b = dump.truth["tasks"]["kdl_a"], dump.truth["tasks"]["kdl_b"]
    done = gdb(dump.vmlinux, dump.path, "kd-tasks -s D", f"kd-bt {a}", "kd-locks", "kd-waitfor", "kd-waitfor -p 1", "help kd-waitfor")
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    rows = [line.split() for line in out.splitlines() if line.strip().endswith(("kdl_a", "kdl_b")) and line.split()[0].isdigit()]
    assert sorted((int(r[0]), r[2], r[-1]) for r in rows[:2]) == [(a, "D", "kdl_a"), (b, "D", "kdl_b")]
    assert f'PID: {a}' in out and "kdl_a_fn+" in out and "[kdl_abba]" in out and "__down_common+" in out
    sem1 = dump.truth["locks"]["sem1"]["address"]
    assert f"semaphore {sem1}  sem1 [kdl_abba]" in out
    assert f"PROBABLE DEADLOCK: kdl_a ({a}) and kdl_b ({b})" in out
    assert "take sem1 [kdl_abba] before sem2 [kdl_abba]" in out
    assert "usage: kd-waitfor" in out  # help text from the argparse declaration


def test_usage_error_is_one_line(real_kernel: str) -> None:
    dump = samples.ensure_dump("kdl_abba", False, real_kernel)
    done = gdb(dump.vmlinux, dump.path, "kd-tasks --bogus", "kd-bt 99999", "kd-tasks -s D")
    errors = [line for line in done.stderr.splitlines() if line.startswith("kd-")]
    assert errors[0].startswith("kd-tasks: unrecognized arguments: --bogus; usage: kd-tasks")
    assert errors[1] == "kd-bt: no task with pid or address 99999"
    assert "Traceback" not in done.stderr
    assert "kdl_a" in done.stdout  # gdb and kdlgdb go on working after the errors
