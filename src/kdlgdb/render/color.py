"""Colours for text output: the only module that knows about terminal escapes.

Styles are named by meaning (``"deadlock"``, ``"lock"``...), not by colour, so
the renderers say what a piece of text is and this module decides its look.
Colour is off unless the caller enables it (it is a setting, off in tests and
when output is not a terminal).
"""
from __future__ import annotations

from pygments.console import ansiformat

__all__ = ["STYLES", "paint"]

# style name -> pygments.console.ansiformat attribute ("*x*" is bold x)
STYLES: dict[str, str] = {
    "deadlock": "*red*",  # a cycle of certain edges
    "cycle": "*red*",
    "probable": "*yellow*",  # a cycle with an inferred edge
    "inferred": "yellow",  # the inferred edge itself
    "lock": "cyan",  # lock names
    "root": "*magenta*",  # the root of a wait chain
    "heading": "bold",
    "problem": "yellow",
}


def paint(text: str, style: str, enabled: bool) -> str:
    """Return ``text`` in ``style`` (a key of :data:`STYLES`) when ``enabled``, else unchanged.

    Raises ``KeyError`` for an unknown style, so a typo fails in tests rather
    than silently printing plain text.
    """
    attr = STYLES[style]
    if not enabled or not text:
        return text
    return ansiformat(attr, text)
