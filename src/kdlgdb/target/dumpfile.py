"""kdlgdb's own reading of a vmcore: any format, kernel virtual addresses through the dump's page tables.

gdb reads one kind of dump correctly: an ELF whose program headers carry kernel
virtual addresses (QEMU ``dump-guest-memory`` with paging). Everything else a
user brings is physical memory only, to gdb either unreadable (kdump-compressed)
or silently wrong (a physical ELF loads, then reads the vmlinux's own static
data). :func:`open_dump` opens any of them:

- ELF with physical addresses (QEMU/virsh without paging, ``/proc/vmcore``, ``makedumpfile -E``);
- kdump-compressed, normal or flattened, zlib/lzo/snappy/zstd pages, filtered or not;

and reads kernel virtual memory from them with :class:`~.pagetable.PageTables`
and the dump's VMCOREINFO. gdb, or the kernel's own BTF and kallsyms
(:mod:`~.btfdump`), supply symbols and types. It reads the paging ELF too (by its
segments' virtual addresses, as gdb does), for a target that runs without gdb.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Callable, Optional

from ..errors import KdlError, ReadError
from .base import Spelling
from .elfmemory import ElfMemory
from .kdump import FLAT_SIGNATURE, KDUMP_SIGNATURE, KdumpFile
from .pagetable import PageTables
from .vmcore import ELF_MAGIC, ElfDump, open_elf_dump

__all__ = ["DumpFile", "DumpFormat", "open_dump", "dump_format", "dump_vmcoreinfo", "sniff"]

PAGE_SIZE = 0x1000


class DumpFormat(Spelling):
    """A dump file's format, as far as who reads it goes (the one spelling; ``describe()`` for prose)."""

    ELF_VIRTUAL = "elf-virtual"  # ELF with kernel virtual addresses (QEMU dump-guest-memory with paging)
    ELF_PHYSICAL = "elf-physical"  # ELF with physical addresses only (no paging, /proc/vmcore, makedumpfile -E)
    KDUMP = "kdump"  # kdump-compressed, normal or flattened (makedumpfile -c/-l/-p/-z/-F, QEMU -z/-l/-s)

    @property
    def gdb_reads(self) -> bool:
        """Whether gdb reads this format right itself (else kdlgdb reads it, through the dump's page tables)."""
        return self is DumpFormat.ELF_VIRTUAL

    def reader(self) -> str:
        return "gdb reads it" if self.gdb_reads else "kdlgdb reads it"

    def describe(self) -> str:
        return {DumpFormat.ELF_VIRTUAL: "ELF vmcore with kernel virtual addresses",
                DumpFormat.ELF_PHYSICAL: "ELF vmcore with physical addresses only",
                DumpFormat.KDUMP: "kdump-compressed vmcore"}[self]


def sniff(f: BinaryIO) -> Optional[str]:
    """``"kdump"`` (kdump-compressed, normal or flattened), ``"elf"`` or None, from the first bytes of the open
    file ``f`` (left at its start): the one place that looks at a file's magic."""
    f.seek(0)
    magic = f.read(16)
    f.seek(0)
    if magic.startswith(KDUMP_SIGNATURE) or magic.startswith(FLAT_SIGNATURE):
        return "kdump"
    return "elf" if magic.startswith(ELF_MAGIC) else None


class _ElfPages:
    """Physical pages of an ELF vmcore (``p_paddr``), in the shape KdumpFile gives them."""

    def __init__(self, elf: ElfDump, lazy: bool = False) -> None:
        """``lazy``: index the segments at the first read (a paging ELF is read by its virtual addresses)."""
        self._elf = elf
        self._memory: Optional[ElfMemory] = None if lazy else ElfMemory(elf, physical=True)

    def read_page(self, pfn: int) -> bytes:
        if self._memory is None:
            self._memory = ElfMemory(self._elf, physical=True)
        return self._memory.read(pfn * PAGE_SIZE, PAGE_SIZE)

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()


