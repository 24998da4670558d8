"""Checked walks of the kernel's ``struct list_head`` rings (include/linux/list.h) and ``struct rb_node``
trees (include/linux/rbtree.h): every list and tree kdlgdb follows goes through here.

Every step checks the back link (``next->prev``; an rb_node's parent) and the walk is bounded, so a
corrupt or half-overwritten list ends in a :class:`CorruptError` naming the list and the last good
node, never in an endless loop. Reads that fail raise ReadError. A node is yielded only after it is
read and checked.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

from ..errors import CorruptError, ReadError
from .layout import KERNEL_SPACE, Kernel, le64

__all__ = ["list_walk", "list_for_each", "list_for_each_entry", "list_for_each_entry_read", "list_empty",
           "rbtree_inorder", "BadLink", "MAX_ENTRIES"]

MAX_ENTRIES = 1_000_000
RB_PARENT_MASK = ~0x3  # rb_node.__rb_parent_color: parent pointer, colour in bit 0


class BadLink(CorruptError):
    """A ``next`` pointer that is no kernel address."""


def list_walk(k: Kernel, head: int, read_links: Callable[[int], bytes], name: str, limit: int = MAX_ENTRIES,
              ring: bool = False) -> Iterator[tuple[int, bytes]]:
    """(node, its ``next``/``prev`` pair) of each node of the ring headed by ``head`` (``struct list_head *``),
    head excluded, in order. ``read_links(node)`` returns the 16 bytes of the node's list_head (from a larger
    read of the struct around it, if the caller wants that). ``name`` names the list in errors.

    ``ring``: ``head`` is a node like the others (a waiter on a stack, not a list head), and its own ``prev``
    is checked too when the walk comes back to it.
    """
    prev, node = head, k.u64(head)
    for _ in range(limit + 1):
        if node == head and not ring:
            return
        if node < KERNEL_SPACE:
            raise BadLink(f"{name} is broken after {prev:#x}: next is {node:#x}")
        links = read_links(node)
        if le64(links, 8) != prev:
            raise CorruptError(f"{name} is broken at {node:#x}: its prev does not point back to {prev:#x}")
        if node == head:
            return
        yield node, links
        prev, node = node, le64(links, 0)
    raise CorruptError(f"{name} has more than {limit} entries: it loops")


def list_for_each(k: Kernel, head: int, limit: int = MAX_ENTRIES) -> Iterator[int]:
    """The nodes of the ring headed by ``head`` (``struct list_head *``), head excluded, in order."""
    for node, _ in list_walk(k, head, lambda node: k.read(node, 16), f"list {head:#x}", limit):
        yield node


def list_for_each_entry(k: Kernel, head: int, member_offset: int, limit: int = MAX_ENTRIES) -> Iterator[int]:
    """The addresses of the structs linked into ``head`` through their list_head at ``member_offset``."""
    for node in list_for_each(k, head, limit):
        yield node - member_offset


def list_for_each_entry_read(k: Kernel, head: int, member_offset: int, size: int, name: str,
                             limit: int = MAX_ENTRIES, skip_unreadable: bool = False) -> Iterator[tuple[int, Optional[bytes]]]:
    """(address, its ``size`` bytes) of each struct linked into ``head`` through its list_head at
    ``member_offset``, each read whole once (its links come from that read).

    ``skip_unreadable``: a struct that cannot be read whole is yielded with None, and the walk goes on
    through its list_head if that much is readable; otherwise its ReadError ends the walk.
    """
    read: dict[int, Optional[bytes]] = {}

    def read_links(node: int) -> bytes:
        try:
            data = read[node] = k.read(node - member_offset, size)
            return data[member_offset:member_offset + 16]
        except ReadError:
            if not skip_unreadable:
                raise
            read[node] = None
            return k.read(node, 16)

    for node, _ in list_walk(k, head, read_links, name, limit):
        yield node - member_offset, read.pop(node)


def list_empty(k: Kernel, head: int) -> bool:
    return k.u64(head) == head


def rbtree_inorder(k: Kernel, root: int, name: str, limit: int = MAX_ENTRIES) -> Iterator[int]:
    """The ``struct rb_node`` addresses of the tree whose top node is ``root`` (``rb_root.rb_node``), in
    order (leftmost first). An explicit stack; every node's parent must point back. CorruptError for a
    tree that loops or is inconsistent (``name`` names it), ReadError for one that cannot be read."""
    seen: set[int] = set()
    path: list[int] = []
    node, parent = root, 0
    links: dict[int, tuple[int, int]] = {}  # node -> (right, left)
    while path or node:
        while node:
            if node < KERNEL_SPACE or node & 0x7:
                raise CorruptError(f"{name} has a bad node pointer {node:#x}")
            if node in seen:
                raise CorruptError(f"{name} loops at {node:#x}")
            seen.add(node)
            if len(seen) > limit:
                raise CorruptError(f"{name} has more than {limit} nodes")
            data = k.read(node, 24)
            if le64(data, 0) & RB_PARENT_MASK != parent:
                raise CorruptError(f"{name} node {node:#x} has parent {le64(data, 0) & RB_PARENT_MASK:#x}, "
                                   f"expected {parent:#x}")
            links[node] = (le64(data, 8), le64(data, 16))
            path.append(node)
            parent, node = node, links[node][1]
        node = path.pop()
        yield node
        parent, node = node, links[node][0]
