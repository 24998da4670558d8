"""The post-mortem report: one document that says what hung and why, in HTML, Markdown, JSON or text.

Its parts, in order:

1. the verdict and one sentence naming the tasks and locks
   (:func:`summary_sentence`: "kdl_a (pid 94) and kdl_b (pid 95) probably deadlock on
   sem1 and sem2 [kdl_abba]: ABBA order ...");
2. the wait-for graph as a picture (Graphviz SVG, inline in HTML, a ``data:`` image in
   Markdown) and its DOT source (:mod:`kdlgdb.render.dot`);
3. each cycle: every edge with its evidence, each task's stack with the lock
   slow-path frame highlighted, what it holds and wants, the tasks blocked behind
   it and the lock order that prevents it;
4. wait chains without a cycle, grouped by their root, and D-state tasks that wait
   on no known lock, grouped by identical stacks;
5. the kernel log: notable lines and, for each task the hung-task detector named,
   whether the graph explains it;
6. system facts and the problems met while reading the dump.

Everything is computed from a Snapshot, its :class:`~kdlgdb.analysis.graph.WaitForGraph`,
optional kernel log records and a dict of facts; nothing here reads a kernel or
prints. The HTML is one self-contained file (inline CSS and SVG, no script, no
external URL) that opens offline.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
from typing import Any, Iterable, Optional, Sequence, Union

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import RegexLexer
from pygments.lexers import GraphvizLexer
from pygments.token import Comment, Name, Number, Text, Whitespace
from tabulate import tabulate

from ..analysis import kernlog
from ..analysis.graph import FLUSHED_TYPES, Chain, Cycle, Edge, WaitForGraph, describe_blocked_in, interesting_frame
from ..errors import KdlError
from ..model import CERTAIN, Snapshot, Task
from .dot import dot_to_svg, render_dot, svg_for_html
from .json import waitfor_json
from .text import format_last_ran, lockdep_lines, render_waitfor

__all__ = [
    "FORMATS",
    "REPORT_VERSION",
    "render_report",
    "report_json",
    "verdict",
    "headline",
    "summary_sentence",
    "cycle_sentence",
    "cycle_line",
    "chain_sentence",
    "d_state_groups",
    "stack_groups",
    "explain_hung",
    "log_record",
    "format_utc",
    "format_crash_time",
    "format_uptime",
]

FORMATS = ("html", "md", "json", "txt")
REPORT_VERSION = 1
MAX_LOG_LINES = 300  # notable kernel log lines shown (the last ones)
TAIL_LINES = 40  # the log's last records, shown for context (the hung-task detector's call traces)
MAX_NAMED = 3  # tasks named in a sentence before "and N more"

_HEADLINES = {"deadlock": "DEADLOCK", "probable": "PROBABLE DEADLOCK", "none": "NO DEADLOCK"}

LogLike = Union[dict, Any]  # a dict or an object with seq, ts_ns, level, text (kdlgdb.kernel.printk.LogRecord)
HungLike = Union[dict, Any]  # a dict or an object with comm, pid, seconds, seq (kdlgdb.analysis.kernlog.HungTask)


# -- plain facts shared by every format ------------------------------------------


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def log_record(record: LogLike) -> dict[str, Any]:
    """A kernel log record (``LogRecord`` or dict) as ``{"seq", "ts_ns", "level", "text", "caller"}``.

    ``level`` may be None (unknown) and ``caller`` empty (``"T<pid>"`` or ``"C<cpu>"`` when known).
    """
    level = _get(record, "level")
    return {
        "seq": int(_get(record, "seq", 0) or 0),
        "ts_ns": int(_get(record, "ts_ns", 0) or 0),
        "level": None if level is None else int(level),
        "text": str(_get(record, "text", "")),
        "caller": str(_get(record, "caller", "") or ""),
    }


def _log_line(record: dict[str, Any]) -> str:
    """As dmesg prints it: ``[   11.166087] INFO: task ...``, the prefix on each line of the record."""
    ts = record["ts_ns"]
    prefix = f"[{ts // 1_000_000_000:5d}.{ts % 1_000_000_000 // 1000:06d}] "
    return "\n".join(prefix + line for line in record["text"].split("\n"))


def verdict(graph: WaitForGraph) -> str:
    """``"deadlock"`` if some cycle is certain, ``"probable"`` if all cycles have an inferred edge, else ``"none"``."""
    if any(c.verdict == "deadlock" for c in graph.cycles):
        return "deadlock"
    return "probable" if graph.cycles else "none"


def headline(kind: str) -> str:
    """``DEADLOCK``, ``PROBABLE DEADLOCK`` or ``NO DEADLOCK`` for a :func:`verdict`."""
    return _HEADLINES[kind]


def _and(items: Sequence[str]) -> str:
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _task(graph: WaitForGraph, address: int) -> str:
    task = graph.task(address)
    return f"{task.comm} (pid {task.pid})" if task else f"task {address:#x} (not in the dump)"


def _short(graph: WaitForGraph, address: int) -> str:
    task = graph.task(address)
    return f"{task.comm} ({task.pid})" if task else f"task {address:#x} (not found)"


def _comm(graph: WaitForGraph, address: int) -> str:
    task = graph.task(address)
    return task.comm if task else f"task {address:#x}"


def _lock(graph: WaitForGraph, address: int) -> str:
    lock = graph.lock(address)
    return lock.name() if lock else f"lock {address:#x}"


def _some(graph: WaitForGraph, tasks: Sequence[int]) -> str:
    named = [_task(graph, t) for t in tasks[:MAX_NAMED]]
    if len(tasks) > MAX_NAMED:
        named.append(f"{len(tasks) - MAX_NAMED} more")
    return _and(named)


def _lock_set(graph: WaitForGraph, locks: Iterable[int]) -> str:
    """``sem1 and sem2 [kdl_abba]`` when they share a module, else each lock's full name."""
    distinct = sorted(set(locks), key=lambda lk: (_lock(graph, lk), lk))
    known = [graph.lock(lk) for lk in distinct]
    modules = {lk.module for lk in known if lk is not None}
    if len(distinct) > 1 and all(lk is not None and lk.symbol for lk in known) and len(modules) == 1:
        module = modules.pop()
        names = _and([lk.symbol for lk in known if lk is not None and lk.symbol])
        return f"{names} [{module}]" if module else names
    return _and([_lock(graph, lk) for lk in distinct])


def _symbol(graph: WaitForGraph, address: int) -> str:
    lock = graph.lock(address)
    return lock.symbol if lock is not None and lock.symbol else _lock(graph, address)


