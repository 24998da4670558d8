"""The report's plain facts and sentences, shared by every format: the verdict, the summary sentence,
stack groups, hung-task explanations, system facts, and :class:`_Data`, what each format renders.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Iterable, Optional, Sequence, Union


from ..analysis import kernlog
from ..analysis.graph import Chain, Cycle, describe_blocked_in, Edge, FLUSHED_TYPES, interesting_frame, WaitForGraph
from ..errors import KdlError
from ..model import CERTAIN, Snapshot, Task, task_name
from ..target.base import DEBUG_INFO
from .words import and_list as _and, first_names, group_tasks, no_cycle, plural as _plural, task_cell as _cell, task_label as _short, undecoded  # noqa: F401  (_cell: tests)
from .dot import dots_to_svgs, render_dot, render_dots
from .text import format_last_ran, lockdep_lines


FORMATS = ("html", "md", "json", "txt")


REPORT_VERSION = 1


MAX_LOG_LINES = 300  # notable kernel log lines shown (the last ones)


TAIL_LINES = 40  # the log's last records, shown for context (the hung-task detector's call traces)


MAX_NAMED = 3  # tasks named in a sentence before "and N more"


_HEADLINES = {"deadlock": "DEADLOCK", "probable": "PROBABLE DEADLOCK", "none": "NO DEADLOCK"}
UNSURE = "NO LOCK CYCLE FOUND"  # the headline of "none" while some D task's wait is not decoded


LogLike = Union[dict, Any]  # a dict or an object with seq, ts_ns, level, text (kdlgdb.kernel.printk.LogRecord)


HungLike = Union[dict, Any]  # a dict or an object with comm, pid, seconds, seq (kdlgdb.analysis.kernlog.HungTask)


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


def headline(kind: str, undecoded_count: int = 0) -> str:
    """``DEADLOCK``, ``PROBABLE DEADLOCK`` or ``NO DEADLOCK`` for a :func:`verdict`; ``NO LOCK CYCLE FOUND``
    instead of ``NO DEADLOCK`` while ``undecoded_count`` D tasks wait on something kdlgdb did not decode."""
    return UNSURE if kind == "none" and undecoded_count else _HEADLINES[kind]


def verdict_class(kind: str, undecoded_count: int = 0) -> str:
    """The HTML header's class: the verdict, or ``unsure`` (not green) for no cycle with undecoded D tasks."""
    return "unsure" if kind == "none" and undecoded_count else kind


def _task(graph: WaitForGraph, address: int) -> str:
    return graph.task_name(address)


def _comm(graph: WaitForGraph, address: int) -> str:
    """``"kdl_b"``: the command alone, quoted, where the sentence named the task with its pid already."""
    task = graph.task(address)
    return f'"{task.comm}"' if task else f"task {address:#x}"


def _lock(graph: WaitForGraph, address: int) -> str:
    lock = graph.lock(address)
    return lock.name() if lock else f"lock {address:#x}"


