"""Tests for kdlgdb.analysis.graph on hand-built snapshots.

The shapes include the ones a naive "already visited means cycle" search gets
wrong (diamonds, long chains), so each test asserts exact cycles and chains.
"""
from __future__ import annotations

import time

from kdlgdb.analysis.graph import (
    Chain,
    Edge,
    WaitForGraph,
    describe_activity,
    interesting_frame,
    shortest_cycle,
    tarjan_scc,
)
from kdlgdb.model import Frame, Lock, Owner, Snapshot, Task


def T(pid: int) -> int:
    """The task_struct address used for ``pid`` in these tests."""
    return 0xFFFF888004000000 + pid * 0x2000


def L(n: int) -> int:
    """The address of test lock ``n``."""
    return 0xFFFFFFFFC0200000 + n * 0x20


SLEEP = [
    Frame(pc=0xFFFFFFFF81C00001, symbol="__schedule", offset=0x2C5, sp=0xFFFFC90000123E58),
    Frame(pc=0xFFFFFFFF81C00002, symbol="schedule", offset=0x5D, sp=0xFFFFC90000123EB0),
    Frame(pc=0xFFFFFFFF81C00003, symbol="schedule_timeout", offset=0x95, sp=0xFFFFC90000123EC8),
    Frame(pc=0xFFFFFFFF81C00004, symbol="msleep", offset=0x2D, sp=0xFFFFC90000123EE0),
    Frame(pc=0xFFFFFFFFC0200100, symbol="holder_fn", offset=0x40, module="kdl", sp=0xFFFFC90000123EF0),
]


def task(pid: int, waits_on: int | None = None, state: str = "D", **kw) -> Task:
    return Task(address=T(pid), pid=pid, tgid=pid, comm=kw.pop("comm", f"t{pid}"), state=state,
                cpu=kw.pop("cpu", 0), waits_on=waits_on, **kw)


def owner(pid_or_addr: int, confidence: str = "certain", evidence: str = "mutex.owner", mode: str = "exclusive") -> Owner:
    address = pid_or_addr if pid_or_addr > 1 << 32 else T(pid_or_addr)
    return Owner(task=address, confidence=confidence, evidence=evidence, mode=mode)


def lock(n: int, *owners: Owner, type: str = "mutex", symbol: str | None = "", waiters=()) -> Lock:
    return Lock(address=L(n), type=type, symbol=f"l{n}" if symbol == "" else symbol,
                module="mod" if symbol is not None else None, owners=list(owners),
                waiters=[T(p) for p in waiters])


def pids(graph: WaitForGraph, addresses: list[int]) -> list[int | None]:
    return [graph.task(a).pid if graph.task(a) else None for a in addresses]


def assert_partition(graph: WaitForGraph) -> None:
    """Every blocked task is in exactly one cycle, blocked_behind list, chain path or joined list."""
    seen: list[int] = []
    for cycle in graph.cycles:
        seen += cycle.tasks + cycle.blocked_behind
    for chain in graph.chains:
        seen += (chain.tasks[:-1] if chain.root is not None else chain.tasks) + chain.joined
    assert sorted(seen) == sorted(graph.blocked)


# -- shapes that are not deadlocks ---------------------------------------------

def test_diamond_is_one_chain_not_a_cycle():
    # A(1) and B(2) wait on l1 held by C(3); C waits on l2 held by D(4), which sleeps.
    snap = Snapshot(
        tasks=[task(4, frames=SLEEP), task(2, L(1)), task(1, L(1)), task(3, L(2))],
        locks=[lock(1, owner(3), waiters=[1, 2]), lock(2, owner(4), waiters=[3])],
    )
    graph = WaitForGraph(snap)
    assert graph.cycles == []
    assert graph.chains == [
        Chain(tasks=[T(1), T(3), T(4)], locks=[L(1), L(2)], root=T(4),
              root_reason="sleeps (D) in msleep+0x2d while holding l2 [mod]", joined=[T(2)])
    ]
    assert [e.owner for e in graph.path(T(2))] == [T(3), T(4)]
    assert_partition(graph)


