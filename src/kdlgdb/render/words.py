"""The words the text output and the report share: one place for how a count, a list and a task are said."""
from __future__ import annotations

from typing import Sequence

from ..analysis.graph import WaitForGraph

__all__ = ["and_list", "plural", "task_label"]


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``; ``nothing`` for none."""
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def plural(count: int, word: str) -> str:
    """``1 task``, ``2 tasks``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def task_label(graph: WaitForGraph, address: int) -> str:
    """``kdl_a (94)``, or ``task 0x... (not found)`` for an address the snapshot has no task for."""
    task = graph.task(address)
    return f"{task.comm} ({task.pid})" if task else f"task {address:#x} (not found)"
