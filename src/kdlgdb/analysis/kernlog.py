"""What the kernel itself said: hung-task reports, lockdep splats, BUG/WARNING/Oops/panic lines.

Pure functions over :class:`~kdlgdb.kernel.printk.LogRecord` lists, as
:func:`kdlgdb.kernel.printk.kernel_log` returns them. A record's text may hold
several lines (embedded newlines, ``pr_cont``); every function here looks at
each line, and keeps or returns whole records.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

from ..kernel.printk import LogRecord, panic_message
from ..model import Snapshot

__all__ = ["HungTask", "hung_tasks", "notable", "panic_message", "grep", "format_record", "NOTABLE",
           "LockdepLock", "LockdepReport", "lockdep_reports", "lockdep_turned_off", "explained_cycles",
           "LockdepFindings", "lockdep_findings", "as_records", "hung_task_stacks"]

# The hung-task detector (kernel/hung_task.c): "INFO: task %s:%d blocked for
# more than %ld seconds." A comm may hold spaces and colons: the pid is the
# last ":<digits>" before " blocked".
_HUNG = re.compile(r"INFO: task (?P<comm>.*):(?P<pid>\d+) blocked for more than (?P<seconds>\d+) seconds\.")

#: (what, pattern) for the lines :func:`notable` keeps; searched in each line of a record.
NOTABLE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("hung task", _HUNG),
    # v6.16+ with CONFIG_DETECT_HUNG_TASK_BLOCKER: "INFO: task A:1 is blocked on a mutex likely owned by task B:2."
    ("hung task blocker", re.compile(r"INFO: task .*:\d+ is blocked on an? ")),
    ("lockdep", re.compile(r"possible circular locking dependency detected|\*\*\* DEADLOCK \*\*\*|possible recursive locking")),
    ("BUG", re.compile(r"\bBUG: ")),
    ("WARNING", re.compile(r"\bWARNING: ")),
    ("Oops", re.compile(r"\bOops\b")),
    ("panic", re.compile(r"Kernel panic")),
)


@dataclass(frozen=True)
class HungTask:
    """One report of the hung-task detector: ``comm`` (pid ``pid``) was in D state for ``seconds``.

    ``seq`` is the sequence number of the log record that says so.
    """

    comm: str
    pid: int
    seconds: int
    seq: int


def _lines(record: LogRecord) -> list[str]:
    return record.text.split("\n")


def hung_tasks(records: Iterable[LogRecord]) -> list[HungTask]:
    """Every ``INFO: task NAME:PID blocked for more than N seconds.`` report, in log order.

    A task reported twice (the detector repeats, up to ``hung_task_warnings``) appears twice.
    """
    found: list[HungTask] = []
    for record in records:
        for line in _lines(record):
            m = _HUNG.search(line)
            if m:
                found.append(HungTask(m["comm"], int(m["pid"]), int(m["seconds"]), record.seq))
    return found


# A frame of a stack the kernel prints (show_trace_log_lvl): "  func+0x27/0x50 [mod]"; "? " marks a word the
# unwinder did not vouch for (a stale return address); "<IRQ>", "<TASK>", "</EOI>" mark stacks.
_TRACE_FRAME = re.compile(r"^\s*(?P<guess>\? )?(?P<func>[\w.$]+\+0x[0-9a-f]+)/0x[0-9a-f]+(?P<module> \[[^\]]+\])?\s*$")
_TASK_LINE = re.compile(r"^task:(?P<comm>.*?)\s+state:(?P<state>\S+).*\bpid:\s*(?P<pid>\d+)")


def hung_task_stacks(records: Iterable[LogRecord]) -> dict[int, list[str]]:
    """pid -> the frames of the first hung-task report of that task, as the kernel's unwinder vouched for them
    (the lines without "? "), each as ``func+0x27 [module]``: the kernel's own view of the task's stack."""
    found: dict[int, list[str]] = {}
    pid: Optional[int] = None
    frames: list[str] = []
    for record in records:
        for line in _lines(record):
            m = _TASK_LINE.search(line)
            if m:
                # Only a blocked task's (the hung-task detector's): an RCU stall prints a running task the same
                # way, with a stack of that moment, not of the dump's.
                pid, frames = (int(m["pid"]) if m["state"] == "D" else None), []
                continue
            if pid is None:
                continue
            if "</TASK>" in line:
                found.setdefault(pid, frames)
                pid = None
                continue
            f = _TRACE_FRAME.match(line)
            if f and not f["guess"]:
                frames.append(f["func"] + (f["module"] or ""))
    return found


def notable(records: Iterable[LogRecord]) -> list[LogRecord]:
    """The records that matter for a hang: hung-task reports, lockdep splats, BUG, WARNING, Oops, panic.

    Only the headline records are kept (``INFO: task ...``, ``WARNING: possible
    circular locking dependency detected``, ``*** DEADLOCK ***``, ``BUG: ...``),
    not the call traces printed after them.
    """
    return [r for r in records if any(rx.search(line) for line in _lines(r) for _, rx in NOTABLE)]


def grep(records: Iterable[LogRecord], pattern: Union[str, re.Pattern[str]]) -> list[LogRecord]:
    """The records with a line that matches ``pattern`` (``re.search``; ``^`` and ``$`` match at each line).

    ``re.error`` for a bad pattern string.
    """
    rx = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
    return [r for r in records if rx.search(r.text)]


def format_record(record: LogRecord) -> str:
    """The record as the kernel's console and ``dmesg`` print it: ``[   12.345678] text``.

    Each line of a multi-line record gets the same timestamp prefix.
    """
    prefix = f"[{record.ts_ns // 1_000_000_000:5d}.{record.ts_ns % 1_000_000_000 // 1000:06d}] "
    return "\n".join(prefix + line for line in _lines(record))


# lockdep's reports (kernel/locking/lockdep.c). Each starts with a "WARNING: <what>" headline between lines of
# '=' or '-'; lockdep prints every lock as "<lockdep_map address> (<class>){<usage>}-{<wait types>}, at: <site>",
# the map address being the lock's dep_map (a pseudo-lock's own map: "(work_completion)(&w)").
LOCKDEP_KINDS = {
    "possible circular locking dependency detected": "circular",
    "possible recursive locking detected": "recursive",
    "inconsistent lock state": "inconsistent",
    "bad unlock balance detected!": "bad unlock",
}
_LOCKDEP_HEAD = re.compile(r"WARNING: (?P<what>" + "|".join(re.escape(w) for w in LOCKDEP_KINDS) + r")")
_LOCKDEP_LOCK = re.compile(r"^\s*(?:#\d+: )?(?P<map>[0-9a-f]{8,16}) \((?P<name>.*)\)\{[^}]*\}(?:-\{[^}]*\})?"
                           r"(?:, at: (?P<site>\S+(?: \[\S+\])?))?")
_LOCKDEP_TASK = re.compile(r"^\s*(?P<comm>.+)/(?P<pid>\d+)(?: \[[^]]*\])? (?:is trying to (?P<doing>acquire|release) lock|takes)")
_LOCKDEP_RELEASE = re.compile(r"is trying to release lock \((?P<name>.*)\) at:")
_LOCKDEP_CHAIN = re.compile(r"^\s*-> #(?P<n>\d+) \((?P<name>.*)\)\{[^}]*\}")
_LOCKDEP_OFF = re.compile(r"INFO: lockdep is turned off")
# Where one report ends: its call trace's header, or the next report.
_LOCKDEP_END = re.compile(r"^\s*stack backtrace:|WARNING: |INFO: task .* blocked for more than")


@dataclass
class LockdepLock:
    """One lock a lockdep report names: its ``lockdep_map`` address (None where only the class is printed),
    class name, where it was taken, and its ``role``: "acquiring" (what the task was trying to take),
    "held" (what it held), "releasing", "chain" (a class in the dependency chain)."""

    name: str
    role: str
    map: Optional[int] = None
    site: Optional[str] = None


@dataclass
class LockdepReport:
    """A lockdep report in the kernel log: ``kind`` (circular, recursive, inconsistent, bad unlock), the
    headline, when (ns since boot), the task that triggered it, the locks it names, the "Possible unsafe
    locking scenario" lines, and ``seq`` of its first record."""

    kind: str
    headline: str
    ts_ns: int
    seq: int
    comm: Optional[str] = None
    pid: Optional[int] = None
    locks: list[LockdepLock] = field(default_factory=list)
    scenario: list[str] = field(default_factory=list)

    def classes(self) -> list[str]:
        """The lock classes it names, each once, in order."""
        return list(dict.fromkeys(lock.name for lock in self.locks))

    def summary(self) -> str:
        """"lockdep warned at 1.920 s: possible circular locking dependency detected (kdl_m2/161: m1, m2)"."""
        who = f"{self.comm}/{self.pid}: " if self.comm is not None else ""
        classes = ", ".join(self.classes())
        return (f"lockdep warned at {self.ts_ns / 1e9:.3f} s: {self.headline}"
                + (f" ({who}{classes})" if who or classes else ""))


