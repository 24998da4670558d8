"""Post-mortem reports for the CLI: ``kdlgdb report`` and ``kdlgdb triage``.

In batch mode gdb collects the Snapshot and the kernel log and writes a *bundle*
(:mod:`kdlgdb.frontends.session`, where ``kd-report`` makes the same bundle in
memory and renders it). Everything after that runs in plain Python, in the
``kdlgdb`` process: the wait-for graph, the kernel log findings
(:mod:`kdlgdb.analysis.kernlog`) and the report (:mod:`kdlgdb.render.report`).

This module also finds the vmlinux that matches a dump (by the release in its
VMCOREINFO) and runs ``kdlgdb report`` and ``kdlgdb triage`` for the CLI; it
returns what to print (:class:`Outcome`) and prints nothing itself.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from tabulate import tabulate

from .analysis.graph import WaitForGraph
from .errors import KdlError
from .frontends.session import (  # noqa: F401  (the bundle's API, named here too)
    BUNDLE_VERSION,
    EXTENSIONS,
    Bundle,
    file_time,
    format_for,
    load_bundle,
    log_findings,
    make_facts,
    read_kernel_log,
    render,
    save_bundle,
    status,
    summary_line,
    with_log_facts,
    write_report,
)
from .frontends import btf as btf_front_end
from .gdbrun import BATCH_BUNDLE, run_batch
from .render.report import FORMATS, chain_sentence, cycle_line, format_crash_time, no_cycle, undecoded, verdict
from .kernel.collect import crash_time
from .target.dumpfile import dump_format, dump_vmcoreinfo

__all__ = [
    "BUNDLE_VERSION",
    "VMLINUX_PLACES",
    "Bundle",
    "Outcome",
    "TriageRow",
    "make_facts",
    "file_time",
    "read_kernel_log",
    "log_findings",
    "with_log_facts",
    "save_bundle",
    "load_bundle",
    "render",
    "status",
    "summary_line",
    "format_for",
    "dump_release",
    "find_vmlinux",
    "debug_info_for",
    "collect_bundle",
    "triage",
    "triage_one",
    "triage_table",
    "triage_status",
    "add_subcommands",
    "run_cli",
]

#: Where a vmlinux with debug info for release REL is looked for, in order (Debian's -dbg package first).
VMLINUX_PLACES = (
    "/usr/lib/debug/boot/vmlinux-{release}",
    "/usr/lib/debug/lib/modules/{release}/vmlinux",
    "/boot/vmlinux-{release}",
)

GDB_TIMEOUT = 600.0
NO_VMLINUX = ": the dump's own BTF and kallsyms"  # ends debug_info_for's "how" when no vmlinux was found


# -- dumps, vmlinux and gdb ------------------------------------------------------


def dump_release(path: str) -> str:
    """The kernel release (``OSRELEASE``) in a dump's VMCOREINFO; KdlError when it has none."""
    info = dump_vmcoreinfo(path)
    if not info or not info.get("OSRELEASE"):
        raise KdlError(f"{path} has no VMCOREINFO with the kernel release: give the vmlinux")
    return info["OSRELEASE"]


def find_vmlinux(release: str, places: Sequence[str] = VMLINUX_PLACES) -> tuple[Optional[str], list[str]]:
    """(the first vmlinux for ``release`` that exists, or None; every path looked at)."""
    looked = [place.format(release=release) for place in places]
    for path in looked:
        if os.path.isfile(path):
            return path, looked
    return None, looked


def vmlinux_for(dump: str, vmlinux: Optional[str], places: Sequence[str] = VMLINUX_PLACES) -> tuple[str, str]:
    """(vmlinux to use, how it was chosen); KdlError naming where it looked when none matches."""
    if vmlinux is not None:
        if not os.path.isfile(vmlinux):
            raise KdlError(f"no such file: {vmlinux}")
        return vmlinux, "given"
    release = dump_release(dump)
    found, looked = find_vmlinux(release, places)
    if found is None:
        raise KdlError(f"no vmlinux for {release}: looked in {', '.join(looked)} "
                       f"(install its debug symbols, e.g. linux-image-{release}-dbg, or give VMLINUX)")
    return found, f"found by the dump's release {release}"


