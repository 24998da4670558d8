"""The ``kdlgdb`` command: the same analysis without opening gdb by hand.

It runs gdb in batch mode with the extension and passes its exit status on
(report.EXIT_STATUS, one rule for waitfor, report and triage): 0 analysed and
no cycle, or the report written to its file; 1 a deadlock or probable deadlock
found and printed; 2 could not analyse (the reason on one line). An exception
kdlgdb did not foresee is one line too, naming the command and the exception;
``--debug`` adds the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Optional

from . import report
from .errors import KdlError
from . import __version__
from .gdbrun import BATCH, run_batch

__all__ = ["main"]


def _progress(done: int, total: int, dump: str) -> None:
    """``kdlgdb triage``'s progress on a terminal: the dump being read, erased at the end."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" if done == total else f"\rkdlgdb: {done + 1}/{total} {dump}\033[K")
        sys.stderr.flush()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="kdlgdb", description="Find kernel deadlocks in a vmcore or a live kernel.")
    p.add_argument("--version", action="version", version=f"kdlgdb {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error (kdlgdb's and gdb's)")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("waitfor", help="print the wait-for graph (like kd-waitfor in gdb)",
                       description="Print the wait-for graph of a dump or a live kernel. " + report.EXIT_STATUS)
    w.add_argument("paths", nargs="*", metavar="[VMLINUX] [VMCORE]",
                   help=f"the dump ({report.DUMP_FORMATS}), optionally after its vmlinux (or give --vmlinux); "
                        "with --remote, the vmlinux alone")
    w.add_argument("--vmlinux", help=report.VMLINUX_HELP)
    w.add_argument("--btf", action="store_true", help=report.BTF_HELP)
    w.add_argument("--remote", metavar="HOST:PORT", help="a live kernel's gdbstub (QEMU -s: localhost:1234)")
    w.add_argument("--json", action="store_true", help="JSON instead of text")
    w.add_argument("-p", "--pid", type=int, help="only the cycle or chain of this pid")
    w.add_argument("--record", metavar="FILE", help=argparse.SUPPRESS)  # for the test recordings
    report.add_subcommands(sub)
    args = p.parse_args(argv)
    if args.debug:
        os.environ["KDLGDB_DEBUG"] = "1"  # for the batch gdb: kd-debug on, and its stderr shown on an error
    try:
        return _run(p, args)
    except KeyboardInterrupt:
        print(f"kdlgdb {args.command}: interrupted", file=sys.stderr)
        return 2
    except Exception as e:  # the one place that turns what kdlgdb did not foresee into one line
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (--debug for the traceback)"
        what = (str(e).splitlines() or [""])[0]
        print(f"kdlgdb {args.command}: internal error: {type(e).__name__}: {what}{hint}", file=sys.stderr)
        return 2


def _run(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command in ("report", "triage"):
        outcome = report.run_cli(args, progress=_progress)
        sys.stdout.write(outcome.out)
        sys.stderr.write(outcome.err)
        return outcome.status

    try:
        vmlinux, vmcore, how = _waitfor_inputs(args)
    except KdlError as e:
        print(f"kdlgdb: {e}", file=sys.stderr)
        return 2
    kd_argv = (["--json"] if args.json else []) + (["-p", str(args.pid)] if args.pid is not None else [])
    try:
        if vmlinux is None:
            assert vmcore is not None
            out, status = _without_gdb(vmcore, kd_argv, args.record, how)
        else:
            out, status = run_batch(vmlinux, vmcore, args.remote, BATCH,
                                    {"command": "kd-waitfor", "argv": kd_argv, "record": args.record})
    except KdlError as e:
        print(f"kdlgdb: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdlgdb: interrupted", file=sys.stderr)
        return 2
    sys.stdout.write(out)
    return status


def _without_gdb(dump: str, kd_argv: list[str], record: Optional[str], how: str) -> tuple[str, int]:
    """kd-waitfor on the dump read with its own BTF and kallsyms, in this process."""
    from .frontends import btf

    try:
        return btf.batch("kd-waitfor", kd_argv, dump, record=record)
    except KdlError as e:
        raise KdlError(f"{e}{report.without_vmlinux(how)}") from None


def _waitfor_inputs(args: argparse.Namespace) -> tuple[Optional[str], Optional[str], str]:
    """(vmlinux or None, dump or None, how the vmlinux was chosen) of ``kdlgdb waitfor``: ``[VMLINUX] VMCORE``,
    ``VMCORE --vmlinux V``, or with ``--remote`` the vmlinux alone (positional or --vmlinux); the vmlinux found by
    the dump's release when not given, and None (the dump's own BTF and kallsyms) when none is found or ``--btf``."""
    if args.remote is not None:
        paths = ([args.vmlinux] if args.vmlinux is not None else []) + list(args.paths)
        if len(paths) != 1:
            raise KdlError("with --remote, give the vmlinux alone: kdlgdb waitfor VMLINUX --remote HOST:PORT")
        if args.btf:
            raise KdlError("--btf reads a dump; a live kernel is read by gdb with its vmlinux")
        return paths[0], None, "given"
    return report.dump_inputs("waitfor", args.paths, args.vmlinux, args.btf)


if __name__ == "__main__":
    sys.exit(main())
