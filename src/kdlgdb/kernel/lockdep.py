"""lockdep's own record of the locks each task holds (CONFIG_LOCKDEP: PROVE_LOCKING, DEBUG_LOCK_ALLOC).

On such a kernel ``task->held_locks[0 .. task->lockdep_depth)`` lists every lock the task took and has
not released, oldest first: a ``struct held_lock`` with ``instance`` (the ``struct lockdep_map`` inside
the lock: ``dep_map`` of a mutex, rw_semaphore, raw_spinlock, rt_mutex; or a pseudo-lock's own map,
``(work_completion)(...)``), ``class_idx`` (a bit-field: the index of its class in ``lock_classes``,
whose ``name`` lockdep prints), ``acquire_ip`` and ``read`` (0 exclusive, 1 read, 2 recursive read).
lockdep records an acquisition *before* the task waits for the lock, so the lock a task sleeps on is
the last entry of its own list: that entry is a wait, not a hold.

It also records rwsem readers and spinlocks, whose holders the lock itself does not name. Owners from it
are *certain* while lockdep still runs (``debug_locks`` is 1). After its first report lockdep turns
itself off (``debug_locks_off()``) and records neither acquisitions nor releases from then on: a lock
released since is still listed. The owners are then *inferred*, and the evidence says why.

Everything is detected from the vmlinux's types: the members of ``struct task_struct`` and ``struct
held_lock`` (bit-fields by their bit offsets), the size of ``lock_classes``' elements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ReadError
from ..model import CERTAIN, INFERRED, HeldLock, Lock, Owner, Problem, Task
from .layout import Kernel, le32, le64
from .symbols import Symbols

__all__ = ["LockdepLayout", "read_held_locks", "task_held_locks", "held_lock_owners", "lockdep_on", "EVIDENCE", "DEP_MAP_OF"]

EVIDENCE = "lockdep held_locks"

# The struct whose dep_map (a struct lockdep_map) lockdep's held_lock.instance points at, per lock type.
# spinlock_t's rlock (a raw_spinlock) is at its offset 0, so raw_spinlock's dep_map serves both.
DEP_MAP_OF = {
    "mutex": "struct mutex",
    "rwsem": "struct rw_semaphore",
    "spinlock": "struct raw_spinlock",
    "rwlock": "rwlock_t",
    "rt_mutex": "struct rt_mutex",
}


@dataclass
class LockdepLayout:
    held_locks: int  # offset in task_struct
    depth: int  # offset of lockdep_depth in task_struct
    max_depth: int  # entries in held_locks (MAX_LOCK_DEPTH)
    size: int  # sizeof(struct held_lock)
    instance: int
    acquire_ip: int
    class_idx: tuple[int, int]  # (bit offset, bits) in struct held_lock
    read: tuple[int, int]
    lock_classes: Optional[int]  # address of lock_classes[]
    class_size: int
    class_name: Optional[int]  # offset of name in struct lock_class
    name_version: Optional[int]
    subclass: Optional[int]

    @classmethod
    def detect(cls, k: Kernel) -> Optional["LockdepLayout"]:
        t, h = "struct task_struct", "struct held_lock"
        array = k.member(t, "held_locks")
        depth = k.member(t, "lockdep_depth") if array is not None else None
        if array is None or depth is None:
            return None
        size = k.size(h)
        class_idx = k.target.member_bits(h, "class_idx")
        read = k.target.member_bits(h, "read")
        if class_idx is None or read is None or not size:
            return None
        classes = k.symbol("lock_classes")
        class_size = k.size("struct lock_class")
        return cls(
            held_locks=array[0], depth=depth[0], max_depth=array[1] // size, size=size,
            instance=k.offset(h, "instance"), acquire_ip=k.offset(h, "acquire_ip"),
            class_idx=class_idx, read=read, lock_classes=classes, class_size=class_size,
            class_name=_offset(k, "struct lock_class", "name"),
            name_version=_offset(k, "struct lock_class", "name_version"),
            subclass=_offset(k, "struct lock_class", "subclass"),
        )


def _offset(k: Kernel, type_name: str, member: str) -> Optional[int]:
    found = k.member(type_name, member)
    return found[0] if found is not None else None


def _bits(data: bytes, where: tuple[int, int]) -> int:
    bit, size = where
    if size == 0:  # not a bit-field: a whole unsigned int
        return le32(data, bit // 8)
    word = int.from_bytes(data[bit // 8 : bit // 8 + 8].ljust(8, b"\0"), "little")
    return (word >> (bit % 8)) & ((1 << size) - 1)


def lockdep_on(k: Kernel) -> Optional[bool]:
    """None without lockdep; else whether it still checks (``debug_locks``, which its first report clears)."""
    address = k.symbol("debug_locks")
    if address is None or not k.has_member("struct task_struct", "held_locks"):
        return None
    try:
        return k.u32(address) != 0
    except ReadError:
        return None


class ClassNames:
    """lock_classes[i] as lockdep prints it: ``name``, ``#version`` when > 1, ``/subclass`` when not 0."""

    def __init__(self, k: Kernel, layout: LockdepLayout) -> None:
        self.k = k
        self.layout = layout
        self._names: dict[int, str] = {}

    def __call__(self, index: int) -> str:
        if index not in self._names:
            self._names[index] = self._read(index)
        return self._names[index]

    def _read(self, index: int) -> str:
        lay = self.layout
        if lay.lock_classes is None or lay.class_name is None:
            return f"class {index}"
        base = lay.lock_classes + index * lay.class_size
        try:
            pointer = self.k.u64(base + lay.class_name)
            name = self.k.string(pointer, 128) if pointer else f"class {index}"
            if lay.name_version is not None:
                version = self.k.u32(base + lay.name_version)
                name += f"#{version}" if version > 1 else ""
            if lay.subclass is not None:
                sub = self.k.u32(base + lay.subclass)
                name += f"/{sub}" if sub else ""
        except ReadError:
            return f"class {index}"
        return name