def dump_inputs(command: str, paths: Sequence[str], vmlinux: Optional[str], btf: bool = False
                ) -> tuple[Optional[str], str, str]:
    """(the vmlinux or None, the dump, how the vmlinux was chosen) of ``kdlgdb COMMAND [VMLINUX] VMCORE``
    (or ``VMCORE --vmlinux V``): one line at once when the arguments do not say that, or the dump is no dump."""
    if len(paths) not in (1, 2):
        raise KdlError(f"give the dump, optionally after its vmlinux: kdlgdb {command} [VMLINUX] VMCORE")
    if len(paths) == 2 and vmlinux is not None:
        raise KdlError("give the vmlinux once: before the dump or with --vmlinux")
    dump = paths[-1]
    dump_format(dump)  # one line now if it is no dump at all
    chosen, how = debug_info_for(dump, paths[0] if len(paths) == 2 else vmlinux, btf)
    return chosen, dump, how


def debug_info_for(dump: str, vmlinux: Optional[str], btf: bool = False,
                   places: Sequence[str] = VMLINUX_PLACES) -> tuple[Optional[str], str]:
    """(the vmlinux to read the dump with, or None for the dump's own BTF and kallsyms; how it was chosen).

    A vmlinux given or found by the dump's release is used (gdb, with DWARF's source lines); without one,
    or with ``btf``, the dump's own BTF and kallsyms, and no gdb."""
    if btf:
        if vmlinux is not None:
            raise KdlError("give either a vmlinux or --btf, not both")
        return None, "--btf: the dump's own BTF and kallsyms"
    if vmlinux is not None:
        return vmlinux_for(dump, vmlinux, places)
    release = dump_release(dump)
    found, looked = find_vmlinux(release, places)
    if found is not None:
        return found, f"found by the dump's release {release}"
    return None, f"no vmlinux for {release} (looked in {', '.join(looked)}){NO_VMLINUX}"


def without_vmlinux(how: str) -> str:
    """What to add to the error of the dump's own BTF and kallsyms (``how``, from :func:`debug_info_for`): where
    kdlgdb looked for a vmlinux, or nothing (``--btf``)."""
    return f"; {how.removesuffix(NO_VMLINUX)}" if how.endswith(NO_VMLINUX) else ""


def collect_bundle(vmlinux: Optional[str], dump: str, timeout: float = GDB_TIMEOUT, how: str = "") -> Bundle:
    """Run gdb in batch mode on ``dump`` and return the bundle it writes, or without a vmlinux read the dump
    with its own BTF and kallsyms in this process; KdlError (one line) when it fails."""
    if vmlinux is None:
        try:
            bundle = btf_front_end.bundle(dump)
        except KdlError as e:
            raise KdlError(f"{e}{without_vmlinux(how)}") from None
    else:
        try:
            out, _ = run_batch(vmlinux, dump, None, BATCH_BUNDLE, {}, timeout=timeout)
            bundle = Bundle.from_dict(json.loads(out))
        except KdlError as e:
            raise KdlError(str(e).removeprefix("kdlgdb report: ")) from None
        except ValueError as e:
            raise KdlError(f"gdb wrote no bundle for {dump}: {e}") from None
    bundle.facts.setdefault("dump", dump)
    if "dump_mtime" not in bundle.facts and file_time(dump) is not None:
        bundle.facts["dump_mtime"] = file_time(dump)
    return bundle


# -- triage ----------------------------------------------------------------------


@dataclass
class TriageRow:
    """One dump in ``kdlgdb triage``: verdict ``deadlock``/``probable deadlock``/``no deadlock``/``error: why``,
    or ``no lock cycle found; N D tasks with undecoded waits`` for no cycle while some D task is unexplained.

    ``crash_time``: the dump's CRASHTIME (UTC), else the file's time marked ``(file time)``, else "".
    """

    dump: str
    release: str
    verdict: str
    cycle: str
    status: int  # 0 no cycle, 1 cycle, 2 error
    crash_time: str = ""


