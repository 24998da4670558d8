"""Exact backtraces on the real dumps of every kernel: kdlgdb's frames of each task the hung-task detector
reported equal, frame for frame, the stack the kernel printed (the frames its unwinder vouched for)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import matrix
import samples
from realgdb import EXTENSION

pytestmark = pytest.mark.realkernel
HERE = Path(__file__).parent
# gdb's minimal symbol of a compiler clone may lack the number kallsyms gives it ("f.constprop" for
# "f.constprop.0"): the same function at the same offset.
_CLONE_NUMBER = re.compile(r"(\.(?:constprop|isra|part|cold))\.\d+(?=[.+])")


def same_frames(task: dict) -> bool:
    """Frame for frame the same: the same address where the kernel's name resolves to one (names differ
    where two symbols share an address: entry_SYSCALL_64+0xa6 is entry_SYSCALL_64_after_hwframe+0x6e),
    else the same name."""
    if len(task["ours"]) != len(task["kernel"]):
        return False
    for ours, kernels, pc, kernel_pc in zip(task["ours"], task["kernel"], task["ours_pcs"], task["kernel_pcs"]):
        if kernel_pc is not None and pc == kernel_pc:
            continue
        if _CLONE_NUMBER.sub(r"\1", ours) != _CLONE_NUMBER.sub(r"\1", kernels):
            return False
    return True


def compare_on_dump(dump: samples.Dump) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = ["gdb", "-nx", "-q", "-batch", str(dump.vmlinux), str(dump.path), "-ex", f"source {EXTENSION}",
               "-ex", f"python import sys; sys.path.insert(0, {str(HERE)!r}); import unwind_check; "
                      f"unwind_check.compare({str(out)!r})"]
        subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        doc = json.loads(out.read_text())
    assert "exception" not in doc, doc.get("exception")
    return doc


@matrix.over("scenario,kaslr", [(s, k) for s in samples.SCENARIOS for k in (False, True)])
def test_backtraces_equal_the_kernels_own(real_kernel: str, scenario: str, kaslr: bool) -> None:
    dump = samples.ensure_dump(scenario, kaslr, real_kernel)
    doc = compare_on_dump(dump)
    if dump.truth.get("hung_task_reported"):  # the detector spoke: there is something to compare
        assert any(t["ours"] is not None for t in doc["tasks"].values()), doc
    stats = os.environ.get("KDLGDB_UNWIND_STATS")  # a file to append this dump's counts to (for the README)
    if stats:
        compared = [t for t in doc["tasks"].values() if t["ours"] is not None]
        with open(stats, "a") as f:
            f.write(json.dumps({"kernel": real_kernel, "scenario": scenario, "kaslr": kaslr, "tasks": len(compared),
                                "frames": sum(len(t["kernel"]) for t in compared),
                                "agree": sum(len(t["kernel"]) for t in compared if same_frames(t))}) + "\n")
    differ = {pid: t for pid, t in doc["tasks"].items() if t["ours"] is not None and not same_frames(t)}
    assert not differ, json.dumps(differ, indent=1)
    assert not doc["errors"], doc["errors"]
    assert set(doc["methods"]) <= {"orc", ""}, doc["methods"]  # "": tasks on a CPU (their CPU's frames)


# The function whose `lock` argument is the mutex a waiter sleeps on: __mutex_lock, or on PREEMPT_RT (a mutex is
# an rt_mutex) the rt_mutex slow path, whose lock (a struct rt_mutex_base *) is the mutex's first member.
_LOCK_FRAMES = ("__mutex_lock", "__rt_mutex_slowlock_locked", "rt_mutex_slowlock")


def kd_task_commands(pid: int) -> list[str]:
    out = [f"kd-task {pid}", "bt"]
    for function in _LOCK_FRAMES:
        out += [f"frame function {function}", "echo @@lock@@\\n", "p/x (unsigned long) lock", "info locals"]
    return out + ["info registers rip rsp", "kd-task", "bt 1"]


def check_kd_task(stdout: str, stderr: str, lock: int) -> None:
    assert "Traceback" not in stdout + stderr
    assert "gdb shows task" in stdout and "gdb shows the dump's own thread again" in stdout
    trace = stdout.split("gdb shows task", 1)[1]
    first = re.search(r"from frame #(\d+) on", trace)
    assert first, trace[:2000]  # #1, or after the inline frames the dump's own thread stopped in
    assert re.search(rf"^#{first.group(1)} .* in (context_switch|__schedule)", trace, re.M), trace[:2000]
    assert re.search(r"^#\d+ .*\b(__mutex_lock|rt_mutex_slowlock\w*|__rt_mutex_slowlock_locked)\b", trace, re.M)
    values = re.findall(r"@@lock@@\n\$\d+ = (0x[0-9a-f]+)", trace)
    assert values and int(values[0], 16) == lock, (values, hex(lock))


@pytest.mark.parametrize("real_kernel", samples.KERNELS, indirect=True)
def test_gdb_commands_on_a_sleeping_task(real_kernel: str) -> None:
    """kd-task of a mutex waiter: gdb's own bt shows its slow path, and `p lock` in that frame the lock's
    address the guest printed (KASLR off: gdb's symbols are the kernel's addresses)."""
    dump = samples.ensure_dump("kdl_mutex", False, real_kernel)
    from realgdb import gdb as run_gdb

    done = run_gdb(dump.vmlinux, dump.path, *kd_task_commands(dump.truth["tasks"]["kdl_m1"]))
    check_kd_task(done.stdout, done.stderr, int(dump.truth["locks"]["m2"]["address"], 16))


@pytest.mark.parametrize("real_kernel", [samples.DEFAULT_KERNEL], indirect=True)
def test_gdb_commands_on_a_sleeping_task_live(real_kernel: str) -> None:
    """The same over a live guest's gdbstub."""
    from realgdb import gdb as run_gdb

    with samples.boot_live("kdl_mutex", kaslr=False, kernel=real_kernel) as live:
        done = run_gdb(live.vmlinux, None, *kd_task_commands(live.truth["tasks"]["kdl_m1"]),
                       remote=f"127.0.0.1:{live.gdb_port}")
        check_kd_task(done.stdout, done.stderr, int(live.truth["locks"]["m2"]["address"], 16))


