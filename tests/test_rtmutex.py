"""rt_mutex decoding on hand-made memory: the waiter tree walk, owners, the lock type from the stack.

Offsets are the 6.12 kernels' (``ptype/o struct rt_mutex_waiter`` / ``struct rw_semaphore`` on
6.12.117+deb12-rt-amd64): rt_mutex_base {wait_lock 0, waiters 8, owner 24}; rt_mutex_waiter
{tree.entry 0, task 80, lock 88}; rw_semaphore {rwbase.readers 0, rwbase.rtmutex 8}.
The real-kernel tests (test_gdb_dumps on kdl_rtmutex, and on every scenario on the RT kernel) are
the proof on real dumps; these cover what the dumps do not show: corrupt trees, spinlock_t, rwlock_t.
"""
from __future__ import annotations

import struct

import pytest

from kdlgdb.errors import CorruptError, ReadError
from kdlgdb.kernel.printk import LogRecord
from kdlgdb.kernel.rtmutex import (
    READER_BIAS, WRITER_BIAS, RtKind, RtLayout, cite_deadlock, decode_rt_lock, find_rt_waits, rt_kind_of,
    walk_waiter_tree,
)
from kdlgdb.kernel.stack import Stack
from kdlgdb.model import Frame, Problem, Task

KINDS = {
    "rt_mutex": RtKind("rt_mutex", "struct rt_mutex", "rtmutex", 0),
    "mutex": RtKind("mutex", "struct mutex", "rtmutex", 0),
    "rwsem": RtKind("rwsem", "struct rw_semaphore", "rwbase.rtmutex", 8, 0),
    "spinlock": RtKind("spinlock", "struct spinlock", "lock", 0),
    "rwlock": RtKind("rwlock", "rwlock_t", "rwbase.rtmutex", 8, 0),
}
RT = RtLayout(owner=24, root=8, node=0, task=80, lock=88, pi_blocked_on=0xD20, kinds=KINDS)
LOCK = 0xFFFFFFFFC0001000  # a static lock in a module
TASKS = [0xFFFF888000100000 + 0x4000 * i for i in range(4)]
WAITERS = [0xFFFFC90000013E00 + 0x4000 * i for i in range(4)]  # one on each task's stack


class Memory:
    """Kernel memory made of little-endian words; anything not written is unreadable."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def put(self, address: int, *values: int) -> None:
        for i, v in enumerate(values):
            self.words[address + 8 * i] = v

    def read(self, address: int, size: int) -> bytes:
        out = b""
        for at in range(address & ~7, address + size, 8):
            if at not in self.words:
                raise ReadError(address, size, "not in dump")
            out += struct.pack("<Q", self.words[at])
        return out[address & 7 : (address & 7) + size]

    def u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")


def waiter(mem: Memory, i: int, parent: int, right: int, left: int, lock: int = LOCK) -> int:
    """rt_mutex_waiter i: its tree node's (parent, right, left), its task, its lock."""
    mem.put(WAITERS[i], parent, right, left)
    mem.put(WAITERS[i] + RT.task, TASKS[i], lock)
    return WAITERS[i]


def three_waiters(owner: int = TASKS[3] | 1, base: int = LOCK) -> Memory:
    """A tree of three waiters: 0 at the root, 1 its left child (the top waiter), 2 its right child."""
    mem = Memory()
    w0, w1, w2 = WAITERS[:3]
    mem.put(base, 0, w0, w1, owner)  # wait_lock, waiters.rb_root.rb_node, waiters.rb_leftmost, owner
    waiter(mem, 0, 0 | 1, w2, w1, base)  # root: black (colour bit 0 set)
    waiter(mem, 1, w0, 0, 0, base)
    waiter(mem, 2, w0, 0, 0, base)
    return mem


def test_walk_is_in_priority_order() -> None:
    assert walk_waiter_tree(three_waiters(), RT, LOCK) == [(WAITERS[1], TASKS[1]), (WAITERS[0], TASKS[0]), (WAITERS[2], TASKS[2])]


def test_empty_tree() -> None:
    mem = Memory()
    mem.put(LOCK, 0, 0, 0, TASKS[0])
    assert walk_waiter_tree(mem, RT, LOCK) == []


