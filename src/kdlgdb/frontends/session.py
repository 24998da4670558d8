"""What the front ends share: the kernel they look at (:class:`Session`) and the post-mortem bundle.

A :class:`Session` reads the kernel once: its :class:`~kdlgdb.kernel.layout.Kernel` (KASLR, layouts) and
its Snapshot are kept until :meth:`Session.forget` (a new vmlinux or core, a live target that ran). The gdb
commands (:mod:`kdlgdb.frontends.gdb`) and the crash commands (:mod:`kdlgdb.frontends.crash`) each keep one.

A *bundle* is what a batch gdb hands the ``kdlgdb`` process (and what ``kd-report`` renders in place), one
JSON file::

    {"kdlgdb_bundle": 1,
     "snapshot": Snapshot.to_dict(),
     "log": [{"seq", "ts_ns", "level", "text", "caller"}, ...],   # the printk ring buffer
     "facts": {"dump", "dump_mtime", "vmlinux", "debugger", "kdlgdb", "analysed", "log_note", "log_problems", ...}}

Its version is the model's: :data:`BUNDLE_SCHEMAS` pins the shape of the model's dataclasses for each
version (``tests/test_session.py`` fails when the model changes and the version does not), and
:data:`CONVERTERS` brings an older bundle up to date when it is read.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from ..analysis import kernlog
from ..analysis.graph import WaitForGraph
from ..errors import KdlError
from ..kernel.collect import Progress, collect
from ..kernel.layout import Kernel
from ..kernel.printk import LogRecord, kernel_log
from ..kernel.stack import add_source_lines
from ..model import Problem, Snapshot
from ..render.report import FORMATS, headline, log_record, render_report, summary_sentence, undecoded, verdict
from ..target.base import Target
from . import commands
from ..target.replay import RecordingTarget

__all__ = [
    "Session", "BUNDLE_VERSION", "BUNDLE_SCHEMAS", "CONVERTERS", "model_schema", "Bundle", "make_facts", "file_time",
    "read_kernel_log", "log_findings", "with_log_facts", "save_bundle", "load_bundle", "render", "status",
    "summary_line", "format_for", "write_report", "EXTENSIONS",
]

BUNDLE_VERSION = 4
#: The shape of the model (:func:`model_schema`) each bundle version was written with.
BUNDLE_SCHEMAS = {1: "57a6b1df", 2: "c237cd2c", 3: "fd195705", 4: "455d2c35"}


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 added fields that have defaults: a lock's ``naming`` (a heap object, per-CPU variable or stack
    that holds it) and a task's ``unwinder``, ``unwind_error`` and interrupted frames. A version-1 bundle reads
    as a snapshot without them: names by address, stacks said to come from a scan."""
    return {**data, "kdlgdb_bundle": 2}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 added a task's ``wait_source`` (which source decided the lock it waits on), default "": a
    version-2 bundle reads as a snapshot that does not say; and the snapshot's ``debug_info`` (``"btf"`` when the
    dump's own BTF and kallsyms gave the types and symbols): every version-2 bundle was written by gdb or crash
    from the vmlinux, ``"dwarf"``, the default."""
    return {**data, "kdlgdb_bundle": 3}


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 added a frame's ``guessed`` (found by the frame-pointer guess in code ORC has no entry for),
    default False: a version-3 bundle's frames read as unwound exactly, as version 3 took them."""
    return {**data, "kdlgdb_bundle": 4}


#: version -> a function turning a bundle dict of that version into one of the next version.
CONVERTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}

EXTENSIONS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".txt": "txt"}


def model_schema(root: type = Snapshot) -> str:
    """A short hash of the fields (names and types) of ``root`` and every dataclass its fields name: it changes
    when a field of the model is added, renamed, removed or retyped."""
    seen: dict[str, list[str]] = {}
    todo = [root]
    while todo:
        cls = todo.pop()
        if cls.__name__ in seen:
            continue
        hints = typing.get_type_hints(cls)
        seen[cls.__name__] = [f"{f.name}:{hints[f.name]}" for f in dataclasses.fields(cls)]
        for f in dataclasses.fields(cls):
            for arg in _types_in(hints[f.name]):
                if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                    todo.append(arg)
    text = json.dumps(seen, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _types_in(hint: Any) -> list[Any]:
    out = [hint]
    for arg in typing.get_args(hint):
        out.extend(_types_in(arg))
    return out


# -- the bundle ------------------------------------------------------------------


@dataclass
class Bundle:
    """What gdb hands the report: the snapshot, the kernel log records (dicts) and facts about the source."""

    snapshot: Snapshot
    log: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kdlgdb_bundle": BUNDLE_VERSION, "snapshot": self.snapshot.to_dict(), "log": self.log,
                "facts": self.facts}

    @classmethod
    def from_dict(cls, data: Any) -> "Bundle":
        """The bundle in ``data``, brought up to :data:`BUNDLE_VERSION` by :data:`CONVERTERS` if it is older;
        KdlError when it is not a kdlgdb bundle of a version this code reads."""
        if not isinstance(data, dict) or "kdlgdb_bundle" not in data:
            raise KdlError("not a kdlgdb bundle (no 'kdlgdb_bundle' key)")
        while data["kdlgdb_bundle"] in CONVERTERS and data["kdlgdb_bundle"] != BUNDLE_VERSION:
            data = CONVERTERS[data["kdlgdb_bundle"]](dict(data))
        if data["kdlgdb_bundle"] != BUNDLE_VERSION:
            raise KdlError(f"kdlgdb bundle version {data['kdlgdb_bundle']}; this kdlgdb reads version {BUNDLE_VERSION}")
        try:
            snapshot = Snapshot.from_dict(data["snapshot"])
        except (KeyError, TypeError) as e:
            raise KdlError(f"the bundle's snapshot is damaged: {type(e).__name__}: {e}") from None
        return cls(snapshot, [log_record(r) for r in data.get("log") or []], dict(data.get("facts") or {}))


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"kdlgdb {version('kdlgdb')}"
    except Exception:  # not installed (run from a checkout): the name is enough
        return "kdlgdb"


