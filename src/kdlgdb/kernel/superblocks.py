"""The mounted filesystems' superblocks (fs/super.c's ``super_blocks`` list), walked once a snapshot.

Two stages look at superblocks: a frozen filesystem's ``sb_writers`` is a lock the freeze holds
(``freeze.py``), and a lock inside a kmalloc'd superblock or an inode is named after its filesystem
(``naming.py``). Both ask this one walk.

Reads: the ``super_blocks`` list once; ``s_type->name`` and ``s_id`` of a superblock asked for by name.
"""
from __future__ import annotations

from typing import Optional

from ..errors import CorruptError, ReadError
from .layout import Kernel
from .list import list_for_each

__all__ = ["SuperBlocks", "MAX_SUPERBLOCKS"]

MAX_SUPERBLOCKS = 100_000


class SuperBlocks:
    """Every ``struct super_block`` on ``super_blocks`` of one snapshot, and their names."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self._all: Optional[list[int]] = None
        self._error: Optional[Exception] = None
        self._names: dict[int, tuple[str, str]] = {}

    def all(self) -> list[int]:
        """The superblocks in list order; ReadError or CorruptError (each time asked) when the list cannot
        be walked. Empty when the kernel has no ``super_blocks`` (or ``s_list``)."""
        if self._error is not None:
            raise self._error
        if self._all is None:
            k = self.k
            head, s_list = k.symbol("super_blocks"), k.member("struct super_block", "s_list")
            found: list[int] = []
            if head is not None and s_list is not None:
                try:
                    found = [node - s_list[0] for node in list_for_each(k, head, MAX_SUPERBLOCKS)]
                except (ReadError, CorruptError) as e:
                    self._error = e
                    raise
            self._all = found
        return self._all

    def readable(self) -> set[int]:
        """:meth:`all` as a set, empty when the list cannot be walked (for a guess that can go without)."""
        try:
            return set(self.all())
        except (ReadError, CorruptError):
            return set()

    def fs_and_device(self, sb: int) -> tuple[str, str]:
        """(filesystem type, device): ``("ext2", "ram0")`` from ``s_type->name`` and ``s_id``; ReadError."""
        if sb not in self._names:
            k, t = self.k, "struct super_block"
            fstype = k.string(k.u64(k.u64(sb + k.offset(t, "s_type")) + k.offset("struct file_system_type", "name")), 64)
            self._names[sb] = (fstype, k.string(sb + k.offset(t, "s_id"), 32))
        return self._names[sb]