def test_a_tree_that_loops_is_corrupt_not_a_hang() -> None:
    mem = three_waiters()
    mem.put(WAITERS[1] + 16, WAITERS[0])  # waiter 1's left child is the root again
    with pytest.raises(CorruptError):
        walk_waiter_tree(mem, RT, LOCK)
    mem = three_waiters()
    mem.put(WAITERS[1], WAITERS[2])  # a parent pointer that does not point back
    with pytest.raises(CorruptError, match="parent"):
        walk_waiter_tree(mem, RT, LOCK)
    mem = three_waiters()
    mem.put(WAITERS[2] + RT.lock, LOCK + 0x100)  # a waiter of another lock in this one's tree
    with pytest.raises(CorruptError, match="is for lock"):
        walk_waiter_tree(mem, RT, LOCK)
    mem = three_waiters()
    mem.put(WAITERS[2] + 8, 0x1234)  # a node pointer into user space
    with pytest.raises(CorruptError, match="bad node pointer"):
        walk_waiter_tree(mem, RT, LOCK)


def test_an_unreadable_node_is_a_read_error() -> None:
    mem = three_waiters()
    del mem.words[WAITERS[2] + 16]
    with pytest.raises(ReadError):
        walk_waiter_tree(mem, RT, LOCK)


def test_owner_and_has_waiters_bit() -> None:
    owners, details = decode_rt_lock(three_waiters(), RT, KINDS["mutex"], LOCK)
    assert [(o.task, o.confidence, o.evidence) for o in owners] == [(TASKS[3], "certain", "struct mutex.rtmutex.owner")]
    assert details["flags"] == ["HAS_WAITERS"] and details["owner"] == f"{TASKS[3] | 1:#x}"
    owners, details = decode_rt_lock(three_waiters(owner=0), RT, KINDS["spinlock"], LOCK)
    assert owners == [] and details["flags"] == []


@pytest.mark.parametrize("readers,owners,details", [
    (WRITER_BIAS, [(TASKS[3], "write")], {"readers": 0}),  # write-locked
    (2, [], {"readers": 2, "writer_pending": f"{TASKS[3]:#x}"}),  # the writer waits for two readers
    (READER_BIAS + 3, [], {"readers": 3}),  # three readers, no writer
])
def test_rwsem_readers_count(readers: int, owners: list, details: dict) -> None:
    rwsem = LOCK - 8  # rw_semaphore.rwbase.rtmutex is at offset 8: the tree hangs off rwsem + 8
    mem = three_waiters(base=LOCK)
    mem.put(rwsem, readers)
    got, info = decode_rt_lock(mem, RT, KINDS["rwsem"], rwsem)
    assert [(o.task, o.mode) for o in got] == owners
    assert all(o.confidence == "certain" for o in got)
    assert {k: info[k] for k in details} == details and info["rt_mutex_base"] == f"{LOCK:#x}"


def frames(*names: str, module_caller: str = "kdl_fn") -> list[Frame]:
    out = [Frame(0xFFFFFFFF81000000 + 0x100 * i, n, 0x20, None, 0xFFFFC90000013D00 + 8 * i) for i, n in enumerate(names)]
    return out + [Frame(0xFFFFFFFFC0000040, module_caller, 0x2B, "kdl_mod", 0xFFFFC90000013EF0)]


class Calls:
    """What the call before a return address calls (CodeReader.callee, function_at), and which lock
    functions that callee calls or jumps to itself (CodeReader.reached)."""

    def __init__(self, target: str = "", reaches: tuple[str, ...] = ()) -> None:
        self.target = target
        self.reaches = set(reaches)

    def callee(self, pc: int) -> int | None:
        return 0xFFFFFFFFC0000400 if self.target else None

    def function_at(self, address: int) -> str:
        return self.target

    def reached(self, function: int, names: set[str]) -> set[str]:
        return self.reaches & names


