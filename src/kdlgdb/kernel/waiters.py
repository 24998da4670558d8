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
from ..model import Frame
from .layout import KERNEL_SPACE, Kernel, le64
from .locks import LockKind
from .stack import Stack

__all__ = ["BlockedOn", "find_wait_blocked_on", "SCHEDULER", "IO_WAITS", "is_scheduler", "interesting_frame", "io_wait", "SLOW_PATHS", "slow_path", "past_scheduler", "StackRanges", "find_wait", "Wait"]

MAX_WAITERS = 1_000_000
STALE_RUN = 3  # stale return addresses skipped between two scheduler frames (past_scheduler)

# The functions a task sleeps in while it waits for each kind of lock.
SLOW_PATHS = {
    "mutex": {
        "__mutex_lock", "__mutex_lock_slowpath", "__mutex_lock_killable_slowpath",
        "__mutex_lock_interruptible_slowpath", "mutex_lock", "mutex_lock_killable",
        "mutex_lock_interruptible", "mutex_lock_io", "__ww_mutex_lock", "ww_mutex_lock",
        "ww_mutex_lock_interruptible", "__ww_mutex_lock_slowpath",
        "__ww_mutex_lock_interruptible_slowpath",
        # CONFIG_DEBUG_LOCK_ALLOC's entry points (mutex_lock() is mutex_lock_nested(lock, 0) there); with -Os
        # (tinyconfig) gcc inlines __mutex_lock into them, so they are the frame that sleeps.
        "mutex_lock_nested", "_mutex_lock_nest_lock", "mutex_lock_killable_nested",
        "mutex_lock_interruptible_nested", "mutex_lock_io_nested", "__mutex_lock_common",
    },
    "semaphore": {
        "__down", "__down_common", "__down_interruptible", "__down_killable", "__down_timeout",
        "down", "down_interruptible", "down_killable", "down_timeout",
    },
    "rwsem": {
        "rwsem_down_read_slowpath", "rwsem_down_write_slowpath", "down_read", "down_write",
        "down_read_killable", "down_write_killable", "down_read_interruptible",
        "__down_read", "__down_write", "__down_read_common", "__down_write_common",
        "down_read_nested", "down_write_nested",
        # CONFIG_DEBUG_LOCK_ALLOC's entry points
        "down_read_killable_nested", "down_write_killable_nested", "_down_write_nest_lock", "down_read_non_owner",
    },
    # Queued behind a writer's block (percpu-rwsem.c); a writer waiting for readers sleeps in
    # percpu_down_write itself, which percpu_rwsem.find_writer_waits decodes.
    "percpu_rwsem": {"percpu_rwsem_wait", "__percpu_down_read"},
}
_BY_NAME = {fn: kind for kind, fns in SLOW_PATHS.items() for fn in fns}


def base_name(symbol: Optional[str]) -> str:
    """``__mutex_lock.constprop.0`` -> ``__mutex_lock``."""
    return (symbol or "").split(".", 1)[0]


# What a sleeping task's stack starts with before the function that chose to sleep. The one set of
# scheduler plumbing: the lock slow paths, the non-lock waits (blocked.py), the held-lock scan and a
# chain root's description (analysis/graph.py) all look past it.
SCHEDULER = {
    "__schedule", "schedule", "schedule_timeout", "schedule_preempt_disabled", "schedule_idle",
    "preempt_schedule", "preempt_schedule_common", "context_switch", "finish_task_switch",
    "__switch_to", "__switch_to_asm", "schedule_hrtimeout_range_clock", "schedule_hrtimeout_range",
    "io_schedule", "io_schedule_timeout",
    # rt_mutex waits call the scheduler through rt_mutex_schedule (v6.6, "locking/rtmutex: Use
    # rt_mutex specific scheduler helpers"); PREEMPT_RT's spinlock_t/rwlock_t through schedule_rtlock
    # (v5.15, "sched: Provide schedule point for RT locks").
    "rt_mutex_schedule", "schedule_rtlock",
}
# The scheduler entries of an I/O wait (a task in one is "in I/O wait", as the kernel's iowait accounting says).
IO_WAITS = {"io_schedule", "io_schedule_timeout"}


# Entry code at either end of a stack: never where a task chose to sleep.
ENTRY_CODE = ("__switch_to", "ret_from_fork")


