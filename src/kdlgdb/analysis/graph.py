"""The wait-for graph of a :class:`~kdlgdb.model.Snapshot`: deadlocks and wait chains.

Nodes are tasks (keyed by ``struct task_struct *`` address) and locks (keyed by
the lock's own address). A task whose ``waits_on`` names a decoded lock has a
wait edge to it; each :class:`~kdlgdb.model.Owner` of that lock gives a hold
edge back to a task. Collapsing the two gives the task-level wait-for graph,
with one :class:`Edge` per (waiter, owner) pair.

A deadlock is a cycle in that graph. Cycles are found per strongly connected
component (Tarjan's algorithm, iterative), and for each component the shortest
cycle is reported: a depth-first search that calls every already-visited node a
cycle would report false deadlocks for diamonds and shared chains.
Every other blocked task is either blocked behind a cycle (its waits lead into
one) or belongs to exactly one :class:`Chain` that ends at a root: a task that
is not waiting on a lock, an owner that has gone, or a lock with no known owner.

Everything here is plain data; the graph keeps no debugger objects.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

from ..kernel.functions import interesting_frame, io_wait
from ..model import CERTAIN, Lock, Snapshot, Task

__all__ = [
    "Edge",
    "Cycle",
    "Chain",
    "WaitForGraph",
    "tarjan_scc",
    "shortest_cycle",
    "interesting_frame",
    "describe_activity",
    "describe_blocked_in",
    "format_duration",
]

# Lock types a task waits for by flushing, not by taking: a work item, a workqueue (kernel/workqueue.py).
FLUSHED_TYPES = {"work", "workqueue"}


@dataclass
class Edge:
    """``waiter`` waits on ``lock``, which ``owner`` holds (task and lock addresses)."""

    waiter: int
    lock: int
    owner: int
    confidence: str  # CERTAIN or INFERRED, from the Owner
    evidence: str


@dataclass
class Cycle:
    """The shortest cycle of one strongly connected component of the wait-for graph."""

    tasks: list[int]  # tasks[k] waits on locks[k], which is held by tasks[(k+1) % n]
    locks: list[int]
    edges: list[Edge]  # edges[k] = tasks[k] -(locks[k])-> tasks[k+1]
    verdict: str  # "deadlock" if every edge is certain, else "probable"
    inferred: list[Edge]  # the inferred edges (what makes it probable)
    blocked_behind: list[int]  # tasks not in the cycle whose wait chain leads into it
    advice: str  # one lock order that would have prevented it
    # A cycle of one task through an interrupt: an interrupt handler spins on a lock the code it interrupted
    # on the same CPU holds. {"context": "softirq"|"hardirq", "fix": "spin_lock_bh", "acquire": where taken}
    interrupt: Optional[dict[str, str]] = None


@dataclass
class Chain:
    """Blocked tasks that lead, following each lock's first owner, to one root.

    ``tasks`` is the longest such path (ending with the root when it is known, so
    ``len(locks) == len(tasks) - 1``; when ``root`` is None the last task waits on
    ``locks[-1]``, a lock with no known owner, and ``len(locks) == len(tasks)``).
    Other blocked tasks that end at the same root are in ``joined``.
    """

    tasks: list[int]  # the longest path: a blocked task ... -> root task
    locks: list[int]  # locks[k] is what tasks[k] waits on
    root: Optional[int]  # root task address; None when the last lock has no known owner
    root_reason: str  # what the root is doing, e.g. "is running on CPU 1 (on_cpu)"
    joined: list[int] = field(default_factory=list)  # other blocked tasks that join the path


def tarjan_scc(nodes: Iterable[int], successors: Callable[[int], Iterable[int]]) -> list[list[int]]:
    """Strongly connected components of a directed graph, by Tarjan's algorithm.

    Iterative (an explicit stack of successor iterators), so a chain of
    10,000 tasks does not hit Python's recursion limit. Components come out in
    reverse topological order; each lists its nodes in the order they were popped.
    """
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    work: list[tuple[int, Iterator[int]]] = []  # the "call stack": node, successors left
    components: list[list[int]] = []

    def visit(node: int) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(successors(node))))

    for start in nodes:
        if start in index:
            continue
        visit(start)
        while work:
            node, pending = work[-1]
            for nxt in pending:
                if nxt not in index:
                    visit(nxt)
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def shortest_cycle(component: list[int], successors: dict[int, list[int]]) -> list[int]:
    """The shortest cycle inside one strongly connected ``component``.

    ``component`` lists the nodes in the order they are tried as a start (ties
    go to the earlier); ``successors`` gives each node's successors in a stable
    order. Breadth-first search from each start, pruned at the best length
    found so far; a component that is a single ring is just walked.
    """
    members = set(component)
    inner = {n: [m for m in successors.get(n, []) if m in members] for n in component}
    if all(len(nexts) == 1 for nexts in inner.values()):  # the component is one ring
        ring = [component[0]]
        node = inner[component[0]][0]
        while node != component[0]:
            ring.append(node)
            node = inner[node][0]
        return ring
    best: list[int] = []
    for start in component:
        if len(best) == 1:
            break
        parent: dict[int, Optional[int]] = {start: None}
        depth = {start: 0}
        queue = deque([start])
        last: Optional[int] = None
        while queue and last is None:
            node = queue.popleft()
            if best and depth[node] + 1 >= len(best):
                break
            for nxt in inner[node]:
                if nxt == start:
                    last = node
                    break
                if nxt not in parent:
                    parent[nxt] = node
                    depth[nxt] = depth[node] + 1
                    queue.append(nxt)
        if last is not None:
            path: list[int] = []
            walk: Optional[int] = last
            while walk is not None:
                path.append(walk)
                walk = parent[walk]
            best = path[::-1]
    return best


def describe_activity(task: Task, held: list[str]) -> str:
    """What ``task`` is doing, for a chain's root: its state and innermost interesting frame.

    ``held`` names the locks it is believed to hold. Examples:
    ``"sleeps (D) in msleep+0x2d while holding mc [kdl_control]"``,
    ``"is running on CPU 1 (on_cpu)"``, ``"is in I/O wait (io_schedule) in folio_wait_bit+0x1d2"``.
    """
    frame = interesting_frame(task.frames)
    where = f" in {frame.describe()}" if frame is not None else ""
    blocked = describe_blocked_in(task)
    if blocked is not None:
        text = blocked
    elif task.on_cpu:
        text = f"is running on CPU {task.cpu} (on_cpu)"
    elif (io := io_wait(task.frames)) is not None:
        text = f"is in I/O wait ({io}){where}"
    elif task.state == "R":
        text = f"is runnable (R) on CPU {task.cpu} but not running{where}"
    elif task.state in ("Z", "X"):
        text = f"has exited ({task.state})"
    elif task.state in ("T", "t"):
        text = f"is stopped ({task.state}){where}"
    else:
        text = f"sleeps ({task.state}){where}"
    return f"{text} while holding {', '.join(held)}" if held else text


def describe_blocked_in(task: Task) -> Optional[str]:
    """What ``task`` waits for when that is not a lock (its ``blocked_in``), and for how long; None if unknown.

    ``"waits (D) for completion c_done [kdl_chain] in __wait_for_common+0x94 for 8.1s"``,
    ``"waits (D) on wait queue w_wq [kdl_chain] in kdl_w1_fn+0x64 [kdl_chain] for 8.1s"``,
    ``"is in I/O wait (io_schedule_timeout) in kdl_io1_fn+0x2d [kdl_chain] for 8.1s"``,
    ``"sleeps (D) in msleep+0x29 for 8.1s"``.
    """
    blocked = task.blocked_in
    if blocked is None or task.on_cpu:
        return None
    where = f" in {blocked.frame}" if blocked.frame else ""
    name = blocked.object_name()
    if blocked.kind == "completion":
        text = f"waits ({task.state}) for completion {name or '(not found)'}{where}"
    elif blocked.kind == "waitqueue":
        text = f"waits ({task.state}) on wait queue {name or '(not found)'}{where}"
    elif blocked.kind == "io":
        text = f"is in I/O wait ({blocked.function}){where}"
    else:  # sleep, unknown
        text = f"sleeps ({task.state}){where}"
    if task.last_ran_ns:
        text += f" for {format_duration(task.last_ran_ns)}"
    return text


def format_duration(ns: int) -> str:
    """``"350ms"`` or ``"12.3s"``."""
    return f"{ns // 1_000_000}ms" if ns < 1_000_000_000 else f"{ns / 1e9:.1f}s"


NOT_LISTED = "(not in the task list)"  # a task address the snapshot has no task for


class WaitForGraph:
    """Wait-for graph of one snapshot, with its cycles and chains computed on construction.

    All state lives in the instance; nodes are plain integers. ``blocked`` lists
    every task with a ``waits_on`` (sorted by pid, then address); each of them is
    in exactly one place: a cycle's ``tasks`` or ``blocked_behind``, or a chain's
    ``tasks`` or ``joined``.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._tasks: dict[int, Task] = {t.address: t for t in snapshot.tasks}
        self._locks: dict[int, Lock] = {lk.address: lk for lk in snapshot.locks}
        self._edges: dict[int, list[Edge]] = {}  # waiter -> one edge per owner
        self._best: dict[int, dict[int, Edge]] = {}  # waiter -> owner -> edge (certain preferred)
        self._waiters_by_owner: dict[int, list[Edge]] = {}
        self._waiting: dict[int, list[int]] = {}  # lock -> tasks whose waits_on names it
        self._holds: dict[int, list[int]] = {}
        self._via: dict[int, Optional[Edge]] = {}  # next hop of a non-cycle blocked task
        for lock in sorted(snapshot.locks, key=lambda lk: lk.address):
            for owner in lock.current_owners():  # a STALE owner holds nothing: no edge, no cycle, no self-deadlock
                held = self._holds.setdefault(owner.task, [])
                if lock.address not in held:
                    held.append(lock.address)
        self.blocked = [t.address for t in sorted(snapshot.tasks, key=_task_key) if t.waits_on is not None]
        for waiter in self.blocked:
            wanted = self._tasks[waiter].waits_on
            assert wanted is not None
            self._waiting.setdefault(wanted, []).append(waiter)
            lock = self._locks.get(wanted)
            if lock is None:
                continue
            edges = [Edge(waiter, lock.address, o.task, o.confidence, o.evidence) for o in lock.current_owners()]
            self._edges[waiter] = edges
            best = self._best.setdefault(waiter, {})
            for edge in edges:
                known = best.get(edge.owner)
                if known is None or (known.confidence != CERTAIN and edge.confidence == CERTAIN):
                    best[edge.owner] = edge
            for edge in best.values():
                self._waiters_by_owner.setdefault(edge.owner, []).append(edge)
        self.cycles: list[Cycle] = self._find_cycles()
        self.chains: list[Chain] = self._find_chains()
        self._member: dict[int, Cycle | Chain] = {}
        for cycle in self.cycles:
            for task in cycle.tasks + cycle.blocked_behind:
                self._member[task] = cycle
        for chain in self.chains:
            for task in chain.tasks + chain.joined:
                self._member.setdefault(task, chain)

    # -- queries -----------------------------------------------------------

    def task(self, address: int) -> Optional[Task]:
        """The task at ``address`` (``struct task_struct *``), or None if not in the snapshot."""
        return self._tasks.get(address)

    def lock(self, address: int) -> Optional[Lock]:
        """The decoded lock at ``address``, or None."""
        return self._locks.get(address)

    def edges_from(self, task: int) -> list[Edge]:
        """Edges from ``task`` to each owner of the lock it waits on, in the lock's owner order."""
        return list(self._edges.get(task, []))

    def holds(self, task: int) -> list[int]:
        """Addresses of the locks ``task`` is believed to hold (from the locks' owners), sorted."""
        return list(self._holds.get(task, []))

    def waiters(self, lock: int) -> list[int]:
        """Tasks waiting on ``lock``: its wait list in order, then tasks whose ``waits_on`` names it."""
        known = self._locks.get(lock)
        result = list(known.waiters) if known else []
        seen = set(result)
        result += [t for t in self._waiting.get(lock, []) if t not in seen]
        return result

    def path(self, task: int) -> list[Edge]:
        """The edges from a blocked ``task`` to the cycle it is behind or to its chain's root.

        Empty for tasks in a cycle and tasks that are not blocked.
        """
        edges: list[Edge] = []
        seen = {task}
        edge = self._via.get(task)
        while edge is not None:
            edges.append(edge)
            if edge.owner in seen:
                break
            seen.add(edge.owner)
            edge = self._via.get(edge.owner)
        return edges

    def membership(self, task: int) -> Cycle | Chain | None:
        """The cycle (as member or blocked behind) or chain (path, joined or root) ``task`` is in."""
        return self._member.get(task)

    # -- construction ------------------------------------------------------

    def _key(self, address: int) -> tuple[int, int]:
        task = self._tasks.get(address)
        return (task.pid if task else 1 << 62, address)

    def _label(self, address: int) -> str:
        return self.task_name(address)

    def task_name(self, address: int) -> str:
        """The task at ``address`` as every sentence names it: ``"kdl_a" (pid 94)``
        (:func:`~kdlgdb.model.task_name`); for an address the snapshot has no task for (an owner field that
        names a task_struct not on the task list), ``task 0x... (not in the task list)``."""
        task = self._tasks.get(address)
        return task.name() if task else f"task {address:#x} {NOT_LISTED}"

    def _one_module(self, addresses: list[int]) -> tuple[list[str], str]:
        """The locks' names, and `` [module]`` once when every one is a symbol of that same module (else '')."""
        locks = [self._locks.get(a) for a in addresses]
        modules = {lk.module if lk is not None and lk.label is None and lk.symbol is not None else None for lk in locks}
        if len(modules) != 1 or None in modules:
            return [self._lock_name(a) for a in addresses], ""
        return [lk.symbol for lk in locks], f" [{modules.pop()}]"  # type: ignore[union-attr]

    def _lock_name(self, address: int) -> str:
        lock = self._locks.get(address)
        return lock.name() if lock else f"{address:#x}"

    def _find_cycles(self) -> list[Cycle]:
        successors = {
            waiter: sorted(best, key=self._key) for waiter, best in sorted(self._best.items())
        }
        cycles = []
        for component in tarjan_scc(successors, lambda n: successors.get(n, [])):
            if len(component) == 1 and component[0] not in successors.get(component[0], []):
                continue
            ring = shortest_cycle(sorted(component, key=self._key), successors)
            first = ring.index(min(ring, key=self._key))
            cycles.append(self._make_cycle(ring[first:] + ring[:first]))
        cycles.sort(key=lambda c: self._key(c.tasks[0]))
        self._blocked_behind(cycles)
        return cycles

    def _make_cycle(self, tasks: list[int]) -> Cycle:
        edges = [self._best[t][tasks[(k + 1) % len(tasks)]] for k, t in enumerate(tasks)]
        inferred = [e for e in edges if e.confidence != CERTAIN]
        locks = [e.lock for e in edges]
        verdict = "probable" if inferred else "deadlock"
        ctx = self._tasks[tasks[0]].cpu_context
        if len(tasks) == 1 and ctx is not None and ctx.fix and ctx.interrupt_acquire:
            interrupt = {"context": ctx.context, "fix": ctx.fix, "acquire": ctx.interrupt_acquire}
            return Cycle(tasks, locks, edges, verdict, inferred, [], self._interrupt_advice(tasks[0], locks[0]), interrupt)
        return Cycle(tasks, locks, edges, verdict, inferred, [], self._advice(tasks, locks))

    def _interrupt_advice(self, task: int, lock: int) -> str:
        """Which acquisition must keep the interrupt away, for a self-deadlock through an interrupt."""
        ctx = self._tasks[task].cpu_context
        assert ctx is not None and ctx.fix is not None
        masked = "softirqs" if ctx.context == "softirq" else "interrupts"
        also = " (or spin_lock_irqsave())" if ctx.fix != "spin_lock_irqsave" else ""  # irqsave masks softirqs too
        return (
            f"a {ctx.context} handler on CPU {ctx.cpu} interrupted {self._label(task)} while it held "
            f"{self._lock_name(lock)} and spins on it: {ctx.interrupt_acquire} without disabling {masked}; "
            f"take it there with {ctx.fix}(){also}"
        )

    def _advice(self, tasks: list[int], locks: list[int]) -> str:
        """One lock order that breaks the cycle. Task k holds locks[k-1] and wants locks[k]."""
        if len(tasks) == 1:
            return f"{self._label(tasks[0])} takes {self._lock_name(locks[0])} again while holding it"
        n = len(locks)
        flushed = [k for k in range(n) if self._locks.get(locks[k]) is not None
                   and self._locks[locks[k]].type in FLUSHED_TYPES]
        if flushed:  # not an order of two acquisitions: a flush under a lock that the work itself takes
            k = flushed[0]
            held, work = self._lock_name(locks[k - 1]), self._lock_name(locks[k])
            return (
                f"{self._label(tasks[k])} waits for {work} while holding {held}, and "
                f"{self._label(tasks[(k + 1) % n])}, running it, needs {held}: flush after releasing {held} "
                f"(or do not take {held} in the work)"
            )
        first = min(range(n), key=lambda k: (self._lock_name(locks[k]), locks[k]))
        names, module = self._one_module([locks[(first + i) % n] for i in range(n)])
        # Said once, the module once: the order to keep, and the task that breaks it.
        return (f"take {' before '.join(names)}{module}: {self._label(tasks[first])} holds {names[-1]} "
                f"and then takes {names[0]}")

    def _blocked_behind(self, cycles: list[Cycle]) -> None:
        """Claim every task whose waits lead into a cycle for the nearest cycle (multi-source BFS)."""
        claim: dict[int, Cycle] = {}
        queue: deque[int] = deque()
        for cycle in cycles:
            for task in cycle.tasks:
                claim[task] = cycle
                queue.append(task)
        while queue:
            owner = queue.popleft()
            for edge in sorted(self._waiters_by_owner.get(owner, []), key=lambda e: self._key(e.waiter)):
                if edge.waiter not in claim:
                    claim[edge.waiter] = claim[owner]
                    self._via[edge.waiter] = edge
                    claim[owner].blocked_behind.append(edge.waiter)
                    queue.append(edge.waiter)
        for cycle in cycles:
            cycle.blocked_behind.sort(key=self._key)

    def _first_hop(self, task: int) -> tuple[int, Optional[int]]:
        """(lock ``task`` waits on, that lock's first owner or None); records the edge taken."""
        lock = self._tasks[task].waits_on
        assert lock is not None
        edges = self._edges.get(task)
        self._via[task] = edges[0] if edges else None
        return lock, (edges[0].owner if edges else None)

    def _find_chains(self) -> list[Chain]:
        claimed = {t for cycle in self.cycles for t in cycle.tasks + cycle.blocked_behind}
        terminal: dict[int, tuple[str, int]] = {}  # task -> ("task", root) or ("lock", last lock)
        depth: dict[int, int] = {}
        for start in self.blocked:
            if start in claimed or start in terminal:
                continue
            walk: list[int] = []
            on_walk: set[int] = set()
            node = start
            while node not in terminal:
                walk.append(node)
                on_walk.add(node)
                lock, owner = self._first_hop(node)
                if owner is None:
                    end, base = ("lock", lock), 0
                    break
                owner_task = self._tasks.get(owner)
                if owner_task is None or owner_task.waits_on is None or owner in on_walk:
                    end, base = ("task", owner), 1
                    break
                node = owner
            else:
                end, base = terminal[node], depth[node]
            for node in reversed(walk):
                base += 1
                terminal[node], depth[node] = end, base
        groups: dict[tuple[str, int], list[int]] = {}
        for task in self.blocked:
            if task in terminal:
                groups.setdefault(terminal[task], []).append(task)
        ordered = sorted(groups.items(), key=lambda item: self._key(item[1][0]))  # members are sorted
        return [self._make_chain(end, members, depth) for end, members in ordered]

    def _make_chain(self, end: tuple[str, int], members: list[int], depth: dict[int, int]) -> Chain:
        start = min(members, key=lambda t: (-depth[t], self._key(t)))
        tasks, locks = [start], []
        on_path = {start}
        edge = self._via[start]
        while edge is not None and edge.owner not in on_path:
            locks.append(edge.lock)
            tasks.append(edge.owner)
            on_path.add(edge.owner)
            edge = self._via.get(edge.owner)
        root: Optional[int] = end[1] if end[0] == "task" else None
        if root is None:
            locks.append(end[1])
            reason = self._no_owner_reason(end[1])
        else:
            reason = self._root_reason(root)
        joined = sorted((t for t in members if t not in on_path), key=self._key)
        return Chain(tasks, locks, root, reason, joined)

    def holder_note(self, lock: int) -> str:
        """What is known of the holder of a lock that has none: ``"held by the freeze of ..."`` when it
        is held by something that is not a task, ``"owner exited"`` when its recorded owner cannot be
        true (a STALE owner: it exited, or its task_struct slot now belongs to another task), else
        ``"no known holder"``."""
        known = self._locks.get(lock)
        if known is not None and known.holder:  # a holder that is no task (a freeze): its short name
            return "held by " + known.holder.split(" (", 1)[0]
        return "owner exited" if known is not None and known.owner_exited() else "no known holder"

    def _no_owner_reason(self, lock: int) -> str:
        known = self._locks.get(lock)
        if known is None:
            return f"waits on {lock:#x}, a lock that was not decoded"
        if known.holder:
            return f"waits on {known.name()}, held by {known.holder}"
        if known.owner_exited():
            why = "; ".join(o.evidence for o in known.owners)
            return f"waits on {known.name()}, whose recorded owner is gone ({why})"
        return f"waits on {known.name()} with no known holder"

    def _root_reason(self, root: int) -> str:
        task = self._tasks.get(root)
        if task is None:
            return f"owner task {root:#x} not found (exited?)"
        return describe_activity(task, [self._lock_name(lk) for lk in self.holds(root)])


def _task_key(task: Task) -> tuple[int, int]:
    return (task.pid, task.address)
