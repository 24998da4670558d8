"""lockdep's held_locks on hand-made memory: the bit-fields, class names, owners and their confidence.

Offsets are those of the 6.1-lockdep sample kernel (``ptype/o struct held_lock``, ``struct lock_class``
and ``struct task_struct`` there): held_lock {prev_chain_key 0, acquire_ip 8, instance 16, nest_lock 24,
class_idx:13 at bit 256, read:2 at bit 272}, 40 bytes; struct mutex.dep_map at 88. The real-kernel
tests (test_gdb_dumps, test_samples on 6.1-lockdep) are the proof on real dumps; these cover what a
dump of ours does not show on its own: a corrupt depth, lockdep turned off, the upgrade of an inferred
owner.
"""
from __future__ import annotations

import struct
from typing import Optional

from kdlgdb.kernel.lockdep import EVIDENCE, LockdepLayout, held_lock_owners, read_held_locks
from kdlgdb.model import CERTAIN, INFERRED, HeldLock, Lock, Owner, Problem, Snapshot, Task
from kdlgdb.render.json import held_json
from kdlgdb.render.text import render_held

LAYOUT = LockdepLayout(held_locks=0x900, depth=0x8F8, max_depth=48, size=40, instance=16, acquire_ip=8,
                       class_idx=(256, 13), read=(272, 2), lock_classes=0xFFFFFFFF82000000, class_size=0x58,
                       class_name=0x50, name_version=0x48, subclass=0x4C)
DEP_MAP = {"struct mutex": 88, "struct rw_semaphore": 64}
TASK = 0xFFFF888000100000
M1, M2, RW = 0xFFFFFFFFC0001000, 0xFFFFFFFFC0002000, 0xFFFFFFFFC0003000
NAMES = 0xFFFFFFFF81F00000
IP = 0xFFFFFFFFC0000000