class DumpFile:
    """A vmcore of any supported format, read by kdlgdb itself."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._f = open(path, "rb")
        except OSError as e:
            raise KdlError(f"cannot open dump {path}: {e.strerror}") from None
        self._cache: dict[int, bytes] = {}
        self._elf_pages: Optional[_ElfPages] = None
        self._virtual: Optional[ElfMemory] = None  # a paging ELF's segments, by kernel virtual address
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        kdump = KdumpFile(self._f, self.path) if sniff(self._f) == "kdump" else None
        self.elf: Optional[ElfDump] = None
        self.kdump: Optional[KdumpFile] = kdump
        if kdump is not None:
            self._memory: _ElfPages | KdumpFile = kdump
            info = kdump.vmcoreinfo()
            self.notes = kdump.notes
            phys_base: Optional[int] = kdump.phys_base
        else:
            self.elf = open_elf_dump(self.path)
            if self.elf.has_virtual_addresses:
                # QEMU's paging ELF: its segments are the kernel's virtual mappings (one physical page may be
                # in several); read by them, as gdb reads it, not through the page tables.
                self._virtual = ElfMemory(self.elf)
            self._memory = self._elf_pages = _ElfPages(self.elf, lazy=self._virtual is not None)
            info = self.elf.vmcoreinfo() or {}
            self.notes = self.elf.notes
            phys_base = None
        if not info:
            raise KdlError(f"{self.path} has no VMCOREINFO: kdlgdb needs it to find the kernel's page tables and KASLR offset")
        self._vmcoreinfo = info
        self.pages = PageTables(self.read_phys, info, phys_base)

    def close(self) -> None:
        self._f.close()
        if self._elf_pages is not None:
            self._elf_pages.close()
        if self._virtual is not None:
            self._virtual.close()

    # -- facts -------------------------------------------------------------------
    def vmcoreinfo(self) -> dict[str, str]:
        return self._vmcoreinfo

    @property
    def kind(self) -> str:
        if self.kdump is not None:
            return self.kdump.kind
        assert self.elf is not None
        return self.elf.kind

    def describe(self) -> str:
        return f"{self.kind} {self.path} (read by kdlgdb)"

    # -- memory ------------------------------------------------------------------
    def _page(self, pfn: int) -> bytes:
        page = self._cache.get(pfn)
        if page is None:
            page = self._memory.read_page(pfn)
            if len(self._cache) > 4096:  # 16 MiB of recent pages
                self._cache.clear()
            self._cache[pfn] = page
        return page

    def read_phys(self, address: int, size: int) -> bytes:
        """``size`` bytes of physical memory at ``address``; ReadError naming why not."""
        return self._read(address, size, lambda page: page)

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes of kernel virtual memory at ``address``; ReadError naming why not."""
        if self._virtual is not None:
            return self._virtual.read(address, size)
        return self._read(address, size, self.pages.translate)

    def _read(self, address: int, size: int, to_physical: Callable[[int], int]) -> bytes:
        """Page by page: each page's physical address from ``to_physical``, its bytes from the file."""
        out = bytearray()
        start, total = address, size
        while size > 0:
            offset = address & (PAGE_SIZE - 1)
            n = min(size, PAGE_SIZE - offset)
            try:
                out += self._page(to_physical(address) >> 12)[offset : offset + n]
            except ReadError as e:
                why = e.why if address == start else f"at {address:#x}: {e.why}"
                raise ReadError(start, total, why) from None
            address += n
            size -= n
        return bytes(out)


def dump_format(path: str) -> DumpFormat:
    """The format of the dump at ``path`` (its headers read, so a damaged one fails here); KdlError (one line)
    when it is no dump kdlgdb reads."""
    if not os.path.isfile(path):
        raise KdlError(f"no such file: {path}")
    try:
        with open(path, "rb") as f:
            if sniff(f) == "kdump":
                KdumpFile(f, path)
                return DumpFormat.KDUMP
    except OSError as e:
        raise KdlError(f"cannot open dump {path}: {e.strerror}") from None
    return DumpFormat.ELF_VIRTUAL if open_elf_dump(path).has_virtual_addresses else DumpFormat.ELF_PHYSICAL


def open_dump(path: str) -> DumpFile:
    """Open any supported vmcore for kdlgdb's own reading; KdlError (one line) when it cannot be."""
    return DumpFile(path)


def dump_vmcoreinfo(path: str) -> dict[str, str]:
    """The VMCOREINFO note of a dump of any format ({} when it has none); KdlError when it is no dump."""
    if dump_format(path) is DumpFormat.KDUMP:
        with open(path, "rb") as f:
            return KdumpFile(f, path).vmcoreinfo()
    return open_elf_dump(path).vmcoreinfo() or {}
