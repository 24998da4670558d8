"""The report as one self-contained HTML file: inline CSS (``report.css``) and SVG, no script, no external URL.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional, Sequence

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import RegexLexer
from pygments.lexers import GraphvizLexer
from pygments.token import Comment, Name, Number, Text, Whitespace

from ..analysis.graph import WaitForGraph
from ..model import CERTAIN, Task
from .dot import svg_for_html
from .report_data import REPORT_VERSION, _Data, _and, _blocked_groups, _cell, _focus, _frame_rows, _group_frames, _group_head, _holds_wants, _lock, _log_line, _plural, _seconds, _short, _task_state, chain_sentence, cycle_sentence, headline, lockdep_section, verdict_class


class StackLexer(RegexLexer):
    """Kernel stack lines: ``#3 __mutex_lock.constprop.0+0x39d [module]``."""

    name = "kdlgdb stack"
    aliases = ["kdlgdb-stack"]
    tokens = {
        "root": [
            (r"[ \t]+", Whitespace),
            (r"\n", Whitespace),
            (r"#\d+", Comment),
            (r"<- \S+(?: \S+)*", Comment.Special),  # the marker: words up to a column gap
            (r"[\w./+-]+\.\w+:\d+", Comment.PreprocFile),  # a source line: kernel/locking/semaphore.c:240
            (r"\+0x[0-9a-fA-F]+", Number.Hex),
            (r"0x[0-9a-fA-F]+", Number.Hex),
            (r"\[[^\]\n]*\]", Name.Namespace),
            (r"[A-Za-z_$.][\w$.]*", Name.Function),
            (r".", Text),
        ]
    }


_CODE = "code"


def _highlight(text: str, lexer: RegexLexer, lines: Sequence[int] = ()) -> str:
    """Pygments HTML for a code block; ``lines`` (1-based) are highlighted."""
    return highlight(text, lexer, HtmlFormatter(cssclass=_CODE, hl_lines=list(lines)))


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


#: The report's own style sheet (a file of the package, beside this module), after Pygments' for the code blocks.
CSS_FILE = Path(__file__).with_name("report.css")


def _css() -> str:
    pygments_css = HtmlFormatter(cssclass=_CODE).get_style_defs("." + _CODE)
    pygments_css = "\n".join(line for line in pygments_css.splitlines() if not line.startswith("pre {"))
    return pygments_css + "\n" + CSS_FILE.read_text(encoding="utf-8")


def _stack_html(frames: Sequence[tuple[str, Optional[str]]], focus: Optional[int], note: str = "") -> str:
    """A stack (``(Frame.describe(), source)`` pairs) as a highlighted code block; the ``focus`` frame is
    highlighted and marked with ``note``; source lines in a column of their own."""
    if not frames:
        return '<p class="note">no stack frames</p>'
    lines = _frame_rows(frames, focus, note, "<-")
    return _highlight("\n".join(lines), StackLexer(), [focus + 1] if focus is not None else [])


class _Anchors:
    """``id`` attributes, each given once (pids repeat for the idle tasks)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, name: str) -> str:
        if name in self.used:
            return ""
        self.used.add(name)
        return f' id="{_h(name)}"'


def _task_link(graph: WaitForGraph, address: int, cell: bool = False) -> str:
    """A link to the task's stack, named as a sentence names it, or bare in a table ``cell``."""
    task = graph.task(address)
    name = _cell(graph, address) if cell else _short(graph, address)
    return f'<a href="#task-{task.pid}">{_h(name)}</a>' if task is not None else _h(name)


def _path_html(graph: WaitForGraph, task: int) -> str:
    parts = [_task_link(graph, task)]
    for edge in graph.path(task):
        parts.append(f" &rarr; waits on <b>{_h(_lock(graph, edge.lock))}</b> &rarr; held by ")
        parts.append(_task_link(graph, edge.owner))
        if edge.confidence != CERTAIN:
            parts.append(' <span class="conf-inferred">(inferred)</span>')
    return "".join(parts)


def _task_html(graph: WaitForGraph, task: Task, anchors: _Anchors, role: str = "") -> str:
    out = [f'<div class="task"{anchors.take(f"task-{task.pid}")}>',
           f"<h4>{_h(role)}{_h(task.name())}</h4>",
           f'<p class="facts">{_h(_task_state(task))}<br>{_h(_holds_wants(graph, task))}']
    if task.wait_evidence:
        out.append(f"<br>how kdlgdb knows it waits: {_h(task.wait_evidence)}")
    out.append("</p>")
    note = "lock slow path" if task.waits_on is not None else "where it is"
    out.append(_stack_html([(f.describe(), f.source) for f in task.frames], _focus(task), note))
    out.append("</div>")
    return "\n".join(out)


