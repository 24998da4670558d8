"""The report as Markdown (GitHub's flavour: tables, fenced code, the graph as a ``data:`` image).
"""
from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from tabulate import tabulate

from .dot import svg_for_html
from .report_data import _Data, _blocked_groups, _cell, _group_head, _group_lines, _holds_wants, _lock, _log_line, _path, _seconds, _stack_lines, _task_head, chain_sentence, cycle_sentence, headline, lockdep_section


def _md(text: str) -> str:
    """Text safe inside a Markdown paragraph or table cell (HTML, emphasis, code and cell marks escaped).

    Underscores and brackets stay: intraword ``_`` is no emphasis, and ``m1 [kdl_mutex]`` is no link.
    """
    out = html.escape(str(text), quote=False).replace("\n", " ")
    for ch in "\\`*|":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    cells = [[_md(str(c)) for c in row] for row in rows]
    return tabulate(cells, headers=list(headers), tablefmt="github", disable_numparse=True).splitlines()


def _fence(lines: Sequence[str], lang: str = "") -> list[str]:
    return [f"```{lang}", *lines, "```"]


def _groups_md(groups: list[dict[str, Any]], note: str) -> list[str]:
    out = []
    for group in groups:
        out += [_md(_group_head(group)) + ":", "", *_fence(_group_lines(group, note)), ""]
    return out


def _markdown(data: _Data) -> str:
    graph, snap = data.graph, data.snapshot
    out = [f"# kdlgdb report: {headline(data.kind, data.undecoded)}", "", f"**{_md(data.summary)}**", ""]
    out += [" · ".join(f"*{_md(label)}:* {_md(value)}" for label, value in data.times), ""]
    out += ["## Wait-for graph", ""]
    for svg in data.svgs:  # one picture per connected part
        encoded = base64.b64encode(svg_for_html(svg).encode()).decode()  # a standalone SVG still, without its DTD URL
        out += [f"![wait-for graph: cycles in red, roots of chains in purple](data:image/svg+xml;base64,{encoded})", ""]
    if not data.svgs:
        out += [f"*No picture: {_md(data.svg_error)}*", ""]
    out += ["<details><summary>DOT source</summary>", "", *_fence(data.dot.rstrip().splitlines(), "dot"), "",
            "</details>", ""]
    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        out += [f"## {word} {n}", "", _md(cycle_sentence(cycle, graph)) + ".", ""]
        rows = [(_cell(graph, e.waiter), _lock(graph, e.lock), _cell(graph, e.owner), e.confidence, e.evidence)
                for e in cycle.edges]
        out += _md_table(rows, ("waiter", "waits on", "held by", "confidence", "evidence")) + [""]
        for address in cycle.tasks:
            task = graph.task(address)
            if task is None:
                continue
            out += [f"### {_md(task.name())}", "", _md(_task_head(graph, task)) + "; "
                    + _md(_holds_wants(graph, task)) + ".", ""]
            if task.wait_evidence:
                out += [f"How kdlgdb knows it waits: {_md(task.wait_evidence)}.", ""]
            out += _fence(_stack_lines(task)) + [""]
        if cycle.blocked_behind:
            out += [f"Blocked behind it ({len(cycle.blocked_behind)}):", ""]
            out += _fence([_path(graph, t) for t in cycle.blocked_behind]) + [""]
            out += _groups_md(_blocked_groups(graph, cycle.blocked_behind), "lock slow path")
        out += [f"> **Lock order:** {_md(cycle.advice)}", ""]
    if graph.chains:
        out += ["## Wait chains (no cycle)", ""]
        for n, chain in enumerate(graph.chains, 1):
            out += [f"### Chain {n}", "", _md(chain_sentence(chain, graph)) + ".", ""]
            blocked = [t for t in chain.tasks if t != chain.root] + chain.joined
            out += _fence([_path(graph, t) for t in blocked]) + [""]
            out += _groups_md(_blocked_groups(graph, blocked), "lock slow path")
            root = graph.task(chain.root) if chain.root is not None else None
            if root is not None:
                out += [f"Root: {_md(_task_head(graph, root))}; {_md(_holds_wants(graph, root))}.", ""]
                out += _fence(_stack_lines(root)) + [""]
    out += ["## D-state tasks waiting on no known lock", ""]
    if not data.groups:
        out += ["None.", ""]
    out += _groups_md(data.groups, "where they are")
    out += ["## Kernel log", ""]
    if not data.log_count:
        out += [f"No kernel log: {_md(data.log_note or 'not read')}.", ""]
    else:
        out += [f"{data.log_count} records.", ""]
        if data.hung:
            rows = [(h["comm"], h["pid"], _seconds(h["seconds"]), "yes" if h["explained"] else "NO",
                     h["explanation"]) for h in data.hung]
            out += _md_table(rows, ("task", "pid", "blocked", "explained by the graph", "how")) + [""]
        else:
            out += ["The hung-task detector reported no task.", ""]
        if data.notable:
            out += ["Notable lines:", "", *_fence([_log_line(r) for r in data.notable]), ""]
        out += [f"<details><summary>The last {len(data.tail)} records</summary>", "",
                *_fence([_log_line(r) for r in data.tail]), "", "</details>", ""]
    if data.lockdep is not None:
        out += ["## lockdep's reports", "", *_fence(lockdep_section(data)), ""]
    out += ["## System", ""] + _md_table(data.facts, ("fact", "value")) + [""]
    out += ["## Problems", ""]
    out += [f"- skipped: {_md(str(p))}" for p in snap.problems] or ["None: every task and lock was read."]
    return "\n".join(out) + "\n"