def cycle_sentence(cycle: Cycle, graph: WaitForGraph) -> str:
    """One cycle in words, e.g. "kdl_m1 (pid 92) and kdl_m2 (pid 93) deadlock on m1 and m2 [kdl_mutex]: ABBA order"."""
    who = _and([_task(graph, t) for t in cycle.tasks])
    locks = _lock_set(graph, cycle.locks)
    certain = cycle.verdict == "deadlock"
    if cycle.interrupt is not None:
        verb = "deadlocks" if certain else "probably deadlocks"
        text = (f"{who} {verb} on itself through an interrupt: a {cycle.interrupt['context']} handler on its CPU "
                f"spins on {locks}, which the code it interrupted holds (take it with {cycle.interrupt['fix']}())")
    elif len(cycle.tasks) == 1:
        verb = "deadlocks" if certain else "probably deadlocks"
        text = f"{who} {verb} on itself: it waits for {locks}, which it already holds"
    else:
        verb = "deadlock" if certain else "probably deadlock"
        flushed = [lk for lk in cycle.locks if graph.lock(lk) is not None and graph.lock(lk).type in FLUSHED_TYPES]
        if flushed:  # not two acquisitions: a flush under a lock the work takes
            pattern = f"a flush of {_symbol(graph, flushed[0])} under a lock its work needs"
        elif len(cycle.tasks) == 2 and len(set(cycle.locks)) == 2:
            pattern = "ABBA order"
        else:
            order = [_symbol(graph, lk) for lk in cycle.locks]
            pattern = f"circular lock order {' -> '.join(order + order[:1])}"
        text = f"{who} {verb} on {locks}: {pattern}"
    if cycle.inferred:
        holders = ", ".join(f"{_comm(graph, e.owner)} holds {_symbol(graph, e.lock)}" for e in cycle.inferred)
        text += f" (inferred, not recorded by the kernel: {holders})"
    if cycle.blocked_behind:
        them = "it" if len(cycle.tasks) == 1 else "them"
        text += f", with {_some(graph, cycle.blocked_behind)} blocked behind {them}"
    return text


def chain_sentence(chain: Chain, graph: WaitForGraph) -> str:
    """One chain in words: who is blocked behind whom, and what the root is doing."""
    blocked = [t for t in chain.tasks if t != chain.root] + chain.joined
    who = _some(graph, blocked)
    verb = "is" if len(blocked) == 1 else "are"
    if chain.root is None:
        held = graph.lock(chain.locks[-1])
        if held is not None and held.holder:  # held by no task: a freeze
            return f"{who} {verb} blocked on {_lock(graph, chain.locks[-1])}, held by {held.holder}"
        if graph.holder_note(chain.locks[-1]) == "owner exited":
            return f"{who} {verb} blocked on {_lock(graph, chain.locks[-1])}, whose owner exited without releasing it"
        return f"{who} {verb} blocked on {_lock(graph, chain.locks[-1])}, which has no known holder"
    if graph.task(chain.root) is None:
        return f"{who} {verb} blocked behind a task that is not in the dump ({chain.root_reason})"
    reason = chain.root_reason
    if reason.startswith("in "):
        reason = "is " + reason
    return f"{who} {verb} blocked behind {_task(graph, chain.root)}, which {reason}"


def _blocked_in(chain: Chain) -> int:
    return len(chain.tasks) - (chain.root is not None) + len(chain.joined)


def summary_sentence(snapshot: Snapshot, graph: WaitForGraph) -> str:
    """The report's first sentence: the deadlocks, or the worst chain, or that nothing waits on a lock."""
    if graph.cycles:
        sentences = [cycle_sentence(c, graph) for c in graph.cycles]
        if len(sentences) == 1:
            return sentences[0] + "."
        return f"{len(sentences)} deadlocks: " + "; ".join(sentences) + "."
    if not graph.chains:
        d_state = sum(t.state == "D" for t in snapshot.tasks)
        text = "No deadlock: no task waits on a lock"
        if d_state:
            text += f" ({_plural(d_state, 'task')} in D state, see below)"
        return text + "."
    if len(graph.chains) == 1:
        return "No deadlock: " + chain_sentence(graph.chains[0], graph) + "."
    blocked = sum(_blocked_in(c) for c in graph.chains)
    largest = max(graph.chains, key=_blocked_in)
    return (f"No deadlock: {_plural(blocked, 'blocked task')} in {len(graph.chains)} chains; "
            f"the largest: {chain_sentence(largest, graph)}.")


def cycle_line(cycle: Cycle, graph: WaitForGraph) -> str:
    """A cycle on one line: ``kdl_a (94) -> sem2 [kdl_abba] -> kdl_b (95) -> sem1 [kdl_abba] -> kdl_a (94)``."""
    parts = []
    for task, lock in zip(cycle.tasks, cycle.locks):
        parts += [_short(graph, task), _lock(graph, lock)]
    return " -> ".join(parts + [_short(graph, cycle.tasks[0])])


def _hop(graph: WaitForGraph, edge: Edge) -> str:
    text = f" --waits on--> {_lock(graph, edge.lock)} --held by--> {_short(graph, edge.owner)}"
    return text + (" [inferred]" if edge.confidence != CERTAIN else "")


def _path(graph: WaitForGraph, task: int) -> str:
    """``kdl_m3 (94) --waits on--> m1 [kdl_mutex] --held by--> kdl_m1 (92)`` up to a cycle or root."""
    edges = graph.path(task)
    text = _short(graph, task) + "".join(_hop(graph, e) for e in edges)
    last = graph.task(edges[-1].owner if edges else task)
    if (not edges or graph.membership(edges[-1].owner) is not graph.membership(task)) and last is not None:
        if last.waits_on is not None and not graph.edges_from(last.address):
            text += f" --waits on--> {_lock(graph, last.waits_on)} ({graph.holder_note(last.waits_on)})"
    return text


def stack_groups(tasks: Iterable[Task]) -> list[dict[str, Any]]:
    """``tasks`` grouped by identical stacks (``Frame.describe()`` lines), largest group first.

    Each group: ``{"count", "pids", "comms", "tasks" (addresses), "stack" (Frame.describe() lines),
    "sources" (each frame's ``file:line`` or None), "focus" (index of the frame to highlight: the lock
    slow path, or what they do; None)}``.
    """
    groups: dict[tuple[str, ...], list[Task]] = {}
    for task in sorted(tasks, key=lambda t: (t.pid, t.address)):
        groups.setdefault(tuple(f.describe() for f in task.frames), []).append(task)
    result = []
    for stack, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0].pid)):
        result.append({
            "count": len(members),
            "pids": [t.pid for t in members],
            "comms": [t.comm for t in members],
            "tasks": [f"{t.address:#x}" for t in members],
            "stack": list(stack),
            "sources": [f.source for f in members[0].frames],
            "focus": _focus(members[0]),
        })
    return result