class FakeKernel:
    """The few Kernel calls lockdep.py makes, over a dict of bytes."""

    def __init__(self) -> None:
        self.memory: dict[int, bytes] = {}

    def put(self, address: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.memory[address + i] = bytes([b])

    def read(self, address: int, size: int) -> bytes:
        from kdlgdb.errors import ReadError

        try:
            return b"".join(self.memory[address + i] for i in range(size))
        except KeyError:
            raise ReadError(address, size, "not in dump") from None

    def u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

    def u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def string(self, address: int, limit: int = 256) -> str:
        out = b""
        while len(out) < limit and self.memory.get(address + len(out), b"\0") != b"\0":
            out += self.memory[address + len(out)]
        return out.decode()

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        return (DEP_MAP[type_name], 32) if path == "dep_map" and type_name in DEP_MAP else None


class FakeSymbols:
    def lookup(self, address: int) -> tuple[Optional[str], int, Optional[str]]:
        return ("kdl_fn", address - IP, "kdl_mod") if address >= IP else (None, 0, None)


def entry(instance: int, class_idx: int, read: int, ip: int) -> bytes:
    data = bytearray(40)
    struct.pack_into("<QQ", data, 8, ip, instance)
    struct.pack_into("<I", data, 32, class_idx | (0 << 13) | (0 << 15) | (read << 16))
    return bytes(data)


def kernel_with(entries: list[bytes], depth: Optional[int] = None) -> FakeKernel:
    k = FakeKernel()
    k.put(TASK + LAYOUT.depth, struct.pack("<I", len(entries) if depth is None else depth))
    k.put(TASK + LAYOUT.held_locks, b"".join(entries))
    for index, (name, version, sub) in {3: ("m1", 1, 0), 4: ("&rw->key", 2, 1), 5: ("m2", 0, 0)}.items():
        base = LAYOUT.lock_classes + index * LAYOUT.class_size
        k.put(base + LAYOUT.class_name, struct.pack("<Q", NAMES + 64 * index))
        k.put(base + LAYOUT.name_version, struct.pack("<I", version))
        k.put(base + LAYOUT.subclass, struct.pack("<I", sub))
        k.put(NAMES + 64 * index, name.encode() + b"\0")
    return k


def task() -> Task:
    return Task(address=TASK, pid=160, tgid=160, comm="kdl_m1", state="D", cpu=0)


def read(k: FakeKernel, t: Task) -> list[Problem]:
    problems: list[Problem] = []
    read_held_locks(k, LAYOUT, FakeSymbols(), {TASK: t}, problems)  # type: ignore[arg-type]
    return problems


def test_entries_decode_class_names_modes_and_sites() -> None:
    t = task()
    k = kernel_with([entry(M1 + 88, 3, 0, IP + 0x2A), entry(RW + 64, 4, 1, IP + 0x40), entry(M2 + 88, 5, 0, IP + 0x60)])
    assert read(k, t) == []
    assert [(h.name, h.mode(), h.acquired_at) for h in t.held or []] == [
        ("m1", "exclusive", "kdl_fn+0x2a [kdl_mod]"), ("&rw->key#2/1", "read", "kdl_fn+0x40 [kdl_mod]"),
        ("m2", "exclusive", "kdl_fn+0x60 [kdl_mod]")]


def test_owners_certain_while_lockdep_runs_and_the_awaited_lock_is_not_held() -> None:
    t = task()
    read(kernel_with([entry(M1 + 88, 3, 0, IP + 0x2A), entry(RW + 64, 4, 1, IP + 0x40), entry(M2 + 88, 5, 0, IP + 0x60)]), t)
    t.waits_on = M2
    inferred = Owner(TASK, INFERRED, "its address is on the task's stack", "read")
    locks = {M1: Lock(M1, "mutex"), RW: Lock(RW, "rwsem", owners=[inferred]), M2: Lock(M2, "mutex")}
    held_lock_owners(FakeKernel(), locks, {TASK: t}, on=True)  # type: ignore[arg-type]
    (m1,) = locks[M1].owners
    assert (m1.task, m1.confidence, m1.mode) == (TASK, CERTAIN, "exclusive")
    assert m1.evidence == f"{EVIDENCE}: m1 taken at kdl_fn+0x2a [kdl_mod]"
    (rw,) = locks[RW].owners  # the inferred owner is now certain, with both pieces of evidence
    assert (rw.confidence, rw.mode) == (CERTAIN, "read") and "stack" in rw.evidence and EVIDENCE in rw.evidence
    assert locks[M2].owners == []  # it waits on m2: lockdep recorded the acquisition before the wait
    assert [h.lock for h in t.held or []] == [M1, RW, M2]


def test_owners_inferred_once_lockdep_turned_itself_off() -> None:
    t = task()
    read(kernel_with([entry(M1 + 88, 3, 0, IP + 0x2A)]), t)
    locks = {M1: Lock(M1, "mutex")}
    held_lock_owners(FakeKernel(), locks, {TASK: t}, on=False)  # type: ignore[arg-type]
    (owner,) = locks[M1].owners
    assert owner.confidence == INFERRED and "turned itself off" in owner.evidence
    snap = Snapshot(tasks=[t], locks=list(locks.values()), lockdep_on=False)
    text = render_held(snap, snap.tasks)
    assert "lockdep turned itself off" in text
    assert f"1 lock held by kdl_m1/160:\n #0: {M1 + 88:016x} (m1), at: kdl_fn+0x2a [kdl_mod]  [mutex {M1:#x}" in text
    doc = held_json(snap, snap.tasks)
    assert doc["lockdep"] == {"on": False} and doc["tasks"][0]["held"][0]["lock"] == f"{M1:#x}"


def test_depth_beyond_the_array_is_a_problem_not_a_read() -> None:
    t = task()
    problems = read(kernel_with([], depth=4096), t)
    assert t.held == [] and len(problems) == 1 and "more than the 48 entries" in problems[0].why


def test_unreadable_held_locks_is_a_problem() -> None:
    t = task()
    k = kernel_with([entry(M1 + 88, 3, 0, IP)])
    del k.memory[TASK + LAYOUT.held_locks + 20]
    assert len(read(k, t)) == 1 and t.held is None


def test_no_lockdep_says_so() -> None:
    assert "has no lockdep" in render_held(Snapshot(), [])
    assert held_json(Snapshot(), []) == {"lockdep": None, "tasks": []}


def test_held_round_trips_through_json() -> None:
    t = task()
    t.held = [HeldLock(M1 + 88, "m1", IP, "kdl_fn+0x0 [kdl_mod]", 0, M1)]
    again = Snapshot.from_dict(Snapshot(tasks=[t], lockdep_on=True).to_dict())
    assert again.tasks[0].held == t.held and again.lockdep_on is True


def test_awaited_entry_is_not_always_the_last_once_lockdep_is_off() -> None:
    """Seen on 6.1-lockdep (kdl_rwsem): lockdep turned off while kdl_r_writer was in __schedule, so the runqueue
    lock and rcu_read_lock stay listed after rw1, the lock it waits on; rw1 is its wait, not a hold."""
    t = task()
    read(kernel_with([entry(M1 + 88, 3, 0, IP), entry(RW + 64, 4, 0, IP + 0x24), entry(M2 + 88, 5, 0, IP + 0x30)]), t)
    t.waits_on = RW
    locks = {M1: Lock(M1, "mutex"), RW: Lock(RW, "rwsem"), M2: Lock(M2, "mutex")}
    held_lock_owners(FakeKernel(), locks, {TASK: t}, on=False)  # type: ignore[arg-type]
    assert locks[RW].owners == [] and [o.task for o in locks[M1].owners + locks[M2].owners] == [TASK, TASK]
    assert t.awaited_entry() is (t.held or [])[1]
    text = render_held(Snapshot(tasks=[t], locks=list(locks.values()), lockdep_on=False), [t])
    assert text.count("waiting for it") == 1 and "#1: " + f"{RW + 64:016x}" in text.split("waiting for it")[0]


def test_recursive_lock_is_held_and_awaited() -> None:
    t = task()
    read(kernel_with([entry(M1 + 88, 3, 0, IP), entry(M1 + 88, 3, 0, IP + 0x10)]), t)
    t.waits_on = M1
    locks = {M1: Lock(M1, "mutex")}
    held_lock_owners(FakeKernel(), locks, {TASK: t}, on=True)  # type: ignore[arg-type]
    (owner,) = locks[M1].owners  # the first acquisition is a hold: a self-deadlock
    assert owner.task == TASK and "kdl_fn+0x0 " in owner.evidence
