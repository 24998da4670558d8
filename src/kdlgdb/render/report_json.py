"""The report as JSON: :func:`~kdlgdb.render.json.waitfor_json`'s keys plus the report's own.
"""
from __future__ import annotations

from typing import Any

from ..analysis.graph import WaitForGraph
from ..model import Snapshot
from .json import waitfor_json
from .report_data import REPORT_VERSION, _Data, _data, chain_sentence, cycle_sentence, format_crash_time, headline


def report_json(snapshot: Snapshot, graph: WaitForGraph, **kwargs: Any) -> dict[str, Any]:
    """The report as a dict: :func:`~kdlgdb.render.json.waitfor_json`'s keys plus the report's own.

    Added keys: ``report_version``, ``verdict`` (deadlock | probable | none), ``headline``,
    ``undecoded_d_tasks`` (D tasks in no cycle or chain: their wait was not decoded),
    ``summary``, ``cycle_summaries``, ``chain_summaries``, ``dot``, ``d_state_groups``,
    ``kernel_log`` (``records``, ``note``, ``hung_tasks``, ``notable``) and ``facts`` (the front
    end's facts plus ``release``, ``kaslr_offset``, ``task_count``, ``sources``, ``cpus``,
    ``uptime_ns``, ``read_from``, ``crash_time`` (epoch seconds or None), ``crash_time_text``, ``panic``).
    """
    return _json(_data(snapshot, graph, kwargs.get("log", ()), kwargs.get("hung", ()), kwargs.get("notable", ()),
                       kwargs.get("facts"), None, want_svg=False))


def _json(data: _Data) -> dict[str, Any]:
    doc = waitfor_json(data.snapshot, data.graph, data.lockdep)
    graph = data.graph
    doc.update({
        "report_version": REPORT_VERSION,
        "verdict": data.kind,
        "headline": headline(data.kind, data.undecoded),
        "undecoded_d_tasks": data.undecoded,
        "summary": data.summary,
        "cycle_summaries": [cycle_sentence(c, graph) for c in graph.cycles],
        "chain_summaries": [chain_sentence(c, graph) for c in graph.chains],
        "dot": data.dot,
        "d_state_groups": data.groups,
        "kernel_log": {
            "records": data.log_count,
            "note": data.log_note,
            "hung_tasks": data.hung,
            "notable": data.notable,
            "tail": data.tail,
        },
        "facts": {
            **{k: v for k, v in data.raw_facts.items() if k != "log_note"},
            "release": data.snapshot.release,
            "kaslr_offset": f"{data.snapshot.kaslr_offset:#x}",
            "task_count": len(data.snapshot.tasks),
            "sources": list(data.snapshot.sources),
            "cpus": data.snapshot.cpus,
            "uptime_ns": data.snapshot.uptime_ns,
            "read_from": data.snapshot.dump,
            "debug_info": data.snapshot.debug_info,
            "crash_time": data.snapshot.crash_time,
            "crash_time_text": format_crash_time(data.snapshot.crash_time, data.raw_facts.get("dump_mtime")),
            "panic": data.snapshot.panic,
        },
    })
    return doc