@pytest.mark.parametrize("names,called,kind", [
    (("__schedule", "schedule_rtlock", "rtlock_slowlock_locked", "rt_spin_lock"), "", "spinlock"),
    (("__schedule", "schedule_rtlock", "rtlock_slowlock_locked"), "rt_spin_lock", "spinlock"),  # tail call
    (("__schedule", "schedule_rtlock", "rtlock_slowlock_locked", "__rwbase_read_lock"), "", "rwlock"),
    (("__schedule", "schedule_rtlock", "rtlock_slowlock_locked", "rt_write_lock"), "", "rwlock"),
    (("__schedule", "rt_mutex_schedule", "rt_mutex_slowlock_block", "__rt_mutex_slowlock_locked", "rt_mutex_slowlock"),
     "mutex_lock", "mutex"),  # kdl_mutex on 6.12-rt: mutex_lock tail-calls rt_mutex_slowlock
    (("__schedule", "rt_mutex_schedule", "__rt_mutex_slowlock_locked", "rt_mutex_lock"), "", "rt_mutex"),
    (("__schedule", "rt_mutex_schedule", "rwbase_write_lock"), "down_write", "rwsem"),
    (("__schedule", "rt_mutex_schedule", "rwbase_write_lock"), "", "rwsem"),
    # a stale return address amid the path (a second writer of a read-held rwsem, 6.12-rt): not the caller
    (("__schedule", "rt_mutex_schedule", "__rt_mutex_slowlock_locked", "ttwu_do_activate", "rwbase_write_lock"),
     "", "rwsem"),
    (("__schedule", "rt_mutex_schedule", "__rt_mutex_slowlock_locked", "ttwu_do_activate", "rwbase_write_lock"),
     "enqueue_task", "rwsem"),
])
def test_lock_type_from_the_stack(names: tuple, called: str, kind: str) -> None:
    found = rt_kind_of(frames(*names), Calls(called), KINDS)  # type: ignore[arg-type]
    # the first lock frame: past __schedule and the rt scheduler entry (rt_mutex_schedule, schedule_rtlock)
    assert found is not None and found[0].name == kind and found[1] == 2


MUTEX_PATH = ("__schedule", "rt_mutex_schedule", "rt_mutex_slowlock_block", "__rt_mutex_slowlock_locked", "rt_mutex_slowlock")


@pytest.mark.parametrize("names,reaches,kind", [
    # kdl_scale on 6.12-rt: kdl_then calls kdl_take, which tail-calls mutex_lock (or down, down_write, ...)
    (MUTEX_PATH, ("mutex_lock", "down", "down_read", "down_write"), "mutex"),
    (MUTEX_PATH, ("mutex_lock", "rt_mutex_lock"), "rt_mutex"),  # cannot tell: the bare rt_mutex it is
    (MUTEX_PATH, (), "rt_mutex"),
    (("__schedule", "rt_mutex_schedule", "__rt_mutex_slowlock_locked", "__rwbase_read_lock"), ("mutex_lock", "down_read"), "rwsem"),
    (("__schedule", "schedule_rtlock", "rtlock_slowlock_locked"), ("rt_read_lock", "mutex_lock"), "rwlock"),
    (("__schedule", "schedule_rtlock", "rtlock_slowlock_locked"), ("rt_spin_lock", "rt_read_lock"), "spinlock"),
])
def test_lock_type_through_a_function_that_tail_called(names: tuple, reaches: tuple, kind: str) -> None:
    found = rt_kind_of(frames(*names), Calls("kdl_take", reaches), KINDS)  # type: ignore[arg-type]
    assert found is not None and found[0].name == kind


def test_not_an_rt_mutex_wait() -> None:
    cloud = {"rt_mutex": KINDS["rt_mutex"]}  # a kernel without PREEMPT_RT: only rt_mutex is built on rt_mutex_base
    assert rt_kind_of(frames("__schedule", "schedule", "down_read"), Calls(), cloud) is None  # type: ignore[arg-type]
    assert rt_kind_of(frames("__schedule", "schedule", "schedule_timeout", "__down_common", "down"), Calls(), KINDS) is None  # type: ignore[arg-type]
    assert rt_kind_of(frames("__schedule", "schedule", "msleep"), Calls("mutex_lock"), KINDS) is None  # type: ignore[arg-type]