def test_long_chain_has_no_cycle_and_no_recursion_limit():
    n = 10_000
    tasks = [task(i, L(i)) for i in range(1, n)] + [task(n, state="R", on_cpu=True, cpu=1)]
    locks = [lock(i, owner(i + 1)) for i in range(1, n)]
    started = time.monotonic()
    graph = WaitForGraph(Snapshot(tasks=tasks[::-1], locks=locks))
    assert time.monotonic() - started < 10
    assert graph.cycles == []
    assert len(graph.chains) == 1
    chain = graph.chains[0]
    assert chain.tasks == [T(i) for i in range(1, n + 1)]
    assert chain.locks == [L(i) for i in range(1, n)]
    assert chain.root == T(n)
    assert chain.root_reason == f"is running on CPU 1 (on_cpu) while holding l{n - 1} [mod]"
    assert chain.joined == []


def test_two_roots_give_two_chains_sorted_by_pid():
    snap = Snapshot(
        tasks=[task(9, L(2)), task(3, L(1)), task(7, state="S"), task(8, state="S")],
        locks=[lock(2, owner(7)), lock(1, owner(8))],
    )
    graph = WaitForGraph(snap)
    assert [(c.tasks, c.root) for c in graph.chains] == [([T(3), T(8)], T(8)), ([T(9), T(7)], T(7))]
    assert graph.chains[0].root_reason == "sleeps (S) while holding l1 [mod]"
    assert_partition(graph)


def test_chain_follows_the_longest_path_and_joins_the_rest():
    # 5 -> l1 -> 3 -> l2 -> 4 (root); 1 also waits on l2, a shorter path into the same root.
    snap = Snapshot(
        tasks=[task(1, L(2)), task(3, L(2)), task(4, state="S"), task(5, L(1))],
        locks=[lock(1, owner(3)), lock(2, owner(4))],
    )
    graph = WaitForGraph(snap)
    [chain] = graph.chains
    assert (chain.tasks, chain.locks, chain.root, chain.joined) == ([T(5), T(3), T(4)], [L(1), L(2)], T(4), [T(1)])
    assert graph.membership(T(1)) is chain and graph.membership(T(4)) is chain
    assert_partition(graph)


# -- cycles --------------------------------------------------------------------

def test_three_cycle_rotated_to_smallest_pid_with_advice():
    # 30 waits on x (a) held by 10; 10 waits on y (b) held by 20; 20 waits on z (c) held by 30.
    snap = Snapshot(
        tasks=[task(30, L(3)), task(20, L(2)), task(10, L(1))],
        locks=[lock(3, owner(10), symbol="a"), lock(1, owner(20), symbol="b"), lock(2, owner(30), symbol="c")],
    )
    graph = WaitForGraph(snap)
    assert len(graph.cycles) == 1
    cycle = graph.cycles[0]
    assert cycle.tasks == [T(10), T(20), T(30)]
    assert cycle.locks == [L(1), L(2), L(3)]
    assert [(e.waiter, e.lock, e.owner) for e in cycle.edges] == [
        (T(10), L(1), T(20)), (T(20), L(2), T(30)), (T(30), L(3), T(10))]
    assert cycle.verdict == "deadlock" and cycle.inferred == []
    assert cycle.blocked_behind == []
    assert cycle.advice == "take a before b before c [mod]: \"t30\" (pid 30) holds c and then takes a"
    assert graph.chains == []


def abba(confidence: str = "inferred") -> Snapshot:
    """kdl_a (91) holds sem1 and waits on sem2; kdl_b (92) holds sem2 and waits on sem1."""
    sem1 = Lock(L(1), "semaphore", "sem1", "kdl_abba", [owner(91, confidence, "sem1 on stack above down")], [T(92)])
    sem2 = Lock(L(2), "semaphore", "sem2", "kdl_abba", [owner(92, confidence, "sem2 on stack above down")], [T(91)])
    return Snapshot(tasks=[task(92, L(1), comm="kdl_b"), task(91, L(2), comm="kdl_a")], locks=[sem2, sem1])


def test_abba_probable_names_inferred_edges_and_advice():
    graph = WaitForGraph(abba())
    [cycle] = graph.cycles
    assert cycle.tasks == [T(91), T(92)]
    assert cycle.locks == [L(2), L(1)]
    assert cycle.verdict == "probable"
    assert cycle.inferred == [
        Edge(T(91), L(2), T(92), "inferred", "sem2 on stack above down"),
        Edge(T(92), L(1), T(91), "inferred", "sem1 on stack above down"),
    ]
    assert cycle.advice == "take sem1 before sem2 [kdl_abba]: \"kdl_b\" (pid 92) holds sem2 and then takes sem1"


