"""The post-mortem report: one document that says what hung and why, in HTML, Markdown, JSON or text.

Its parts, in order:

1. the verdict and one sentence naming the tasks and locks
   (:func:`summary_sentence`: '"kdl_a" (pid 94) and "kdl_b" (pid 95) probably deadlock on
   sem1 and sem2 [kdl_abba]: ABBA order ...');
2. the wait-for graph as a picture (Graphviz SVG, inline in HTML, a ``data:`` image in
   Markdown) and its DOT source (:mod:`kdlgdb.render.dot`);
3. each cycle: every edge with its evidence, each task's stack with the lock
   slow-path frame highlighted, what it holds and wants, the tasks blocked behind
   it and the lock order that prevents it;
4. wait chains without a cycle, grouped by their root, and D-state tasks that wait
   on no known lock, grouped by identical stacks;
5. the kernel log: notable lines and, for each task the hung-task detector named,
   whether the graph explains it;
6. system facts and the problems met while reading the dump.

Everything is computed from a Snapshot, its :class:`~kdlgdb.analysis.graph.WaitForGraph`,
optional kernel log records and a dict of facts; nothing here reads a kernel or
prints. The HTML is one self-contained file (inline CSS and SVG, no script, no
external URL) that opens offline.

This module is the entry point; the parts live beside it: :mod:`.report_data` (the facts and
sentences every format shares), :mod:`.report_json`, :mod:`.report_text`, :mod:`.report_md`,
:mod:`.report_html` and its style sheet ``report.css``.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..analysis.graph import WaitForGraph
from ..errors import KdlError
from ..model import Snapshot
from .report_data import (  # noqa: F401  (the report's API, named here)
    FORMATS,
    REPORT_VERSION,
    HungLike,
    LogLike,
    _data,
    _focus,
    chain_sentence,
    cycle_line,
    cycle_sentence,
    d_state_groups,
    explain_hung,
    format_crash_time,
    format_uptime,
    format_utc,
    headline,
    log_record,
    no_cycle,
    stack_groups,
    summary_sentence,
    undecoded,
    verdict,
)
from .report_html import _html
from .report_json import _json, report_json
from .report_md import _markdown, _md  # noqa: F401
from .report_text import _text

__all__ = [
    "FORMATS",
    "REPORT_VERSION",
    "render_report",
    "report_json",
    "verdict",
    "headline",
    "summary_sentence",
    "no_cycle",
    "undecoded",
    "cycle_sentence",
    "cycle_line",
    "chain_sentence",
    "d_state_groups",
    "stack_groups",
    "explain_hung",
    "log_record",
    "format_utc",
    "format_crash_time",
    "format_uptime",
]


def render_report(
    snapshot: Snapshot,
    graph: WaitForGraph,
    fmt: str,
    *,
    log: Sequence[LogLike] = (),
    hung: Sequence[HungLike] = (),
    notable: Sequence[LogLike] = (),
    facts: Optional[dict[str, Any]] = None,
    svg: Optional[str] = None,
) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`: ``html``, ``md``, ``json``, ``txt``).

    ``log`` is every kernel log record (only counted here), ``notable`` the lines to
    show and ``hung`` the tasks the hung-task detector named (see :func:`explain_hung`);
    records and hung tasks may be dicts or objects with the same fields. ``facts``
    holds what the front end knows about where the data came from (``dump``,
    ``vmlinux``, ``remote``, ``analysed``, ``kdlgdb``, ``debugger``, ``log_note``: why
    there is no log). ``svg`` is the graph already drawn; by default Graphviz draws
    it for HTML and Markdown, and a report without it says why.
    """
    if fmt not in FORMATS:
        raise KdlError(f"unknown report format '{fmt}': use one of {', '.join(FORMATS)}")
    data = _data(snapshot, graph, log, hung, notable, facts, svg, want_svg=fmt in ("html", "md"))
    if fmt == "json":
        return json.dumps(_json(data), indent=2) + "\n"
    if fmt == "txt":
        return _text(data)
    if fmt == "md":
        return _markdown(data)
    return _html(data)
