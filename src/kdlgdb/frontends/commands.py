"""What each kd-* command does, independent of the debugger it runs in.

A front end parses the user's words with these parsers, gets a Snapshot from
its target (a Kernel for ``KERNEL_COMMANDS``), and calls ``run`` to get the
text to print. Replay tests drive the
very same functions.
"""
from __future__ import annotations

import argparse
import json
import re
from typing import Callable, Optional

from ..analysis import kernlog
from ..analysis.graph import WaitForGraph
from ..errors import KdlError
from ..kernel.backtrace import scan_frames
from ..kernel.info import system_info
from ..kernel.layout import Kernel
from ..kernel.printk import kernel_log
from ..kernel.unwind import SCAN
from ..model import Frame, Problem, Snapshot, Task
from ..render import json as render_json
from ..render import text as render_text

__all__ = ["COMMANDS", "KERNEL_COMMANDS", "UsageError", "HelpShown", "parse", "run", "find_task", "report_parser"]


class UsageError(KdlError):
    """Bad options: the message is argparse's, on one line, with the usage."""


class HelpShown(Exception):
    """``-h`` printed the help: nothing more to do."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message}; usage: {self.format_usage().strip().removeprefix('usage: ')}")

    def exit(self, status: int = 0, message: Optional[str] = None):  # type: ignore[override]
        if status == 0:
            raise HelpShown()
        raise UsageError(message or "bad arguments")


def _tasks_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-tasks", description="List every task (all threads, and each CPU's idle task), like ps.")
    p.add_argument("-s", "--states", help="only tasks in these states: ps letters (D, DS) or crash's names (UN, "
                                          "RU,IN; two letters that are a crash name are that name: ST is stopped)")
    p.add_argument("-t", "--min-time", type=float, metavar="SECONDS",
                   help="only tasks that last ran at least SECONDS before the dump (blocked at least that long)")
    p.add_argument("-l", "--longest", action="store_true", help="the tasks that last ran longest ago first")
    p.add_argument("-p", "--pid", type=int, help="only this pid")
    p.add_argument("pattern", nargs="?", help="only tasks whose command matches this regular expression")
    return p


def _bt_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-bt", description="Kernel stack of a task, sleeping ones included: exact frames, unwound with "
                "the kernel's ORC data (frame pointers on a kernel without ORC) from the task's saved stack pointer, "
                "or from its CPU's registers for a task on a CPU. An interrupt or exception boundary has a line of "
                "its own; an unwind stopped by a corrupt stack ends with a line saying why.")
    p.add_argument("-s", "--scan", action="store_true",
                   help="the old stack scan instead: every return address on the stack, stale ones included")
    p.add_argument("-f", "--full", action="store_true",
                   help="each frame's arguments and locals with their values, where the debug info has them (gdb)")
    p.add_argument("-g", "--group", nargs="?", const="D", metavar="STATES",
                   help="the stacks of all tasks in STATES (default D; ps letters or crash's names, as kd-tasks -s), "
                        "grouped by identical stack, the most common first (crash's foreach UN bt, summarised)")
    p.add_argument("task", nargs="?", help="pid, task_struct address (0x...), or a unique command name")
    return p


def _held_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-held", description="The locks each task holds, from lockdep's held_locks (a kernel with "
                "CONFIG_LOCKDEP), like lockdep's 'Showing all locks held in the system' (SysRq-d).")
    p.add_argument("--json", action="store_true", help="print them as JSON: each task's pid, comm and held entries")
    p.add_argument("task", nargs="?", help="only this task: pid, task_struct address (0x...), or a unique command name")
    return p


def _locks_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-locks", description="Every lock some task waits on: owners, waiters, counters.")
    p.add_argument("--json", action="store_true", help="print JSON (the 'locks' part of kd-waitfor --json)")
    return p


def _waitfor_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-waitfor", description="The wait-for graph: who waits on what, who holds it, and deadlock cycles.")
    p.add_argument("--json", action="store_true", help="print the graph as JSON")
    p.add_argument("-p", "--pid", type=int, help="only the cycle or chain this pid is in")
    p.add_argument("--stacks", action="store_true", help="after the graph, the stack of each task in a cycle or chain")
    return p


def _dmesg_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-dmesg", description="The kernel log (the printk ring buffer), like dmesg.")
    p.add_argument("--grep", metavar="RE", help="only records with a line that matches this regular expression")
    p.add_argument("--notable", action="store_true",
                   help="only hung-task reports, lockdep splats, BUG, WARNING, Oops and panic lines")
    return p


def report_parser() -> argparse.ArgumentParser:
    """kd-report's options; the command itself is each front end's (it writes a file)."""
    from ..render.report import FORMATS

    p = _Parser(
        prog="kd-report",
        description="Write a post-mortem report of this kernel: the verdict, the wait-for graph as a picture, each "
                    "deadlock with stacks and evidence, wait chains, D-state tasks, the kernel log and system facts.")
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="the report file; its extension (.html, .md, .json, .txt) gives the format")
    p.add_argument("--format", choices=FORMATS, help="the format, whatever the file is called")
    return p


def _info_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kd-info", description="Facts for a bug report: kernel release, machine, CPUs, uptime, KASLR "
                "offset, the dump and who reads it, crash time, panic message, the lock data this kernel offers.")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    return p


COMMANDS = {
    "kd-info": _info_parser,
    "kd-tasks": _tasks_parser,
    "kd-bt": _bt_parser,
    "kd-locks": _locks_parser,
    "kd-held": _held_parser,
    "kd-waitfor": _waitfor_parser,
    "kd-dmesg": _dmesg_parser,
}

#: Commands that read the kernel (a Kernel) rather than a Snapshot.
KERNEL_COMMANDS = frozenset({"kd-dmesg", "kd-info"})


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    return COMMANDS[command]().parse_args(argv)


def help_text(command: str) -> str:
    return COMMANDS[command]().format_help()


def find_task(snapshot: Snapshot, spec: str) -> Task:
    """A task by pid, task_struct address, or (unique) command name."""
    try:
        value = int(spec, 0)
    except ValueError:
        named = [t for t in snapshot.tasks if t.comm == spec]
        if len(named) == 1:
            return named[0]
        if named:
            raise UsageError(f"{len(named)} tasks are called '{spec}': give a pid (" + ", ".join(str(t.pid) for t in named[:8]) + ")")
        raise KdlError(f"no task with pid, address or command '{spec}'") from None
    for task in snapshot.tasks:
        if task.address == value or (value < 1 << 32 and task.pid == value):
            return task
    raise KdlError(f"no task with pid or address {spec}")


def shows_source_lines(command: str, args: argparse.Namespace) -> bool:
    """Whether the command's output has the file:line of stack frames (kd-bt, kd-waitfor --json)."""
    return command == "kd-bt" or (command == "kd-waitfor" and args.json)


