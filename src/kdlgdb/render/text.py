"""Text output for people: crash-like task and backtrace tables, locks, and the wait-for report.

Output depends only on the data (never on the terminal width) and is colourless
unless ``color=True``; :mod:`kdlgdb.render.color` decides what colour means.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from tabulate import tabulate

from ..analysis.kernlog import LockdepFindings, LockdepReport
from ..analysis.graph import NOT_LISTED, Chain, Cycle, Edge, WaitForGraph, format_duration, interesting_frame
from ..model import CERTAIN, Frame, Lock, Snapshot, Task, symbol_name
from .color import paint
from .words import and_list as _and, first_names, group_tasks, no_cycle, plural as _plural, task_label, undecoded as _undecoded_tasks

__all__ = ["render_tasks", "render_bt", "render_held", "lockdep_lines", "render_locks", "render_waitfor", "format_last_ran"]


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], align: Sequence[str]) -> list[str]:
    """A plain table, one string per line, trailing blanks stripped; the header alone when there are no rows
    (Debian 12's tabulate 0.8.9 fails on an empty table with colalign)."""
    if not rows:
        return _table([[""] * len(headers)], headers, align)[:1]
    text = tabulate(
        rows, headers=list(headers), tablefmt="plain", disable_numparse=True, colalign=list(align)
    )
    return [line.rstrip() for line in text.splitlines()]


def format_last_ran(ns: Optional[int]) -> str:
    """Time since a task last ran: ``"350ms"``, ``"12.3s"``, or ``"-"`` when unknown."""
    return "-" if ns is None else format_duration(ns)


def render_tasks(snapshot: Snapshot, tasks: list[Task]) -> str:
    """A ``ps``-like table of ``tasks`` in the given order; ``>`` marks a task that is on a CPU."""
    rows = [
        (">" if t.on_cpu else "", t.pid, t.tgid, f"{t.address:x}", t.state, t.cpu, format_last_ran(t.last_ran_ns), t.comm)
        for t in tasks
    ]
    # TASK: the task_struct's address, what a crash user works from (crash's ps prints it the same way).
    headers = ("", "PID", "TGID", "TASK", "ST", "CPU", "LAST-RAN", "COMM")
    return "\n".join(_table(rows, headers, ("left", "right", "right", "left", "left", "right", "right", "left")))


def render_bt(snapshot: Snapshot, task: Task, frames: Optional[list[Frame]] = None, method: Optional[str] = None,
              variables: Optional[Callable[[int, Frame], list[str]]] = None) -> str:
    """A crash-like backtrace: a header line, then ``#n [stack slot] symbol+offset [module]  file:line``.

    An interrupt or exception boundary (a frame whose pc is the interrupted ip of a ``pt_regs``) gets a
    line of its own above that frame; a frame found by the frame-pointer guess is marked ``?``, as the kernel marks
    an address it cannot vouch for; an unwind that stopped early ends with a marked line saying why.
    ``frames``/``method`` replace the task's own (``kd-bt -s``: the scan); ``variables(n, frame)``: lines
    that name frame n's variables (``kd-bt -f``)."""
    lines = [
        f"PID: {task.pid}  TASK: {task.address:#x}  CPU: {task.cpu}  "
        f'COMMAND: "{task.comm}"  STATE: {task.state}'
    ]
    method = method if frames is not None else task.unwinder
    frames = frames if frames is not None else task.frames
    if method and method != "orc":
        lines.append(f"    ({_UNWINDERS.get(method, method)})")
    for number, frame in enumerate(frames):
        if frame.regs:
            lines.append(f"    --- interrupt or exception: pt_regs at {frame.sp - 128:#x} ---")
        line = f"{'#' + str(number):>3} [{frame.sp:x}] {'? ' if frame.guessed else ''}{frame.describe()}"
        lines.append(f"{line:<56} {frame.source}" if frame.source else line)
        if variables is not None:
            lines.extend(f"        {text}" for text in variables(number, frame))
    if frames is task.frames and task.unwind_error:
        lines.append(f"{'#' + str(len(frames)):>3} (unwind stopped: {task.unwind_error})")
    if not frames:
        lines.append("    (no stack frames)")
    return "\n".join(lines)


def render_stack_groups(snapshot: Snapshot, tasks: list[Task]) -> str:
    """The stacks of ``tasks`` grouped by identical call chain (the functions, not their offsets), the biggest
    group first: a count, the tasks, then the shared frames."""
    groups = group_tasks(tasks, lambda task: tuple(symbol_name(f.symbol, f.module) if f.symbol else f"{f.pc:#x}"
                                                   for f in task.frames))
    if not groups:
        return "no task in those states"
    lines = [f"{_plural(len(tasks), 'task')} in {_plural(len(groups), 'distinct stack')}"]
    for key, members in groups:
        names = ", ".join(first_names([t.name() for t in members], 8))
        states = "".join(sorted({t.state for t in members}))
        lines += ["", f"{_plural(len(members), 'task')} [{states}]: {names}"]
        lines += [f"  {'#' + str(n):>3} {name}" for n, name in enumerate(key)] or ["    (no stack frames)"]
    return "\n".join(lines)


def render_graph_stacks(snapshot: Snapshot, graph: WaitForGraph, pid: Optional[int] = None) -> str:
    """``kd-bt`` of each task in a cycle or chain of ``graph`` (only those of ``pid``'s when given), in the
    order the graph lists them."""
    groups = [c.tasks + c.blocked_behind for c in graph.cycles] + [c.tasks + c.joined for c in graph.chains]
    by_pid = {t.pid: t.address for t in snapshot.tasks}
    if pid is not None:
        groups = [g for g in groups if by_pid.get(pid) in g]
    seen: list[int] = []
    for group in groups:
        seen += [a for a in group if a not in seen]
    tasks = [t for t in (graph.task(a) for a in seen) if t is not None]
    if not tasks:
        return "stacks: no task in a cycle or chain"
    return "\n\n".join(render_bt(snapshot, t) for t in tasks)


_UNWINDERS = {
    "scan": "stack scan, not an unwind: every return address on the stack, stale ones included",
    "frame pointer": "unwound by frame pointers",
}


def render_held(snapshot: Snapshot, tasks: list[Task]) -> str:
    """lockdep's held_locks of ``tasks``, as lockdep's own "Showing all locks held in the system" prints them
    (``#n: <lockdep_map address> (<class>), at: <where taken>``), each entry with its mode, and the lock it is
    in when that lock is one the snapshot knows; the entry of the lock a task sleeps on says so."""
    if snapshot.lockdep_on is None:
        return "this kernel has no lockdep (CONFIG_LOCKDEP): no held_locks to show"
    locks = {lock.address: lock for lock in snapshot.locks}
    lines = ["Showing all locks held in the system (lockdep held_locks):"]
    if not snapshot.lockdep_on:
        lines.append("note: lockdep turned itself off (debug_locks = 0) after its first report: it recorded no "
                     "acquisition or release since, so a lock released after that is still listed")
    holders = [t for t in tasks if t.held]
    for task in holders:
        held = task.held or []
        awaited = task.awaited_entry()
        lines.append(f"{_plural(len(held), 'lock')} held by {task.comm}/{task.pid}:")
        for number, entry in enumerate(held):
            line = f" #{number}: {entry.instance:016x} ({entry.name}), at: {entry.acquired_at or hex(entry.acquire_ip)}"
            notes = [] if entry.read == 0 else [entry.mode()]
            lock = locks.get(entry.lock) if entry.lock is not None else None
            if lock is not None:
                notes.append(f"{lock.type} {lock.address:#x} {lock.name()}")
                if entry is awaited:
                    notes.append("waiting for it (lockdep records the acquisition before the wait)")
            lines.append(line + (f"  [{'; '.join(notes)}]" if notes else ""))
    if not holders:
        lines.append("no task holds a lock lockdep tracks" if len(tasks) == len(snapshot.tasks) else "no locks held")
    return "\n".join(lines)


class _Names:
    """Labels for tasks and locks of one graph, coloured or not."""

    def __init__(self, graph: WaitForGraph, color: bool) -> None:
        self.graph = graph
        self.color = color

    def task(self, address: int) -> str:
        return task_label(self.graph, address)

    def lock(self, address: int) -> str:
        lock = self.graph.lock(address)
        return paint(lock.name() if lock else f"{address:#x}", "lock", self.color)

    def hop(self, edge: Edge) -> str:
        """``--waits on--> LOCK --held by--> OWNER`` with an inferred marker."""
        text = f" --waits on--> {self.lock(edge.lock)} --held by--> {self.task(edge.owner)}"
        if edge.confidence != CERTAIN:
            text += " " + paint(f"[{edge.confidence}: {edge.evidence}]", "inferred", self.color)
        return text

    def path(self, start: int, edges: list[Edge]) -> str:
        return self.task(start) + "".join(self.hop(e) for e in edges)


def _lock_lines(lock: Lock, graph: WaitForGraph, names: _Names) -> list[str]:
    head = f"{lock.type} {lock.address:#x}"
    if lock.symbol is not None or lock.naming is not None:
        head += "  " + names.lock(lock.address)
    lines = [head]
    if lock.owners:
        lines.append("  owners:")
        rows = []
        for owner in lock.owners:
            task = graph.task(owner.task)
            pid, comm = (str(task.pid), task.comm) if task else (f"{owner.task:#x}", NOT_LISTED)
            rows.append((pid, comm, owner.confidence, owner.mode, owner.evidence))
        table = _table(rows, ("PID", "COMM", "CONFIDENCE", "MODE", "EVIDENCE"), ("right",) + ("left",) * 4)
        lines += ["    " + line for line in table]
    else:
        lines.append("  owners: none known")
    waiters = graph.waiters(lock.address)
    if waiters:
        lines.append("  waiters:")
        rows = []
        for address in waiters:
            task = graph.task(address)
            rows.append((str(task.pid), task.comm) if task else (f"{address:#x}", NOT_LISTED))
        lines += ["    " + line for line in _table(rows, ("PID", "COMM"), ("right", "left"))]
    else:
        lines.append("  waiters: none")
    if lock.details:
        lines.append("  details: " + ", ".join(f"{k}={_detail(v)}" for k, v in lock.details.items()))
    return lines


def _detail(value: Any) -> str:
    """Small integers in decimal (counts), large ones in hex (addresses, flag words)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 4096:
        return f"{value:#x}"
    return str(value)


def render_locks(snapshot: Snapshot, graph: WaitForGraph, color: bool = False) -> str:
    """Every lock, by address: type, address, name, owners with evidence, waiters in order, details."""
    names = _Names(graph, color)
    ordered = sorted(snapshot.locks, key=lambda lk: lk.address)
    blocks = ["\n".join(_lock_lines(lk, graph, names)) for lk in ordered]
    return "\n\n".join(blocks) if blocks else "no locks with waiters were found"


def _cycle_lines(cycle: Cycle, graph: WaitForGraph, names: _Names) -> list[str]:
    lock_names = sorted({names.lock(lk) for lk in cycle.locks})
    who = _and([names.task(t) for t in cycle.tasks])
    head = f"{who} on {', '.join(lock_names)}"
    if cycle.interrupt is not None:
        head += f" (self-deadlock through an interrupt: a {cycle.interrupt['context']} handler)"
    elif len(cycle.tasks) == 1:
        head += " (self-deadlock)"
    if cycle.verdict == "deadlock":
        head = paint("DEADLOCK:", "deadlock", names.color) + " " + head
    else:
        why = "; ".join(f"{names.task(e.owner)} holds {names.lock(e.lock)}" for e in cycle.inferred)
        head = paint("PROBABLE DEADLOCK:", "probable", names.color) + f" {head} (inferred: {why})"
    lines = [head]
    lines += ["  " + names.path(e.waiter, [e]) for e in cycle.edges]
    for task, wanted, edge in zip(cycle.tasks, cycle.locks, cycle.edges):
        held = ", ".join(names.lock(lk) for lk in graph.holds(task)) or "nothing known"
        spinning = _spin_line(graph, names, task, wanted, edge.owner, held)
        lines.append(spinning or f"  {names.task(task)}: holds {held}; wants {names.lock(wanted)}")
    if cycle.blocked_behind:
        lines.append(f"  blocked behind it: {_plural(len(cycle.blocked_behind), 'task')}")
        lines += ["    " + names.path(t, graph.path(t)) for t in cycle.blocked_behind]
    lines.append(f"  advice: {cycle.advice}")
    return lines


def _spin_line(graph: WaitForGraph, names: _Names, task: int, wanted: int, owner: int, held: str) -> Optional[str]:
    """``CPU 0: kdl_spin_a (93) spins on lock_b (held by kdl_spin_b (94), the task on CPU 1) while holding
    lock_a`` for a task whose CPU spins on a spinlock; None for other tasks."""
    t, lock = graph.task(task), graph.lock(wanted)
    if t is None or t.cpu_context is None or lock is None or lock.type not in ("spinlock", "raw_spinlock"):
        return None
    ctx = t.cpu_context
    holder = graph.task(owner)
    if owner == task:
        by = "held by the code it interrupted" if ctx.context != "task" else "held by itself"
    elif holder is not None and holder.cpu_context is not None:
        by = f"held by {names.task(owner)}, the task on CPU {holder.cpu_context.cpu}"
    else:
        by = f"held by {names.task(owner)}"
    where = f" in a {ctx.context} handler" if ctx.context in ("softirq", "hardirq") else ""
    return f"  CPU {ctx.cpu}: {names.task(task)}{where} spins on {names.lock(wanted)} ({by}) while holding {held}"


def _chain_lines(chain: Chain, graph: WaitForGraph, names: _Names) -> list[str]:
    blocked = len(chain.tasks) - (chain.root is not None) + len(chain.joined)
    end = graph.lock(chain.locks[-1]) if chain.root is None else None
    holder = end.holder if end is not None else None
    if chain.root is None:
        note = graph.holder_note(chain.locks[-1])
        if holder:
            target = f"{names.lock(chain.locks[-1])}, held by {holder}"
        elif note == "owner exited":
            target = f"{names.lock(chain.locks[-1])}, whose owner exited"
        else:
            target = f"{names.lock(chain.locks[-1])}, which has no known holder"
        head = f"{_plural(blocked, 'task')} blocked on {target}"
    else:
        head = f"{_plural(blocked, 'task')} blocked behind {names.task(chain.root)}"
    lines = [paint("CHAIN:", "heading", names.color) + " " + head]
    lines += ["  " + names.path(e.waiter, [e]) for e in graph.path(chain.tasks[0])]
    if chain.root is None:
        last = f"{names.task(chain.tasks[-1])} --waits on--> {names.lock(chain.locks[-1])}"
        lines.append(f"  {last} ({graph.holder_note(chain.locks[-1])})")
    marker = paint("root:", "root", names.color)
    if chain.root is None and holder:
        lines.append(f"  {marker} {holder}")
    elif chain.root is None:
        known = "owner exited" if graph.holder_note(chain.locks[-1]) == "owner exited" else "none known"
        lines.append(f"  {marker} {known}: {names.task(chain.tasks[-1])} {chain.root_reason}")
    elif graph.task(chain.root) is None:
        lines.append(f"  {marker} {chain.root_reason}")
    else:
        lines.append(f"  {marker} {names.task(chain.root)} {chain.root_reason}")
    if chain.joined:
        on_path = set(chain.tasks)
        lines.append("  also blocked:")
        for task in chain.joined:
            edges = []
            for edge in graph.path(task):
                edges.append(edge)
                if edge.owner in on_path:
                    break
            line = names.path(task, edges)
            if not edges or edges[-1].owner not in on_path:  # ends at the lock with no holder
                last = graph.task(edges[-1].owner if edges else task)
                if last is not None and last.waits_on is not None:
                    line += f" --waits on--> {names.lock(last.waits_on)} ({graph.holder_note(last.waits_on)})"
            lines.append("    " + line)
    return lines


def _summary(graph: WaitForGraph, undecoded: int) -> str:
    chains = len(graph.chains)
    if not graph.cycles:
        blocked = sum(len(c.tasks) - (c.root is not None) + len(c.joined) for c in graph.chains)
        return f"{no_cycle(undecoded)}; {_plural(blocked, 'blocked task')} in {_plural(chains, 'chain')}"
    count = len(graph.cycles)
    probable = sum(c.verdict == "probable" for c in graph.cycles)
    if probable == count:
        kind = _plural(count, "probable deadlock")
    elif probable:
        kind = f"{_plural(count, 'deadlock')} ({probable} probable)"
    else:
        kind = _plural(count, "deadlock")
    in_cycles = sum(len(c.tasks) for c in graph.cycles)
    behind = sum(len(c.blocked_behind) for c in graph.cycles)
    it = "it" if count == 1 else "them"
    return (f"{_plural(in_cycles, 'task')} in {kind}, {behind} blocked behind {it}; "
            f"{chains} other chain{'' if chains == 1 else 's'}")


def _undecoded(snapshot: Snapshot, graph: WaitForGraph) -> list[list[Task]]:
    """D tasks in no cycle or chain (their wait was not decoded), grouped by the function they sleep in."""
    groups: dict[str, list[Task]] = {}
    for task in _undecoded_tasks(snapshot, graph):
        frame = interesting_frame(task.frames)
        where = "?" if frame is None or frame.symbol is None else frame.symbol + (f" [{frame.module}]" if frame.module else "")
        groups.setdefault(where, []).append(task)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0].pid))


def _undecoded_lines(groups: list[list[Task]], color: bool) -> list[str]:
    lines = [paint("NOT DECODED:", "heading", color) + " blocked (D) tasks whose wait kdlgdb cannot follow"]
    for group in groups:
        frame = interesting_frame(group[0].frames)
        where = "an unknown function" if frame is None or frame.symbol is None else frame.symbol + (f" [{frame.module}]" if frame.module else "")
        shown = ", ".join(first_names([t.name() for t in group], 8))
        lines.append(f"  {_plural(len(group), 'task')} in D in {where}: wait not decoded: {shown}")
    return lines


def lockdep_lines(report: LockdepReport, tail: str = "") -> list[str]:
    """A lockdep report in two or more lines: its summary, then its "Possible unsafe locking scenario"."""
    lines = [report.summary() + tail]
    if report.scenario:
        lines.append("    its scenario: " + " / ".join(" ".join(line.split()) for line in report.scenario
                                                    if "lock(" in line or "<Interrupt>" in line))
    return lines


def render_waitfor(
    snapshot: Snapshot, graph: WaitForGraph, color: bool = False, pid: Optional[int] = None,
    lockdep: Optional[LockdepFindings] = None,
) -> str:
    """The wait-for report: deadlock cycles, then other chains with their roots, a summary
    line and a footer with the problems met while reading the dump.

    With ``pid``, only the cycle or chain that task is in (as member, blocked behind it, or root).
    With ``lockdep`` (its reports in the kernel log), each report under the cycle it explains, the others
    in a block of their own, and whether lockdep turned itself off.
    """
    names = _Names(graph, color)
    items: list[Union[Cycle, Chain]] = [*graph.cycles, *graph.chains]
    blocks: list[list[str]] = []
    if pid is not None:
        matches = [t.address for t in snapshot.tasks if t.pid == pid]
        wanted = [graph.membership(a) for a in matches]
        items = [item for item in items if any(item is w for w in wanted)]
        if not matches:
            blocks.append([f"no task with pid {pid}"])
        elif not items:
            blocks.append([f"pid {pid} is not in any deadlock or wait chain"])
    elif not items:
        d_state = sum(t.state == "D" for t in snapshot.tasks)  # none of them in the graph: all undecoded
        line = "no blocked tasks: no task waits on a known lock"
        if d_state:
            line = paint(no_cycle(d_state), "heading", color) + ": no task waits on a known lock"
        blocks.append([line])
    for item in items:
        if isinstance(item, Cycle):
            blocks.append(_cycle_lines(item, graph, names))
            index = next(i for i, c in enumerate(graph.cycles) if c is item)
            for report in lockdep.for_cycle(index) if lockdep is not None else ():
                blocks[-1].extend("  " + line for line in lockdep_lines(report, ": this is the deadlock above"))
        else:
            blocks.append(_chain_lines(item, graph, names))
    undecoded = _undecoded(snapshot, graph) if pid is None else []
    if undecoded:
        blocks.append(_undecoded_lines(undecoded, color))
    if lockdep is not None and pid is None and (lockdep.alone() or lockdep.turned_off):
        block = ["lockdep's own reports, not tied to a deadlock above:"] if lockdep.alone() else []
        for report in lockdep.alone():
            block.extend("  " + line for line in lockdep_lines(report))
        if lockdep.turned_off:
            block.append("lockdep turned itself off after its first report (\"INFO: lockdep is turned off\"): "
                         "lock-order inversions after it were not checked")
        blocks.append(block)
    missing = sum(len(group) for group in undecoded)
    summary = [paint(_summary(graph, missing), "heading", color)] if pid is None and items else []
    d_state = sum(t.state == "D" for t in snapshot.tasks) if pid is None else 0
    if d_state:
        summary.append(f"D tasks: {d_state}, {d_state - missing} in the graph above, {missing} not decoded")
    if summary:
        blocks.append(summary)
    if snapshot.problems:
        blocks.append([paint(f"skipped: {p}", "problem", color) for p in snapshot.problems])
    return "\n\n".join("\n".join(block) for block in blocks)