def is_scheduler(frame: Frame) -> bool:
    """Whether ``frame`` is scheduler plumbing (``SCHEDULER``), not where the task chose to sleep."""
    return frame.module is None and base_name(frame.symbol) in SCHEDULER


def interesting_frame(frames: list[Frame]) -> Optional[Frame]:
    """The innermost frame that is neither scheduler plumbing nor entry code: where the task chose to
    sleep (``msleep+0x2d``, ``kdl_w1_fn+0x64 [kdl_chain]``). None when the stack has nothing else."""
    for frame in frames[past_scheduler(frames):]:
        if frame.symbol is not None and not is_scheduler(frame) and not frame.symbol.startswith(ENTRY_CODE):
            return frame
    return None


def io_wait(frames: list[Frame]) -> Optional[str]:
    """The I/O-wait entry (``io_schedule``, ``io_schedule_timeout``) among the scheduler frames on top, else None."""
    return next((base_name(f.symbol) for f in frames[:past_scheduler(frames)] if base_name(f.symbol) in IO_WAITS), None)


def slow_path(frames: list[Frame]) -> Optional[tuple[str, int]]:
    """(lock kind, index of the slow-path frame) when the task sleeps in a lock's slow path.

    The first frame past the scheduler must be the slow path: a stack scan also
    finds stale return addresses deeper down (an old ``down_write`` of a task now
    in nanosleep), and those must not count.
    """
    i = past_scheduler(frames)
    if i == len(frames):
        return None
    kind = _BY_NAME.get(base_name(frames[i].symbol))
    return (kind, i) if kind is not None and frames[i].module is None else None


def past_scheduler(frames: list[Frame], keep: frozenset[str] = frozenset()) -> int:
    """Index of the first frame that is not scheduler plumbing (``SCHEDULER``), len(frames) if none.

    Frames amid the scheduler's (scheduler plumbing before and right after them, at most STALE_RUN of them)
    that are no lock slow path are stale return addresses the stack scan found, not callers:
    ``__schedule+0x4da``, ``find_held_lock+0x2b``, ``kdl_r_reader_fn+0x24 [kdl_rwsem]``, ``schedule+0x6e``,
    ``schedule_preempt_disabled+0x10``, ``__mutex_lock+0x1ed`` on the -Os 6.1-lockdep kernel, whose __schedule
    leaves slots of its frame unwritten. They are skipped; so are not the functions named in ``keep`` (the
    rt_mutex path, for rtmutex.py).
    """
    i = 0
    while i < len(frames):
        if is_scheduler(frames[i]):
            i += 1
            continue
        resume = next((j for j in range(i + 1, min(i + 1 + STALE_RUN, len(frames))) if is_scheduler(frames[j])), None)
        if i == 0 or resume is None or any(base_name(f.symbol) in _BY_NAME or base_name(f.symbol) in keep
                                           for f in frames[i:resume]):
            return i
        i = resume
    return len(frames)


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
    return replace(wait, node=node, evidence=evidence)


def _for_node(wait: Wait, kind: LockKind, node: int) -> Wait:
    """The Wait as seen from the task whose waiter node is ``node``."""
    evidence = f"{kind.waiter} at {node:#x} on its stack, linked into {kind.struct} {wait.lock:#x}.wait_list"
    return replace(wait, node=node, evidence=evidence)


def _walk_wait_list(k: Kernel, kind: LockKind, start: int, stacks: StackRanges) -> Optional[tuple[int, list[tuple[int, int]]]]:
    """(head, [(node, task)]) of the ring through ``start``; None if it is not a wait list."""
    ring = [start]
    prev, node = start, k.u64(start)
    if node < KERNEL_SPACE or k.u64(start + 8) < KERNEL_SPACE:
        return None
    for _ in range(MAX_WAITERS):
        if node < KERNEL_SPACE:
            return None
        try:
            links = k.read(node, 16)
        except ReadError:
            if node in stacks:
                raise
            return _around_unreadable_head(k, kind, start, node, ring, stacks)
        next_, back = le64(links, 0), le64(links, 8)
        if back != prev:
            raise CorruptError(f"wait list broken at {node:#x}: prev is {back:#x}, expected {prev:#x}")
        if node == start:
            break
        ring.append(node)
        prev, node = node, next_
    else:
        raise CorruptError(f"wait list through {start:#x} loops without end")
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