# The state names of crash's ps (its -S and the ST column) and the ps letter each is shown as here. crash's SW
# (swapping), WA (waking) and NE (new) have no letter in the kernel's task_state_array: asked for, they are an error.
CRASH_STATES = {"RU": "R", "IN": "S", "UN": "D", "ST": "T", "TR": "t", "DE": "X", "ZO": "Z", "PA": "P", "ID": "I"}
PS_LETTERS = "RSDTtXZPI"


def state_letters(spec: str) -> set[str]:
    """The ps letters ``kd-tasks -s SPEC`` asks for: comma-separated parts, each a crash state name or ps letters."""
    letters: set[str] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part in CRASH_STATES:
            letters.add(CRASH_STATES[part.upper()])
        elif all(c in PS_LETTERS for c in part):
            letters.update(part)
        else:
            raise UsageError(f"unknown state '{part}': use ps letters ({' '.join(PS_LETTERS)}) or crash's "
                             f"names ({' '.join(CRASH_STATES)})")
    return letters


def select_tasks(snapshot: Snapshot, args: argparse.Namespace) -> list[Task]:
    tasks = snapshot.tasks
    if args.states:
        wanted = state_letters(args.states)
        tasks = [t for t in tasks if t.state in wanted]
    if getattr(args, "min_time", None) is not None:
        if all(t.last_ran_ns is None for t in snapshot.tasks):
            raise UsageError("-t: this kernel records no time a task last ran (no CONFIG_SCHED_INFO)")
        tasks = [t for t in tasks if t.last_ran_ns is not None and t.last_ran_ns >= args.min_time * 1e9]
    if getattr(args, "longest", False):
        tasks = sorted(tasks, key=lambda t: -1 if t.last_ran_ns is None else t.last_ran_ns, reverse=True)
    if args.pid is not None:
        tasks = [t for t in tasks if t.pid == args.pid]
    if args.pattern:
        try:
            rx = re.compile(args.pattern)
        except re.error as e:
            raise UsageError(f"bad pattern '{args.pattern}': {e}") from None
        tasks = [t for t in tasks if rx.search(t.comm)]
    return tasks


def run_on(command: str, args: argparse.Namespace, snapshot: Callable[[bool], Snapshot], kernel: Kernel,
           color: bool = False, **extra) -> tuple[str, Optional[Snapshot]]:
    """Every front end's dispatch: kd-COMMAND on a kernel. KERNEL_COMMANDS read ``kernel`` itself; the others a
    snapshot of it, ``snapshot(source_lines)`` (with each frame's file:line when the output shows it). Returns
    the text and the snapshot it used (None for KERNEL_COMMANDS), for the exit status."""
    if command in KERNEL_COMMANDS:
        return run(command, args, None, color=color, kernel=kernel), None
    snap = snapshot(shows_source_lines(command, args))
    return run(command, args, snap, color=color, kernel=kernel, **extra), snap


