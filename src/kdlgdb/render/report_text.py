"""The report as plain text.
"""
from __future__ import annotations

import dataclasses

from tabulate import tabulate

from .report_data import _Data, _blocked_groups, _group_head, _group_lines, _holds_wants, _hop, _log_line, _seconds, _short, _stack_lines, _task_head, chain_sentence, headline, lockdep_section
from .text import render_waitfor


def _text(data: _Data) -> str:
    graph, snap = data.graph, data.snapshot
    out = [f"kdlgdb report: {headline(data.kind, data.undecoded)}", "", data.summary, ""]
    out += [f"{label}: {value}" for label, value in data.times] + [""]
    out += ["== Wait-for graph ==", render_waitfor(dataclasses.replace(snap, problems=[]), graph, lockdep=data.lockdep), ""]
    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        out.append(f"== {word} {n}: evidence and stacks ==")
        for edge in cycle.edges:
            out.append(f"  edge: {_short(graph, edge.waiter)}{_hop(graph, edge)}")
            out.append(f"        {edge.confidence}: {edge.evidence}")
        for address in cycle.tasks:
            task = graph.task(address)
            if task is None:
                continue
            out += ["", "  " + _task_head(graph, task), "  " + _holds_wants(graph, task)]
            if task.wait_evidence:
                out.append(f"  waits, by: {task.wait_evidence}")
            out += _stack_lines(task)
        if cycle.blocked_behind:
            out += ["", "  stacks of the tasks blocked behind it:"]
            for group in _blocked_groups(graph, cycle.blocked_behind):
                out += ["  " + _group_head(group), *_group_lines(group, "lock slow path")]
        out.append("")
    if graph.chains:
        out.append("== Wait chains (no cycle) ==")
        for n, chain in enumerate(graph.chains, 1):
            out.append(f"chain {n}: {chain_sentence(chain, graph)}")
            root = graph.task(chain.root) if chain.root is not None else None
            if root is not None:
                out += ["  root: " + _task_head(graph, root), "  root " + _holds_wants(graph, root)]
                out += _stack_lines(root)
            out.append("  stacks of the blocked tasks:")
            for group in _blocked_groups(graph, [t for t in chain.tasks if t != chain.root] + chain.joined):
                out += ["  " + _group_head(group), *_group_lines(group, "lock slow path")]
        out.append("")
    out.append("== D-state tasks waiting on no known lock ==")
    if not data.groups:
        out.append("none")
    for group in data.groups:
        out += [_group_head(group), *_group_lines(group, "where they are")]
    if data.lockdep is not None:
        out += ["== lockdep's reports ==", *lockdep_section(data), ""]
    out += ["", "== Kernel log =="]
    out += _log_text(data)
    out += ["", "== System =="]
    width = max(len(k) for k, _ in data.facts)
    out += [f"{k + ':':<{width + 1}} {v}" for k, v in data.facts]
    out += ["", "== Problems =="]
    out += [f"skipped: {p}" for p in snap.problems] or ["none: every task and lock was read"]
    out += ["", "== DOT source (render with: dot -Tsvg -o graph.svg) ==", data.dot.rstrip()]
    return "\n".join(out) + "\n"


def _log_text(data: _Data) -> list[str]:
    if not data.log_count:
        return [f"no kernel log: {data.log_note or 'not read'}"]
    out = [f"{data.log_count} records"]
    if data.hung:
        out.append("tasks the hung-task detector reported:")
        rows = [(h["comm"], h["pid"], _seconds(h["seconds"]), "yes" if h["explained"] else "NO", h["explanation"])
                for h in data.hung]
        out += ["  " + line for line in tabulate(rows, headers=("COMM", "PID", "BLOCKED", "EXPLAINED", "HOW"),
                                                    tablefmt="plain", disable_numparse=True).splitlines()]
    else:
        out.append("the hung-task detector reported no task")
    if data.notable:
        out.append("notable lines:")
        out += ["  " + line for r in data.notable for line in _log_line(r).split("\n")]
    out.append(f"the last {len(data.tail)} records:")
    out += ["  " + line for r in data.tail for line in _log_line(r).split("\n")]
    return out
