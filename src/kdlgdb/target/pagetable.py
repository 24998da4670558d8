"""Kernel virtual to physical addresses through a dump's own x86_64 page tables.

The root is the kernel's ``init_top_pgt`` (VMCOREINFO ``SYMBOL(init_top_pgt)``,
already KASLR-relocated there). Its physical address follows from the kernel
image mapping: ``virt - __START_KERNEL_map + phys_base``. Walking the tables
rather than computing ``virt - page_offset_base`` covers every kernel mapping
the same way: the direct map wherever RANDOMIZE_MEMORY put it, vmalloc'd task
stacks, module memory, and huge pages at either level.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..errors import KdlError, ReadError

__all__ = ["PageTables", "START_KERNEL_MAP"]

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: where the kernel image is mapped
PAGE_SIZE = 0x1000
PRESENT = 0x1
HUGE = 0x80  # _PAGE_PSE: a 1 GiB (PUD) or 2 MiB (PMD) page
ADDRESS_BITS = 0x000FFFFFFFFFF000  # physical address bits 12..51 of an entry


class PageTables:
    """``translate(virt)`` for one kernel's page tables, read with ``read_phys``."""

    def __init__(self, read_phys: Callable[[int, int], bytes], vmcoreinfo: dict[str, str],
                 phys_base: Optional[int] = None) -> None:
        self._read_phys = read_phys
        if "SYMBOL(init_top_pgt)" not in vmcoreinfo:
            raise KdlError("the dump's VMCOREINFO does not give the kernel's page tables (no SYMBOL(init_top_pgt)); "
                           "cannot translate kernel addresses")
        root_virt = _number(vmcoreinfo, "SYMBOL(init_top_pgt)", 16)
        # The kernel's own number wins over a dump header's: QEMU's kdump header guesses it.
        if "NUMBER(phys_base)" in vmcoreinfo or phys_base is None:
            phys_base = _number(vmcoreinfo, "NUMBER(phys_base)", 0)
        # phys_base is printed signed (negative when the kernel runs below its link address): wrap it.
        self.root = (root_virt - START_KERNEL_MAP + phys_base) & 0xFFFFFFFFFFFFFFFF
        # 5-level paging (LA57) adds a level above the PGD: VMCOREINFO says when it is on.
        self.levels = 5 if vmcoreinfo.get("NUMBER(pgtable_l5_enabled)", "0").strip() == "1" else 4
        sme_mask = _number(vmcoreinfo, "NUMBER(sme_mask)", 0)
        self._mask = ADDRESS_BITS & ~sme_mask
        self._tables: dict[int, bytes] = {}
        self._pages: dict[int, int] = {}

    def translate(self, virt: int) -> int:
        """The physical address of ``virt``; ReadError when it is not mapped."""
        page = virt & ~(PAGE_SIZE - 1)
        phys = self._pages.get(page)
        if phys is None:
            phys = self._walk(virt)
            self._pages[page] = phys & ~(PAGE_SIZE - 1)
            return phys
        return phys | (virt & (PAGE_SIZE - 1))

    def _walk(self, virt: int) -> int:
        table = self.root
        shift = 39 + 9 * (self.levels - 4)
        while True:
            entry = self._entry(table, (virt >> shift) & 0x1FF, virt)
            if not entry & PRESENT:
                raise ReadError(virt, 1, "not mapped by the kernel's page tables")
            address = entry & self._mask
            if shift == 12:
                return address | (virt & (PAGE_SIZE - 1))
            if shift in (30, 21) and entry & HUGE:
                size = 1 << shift
                return (address & ~(size - 1)) | (virt & (size - 1))
            table = address
            shift -= 9

    def _entry(self, table: int, index: int, virt: int) -> int:
        data = self._tables.get(table)
        if data is None:
            try:
                data = self._read_phys(table, PAGE_SIZE)
            except ReadError as e:
                raise ReadError(virt, 1, f"its page table at physical {table:#x} is not in the dump ({e.why})") from None
            self._tables[table] = data
        return int.from_bytes(data[index * 8 : index * 8 + 8], "little")


def _number(vmcoreinfo: dict[str, str], key: str, base: int) -> int:
    """VMCOREINFO's number ``key`` (0 when absent); KdlError naming it when it is not one."""
    text = vmcoreinfo.get(key, "0")
    try:
        return int(text, base)
    except ValueError:
        raise KdlError(f"the dump's VMCOREINFO {key} is not a number: {text[:40]!r}") from None
