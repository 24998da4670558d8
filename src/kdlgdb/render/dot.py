"""The wait-for graph as Graphviz DOT, and DOT turned into SVG by Graphviz's ``dot``.

The picture is bipartite: a task (box) has a *waits on* edge to the lock
(ellipse) it sleeps on, and a lock has a *held by* edge to each task believed
to hold it (dashed when that is inferred, not recorded by the kernel). So a
deadlock reads task → lock → task → lock → back to the first task.

- Cycle edges and cycle tasks are red (``color="red"``; inferred cycle edges red
  and dashed); tasks blocked behind a cycle are orange.
- The root of a wait chain (the task everybody in the chain waits for) has a
  double purple border and ``ROOT`` in its label, which says what it waits for
  (its ``blocked_in``); a completion or wait queue it waits for is an octagon
  (``wait_<address>``) with a dashed *waits for* edge from the root.
- A lock with many waiters that block nobody else draws the first few and one
  ``N more tasks wait here`` node, and the whole picture is capped at
  ``max_tasks`` tasks (cycles always drawn first), so a dump with a thousand
  blocked tasks still gives a readable picture.

Node names are ``task_<pid>_<address>`` and ``lock_<address>`` (addresses in
hex without ``0x``); the SVG keeps them as element ids, and gives every element
of a cycle the class ``cycle``.
"""
from __future__ import annotations

import re
import shutil
import subprocess

from ..analysis.graph import NOT_LISTED, WaitForGraph, describe_activity, interesting_frame
from ..errors import KdlError
from ..model import CERTAIN, Snapshot

__all__ = ["render_dot", "render_dots", "dot_to_svg", "dots_to_svgs", "svg_for_html", "task_node", "lock_node", "CYCLE_COLOR"]

CYCLE_COLOR = "red"
_BEHIND = "#e67e22"  # orange: blocked behind a cycle
_ROOT = "#8e44ad"  # purple: the root of a chain
_EDGE = "#555555"
_FILL = {"cycle": "#ffe0e0", "behind": "#fdebd0", "chain": "#eaf0fb", "root": "#f4e6fa", "other": "#f2f2f2"}
_LOCK_FILL = "#e0f4f7"
_WAIT_FILL = "#fcf3cf"  # a completion or wait queue a chain's root waits for

MAX_TASKS = 150
MAX_LEAF_WAITERS = 6  # per lock; beyond this, one "N more" node


def task_node(pid: int, address: int) -> str:
    """The DOT node name of a task (``struct task_struct *`` at ``address``)."""
    return f"task_{pid}_{address:x}"


def lock_node(address: int) -> str:
    """The DOT node name of a lock at ``address``."""
    return f"lock_{address:x}"