def _task(i: int, names: tuple) -> Task:
    return Task(TASKS[i], 100 + i, 100 + i, f"kdl_{i}", "D", 0, stack_base=WAITERS[i] & ~0x3FFF, frames=frames(*names))


SPIN = ("__schedule", "schedule_rtlock", "rtlock_slowlock_locked", "rt_spin_lock")


def test_spinlock_waits_through_pi_blocked_on() -> None:
    """spinlock_t on PREEMPT_RT: three tasks asleep in the rtlock slow path, task 3 owns it."""
    mem = three_waiters()
    tasks = {TASKS[i]: _task(i, SPIN) for i in range(3)}
    live = {}
    for i in range(3):
        mem.put(TASKS[i] + RT.pi_blocked_on, WAITERS[i])  # type: ignore[operator]
        live[TASKS[i]] = Stack(WAITERS[i] - 0x100, bytes(0x200))
    problems: list[Problem] = []
    locks = find_rt_waits(mem, RT, Calls(), tasks, live, problems)  # type: ignore[arg-type]
    assert problems == []
    (lock,) = locks.values()
    assert (lock.address, lock.type, lock.waiters) == (LOCK, "spinlock", [TASKS[1], TASKS[0], TASKS[2]])
    assert [(o.task, o.confidence) for o in lock.owners] == [(TASKS[3], "certain")]
    assert all(t.waits_on == LOCK for t in tasks.values())
    assert tasks[TASKS[0]].wait_evidence == (f"task->pi_blocked_on: struct rt_mutex_waiter {WAITERS[0]:#x}, "
                                             f"in struct spinlock {LOCK:#x}'s lock.waiters tree")


def test_waiter_found_on_the_stack_without_pi_blocked_on() -> None:
    mem = three_waiters()
    stack = bytearray(0x200)
    struct.pack_into("<Q", stack, 0x100 + RT.task, TASKS[0])  # the waiter at sp + 0x100 names its task
    tasks = {TASKS[0]: _task(0, SPIN)}
    mem.put(TASKS[0] + RT.pi_blocked_on, 0)  # type: ignore[operator]
    problems: list[Problem] = []
    locks = find_rt_waits(mem, RT, Calls(), tasks, {TASKS[0]: Stack(WAITERS[0] - 0x100, bytes(stack))}, problems)  # type: ignore[arg-type]
    assert problems == [] and list(locks) == [LOCK]
    assert tasks[TASKS[0]].wait_evidence.startswith(f"struct rt_mutex_waiter at {WAITERS[0]:#x} on its stack")


def test_a_corrupt_tree_is_a_problem_and_the_rest_goes_on() -> None:
    mem = three_waiters()
    mem.put(WAITERS[1] + 16, WAITERS[0])  # loops
    tasks = {TASKS[0]: _task(0, SPIN)}
    mem.put(TASKS[0] + RT.pi_blocked_on, WAITERS[0])  # type: ignore[operator]
    problems: list[Problem] = []
    locks = find_rt_waits(mem, RT, Calls(), tasks, {TASKS[0]: Stack(WAITERS[0] - 0x100, bytes(0x200))}, problems)  # type: ignore[arg-type]
    assert locks == {} and tasks[TASKS[0]].waits_on is None
    assert [(p.what, p.where) for p in problems] == [("wait", "task \"kdl_0\" (pid 100)")] and "loops" in problems[0].why


