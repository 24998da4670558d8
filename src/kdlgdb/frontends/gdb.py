"""The kd-* commands in gdb. Thin: parse, collect through GdbTarget, print.

Errors become one line on gdb's error stream; ``set kd-debug on`` shows the
traceback instead. A Snapshot is kept until the kernel can have changed (a new
vmlinux or core, or a live target that ran).
"""
from __future__ import annotations

import argparse
import os
import shlex
import traceback
from typing import Callable, Optional

import gdb  # type: ignore[import-not-found]

from ..errors import KdlError
from ..kernel.layout import Kernel
from ..model import Snapshot, Task
from ..target.dumpfile import DumpFile, dump_format, open_dump
from ..target.base import TargetKind
from ..target.gdb import GdbTarget
from . import commands
from . import task as task_view
from .session import Session, save_bundle, status as bundle_status

__all__ = ["register", "snapshot", "kernel", "kd_open", "batch", "batch_bundle"]

_opened: dict[str, DumpFile] = {}  # "dump": the file kd-open gave, read by kdlgdb itself


class _Bool(gdb.Parameter):
    def __init__(self, name: str, doc: str, default: bool) -> None:
        self.__doc__ = doc
        self.set_doc = doc
        self.show_doc = doc
        super().__init__(name, gdb.COMMAND_DATA, gdb.PARAM_BOOLEAN)
        self.value = default


class _Color(gdb.Parameter):
    """Colour in kd-* output: on, off, or auto (only when gdb's output is a terminal)."""

    set_doc = "Set colour in kd-* output (on, off, auto)."
    show_doc = "Show colour in kd-* output."

    def __init__(self) -> None:
        super().__init__("kd-color", gdb.COMMAND_DATA, gdb.PARAM_ENUM, ["auto", "on", "off"])
        self.value = "auto"


_params: dict[str, gdb.Parameter] = {}


def _color() -> bool:
    value = _params["color"].value
    if value == "auto":
        return os.isatty(1) and bool(gdb.parameter("style enabled"))  # gdb's sys.stdout.isatty() is always False
    return value == "on"


def _to_terminal(text: str) -> None:
    """Write ``text`` to the user's terminal, if there is one: gdb's stderr when it is a terminal
    (gdb's ``sys.stderr.isatty()`` always says no: ask the file descriptor), or the terminal of the
    kdlgdb command, which captures gdb's stderr and sets KDLGDB_PROGRESS=tty."""
    try:
        if os.isatty(2):
            os.write(2, text.encode())
        elif os.environ.get("KDLGDB_PROGRESS") == "tty":
            with open("/dev/tty", "w") as tty:
                tty.write(text)
    except OSError:
        pass


_progress_shown: set[str] = set()


def _progress(stage: str, done: int, total: int) -> None:
    """Progress of a long analysis on one line of the terminal (nothing when there is none)."""
    _progress_shown.add("line")  # first: a Ctrl-C can land right after the write
    _to_terminal(f"\rkdlgdb: {stage} {done}" + (f"/{total}" if total else "") + "\033[K")


def _progress_end() -> None:
    """Erase the progress line, if one was shown (the analysis ended, or was interrupted)."""
    if "line" in _progress_shown:
        _progress_shown.clear()
        _to_terminal("\r\033[K")


def snapshot(record: Optional[str] = None, source_lines: bool = False) -> Snapshot:
    """The Snapshot of the kernel gdb looks at, collected once and kept (:meth:`Session.snapshot`)."""
    return _session.snapshot(source_lines=source_lines, record=record)


def kernel() -> Kernel:
    """The Kernel gdb looks at (KASLR and layouts found once), kept like the snapshot."""
    return _session.kernel()


def _target() -> GdbTarget:
    """gdb's kernel, or the dump kd-open gave (until gdb gets a core file or a connection of its own)."""
    memory = _opened.get("dump")
    if memory is not None and gdb.selected_inferior().connection is not None:
        _close()
        memory = None
    return GdbTarget(memory)


def _close() -> None:
    memory = _opened.pop("dump", None)
    if memory is not None:
        memory.close()