def run(command: str, args: argparse.Namespace, snapshot: Optional[Snapshot], color: bool = False,
        kernel: Optional[Kernel] = None, variables: Optional[Callable[[Task, int, Frame], list[str]]] = None) -> str:
    """The text a command prints for ``snapshot`` (for KERNEL_COMMANDS: for ``kernel``).

    ``variables(task, n, frame)``: the lines naming frame n's variables, for ``kd-bt -f`` (a front end
    with debug info gives it: gdb)."""
    if command in KERNEL_COMMANDS:
        if kernel is None:
            raise KdlError(f"{command} reads the kernel itself: it needs a Kernel, not a snapshot")
        if command == "kd-info":
            info = system_info(kernel)
            if args.json:
                return json.dumps(info.to_dict(), indent=2)
            return "\n".join(f"{label:13} {value}" for label, value in info.lines())
        return _dmesg(args, kernel)
    if snapshot is None:
        raise KdlError(f"{command} needs a snapshot")
    if command == "kd-tasks":
        return render_text.render_tasks(snapshot, select_tasks(snapshot, args))
    if command == "kd-bt":
        if args.group is not None:
            if args.task:
                raise UsageError("give a task or -g, not both")
            wanted = state_letters(args.group)
            return render_text.render_stack_groups(snapshot, [t for t in snapshot.tasks if t.state in wanted])
        if not args.task:
            raise UsageError("which task? (a pid, a task_struct address or a command name; or -g)")
        return _bt(args, snapshot, kernel, variables)
    if command == "kd-held":
        tasks = [find_task(snapshot, args.task)] if args.task else snapshot.tasks
        if args.json:
            return json.dumps(render_json.held_json(snapshot, tasks), indent=2)
        return render_text.render_held(snapshot, tasks)
    graph = WaitForGraph(snapshot)
    if command == "kd-locks":
        if args.json:
            return json.dumps(render_json.waitfor_json(snapshot, graph)["locks"], indent=2)
        return render_text.render_locks(snapshot, graph, color=color)
    if command == "kd-waitfor":
        lockdep = lockdep_findings(snapshot, graph, kernel)
        if args.json:
            return json.dumps(render_json.waitfor_json(snapshot, graph, lockdep), indent=2)
        text = render_text.render_waitfor(snapshot, graph, color=color, pid=args.pid, lockdep=lockdep)
        if args.stacks:
            text += "\n\n" + render_text.render_graph_stacks(snapshot, graph, pid=args.pid)
        return text
    raise KdlError(f"unknown command {command}")


def _bt(args: argparse.Namespace, snapshot: Snapshot, kernel: Optional[Kernel],
        variables: Optional[Callable[[Task, int, Frame], list[str]]]) -> str:
    task = find_task(snapshot, args.task)
    frames = None
    if getattr(args, "scan", False):
        if kernel is None:
            raise KdlError("kd-bt -s reads the stack again: it needs the kernel, not a snapshot")
        frames = scan_frames(kernel, task)
        if frames is None:
            raise KdlError(f"task {task.pid} is on CPU {task.cpu}: it has no saved stack pointer to scan from "
                           "(kd-bt without -s unwinds it from its CPU's registers)")
    shown = None
    if getattr(args, "full", False):
        if variables is None:
            raise KdlError("kd-bt -f needs the debug info of a debugger with frame variables (gdb)")
        shown = lambda n, frame: variables(task, n, frame)  # noqa: E731
    return render_text.render_bt(snapshot, task, frames, SCAN if frames is not None else None, shown)


def lockdep_findings(snapshot: Snapshot, graph: WaitForGraph, kernel: Optional[Kernel]) -> Optional[kernlog.LockdepFindings]:
    """lockdep's reports in the kernel log, tied to the graph's cycles: on a kernel with lockdep, when the
    front end gives the Kernel (the log is read from it); None otherwise."""
    if kernel is None or snapshot.lockdep_on is None:
        return None
    try:
        records = kernel_log(kernel, [])
    except KdlError:
        return None  # no log to read: the graph alone
    return kernlog.lockdep_findings(records, snapshot, graph.cycles)


def _dmesg(args: argparse.Namespace, kernel: Kernel) -> str:
    """kd-dmesg: the log as ``[   12.345678] text`` lines, then the records that could not be read."""
    try:
        rx = re.compile(args.grep, re.MULTILINE) if args.grep is not None else None
    except re.error as e:
        raise UsageError(f"bad pattern '{args.grep}': {e}") from None
    problems: list[Problem] = []
    records = kernel_log(kernel, problems)
    if args.notable:
        records = kernlog.notable(records)
    if rx is not None:
        records = kernlog.grep(records, rx)
    return "\n".join([kernlog.format_record(r) for r in records] + [f"skipped: {p}" for p in problems])


def verdict_status(snapshot: Snapshot, graph: Optional[WaitForGraph] = None) -> int:
    """Exit status for scripts: 1 if some cycle (deadlock or probable) exists, else 0 (``graph``: the
    snapshot's, when the caller has it)."""
    return 1 if (graph if graph is not None else WaitForGraph(snapshot)).cycles else 0
