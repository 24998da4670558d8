"""The words the text output and the report share: one place for how a count, a list and a task are said."""
from __future__ import annotations

from typing import Callable, Hashable, Iterable, Sequence, TypeVar

from ..analysis.graph import NOT_LISTED, WaitForGraph
from ..model import Snapshot, Task

__all__ = ["and_list", "plural", "group_tasks", "first_names", "task_label", "task_cell", "undecoded", "no_cycle"]

K = TypeVar("K", bound=Hashable)


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``; ``nothing`` for none."""
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def plural(count: int, word: str) -> str:
    """``1 task``, ``2 tasks``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def group_tasks(tasks: Iterable[Task], key: Callable[[Task], K]) -> list[tuple[K, list[Task]]]:
    """``tasks`` grouped by ``key`` (a stack, as the caller spells it), the biggest group first, then the one
    with the lowest pid; each group's tasks in pid order. ``kd-bt -g`` and the report's stack groups."""
    groups: dict[K, list[Task]] = {}
    for task in sorted(tasks, key=lambda t: (t.pid, t.address)):
        groups.setdefault(key(task), []).append(task)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0].pid))


def first_names(names: Sequence[str], limit: int) -> list[str]:
    """The first ``limit`` of ``names``, then ``N more`` for the rest: every list of tasks a line names."""
    shown = list(names[:limit])
    return shown + [f"{len(names) - limit} more"] if len(names) > limit else shown


def task_label(graph: WaitForGraph, address: int) -> str:
    """``"kdl_a" (pid 94)``, or ``task 0x... (not in the task list)`` (:meth:`WaitForGraph.task_name`)."""
    return graph.task_name(address)


def task_cell(graph: WaitForGraph, address: int) -> str:
    """A task in a table cell, where no sentence can misread it: ``kdl_a (94)``, the bare command."""
    task = graph.task(address)
    return f"{task.comm} ({task.pid})" if task else f"task {address:#x} {NOT_LISTED}"


def undecoded(snapshot: Snapshot, graph: WaitForGraph) -> list[Task]:
    """The D tasks the graph does not account for: in no cycle or chain, their wait not decoded."""
    return [t for t in snapshot.tasks if t.state == "D" and graph.membership(t.address) is None]


def no_cycle(undecoded_count: int) -> str:
    """What is known when there is no cycle: ``no deadlock`` only when every D task is accounted for, else
    ``no lock cycle found; 3 D tasks with undecoded waits`` (they may wait on each other through what kdlgdb
    cannot read)."""
    if not undecoded_count:
        return "no deadlock"
    return f"no lock cycle found; {plural(undecoded_count, 'D task')} with undecoded waits"
