"""The analysis on real kernel data, without gdb or QEMU: replays of real dumps.

Each recording was made by ``tests/vmcore_samples/record.py`` from a real
Debian kernel's dump; its truth file is what the guest itself printed.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

import samples
from expectations import NO_SLOW_PATH, check_waitfor
from kdlgdb.analysis.graph import WaitForGraph
from kdlgdb.errors import ReadError
from kdlgdb.frontends import commands
from kdlgdb.kernel.collect import collect
from kdlgdb.kernel.stack import source_name
from kdlgdb.render.json import waitfor_json
from kdlgdb.target.replay import RecordingMiss, ReplayTarget

RECORDINGS = sorted((Path(__file__).parent / "vmcore_samples" / "recordings").glob("*/*.json.gz"))


def _scenario(path: Path) -> str:
    return path.name.rsplit("-", 1)[0]


def _truth(path: Path) -> dict:
    return json.loads(path.with_suffix("").with_suffix(".truth.json").read_text())


def test_every_scenario_has_recordings() -> None:
    recorded = {(_scenario(p), p.name.split("-")[-1].split(".")[0]) for p in RECORDINGS}
    for scenario in samples.SCENARIOS:
        assert (scenario, "nokaslr") in recorded and (scenario, "kaslr") in recorded, scenario


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_replay_matches_the_kernel(path: Path) -> None:
    snap = collect(ReplayTarget(str(path)))
    truth = _truth(path)
    assert snap.release == truth["kernel"]
    assert snap.kaslr_offset == int(truth["kernel_offset"], 16)
    assert snap.problems == []
    check_waitfor(waitfor_json(snap, WaitForGraph(snap)), samples.expected(_scenario(path)), truth)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_waiters_lock_from_the_slow_path_frame(path: Path) -> None:
    """Each sleeping lock waiter's lock comes from its slow-path frame's variable (as gdb read it when recorded:
    `lock` of __mutex_lock, `sem` of __down_common, rwsem_down_*_slowpath, percpu_rwsem_wait, `lock` of the
    rt_mutex slow path), and is the truth; a task spinning on a CPU and a flush have it from elsewhere."""
    snap = collect(ReplayTarget(str(path)))
    truth, expected = _truth(path), samples.expected(_scenario(path))
    by_pid = {t.pid: t for t in snap.tasks}
    for comm, lock_name in expected.get("waits", {}).items():
        task = by_pid[truth["tasks"][comm]]
        assert task.waits_on == int(truth["locks"][lock_name]["address"], 16), comm
        frame = not task.on_cpu and expected["lock_types"][lock_name] not in NO_SLOW_PATH
        assert (task.wait_source == "frame") == frame, (comm, task.wait_source, task.wait_evidence)


def _console_end(path: Path) -> float:
    """The last timestamp (seconds since boot) on the serial console of the boot the recording was made from."""
    console = path.parent / "dmesg" / path.name.replace(".json.gz", ".console.log.gz")
    last = gzip.decompress(console.read_bytes()).decode().strip().splitlines()[-1]
    return float(re.match(r"\[\s*(\d+\.\d+)\]", last).group(1))


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_replay_system_facts(path: Path) -> None:
    snap = collect(ReplayTarget(str(path)))
    assert snap.cpus == 2  # the sample guests boot with -smp 2
    # The largest runqueue clock is the guest's uptime: just after the console's last line (the dump follows it).
    end = _console_end(path)
    # Spinning CPUs print nothing more (user space starves) while the builder waits for a hung-task report.
    quiet = samples.builder.HUNG_TASK_WAIT if samples.expected(_scenario(path)).get("blocked_when_loaded") else 0
    assert snap.uptime_ns is not None and end - 3 <= snap.uptime_ns / 1e9 <= end + 3 + quiet, (snap.uptime_ns, end)
    kaslr = path.name.split("-")[-1].split(".")[0]
    assert re.fullmatch(rf"ELF vmcore \(QEMU dump-guest-memory with paging\) /\S+/vmcore-{kaslr}\.elf", snap.dump)
    assert snap.crash_time is None  # QEMU's dump-guest-memory: the guest did not crash, no CRASHTIME
    assert snap.panic is None  # the panic message comes from the kernel log, in the report
    again = type(snap).from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap


def test_vmlinux_frames_carry_their_source_line() -> None:
    snap = collect(ReplayTarget(str(_abba())))
    a = next(t for t in snap.tasks if t.comm == "kdl_a")
    frames = {f.symbol: f for f in a.frames}
    for name in ("__down_common", "down"):
        assert re.fullmatch(r"kernel/locking/semaphore\.c:\d+", frames[name].source or ""), frames[name]
    assert re.fullmatch(r"kernel/sched/core\.c:\d+", frames["__schedule"].source or "")
    # An assembler file's absolute build path is cut to the tree's own.
    assert re.fullmatch(r"arch/x86/entry/entry_64\.S:\d+", frames["ret_from_fork"].source or "")
    assert frames["kdl_a_fn"].module == "kdl_abba" and frames["kdl_a_fn"].source is None  # no module debug info
    assert all(f.source for t in snap.tasks for f in t.frames if f.module is None and f.symbol is not None)
    assert all(f.source is None for t in snap.tasks for f in t.frames if f.module is not None)


def test_dump_kinds() -> None:
    from kdlgdb.target.vmcore import ElfDump

    kernel_space = [(0xFFFFFFFF81000000, 0x1000000, 4096, 4096)]
    assert ElfDump("x", kernel_space, [("CORE", 1, b""), ("QEMU", 0, b"")]).kind == (
        "ELF vmcore (QEMU dump-guest-memory with paging)")
    assert ElfDump("x", [(0, 0, 4096, 4096)], [("CORE", 1, b""), ("QEMU", 0, b"")]).kind == (
        "ELF vmcore (QEMU dump-guest-memory without paging)")
    assert ElfDump("x", kernel_space, [("CORE", 1, b""), ("VMCOREINFO", 0, b"")]).kind == "ELF vmcore (kdump)"
    assert ElfDump("x", kernel_space, [("CORE", 1, b"")]).kind == "ELF vmcore"


def test_source_names() -> None:
    assert source_name("kernel/locking/semaphore.c", 229) == "kernel/locking/semaphore.c:229"
    assert source_name("./kernel/fork.c", 7) == "kernel/fork.c:7"
    assert source_name("/build/reproducible-path/linux-6.1.192/arch/x86/entry/entry_64.S", 295) == (
        "arch/x86/entry/entry_64.S:295")
    assert source_name("/home/kernel/linux/kernel/fork.c", 1) == "kernel/fork.c:1"
    assert source_name("/src/tree/mm/slub.c", 3) == "/src/tree/mm/slub.c:3"  # no linux* root to cut at
    # as the 6.12-rt vmlinux names them: Debian builds the rt flavour in a copy of the tree
    assert source_name("debian/build/source_rt/kernel/locking/rtmutex.c", 1731) == "kernel/locking/rtmutex.c:1731"


def _abba() -> Path:
    return next(p for p in RECORDINGS if p.name == "kdl_abba-kaslr.json.gz" and p.parent.name == samples.DEFAULT_KERNEL)


def test_abba_names_threads_semaphores_cycle_and_order() -> None:
    snap = collect(ReplayTarget(str(_abba())))
    text = commands.run("kd-waitfor", commands.parse("kd-waitfor", []), snap)
    truth = _truth(_abba())
    a, b = truth["tasks"]["kdl_a"], truth["tasks"]["kdl_b"]
    assert f"PROBABLE DEADLOCK: \"kdl_a\" (pid {a}) and \"kdl_b\" (pid {b}) on sem1 [kdl_abba], sem2 [kdl_abba]" in text
    assert f"\"kdl_a\" (pid {a}) --waits on--> sem2 [kdl_abba] --held by--> \"kdl_b\" (pid {b})" in text
    assert f"take sem1 before sem2 [kdl_abba]: \"kdl_b\" (pid {b}) holds sem2 and then takes sem1" in text


def test_kd_tasks_and_bt_on_real_data() -> None:
    snap = collect(ReplayTarget(str(_abba())))
    truth = _truth(_abba())
    listing = commands.run("kd-tasks", commands.parse("kd-tasks", ["-s", "D"]), snap)
    lines = [line.split() for line in listing.splitlines()[1:]]
    assert sorted((int(cols[0]), cols[-1]) for cols in lines) == sorted((p, c) for c, p in truth["tasks"].items())
    bt = commands.run("kd-bt", commands.parse("kd-bt", [str(truth["tasks"]["kdl_a"])]), snap)
    names = [line.split()[2] for line in bt.splitlines()[1:]]
    assert names[0].startswith("__schedule+")
    assert any(n.startswith("__down_common+") for n in names)
    assert any(n.startswith("kdl_a_fn+") for n in names) and "[kdl_abba]" in bt
    assert names[-1].startswith("ret_from_fork")
    assert any("__down_common+" in line and "kernel/locking/semaphore.c:" in line for line in bt.splitlines())
    idle = [t for t in snap.tasks if t.pid == 0]
    assert len(idle) == 2 and {t.comm for t in idle} == {"swapper/0", "swapper/1"}


def test_unrecorded_read_fails_loudly() -> None:
    target = ReplayTarget(str(_abba()))
    with pytest.raises(RecordingMiss):
        target.read(0xFFFFFFFFFFFF0000, 8)


class _Holes(ReplayTarget):
    """A real recording with some memory made unreadable, as a filtered or damaged dump has."""

    def __init__(self, path: str, holes: list[tuple[int, int]]) -> None:
        super().__init__(path)
        self.holes = holes

    def read(self, address: int, size: int) -> bytes:
        for start, end in self.holes:
            if address < end and start < address + size:
                raise ReadError(address, size, "not in dump")
        return super().read(address, size)


def test_unreadable_stack_is_a_problem_and_analysis_goes_on() -> None:
    path = str(_abba())
    whole = collect(ReplayTarget(path))
    victim = next(t for t in whole.tasks if t.comm == "kdl_b")
    snap = collect(_Holes(path, [(victim.stack_base, victim.stack_base + 16384)]))
    assert any("kdl_b" in p.where and p.what == "stack" for p in snap.problems)
    a = next(t for t in snap.tasks if t.comm == "kdl_a")
    assert a.waits_on is not None  # the other thread is still analysed
    assert len(snap.tasks) == len(whole.tasks)


def test_unreadable_task_struct_is_skipped() -> None:
    path = str(_abba())
    whole = collect(ReplayTarget(path))
    victim = next(t for t in whole.tasks if t.comm == "kdl_b")
    snap = collect(_Holes(path, [(victim.address, victim.address + 64)]))
    assert [(p.what, p.where) for p in snap.problems] == [("task", f"{victim.address:#x}")]
    assert "kdl_b" not in {t.comm for t in snap.tasks}
    assert len(snap.tasks) == len(whole.tasks) - 1  # the walk went on past it
    a = next(t for t in snap.tasks if t.comm == "kdl_a")
    assert a.waits_on == next(t for t in whole.tasks if t.comm == "kdl_a").waits_on


class _Corrupt(ReplayTarget):
    """A real recording with one list pointer overwritten."""

    def __init__(self, path: str, address: int, value: int) -> None:
        super().__init__(path)
        self.address, self.value = address, value.to_bytes(8, "little")

    def read(self, address: int, size: int) -> bytes:
        data = bytearray(super().read(address, size))
        if address <= self.address < address + size:
            i = self.address - address
            n = min(8, size - i)
            data[i : i + n] = self.value[:n]
        return bytes(data)


def test_corrupt_task_list_is_reported_not_followed() -> None:
    path = str(_abba())
    whole = collect(ReplayTarget(path))
    init = next(t for t in whole.tasks if t.pid == 1)
    tasks_off = ReplayTarget(path).member("struct task_struct", "tasks")[0]
    # init's tasks.prev no longer points back at init_task.tasks: the walk must stop there.
    snap = collect(_Corrupt(path, init.address + tasks_off + 8, 0xFFFF888000000000))
    assert snap.problems and snap.problems[0].what == "task list"
    assert "broken" in snap.problems[0].why


def test_each_waiter_names_its_own_waiter_struct() -> None:
    path = next(p for p in RECORDINGS if p.name == "kdl_control-kaslr.json.gz" and p.parent.name == samples.DEFAULT_KERNEL)
    snap = collect(ReplayTarget(str(path)))
    waiting = [t for t in snap.tasks if t.comm in ("kdl_c_w1", "kdl_c_w2")]
    nodes = {re.search(r"mutex_waiter at (0x[0-9a-f]+)", t.wait_evidence).group(1) for t in waiting}  # type: ignore[union-attr]
    assert len(nodes) == 2
    for t in waiting:
        node = int(re.search(r"mutex_waiter at (0x[0-9a-f]+)", t.wait_evidence).group(1), 16)  # type: ignore[union-attr]
        assert t.stack_base <= node < t.stack_base + 16384  # on that task's own stack