def file_time(path: Optional[str]) -> Optional[float]:
    """The modification time of the file ``path`` (seconds since the epoch), or None."""
    try:
        return os.path.getmtime(path) if path else None
    except OSError:
        return None


def make_facts(dump: Optional[str] = None, remote: Optional[str] = None, vmlinux: Optional[str] = None,
               debugger: Optional[str] = None, **more: Any) -> dict[str, Any]:
    """Facts about where a snapshot came from, for the report's system section (None values left out).

    ``dump_mtime`` is the dump file's time: the crash time shown when the dump has no CRASHTIME.
    """
    facts: dict[str, Any] = {
        "dump": dump,
        "dump_mtime": file_time(dump),
        "remote": remote,
        "vmlinux": vmlinux,
        "debugger": debugger,
        "kdlgdb": _version(),
        "analysed": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        **more,
    }
    return {k: v for k, v in facts.items() if v is not None}


def read_kernel_log(kernel: Kernel) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The kernel log as record dicts, and facts about reading it (``log_note`` why it is empty,
    ``log_problems`` records skipped).

    Never raises: the log is the report's supporting evidence, so a log that cannot be
    read (or a bug in reading it) costs that section only, and the report says why.
    """
    problems: list[Problem] = []
    try:
        records = kernel_log(kernel, problems)
    except KdlError as e:
        return [], {"log_note": f"the kernel log could not be read: {e}"}
    except Exception as e:  # a bug in the log reader must not cost the deadlock report
        return [], {"log_note": f"kdlgdb failed to read the kernel log: internal error: {type(e).__name__}: {e}"}
    facts: dict[str, Any] = {}
    if problems:
        facts["log_problems"] = [str(p) for p in problems]
    if not records:
        facts["log_note"] = "the kernel log is empty"
    return [log_record(r) for r in records], facts


def _records(log: Iterable[dict[str, Any]]) -> list[LogRecord]:
    return [LogRecord(r["seq"], r["ts_ns"], r["level"] if r["level"] is not None else 6, r["text"],
                      str(r.get("caller") or "")) for r in log]


def log_findings(log: Sequence[dict[str, Any]]) -> tuple[list[kernlog.HungTask], list[LogRecord]]:
    """(tasks the hung-task detector reported, notable records) of a bundle's log."""
    records = _records(log)
    return kernlog.hung_tasks(records), kernlog.notable(records)


def with_log_facts(snapshot: Snapshot, log: Sequence[dict[str, Any]]) -> Snapshot:
    """``snapshot`` with what only the kernel log tells (the panic message) filled in where it is missing."""
    if snapshot.panic is not None or not log:
        return snapshot
    panic = kernlog.panic_message(_records(log))
    return dataclasses.replace(snapshot, panic=panic) if panic is not None else snapshot


def save_bundle(bundle: Bundle, path: str) -> None:
    """Write ``bundle`` to ``path`` as JSON (via a temporary file, so a reader never sees half of it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(bundle.to_dict(), f, default=str)
    os.replace(tmp, path)


def load_bundle(path: str) -> Bundle:
    """The bundle in the file ``path``; KdlError (one line) when it cannot be read."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise KdlError(f"cannot read bundle {path}: {e.strerror}") from None
    except ValueError as e:
        raise KdlError(f"{path} is not a kdlgdb bundle: {e}") from None
    try:
        return Bundle.from_dict(data)
    except KdlError as e:
        raise KdlError(f"{path}: {e}") from None


# -- the report ------------------------------------------------------------------


def render(bundle: Bundle, fmt: str, svg: Optional[str] = None, graph: Optional[WaitForGraph] = None) -> str:
    """The report of ``bundle`` in ``fmt`` (html, md, json, txt); ``graph``: the snapshot's, when the caller
    has it already (the kernel log's panic message changes no edge)."""
    snapshot = with_log_facts(bundle.snapshot, bundle.log)
    graph = graph if graph is not None else WaitForGraph(snapshot)
    hung, notable = log_findings(bundle.log)
    return render_report(snapshot, graph, fmt, log=bundle.log, hung=hung, notable=notable,
                         facts=bundle.facts, svg=svg)