@pytest.mark.parametrize("saved", ["rw_semaphore", "its rt_mutex"])
@pytest.mark.parametrize("before", [True, False], ids=["word-before-readable", "word-before-unreadable"])
def test_rt_writer_waiting_for_readers(saved: str, before: bool) -> None:
    """An RT down_write that owns the rt_mutex and sleeps until the readers leave: no waiter at all."""
    rwsem = LOCK - 8
    mem = three_waiters(owner=TASKS[0] | 1)
    mem.put(rwsem, 1)  # one reader; READER_BIAS taken away by the writer
    if before:
        mem.put(rwsem - 8, 0)
    stack = bytearray(0x200)
    struct.pack_into("<Q", stack, 0x8, TASKS[0] + 0x40)  # a pointer into the task: no lock there
    struct.pack_into("<Q", stack, 0x18, rwsem if saved == "rw_semaphore" else LOCK)  # a register the scheduler saved
    sp = WAITERS[0] - 0x100
    names = ("__schedule", "rt_mutex_schedule", "rwbase_write_lock")
    task = _task(0, names)
    task.frames = [Frame(f.pc, f.symbol, f.offset, f.module, sp + 0x40 + 8 * i) for i, f in enumerate(task.frames)]
    mem.put(TASKS[0] + RT.pi_blocked_on, 0)  # type: ignore[operator]
    problems: list[Problem] = []
    locks = find_rt_waits(mem, RT, Calls("down_write"), {TASKS[0]: task}, {TASKS[0]: Stack(sp, bytes(stack))}, problems)  # type: ignore[arg-type]
    assert problems == []
    lock = locks[rwsem]
    assert (lock.type, lock.owners, lock.waiters[0]) == ("rwsem", [], TASKS[0])
    assert lock.details["writer_pending"] == f"{TASKS[0]:#x}" and lock.details["readers"] == 1
    assert "is this task, asleep until its 1 reader(s) leave" in task.wait_evidence


SPINLOCK_ON_REAL_DATA = r'''
import json
from dataclasses import replace
from kdlgdb.kernel.collect import collect
from kdlgdb.kernel.held import CodeReader
from kdlgdb.kernel.layout import Kernel
from kdlgdb.kernel.rtmutex import RtLayout, find_rt_waits
from kdlgdb.kernel.stack import StackReader
from kdlgdb.kernel.symbols import Symbols
from kdlgdb.target.gdb import GdbTarget
from kdlgdb.model import Frame
k = Kernel(GdbTarget())
snap = collect(k, source_lines=False)
rt = RtLayout.detect(k)
tasks = {t.address: t for t in snap.tasks if t.waits_on}
stacks = StackReader(k, Symbols(k, []))
live = {}
for t in tasks.values():
    live[t.address] = stacks.read(t.stack_base, t.frames[0].sp - 8)
    # the same wait as spinlock_t's rtlock slow path would leave it: only the function names differ
    rtlock = [Frame(f.pc, n, f.offset, None, f.sp) for f, n in zip(t.frames, ("__schedule", "schedule_rtlock", "rtlock_slowlock_locked", "rt_spin_lock"))]
    t.frames = rtlock + [f for f in t.frames if f.module is not None]
    t.waits_on = None
problems = []
locks = find_rt_waits(k, rt, CodeReader(k, Symbols(k, [])), tasks, live, problems)
print("KDL-RESULT " + json.dumps({
    "kinds": {name: [kind.struct, kind.path, kind.base, kind.readers] for name, kind in rt.kinds.items()},
    "before": {f"{lk.address:#x}": [lk.type, [o.task for o in lk.owners], lk.waiters] for lk in snap.locks},
    "after": {f"{lk.address:#x}": [lk.type, [(o.task, o.confidence) for o in lk.owners], lk.waiters] for lk in locks.values()},
    "evidence": [t.wait_evidence for t in tasks.values()], "problems": [str(p) for p in problems]}))
'''


@pytest.mark.realkernel
def test_spinlock_decode_on_the_rt_kernels_own_rt_mutexes(tmp_path) -> None:
    """No spinlock scenario sleeps here yet: the 6.12-rt kdl_mutex waits, with their stacks renamed to the
    rtlock slow path, must decode as spinlock_t (whose rt_mutex_base, per the RT vmlinux, is at offset 0
    as in struct mutex) with the same addresses, owners and waiters."""
    import json
    import re
    import samples
    from realgdb import gdb

    kernel = next((k for k in samples.KERNELS if samples.preempt_rt(k)), None)
    if kernel is None:
        pytest.skip("no PREEMPT_RT kernel among the test kernels")
    dump = samples.ensure_dump("kdl_mutex", True, kernel)
    script = tmp_path / "spin.py"
    script.write_text(SPINLOCK_ON_REAL_DATA)
    done = gdb(dump.vmlinux, dump.path, f"source {script}")
    match = re.search(r"^KDL-RESULT (.*)$", done.stdout, re.M)
    assert match, done.stdout + done.stderr
    got = json.loads(match.group(1))
    assert got["kinds"]["spinlock"] == ["struct spinlock", "lock", 0, None]
    assert got["kinds"]["rwsem"] == ["struct rw_semaphore", "rwbase.rtmutex", 8, 0]
    assert got["kinds"]["rwlock"] == ["rwlock_t", "rwbase.rtmutex", 8, 0]
    assert got["problems"] == []
    m1, m2 = (dump.truth["locks"][m]["address"] for m in ("m1", "m2"))
    assert sorted(got["after"]) == sorted(got["before"]) == sorted([m1, m2])
    for address, (kind, owners, waiters) in got["after"].items():
        before = got["before"][address]
        assert (kind, [t for t, _ in owners], waiters) == ("spinlock", before[1], before[2])
        assert {c for _, c in owners} == {"certain"}
    assert all(e.startswith("task->pi_blocked_on: struct rt_mutex_waiter") and "struct spinlock" in e for e in got["evidence"])