@pytest.mark.parametrize("real_kernel", samples.KERNELS, indirect=True)
def test_kd_task_follows_an_interrupted_task_past_its_pt_regs(real_kernel: str) -> None:
    """kd-task of kdl_irq's kthread, whose CPU took an interrupt and spins, in the softirq run on its way out, on the
    lock the task holds: gdb's bt goes on past the interrupt entry to kthread and ret_from_fork, and the
    interrupted frame runs on the sp the interrupt saved: pt_regs->sp, as gdb itself reads it from the handler's
    `regs` argument (not the word above pt_regs->ip)."""
    if "-rt-" in real_kernel:
        pytest.skip("on PREEMPT_RT the timer callback runs in a thread: there is no interrupt frame")
    from realgdb import gdb as run_gdb

    dump = samples.ensure_dump("kdl_irq", False, real_kernel)
    pid = dump.truth["tasks"]["kdl_irq"]
    done = run_gdb(dump.vmlinux, dump.path, f"kd-task {pid}", "bt")
    trace = done.stdout.split("gdb shows task", 1)[1]
    frames = [(int(n), name) for n, name in re.findall(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\S+) \(", trace, re.M)]
    # sysvec_apic_timer_interrupt, or whichever interrupt ran the softirq (the last of its inlined frames, which
    # take `regs` too: instr_sysvec_*).
    handlers = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(regs=0x", trace, re.M)
    assert handlers, trace
    handler = handlers[-1]
    entry = next(n for n, name in frames if name == f"asm_{handler}")
    outer = [name for n, name in frames if n > entry]
    assert "kthread" in outer and "ret_from_fork" in outer, trace
    done = run_gdb(dump.vmlinux, dump.path, f"kd-task {pid}", f"frame function {handler}", "echo @@regs@@\\n",
                   "p/x regs->sp", f"frame {entry + 1}", "echo @@rsp@@\\n", "p/x $rsp")
    saved = re.search(r"@@regs@@\n\$\d+ = (0x[0-9a-f]+)", done.stdout)
    rsp = re.search(r"@@rsp@@\n\$\d+ = (0x[0-9a-f]+)", done.stdout)
    assert saved and rsp, done.stdout[-2000:]
    assert int(rsp.group(1), 16) == int(saved.group(1), 16)


@pytest.mark.parametrize("real_kernel", samples.KERNELS, indirect=True)
def test_kd_task_of_a_user_process_ends_at_the_system_call_entry(real_kernel: str) -> None:
    """kd-task of kdl_freeze's writer, a busybox process blocked in write() on a frozen filesystem: gdb's bt
    ends where the kernel stack does, at the system call's entry (the pt_regs of user mode), instead of going on
    into user addresses that gdb guesses from the entry code."""
    from realgdb import gdb as run_gdb

    dump = samples.ensure_dump("kdl_freeze", False, real_kernel)
    done = run_gdb(dump.vmlinux, dump.path, f"kd-task {dump.truth['tasks']['kdl_fz_append']}", "bt")
    trace = done.stdout.split("gdb shows task", 1)[1]
    names = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(", trace, re.M)
    assert "vfs_write" in names or "ksys_write" in names, trace
    assert names[-1].startswith("entry_SYSCALL_64"), trace
    assert not re.search(r"^#\d+\s+0x0000[0-7]", trace, re.M), trace  # no user-space pc