def status(bundle: Bundle, graph: Optional[WaitForGraph] = None) -> int:
    """Exit status: 1 when the snapshot has a cycle (deadlock or probable deadlock), else 0."""
    return commands.verdict_status(bundle.snapshot, graph)


def summary_line(bundle: Bundle, graph: Optional[WaitForGraph] = None) -> str:
    """``DEADLOCK: "kdl_m1" (pid 92) and "kdl_m2" (pid 93) deadlock on m1 and m2 [kdl_mutex]: ...``;
    ``NO LOCK CYCLE FOUND; 3 D tasks with undecoded waits: ...``."""
    graph = graph if graph is not None else WaitForGraph(bundle.snapshot)
    sentence = summary_sentence(bundle.snapshot, graph)
    head = headline(verdict(graph), len(undecoded(bundle.snapshot, graph)))
    if sentence.lower().startswith(head.lower()):  # says the verdict already
        return head + sentence[len(head):]
    return f"{head}: {sentence}"


def format_for(path: Optional[str], fmt: Optional[str]) -> str:
    """The report format: ``fmt`` when given, else from ``path``'s extension, else text."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise KdlError(f"unknown report format '{fmt}': use one of {', '.join(FORMATS)}")
        return fmt
    if path is None or path == "-":
        return "txt"
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise KdlError(f"cannot tell the format from '{path}': name it .html, .md, .json or .txt, or give --format")
    return EXTENSIONS[ext]


def write_report(bundle: Bundle, path: str, fmt: str, graph: Optional[WaitForGraph] = None) -> None:
    """Render ``bundle`` and write it to ``path``; KdlError when the file cannot be written."""
    text = render(bundle, fmt, graph=graph)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise KdlError(f"cannot write {path}: {e.strerror}") from None


# -- the session -----------------------------------------------------------------


class Session:
    """The kernel a front end looks at, read once.

    ``target()`` makes the Target to read (called again after :meth:`forget`); ``facts(kernel)`` says where
    it comes from, for a report (:func:`make_facts`' keywords: dump, remote, vmlinux, debugger).
    ``progress`` is told how a collection goes, and ``progress_end`` when it ends or is interrupted.
    """

    def __init__(self, target: Callable[[], Target], facts: Callable[[Kernel], dict[str, Any]],
                 progress: Optional[Progress] = None, progress_end: Optional[Callable[[], None]] = None) -> None:
        self._target = target
        self._facts = facts
        self.progress = progress
        self.progress_end = progress_end
        self._kernel: Optional[Kernel] = None
        self._snapshot: Optional[Snapshot] = None
        self._with_lines: Optional[Snapshot] = None  # the snapshot once its frames have their file:line

    def forget(self) -> None:
        """The kernel may have changed: read it again next time."""
        self._kernel = self._snapshot = self._with_lines = None

    def opened_target(self) -> Optional[Target]:
        """The Target of the Kernel read so far, or None (nothing asked yet)."""
        return self._kernel.target if self._kernel is not None else None

    def kernel(self) -> Kernel:
        """The Kernel (KASLR and layouts found once)."""
        if self._kernel is None:
            self._kernel = Kernel(self._target())
        return self._kernel

    def snapshot(self, source_lines: bool = False, record: Optional[str] = None) -> Snapshot:
        """The kernel's Snapshot, collected once; the file:line of its stack frames are looked up the first time
        ``source_lines`` asks for them (most output does not show them). ``record``: collect again through a
        :class:`~kdlgdb.target.replay.RecordingTarget` and save what it read there (with source lines: the
        recording must hold them)."""
        if record is not None:
            recorder = RecordingTarget(self._target())
            self._snapshot = self._with_lines = collect(recorder)
            recorder.save(record)
        elif self._snapshot is None:
            try:
                self._snapshot = collect(self.kernel(), progress=self.progress, source_lines=False)
            finally:
                if self.progress_end is not None:
                    self.progress_end()
        if source_lines and self._with_lines is not self._snapshot:
            add_source_lines(self.kernel(), self._snapshot.tasks)
            self._with_lines = self._snapshot
        return self._snapshot

    def bundle(self) -> Bundle:
        """The snapshot (with source lines), the kernel log and facts about where they come from."""
        snap = self.snapshot(source_lines=True)
        kernel = self.kernel()
        log, log_facts = read_kernel_log(kernel)
        facts = make_facts(**self._facts(kernel), **log_facts)
        return Bundle(with_log_facts(snap, log), log, facts)

    def report(self, output: str, fmt: Optional[str]) -> str:
        """kd-report -o OUTPUT: write the report of this kernel; what to print."""
        fmt = format_for(output, fmt)
        bundle = self.bundle()
        graph = WaitForGraph(bundle.snapshot)
        write_report(bundle, output, fmt, graph)
        return f"{summary_line(bundle, graph)}\nkd-report: wrote {output} ({fmt})"