def _quote(text: str) -> str:
    """A DOT double-quoted string; backslashes are doubled so ``\\N``-style escapes stay literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: object) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        key = key.rstrip("_")  # class_ -> class
        parts.append(f"{key}={_quote(str(value))}")
    return "[" + ", ".join(parts) + "]"


class _Picture:
    """The nodes and edges to draw, chosen from one graph."""

    def __init__(self, snapshot: Snapshot, graph: WaitForGraph, max_tasks: int) -> None:
        self.snapshot = snapshot
        self.graph = graph
        self.max_tasks = max_tasks
        self.role: dict[int, str] = {}  # task -> cycle | behind | chain | root
        self.tasks: list[int] = []
        self.cycle_edges: set[tuple[int, int]] = set()  # (waiter, lock) and (lock, owner) pairs
        self.left_out = 0
        self.left_out_groups = 0

    def choose(self) -> None:
        graph = self.graph
        for cycle in graph.cycles:
            for task in cycle.tasks:
                self._add(task, "cycle")
            for edge in cycle.edges:
                self.cycle_edges.add((edge.waiter, edge.lock))
                self.cycle_edges.add((edge.lock, edge.owner))
        groups: list[tuple[str, list[int]]] = []
        for cycle in graph.cycles:
            groups.append(("behind", list(cycle.blocked_behind)))
        for chain in graph.chains:
            members = [t for t in chain.tasks if t != chain.root] + chain.joined
            groups.append(("chain", members + ([chain.root] if chain.root is not None else [])))
        for role, members in groups:
            fresh = [t for t in members if t not in self.role]
            if len(self.tasks) + len(fresh) > self.max_tasks and self.tasks:
                self.left_out += len(fresh)
                self.left_out_groups += 1
                continue
            for task in fresh:
                self._add(task, role)
        for chain in graph.chains:
            if chain.root is not None and chain.root in self.role:
                self.role[chain.root] = "root"

    def _add(self, task: int, role: str) -> None:
        if task not in self.role:
            self.role[task] = role
            self.tasks.append(task)


_HEAD = [
    '  graph [fontname="Helvetica", fontsize="11", nodesep="0.35", ranksep="0.45", bgcolor="white", pad="0.2"];',
    '  node [fontname="Helvetica", fontsize="10", style="filled"];',
    '  edge [fontname="Helvetica", fontsize="8", color="#555555", arrowsize="0.7"];',
]


class _Statements:
    """The DOT statements of the picture: each node's line under its name, each edge's line with its two ends."""

    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}
        self.edges: list[tuple[str, str, str]] = []

    def node(self, name: str, attrs: str) -> None:
        self.nodes[name] = f"  {name} {attrs}"

    def edge(self, tail: str, head: str, attrs: str) -> None:
        self.edges.append((tail, head, f"  {tail} -> {head} {attrs}"))

    def components(self) -> list[list[str]]:
        """The statements of each connected part of the picture, in the order their first node was drawn."""
        parent = {name: name for name in self.nodes}

        def root(name: str) -> str:
            parent.setdefault(name, name)  # an end drawn by no node line of its own
            while parent[name] != name:
                parent[name] = parent[parent[name]]
                name = parent[name]
            return name

        for tail, head, _ in self.edges:
            parent[root(tail)] = root(head)
        parts: dict[str, list[str]] = {}
        for name, line in self.nodes.items():
            parts.setdefault(root(name), []).append(line)
        for tail, _, line in self.edges:
            parts.setdefault(root(tail), []).append(line)
        return list(parts.values())


def _digraph(lines: list[str]) -> str:
    return "\n".join(["digraph waitfor {", *_HEAD, *lines, "}"]) + "\n"


def render_dot(snapshot: Snapshot, graph: WaitForGraph, max_tasks: int = MAX_TASKS) -> str:
    """DOT source of the wait-for graph: cycles in red, tasks blocked behind them, chain roots marked."""
    return _digraph([line for part in _picture(snapshot, graph, max_tasks).components() for line in part])


def render_dots(snapshot: Snapshot, graph: WaitForGraph, max_tasks: int = MAX_TASKS) -> list[str]:
    """The same picture as :func:`render_dot`, one DOT graph per connected part (each cycle with the tasks behind
    it, each chain), the cycles first: drawn one under the other at its own size, a part's labels stay
    legible however many parts there are (side by side in one picture, seven parts shrink them to ~5 px)."""
    return [_digraph(part) for part in _picture(snapshot, graph, max_tasks).components()]


def _picture(snapshot: Snapshot, graph: WaitForGraph, max_tasks: int) -> _Statements:
    pic = _Picture(snapshot, graph, max_tasks)
    pic.choose()
    out = _Statements()
    if not pic.tasks:
        out.node("empty", '[shape="plaintext", label="no task waits on a lock", style=""]')
        return out

    drawn_tasks = set(pic.tasks)
    # Locks: every lock a drawn task waits on, in the order the tasks were chosen.
    lock_order: list[int] = []
    seen_locks: set[int] = set()
    for task in pic.tasks:
        found = graph.task(task)
        waits_on = found.waits_on if found is not None else None
        if waits_on is not None and waits_on not in seen_locks:
            seen_locks.add(waits_on)
            lock_order.append(waits_on)
    # Waiters that block nobody: many of them on one lock collapse into one node.
    wanted_from = {e.owner for t in pic.tasks for e in graph.edges_from(t)}
    hidden: set[int] = set()
    more: dict[int, int] = {}
    for lock in lock_order:
        leaves = [
            t for t in graph.waiters(lock)
            if t in drawn_tasks and pic.role[t] not in ("cycle", "root") and t not in wanted_from
        ]
        if len(leaves) > MAX_LEAF_WAITERS:
            for task in leaves[MAX_LEAF_WAITERS - 1:]:
                hidden.add(task)
            more[lock] = len(leaves) - (MAX_LEAF_WAITERS - 1)

    for task in pic.tasks:
        if task in hidden:
            continue
        out.node(*_task_line(snapshot, graph, task, pic.role[task]))
    for lock in lock_order:
        out.node(lock_node(lock), _lock_line(graph, lock, any((lock, o) in pic.cycle_edges for o in drawn_tasks)))
        if lock in more:
            name = f"more_{lock:x}"
            out.node(name, _attrs(shape="note", label=f"{more[lock]} more tasks wait here",
                                  fillcolor=_FILL["other"], color="#999999"))
            out.edge(name, lock_node(lock), _attrs(label="wait on", style="dashed"))
    for task in pic.tasks:
        if task in hidden:
            continue
        t = graph.task(task)
        if t is None or t.waits_on is None:
            continue
        in_cycle = (task, t.waits_on) in pic.cycle_edges
        out.edge(task_node(t.pid, task), lock_node(t.waits_on),
                 _attrs(label="waits on", color=CYCLE_COLOR if in_cycle else None,
                        fontcolor=CYCLE_COLOR if in_cycle else None, penwidth="2.2" if in_cycle else None,
                        id=f"wait_{t.pid}_{task:x}", class_="cycle" if in_cycle else "wait"))
    for lock in lock_order:
        known = graph.lock(lock)
        if known is None:
            continue
        for owner in known.current_owners():  # a STALE owner (exited, slot reused) holds nothing: not drawn
            o = graph.task(owner.task)
            if owner.task not in drawn_tasks and o is None:
                continue
            if owner.task not in drawn_tasks:
                # An owner that is not blocked (so in no chain): draw it so the hold edge has an end.
                drawn_tasks.add(owner.task)
                role = "root" if any(c.root == owner.task for c in graph.chains) else "other"
                out.node(*_task_line(snapshot, graph, owner.task, role))
            in_cycle = (lock, owner.task) in pic.cycle_edges
            inferred = owner.confidence != CERTAIN
            label = "held by" + (" (inferred)" if inferred else "")
            if owner.mode != "exclusive":
                label += f" [{owner.mode}]"
            out.edge(lock_node(lock), task_node(o.pid if o else 0, owner.task),
                     _attrs(label=label, style="dashed" if inferred else None,
                            color=CYCLE_COLOR if in_cycle else None, fontcolor=CYCLE_COLOR if in_cycle else None,
                            penwidth="2.2" if in_cycle else None,
                            id=f"hold_{lock:x}_{owner.task:x}", class_="cycle" if in_cycle else "hold"))
    _waited_for(out, graph, [t for t in drawn_tasks if pic.role.get(t, "root") == "root"])
    if pic.left_out:
        out.node("left_out", _attrs(
            shape="note", fillcolor=_FILL["other"], color="#999999",
            label=f"{pic.left_out} more blocked tasks in {pic.left_out_groups} more chains not drawn"))
    return out


def _task_line(snapshot: Snapshot, graph: WaitForGraph, address: int, role: str) -> tuple[str, str]:
    """(node name, attributes) of a task."""
    task = graph.task(address)
    if task is None:
        return task_node(0, address), _attrs(
            shape="box", label=f"task {address:#x}\n{NOT_LISTED}", fillcolor=_FILL["other"], color="#999999")
    label = f"{task.comm}\npid {task.pid} · {task.state}"
    extra: dict[str, object] = {}
    if role == "root":
        held = [_lock_name(graph, lk) for lk in graph.holds(address)]
        activity = describe_activity(task, [])
        label = f"ROOT: {label}\n{activity}"
        extra = {"peripheries": "2", "color": _ROOT, "penwidth": "1.5", "tooltip": f"root, holding {', '.join(held)}"}
    elif role == "cycle":
        extra = {"color": CYCLE_COLOR, "penwidth": "2.2"}
    elif role == "behind":
        extra = {"color": _BEHIND}
    elif role == "other":
        frame = interesting_frame(task.frames)
        if frame is not None:
            label += f"\nin {frame.describe()}"
        extra = {"color": "#999999"}
    return task_node(task.pid, address), _attrs(
        shape="box", label=label, fillcolor=_FILL[role], style="rounded,filled",
        id=task_node(task.pid, address), class_=f"task {role}", URL=f"#task-{task.pid}", **extra)


def _waited_for(out: _Statements, graph: WaitForGraph, roots: list[int]) -> None:
    """A node for each completion or wait queue a chain's root waits for (``wait_<address>``), and its edge."""
    drawn: set[int] = set()
    for address in sorted(roots):
        task = graph.task(address)
        blocked = task.blocked_in if task is not None else None
        if task is None or blocked is None or blocked.address is None:
            continue
        node = f"wait_{blocked.address:x}"
        if blocked.address not in drawn:
            drawn.add(blocked.address)
            kind = "wait queue" if blocked.kind == "waitqueue" else blocked.kind
            out.node(node, _attrs(shape="octagon", label=f"{blocked.object_name()}\n{kind} {blocked.address:#x}",
                                  fillcolor=_WAIT_FILL, color=_ROOT, id=node, class_=f"waited {blocked.kind}"))
        out.edge(task_node(task.pid, address), node, _attrs(
            label="waits for", style="dashed", color=_ROOT, id=f"waitsfor_{task.pid}_{address:x}", class_="waitsfor"))