def _group_html(group: dict[str, Any], anchors: _Anchors, note: str) -> str:
    marks = "".join(f"<span{anchors.take(f'task-{pid}')}></span>" for pid in group["pids"])
    return (f"<h4>{marks}{_h(_group_head(group))}</h4>"
            + _stack_html(_group_frames(group), group["focus"], note))


def _groups_html(groups: list[dict[str, Any]], anchors: _Anchors, note: str) -> str:
    """Stacks of blocked tasks, grouped, in one collapsed block."""
    if not groups:
        return ""
    tasks = sum(g["count"] for g in groups)
    head = f"stacks of the {_plural(tasks, 'blocked task')}" + (
        f" ({_plural(len(groups), 'distinct stack')})" if len(groups) != tasks else "")
    return ("<details><summary>" + _h(head) + "</summary>"
            + "".join(_group_html(g, anchors, note) for g in groups) + "</details>")


def _html(data: _Data) -> str:
    graph, snap = data.graph, data.snapshot
    anchors = _Anchors()
    title = f"kdlgdb: {headline(data.kind, data.undecoded)}" + (f" in {snap.release}" if snap.release else "")
    meta = " · ".join(v for k, v in data.facts if k in ("kernel release", "dump", "live target"))
    times = " · ".join(f'<span class="time"><b>{_h(label)}:</b> {_h(value)}</span>' for label, value in data.times)
    body = [
        f'<header class="verdict {verdict_class(data.kind, data.undecoded)}">',
        f'<div class="label">{_h(headline(data.kind, data.undecoded))}</div>',
        f'<p class="summary">{_h(data.summary)}</p>',
        f'<p class="meta">{_h(meta)}</p>',
        f'<p class="meta times">{times}</p>',
        "</header>",
    ]
    nav = ['<a href="#graph">Wait-for graph</a>']
    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        nav.append(f'<a href="#cycle-{n}">{word} {n}</a>')
    if graph.chains:
        nav.append('<a href="#chains">Wait chains</a>')
    nav += ['<a href="#d-state">D-state tasks</a>', '<a href="#kernel-log">Kernel log</a>',
            '<a href="#system">System</a>', '<a href="#problems">Problems</a>']
    body.append("<nav>" + "".join(nav) + "</nav>")

    body.append('<section id="graph"><h2>Wait-for graph</h2>')
    for svg in data.svgs:  # one picture per connected part, one under the other, each at its own size
        body.append(f'<figure class="graph">{svg_for_html(svg)}</figure>')
    if not data.svgs:
        body.append(f'<p class="note">No picture: {_h(data.svg_error)}</p>')
    body.append(
        '<p class="legend"><span><i class="sw" style="border-color:red;background:#ffe0e0"></i>cycle</span>'
        '<span><i class="sw" style="border-color:#e67e22;background:#fdebd0"></i>blocked behind a cycle</span>'
        '<span><i class="sw" style="border-color:#8e44ad;background:#f4e6fa;border-style:double;border-width:4px">'
        "</i>root of a chain</span>"
        '<span><i class="sw" style="border-color:#555;border-style:dashed;height:0;border-width:1px 0 0"></i>'
        "inferred hold</span>"
        "<span>boxes are tasks, ellipses locks; task &rarr; lock: waits on, lock &rarr; task: held by</span></p>"
    )
    body.append("<details><summary>DOT source</summary>" + _highlight(data.dot, GraphvizLexer()) + "</details>")
    body.append("</section>")

    for n, cycle in enumerate(graph.cycles, 1):
        word = "Deadlock" if cycle.verdict == "deadlock" else "Probable deadlock"
        who = _and([_short(graph, t) for t in cycle.tasks])
        body.append(f'<section id="cycle-{n}" class="cycle {cycle.verdict}"><h2>{word} {n}: {_h(who)}</h2>')
        body.append(f"<p>{_h(cycle_sentence(cycle, graph))}.</p>")
        body.append("<h3>Edges</h3><table><tr><th>waiter</th><th>waits on</th><th>held by</th>"
                    "<th>confidence</th><th>evidence</th></tr>")
        for e in cycle.edges:
            lock = graph.lock(e.lock)
            kind = f"{lock.type} {e.lock:#x}" if lock else f"{e.lock:#x}"
            body.append(
                f"<tr><td>{_task_link(graph, e.waiter, cell=True)}</td><td><b>{_h(_lock(graph, e.lock))}</b><br>"
                f"<small>{_h(kind)}</small></td><td>{_task_link(graph, e.owner, cell=True)}</td>"
                f'<td class="conf-{_h(e.confidence)}">{_h(e.confidence)}</td><td>{_h(e.evidence)}</td></tr>'
            )
        body.append("</table><h3>Tasks</h3>")
        for address in cycle.tasks:
            task = graph.task(address)
            if task is not None:
                body.append(_task_html(graph, task, anchors))
        if cycle.blocked_behind:
            body.append(f"<h3>Blocked behind it ({len(cycle.blocked_behind)})</h3><ul>")
            body += [f"<li>{_path_html(graph, t)}</li>" for t in cycle.blocked_behind]
            body.append("</ul>")
            body.append(_groups_html(_blocked_groups(graph, cycle.blocked_behind), anchors, "lock slow path"))
        body.append(f'<div class="advice"><b>Lock order:</b> {_h(cycle.advice)}</div></section>')

    if graph.chains:
        body.append('<section id="chains"><h2>Wait chains (no cycle)</h2>')
        for n, chain in enumerate(graph.chains, 1):
            body.append(f'<div class="chain" id="chain-{n}"><h3>Chain {n}</h3>')
            body.append(f"<p>{_h(chain_sentence(chain, graph))}.</p><ul>")
            blocked = [t for t in chain.tasks if t != chain.root] + chain.joined
            body += [f"<li>{_path_html(graph, t)}</li>" for t in blocked]
            body.append("</ul>")
            body.append(_groups_html(_blocked_groups(graph, blocked), anchors, "lock slow path"))
            root = graph.task(chain.root) if chain.root is not None else None
            if root is not None:
                body.append(_task_html(graph, root, anchors, role="Root: "))
            body.append("</div>")
        body.append("</section>")

    body.append('<section id="d-state"><h2>D-state tasks waiting on no known lock</h2>')
    if not data.groups:
        body.append('<p class="note">None: every task in D state is in a cycle or chain above.</p>')
    for group in data.groups:
        body.append(_group_html(group, anchors, "where they are"))
    body.append("</section>")

    body.append('<section id="kernel-log"><h2>Kernel log</h2>')
    if not data.log_count:
        body.append(f'<p class="note">No kernel log: {_h(data.log_note or "not read")}.</p>')
    else:
        body.append(f"<p>{data.log_count} records.</p>")
        if data.hung:
            body.append("<h3>Tasks the hung-task detector reported</h3><table><tr><th>task</th><th>blocked</th>"
                        "<th>explained by the graph</th><th>how</th></tr>")
            for h in data.hung:
                how = _h(h["explanation"])
                if h["anchor"]:
                    how = f'<a href="#{_h(h["anchor"])}">{how}</a>'
                yes = "yes" if h["explained"] else "no"
                body.append(f"<tr><td>{_h(h['comm'])} ({h['pid']})</td><td>{_h(_seconds(h['seconds']))}</td>"
                            f'<td class="{yes}">{yes}</td><td>{how}</td></tr>')
            body.append("</table>")
        else:
            body.append("<p>The hung-task detector reported no task.</p>")
        if data.notable:
            body.append("<h3>Notable lines</h3><pre class=\"plain\">"
                        + _h("\n".join(_log_line(r) for r in data.notable)) + "</pre>")
        body.append(f"<details><summary>The last {len(data.tail)} records</summary><pre class=\"plain\">"
                    + _h("\n".join(_log_line(r) for r in data.tail)) + "</pre></details>")
    body.append("</section>")

    if data.lockdep is not None:
        body.append('<section id="lockdep"><h2>lockdep\'s reports</h2><pre class="plain">'
                    + _h("\n".join(lockdep_section(data))) + "</pre></section>")
    body.append('<section id="system"><h2>System</h2><table class="facts">')
    body += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in data.facts]
    body.append("</table></section>")

    body.append('<section id="problems"><h2>Problems</h2>')
    if snap.problems:
        body.append('<ul class="problems">' + "".join(f"<li>skipped: {_h(p)}</li>" for p in snap.problems) + "</ul>")
    else:
        body.append('<p class="note">None: every task and lock was read.</p>')
    body.append("</section>")
    body.append(f"<footer>kdlgdb report, format {REPORT_VERSION}</footer>")

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(title)}</title>\n<style>{_css()}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
