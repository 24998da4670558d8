"""Chains whose root waits on no lock: naming the root (hand-made snapshots) and the kernel model's
``blocked_in`` on the recorded kdl_chain dump (real 6.1 data, checked against the guest's truth)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import samples
from expectations import check_waitfor

from kdlgdb.analysis.graph import WaitForGraph, describe_activity
from kdlgdb.kernel.collect import collect
from kdlgdb.model import BlockedIn, Frame, Lock, Owner, Snapshot, Task
from kdlgdb.render.json import waitfor_json
from kdlgdb.render.text import render_waitfor
from kdlgdb.target.replay import ReplayTarget

RECORDED = Path(__file__).parent / "vmcore_samples" / "recordings" / samples.DEFAULT_KERNEL
M_C, C_DONE = 0xFFFFFFFFC03440A0, 0xFFFFFFFFC0344020
OWNER, WAITER = 0xFFFF888004000000, 0xFFFF888004002000

FRAMES = [
    Frame(pc=0xFFFFFFFF81C00001, symbol="__schedule", offset=0x34D),
    Frame(pc=0xFFFFFFFF81C00002, symbol="schedule", offset=0x5A),
    Frame(pc=0xFFFFFFFF81C00003, symbol="schedule_timeout", offset=0x11A),
    Frame(pc=0xFFFFFFFF81C00004, symbol="__wait_for_common", offset=0x94),
    Frame(pc=0xFFFFFFFFC0340010, symbol="kdl_c1_fn", offset=0x1D, module="kdl_chain"),
]


def chain_snapshot(blocked: BlockedIn | None, state: str = "D", last_ran_ns: int | None = 37_000_000_000) -> Snapshot:
    """kdl_c2 waits on m_c, held by kdl_c1, which is blocked in ``blocked``."""
    root = Task(OWNER, 94, 94, "kdl_c1", state, 1, last_ran_ns=last_ran_ns, frames=FRAMES, blocked_in=blocked)
    waiter = Task(WAITER, 95, 95, "kdl_c2", "D", 0, waits_on=M_C)
    lock = Lock(M_C, "mutex", "m_c", "kdl_chain", [Owner(OWNER, "certain", "mutex.owner")], [WAITER])
    return Snapshot(release="6.1.0-56-cloud-amd64", tasks=[root, waiter], locks=[lock])


COMPLETION = BlockedIn("completion", "__wait_for_common", "__wait_for_common+0x94", C_DONE, "c_done", "kdl_chain",
                       "struct swait_queue at 0xffffc90000123ec8 on its stack, linked into completion 0xffffffffc0344020 (done=0)")


@pytest.mark.parametrize("blocked,reason", [
    (COMPLETION, "waits (D) for completion c_done [kdl_chain] in __wait_for_common+0x94 for 37.0s while holding m_c [kdl_chain]"),
    (BlockedIn("completion", "__wait_for_common", "__wait_for_common+0x94"),
     "waits (D) for completion (not found) in __wait_for_common+0x94 for 37.0s while holding m_c [kdl_chain]"),
    (BlockedIn("waitqueue", "kdl_w1_fn", "kdl_w1_fn+0x64 [kdl_chain]", 0xFFFF888004100010, None, None),
     "waits (D) on wait queue 0xffff888004100010 in kdl_w1_fn+0x64 [kdl_chain] for 37.0s while holding m_c [kdl_chain]"),
    (BlockedIn("io", "io_schedule_timeout", "kdl_io1_fn+0x2d [kdl_chain]"),
     "is in I/O wait (io_schedule_timeout) in kdl_io1_fn+0x2d [kdl_chain] for 37.0s while holding m_c [kdl_chain]"),
    (BlockedIn("sleep", "msleep", "msleep+0x29"), "sleeps (D) in msleep+0x29 for 37.0s while holding m_c [kdl_chain]"),
    (BlockedIn("unknown", "foo", "foo+0x12"), "sleeps (D) in foo+0x12 for 37.0s while holding m_c [kdl_chain]"),
    (None, "sleeps (D) in __wait_for_common+0x94 while holding m_c [kdl_chain]"),  # as before blocked_in
])
def test_chain_root_names_what_it_waits_for(blocked: BlockedIn | None, reason: str) -> None:
    snap = chain_snapshot(blocked)
    graph = WaitForGraph(snap)
    (chain,) = graph.chains
    assert (chain.tasks, chain.locks, chain.root) == ([WAITER, OWNER], [M_C], OWNER)
    assert chain.root_reason == reason
    assert graph.cycles == []
    text = render_waitfor(snap, graph)
    assert f"  root: \"kdl_c1\" (pid 94) {reason}\n" in text and "no deadlock; 1 blocked task in 1 chain" in text


def test_blocked_in_duration_and_state() -> None:
    task = chain_snapshot(BlockedIn("sleep", "msleep_interruptible", "msleep_interruptible+0x20"), "S", 350_000_000).tasks[0]
    assert describe_activity(task, []) == "sleeps (S) in msleep_interruptible+0x20 for 350ms"
    task.last_ran_ns = None
    assert describe_activity(task, ["m [x]"]) == "sleeps (S) in msleep_interruptible+0x20 while holding m [x]"
    task.on_cpu = True  # a task on a CPU is running, whatever it was blocked in
    assert describe_activity(task, []).startswith("is running on CPU 1")


def test_blocked_in_json_and_round_trip() -> None:
    snap = chain_snapshot(COMPLETION)
    doc = waitfor_json(snap, WaitForGraph(snap))
    tasks = {t["pid"]: t for t in doc["tasks"]}
    assert tasks[94]["waits_on"] is None and tasks[95]["blocked_in"] is None
    assert tasks[94]["blocked_in"] == {
        "kind": "completion", "address": "0xffffffffc0344020", "symbol": "c_done", "module": "kdl_chain",
        "function": "__wait_for_common", "frame": "__wait_for_common+0x94", "evidence": COMPLETION.evidence}
    back = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert back == snap and back.tasks[0].blocked_in == COMPLETION


@pytest.fixture(scope="module")
def recorded_chain() -> tuple[dict, dict]:
    path = RECORDED / "kdl_chain-kaslr.json.gz"
    snap = collect(ReplayTarget(str(path)))
    truth = json.loads(path.with_suffix("").with_suffix(".truth.json").read_text())
    return waitfor_json(snap, WaitForGraph(snap)), truth


def test_recorded_roots_are_what_the_guest_said(recorded_chain: tuple[dict, dict]) -> None:
    doc, truth = recorded_chain
    pid, where = truth["tasks"], {name: lock["address"] for name, lock in truth["locks"].items()}
    tasks = {t["pid"]: t for t in doc["tasks"]}
    got = {c: (tasks[pid[c]]["blocked_in"]["kind"], tasks[pid[c]]["blocked_in"]["address"]) for c in
           ("kdl_c1", "kdl_s1", "kdl_io1", "kdl_w1")}
    assert got == {"kdl_c1": ("completion", where["c_done"]), "kdl_s1": ("sleep", None), "kdl_io1": ("io", None),
                   "kdl_w1": ("waitqueue", where["w_wq"])}
    assert "(done=0)" in tasks[pid["kdl_c1"]]["blocked_in"]["evidence"]
    roots = sorted((c["root"], c["pids"][:-1], c["locks"]) for c in doc["chains"])
    assert roots == sorted((pid[r], [pid[w]], [where[lk]]) for r, w, lk in (
        ("kdl_c1", "kdl_c2", "m_c"), ("kdl_s1", "kdl_s2", "m_s"), ("kdl_io1", "kdl_io2", "m_io"), ("kdl_w1", "kdl_w2", "m_w")))


@pytest.mark.parametrize("change", ["address", "kind", "lock"])
def test_check_waitfor_catches_a_wrong_root(recorded_chain: tuple[dict, dict], change: str) -> None:
    """The real-dump check fails when kdlgdb names the wrong object, kind, or calls it a lock wait."""
    doc, truth = recorded_chain
    bad = json.loads(json.dumps(doc))
    c1 = next(t for t in bad["tasks"] if t["pid"] == truth["tasks"]["kdl_c1"])
    if change == "address":
        c1["blocked_in"]["address"] = truth["locks"]["w_wq"]["address"]
    elif change == "kind":
        c1["blocked_in"]["kind"] = "unknown"
    else:
        c1["waits_on"] = truth["locks"]["m_c"]["address"]
    check_waitfor(doc, samples.expected("kdl_chain"), truth)
    with pytest.raises(AssertionError):
        check_waitfor(bad, samples.expected("kdl_chain"), truth)


@pytest.mark.realkernel
def test_gdb_names_each_chain_root(real_kernel: str) -> None:
    """Real gdb on the KASLR kdl_chain dump: each waiter, the mutex it waits on, its holder, and what the
    holder waits for instead of a lock (the completion and wait queue at the addresses the guest printed)."""
    from realgdb import shared_gdb

    dump = samples.ensure_dump("kdl_chain", True, real_kernel)
    pid, where = dump.truth["tasks"], {name: lock["address"] for name, lock in dump.truth["locks"].items()}
    done = shared_gdb(dump.vmlinux, dump.path, "kd-waitfor", "kd-waitfor --json")
    text, _, doc_text = done.stdout.partition("\n{")
    doc = json.loads("{" + doc_text)
    assert "Traceback" not in done.stdout + done.stderr
    # 6.12-rt inlines __wait_for_common into wait_for_completion
    roots = {"kdl_c1": r"waits \(D\) for completion c_done \[kdl_chain\] in (__wait_for_common|wait_for_completion)\+0x[0-9a-f]+",
             "kdl_s1": r"sleeps \(D\) in msleep\+0x[0-9a-f]+",
             "kdl_io1": r"is in I/O wait \(io_schedule_timeout\) in kdl_io1_fn\+0x[0-9a-f]+ \[kdl_chain\]",
             "kdl_w1": r"waits \(D\) on wait queue w_wq \[kdl_chain\] in kdl_w1_fn\+0x[0-9a-f]+ \[kdl_chain\]"}
    # How long it has slept comes from sched_info.last_arrival (CONFIG_SCHED_INFO: Debian's kernels; not tinyconfig's
    # 6.1-lockdep, where kdlgdb says nothing of it).
    since = r" for \d+\.\ds" if "CONFIG_SCHED_INFO=y" in samples.kernel_config(real_kernel) else ""
    for (root, waiter, lock) in (("kdl_c1", "kdl_c2", "m_c"), ("kdl_s1", "kdl_s2", "m_s"), ("kdl_io1", "kdl_io2", "m_io"),
                                 ("kdl_w1", "kdl_w2", "m_w")):
        r, w = pid[root], pid[waiter]
        assert f"CHAIN: 1 task blocked behind \"{root}\" (pid {r})\n  \"{waiter}\" (pid {w}) --waits on--> {lock} [kdl_chain] --held by--> \"{root}\" (pid {r})\n" in text
        assert re.search(rf"^  root: \"{root}\" \(pid {r}\) {roots[root]}{since} while holding {lock} \[kdl_chain\]$", text, re.M), text
    assert "\nno deadlock; 4 blocked tasks in 4 chains\nD tasks: " in text
    assert text.rstrip().endswith(" not decoded")
    tasks = {t["pid"]: t for t in doc["tasks"]}
    c1, w1 = tasks[pid["kdl_c1"]], tasks[pid["kdl_w1"]]
    assert (c1["waits_on"], c1["holds"], c1["blocked_in"]["kind"], c1["blocked_in"]["address"], c1["blocked_in"]["symbol"]) == (
        None, [where["m_c"]], "completion", where["c_done"], "c_done")
    assert (w1["blocked_in"]["kind"], w1["blocked_in"]["address"], w1["blocked_in"]["symbol"]) == ("waitqueue", where["w_wq"], "w_wq")
    assert tasks[pid["kdl_c2"]]["waits_on"] == where["m_c"] and tasks[pid["kdl_c2"]]["blocked_in"] is None


def test_completion_on_the_waiters_own_stack() -> None:
    """DECLARE_COMPLETION_ONSTACK: the completion's list head is on the same stack as the waiter's
    swait_queue; it is still the one node of the ring that is not a waiter of the task (hand-made memory,
    6.1's layout: swait_queue {task, task_list}, completion.wait.task_list at 16)."""
    import struct

    from kdlgdb.kernel.blocked import _Queue, _Queues, blocked_in
    from kdlgdb.kernel.locks import LockKind
    from kdlgdb.kernel.stack import Stack
    from kdlgdb.kernel.waiters import StackRanges

    base, sp, task_address = 0xFFFFC90000120000, 0xFFFFC90000123E00, 0xFFFF888004000000
    waiter, completion = sp + 0x40, sp + 0x80  # struct swait_queue, struct completion, both on the stack
    node, head = waiter + 8, completion + 16
    data = bytearray(0x200)
    for address, value in ((waiter, task_address), (node, head), (node + 8, head), (head, node), (head + 8, node)):
        struct.pack_into("<Q", data, address - sp, value)
    stack = Stack(sp, bytes(data))

    class Memory:  # what the ring walk reads, from the stack bytes
        def read(self, address: int, size: int) -> bytes:
            assert sp <= address and address + size <= stack.top, hex(address)
            return stack.data[address - sp: address - sp + size]

        def u64(self, address: int) -> int:
            return int.from_bytes(self.read(address, 8), "little")

        def u32(self, address: int) -> int:
            return int.from_bytes(self.read(address, 4), "little")

    class NoSymbols:
        def name(self, address: int) -> tuple[None, None]:
            return None, None

    kind = LockKind("completion", "struct completion", "struct swait_queue", 16, 8, 0, lambda k, a: ([], {}))
    queues = _Queues(Memory())  # type: ignore[arg-type]
    queues._found = {"completion": _Queue("completion", kind, 0)}
    task = Task(task_address, 94, 94, "kdl_c1", "D", 0, stack_base=base, frames=FRAMES)
    found = blocked_in(Memory(), queues, NoSymbols(), task, stack, StackRanges([base], 16384), {})  # type: ignore[arg-type]
    assert found is not None
    assert (found.kind, found.address, found.symbol, found.object_name()) == ("completion", completion, None, f"{completion:#x}")
    assert found.evidence == f"struct swait_queue at {node:#x} on its stack, linked into completion {completion:#x} (done=0)"