def d_state_groups(snapshot: Snapshot, graph: WaitForGraph) -> list[dict[str, Any]]:
    """D-state tasks in no cycle or chain (they wait on no lock kdlgdb knows), grouped by identical stacks
    (see :func:`stack_groups`)."""
    return stack_groups(t for t in snapshot.tasks if t.state == "D" and t.waits_on is None
                        and graph.membership(t.address) is None)


def _blocked_groups(graph: WaitForGraph, addresses: Iterable[int]) -> list[dict[str, Any]]:
    return stack_groups(t for t in (graph.task(a) for a in addresses) if t is not None)


def _focus(task: Task) -> Optional[int]:
    """Index of the frame to highlight: the lock slow path of a blocked task, else the first non-scheduler frame."""
    frame = interesting_frame(task.frames)
    if frame is None:
        return None
    return next(i for i, f in enumerate(task.frames) if f is frame)


def _numbers(graph: WaitForGraph) -> dict[int, tuple[str, int]]:
    found: dict[int, tuple[str, int]] = {}
    for k, cycle in enumerate(graph.cycles):
        found[id(cycle)] = ("cycle", k + 1)
    for k, chain in enumerate(graph.chains):
        found[id(chain)] = ("chain", k + 1)
    return found


def explain_hung(snapshot: Snapshot, graph: WaitForGraph, hung: Iterable[HungLike]) -> list[dict[str, Any]]:
    """For each task the kernel's hung-task detector named: does the wait-for graph explain it?

    Each result: ``{"comm", "pid", "seconds", "seq", "explained" (bool), "explanation", "anchor"}``;
    explained means the pid is in a cycle (as member or blocked behind it) or a chain (blocked or root).
    """
    by_pid = {t.pid: t for t in snapshot.tasks if t.pid}
    numbers = _numbers(graph)
    results = []
    for item in hung:
        comm, pid = str(_get(item, "comm", "")), int(_get(item, "pid", 0) or 0)
        entry: dict[str, Any] = {"comm": comm, "pid": pid, "seconds": _get(item, "seconds"),
                                 "seq": _get(item, "seq"), "explained": False, "explanation": "", "anchor": None}
        task = by_pid.get(pid)
        member = graph.membership(task.address) if task is not None else None
        if task is None:
            entry["explanation"] = "no task with this pid in the dump (it has exited or the pid was never there)"
        elif task.comm != comm:
            entry["explanation"] = f"pid {pid} is now {task.comm}, not {comm}: the hung task has exited"
        elif isinstance(member, Cycle):
            kind, n = numbers[id(member)]
            word = "deadlock" if member.verdict == "deadlock" else "probable deadlock"
            where = "in" if task.address in member.tasks else "blocked behind"
            entry.update(explained=True, explanation=f"{where} {word} {n}", anchor=f"{kind}-{n}")
        elif isinstance(member, Chain):
            kind, n = numbers[id(member)]
            if task.address == member.root:
                text = f"root of chain {n}: it {member.root_reason}"
            elif member.root is not None:
                text = f"in chain {n}, blocked behind {_task(graph, member.root)}"
            else:
                text = f"in chain {n}, blocked on {_lock(graph, member.locks[-1])} ({graph.holder_note(member.locks[-1])})"
            entry.update(explained=True, explanation=text, anchor=f"{kind}-{n}")
        elif task.state == "D":
            frame = interesting_frame(task.frames)
            where = f" (in {frame.describe()})" if frame is not None else ""
            entry["explanation"] = f"in D state, but waits on no lock kdlgdb can decode{where}"
        else:
            entry["explanation"] = f"now in state {task.state}: it is no longer blocked"
        results.append(entry)
    return results


def format_utc(seconds: float) -> str:
    """``2025-11-21 19:49:12 UTC`` for seconds since the epoch."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_crash_time(crash_time: Optional[int], file_time: Optional[float] = None) -> str:
    """When the kernel crashed: VMCOREINFO's CRASHTIME, else the dump file's time marked ``(file time)``, else ""."""
    if crash_time is not None:
        return format_utc(crash_time)
    if file_time is not None:
        return f"{format_utc(file_time)} (file time)"
    return ""


def format_uptime(ns: Optional[int]) -> str:
    """``12.3s``, ``5m 07s``, ``3h 12m 09s``, ``2d 03h 12m``; ``unknown`` for None."""
    if ns is None:
        return "unknown"
    seconds = ns / 1e9
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _read_from(snapshot: Snapshot, facts: dict[str, Any]) -> str:
    """What kdlgdb read (``ELF vmcore (QEMU dump-guest-memory with paging)``), without the path shown beside it."""
    described = snapshot.dump
    where = str(facts.get("dump") or facts.get("remote") or "")
    if where and described.endswith(" " + where):
        described = described[: -len(where) - 1]
    return described


def _facts(snapshot: Snapshot, facts: dict[str, Any], log_count: int, log_note: str) -> list[tuple[str, str]]:
    d_state = sum(t.state == "D" for t in snapshot.tasks)
    rows = [("kernel release", snapshot.release or "unknown"), ("KASLR offset", f"{snapshot.kaslr_offset:#x}")]
    for key, label in (("dump", "dump"), ("remote", "live target"), ("vmlinux", "vmlinux")):
        if facts.get(key):
            rows.append((label, str(facts[key])))
    live = snapshot.dump.startswith("live ") or bool(facts.get("remote"))
    if snapshot.dump:
        rows.append(("read from" if live else "dump format", _read_from(snapshot, facts)))
    rows.append(("CPUs", str(snapshot.cpus) if snapshot.cpus else "unknown"))
    rows.append(("uptime", format_uptime(snapshot.uptime_ns)))
    if not live:
        crashed = format_crash_time(snapshot.crash_time, facts.get("dump_mtime"))
        rows.append(("crash time", crashed or "unknown (no CRASHTIME in the dump's VMCOREINFO)"))
    if snapshot.panic:
        rows.append(("panic", snapshot.panic))
    elif log_count:
        rows.append(("panic", "none (no \"Kernel panic - not syncing\" in the kernel log)"))
    rows += [
        ("tasks", f"{len(snapshot.tasks)} ({d_state} in D state)"),
        ("locks with waiters", str(len(snapshot.locks))),
        ("lock data sources", ", ".join(snapshot.sources) or "none recorded"),
        ("kernel log", f"{log_count} records" if log_count else (log_note or "not read")),
    ]
    if facts.get("analysed"):
        rows.append(("analysed", str(facts["analysed"])))
    tools = " / ".join(str(facts[k]) for k in ("kdlgdb", "debugger") if facts.get(k))
    if tools:
        rows.append(("by", tools))
    shown = {"dump", "remote", "vmlinux", "analysed", "kdlgdb", "debugger", "log_note", "dump_mtime"}
    for key, value in sorted(facts.items()):
        if key in shown or value in (None, "", []):
            continue
        text = "; ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        rows.append((_FACT_LABELS.get(key, key.replace("_", " ")), text))
    return rows


_FACT_LABELS = {"vmlinux_search": "vmlinux found", "log_problems": "kernel log problems", "target": "target"}


@dataclasses.dataclass
class _Data:
    """What every format shows, computed once."""

    snapshot: Snapshot
    graph: WaitForGraph
    kind: str
    summary: str
    dot: str
    svg: Optional[str]
    svg_error: str
    groups: list[dict[str, Any]]
    hung: list[dict[str, Any]]
    notable: list[dict[str, Any]]
    tail: list[dict[str, Any]]
    log_count: int
    log_note: str
    facts: list[tuple[str, str]]
    raw_facts: dict[str, Any]
    lockdep: Optional[kernlog.LockdepFindings] = None  # on a kernel with lockdep: its reports in the log


def _data(snapshot: Snapshot, graph: WaitForGraph, log: Sequence[LogLike], hung: Sequence[HungLike],
          notable: Sequence[LogLike], facts: Optional[dict[str, Any]], svg: Optional[str], want_svg: bool) -> _Data:
    facts = dict(facts or {})
    dot = render_dot(snapshot, graph)
    svg_error = ""
    if svg is None and want_svg:
        try:
            svg = dot_to_svg(dot)
        except KdlError as e:
            svg_error = str(e)
    records = [log_record(r) for r in notable]
    log_note = str(facts.get("log_note") or "")
    return _Data(
        snapshot=snapshot, graph=graph, kind=verdict(graph), summary=summary_sentence(snapshot, graph), dot=dot,
        svg=svg, svg_error=svg_error, groups=d_state_groups(snapshot, graph),
        hung=explain_hung(snapshot, graph, hung), notable=records[-MAX_LOG_LINES:],
        tail=[log_record(r) for r in log[-TAIL_LINES:]], log_count=len(log),
        log_note=log_note, facts=_facts(snapshot, facts, len(log), log_note), raw_facts=facts,
        lockdep=_lockdep(snapshot, graph, log),
    )


def _lockdep(snapshot: Snapshot, graph: WaitForGraph, log: Sequence[LogLike]) -> Optional[kernlog.LockdepFindings]:
    """lockdep's reports in the log, tied to the cycles (None on a kernel without lockdep, or without a log)."""
    if snapshot.lockdep_on is None or not log:
        return None
    return kernlog.lockdep_findings(kernlog.as_records(log), snapshot, graph.cycles)


