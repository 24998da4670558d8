"""Which lock a blocked task waits on, and each lock's wait list.

Works on every configuration: the slow path that a task sleeps in puts a
waiter struct (``{struct list_head list; struct task_struct *task; ...}``) on
the task's own stack and links it into the lock's ``wait_list``. We find that
node by its ``task`` field, walk the ring (checking ``next->prev`` at each
step) and take the one node that lies on no task's stack: that is the
``wait_list`` head inside the lock.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Optional

from ..errors import CorruptError, ReadError
from ..model import BLOCKED_ON, WAIT_LIST
from .layout import KERNEL_SPACE, Kernel
from .list import BadLink, list_walk
from .locks import LockKind
from .stack import Stack

__all__ = ["BlockedOn", "find_wait_blocked_on", "StackRanges", "find_wait", "Wait"]

MAX_WAITERS = 1_000_000

class StackRanges:
    """Is an address on some task's kernel stack?"""

    def __init__(self, bases: list[int], thread_size: int) -> None:
        self.bases = sorted(set(b for b in bases if b))
        self.thread_size = thread_size

    def __contains__(self, address: int) -> bool:
        i = bisect.bisect_right(self.bases, address) - 1
        return i >= 0 and address < self.bases[i] + self.thread_size


@dataclass
class Wait:
    lock: int  # lock address
    node: int  # this task's waiter node
    waiters: list[tuple[int, int]]  # (waiter node, task) in wait-list order
    evidence: str
    source: str = WAIT_LIST  # how the task was found on it: WAIT_LIST, or BLOCKED_ON


def find_wait(
    k: Kernel, kind: LockKind, task: int, stack: Stack, stacks: StackRanges, known: dict[int, Wait]
) -> Optional[Wait]:
    """The lock ``task`` waits on, from the waiter struct on its stack.

    ``known`` maps waiter nodes already seen on some lock's wait list to that
    lock's Wait, so each wait list is walked once however many tasks wait on it.
    """
    for slot in stack.slots_holding(task):
        node = slot - kind.waiter_task + kind.waiter_list
        if node < stack.sp:
            continue
        if node in known:
            return _for_node(known[node], kind, node)
        try:
            found = _walk_wait_list(k, kind, node, stacks)
        except (ReadError, CorruptError):
            continue  # not a live waiter; keep looking
        if found is None:
            continue
        head, waiters = found
        lock = head - kind.wait_list
        wait = _for_node(Wait(lock, node, waiters, ""), kind, node)
        for waiter_node, _ in waiters:
            known[waiter_node] = wait
        return wait
    return None


@dataclass
class BlockedOn:
    """``task_struct.blocked_on``, read by what its type says it points to (never by name or version):

    * ``struct mutex_waiter *``: CONFIG_DEBUG_MUTEXES up to v6.16 (debug_mutex_add_waiter() sets it to the
      waiter on the task's stack while it sleeps in __mutex_lock);
    * ``struct mutex *``: v6.17+, unconditional (44e4e0297c3c, "locking/mutex: Rework task_struct::blocked_on"
      for proxy execution): the mutex itself.
    """

    offset: int
    points_to: str  # "waiter" or "lock"

    @classmethod
    def detect(cls, k: Kernel) -> Optional["BlockedOn"]:
        found = k.member("struct task_struct", "blocked_on")
        if found is None:
            return None
        spelled = "".join((k.target.member_type("struct task_struct", "blocked_on") or "").split())
        points_to = {"structmutex_waiter*": "waiter", "structmutex*": "lock"}.get(spelled)
        return cls(found[0], points_to) if points_to else None


def find_wait_blocked_on(
    k: Kernel, kind: LockKind, blocked_on: BlockedOn, task: int, stacks: StackRanges, known: dict[int, Wait]
) -> Optional[Wait]:
    """The mutex ``task`` waits on, from ``task->blocked_on`` (None when it is clear or not a wait list
    this task is on): the waiter's (or the lock's) wait list is walked as from a waiter on the stack."""
    value = k.u64(task + blocked_on.offset)
    if value < KERNEL_SPACE:
        return None
    start = value + (kind.waiter_list if blocked_on.points_to == "waiter" else kind.wait_list)
    if start in known and blocked_on.points_to == "waiter":
        wait = known[start]
    else:
        found = _walk_wait_list(k, kind, start, stacks)
        if found is None:
            return None
        head, waiters = found
        wait = Wait(head - kind.wait_list, start, waiters, "")
        for waiter_node, _ in waiters:
            known[waiter_node] = wait
    node = next((n for n, t in wait.waiters if t == task), None)
    if node is None:
        return None
    what = kind.waiter if blocked_on.points_to == "waiter" else kind.struct
    evidence = (f"task->blocked_on: {what} {value:#x}; its {kind.waiter} at {node:#x}, "
                f"linked into {kind.struct} {wait.lock:#x}.wait_list")
    return replace(wait, node=node, evidence=evidence, source=BLOCKED_ON)


def _for_node(wait: Wait, kind: LockKind, node: int) -> Wait:
    """The Wait as seen from the task whose waiter node is ``node``."""
    evidence = f"{kind.waiter} at {node:#x} on its stack, linked into {kind.struct} {wait.lock:#x}.wait_list"
    return replace(wait, node=node, evidence=evidence, source=WAIT_LIST)


class _Unreadable(Exception):
    def __init__(self, node: int) -> None:
        self.node = node


def _walk_wait_list(k: Kernel, kind: LockKind, start: int, stacks: StackRanges) -> Optional[tuple[int, list[tuple[int, int]]]]:
    """(head, [(node, task)]) of the ring through ``start``; None if it is not a wait list."""
    if k.u64(start) < KERNEL_SPACE or k.u64(start + 8) < KERNEL_SPACE:
        return None

    def read_links(node: int) -> bytes:
        try:
            return k.read(node, 16)
        except ReadError:
            if node in stacks:
                raise
            raise _Unreadable(node) from None

    ring = [start]
    try:
        for node, _ in list_walk(k, start, read_links, f"wait list through {start:#x}", MAX_WAITERS, ring=True):
            ring.append(node)
    except BadLink:
        return None
    except _Unreadable as e:
        return _around_unreadable_head(k, kind, start, e.node, ring, stacks)
    heads = [n for n in ring if n not in stacks]
    if len(heads) != 1:
        return None
    head = heads[0]
    i = ring.index(head)
    order = ring[i + 1 :] + ring[:i]
    return head, _waiter_tasks(k, kind, order)


def _waiter_tasks(k: Kernel, kind: LockKind, nodes: list[int]) -> list[tuple[int, int]]:
    return [(n, k.u64(n - kind.waiter_list + kind.waiter_task)) for n in nodes]


def _around_unreadable_head(k: Kernel, kind: LockKind, start: int, head: int, forward: list[int],
                            stacks: StackRanges) -> Optional[tuple[int, list[tuple[int, int]]]]:
    """The ring when one node off every stack cannot be read: that is the lock's wait_list head
    (its page is missing from a filtered dump). Walk back from ``start`` to it for the waiters
    before ``start``, so the wait and its waiters are still known, though the lock is not."""
    behind: list[int] = []
    node = k.u64(start + 8)
    while node != head:
        if node < KERNEL_SPACE or node not in stacks or len(behind) > MAX_WAITERS:
            return None  # a second node off the stacks, or no way back: not a wait list we can trust
        behind.append(node)
        node = k.u64(node + 8)
    return head, _waiter_tasks(k, kind, behind[::-1] + forward)