def _lock_name(graph: WaitForGraph, address: int) -> str:
    lock = graph.lock(address)
    return lock.name() if lock is not None else f"{address:#x}"


def _lock_line(graph: WaitForGraph, address: int, in_cycle: bool) -> str:
    lock = graph.lock(address)
    if lock is None:
        label = f"lock {address:#x}\n(not decoded)"
    else:
        label = f"{lock.name()}\n{lock.type} {address:#x}"
    return _attrs(
        shape="ellipse", label=label, fillcolor=_LOCK_FILL, color=CYCLE_COLOR if in_cycle else "#2c7a8c",
        penwidth="2.2" if in_cycle else None, id=lock_node(address),
        class_="lock cycle" if in_cycle else "lock")


def dot_to_svg(source: str, dot: str = "dot", timeout: float = 60.0) -> str:
    """Render DOT ``source`` to SVG with Graphviz's ``dot -Tsvg``.

    Raises KdlError (one line) when Graphviz is not installed, fails or takes too long.
    """
    exe = shutil.which(dot)
    if exe is None:
        raise KdlError("Graphviz is not installed (apt-get install graphviz): the picture is left out")
    try:
        done = subprocess.run([exe, "-Tsvg"], input=source, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KdlError(f"Graphviz took more than {timeout:.0f}s to draw the graph") from None
    if done.returncode != 0 or "<svg" not in done.stdout:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise KdlError(f"Graphviz could not draw the graph: {last}")
    return done.stdout


def dots_to_svgs(sources: list[str], dot: str = "dot", timeout: float = 60.0) -> list[str]:
    """Each DOT graph of ``sources`` as an SVG, drawn by one run of Graphviz (it draws every graph of its input
    in turn); KdlError as :func:`dot_to_svg`."""
    if not sources:
        return []
    drawn = dot_to_svg("".join(sources), dot, timeout)
    svgs = [part.lstrip() + "</svg>" for part in drawn.split("</svg>")[:-1]]  # each with its own XML prolog
    if len(svgs) != len(sources):
        raise KdlError(f"Graphviz drew {len(svgs)} pictures of {len(sources)} graphs")
    return svgs


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->\s*", re.S)


def svg_for_html(svg: str) -> str:
    """``dot``'s SVG made fit to inline in HTML: no XML prolog, DOCTYPE (its DTD URL) or comments."""
    return _COMMENT.sub("", _PROLOG.sub("", svg, count=1)).strip()
