"""The kd-* commands in crash: the Python process behind ``crashext/kdlgdb.so``.

crash starts ``python3 -m kdlgdb.frontends.crash`` at the first kd-* command, with
a socket on file descriptor ``$KDLGDB_CRASH_FD``, and sends it one ``run`` frame per
command (see :mod:`kdlgdb.target.crash`). Each command is parsed and rendered by
the very code the gdb commands use (:mod:`kdlgdb.frontends.commands`), so the text
and JSON are the same as in gdb. The kernel is read once per crash session (every
command on a live system).

Errors become one line that crash prints after the command's name; ``kd-set debug
on`` sends the traceback instead.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from typing import TYPE_CHECKING, Optional

from ..errors import KdlError
from ..target.crash import Channel, CrashTarget, crash_socket

if TYPE_CHECKING:
    from ..kernel.layout import Kernel
    from ..model import Snapshot

__all__ = ["Request", "Session", "main"]

#: Commands beyond those of frontends.commands.COMMANDS.
REPORT = "kd-report"


class Request:
    """One ``run`` frame: the command, its settings and its words."""

    def __init__(self, payload: bytes) -> None:
        fields = payload.decode("utf-8", "surrogateescape").split("\0")
        if len(fields) < 4:
            raise KdlError("a run request from crash without its settings")
        self.command = fields[0]
        self.color, self.debug, self.live = (f == "1" for f in fields[1:4])
        self.argv = fields[4:]


class Session:
    """The kernel crash has open, and the commands run on it."""

    def __init__(self, channel: Channel) -> None:
        from .session import Session as KernelSession

        self.channel = channel
        self.session = KernelSession(lambda: CrashTarget(channel), _facts, progress=self.progress)

    def serve(self) -> None:
        """Run commands until crash closes the socket."""
        while True:
            try:
                verb, payload = self.channel.receive()
            except EOFError:
                return
            if verb == "run":
                try:
                    request = Request(payload)
                except KdlError as e:
                    self.channel.send("error", str(e))
                    continue
                self.run(request)

    def run(self, request: Request) -> None:
        """Run one command; it ends with ``done`` and its output, or ``error`` and one line."""
        if request.live:
            self.session.forget()
        try:
            text = self.output(request)
        except Exception as e:  # noqa: BLE001  (the one place that turns errors into one line)
            self.channel.send("error", traceback.format_exc().rstrip() if request.debug else error_line(e))
            return
        self.channel.send("done", text + "\n" if text else "")  # kd-dmesg --grep may match nothing

    def output(self, request: Request) -> str:
        from . import commands

        parser = commands.report_parser if request.command == REPORT else commands.COMMANDS.get(request.command)
        if parser is None:
            raise KdlError(f"kdlgdb has no command {request.command}")
        help_text = io.StringIO()
        try:
            with contextlib.redirect_stdout(help_text):
                args = parser().parse_args(request.argv)
        except commands.HelpShown:
            return help_text.getvalue().rstrip("\n")
        if request.command == REPORT:
            return self.report(args)
        return commands.run_on(request.command, args, self.snapshot, self.kernel(), request.color)[0]

    def kernel(self) -> Kernel:
        return self.session.kernel()

    def snapshot(self, source_lines: bool = False) -> Snapshot:
        """The kernel's snapshot, collected once (:meth:`kdlgdb.frontends.session.Session.snapshot`)."""
        return self.session.snapshot(source_lines=source_lines)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.channel.send("progress", f"kdlgdb: {stage} {done}" + (f"/{total}" if total else ""))

    def report(self, args: argparse.Namespace) -> str:
        """kd-report -o FILE: the post-mortem report of the kernel crash has open."""
        return self.session.report(args.output, args.format)


def _facts(kernel: Kernel) -> dict[str, Optional[str]]:
    """Where the kernel crash has open comes from, for a report."""
    target = kernel.target
    assert isinstance(target, CrashTarget)
    _, dump, vmlinux, debugger = target.described()
    return {"dump": dump or None, "vmlinux": vmlinux or None, "debugger": debugger or None}


def error_line(e: BaseException) -> str:
    """What crash prints after ``COMMAND:`` for an error."""
    if isinstance(e, KdlError):
        return str(e)
    return f"internal error: {type(e).__name__}: {e} (kd-set debug on for the traceback)"


def missing_module(e: ImportError) -> str:
    """The one line for a dependency this Python lacks."""
    name = e.name or str(e)
    return (f"kdlgdb needs the Python module {name}, which {sys.executable} ({sys.version.split()[0]}) lacks: "
            f"install it with: apt-get install python3-{name}")


def main() -> int:
    fd = os.environ.get("KDLGDB_CRASH_FD", "")
    if not fd.isdigit():
        print("kdlgdb.frontends.crash is run by the crash extension (crashext/kdlgdb.so), not by hand",
              file=sys.stderr)
        return 2
    channel = Channel(crash_socket(int(fd)))
    try:
        from . import commands  # noqa: F401  (pygments, tabulate)
    except ImportError as e:
        line = missing_module(e)
        while True:  # every command gets the reason; crash shows it and goes on
            try:
                verb, _ = channel.receive()
            except EOFError:
                return 1
            if verb == "run":
                channel.send("error", line)
    Session(channel).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
