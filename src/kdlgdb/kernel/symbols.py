"""Names for kernel addresses: vmlinux symbols through the target, module
symbols from the modules' own kallsyms in memory (no .ko file needed).
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import Optional

from ..errors import CorruptError, ReadError
from ..model import Problem
from .layout import Kernel, le32, le64
from .list import list_for_each_entry_read

__all__ = ["Module", "Symbols"]

MAX_MODULES = 100_000
MAX_MODULE_SYMBOLS = 1_000_000  # entries of one module's symtab (amdgpu: ~30,000)
MAX_STRTAB = 64 << 20  # bytes of one module's string table
ELF64_SYM = struct.Struct("<IBBHQQ")  # st_name, st_info, st_other, st_shndx, st_value, st_size
STT_SECTION, STT_FILE = 3, 4


@dataclass
class Module:
    name: str
    address: int  # struct module *
    ranges: list[tuple[int, int]]  # (start, end) of each memory region
    text: tuple[int, int]  # (start, end) of its core text
    kallsyms: int  # struct mod_kallsyms *
    _symbols: Optional[list[tuple[int, int, str]]] = field(default=None, repr=False)  # (value, size, name)

    def contains(self, address: int) -> bool:
        return any(start <= address < end for start, end in self.ranges)


class Symbols:
    """Address -> (name, offset, module) for the kernel image and its modules."""

    def __init__(self, k: Kernel, problems: list[Problem]) -> None:
        self.k = k
        self.problems = problems
        self.text_start = k.need_symbol("_stext")
        self.text_end = k.need_symbol("_etext")
        self.modules = self._read_modules()
        self._module_texts = sorted(m.text for m in self.modules if m.text[0] < m.text[1])
        self._module_text_starts = [start for start, _ in self._module_texts]

    # -- lookups ------------------------------------------------------------
    def is_text(self, address: int) -> bool:
        # x86_64 maps modules above the kernel image: anything below _stext (stack
        # addresses, small numbers, the direct map) is rejected before the module lookup.
        if address < self.text_start:
            return False
        if address < self.text_end:
            return True
        i = bisect.bisect_right(self._module_text_starts, address) - 1
        return i >= 0 and address < self._module_texts[i][1]

    def module_of(self, address: int) -> Optional[Module]:
        for m in self.modules:
            if m.contains(address):
                return m
        return None

    def lookup(self, address: int) -> tuple[Optional[str], int, Optional[str]]:
        """(symbol, offset, module name or None) for any kernel address; symbol None if unknown."""
        module = self.module_of(address)
        if module is not None:
            name, offset = self._module_symbol(module, address)
            return name, offset, module.name
        if self.k.in_image(address):
            found = self.k.target.symbolize(self.k.unrelocate(address))
            if found is not None:
                return found[0], found[1], None
        return None, 0, None

    def name(self, address: int) -> tuple[Optional[str], Optional[str]]:
        """("sym" or "sym+0x10", module) for a data address, (None, None) if it has no symbol."""
        sym, offset, module = self.lookup(address)
        if sym is None:
            return None, None
        return (sym if offset == 0 else f"{sym}+{offset:#x}"), module

    def module_symbols(self, module: Module) -> list[tuple[int, int, str]]:
        """The symbols of a module as (value, size, name), sorted by value (read once)."""
        if module._symbols is None:
            module._symbols = self._read_kallsyms(module)
        return module._symbols

    # -- modules ------------------------------------------------------------
    def _read_modules(self) -> list[Module]:
        k = self.k
        m_t = "struct module"
        head = k.symbol("modules")
        if head is None:
            return []
        list_off = k.offset(m_t, "list")
        name_off, name_size = k.member(m_t, "name") or (0, 0)
        size = k.size(m_t)
        regions = self._region_reader()
        kallsyms_off = k.offset(m_t, "kallsyms") if k.has_member(m_t, "kallsyms") else None
        modules = []
        node = k.u64(head)
        try:
            for address, data in list_for_each_entry_read(k, head, list_off, size, "module list", MAX_MODULES):
                assert data is not None
                name = data[name_off : name_off + name_size].split(b"\0", 1)[0].decode("ascii", "replace")
                ranges, text = regions(data)
                kallsyms = le64(data, kallsyms_off) if kallsyms_off is not None else 0
                modules.append(Module(name, address, ranges, text, kallsyms))
                node = le64(data, list_off)
        except (ReadError, CorruptError) as e:
            self.problems.append(Problem("module list", f"{node:#x}", f"{e}; later modules have no symbols"))
        return modules

    def _region_reader(self):
        """A function: raw struct module -> (memory ranges, text range), for this kernel's layout."""
        k = self.k
        m_t = "struct module"
        if k.has_member(m_t, "mem"):
            # v6.4 replaced core_layout/init_layout with mem[MOD_MEM_NUM_TYPES] (ac3b43283923);
            # mem[0] is MOD_TEXT.
            mem_off, mem_size = k.member(m_t, "mem") or (0, 0)
            each = k.size("struct module_memory")
            base = k.offset("struct module_memory", "base")
            msize = k.offset("struct module_memory", "size")

            def regions(data: bytes):
                ranges = []
                for i in range(mem_size // each):
                    start = le64(data, mem_off + i * each + base)
                    length = le32(data, mem_off + i * each + msize)
                    if start and length:
                        ranges.append((start, start + length))
                return ranges, ranges[0] if ranges else (0, 0)

            return regions
        core = k.offset(m_t, "core_layout")
        base = k.offset("struct module_layout", "base")
        size = k.offset("struct module_layout", "size")
        text_size = k.offset("struct module_layout", "text_size")

        def regions_old(data: bytes):
            start = le64(data, core + base)
            return [(start, start + le32(data, core + size))], (start, start + le32(data, core + text_size))

        return regions_old

    def _module_symbol(self, module: Module, address: int) -> tuple[Optional[str], int]:
        symbols = self.module_symbols(module)
        i = bisect.bisect_right(symbols, (address, 1 << 64, "")) - 1
        if i < 0:
            return None, 0
        value, _, name = symbols[i]
        return name, address - value

    def _read_kallsyms(self, module: Module) -> list[tuple[int, int, str]]:
        """The module's symbol table, sorted by address; empty (and a Problem) if unreadable."""
        k = self.k
        if not module.kallsyms:
            return []
        mk = "struct mod_kallsyms"
        try:
            data = k.read(module.kallsyms, k.size(mk))
            symtab = le64(data, k.offset(mk, "symtab"))
            count = le32(data, k.offset(mk, "num_symtab"))
            strtab = le64(data, k.offset(mk, "strtab"))
            if count > MAX_MODULE_SYMBOLS:
                raise CorruptError(f"module {module.name}: mod_kallsyms at {module.kallsyms:#x} says num_symtab {count}, "
                                   f"more than {MAX_MODULE_SYMBOLS}")
            table = k.read(symtab, count * ELF64_SYM.size)
            entries = [e for e in ELF64_SYM.iter_unpack(table) if e[4] and e[1] & 0xF not in (STT_SECTION, STT_FILE)]
            last = max((e[0] for e in entries), default=0)
            if last > MAX_STRTAB:
                raise CorruptError(f"module {module.name}: a symbol's name is at {last} of its string table, "
                                   f"past {MAX_STRTAB >> 20} MiB")
            names = self._read_strtab(strtab, last)
        except (ReadError, CorruptError) as e:
            self.problems.append(Problem("module symbols", module.name, str(e)))
            return []
        out = []
        for st_name, _, _, _, value, size in entries:
            name = names(st_name)
            if name and module.contains(value):
                out.append((value, size, name))
        out.sort()
        return out

    def _read_strtab(self, strtab: int, last: int):
        """A function: string-table offset -> name; reads the table once up to the last name."""
        k = self.k
        try:
            table = k.read(strtab, last + 128)
        except ReadError:
            table = k.read(strtab, last) + k.string(strtab + last, 128).encode() + b"\0"

        def name(offset: int) -> str:
            end = table.find(b"\0", offset)
            return table[offset : end if end >= 0 else None].decode("ascii", "replace")

        return name