def test_abba_certain_is_deadlock():
    [cycle] = WaitForGraph(abba("certain")).cycles
    assert cycle.verdict == "deadlock"
    assert cycle.inferred == []


def test_certain_owner_preferred_over_duplicate_inferred_one():
    snap = abba("certain")
    snap.locks[0].owners.insert(0, owner(92, "inferred", "stack scan"))
    [cycle] = WaitForGraph(snap).cycles
    assert cycle.verdict == "deadlock"
    assert [e.confidence for e in cycle.edges] == ["certain", "certain"]


def test_self_deadlock():
    snap = Snapshot(tasks=[task(5, L(1), comm="kdl_x")], locks=[lock(1, owner(5), symbol="m1")])
    graph = WaitForGraph(snap)
    [cycle] = graph.cycles
    assert (cycle.tasks, cycle.locks, cycle.verdict) == ([T(5)], [L(1)], "deadlock")
    assert cycle.advice == "\"kdl_x\" (pid 5) takes m1 [mod] again while holding it"
    assert graph.holds(T(5)) == [L(1)]


def test_two_disjoint_cycles_sorted_by_smallest_pid():
    snap = Snapshot(
        tasks=[task(40, L(4)), task(41, L(3)), task(7, L(1)), task(8, L(2))],
        locks=[lock(3, owner(40)), lock(4, owner(41)), lock(1, owner(8)), lock(2, owner(7))],
    )
    graph = WaitForGraph(snap)
    assert [c.tasks for c in graph.cycles] == [[T(7), T(8)], [T(40), T(41)]]
    assert [c.locks for c in graph.cycles] == [[L(1), L(2)], [L(4), L(3)]]
    assert graph.chains == []


def test_task_blocked_behind_cycle_through_two_hops():
    snap = abba("certain")
    snap.tasks += [task(50, L(5)), task(40, L(1)), task(60, state="S")]
    snap.locks.append(lock(5, owner(40)))
    graph = WaitForGraph(snap)
    [cycle] = graph.cycles
    assert cycle.tasks == [T(91), T(92)]
    assert cycle.blocked_behind == [T(40), T(50)]
    assert [(e.waiter, e.lock, e.owner) for e in graph.path(T(50))] == [
        (T(50), L(5), T(40)), (T(40), L(1), T(91))]
    assert graph.chains == []
    assert graph.membership(T(50)) is cycle
    assert graph.membership(T(60)) is None
    assert_partition(graph)


def test_rwsem_two_readers_only_one_in_cycle():
    # rwsem l1 is read-held by 11 and 12; writer 13 waits on it; 11 waits on mutex l2 held by 13.
    rwsem = lock(1, owner(11, "inferred", "reader count", "read"), owner(12, "inferred", "reader count", "read"),
                 type="rwsem")
    snap = Snapshot(
        tasks=[task(11, L(2)), task(12, state="S"), task(13, L(1)), task(14, L(1))],
        locks=[rwsem, lock(2, owner(13))],
    )
    graph = WaitForGraph(snap)
    assert [(e.owner, e.confidence) for e in graph.edges_from(T(13))] == [
        (T(11), "inferred"), (T(12), "inferred")]
    [cycle] = graph.cycles
    assert cycle.tasks == [T(11), T(13)]
    assert cycle.locks == [L(2), L(1)]
    assert cycle.verdict == "probable"
    assert cycle.inferred == [Edge(T(13), L(1), T(11), "inferred", "reader count")]
    assert cycle.blocked_behind == [T(14)]  # waits on the rwsem held by 11 (in the cycle) and 12
    assert graph.chains == []
    assert graph.holds(T(12)) == [L(1)]
    assert_partition(graph)


def test_shortest_cycle_of_larger_component():
    # 1 waits on rwsem l1 held by 2 and 3; 2 waits on l2 held by 1; 3 waits on l3 held by 2.
    snap = Snapshot(
        tasks=[task(1, L(1)), task(2, L(2)), task(3, L(3))],
        locks=[lock(1, owner(3), owner(2), type="rwsem"), lock(2, owner(1)), lock(3, owner(2))],
    )
    graph = WaitForGraph(snap)
    [cycle] = graph.cycles
    assert cycle.tasks == [T(1), T(2)]
    assert cycle.locks == [L(1), L(2)]
    assert cycle.blocked_behind == [T(3)]