def kd_open(path: str) -> str:
    """Make the kd-* commands read the dump at ``path``, whatever its format; one line saying what it is.

    An ELF with kernel virtual addresses is gdb's to read (``core-file``); any other
    dump kdlgdb reads itself, through the dump's page tables, with gdb's symbols.
    """
    path = os.path.expanduser(path)
    connection = gdb.selected_inferior().connection
    if connection is not None and connection.type != "core":
        raise KdlError("gdb is connected to a live kernel: `disconnect` first")
    fmt = dump_format(path)
    _close()
    _forget()
    if fmt.gdb_reads:
        gdb.execute(f"core-file {path}", to_string=True)
    else:
        memory = open_dump(path)
        if connection is not None:
            gdb.execute("core-file", to_string=True)  # gdb's own core would win over ours
        _opened["dump"] = memory
    try:
        k = kernel()
    except BaseException:
        _close()
        _forget()
        raise
    assert isinstance(k.target, GdbTarget)
    return f"{path}: {k.target.dump_kind}, Linux {k.release}, KASLR offset {k.kaslr_offset:#x} ({fmt.reader()})"


def _facts(k: Kernel) -> dict[str, Optional[str]]:
    """Where the kernel gdb looks at comes from, for a report."""
    target = k.target
    assert isinstance(target, GdbTarget)
    return {"dump": target.dump_path, "remote": target.where if target.kind is TargetKind.LIVE else None,
            "vmlinux": gdb.current_progspace().filename, "debugger": f"gdb {gdb.VERSION}"}


#: The kernel gdb looks at: its Kernel and Snapshot, until gdb loads another or a live target runs.
# (progress looked up when called: a test hook replaces _progress)
_session = Session(_target, _facts, progress=lambda *a: _progress(*a), progress_end=lambda: _progress_end())


def _forget(*_args) -> None:
    _session.forget()