def task_held_locks(layout: LockdepLayout, data: bytes) -> Optional[tuple[int, bytes]]:
    """(lockdep_depth, its held_locks entries) out of a task_struct already read whole (None when ``data`` does
    not reach that far): over a gdbstub each read is a round trip, two a task on 1,000 tasks."""
    end = layout.held_locks + layout.max_depth * layout.size
    if len(data) < max(end, layout.depth + 4):
        return None
    depth = le32(data, layout.depth)
    return depth, data[layout.held_locks : layout.held_locks + min(depth, layout.max_depth) * layout.size]


def read_held_locks(k: Kernel, layout: LockdepLayout, symbols: Symbols, tasks: dict[int, Task],
                    problems: list[Problem], raw: Optional[dict[int, tuple[int, bytes]]] = None) -> None:
    """Set ``held`` of every task from its held_locks (from ``raw``, :func:`task_held_locks` of each task_struct
    as collect read it, where it has them)."""
    names = ClassNames(k, layout)
    for address, task in tasks.items():
        where = f"task {task.name()}"
        try:
            depth, data = raw[address] if raw is not None and address in raw else (k.u32(address + layout.depth), None)
            if depth > layout.max_depth:
                problems.append(Problem("held_locks", where,
                                        f"lockdep_depth {depth} is more than the {layout.max_depth} entries of held_locks"))
                task.held = []
                continue
            if data is None:
                data = k.read(address + layout.held_locks, depth * layout.size) if depth else b""
        except ReadError as e:
            problems.append(Problem("held_locks", where, str(e)))
            continue
        held = []
        for i in range(depth):
            entry = data[i * layout.size : (i + 1) * layout.size]
            ip = le64(entry, layout.acquire_ip)
            sym, offset, module = symbols.lookup(ip) if ip else (None, 0, None)
            at = None if sym is None else (f"{sym}+{offset:#x} [{module}]" if module else f"{sym}+{offset:#x}")
            held.append(HeldLock(instance=le64(entry, layout.instance), name=names(_bits(entry, layout.class_idx)),
                                 acquire_ip=ip, acquired_at=at, read=_bits(entry, layout.read)))
        task.held = held


def held_lock_owners(k: Kernel, locks: dict[int, Lock], tasks: dict[int, Task], on: bool) -> None:
    """Owners of the snapshot's locks from the tasks' held_locks: certain while lockdep ran (``on``), else
    inferred. A task's entry for the lock it waits on is its wait (lockdep records it first), not a hold."""
    by_map: dict[int, Lock] = {}
    for lock in locks.values():
        struct = DEP_MAP_OF.get(lock.type)
        found = k.member(struct, "dep_map") if struct else None
        if found is not None:
            by_map[lock.address + found[0]] = lock
    for task in tasks.values():
        for entry in task.held or ():
            lock = by_map.get(entry.instance)
            entry.lock = lock.address if lock is not None else None
    for address, task in tasks.items():
        awaited = task.awaited_entry()
        for entry in task.held or ():
            lock = by_map.get(entry.instance)
            if lock is None:
                continue
            if entry is awaited:
                continue  # the acquisition it sleeps in
            mode = _mode(lock, entry)
            evidence = f"{EVIDENCE}: {entry.name} taken at {entry.acquired_at or hex(entry.acquire_ip)}"
            known = next((o for o in lock.owners if o.task == address), None)
            if known is not None:
                if EVIDENCE not in known.evidence:
                    known.evidence += f"; {evidence}"
                if on and known.confidence != CERTAIN:
                    known.confidence, known.mode = CERTAIN, mode
                continue
            if not on:
                evidence += " (recorded before lockdep turned itself off: a release since then is not recorded)"
            lock.owners.append(Owner(address, CERTAIN if on else INFERRED, evidence, mode))


def _mode(lock: Lock, entry: HeldLock) -> str:
    if lock.type == "rwsem" or lock.type == "rwlock":
        return "read" if entry.read else "write"
    return "exclusive"
