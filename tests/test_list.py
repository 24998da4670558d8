"""The one checked list walker (kdlgdb.kernel.list) on hand-made rings: order, the back-link check, the bound."""
from __future__ import annotations

import pytest

from kdlgdb.errors import CorruptError, ReadError
from kdlgdb.kernel.list import BadLink, list_for_each, list_for_each_entry_read, list_walk, rbtree_inorder
from test_rtmutex import Memory  # little-endian words; what is not written is unreadable

HEAD = 0xFFFFFFFF82000000
NODES = [0xFFFF888000100000 + 0x1000 * i for i in range(3)]


def ring() -> Memory:
    mem = Memory()
    chain = [HEAD] + NODES
    for i, node in enumerate(chain):
        mem.put(node, chain[(i + 1) % len(chain)], chain[i - 1])
    return mem


def test_in_order_head_excluded() -> None:
    assert list(list_for_each(ring(), HEAD)) == NODES  # type: ignore[arg-type]


def test_a_prev_that_does_not_point_back_is_corrupt() -> None:
    mem = ring()
    mem.put(NODES[1] + 8, NODES[2])
    with pytest.raises(CorruptError, match=f"broken at {NODES[1]:#x}"):
        list(list_for_each(mem, HEAD))  # type: ignore[arg-type]


def test_a_user_space_next_is_a_bad_link() -> None:
    mem = ring()
    mem.put(NODES[0], 0x1234)
    with pytest.raises(BadLink):
        list(list_for_each(mem, HEAD))  # type: ignore[arg-type]


def test_a_ring_longer_than_the_bound_loops() -> None:
    with pytest.raises(CorruptError, match="loops"):
        list(list_for_each(ring(), HEAD, limit=2))  # type: ignore[arg-type]


def test_a_ring_through_a_node_checks_it_too() -> None:
    mem = ring()
    assert [n for n, _ in list_walk(mem, NODES[0], lambda n: mem.read(n, 16), "w", ring=True)] == NODES[1:] + [HEAD]  # type: ignore[arg-type]
    mem.put(NODES[0] + 8, NODES[1])
    with pytest.raises(CorruptError, match=f"broken at {NODES[0]:#x}"):
        list(list_walk(mem, NODES[0], lambda n: mem.read(n, 16), "w", ring=True))  # type: ignore[arg-type]


def test_entries_read_whole_and_an_unreadable_one_skipped() -> None:
    mem = ring()
    for node in NODES:
        mem.put(node - 16, node - 16, 0xAB)  # the struct: two words, then its list_head at offset 16
    del mem.words[NODES[1] - 8]
    got = list(list_for_each_entry_read(mem, HEAD, 16, 32, "structs", skip_unreadable=True))  # type: ignore[arg-type]
    assert [(a, d is None) for a, d in got] == [(NODES[0] - 16, False), (NODES[1] - 16, True), (NODES[2] - 16, False)]
    with pytest.raises(ReadError):
        list(list_for_each_entry_read(mem, HEAD, 16, 32, "structs"))  # type: ignore[arg-type]


def test_rbtree_in_order() -> None:
    mem = Memory()
    root, left, right = NODES
    mem.put(root, 0, right, left)  # __rb_parent_color, rb_right, rb_left
    mem.put(left, root | 1, 0, 0)
    mem.put(right, root | 1, 0, 0)
    assert list(rbtree_inorder(mem, root, "tree")) == [left, root, right]  # type: ignore[arg-type]
    mem.put(right, left, 0, 0)
    with pytest.raises(CorruptError, match="parent"):
        list(rbtree_inorder(mem, root, "tree"))  # type: ignore[arg-type]
