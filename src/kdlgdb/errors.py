"""The error types every layer shares.

``KdlError`` is what a user sees as one line; ``ReadError`` is an unreadable
address, caught per task or per lock by the kernel model and turned into a
``Problem``.
"""
from __future__ import annotations

__all__ = ["KdlError", "ReadError", "CorruptError"]


class KdlError(Exception):
    """An error with a message fit to show a user as it is, on one line."""


class ReadError(KdlError):
    """Memory at ``address`` could not be read."""

    def __init__(self, address: int, size: int, why: str = "") -> None:
        self.address = address
        self.size = size
        self.why = why
        super().__init__(f"cannot read {size} bytes at {address:#x}" + (f" ({why})" if why else ""))


class CorruptError(KdlError):
    """Kernel data that was read but makes no sense (a broken list, a bad pointer)."""
