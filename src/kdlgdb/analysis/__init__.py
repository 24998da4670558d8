"""Layer 3: analysis of a :class:`~kdlgdb.model.Snapshot` (pure Python, no debugger).

:class:`WaitForGraph` builds the task/lock wait-for graph and finds deadlock
cycles, the tasks blocked behind them, and the chains of other blocked tasks
with their roots.
"""
from __future__ import annotations

from .graph import Chain, Cycle, Edge, WaitForGraph

__all__ = ["Chain", "Cycle", "Edge", "WaitForGraph"]