def _log_lines(records: Iterable[LogRecord]) -> list[tuple[LogRecord, str]]:
    return [(record, line) for record in records for line in _lines(record)]


def lockdep_reports(records: Iterable[LogRecord]) -> list[LockdepReport]:
    """Every lockdep report in the log, in order, with the locks, task and scenario it names."""
    lines = _log_lines(records)
    reports: list[LockdepReport] = []
    i = 0
    while i < len(lines):
        record, line = lines[i]
        head = _LOCKDEP_HEAD.search(line)
        i += 1
        if head is None:
            continue
        report = LockdepReport(LOCKDEP_KINDS[head["what"]], head["what"], record.ts_ns, record.seq)
        role, in_scenario = "acquiring", False
        while i < len(lines) and not _LOCKDEP_END.search(lines[i][1]):
            text = lines[i][1]
            i += 1
            task = _LOCKDEP_TASK.search(text)
            if task is not None and report.comm is None:
                report.comm, report.pid = task["comm"].strip(), int(task["pid"])
                role = {"acquire": "acquiring", "release": "releasing", None: "held"}[task["doing"]]
                released = _LOCKDEP_RELEASE.search(text)  # "... is trying to release lock (m1) at:"
                if released is not None:
                    report.locks.append(LockdepLock(released["name"], "releasing"))
                continue
            if "already holding" in text or "held by" in text:
                role = "held"
            elif "Possible unsafe locking scenario" in text:
                in_scenario = True
                continue
            elif "*** DEADLOCK ***" in text:
                in_scenario = False
            chain = _LOCKDEP_CHAIN.search(text)
            if chain is not None:
                report.locks.append(LockdepLock(chain["name"], "chain"))
                continue
            lock = _LOCKDEP_LOCK.search(text)
            if lock is not None:
                report.locks.append(LockdepLock(lock["name"], role, int(lock["map"], 16), lock["site"]))
                continue
            if in_scenario and text.strip() and not set(text.strip()) <= {"-"}:
                report.scenario.append(text.rstrip())
        reports.append(report)
    return reports