def test_self_loop_inside_larger_component_is_the_shortest_cycle():
    snap = Snapshot(
        tasks=[task(1, L(1)), task(2, L(2))],
        locks=[lock(1, owner(2), owner(1), type="rwsem"), lock(2, owner(1))],
    )
    graph = WaitForGraph(snap)
    [cycle] = graph.cycles
    assert cycle.tasks == [T(1)]
    assert cycle.blocked_behind == [T(2)]


def test_ring_of_ten_thousand_tasks():
    n = 10_000
    tasks = [task(i, L(i)) for i in range(1, n + 1)]
    locks = [lock(i, owner(i % n + 1)) for i in range(1, n + 1)]
    graph = WaitForGraph(Snapshot(tasks=tasks[::-1], locks=locks))
    [cycle] = graph.cycles
    assert cycle.tasks == [T(i) for i in range(1, n + 1)]


# -- roots ---------------------------------------------------------------------

def test_owner_not_in_snapshot_is_root():
    gone = 0xFFFF8880DEAD0000
    snap = Snapshot(tasks=[task(1, L(1)), task(2, L(1))], locks=[lock(1, owner(gone))])
    graph = WaitForGraph(snap)
    assert graph.cycles == []
    assert graph.chains == [
        Chain([T(1), gone], [L(1)], gone, "owner task 0xffff8880dead0000 not found (exited?)", [T(2)])]
    assert_partition(graph)
    # Every renderer names it one way, and the tasks it has by their quoted command and pid.
    assert graph.task_name(gone) == "task 0xffff8880dead0000 (not in the task list)"
    assert graph.task_name(T(1)) == graph.task(T(1)).name()
    from kdlgdb.render.text import render_waitfor
    assert "task 0xffff8880dead0000 (not in the task list)" in render_waitfor(snap, graph)


def test_lock_without_owner_has_no_root():
    sem = Lock(L(1), "semaphore")
    snap = Snapshot(tasks=[task(1, L(1))], locks=[sem])
    graph = WaitForGraph(snap)
    assert graph.chains == [
        Chain([T(1)], [L(1)], None, f"waits on semaphore {L(1):#x} with no known holder")]
    assert graph.edges_from(T(1)) == []


def test_undecoded_lock_ends_chain():
    snap = Snapshot(tasks=[task(1, L(1)), task(2, L(9))], locks=[lock(1, owner(2))])
    graph = WaitForGraph(snap)
    assert graph.chains == [
        Chain([T(1), T(2)], [L(1), L(9)], None, f"waits on {L(9):#x}, a lock that was not decoded")]
    assert_partition(graph)


def test_root_activity_descriptions():
    io = [Frame(1, "__schedule", 0x10), Frame(2, "io_schedule", 0x12), Frame(3, "folio_wait_bit", 0x1D2)]
    assert describe_activity(task(1, state="D", frames=io), []) == "is in I/O wait (io_schedule) in folio_wait_bit+0x1d2"
    assert describe_activity(task(1, state="R", cpu=1, on_cpu=True, frames=SLEEP), ["m [x]"]) == (
        "is running on CPU 1 (on_cpu) while holding m [x]")
    assert describe_activity(task(1, state="R", cpu=2), []) == "is runnable (R) on CPU 2 but not running"
    assert describe_activity(task(1, state="Z"), ["a", "b"]) == "has exited (Z) while holding a, b"
    frames = [Frame(1, "__switch_to_asm", 0), Frame(2, "schedule_preempt_disabled", 4),
              Frame(3, "worker.isra.0", 8, "kdl")]
    assert interesting_frame(frames).describe() == "worker.isra.0+0x8 [kdl]"
    assert interesting_frame([]) is None
    assert interesting_frame(SLEEP[:3]) is None
    assert describe_activity(task(1, state="D", frames=SLEEP[:3]), []) == "sleeps (D)"


def test_edges_and_holds():
    snap = Snapshot(tasks=[task(1, L(1)), task(2, state="S"), task(3, state="S")],
                    locks=[lock(1, owner(2), owner(3, "inferred", "lockdep")), lock(2, owner(2))])
    graph = WaitForGraph(snap)
    assert graph.edges_from(T(1)) == [Edge(T(1), L(1), T(2), "certain", "mutex.owner"),
                                      Edge(T(1), L(1), T(3), "inferred", "lockdep")]
    assert graph.edges_from(T(2)) == []
    assert graph.holds(T(2)) == [L(1), L(2)]
    assert graph.holds(T(1)) == []
    snap.tasks.append(task(4, L(1)))  # waits on l1 but is missing from its wait list
    snap.locks[0].waiters = [T(1)]
    assert WaitForGraph(snap).waiters(L(1)) == [T(1), T(4)]


