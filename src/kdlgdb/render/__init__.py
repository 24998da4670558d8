"""Layer 4: turn a :class:`~kdlgdb.model.Snapshot` and its wait-for graph into output.

``text`` renders crash-like tables and the wait-for report, ``json`` the stable
machine-readable schema, and ``color`` is the only module that knows colours.
Every function returns a string or plain data; nothing here prints.
"""
from __future__ import annotations

__all__ = ["color", "json", "text"]
