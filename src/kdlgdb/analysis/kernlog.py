"""What the kernel itself said: hung-task reports, lockdep splats, BUG/WARNING/Oops/panic lines.

Pure functions over :class:`~kdlgdb.kernel.printk.LogRecord` lists, as
:func:`kdlgdb.kernel.printk.kernel_log` returns them. A record's text may hold
several lines (embedded newlines, ``pr_cont``); every function here looks at
each line, and keeps or returns whole records.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from ..kernel.printk import LogRecord

__all__ = ["HungTask", "hung_tasks", "notable", "panic_message", "grep", "format_record", "NOTABLE"]

# The hung-task detector (kernel/hung_task.c): "INFO: task %s:%d blocked for
# more than %ld seconds." A comm may hold spaces and colons: the pid is the
# last ":<digits>" before " blocked".
_HUNG = re.compile(r"INFO: task (?P<comm>.*):(?P<pid>\d+) blocked for more than (?P<seconds>\d+) seconds\.")

# panic() (kernel/panic.c): "Kernel panic - not syncing: %s", and at its end "---[ end Kernel panic - not syncing: %s ]---".
_PANIC = re.compile(r"Kernel panic - not syncing: ?(?P<message>.*?)(?: \]---)?\s*$")

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


def notable(records: Iterable[LogRecord]) -> list[LogRecord]:
    """The records that matter for a hang: hung-task reports, lockdep splats, BUG, WARNING, Oops, panic.

    Only the headline records are kept (``INFO: task ...``, ``WARNING: possible
    circular locking dependency detected``, ``*** DEADLOCK ***``, ``BUG: ...``),
    not the call traces printed after them.
    """
    return [r for r in records if any(rx.search(line) for line in _lines(r) for _, rx in NOTABLE)]


def panic_message(records: Iterable[LogRecord]) -> Optional[str]:
    """The message of the first ``Kernel panic - not syncing: MESSAGE`` line, or None when the kernel did not panic."""
    for record in records:
        for line in _lines(record):
            m = _PANIC.search(line)
            if m:
                return m["message"] or "(no message)"
    return None


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