def test_tarjan_and_shortest_cycle_helpers():
    succ = {1: [2], 2: [3], 3: [1, 4], 4: [5], 5: [4], 6: [6]}
    comps = sorted(sorted(c) for c in tarjan_scc(sorted(succ), lambda n: succ.get(n, [])))
    assert comps == [[1, 2, 3], [4, 5], [6]]
    figure8 = {1: [2, 3], 2: [1], 3: [4], 4: [1]}
    assert shortest_cycle([1, 2, 3, 4], figure8) == [1, 2]
    assert shortest_cycle([3, 4, 1, 2], figure8) == [1, 2]


def test_self_deadlock_through_an_interrupt_advice() -> None:
    """A handler spinning on a spinlock the code it interrupted holds: the advice names the handler's
    context, what the interrupted acquisition failed to mask, and the acquire that masks it."""
    from kdlgdb.model import CpuContext

    for context, fix, masked, also in (("softirq", "spin_lock_bh", "softirqs", " (or spin_lock_irqsave())"),
                                       ("hardirq", "spin_lock_irqsave", "interrupts", "")):
        ctx = CpuContext(0, context, 0xFFFFFFFF81000000, "native_queued_spin_lock_slowpath+0x1c", "GS base",
                         interrupt_acquire="f+0xc [kdl] took it with _raw_spin_lock()", fix=fix)
        spinner = task(1, waits_on=L(1), state="R", cpu_context=ctx, comm="kdl_irq")
        held = lock(1, owner(1, "inferred", "f+0xc [kdl] called _raw_spin_lock()"), type="spinlock", waiters=[1])
        (cycle,) = WaitForGraph(Snapshot(tasks=[spinner], locks=[held])).cycles
        assert cycle.interrupt == {"context": context, "fix": fix, "acquire": ctx.interrupt_acquire}
        assert cycle.advice == (f"a {context} handler on CPU 0 interrupted \"kdl_irq\" (pid 1) while it held l1 [mod] and "
                                f"spins on it: {ctx.interrupt_acquire} without disabling {masked}; take it there with "
                                f"{fix}(){also}")


# -- waits that are not two acquisitions: work items, frozen filesystems -----------------------

def test_flush_under_a_lock_the_work_takes_is_a_deadlock_with_flush_advice():
    """kdl_flush's shape: t1 holds l1 and flushes the work kworker t2 runs; t2 waits on l1."""
    work = Lock(L(2), "work", owners=[owner(2, evidence="worker->current_work")], waiters=[T(1)],
                label="work reset_fn [mod] on events")
    snap = Snapshot(tasks=[task(1, waits_on=L(2)), task(2, waits_on=L(1), comm="kworker/0:1")],
                    locks=[lock(1, owner(1)), work])
    (cycle,) = WaitForGraph(snap).cycles
    assert pids(WaitForGraph(snap), cycle.tasks) == [1, 2] and cycle.verdict == "deadlock"
    assert cycle.advice == ("\"t1\" (pid 1) waits for work reset_fn [mod] on events while holding l1 [mod], and "
                            "\"kworker/0:1\" (pid 2), running it, needs l1 [mod]: flush after releasing l1 [mod] "
                            "(or do not take l1 [mod] in the work)")


def test_a_lock_held_by_no_task_roots_its_chain_in_the_holder():
    """Writers of a frozen filesystem: the semaphore has no owner task, its holder is the freeze."""
    frozen = Lock(L(1), "percpu_rwsem", holder="the freeze of ext2 ram0 on /mnt (frozen)")
    snap = Snapshot(tasks=[task(1, waits_on=L(1)), task(2, waits_on=L(1))], locks=[frozen])
    graph = WaitForGraph(snap)
    (chain,) = graph.chains
    assert chain.root is None and not graph.cycles
    assert chain.root_reason == "waits on percpu_rwsem 0xffffffffc0200020, held by the freeze of ext2 ram0 on /mnt (frozen)"
    assert sorted(pids(graph, chain.tasks + chain.joined)) == [1, 2]
