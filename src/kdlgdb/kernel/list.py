"""Checked walks of the kernel's ``struct list_head`` rings (include/linux/list.h).

Every step checks ``next->prev`` and the walk is bounded, so a corrupt or
half-overwritten list ends in a :class:`CorruptError` naming the head and the
last good node, never in an endless loop. Reads that fail raise ReadError.
"""
from __future__ import annotations

from typing import Iterator

from ..errors import CorruptError
from .layout import KERNEL_SPACE, Kernel, le64

__all__ = ["list_for_each", "list_for_each_entry", "list_empty"]

MAX_ENTRIES = 1_000_000


def list_for_each(k: Kernel, head: int, limit: int = MAX_ENTRIES) -> Iterator[int]:
    """The nodes of the ring headed by ``head`` (``struct list_head *``), head excluded, in order."""
    prev, node = head, k.u64(head)
    for _ in range(limit + 1):
        if node == head:
            return
        if node < KERNEL_SPACE:
            raise CorruptError(f"list {head:#x} is broken after {prev:#x}: next is {node:#x}")
        links = k.read(node, 16)
        if le64(links, 8) != prev:
            raise CorruptError(f"list {head:#x} is broken at {node:#x}: its prev does not point back to {prev:#x}")
        yield node
        prev, node = node, le64(links, 0)
    raise CorruptError(f"list {head:#x} has more than {limit} entries: it loops")


def list_for_each_entry(k: Kernel, head: int, member_offset: int, limit: int = MAX_ENTRIES) -> Iterator[int]:
    """The addresses of the structs linked into ``head`` through their list_head at ``member_offset``."""
    for node in list_for_each(k, head, limit):
        yield node - member_offset


def list_empty(k: Kernel, head: int) -> bool:
    return k.u64(head) == head