def triage_one(dump: str, vmlinux: Optional[str] = None, places: Sequence[str] = VMLINUX_PLACES,
               timeout: float = GDB_TIMEOUT, btf: bool = False) -> TriageRow:
    """The verdict on one dump; never raises for a dump it cannot read (the row says why)."""
    release = ""
    crashed = format_crash_time(None, file_time(dump))
    try:
        crashed = format_crash_time(crash_time(dump_vmcoreinfo(dump)), file_time(dump))
        try:
            release = dump_release(dump)
        except KdlError:
            if vmlinux is None:
                raise
        chosen, how = debug_info_for(dump, vmlinux, btf, places)
        bundle = collect_bundle(chosen, dump, timeout=timeout, how=how)
    except KdlError as e:
        return TriageRow(dump, release or "?", f"error: {e}", "", 2, crashed)
    snap = bundle.snapshot
    if snap.crash_time is not None:
        crashed = format_crash_time(snap.crash_time)
    graph = WaitForGraph(snap)
    if graph.cycles:
        kind = verdict(graph)
        cycle = cycle_line(graph.cycles[0], graph)
        if len(graph.cycles) > 1:
            cycle += f" (+{len(graph.cycles) - 1} more)"
        return TriageRow(dump, snap.release or release, "deadlock" if kind == "deadlock" else "probable deadlock",
                         cycle, 1, crashed)
    if graph.chains:
        largest = max(graph.chains, key=lambda c: len(c.tasks) + len(c.joined))
        more = f" (+{len(graph.chains) - 1} more chains)" if len(graph.chains) > 1 else ""
        cycle = f"chain: {chain_sentence(largest, graph)}{more}"
        return TriageRow(dump, snap.release or release, no_cycle(len(undecoded(snap, graph))), cycle, 0, crashed)
    return TriageRow(dump, snap.release or release, no_cycle(len(undecoded(snap, graph))), "", 0, crashed)


Progress = Callable[[int, int, str], None]


def triage(dumps: Sequence[str], vmlinux: Optional[str] = None, progress: Optional[Progress] = None,
           places: Sequence[str] = VMLINUX_PLACES, timeout: float = GDB_TIMEOUT, btf: bool = False) -> list[TriageRow]:
    """One :class:`TriageRow` per dump, in the order given.

    ``progress(done, total, dump)`` is called before each dump and once more at the end (``done == total``).
    """
    rows = []
    for i, dump in enumerate(dumps):
        if progress is not None:
            progress(i, len(dumps), dump)
        rows.append(triage_one(dump, vmlinux, places, timeout, btf))
    if progress is not None:
        progress(len(dumps), len(dumps), "")
    return rows


def triage_table(rows: Sequence[TriageRow]) -> str:
    """The triage table: DUMP, RELEASE, CRASH TIME, VERDICT, CYCLE (one line per dump)."""
    table = [(r.dump, r.release, r.crash_time, r.verdict, r.cycle) for r in rows]
    text = tabulate(table, headers=("DUMP", "RELEASE", "CRASH TIME", "VERDICT", "CYCLE"), tablefmt="plain",
                    disable_numparse=True)
    return "\n".join(line.rstrip() for line in text.splitlines())


def triage_status(rows: Sequence[TriageRow]) -> int:
    """1 if some dump has a cycle; else 2 if some dump could not be analysed; else 0."""
    if any(r.status == 1 for r in rows):
        return 1
    return 2 if any(r.status == 2 for r in rows) else 0


# -- the CLI subcommands ---------------------------------------------------------


@dataclass
class Outcome:
    """What a subcommand has the CLI print, and its exit status."""

    status: int
    out: str = ""
    err: str = ""


#: The one exit-status rule of waitfor, report and triage (their --help quotes it).
EXIT_STATUS = ("Exit status: 0 the analysis ran and found no lock cycle, or the report went to the file -o names "
               "(its verdict is in the file and on the line printed); 1 a deadlock or probable deadlock was found "
               "and printed on standard output; 2 it could not analyse (why, on one line).")
DUMP_FORMATS = ("QEMU's or makedumpfile's ELF vmcore (paging or physical), kdump-compressed (zlib, lzo, snappy, zstd; "
                "flattened or not, filtered or not)")
VMLINUX_HELP = ("the vmlinux with DWARF that matches the dump (default: found by the dump's release in "
                + ", ".join(VMLINUX_PLACES) + "; without one, the dump's own BTF and kallsyms)")
BTF_HELP = ("read types and symbols from the dump's own BTF and kallsyms even when a vmlinux is installed: no gdb, "
            "no source lines (kernels 6.0 and later built with CONFIG_DEBUG_INFO_BTF)")


