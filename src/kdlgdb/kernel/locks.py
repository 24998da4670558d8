"""Decoding the sleeping locks: who owns them, what their counters say.

Each decoder reads the lock once and returns (owners, details). Owners that the
kernel records (mutex owner, rwsem writer) are certain; others are inferred
elsewhere (``held.py``) and added later.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import KdlError
from ..model import CERTAIN, INFERRED, Owner
from .layout import Kernel, le32, le64

__all__ = ["LockKind", "lock_kinds", "last_reader"]

# The low bits of mutex.owner are flags since v4.10 (3ca0ff571b09): WAITERS 0x1,
# HANDOFF 0x2, PICKUP 0x4. task_struct is cache-line aligned, so masking 0x7 is safe.
MUTEX_FLAGS = 0x7
MUTEX_FLAG_NAMES = {0x1: "WAITERS", 0x2: "HANDOFF", 0x4: "PICKUP"}
# rw_semaphore.count since v5.3 (64489e78004c): bit 0 writer locked, bit 1 waiters,
# bit 2 handoff, readers counted from bit 8. rw_semaphore.owner low bits: READER_OWNED
# 0x1, NONSPINNABLE 0x2 (mask 0x3 since v5.11, 617f3ef95177; 0x7 covers older ones).
RWSEM_WRITER_LOCKED = 0x1
RWSEM_FLAG_WAITERS = 0x2
RWSEM_FLAG_HANDOFF = 0x4
RWSEM_READER_SHIFT = 8
RWSEM_READER_OWNED = 0x1
RWSEM_OWNER_FLAGS = 0x7


@dataclass
class LockKind:
    """One kind of sleeping lock: its struct, the waiter struct on the waiter's stack."""

    name: str  # "mutex", "semaphore", "rwsem"
    struct: str
    waiter: str
    wait_list: int  # offset of the wait-list head in the lock
    waiter_list: int  # offset of the list node in the waiter
    waiter_task: int  # offset of the task pointer in the waiter
    decode: Callable[[Kernel, int], tuple[list[Owner], dict[str, Any]]]


def lock_kinds(k: Kernel) -> dict[str, LockKind]:
    """The lock kinds this kernel has, keyed by name."""
    kinds = {}
    for name, struct_name, waiter, decode in (
        ("mutex", "struct mutex", "struct mutex_waiter", _decode_mutex),
        ("semaphore", "struct semaphore", "struct semaphore_waiter", _decode_semaphore),
        ("rwsem", "struct rw_semaphore", "struct rwsem_waiter", _decode_rwsem),
    ):
        wait_list = k.member(struct_name, "wait_list")
        if wait_list is None:
            if k.has_member(struct_name, "first_waiter"):
                # A 2026 rework (likely v7.1) replaces wait_list with a headless
                # first_waiter list; walking it is not supported yet.
                raise KdlError(f"this kernel's {struct_name} has first_waiter instead of wait_list: kernel too new for kdlgdb")
            continue  # e.g. PREEMPT_RT, where mutex and rwsem are rt_mutex based
        if not k.has_member(waiter, "task"):
            continue
        kinds[name] = LockKind(
            name, struct_name, waiter, wait_list[0], k.offset(waiter, "list"), k.offset(waiter, "task"), decode
        )
    return kinds


def _decode_mutex(k: Kernel, address: int) -> tuple[list[Owner], dict[str, Any]]:
    owner = le64(k.read(address + k.offset("struct mutex", "owner"), 8), 0)
    task = owner & ~MUTEX_FLAGS
    flags = [n for bit, n in MUTEX_FLAG_NAMES.items() if owner & bit]
    details: dict[str, Any] = {"owner": f"{owner:#x}", "flags": flags}
    if not task:
        details["note"] = "no owner recorded (being released or handed off)"
        return [], details
    return [Owner(task, CERTAIN, "mutex.owner")], details


def _decode_semaphore(k: Kernel, address: int) -> tuple[list[Owner], dict[str, Any]]:
    count = le32(k.read(address + k.offset("struct semaphore", "count"), 4), 0)
    details: dict[str, Any] = {"count": count}
    owners = []
    holder = k.member("struct semaphore", "last_holder")
    if holder is not None:
        # v6.16 (inferred) records the last task that took the semaphore with
        # CONFIG_DETECT_HUNG_TASK_BLOCKER; with count 0 it is the likely holder.
        last = k.u64(address + holder[0])
        details["last_holder"] = f"{last:#x}"
        if last and count == 0:
            owners.append(Owner(last, INFERRED, "semaphore.last_holder (the last task to take it)"))
    return owners, details


def _decode_rwsem(k: Kernel, address: int) -> tuple[list[Owner], dict[str, Any]]:
    t = "struct rw_semaphore"
    count_off, owner_off = k.offset(t, "count"), k.offset(t, "owner")
    data = k.read(address, max(count_off, owner_off) + 8)
    count, owner = le64(data, count_off), le64(data, owner_off)
    readers = count >> RWSEM_READER_SHIFT
    flags = [n for bit, n in ((RWSEM_WRITER_LOCKED, "WRITER_LOCKED"), (RWSEM_FLAG_WAITERS, "WAITERS"), (RWSEM_FLAG_HANDOFF, "HANDOFF")) if count & bit]
    details: dict[str, Any] = {"count": f"{count:#x}", "readers": readers, "flags": flags, "owner": f"{owner:#x}"}
    task = owner & ~RWSEM_OWNER_FLAGS
    if count & RWSEM_WRITER_LOCKED and task:
        return [Owner(task, CERTAIN, "rw_semaphore.owner (write-locked)", "write")], details
    if readers and owner & RWSEM_READER_OWNED and task:
        details["last_reader"] = f"{task:#x}"
    return [], details


def last_reader(details: dict[str, Any]) -> Optional[int]:
    """The rwsem's last reader (a hint: it may have released it since)."""
    text = details.get("last_reader")
    return int(text, 16) if text else None
