"""The owner consistency rule (kernel/owners.py) on hand-made tasks and locks, and what the graph makes of it.

A recorded owner stays certain only if it can be true: a task in the task list, not a waiter of the same
lock without an earlier acquisition of it, started before the lock's first waiter last ran. Otherwise it is
``stale``: no edge, no cycle, and the chain of its waiters ends at "owner exited".
"""
from __future__ import annotations

from typing import Optional

from kdlgdb.analysis.graph import WaitForGraph
from kdlgdb.kernel.owners import MARGIN_NS, Timing, check_owners, clock_skew
from kdlgdb.model import CERTAIN, STALE, Lock, Snapshot, Task
from kdlgdb.render.text import render_waitfor
from test_graph import L, T, lock, owner, task

S = 1_000_000_000  # one second in ns


def no_evidence(task: Task, lock: Lock) -> Optional[str]:
    return None


def took_it(task: Task, lock: Lock) -> Optional[str]:
    return "kdl_rd_fn+0x1d [kdl] called mutex_lock() on it at 0xffffffffc052903c"


def checked(tasks: list[Task], locks: list[Lock], timing: dict[int, Timing], took_before=no_evidence) -> WaitForGraph:
    check_owners(locks, {t.address: t for t in tasks}, timing, took_before)
    return WaitForGraph(Snapshot(tasks=tasks, locks=locks))


def test_owner_that_started_after_the_waiter_blocked_is_stale() -> None:
    # waiter 128 went to sleep on m at 10 s; the slot of m's exited owner went to 140, started at 10.8 s.
    tasks = [task(128, L(1)), task(140, None, state="S", comm="newthread")]
    m = lock(1, owner(140), waiters=[128])
    graph = checked(tasks, [m], {T(128): Timing(2 * S, 10 * S), T(140): Timing(10 * S + 800_000_000, 11 * S)})
    (stale,) = m.owners
    assert stale.confidence == STALE and stale.task == T(140)
    assert stale.evidence.startswith(f"owner exited or slot reused: struct task_struct {T(140):#x} now belongs to "
                                     "\"newthread\" (pid 140), which started 0.8 s after \"t128\" (pid 128) began waiting")
    assert graph.edges_from(T(128)) == [] and graph.holds(T(140)) == [] and graph.cycles == []
    (chain,) = graph.chains
    assert chain.root is None and chain.tasks == [T(128)] and chain.locks == [L(1)]
    assert "whose recorded owner is gone (owner exited or slot reused" in chain.root_reason
    assert graph.holder_note(L(1)) == "owner exited"
    text = render_waitfor(graph.snapshot, graph)
    assert "CHAIN: 1 task blocked on l1 [mod], whose owner exited" in text
    assert "root: owner exited: \"t128\" (pid 128) waits on l1 [mod], whose recorded owner is gone" in text
    assert "newthread" not in text.split("root:")[0]  # never named as the holder


