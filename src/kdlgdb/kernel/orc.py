"""ORC unwind data of an x86-64 kernel: the entry format, the tables, the lookup.

objtool writes, for every instruction range of the kernel's text, an
``struct orc_entry`` that says where the caller's stack pointer and frame
pointer are (``.orc_unwind``), sorted by a parallel table of 32-bit
self-relative instruction addresses (``.orc_unwind_ip``). A module carries its
own pair, in memory after loading (``struct module`` -> ``arch.orc_unwind_ip``,
``arch.orc_unwind``, ``arch.num_orcs``). The kernel finds the entry of an
address in its text through ``orc_lookup[]``, one index pair per 256-byte
block, which it fills at boot.

This module is pure: ``OrcFormat`` decodes entries, ``OrcTable`` searches a
sorted table. ``KernelOrc`` reads the tables of one kernel (a Kernel) in bulk,
a lookup block or a module at a time, and caches them for the snapshot.
"""
from __future__ import annotations

import bisect
import struct
from array import array
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import ReadError
from .layout import Kernel

__all__ = ["OrcEntry", "OrcFormat", "OrcTable", "KernelOrc", "ORC_REG", "CALL", "REGS", "REGS_PARTIAL",
           "UNDEFINED", "END_OF_STACK"]

# arch/x86/include/asm/orc_types.h: the base register of sp_reg / bp_reg (unchanged since v4.14).
ORC_REG = {"undefined": 0, "prev_sp": 1, "dx": 2, "di": 3, "bp": 4, "sp": 5, "r10": 6, "r13": 7,
           "bp_indirect": 8, "sp_indirect": 9}

# The kinds of entry, in kdlgdb's own words (the numbers differ between kernels: see OrcFormat).
UNDEFINED = "undefined"  # no unwind data: the unwind must stop with an error
END_OF_STACK = "end"  # the outermost frame (a kthread's ret_from_fork, the entry code)
CALL = "call"  # an ordinary frame: the return address is just below the caller's sp
REGS = "regs"  # sp points at a full struct pt_regs (an interrupt or exception, a syscall)
REGS_PARTIAL = "regs_partial"  # sp points at the hardware iret frame (ip, cs, flags, sp, ss) of a pt_regs

ENTRY_SIZE = 6  # s16 sp_offset, s16 bp_offset, 16 bits of bit-fields; __packed
LOOKUP_BLOCK_ORDER = 8  # include/asm-generic/orc_lookup.h (arch/x86 before v6.4)
_OFFSETS = struct.Struct("<hhH")


@dataclass(frozen=True)
class OrcEntry:
    """One decoded ``struct orc_entry``."""

    sp_offset: int
    bp_offset: int
    sp_reg: int
    bp_reg: int
    type: str  # UNDEFINED, END_OF_STACK, CALL, REGS or REGS_PARTIAL
    signal: bool  # the ip of the frame it unwinds to is exact (an interrupted ip), not a return address


#: What a kernel with frame pointers (or code ORC does not cover, like BPF) gets: the kernel's
#: ``orc_fp_entry`` (unwind_orc.c): the caller's sp is bp + 16, its bp is saved at sp - 16.
FRAME_POINTER = OrcEntry(16, -16, ORC_REG["bp"], ORC_REG["prev_sp"], CALL, False)