def _some(graph: WaitForGraph, tasks: Sequence[int]) -> str:
    return _and(first_names([_task(graph, t) for t in tasks], MAX_NAMED))


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
    """One cycle in words, e.g. '"kdl_m1" (pid 92) and "kdl_m2" (pid 93) deadlock on m1 and m2 [kdl_mutex]: ABBA order'."""
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
    lost = len(undecoded(snapshot, graph))
    said = no_cycle(lost)
    said = said[:1].upper() + said[1:]  # "No deadlock", or "No lock cycle found; 3 D tasks with undecoded waits"
    if not graph.chains:
        return f"{said}: no task waits on a lock" + ("; the D tasks are below." if lost else ".")
    if len(graph.chains) == 1:
        return f"{said}: " + chain_sentence(graph.chains[0], graph) + "."
    blocked = sum(_blocked_in(c) for c in graph.chains)
    largest = max(graph.chains, key=_blocked_in)
    return (f"{said}: {_plural(blocked, 'blocked task')} in {len(graph.chains)} chains; "
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
    result = []
    for stack, members in group_tasks(tasks, lambda task: tuple(f.describe() for f in task.frames)):
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
    return stack_groups(undecoded(snapshot, graph))


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
            entry["explanation"] = f'pid {pid} is now "{task.comm}", not "{comm}": the hung task has exited'
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


def header_times(snapshot: Snapshot, facts: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's two times, labelled: when the dump was taken (the kernel's CRASHTIME, else the dump file's
    time, with the uptime then) and when kdlgdb analysed it: ``[("dump taken", "2026-12-05 10:55:01 UTC (the
    kernel's CRASHTIME), 2m 03s after boot"), ("analysed", "2026-12-05 14:20:07 UTC")]``; a live kernel's first
    is ``("read live", "2m 03s after boot")``."""
    uptime = f"{format_uptime(snapshot.uptime_ns)} after boot" if snapshot.uptime_ns is not None else ""
    if snapshot.dump.startswith("live ") or facts.get("remote"):
        taken = ("read live", uptime or "uptime unknown")
    elif snapshot.crash_time is not None:
        taken = ("dump taken", f"{format_utc(snapshot.crash_time)} (the kernel's CRASHTIME)")
    elif facts.get("dump_mtime") is not None:
        taken = ("dump taken", f"{format_utc(facts['dump_mtime'])} (the dump file's time)")
    else:
        taken = ("dump taken", "unknown (no CRASHTIME, no file time)")
    if uptime and taken[0] == "dump taken":
        taken = (taken[0], f"{taken[1]}, {uptime}")
    return [taken, ("analysed", str(facts.get("analysed") or "unknown"))]


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
        ("types and symbols", DEBUG_INFO.get(snapshot.debug_info, snapshot.debug_info)),
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
    svgs: list[str]  # the picture: one SVG per connected part of the graph
    svg_error: str
    groups: list[dict[str, Any]]
    hung: list[dict[str, Any]]
    notable: list[dict[str, Any]]
    tail: list[dict[str, Any]]
    log_count: int
    log_note: str
    facts: list[tuple[str, str]]
    raw_facts: dict[str, Any]
    times: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # the header's: dump taken, analysed
    undecoded: int = 0  # D tasks the graph does not account for
    lockdep: Optional[kernlog.LockdepFindings] = None  # on a kernel with lockdep: its reports in the log


def _data(snapshot: Snapshot, graph: WaitForGraph, log: Sequence[LogLike], hung: Sequence[HungLike],
          notable: Sequence[LogLike], facts: Optional[dict[str, Any]], svg: Optional[str], want_svg: bool) -> _Data:
    facts = dict(facts or {})
    dot = render_dot(snapshot, graph)
    svg_error = ""
    svgs = [svg] if svg is not None else []
    if svg is None and want_svg:
        try:
            svgs = dots_to_svgs(render_dots(snapshot, graph))
        except KdlError as e:
            svg_error = str(e)
    records = [log_record(r) for r in notable]
    log_note = str(facts.get("log_note") or "")
    return _Data(
        snapshot=snapshot, graph=graph, kind=verdict(graph), summary=summary_sentence(snapshot, graph), dot=dot,
        svgs=svgs, svg_error=svg_error, groups=d_state_groups(snapshot, graph),
        hung=explain_hung(snapshot, graph, hung), notable=records[-MAX_LOG_LINES:],
        tail=[log_record(r) for r in log[-TAIL_LINES:]], log_count=len(log),
        log_note=log_note, facts=_facts(snapshot, facts, len(log), log_note), raw_facts=facts,
        times=header_times(snapshot, facts),
        lockdep=_lockdep(snapshot, graph, log), undecoded=len(undecoded(snapshot, graph)),
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
    return f"{task.name()}, {_task_state(task)}"


def _holds_wants(graph: WaitForGraph, task: Task) -> str:
    held = ", ".join(_lock(graph, lk) for lk in graph.holds(task.address)) or "nothing known"
    wanted = _lock(graph, task.waits_on) if task.waits_on is not None else "no lock"
    blocked = describe_blocked_in(task) if task.waits_on is None else None
    if blocked is not None and task.blocked_in is not None:  # what it waits for instead, and how we know
        wanted += f"; {blocked}" + (f" ({task.blocked_in.evidence})" if task.blocked_in.evidence else "")
    return f"holds {held}; wants {wanted}"


def _group_head(group: dict[str, Any]) -> str:
    named = [task_name(c, p) for c, p in zip(group["comms"], group["pids"])]
    return f"{_plural(group['count'], 'task')}: {', '.join(first_names(named, 8))}"


def _group_frames(group: dict[str, Any]) -> list[tuple[str, Optional[str]]]:
    sources = group.get("sources") or [None] * len(group["stack"])
    return list(zip(group["stack"], sources))


def _group_lines(group: dict[str, Any], note: str) -> list[str]:
    lines = _frame_rows(_group_frames(group), group["focus"], note, "<--", indent="  ")
    return lines or ["    (no stack frames)"]


def _seconds(value: Any) -> str:
    return f"> {value}s" if value is not None else "?"