def lockdep_turned_off(records: Iterable[LogRecord]) -> bool:
    """Whether the log says lockdep turned itself off (``INFO: lockdep is turned off.``, printed where it would
    list held locks once its first report disabled it): later inversions were not checked."""
    return any(_LOCKDEP_OFF.search(line) for _, line in _log_lines(records))


def explained_cycles(reports: Sequence[LockdepReport], snapshot: Snapshot, cycles: Sequence[Any]) -> list[Optional[int]]:
    """For each report, the index of the cycle it explains (None when none): a cycle one of whose locks the
    report names, by its lockdep_map address (each lock's held_locks entries give it), or by its class name
    together with a task of the cycle. ``cycles`` are :class:`~kdlgdb.analysis.graph.Cycle`s."""
    lock_of_map: dict[int, int] = {}
    class_of_lock: dict[int, set[str]] = {}
    for task in snapshot.tasks:
        for entry in task.held or ():
            if entry.lock is not None:
                lock_of_map[entry.instance] = entry.lock
                class_of_lock.setdefault(entry.lock, set()).add(entry.name)
    pids = {task.address: task.pid for task in snapshot.tasks}
    found: list[Optional[int]] = []
    for report in reports:
        by_map = {lock_of_map[lock.map] for lock in report.locks if lock.map in lock_of_map}
        classes = set(report.classes())
        match = None
        for i, cycle in enumerate(cycles):
            named = {c for lock in cycle.locks for c in class_of_lock.get(lock, ())}
            if by_map & set(cycle.locks) or (classes & named and report.pid in {pids.get(t) for t in cycle.tasks}):
                match = i
                break
        found.append(match)
    return found


@dataclass
class LockdepFindings:
    """lockdep's reports in the log, which cycle each explains (an index, or None), and whether the log says
    lockdep turned itself off."""

    reports: list[LockdepReport]
    explains: list[Optional[int]]
    turned_off: bool

    def for_cycle(self, index: int) -> list[LockdepReport]:
        return [r for r, c in zip(self.reports, self.explains) if c == index]

    def alone(self) -> list[LockdepReport]:
        return [r for r, c in zip(self.reports, self.explains) if c is None]


def lockdep_findings(records: Sequence[LogRecord], snapshot: Snapshot, cycles: Sequence[Any]) -> LockdepFindings:
    reports = lockdep_reports(records)
    return LockdepFindings(reports, explained_cycles(reports, snapshot, cycles), lockdep_turned_off(records))


def as_records(log: Iterable[Any]) -> list[LogRecord]:
    """Log records from dicts (a report bundle's log) or objects with ``seq``, ``ts_ns``, ``level``, ``text``."""
    def get(record: Any, name: str, default: Any) -> Any:
        return record.get(name, default) if isinstance(record, dict) else getattr(record, name, default)

    return [record if isinstance(record, LogRecord) else
            LogRecord(int(get(record, "seq", 0) or 0), int(get(record, "ts_ns", 0) or 0), int(get(record, "level", 6) or 0),
                      str(get(record, "text", "") or "")) for record in log]