def test_owner_that_started_before_the_waiter_blocked_stays_certain() -> None:
    tasks = [task(128, L(1)), task(140, None, state="S")]
    m = lock(1, owner(140), waiters=[128])
    graph = checked(tasks, [m], {T(128): Timing(2 * S, 10 * S), T(140): Timing(10 * S + MARGIN_NS // 2, 11 * S)})
    assert [(o.confidence, o.evidence) for o in m.owners] == [(CERTAIN, "mutex.owner")]
    assert graph.chains[0].root == T(140)


def test_only_the_first_waiter_asleep_counts() -> None:
    # The second waiter was never woken when the lock changed hands: it proves nothing. A first waiter
    # that was woken (R) and has not run since proves nothing either.
    tasks = [task(128, L(1)), task(129, L(1)), task(140, None, state="S")]
    times = {T(128): Timing(2 * S, 12 * S), T(129): Timing(2 * S, 10 * S), T(140): Timing(11 * S, 13 * S)}
    m = lock(1, owner(140), waiters=[128, 129])
    checked(tasks, [m], times)
    assert m.owners[0].confidence == CERTAIN
    woken = [task(128, L(1), state="R"), task(129, L(1)), task(140, None, state="S")]
    m = lock(1, owner(140), waiters=[128, 129])
    checked(woken, [m], {**times, T(128): Timing(2 * S, 10 * S)})
    assert m.owners[0].confidence == CERTAIN


def test_clock_skew_measured_on_the_snapshot_is_allowed_for() -> None:
    # A task that last ran 0.3 s "before" it started: the monotonic clock is 0.3 s ahead of the runqueue's.
    times = {T(128): Timing(2 * S, 10 * S), T(140): Timing(10 * S + 200_000_000, 11 * S),
             T(150): Timing(5 * S + 300_000_000, 5 * S)}
    assert clock_skew(times) == 300_000_000
    tasks = [task(128, L(1)), task(140, None, state="S"), task(150, None, state="S")]
    m = lock(1, owner(140), waiters=[128])
    checked(tasks, [m], times)
    assert m.owners[0].confidence == CERTAIN


def test_owner_that_waits_on_its_own_lock_without_evidence_is_no_self_deadlock() -> None:
    # The slot of the exited owner went to one of the waiters: the owner field names it.
    tasks = [task(128, L(1), comm="kdl_x_reader"), task(129, L(1))]
    m = lock(1, owner(128), waiters=[128, 129])
    graph = checked(tasks, [m], {T(128): Timing(3 * S, 10 * S), T(129): Timing(3 * S, 10 * S)})
    (stale,) = m.owners
    assert stale.confidence == STALE
    assert stale.evidence == (f"owner exited or slot reused: mutex.owner names struct task_struct {T(128):#x}, now "
                              "\"kdl_x_reader\" (pid 128), which waits on this lock itself and has no earlier acquisition "
                              "of it on its stack")
    assert graph.cycles == []
    (chain,) = graph.chains
    assert chain.root is None and sorted(chain.tasks + chain.joined) == [T(128), T(129)]
    assert "DEADLOCK" not in render_waitfor(graph.snapshot, graph)


def test_owner_that_waits_on_its_own_lock_after_taking_it_is_a_certain_self_deadlock() -> None:
    tasks = [task(128, L(1), comm="kdl_rd"), task(129, L(1))]
    m = lock(1, owner(128), waiters=[128, 129])
    seen: list[tuple[int, int]] = []

    def took_before(t: Task, lk: Lock) -> Optional[str]:
        seen.append((t.pid, lk.address))
        return took_it(t, lk)

    graph = checked(tasks, [m], {T(128): Timing(3 * S, 10 * S), T(129): Timing(3 * S, 11 * S)}, took_before)
    assert seen == [(128, L(1))]
    (certain,) = m.owners
    assert certain.confidence == CERTAIN
    assert certain.evidence == ("mutex.owner; it waits on it again, after taking it: kdl_rd_fn+0x1d [kdl] called "
                                "mutex_lock() on it at 0xffffffffc052903c")
    (cycle,) = graph.cycles
    assert cycle.tasks == [T(128)] and cycle.verdict == "deadlock" and cycle.blocked_behind == [T(129)]


def test_owner_not_in_the_task_list_has_exited() -> None:
    gone = 0xFFFF888007770000
    tasks = [task(128, L(1)), task(129, L(1))]
    m = lock(1, owner(gone), waiters=[128, 129])
    graph = checked(tasks, [m], {})
    (stale,) = m.owners
    assert stale.confidence == STALE
    assert stale.evidence == f"owner exited: mutex.owner names struct task_struct {gone:#x}, which is no task in the task list"
    (chain,) = graph.chains
    assert chain.root is None and "owner exited" in chain.root_reason
    assert "not found" not in chain.root_reason


def test_inferred_owners_are_not_checked_and_stale_ones_leave_room_for_them() -> None:
    tasks = [task(128, L(1)), task(129, L(2))]
    sem = lock(1, owner(129, "inferred", "its address is on the task's stack"), type="semaphore", waiters=[128])
    gone = lock(2, owner(0xFFFF888007770000), waiters=[129])
    checked(tasks, [sem, gone], {})
    assert sem.owners[0].confidence == "inferred"
    assert gone.current_owners() == [] and gone.owner_exited() and not sem.owner_exited()