def test_rtlock_wait_and_frozen_tasks_are_d() -> None:
    """As the kernel's __task_state_index() reports them: TASK_RTLOCK_WAIT (a PREEMPT_RT spinlock_t
    sleeper) and TASK_FROZEN show as D, not R."""
    from kdlgdb.kernel.tasks import state_letter
    letters = ["R", "S", "D", "T", "t", "X", "Z", "P", "I"]  # 6.12's task_state_array
    assert [state_letter(letters, s, 0) for s in (0, 0x1, 0x2, 0x402, 0x1000, 0x8000, 0x8001)] == [
        "R", "S", "D", "I", "D", "D", "D"]


def test_a_freezable_idle_kthread_is_idle_not_d() -> None:
    """TASK_IDLE | TASK_FREEZABLE (0x2000 since v6.1): the kernel masks the TASK_IDLE test, so nfsd-like
    kthreads are 'I'; a frozen one (TASK_FROZEN) is 'D'."""
    from kdlgdb.kernel.tasks import state_letter
    letters = ["R", "S", "D", "T", "t", "X", "Z", "P", "I"]
    assert [state_letter(letters, s, 0) for s in (0x402 | 0x2000, 0x402 | 0x8000, 0x2 | 0x2000)] == ["I", "D", "D"]


def test_an_unreadable_lock_still_has_its_waits() -> None:
    """The lock's page is not in the dump: each task's pi_blocked_on still names it; the lock is a problem."""
    mem = three_waiters()
    for address in [a for a in mem.words if LOCK <= a < LOCK + 32]:
        del mem.words[address]
    tasks = {TASKS[i]: _task(i, SPIN) for i in range(2)}
    live = {}
    for i in range(2):
        mem.put(TASKS[i] + RT.pi_blocked_on, WAITERS[i])  # type: ignore[operator]
        live[TASKS[i]] = Stack(WAITERS[i] - 0x100, bytes(0x200))
    problems: list[Problem] = []
    locks = find_rt_waits(mem, RT, Calls(), tasks, live, problems)  # type: ignore[arg-type]
    assert [(lk.address, lk.waiters, lk.owners) for lk in locks.values()] == [(LOCK, TASKS[:2], [])]
    assert [(p.what, p.where) for p in problems] == [("lock", f"struct spinlock {LOCK:#x}")] and "cannot read" in problems[0].why
    assert tasks[TASKS[1]].wait_evidence.endswith(f"for struct spinlock {LOCK:#x} (its waiter tree cannot be read)")


class Parked(Calls):
    """The call the lock's caller makes: mutex_lock, with a constant first argument (or none)."""

    def __init__(self, argument: int | None) -> None:
        super().__init__("mutex_lock")
        self.argument = argument

    def argument_of_call(self, frame: Frame) -> int | None:
        return self.argument


class NoLog(Memory):
    """A kernel whose vmlinux has no printk buffer: the evidence says the log cannot be read."""

    def symbol(self, name: str) -> None:
        return None


PARKED = ("__schedule", "rt_mutex_schedule", "__rt_mutex_slowlock_locked", "rt_mutex_slowlock")