@dataclass(frozen=True)
class OrcFormat:
    """Where the bit-fields of ``struct orc_entry`` are in its last 16 bits, and what ``type`` means.

    Three layouts exist (little-endian bit-fields, from bit 0 of the third u16):

    * up to v6.2: ``sp_reg:4, bp_reg:4, type:2, end:1``; type 0 call, 1 regs, 2 regs partial; the
      outermost frame is ``sp_reg == UNDEFINED`` with ``end`` set, without ``end`` it is undefined;
    * v6.3: ``signal:1`` added before ``end`` (ffb1b4a41016, "x86/unwind/orc: Add 'signal' field to
      ORC metadata"): whether the next frame's ip is taken as it is (before, that followed from the type);
    * v6.4 on: ``type:3, signal:1`` and no ``end`` (fb799447ae29, "x86,objtool: Split
      UNWIND_HINT_EMPTY in two"): type 0 undefined, 1 end of stack, 2 call, 3 regs, 4 regs partial.
    """

    sp_reg: tuple[int, int] = (0, 4)  # (bit, width)
    bp_reg: tuple[int, int] = (4, 4)
    type: tuple[int, int] = (8, 3)
    signal: Optional[tuple[int, int]] = (11, 1)
    end: Optional[tuple[int, int]] = None

    @classmethod
    def detect(cls, member_bits: Callable[[str], Optional[tuple[int, int]]],
               has_orc_header: Callable[[], bool] = lambda: False) -> "OrcFormat":
        """The layout from the DWARF bit-fields of ``struct orc_entry`` (``member_bits(name)``: bit offset from
        the start of the struct and bit size, as ``Target.member_bits`` gives them). Without the type in the
        debug info: v6.4's layout when the kernel has ``orc_header`` (added in the same release), else v6.2's."""
        fields = {name: member_bits(name) for name in ("sp_reg", "bp_reg", "type", "signal", "end")}

        def bits(name: str) -> Optional[tuple[int, int]]:
            found = fields[name]
            return (found[0] - 32, found[1]) if found is not None and found[1] else None

        sp_reg, bp_reg, kind = bits("sp_reg"), bits("bp_reg"), bits("type")
        if sp_reg is None or bp_reg is None or kind is None:
            return cls() if has_orc_header() else cls(type=(8, 2), signal=None, end=(10, 1))
        return cls(sp_reg, bp_reg, kind, bits("signal"), bits("end"))

    def decode(self, data: bytes, offset: int = 0) -> OrcEntry:
        sp_offset, bp_offset, word = _OFFSETS.unpack_from(data, offset)

        def get(field: tuple[int, int]) -> int:
            return (word >> field[0]) & ((1 << field[1]) - 1)

        sp_reg, bp_reg, number = get(self.sp_reg), get(self.bp_reg), get(self.type)
        if self.end is None:
            kind = (UNDEFINED, END_OF_STACK, CALL, REGS, REGS_PARTIAL)[number] if number <= 4 else f"type {number}"
        elif sp_reg == ORC_REG["undefined"]:
            kind = END_OF_STACK if get(self.end) else UNDEFINED
        else:
            kind = (CALL, REGS, REGS_PARTIAL)[number] if number <= 2 else f"type {number}"
        # Before the signal bit, an interrupt frame's ip was always exact and a call's never was.
        signal = bool(get(self.signal)) if self.signal is not None else kind in (REGS, REGS_PARTIAL)
        return OrcEntry(sp_offset, bp_offset, sp_reg, bp_reg, kind, signal)


