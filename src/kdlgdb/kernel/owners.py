"""Whether an owner the kernel recorded can be true: the one place owners are checked.

``mutex.owner``, a write-held ``rw_semaphore.owner`` and ``rt_mutex_base.owner`` are
``struct task_struct *``. Nothing clears them when the owner exits with the lock held: its
task_struct is freed and the slab gives the slot to the next task created, which may be a
thread that never touched the lock, or one of the lock's own waiters. Read as it is, the
field then names a live task as the certain owner, and a waiter in the slot looks like a
self-deadlock. So before an owner stays ``certain`` (:data:`~kdlgdb.model.CERTAIN`):

1. it is a task in the task list (or a CPU's idle task);
2. it is not itself a waiter of the same lock, unless there is evidence it took the lock
   before: an acquisition of the lock on its own stack frames (then it is a self-deadlock);
3. it started (``task_struct.start_time``) before the lock's first waiter last stopped
   running: a lock that changed hands wakes its first waiter, which runs again after the
   new owner took it and finds it owned. Only the first waiter counts (the others are not
   woken), and only while it sleeps (a woken waiter that has not run yet proves nothing).

An owner that fails one of them becomes :data:`~kdlgdb.model.STALE`, with the reason in its
evidence; a stale owner holds nothing (``Lock.current_owners()``), so it makes no wait-for edge,
no cycle and no self-deadlock, and the chain of the lock's waiters ends at "owner exited".

Pure: the caller (``collect``) hands over the tasks, their :class:`Timing` and a function
that names an earlier acquisition of a lock on a task's stack.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Callable, Optional

from ..model import CERTAIN, STALE, Lock, Owner, Task

__all__ = ["Timing", "check_owners", "clock_skew", "MARGIN_NS"]

# How much later than the first waiter's last run an owner must have started to be impossible.
# start_time is CLOCK_MONOTONIC (ktime_get_ns) and the runqueue clock is sched_clock_cpu(), which
# kernel/sched/clock.c keeps continuous with it (__sched_clock_offset, __gtod_offset); they still
# drift apart by a little, measured on each snapshot (clock_skew) and allowed for on top of this.
MARGIN_NS = 50_000_000

TookBefore = Callable[[Task, Lock], Optional[str]]


@dataclass(frozen=True)
class Timing:
    """When a task started, and the latest it can have last stopped running.

    ``started``: ``task_struct.start_time`` (ns of CLOCK_MONOTONIC at fork). ``ran_until``: an upper
    bound on when it last left its CPU, on the runqueue clock (ns): ``se.exec_start`` (updated on the
    runqueue's ``clock_task`` each time it ran, last when it went to sleep) plus how far that runqueue's
    ``clock_task`` is now behind its ``clock`` (IRQ and steal time, which only grows). None when unknown.
    """

    started: Optional[int] = None
    ran_until: Optional[int] = None


def clock_skew(timing: Mapping[int, Timing]) -> int:
    """How far CLOCK_MONOTONIC runs ahead of the runqueue clock, as far as the snapshot shows (ns, >= 0).

    Every task that ran did so after it started: a ``started`` later than its own ``ran_until`` is skew.
    """
    return max([t.started - t.ran_until for t in timing.values()
                if t.started is not None and t.ran_until is not None] + [0])


def check_owners(locks: Iterable[Lock], tasks: Mapping[int, Task], timing: Mapping[int, Timing],
                 took_before: TookBefore) -> None:
    """Make every certain owner of ``locks`` that cannot be true STALE, in place (see the module's doc).

    ``tasks``: every task of the snapshot by ``struct task_struct *``. ``took_before(task, lock)``: the
    evidence that ``task`` acquired ``lock`` before the call it waits in (e.g. "f+0x1b [mod] called
    mutex_lock() on it at 0x…"), or None. An owner that waits on its own lock with that evidence stays
    certain, the evidence added to its own.
    """
    locks = list(locks)
    waiting: dict[int, list[int]] = {}
    for lock in locks:
        waiting[lock.address] = list(lock.waiters)
    for address, task in sorted(tasks.items(), key=lambda item: (item[1].pid, item[0])):
        queue = waiting.get(task.waits_on) if task.waits_on is not None else None
        if queue is not None and address not in queue:
            queue.append(address)
    skew = clock_skew(timing)
    for lock in locks:
        lock.owners = [_checked(lock, o, tasks, timing, waiting[lock.address], took_before, skew)
                       if o.confidence == CERTAIN else o for o in lock.owners]


def _checked(lock: Lock, owner: Owner, tasks: Mapping[int, Task], timing: Mapping[int, Timing],
             waiters: list[int], took_before: TookBefore, skew: int) -> Owner:
    """``owner`` as it stays, or made STALE with the reason."""
    field = f"{owner.evidence} names struct task_struct {owner.task:#x}"
    task = tasks.get(owner.task)
    if task is None:
        return replace(owner, confidence=STALE, evidence=f"owner exited: {field}, which is no task in the task list")
    who = task.name()
    if owner.task in waiters:
        evidence = took_before(task, lock)
        if evidence is None:
            return replace(owner, confidence=STALE, evidence=(
                f"owner exited or slot reused: {field}, now {who}, which waits on this lock itself "
                "and has no earlier acquisition of it on its stack"))
        owner = replace(owner, evidence=f"{owner.evidence}; it waits on it again, after taking it: {evidence}")
    first = next((w for w in waiters if w != owner.task), None)
    waiter = tasks.get(first) if first is not None else None
    if waiter is None or waiter.on_cpu or waiter.state == "R":
        return owner  # no waiter, or the first one was woken (or runs): it proves nothing
    started = timing.get(owner.task, Timing()).started
    blocked = timing.get(waiter.address, Timing()).ran_until
    if started is None or blocked is None or started <= blocked + skew + MARGIN_NS:
        return owner
    return replace(owner, confidence=STALE, evidence=(
        f"owner exited or slot reused: struct task_struct {owner.task:#x} now belongs to {who}, which started "
        f"{_seconds(started - blocked)} after {waiter.name()} began waiting ({owner.evidence})"))


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.1f} s" if ns >= 100_000_000 else f"{ns // 1_000_000} ms"