def lockdep_section(data: "_Data") -> list[str]:
    """The report's lockdep section: each report with the deadlock it explains (or none), and whether lockdep
    turned itself off; [] on a kernel without lockdep."""
    if data.lockdep is None:
        return []
    out = []
    for report, cycle in zip(data.lockdep.reports, data.lockdep.explains):
        tail = f": this is deadlock {cycle + 1}" if cycle is not None else ": no deadlock found here matches it"
        out += lockdep_lines(report, tail)
    if not data.lockdep.reports:
        out.append("lockdep reported nothing in the kernel log")
    if data.lockdep.turned_off:
        out.append("lockdep turned itself off after its first report (\"INFO: lockdep is turned off\"): lock-order "
                   "inversions after it were not checked")
    elif data.snapshot.lockdep_on is False:
        out.append("lockdep is off (debug_locks = 0): its held_locks may be stale")
    return out


def render_report(
    snapshot: Snapshot,
    graph: WaitForGraph,
    fmt: str,
    *,
    log: Sequence[LogLike] = (),
    hung: Sequence[HungLike] = (),
    notable: Sequence[LogLike] = (),
    facts: Optional[dict[str, Any]] = None,
    svg: Optional[str] = None,
) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`: ``html``, ``md``, ``json``, ``txt``).

    ``log`` is every kernel log record (only counted here), ``notable`` the lines to
    show and ``hung`` the tasks the hung-task detector named (see :func:`explain_hung`);
    records and hung tasks may be dicts or objects with the same fields. ``facts``
    holds what the front end knows about where the data came from (``dump``,
    ``vmlinux``, ``remote``, ``analysed``, ``kdlgdb``, ``debugger``, ``log_note``: why
    there is no log). ``svg`` is the graph already drawn; by default Graphviz draws
    it for HTML and Markdown, and a report without it says why.
    """
    if fmt not in FORMATS:
        raise KdlError(f"unknown report format '{fmt}': use one of {', '.join(FORMATS)}")
    data = _data(snapshot, graph, log, hung, notable, facts, svg, want_svg=fmt in ("html", "md"))
    if fmt == "json":
        return json.dumps(_json(data), indent=2) + "\n"
    if fmt == "txt":
        return _text(data)
    if fmt == "md":
        return _markdown(data)
    return _html(data)


# -- JSON --------------------------------------------------------------------


def report_json(snapshot: Snapshot, graph: WaitForGraph, **kwargs: Any) -> dict[str, Any]:
    """The report as a dict: :func:`~kdlgdb.render.json.waitfor_json`'s keys plus the report's own.

    Added keys: ``report_version``, ``verdict`` (deadlock | probable | none), ``headline``,
    ``summary``, ``cycle_summaries``, ``chain_summaries``, ``dot``, ``d_state_groups``,
    ``kernel_log`` (``records``, ``note``, ``hung_tasks``, ``notable``) and ``facts`` (the front
    end's facts plus ``release``, ``kaslr_offset``, ``task_count``, ``sources``, ``cpus``,
    ``uptime_ns``, ``read_from``, ``crash_time`` (epoch seconds or None), ``crash_time_text``, ``panic``).
    """
    return _json(_data(snapshot, graph, kwargs.get("log", ()), kwargs.get("hung", ()), kwargs.get("notable", ()),
                       kwargs.get("facts"), None, want_svg=False))


def _json(data: _Data) -> dict[str, Any]:
    doc = waitfor_json(data.snapshot, data.graph, data.lockdep)
    graph = data.graph
    doc.update({
        "report_version": REPORT_VERSION,
        "verdict": data.kind,
        "headline": headline(data.kind),
        "summary": data.summary,
        "cycle_summaries": [cycle_sentence(c, graph) for c in graph.cycles],
        "chain_summaries": [chain_sentence(c, graph) for c in graph.chains],
        "dot": data.dot,
        "d_state_groups": data.groups,
        "kernel_log": {
            "records": data.log_count,
            "note": data.log_note,
            "hung_tasks": data.hung,
            "notable": data.notable,
            "tail": data.tail,
        },
        "facts": {
            **{k: v for k, v in data.raw_facts.items() if k != "log_note"},
            "release": data.snapshot.release,
            "kaslr_offset": f"{data.snapshot.kaslr_offset:#x}",
            "task_count": len(data.snapshot.tasks),
            "sources": list(data.snapshot.sources),
            "cpus": data.snapshot.cpus,
            "uptime_ns": data.snapshot.uptime_ns,
            "read_from": data.snapshot.dump,
            "crash_time": data.snapshot.crash_time,
            "crash_time_text": format_crash_time(data.snapshot.crash_time, data.raw_facts.get("dump_mtime")),
            "panic": data.snapshot.panic,
        },
    })
    return doc


# -- text --------------------------------------------------------------------


def _frame_rows(frames: Sequence[tuple[str, Optional[str]]], focus: Optional[int], note: str, arrow: str,
                indent: str = "") -> list[str]:
    """Numbered stack lines: ``#3 __down_common+0x11e``, the focus marker (``<-- note``), then the
    frame's source line in a column of its own when some frame has one."""
    left = [f"{indent}{'#' + str(i):>3} {text}" for i, (text, _) in enumerate(frames)]
    marks = [f"    {arrow} {note}" if i == focus and note else "" for i in range(len(frames))]
    if not any(source for _, source in frames):
        return [line + mark for line, mark in zip(left, marks)]
    width, mark_width = max(map(len, left)), max(map(len, marks))
    return [(f"{line:<{width}}{mark:<{mark_width}}    {source}" if source else line + mark).rstrip()
            for line, mark, (_, source) in zip(left, marks, frames)]


def _stack_lines(task: Task, marker: bool = True) -> list[str]:
    if not task.frames:
        return ["    (no stack frames)"]
    note = ("lock slow path" if task.waits_on is not None else "where it is") if marker else ""
    return _frame_rows([(f.describe(), f.source) for f in task.frames], _focus(task), note, "<--", indent="  ")


def _task_state(task: Task) -> str:
    """``state D, last on CPU 0, last ran 8.2s before the dump``."""
    where = "running on CPU" if task.on_cpu else "last on CPU"
    return f"state {task.state}, {where} {task.cpu}, last ran {format_last_ran(task.last_ran_ns)} before the dump"


def _task_head(graph: WaitForGraph, task: Task) -> str:
    return f"{task.comm} (pid {task.pid}), {_task_state(task)}"


def _holds_wants(graph: WaitForGraph, task: Task) -> str:
    held = ", ".join(_lock(graph, lk) for lk in graph.holds(task.address)) or "nothing known"
    wanted = _lock(graph, task.waits_on) if task.waits_on is not None else "no lock"
    blocked = describe_blocked_in(task) if task.waits_on is None else None
    if blocked is not None and task.blocked_in is not None:  # what it waits for instead, and how we know
        wanted += f"; {blocked}" + (f" ({task.blocked_in.evidence})" if task.blocked_in.evidence else "")
    return f"holds {held}; wants {wanted}"


def _group_head(group: dict[str, Any]) -> str:
    named = [f"{c} ({p})" for c, p in zip(group["comms"][:8], group["pids"][:8])]
    if group["count"] > 8:
        named.append(f"{group['count'] - 8} more")
    return f"{_plural(group['count'], 'task')}: {', '.join(named)}"


def _group_frames(group: dict[str, Any]) -> list[tuple[str, Optional[str]]]:
    sources = group.get("sources") or [None] * len(group["stack"])
    return list(zip(group["stack"], sources))


def _group_lines(group: dict[str, Any], note: str) -> list[str]:
    lines = _frame_rows(_group_frames(group), group["focus"], note, "<--", indent="  ")
    return lines or ["    (no stack frames)"]


def _text(data: _Data) -> str:
    graph, snap = data.graph, data.snapshot
    out = [f"kdlgdb report: {headline(data.kind)}", "", data.summary, ""]
    out += ["== Wait-for graph ==", render_waitfor(dataclasses.replace(snap, problems=[]), graph, lockdep=data.lockdep), ""]
    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        out.append(f"== {word} {n}: evidence and stacks ==")
        for edge in cycle.edges:
            out.append(f"  edge: {_short(graph, edge.waiter)}{_hop(graph, edge)}")
            out.append(f"        {edge.confidence}: {edge.evidence}")
        for address in cycle.tasks:
            task = graph.task(address)
            if task is None:
                continue
            out += ["", "  " + _task_head(graph, task), "  " + _holds_wants(graph, task)]
            if task.wait_evidence:
                out.append(f"  waits, by: {task.wait_evidence}")
            out += _stack_lines(task)
        if cycle.blocked_behind:
            out += ["", "  stacks of the tasks blocked behind it:"]
            for group in _blocked_groups(graph, cycle.blocked_behind):
                out += ["  " + _group_head(group), *_group_lines(group, "lock slow path")]
        out.append("")
    if graph.chains:
        out.append("== Wait chains (no cycle) ==")
        for n, chain in enumerate(graph.chains, 1):
            out.append(f"chain {n}: {chain_sentence(chain, graph)}")
            root = graph.task(chain.root) if chain.root is not None else None
            if root is not None:
                out += ["  root: " + _task_head(graph, root), "  root " + _holds_wants(graph, root)]
                out += _stack_lines(root)
            out.append("  stacks of the blocked tasks:")
            for group in _blocked_groups(graph, [t for t in chain.tasks if t != chain.root] + chain.joined):
                out += ["  " + _group_head(group), *_group_lines(group, "lock slow path")]
        out.append("")
    out.append("== D-state tasks waiting on no known lock ==")
    if not data.groups:
        out.append("none")
    for group in data.groups:
        out += [_group_head(group), *_group_lines(group, "where they are")]
    if data.lockdep is not None:
        out += ["== lockdep's reports ==", *lockdep_section(data), ""]
    out += ["", "== Kernel log =="]
    out += _log_text(data)
    out += ["", "== System =="]
    width = max(len(k) for k, _ in data.facts)
    out += [f"{k + ':':<{width + 1}} {v}" for k, v in data.facts]
    out += ["", "== Problems =="]
    out += [f"skipped: {p}" for p in snap.problems] or ["none: every task and lock was read"]
    out += ["", "== DOT source (render with: dot -Tsvg -o graph.svg) ==", data.dot.rstrip()]
    return "\n".join(out) + "\n"


def _log_text(data: _Data) -> list[str]:
    if not data.log_count:
        return [f"no kernel log: {data.log_note or 'not read'}"]
    out = [f"{data.log_count} records"]
    if data.hung:
        out.append("tasks the hung-task detector reported:")
        rows = [(h["comm"], h["pid"], _seconds(h["seconds"]), "yes" if h["explained"] else "NO", h["explanation"])
                for h in data.hung]
        out += ["  " + line for line in tabulate(rows, headers=("COMM", "PID", "BLOCKED", "EXPLAINED", "HOW"),
                                                    tablefmt="plain", disable_numparse=True).splitlines()]
    else:
        out.append("the hung-task detector reported no task")
    if data.notable:
        out.append("notable lines:")
        out += ["  " + line for r in data.notable for line in _log_line(r).split("\n")]
    out.append(f"the last {len(data.tail)} records:")
    out += ["  " + line for r in data.tail for line in _log_line(r).split("\n")]
    return out


def _seconds(value: Any) -> str:
    return f"> {value}s" if value is not None else "?"


# -- Markdown ----------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe inside a Markdown paragraph or table cell (HTML, emphasis, code and cell marks escaped).

    Underscores and brackets stay: intraword ``_`` is no emphasis, and ``m1 [kdl_mutex]`` is no link.
    """
    out = html.escape(str(text), quote=False).replace("\n", " ")
    for ch in "\\`*|":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    cells = [[_md(str(c)) for c in row] for row in rows]
    return tabulate(cells, headers=list(headers), tablefmt="github", disable_numparse=True).splitlines()