def add_subcommands(sub: Any) -> None:
    """Declare ``report`` and ``triage`` on the CLI's argparse subparsers."""
    r = sub.add_parser(
        "report", help="write a post-mortem report (HTML, Markdown, JSON or text) of a dump",
        description="Analyse a vmcore and write a report: the verdict in one sentence, the wait-for graph as a "
                    "picture, each deadlock with stacks and evidence, wait chains, D-state tasks, the kernel log "
                    "and system facts. " + EXIT_STATUS)
    r.add_argument("paths", nargs="*", metavar="[VMLINUX] VMCORE",
                   help=f"the dump ({DUMP_FORMATS}), optionally after its vmlinux (or give --vmlinux)")
    r.add_argument("--vmlinux", help=VMLINUX_HELP)
    r.add_argument("--btf", action="store_true", help=BTF_HELP)
    r.add_argument("-o", "--output", metavar="FILE",
                   help="write the report to FILE; its extension (.html, .md, .json, .txt) gives the format "
                        "(default: text on standard output)")
    r.add_argument("--format", choices=FORMATS, help="the report format, whatever the file is called")
    r.add_argument("--save-bundle", metavar="FILE", help="also keep what gdb collected (a JSON bundle) in FILE")
    r.add_argument("--bundle", metavar="FILE", help="render a bundle saved earlier instead of running gdb")

    t = sub.add_parser(
        "triage", help="one line per dump: release, crash time, verdict, the cycle",
        description="Analyse many dumps and print one line for each: the dump, its kernel release, its crash time "
                    "(the dump's CRASHTIME, else the file's time marked '(file time)'), the verdict "
                    "(deadlock, probable deadlock, no deadlock, no lock cycle found while some D tasks' waits were not "
                    "decoded, or error: why) and the cycle. A dump that cannot be "
                    "read is listed with its error and the others go on. " + EXIT_STATUS + " With many dumps: 1 if "
                    "some dump has a cycle, else 2 if some dump could not be analysed, else 0.")
    t.add_argument("dumps", nargs="+", metavar="VMCORE")
    t.add_argument("--vmlinux", help="use this vmlinux for every dump (default: found by each dump's release in "
                                     + ", ".join(VMLINUX_PLACES) + ")")
    t.add_argument("--btf", action="store_true", help=BTF_HELP)
    t.add_argument("--timeout", type=float, default=GDB_TIMEOUT, help="seconds gdb may take on one dump (%(default)s)")


def run_cli(args: argparse.Namespace, progress: Optional[Progress] = None) -> Outcome:
    """Run ``kdlgdb report`` or ``kdlgdb triage``; any KdlError becomes one line and status 2."""
    try:
        if args.command == "triage":
            return _cli_triage(args, progress)
        return _cli_report(args)
    except KdlError as e:
        return Outcome(2, err=f"kdlgdb: {e}\n")


def _cli_report(args: argparse.Namespace) -> Outcome:
    fmt = format_for(args.output, args.format)
    if args.bundle is not None:
        if args.paths:
            raise KdlError("give either --bundle FILE or [VMLINUX] VMCORE, not both")
        bundle = load_bundle(args.bundle)
    else:
        vmlinux, dump, how = dump_inputs("report", args.paths, args.vmlinux, args.btf)
        bundle = collect_bundle(vmlinux, dump, how=how)
        if vmlinux is not None and how != "given" or how.startswith("no vmlinux"):
            bundle.facts["vmlinux_search"] = how.removesuffix(NO_VMLINUX)
        if args.save_bundle:
            save_bundle(bundle, args.save_bundle)
    graph = WaitForGraph(bundle.snapshot)  # one for the report, its summary line and the exit status
    if args.output is None or args.output == "-":
        return Outcome(status(bundle, graph), out=render(bundle, fmt, graph=graph))
    write_report(bundle, args.output, fmt, graph)
    # The report is what was asked for, and it is written: 0 whatever it found (EXIT_STATUS), so that
    # `kdlgdb report vmcore -o hang.html && scp hang.html ...` sends the report of a deadlock too.
    return Outcome(0, out=f"{summary_line(bundle, graph)}\nwrote {args.output} ({fmt})\n")


def _cli_triage(args: argparse.Namespace, progress: Optional[Progress] = None) -> Outcome:
    rows = triage(args.dumps, vmlinux=args.vmlinux, progress=progress, timeout=args.timeout, btf=args.btf)
    return Outcome(triage_status(rows), out=triage_table(rows) + "\n")
