"""The kd-* commands in gdb. Thin: parse, collect through GdbTarget, print.

Errors become one line on gdb's error stream; ``set kd-debug on`` shows the
traceback instead. A Snapshot is kept until the kernel can have changed (a new
vmlinux or core, or a live target that ran).
"""
from __future__ import annotations

import shlex
import sys
import traceback
from typing import Optional

import gdb  # type: ignore[import-not-found]

from ..errors import KdlError
from ..kernel.collect import collect
from ..model import Snapshot
from ..target.gdb import GdbTarget
from ..target.replay import RecordingTarget
from . import commands

__all__ = ["register", "snapshot", "batch"]

_cache: dict[str, Snapshot] = {}


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
        return sys.stdout.isatty() and gdb.parameter("style enabled")
    return value == "on"


def _progress(stage: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\rkdlgdb: {stage} {done}" + (f"/{total}" if total else "") + "   \r")
        sys.stderr.flush()


def snapshot(record: Optional[str] = None) -> Snapshot:
    """The Snapshot of the kernel gdb looks at, collected once and cached."""
    if record is None and "current" in _cache:
        return _cache["current"]
    target = GdbTarget()
    if record is not None:
        recorder = RecordingTarget(target)
        snap = collect(recorder)
        recorder.save(record)
    else:
        snap = collect(target, progress=_progress)
    _cache["current"] = snap
    return snap


def _forget(*_args) -> None:
    _cache.clear()


class KdCommand(gdb.Command):
    """One kd-* command; the docstring is set from its argparse help."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__doc__ = commands.help_text(name)
        super().__init__(name, gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        try:
            args = commands.parse(self.name, shlex.split(argument))
            gdb.write(commands.run(self.name, args, snapshot(), color=_color()) + "\n")
        except commands.HelpShown:
            pass
        except KeyboardInterrupt:
            gdb.write(f"{self.name}: interrupted\n", gdb.STDERR)
        except Exception as e:  # the one place that turns errors into one line
            _report(self.name, e)


def _report(name: str, e: BaseException, errors: Optional[str] = None) -> None:
    if _params["debug"].value:
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


def batch(command: str, argv: list[str], out: str, record: Optional[str] = None) -> None:
    """Run one command for the ``kdlgdb`` CLI and quit gdb with its status (0 ok, 1 cycle, 2 error).

    The result goes to the file ``out`` and an error line to ``out.err``, away from
    what gdb itself prints while loading.
    """
    status = 2
    try:
        args = commands.parse(command, argv)
        snap = snapshot(record=record)
        with open(out, "w") as f:
            f.write(commands.run(command, args, snap, color=False) + "\n")
        status = commands.verdict_status(snap) if command == "kd-waitfor" else 0
    except KeyboardInterrupt:
        _report(command, KdlError("interrupted"), out + ".err")
    except Exception as e:
        _report(command, e, out + ".err")
    gdb.flush()
    try:
        if gdb.selected_inferior().connection is not None and gdb.selected_inferior().connection.type != "core":
            gdb.execute("detach", to_string=True)  # never kill a live guest on the way out
    except gdb.error:
        pass
    gdb.execute(f"quit {status}")


def register() -> None:
    """Create the kd-* commands and settings; safe to call twice."""
    if _params:
        return
    _params["debug"] = _Bool("kd-debug", "Set whether kd-* commands show Python tracebacks.", False)
    _params["color"] = _Color()
    for name in commands.COMMANDS:
        KdCommand(name)
    for event in (gdb.events.new_objfile, gdb.events.clear_objfiles, gdb.events.cont, gdb.events.stop,
                  gdb.events.exited, gdb.events.memory_changed):
        event.connect(_forget)
