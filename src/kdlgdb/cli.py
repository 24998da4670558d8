"""The ``kdlgdb`` command: the same analysis without opening gdb by hand.

It runs gdb in batch mode with the extension and passes its exit status on:
0 analysed and no cycle, 1 a deadlock or probable deadlock found, 2 could not
analyse (the reason on one line).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

from . import report
from .errors import KdlError
from .target.vmcore import open_elf_dump

__all__ = ["main", "gdb_command"]

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gdb_command(vmlinux: str, dump: Optional[str], remote: Optional[str], command: str, argv: list[str],
                out: str, record: Optional[str] = None) -> list[str]:
    """The gdb command line that runs one kd-* command and quits with its status."""
    gdb = os.environ.get("KDLGDB_GDB", "gdb")
    cmd = [gdb, "-nx", "-q", "-batch", vmlinux]
    if dump:
        cmd.append(dump)
    if remote:
        cmd += ["-ex", f"target remote {remote}"]
    script = (
        f"import sys; sys.path.insert(0, {SRC!r}); "
        "from kdlgdb.frontends import gdb as f; f.register(); "
        f"f.batch({command!r}, {argv!r}, out={out!r}, record={record!r})"
    )
    return cmd + ["-ex", f"python {script}"]


def _progress(done: int, total: int, dump: str) -> None:
    """``kdlgdb triage``'s progress on a terminal: the dump being read, erased at the end."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" if done == total else f"\rkdlgdb: {done + 1}/{total} {dump}\033[K")
        sys.stderr.flush()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="kdlgdb", description="Find kernel deadlocks in a vmcore or a live kernel.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("waitfor", help="print the wait-for graph (like kd-waitfor in gdb)")
    w.add_argument("vmlinux", help="the vmlinux with debug info that matches the kernel")
    w.add_argument("vmcore", nargs="?", help="the dump (ELF vmcore); omit with --remote")
    w.add_argument("--remote", metavar="HOST:PORT", help="a live kernel's gdbstub (QEMU -s: localhost:1234)")
    w.add_argument("--json", action="store_true", help="JSON instead of text")
    w.add_argument("-p", "--pid", type=int, help="only the cycle or chain of this pid")
    w.add_argument("--record", metavar="FILE", help=argparse.SUPPRESS)  # for the test recordings
    report.add_subcommands(sub)
    args = p.parse_args(argv)
    if args.command in ("report", "triage"):
        outcome = report.run_cli(args, progress=_progress)
        sys.stdout.write(outcome.out)
        sys.stderr.write(outcome.err)
        return outcome.status

    if (args.vmcore is None) == (args.remote is None):
        p.error("give either a VMCORE or --remote HOST:PORT")
    for path in (args.vmlinux, args.vmcore):
        if path and not os.path.isfile(path):
            print(f"kdlgdb: no such file: {path}", file=sys.stderr)
            return 2
    if args.vmcore:
        try:
            dump = open_elf_dump(args.vmcore)
        except KdlError as e:
            print(f"kdlgdb: {e}", file=sys.stderr)
            return 2
        if not dump.has_virtual_addresses:
            print(f"kdlgdb: {args.vmcore} has physical addresses only; gdb cannot read it (take the dump with paging)", file=sys.stderr)
            return 2
    if shutil.which(os.environ.get("KDLGDB_GDB", "gdb")) is None:
        print("kdlgdb: gdb is not installed (apt-get install gdb)", file=sys.stderr)
        return 2
    kd_argv = (["--json"] if args.json else []) + (["-p", str(args.pid)] if args.pid is not None else [])
    with tempfile.TemporaryDirectory(prefix="kdlgdb-") as tmp:
        out = os.path.join(tmp, "out")
        cmd = gdb_command(args.vmlinux, args.vmcore, args.remote, "kd-waitfor", kd_argv, out, record=args.record)
        try:
            # gdb's own chatter while loading goes nowhere; its errors and ours reach stderr.
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=report.gdb_env())
        except KeyboardInterrupt:
            return 2
        if os.path.exists(out):
            with open(out) as f:
                sys.stdout.write(f.read())
        if os.path.exists(out + ".err"):
            with open(out + ".err") as f:
                sys.stderr.write("kdlgdb: " + f.read())
        elif not os.path.exists(out):
            # gdb itself failed before kdlgdb ran: show its last words.
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            print(f"kdlgdb: gdb failed: {tail[0]}", file=sys.stderr)
            return 2
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