@pytest.mark.parametrize("argument", [LOCK, None], ids=["caller's-argument", "on-its-stack"])
def test_recursive_lock_parked_by_rt_mutex_handle_deadlock(argument: int | None) -> None:
    """PREEMPT_RT's mutex_lock on a mutex the task owns: -EDEADLK, parked (S) with no waiter. It waits on
    that mutex (found from the caller's call, or on its stack), and task 1 is queued behind it."""
    mem = NoLog()
    mem.put(LOCK, 0, WAITERS[1], WAITERS[1], TASKS[0] | 1)  # owned by task 0; task 1 in the tree
    waiter(mem, 1, 0 | 1, 0, 0)
    stack = bytearray(0x200)
    struct.pack_into("<Q", stack, 0x40, LOCK)  # a register the scheduler saved
    task = _task(0, PARKED)
    task.state = "S"
    other = _task(1, PARKED)
    mem.put(TASKS[0] + RT.pi_blocked_on, 0)  # type: ignore[operator]
    mem.put(TASKS[1] + RT.pi_blocked_on, WAITERS[1])  # type: ignore[operator]
    live = {TASKS[0]: Stack(WAITERS[0] - 0x100, bytes(stack)), TASKS[1]: Stack(WAITERS[1] - 0x100, bytes(0x200))}
    problems: list[Problem] = []
    locks = find_rt_waits(mem, RT, Parked(argument), {TASKS[0]: task, TASKS[1]: other}, live, problems)  # type: ignore[arg-type]
    assert problems == []
    lock = locks[LOCK]
    assert (lock.type, lock.waiters, [o.task for o in lock.owners]) == ("mutex", [TASKS[1], TASKS[0]], [TASKS[0]])
    assert task.waits_on == LOCK
    how = "the lock kdl_fn+0x2b [kdl_mod] asks for" if argument else "on its stack"
    assert task.wait_evidence == (
        f"rt_mutex_handle_deadlock: parked (S) in __rt_mutex_slowlock_locked+0x20, asking for struct mutex {LOCK:#x} "
        f"({how}), which it owns already (struct mutex.rtmutex.owner): rt_mutex's deadlock check returned -EDEADLK; "
        "the kernel log cannot be read (the vmlinux has no printk buffer (neither prb nor log_buf): a kernel without "
        "CONFIG_PRINTK?)")


def test_parked_only_when_asleep_and_owning_the_lock() -> None:
    """A task in D on the rt_mutex path without a waiter (or in S on a lock it does not own) is no deadlock."""
    for state, owner in (("D", TASKS[0]), ("S", TASKS[2])):
        mem = NoLog()
        mem.put(LOCK, 0, 0, 0, owner)
        task = _task(0, PARKED)
        task.state = state
        mem.put(TASKS[0] + RT.pi_blocked_on, 0)  # type: ignore[operator]
        problems: list[Problem] = []
        locks = find_rt_waits(mem, RT, Parked(LOCK), {TASKS[0]: task},  # type: ignore[arg-type]
                              {TASKS[0]: Stack(WAITERS[0] - 0x100, bytes(0x200))}, problems)
        assert locks == {} and task.waits_on is None
        assert "neither task->pi_blocked_on nor its stack names an rt_mutex" in problems[0].why


def test_the_kernel_log_line_is_cited() -> None:
    records = [
        LogRecord(10, 3_841_280_000, 6, "kdl-truth task kdl_rd 158", "T1"),
        LogRecord(11, 3_841_646_000, 4, "rtmutex deadlock detected", "T158"),
        LogRecord(12, 3_841_893_000, 4, "WARNING: CPU: 0 PID: 158 at kernel/locking/rtmutex.c:1686 "
                                        "__rt_mutex_slowlock_locked.constprop.0+0x1c6/0x1e0\nModules linked in: x", "T158"),
    ]
    assert cite_deadlock(records, 158) == (
        "the kernel log says: [    3.841646] rtmutex deadlock detected / [    3.841893] WARNING: CPU: 0 PID: 158 at "
        "kernel/locking/rtmutex.c:1686 __rt_mutex_slowlock_locked.constprop.0+0x1c6/0x1e0")
    assert cite_deadlock(records, 159) == 'the kernel log has no "rtmutex deadlock detected" line of pid 159'