def _fence(lines: Sequence[str], lang: str = "") -> list[str]:
    return [f"```{lang}", *lines, "```"]


def _groups_md(groups: list[dict[str, Any]], note: str) -> list[str]:
    out = []
    for group in groups:
        out += [_md(_group_head(group)) + ":", "", *_fence(_group_lines(group, note)), ""]
    return out


def _markdown(data: _Data) -> str:
    graph, snap = data.graph, data.snapshot
    out = [f"# kdlgdb report: {headline(data.kind)}", "", f"**{_md(data.summary)}**", ""]
    out += ["## Wait-for graph", ""]
    if data.svg:
        svg = svg_for_html(data.svg)  # a standalone SVG still, without its DTD URL
        encoded = base64.b64encode(svg.encode()).decode()
        out += [f"![wait-for graph: cycles in red, roots of chains in purple](data:image/svg+xml;base64,{encoded})", ""]
    else:
        out += [f"*No picture: {_md(data.svg_error)}*", ""]
    out += ["<details><summary>DOT source</summary>", "", *_fence(data.dot.rstrip().splitlines(), "dot"), "",
            "</details>", ""]
    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        out += [f"## {word} {n}", "", _md(cycle_sentence(cycle, graph)) + ".", ""]
        rows = [(_short(graph, e.waiter), _lock(graph, e.lock), _short(graph, e.owner), e.confidence, e.evidence)
                for e in cycle.edges]
        out += _md_table(rows, ("waiter", "waits on", "held by", "confidence", "evidence")) + [""]
        for address in cycle.tasks:
            task = graph.task(address)
            if task is None:
                continue
            out += [f"### {_md(task.comm)} (pid {task.pid})", "", _md(_task_head(graph, task)) + "; "
                    + _md(_holds_wants(graph, task)) + ".", ""]
            if task.wait_evidence:
                out += [f"How kdlgdb knows it waits: {_md(task.wait_evidence)}.", ""]
            out += _fence(_stack_lines(task)) + [""]
        if cycle.blocked_behind:
            out += [f"Blocked behind it ({len(cycle.blocked_behind)}):", ""]
            out += _fence([_path(graph, t) for t in cycle.blocked_behind]) + [""]
            out += _groups_md(_blocked_groups(graph, cycle.blocked_behind), "lock slow path")
        out += [f"> **Lock order:** {_md(cycle.advice)}", ""]
    if graph.chains:
        out += ["## Wait chains (no cycle)", ""]
        for n, chain in enumerate(graph.chains, 1):
            out += [f"### Chain {n}", "", _md(chain_sentence(chain, graph)) + ".", ""]
            blocked = [t for t in chain.tasks if t != chain.root] + chain.joined
            out += _fence([_path(graph, t) for t in blocked]) + [""]
            out += _groups_md(_blocked_groups(graph, blocked), "lock slow path")
            root = graph.task(chain.root) if chain.root is not None else None
            if root is not None:
                out += [f"Root: {_md(_task_head(graph, root))}; {_md(_holds_wants(graph, root))}.", ""]
                out += _fence(_stack_lines(root)) + [""]
    out += ["## D-state tasks waiting on no known lock", ""]
    if not data.groups:
        out += ["None.", ""]
    out += _groups_md(data.groups, "where they are")
    out += ["## Kernel log", ""]
    if not data.log_count:
        out += [f"No kernel log: {_md(data.log_note or 'not read')}.", ""]
    else:
        out += [f"{data.log_count} records.", ""]
        if data.hung:
            rows = [(h["comm"], h["pid"], _seconds(h["seconds"]), "yes" if h["explained"] else "NO",
                     h["explanation"]) for h in data.hung]
            out += _md_table(rows, ("task", "pid", "blocked", "explained by the graph", "how")) + [""]
        else:
            out += ["The hung-task detector reported no task.", ""]
        if data.notable:
            out += ["Notable lines:", "", *_fence([_log_line(r) for r in data.notable]), ""]
        out += [f"<details><summary>The last {len(data.tail)} records</summary>", "",
                *_fence([_log_line(r) for r in data.tail]), "", "</details>", ""]
    if data.lockdep is not None:
        out += ["## lockdep's reports", "", *_fence(lockdep_section(data)), ""]
    out += ["## System", ""] + _md_table(data.facts, ("fact", "value")) + [""]
    out += ["## Problems", ""]
    out += [f"- skipped: {_md(str(p))}" for p in snap.problems] or ["None: every task and lock was read."]
    return "\n".join(out) + "\n"