class OrcTable:
    """A sorted ORC table: ``ips[i]`` (absolute addresses, ascending) starts the range of entry ``i``."""

    def __init__(self, ips: list[int], entries: bytes, fmt: OrcFormat) -> None:
        self.ips = ips
        self.entries = entries
        self.fmt = fmt

    @classmethod
    def from_memory(cls, ip_table: int, ip_data: bytes, entries: bytes, fmt: OrcFormat) -> "OrcTable":
        """From the raw tables as the kernel has them: ``ip_data`` is the s32 array at ``ip_table``, each
        value relative to its own slot."""
        rel = array("i", ip_data[: len(ip_data) // 4 * 4])
        return cls([ip_table + 4 * i + value for i, value in enumerate(rel)], entries, fmt)

    def find(self, ip: int) -> Optional[OrcEntry]:
        """The entry whose range holds ``ip``: the last one that starts at or before it (the kernel's
        ``__orc_find`` takes the rightmost of equal starts: section terminators come first)."""
        i = bisect.bisect_right(self.ips, ip) - 1
        if i < 0 or ENTRY_SIZE * (i + 1) > len(self.entries):
            return None
        return self.fmt.decode(self.entries, ENTRY_SIZE * i)


class KernelOrc:
    """The ORC data of one kernel in memory: vmlinux (through ``orc_lookup``) and modules.

    Tables are read once per lookup block or module and kept; ``find`` is cached per address.
    ``available`` is False on a kernel built without ORC (frame pointers).
    """

    def __init__(self, k: Kernel, modules: Callable[[int], Optional[int]]) -> None:
        """``modules(address)``: the ``struct module *`` whose memory holds an address, or None."""
        self.k = k
        self.modules = modules
        self.ip_table = k.symbol("__start_orc_unwind_ip")
        self.ip_end = k.symbol("__stop_orc_unwind_ip")
        self.table = k.symbol("__start_orc_unwind")
        self.lookup = k.symbol("orc_lookup")
        self.text = (k.symbol("_stext") or 0, k.symbol("_etext") or 0)
        self.available = None not in (self.ip_table, self.ip_end, self.table)
        self.fmt = OrcFormat.detect(lambda name: k.target.member_bits("struct orc_entry", name),
                                    lambda: k.symbol("orc_header") is not None) if self.available else OrcFormat()
        self.num_blocks: Optional[int] = None
        num_blocks = k.symbol("lookup_num_blocks")
        if num_blocks is not None:
            try:
                self.num_blocks = k.u32(num_blocks)
            except ReadError:
                pass
        self._blocks: dict[int, Optional[OrcTable]] = {}
        self._modules: dict[int, Optional[OrcTable]] = {}
        self._found: dict[int, Optional[OrcEntry]] = {}
        self._ips: dict[int, int] = {}
        self.problems: list[str] = []

    def find(self, ip: int) -> Optional[OrcEntry]:
        """The ORC entry for an instruction address, or None where there is none (unknown code)."""
        if ip not in self._found:
            try:
                self._found[ip] = self._find(ip)
            except ReadError as e:
                self.problems.append(f"ORC data for {ip:#x}: {e}")
                self._found[ip] = None
        return self._found[ip]

    def _find(self, ip: int) -> Optional[OrcEntry]:
        if not self.available:
            return None
        start, end = self.text
        if start <= ip < end:
            block = (ip - start) >> LOOKUP_BLOCK_ORDER
            if block not in self._blocks:
                self._blocks[block] = self._read_block(block)
            table = self._blocks[block]
            return table.find(ip) if table is not None else None
        if self.k.in_image(ip):
            return self._find_whole(ip)  # init text (freed after boot, its entries stay): the kernel searches all
        module = self.modules(ip)
        if module is None:
            return None  # BPF, ftrace trampolines: the caller guesses
        if module not in self._modules:
            self._modules[module] = self._read_module(module)
        table = self._modules[module]
        return table.find(ip) if table is not None else None

    def _find_whole(self, ip: int) -> Optional[OrcEntry]:
        """A binary search of the whole vmlinux table, one ip slot read at a time (kept)."""
        assert self.ip_table is not None and self.ip_end is not None and self.table is not None
        low, high, found = 0, (self.ip_end - self.ip_table) // 4 - 1, -1
        while low <= high:
            mid = (low + high) // 2
            if self._whole_ip(mid) <= ip:
                found, low = mid, mid + 1
            else:
                high = mid - 1
        if found < 0:
            return None
        return self.fmt.decode(self.k.read(self.table + ENTRY_SIZE * found, ENTRY_SIZE))

    def _whole_ip(self, i: int) -> int:
        if i not in self._ips:
            at = self.ip_table + 4 * i  # type: ignore[operator]
            self._ips[i] = at + struct.unpack("<i", self.k.read(at, 4))[0]
        return self._ips[i]

    def _read_block(self, block: int) -> Optional[OrcTable]:
        """The slice of the vmlinux tables that ``orc_lookup[block]`` .. ``orc_lookup[block + 1]`` names."""
        assert self.ip_table is not None and self.ip_end is not None and self.table is not None
        count = (self.ip_end - self.ip_table) // 4
        if self.lookup is None or self.num_blocks is None or block >= self.num_blocks - 1:
            return None
        first, last = struct.unpack("<II", self.k.read(self.lookup + 4 * block, 8))
        stop = last + 1
        if not first < stop <= count or stop - first > 1 << 16:
            self.problems.append(f"orc_lookup[{block}] = {first}..{last}: outside the {count} ORC entries")
            return None
        at = self.ip_table + 4 * first
        return OrcTable.from_memory(at, self.k.read(at, 4 * (stop - first)),
                                    self.k.read(self.table + ENTRY_SIZE * first, ENTRY_SIZE * (stop - first)), self.fmt)

    def _read_module(self, module: int) -> Optional[OrcTable]:
        k = self.k
        found = [k.member("struct module", f"arch.{name}") for name in ("orc_unwind_ip", "orc_unwind", "num_orcs")]
        if any(f is None for f in found):
            return None
        ip_off, orc_off, num_off = (f[0] for f in found if f is not None)
        ip_table, table = k.u64(module + ip_off), k.u64(module + orc_off)
        count = k.u32(module + num_off)
        if not ip_table or not table or not 0 < count < 1 << 22:
            return None
        return OrcTable.from_memory(ip_table, k.read(ip_table, 4 * count), k.read(table, ENTRY_SIZE * count), self.fmt)