class KdCommand(gdb.Command):
    """One kd-* command; the docstring is set from its argparse help."""

    def __init__(self, name: str, parser: Optional[Callable[[], argparse.ArgumentParser]] = None) -> None:
        self.name = name
        self.parser = parser or commands.COMMANDS[name]
        self.__doc__ = self.parser().format_help()
        super().__init__(name, gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        try:
            text = self.output(self.parser().parse_args(shlex.split(argument)))
            if text:  # kd-dmesg --grep may match nothing
                gdb.write(text + "\n")
        except commands.HelpShown:
            pass
        except KeyboardInterrupt:
            gdb.write(f"{self.name}: interrupted\n", gdb.STDERR)
        except Exception as e:  # the one place that turns errors into one line
            _error(self.name, e)

    def output(self, args: argparse.Namespace) -> str:
        if self.name == "kd-bt" and args.full:
            return _bt_with_variables(args, snapshot(source_lines=True))
        return commands.run_on(self.name, args, lambda lines: snapshot(source_lines=lines), kernel(), _color())[0]


def _select(task: Optional[Task]) -> str:
    return task_view.select_task(kernel(), task)


def _bt_with_variables(args: argparse.Namespace, snap: Snapshot) -> str:
    """kd-bt -f: each frame's variables from gdb's frames of the task (kd-task's unwinder), then back to what
    gdb showed before."""
    before = task_view.selected()

    def variables(task: Task, n: int, frame) -> list[str]:  # noqa: ANN001
        if task_view.selected() is not task:
            _select(task)
        return task_view.frame_variables(n, frame.pc)

    try:
        return commands.run("kd-bt", args, snap, color=_color(), kernel=kernel(), variables=variables)
    finally:
        _select(before)


def _task_parser() -> commands._Parser:
    p = commands._Parser(
        prog="kd-task",
        description="Make a task the one gdb's own bt, frame N, info locals, info registers and p show: its frames "
                    "are gdb's #1 and up (#0 stays the dump thread's own, left out of bt). Without a task: the dump's "
                    "own thread again.")
    p.add_argument("task", nargs="?", help="pid, task_struct address (0x...), or a unique command name")
    return p


class KdTask(KdCommand):
    """kd-task [PID]: gdb's frame commands on that task."""

    def __init__(self) -> None:
        super().__init__("kd-task", _task_parser)

    def output(self, args: argparse.Namespace) -> str:
        if args.task is None:
            return _select(None)
        return _select(commands.find_task(snapshot(), args.task))


def _error(name: str, e: BaseException, errors: Optional[str] = None) -> None:
    if _params["debug"].value or os.environ.get("KDLGDB_DEBUG"):  # kd-debug, or the kdlgdb command's --debug
        traceback.print_exc()
    if isinstance(e, KdlError):
        line = f"{name}: {e}"
    elif isinstance(e, gdb.error):
        line = f"{name}: gdb: {e}"
    else:
        line = f"{name}: internal error: {type(e).__name__}: {e} (set kd-debug on for the traceback)"
    if errors is not None:
        with open(errors, "a") as f:
            f.write(line + "\n")
    else:
        gdb.write(line + "\n", gdb.STDERR)


def _open_parser() -> commands._Parser:
    p = commands._Parser(
        prog="kd-open",
        description="Read a vmcore gdb cannot read itself (kdump-compressed, normal or flattened, any page "
                    "compression, filtered; ELF with physical addresses only), through the dump's own page tables. "
                    "gdb keeps giving symbols and types from the vmlinux it loaded.")
    p.add_argument("dump", help="the vmcore file")
    return p


class KdOpen(KdCommand):
    """kd-open VMCORE: the kd-* commands read this dump."""

    def __init__(self) -> None:
        super().__init__("kd-open", _open_parser)

    def output(self, args: argparse.Namespace) -> str:
        return kd_open(args.dump)


def batch(command: str, argv: list[str], out: str, record: Optional[str] = None) -> None:
    """Run one command for the ``kdlgdb`` CLI and quit gdb with its status (0 ok, 1 cycle, 2 error).

    The result goes to the file ``out`` and an error line to ``out.err``, away from
    what gdb itself prints while loading.
    """
    status = 2
    try:
        args = commands.parse(command, argv)
        text, snap = commands.run_on(command, args, lambda lines: snapshot(record=record, source_lines=lines), kernel())
        with open(out, "w") as f:
            f.write(text + "\n")
        status = commands.verdict_status(snap) if command == "kd-waitfor" and snap is not None else 0
    except KeyboardInterrupt:
        _error(command, KdlError("interrupted"), out + ".err")
    except Exception as e:
        _error(command, e, out + ".err")
    _quit(status)


def batch_open(path: str, out: str) -> bool:
    """``kd_open(path)`` for the ``kdlgdb`` CLI: True, or the error line in ``out.err`` and gdb quits (status 2)."""
    try:
        kd_open(path)
        return True
    except Exception as e:
        _error("kd-open", e, out + ".err")
    _quit(2)
    return False


def _quit(status: int) -> None:
    """End a batch run: detach from a live kernel (never kill the guest), quit with ``status``."""
    gdb.flush()
    try:
        connection = gdb.selected_inferior().connection
        if connection is not None and connection.type != "core":
            gdb.execute("detach", to_string=True)
    except gdb.error:
        pass
    gdb.execute(f"quit {status}")


# -- post-mortem reports (kdlgdb report / triage, kd-report) ---------------------


def batch_bundle(out: str) -> None:
    """For ``kdlgdb report`` and ``triage``: write the bundle (snapshot, kernel log, facts) to the file
    ``out`` as JSON and quit gdb with the verdict (0 no cycle, 1 cycle, 2 error, its line in ``out.err``)."""
    status = 2
    try:
        bundle = _session.bundle()
        save_bundle(bundle, out)
        status = bundle_status(bundle)
    except KeyboardInterrupt:
        _error("kdlgdb report", KdlError("interrupted"), out + ".err")
    except Exception as e:
        _error("kdlgdb report", e, out + ".err")
    _quit(status)


class KdReport(KdCommand):
    """kd-report -o FILE: a post-mortem report of the kernel gdb looks at."""

    def __init__(self) -> None:
        super().__init__("kd-report", commands.report_parser)

    def output(self, args: argparse.Namespace) -> str:
        return _session.report(args.output, args.format)


def register() -> None:
    """Create the kd-* commands and settings; safe to call twice."""
    if _params:
        return
    _params["debug"] = _Bool("kd-debug", "Set whether kd-* commands show Python tracebacks.", False)
    _params["color"] = _Color()
    for name in commands.COMMANDS:
        KdCommand(name)
    KdReport()
    KdOpen()
    KdTask()
    for event in (gdb.events.new_objfile, gdb.events.clear_objfiles, gdb.events.cont, gdb.events.stop,
                  gdb.events.exited, gdb.events.memory_changed):
        event.connect(_forget)