# -- HTML --------------------------------------------------------------------


class StackLexer(RegexLexer):
    """Kernel stack lines: ``#3 __mutex_lock.constprop.0+0x39d [module]``."""

    name = "kdlgdb stack"
    aliases = ["kdlgdb-stack"]
    tokens = {
        "root": [
            (r"[ \t]+", Whitespace),
            (r"\n", Whitespace),
            (r"#\d+", Comment),
            (r"<- \S+(?: \S+)*", Comment.Special),  # the marker: words up to a column gap
            (r"[\w./+-]+\.\w+:\d+", Comment.PreprocFile),  # a source line: kernel/locking/semaphore.c:240
            (r"\+0x[0-9a-fA-F]+", Number.Hex),
            (r"0x[0-9a-fA-F]+", Number.Hex),
            (r"\[[^\]\n]*\]", Name.Namespace),
            (r"[A-Za-z_$.][\w$.]*", Name.Function),
            (r".", Text),
        ]
    }


_CODE = "code"


def _highlight(text: str, lexer: RegexLexer, lines: Sequence[int] = ()) -> str:
    """Pygments HTML for a code block; ``lines`` (1-based) are highlighted."""
    return highlight(text, lexer, HtmlFormatter(cssclass=_CODE, hl_lines=list(lines)))


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
:root { --red: #c0392b; --amber: #b9770e; --green: #1e8449; --ink: #1c2833; --muted: #5d6d7e; --line: #d5dbdb; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1100px; padding: 0 24px 48px; background: #fff; }
header.verdict { margin: 24px 0 12px; padding: 16px 20px; border-radius: 8px; border-left: 10px solid; }
header.deadlock { background: #fdedec; border-color: var(--red); }
header.probable { background: #fef5e7; border-color: var(--amber); }
header.none { background: #e9f7ef; border-color: var(--green); }
header .label { font-size: 13px; font-weight: 700; letter-spacing: .12em; }
header.deadlock .label { color: var(--red); } header.probable .label { color: var(--amber); }
header.none .label { color: var(--green); }
header .summary { font-size: 19px; font-weight: 600; margin: 6px 0 4px; }
header .meta { color: var(--muted); font-size: 13px; margin: 0; }
nav { font-size: 13px; color: var(--muted); margin-bottom: 8px; }
nav a { margin-right: 12px; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
h3 { margin-bottom: 4px; } h4 { margin: 16px 0 4px; }
a { color: #1f618d; text-decoration: none; } a:hover { text-decoration: underline; }
figure.graph { margin: 0; padding: 12px; border: 1px solid var(--line); border-radius: 6px; overflow-x: auto;
               text-align: center; }
figure.graph svg { max-width: 100%; height: auto; }
.legend { font-size: 13px; color: var(--muted); }
.legend span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 22px; height: 10px; vertical-align: middle; margin-right: 4px;
      border: 2px solid; border-radius: 3px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f6; }
table.facts th { width: 180px; }
td.no { color: var(--red); font-weight: 700; } td.yes { color: var(--green); font-weight: 700; }
.conf-inferred { color: var(--amber); font-weight: 600; } .conf-certain { color: var(--green); font-weight: 600; }
.advice { background: #eaf2f8; border-left: 5px solid #2e86c1; padding: 8px 12px; margin: 12px 0; }
.task { margin: 10px 0 16px; }
.task .facts { color: var(--muted); font-size: 14px; margin: 0 0 4px; }
.code pre { margin: 0; padding: 8px 10px; font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace;
            overflow-x: auto; border: 1px solid var(--line); border-radius: 4px; }
.code .hll { background-color: #fadbd8; display: block; font-weight: 700; }
pre.plain { margin: 0; padding: 8px 10px; font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace;
            background: #f8f9f9; border: 1px solid var(--line); border-radius: 4px; overflow-x: auto;
            white-space: pre-wrap; }
details summary { cursor: pointer; color: #1f618d; margin: 8px 0; }
.note { color: var(--muted); font-style: italic; }
ul.problems li { color: var(--amber); }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _css() -> str:
    pygments_css = HtmlFormatter(cssclass=_CODE).get_style_defs("." + _CODE)
    pygments_css = "\n".join(line for line in pygments_css.splitlines() if not line.startswith("pre {"))
    return pygments_css + "\n" + _CSS


def _stack_html(frames: Sequence[tuple[str, Optional[str]]], focus: Optional[int], note: str = "") -> str:
    """A stack (``(Frame.describe(), source)`` pairs) as a highlighted code block; the ``focus`` frame is
    highlighted and marked with ``note``; source lines in a column of their own."""
    if not frames:
        return '<p class="note">no stack frames</p>'
    lines = _frame_rows(frames, focus, note, "<-")
    return _highlight("\n".join(lines), StackLexer(), [focus + 1] if focus is not None else [])


class _Anchors:
    """``id`` attributes, each given once (pids repeat for the idle tasks)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, name: str) -> str:
        if name in self.used:
            return ""
        self.used.add(name)
        return f' id="{_h(name)}"'


def _task_link(graph: WaitForGraph, address: int) -> str:
    task = graph.task(address)
    if task is None:
        return _h(_short(graph, address))
    return f'<a href="#task-{task.pid}">{_h(task.comm)} ({task.pid})</a>'


def _path_html(graph: WaitForGraph, task: int) -> str:
    parts = [_task_link(graph, task)]
    for edge in graph.path(task):
        parts.append(f" &rarr; waits on <b>{_h(_lock(graph, edge.lock))}</b> &rarr; held by ")
        parts.append(_task_link(graph, edge.owner))
        if edge.confidence != CERTAIN:
            parts.append(' <span class="conf-inferred">(inferred)</span>')
    return "".join(parts)


def _task_html(graph: WaitForGraph, task: Task, anchors: _Anchors, role: str = "") -> str:
    out = [f'<div class="task"{anchors.take(f"task-{task.pid}")}>',
           f"<h4>{_h(role)}{_h(task.comm)} (pid {task.pid})</h4>",
           f'<p class="facts">{_h(_task_state(task))}<br>{_h(_holds_wants(graph, task))}']
    if task.wait_evidence:
        out.append(f"<br>how kdlgdb knows it waits: {_h(task.wait_evidence)}")
    out.append("</p>")
    note = "lock slow path" if task.waits_on is not None else "where it is"
    out.append(_stack_html([(f.describe(), f.source) for f in task.frames], _focus(task), note))
    out.append("</div>")
    return "\n".join(out)


def _group_html(group: dict[str, Any], anchors: _Anchors, note: str) -> str:
    marks = "".join(f"<span{anchors.take(f'task-{pid}')}></span>" for pid in group["pids"])
    return (f"<h4>{marks}{_h(_group_head(group))}</h4>"
            + _stack_html(_group_frames(group), group["focus"], note))


def _groups_html(groups: list[dict[str, Any]], anchors: _Anchors, note: str) -> str:
    """Stacks of blocked tasks, grouped, in one collapsed block."""
    if not groups:
        return ""
    tasks = sum(g["count"] for g in groups)
    head = f"stacks of the {_plural(tasks, 'blocked task')}" + (
        f" ({_plural(len(groups), 'distinct stack')})" if len(groups) != tasks else "")
    return ("<details><summary>" + _h(head) + "</summary>"
            + "".join(_group_html(g, anchors, note) for g in groups) + "</details>")


def _html(data: _Data) -> str:
    graph, snap = data.graph, data.snapshot
    anchors = _Anchors()
    title = f"kdlgdb: {headline(data.kind)}" + (f" in {snap.release}" if snap.release else "")
    meta = " · ".join(v for k, v in data.facts if k in ("kernel release", "dump", "live target", "analysed"))
    body = [
        f'<header class="verdict {data.kind}">',
        f'<div class="label">{_h(headline(data.kind))}</div>',
        f'<p class="summary">{_h(data.summary)}</p>',
        f'<p class="meta">{_h(meta)}</p>',
        "</header>",
    ]
    nav = ['<a href="#graph">Wait-for graph</a>']
    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        nav.append(f'<a href="#cycle-{n}">{word} {n}</a>')
    if graph.chains:
        nav.append('<a href="#chains">Wait chains</a>')
    nav += ['<a href="#d-state">D-state tasks</a>', '<a href="#kernel-log">Kernel log</a>',
            '<a href="#system">System</a>', '<a href="#problems">Problems</a>']
    body.append("<nav>" + "".join(nav) + "</nav>")

    body.append('<section id="graph"><h2>Wait-for graph</h2>')
    if data.svg:
        body.append(f'<figure class="graph">{svg_for_html(data.svg)}</figure>')
    else:
        body.append(f'<p class="note">No picture: {_h(data.svg_error)}</p>')
    body.append(
        '<p class="legend"><span><i class="sw" style="border-color:red;background:#ffe0e0"></i>cycle</span>'
        '<span><i class="sw" style="border-color:#e67e22;background:#fdebd0"></i>blocked behind a cycle</span>'
        '<span><i class="sw" style="border-color:#8e44ad;background:#f4e6fa;border-style:double;border-width:4px">'
        "</i>root of a chain</span>"
        '<span><i class="sw" style="border-color:#555;border-style:dashed;height:0;border-width:1px 0 0"></i>'
        "inferred hold</span>"
        "<span>boxes are tasks, ellipses locks; task &rarr; lock: waits on, lock &rarr; task: held by</span></p>"
    )
    body.append("<details><summary>DOT source</summary>" + _highlight(data.dot, GraphvizLexer()) + "</details>")
    body.append("</section>")

    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        who = _and([_short(graph, t) for t in cycle.tasks])
        body.append(f'<section id="cycle-{n}" class="cycle {cycle.verdict}"><h2>{word} {n}: {_h(who)}</h2>')
        body.append(f"<p>{_h(cycle_sentence(cycle, graph))}.</p>")
        body.append("<h3>Edges</h3><table><tr><th>waiter</th><th>waits on</th><th>held by</th>"
                    "<th>confidence</th><th>evidence</th></tr>")
        for e in cycle.edges:
            lock = graph.lock(e.lock)
            kind = f"{lock.type} {e.lock:#x}" if lock else f"{e.lock:#x}"
            body.append(
                f"<tr><td>{_task_link(graph, e.waiter)}</td><td><b>{_h(_lock(graph, e.lock))}</b><br>"
                f"<small>{_h(kind)}</small></td><td>{_task_link(graph, e.owner)}</td>"
                f'<td class="conf-{_h(e.confidence)}">{_h(e.confidence)}</td><td>{_h(e.evidence)}</td></tr>'
            )
        body.append("</table><h3>Tasks</h3>")
        for address in cycle.tasks:
            task = graph.task(address)
            if task is not None:
                body.append(_task_html(graph, task, anchors))
        if cycle.blocked_behind:
            body.append(f"<h3>Blocked behind it ({len(cycle.blocked_behind)})</h3><ul>")
            body += [f"<li>{_path_html(graph, t)}</li>" for t in cycle.blocked_behind]
            body.append("</ul>")
            body.append(_groups_html(_blocked_groups(graph, cycle.blocked_behind), anchors, "lock slow path"))
        body.append(f'<div class="advice"><b>Lock order:</b> {_h(cycle.advice)}</div></section>')

    if graph.chains:
        body.append('<section id="chains"><h2>Wait chains (no cycle)</h2>')
        for n, chain in enumerate(graph.chains, 1):
            body.append(f'<div class="chain" id="chain-{n}"><h3>Chain {n}</h3>')
            body.append(f"<p>{_h(chain_sentence(chain, graph))}.</p><ul>")
            blocked = [t for t in chain.tasks if t != chain.root] + chain.joined
            body += [f"<li>{_path_html(graph, t)}</li>" for t in blocked]
            body.append("</ul>")
            body.append(_groups_html(_blocked_groups(graph, blocked), anchors, "lock slow path"))
            root = graph.task(chain.root) if chain.root is not None else None
            if root is not None:
                body.append(_task_html(graph, root, anchors, role="Root: "))
            body.append("</div>")
        body.append("</section>")

    body.append('<section id="d-state"><h2>D-state tasks waiting on no known lock</h2>')
    if not data.groups:
        body.append('<p class="note">None: every task in D state is in a cycle or chain above.</p>')
    for group in data.groups:
        body.append(_group_html(group, anchors, "where they are"))
    body.append("</section>")

    body.append('<section id="kernel-log"><h2>Kernel log</h2>')
    if not data.log_count:
        body.append(f'<p class="note">No kernel log: {_h(data.log_note or "not read")}.</p>')
    else:
        body.append(f"<p>{data.log_count} records.</p>")
        if data.hung:
            body.append("<h3>Tasks the hung-task detector reported</h3><table><tr><th>task</th><th>blocked</th>"
                        "<th>explained by the graph</th><th>how</th></tr>")
            for h in data.hung:
                how = _h(h["explanation"])
                if h["anchor"]:
                    how = f'<a href="#{_h(h["anchor"])}">{how}</a>'
                yes = "yes" if h["explained"] else "no"
                body.append(f"<tr><td>{_h(h['comm'])} ({h['pid']})</td><td>{_h(_seconds(h['seconds']))}</td>"
                            f'<td class="{yes}">{yes}</td><td>{how}</td></tr>')
            body.append("</table>")
        else:
            body.append("<p>The hung-task detector reported no task.</p>")
        if data.notable:
            body.append("<h3>Notable lines</h3><pre class=\"plain\">"
                        + _h("\n".join(_log_line(r) for r in data.notable)) + "</pre>")
        body.append(f"<details><summary>The last {len(data.tail)} records</summary><pre class=\"plain\">"
                    + _h("\n".join(_log_line(r) for r in data.tail)) + "</pre></details>")
    body.append("</section>")

    if data.lockdep is not None:
        body.append('<section id="lockdep"><h2>lockdep\'s reports</h2><pre class="plain">'
                    + _h("\n".join(lockdep_section(data))) + "</pre></section>")
    body.append('<section id="system"><h2>System</h2><table class="facts">')
    body += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in data.facts]
    body.append("</table></section>")

    body.append('<section id="problems"><h2>Problems</h2>')
    if snap.problems:
        body.append('<ul class="problems">' + "".join(f"<li>skipped: {_h(p)}</li>" for p in snap.problems) + "</ul>")
    else:
        body.append('<p class="note">None: every task and lock was read.</p>')
    body.append("</section>")
    body.append(f"<footer>kdlgdb report, format {REPORT_VERSION}</footer>")

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(title)}</title>\n<style>{_css()}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
