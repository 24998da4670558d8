"""The kernel's own symbol table, ``kallsyms``, decoded from its memory.

Since v6.0 (5fd8fea935a1) VMCOREINFO gives the addresses of the kallsyms tables, so a dump
names its symbols without a vmlinux. The tables (``scripts/kallsyms.c`` writes them at build time):

- ``kallsyms_num_syms``: ``unsigned int``, how many symbols;
- ``kallsyms_names``: per symbol, its length in tokens, then that many token numbers (bytes); a
  length of 128 or more takes two bytes, low 7 bits first (big symbols, 73bbb94466fd, v6.1);
- ``kallsyms_token_table``: 256 NUL-terminated strings, one per token number, and
  ``kallsyms_token_index``: ``u16`` offset of each in the table. A symbol's name is its tokens' strings
  joined; its first character is its type letter as ``nm`` prints it (``T``, ``t``, ``D``, ...);
- ``kallsyms_offsets``: ``int`` per symbol, from ``kallsyms_relative_base`` (an ``unsigned long``,
  relocated with the kernel) (CONFIG_KALLSYMS_BASE_RELATIVE, 2213e9a66bb8, v4.6).

Addresses here are *static*, as the vmlinux has them (``Target``'s convention): the runtime address
less the KASLR offset, for the kernel image; per-CPU symbols are offsets into the per-CPU area and
do not move.
"""
from __future__ import annotations

import array
import bisect
import itertools
import operator
import sys
from collections.abc import Mapping
from typing import Callable, Optional

from ..errors import KdlError, ReadError
from .pagetable import START_KERNEL_MAP

__all__ = ["Kallsyms", "NoKallsyms", "KALLSYMS_KEYS", "decode_names", "decode_offsets", "symbol_count",
           "table_addresses"]

#: The VMCOREINFO entries kallsyms needs (all of them, since v6.0).
KALLSYMS_KEYS = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index",
                 "kallsyms_offsets", "kallsyms_relative_base")
MAX_SYMBOLS = 4_000_000  # Debian's 6.12: ~200,000
MAX_NAMES = 256 << 20
Read = Callable[[int, int], bytes]


class NoKallsyms(KdlError):
    """The dump gives no kallsyms tables that can be decoded (one line saying why)."""


def decode_names(names: bytes, tokens: list[bytes], count: int) -> list[str]:
    """The ``count`` names (type letter first) in the ``kallsyms_names`` bytes ``names``; KdlError if they end early.

    Every byte is expanded to its token at once (C speed), then each symbol's length byte (or two) is
    replaced by a newline, which no symbol name holds, and the whole split there."""
    starts: list[int] = []
    pos = 0
    end = len(names)
    for _ in range(count):
        if pos >= end:
            raise NoKallsyms(f"kallsyms_names ends after {len(starts)} of its {count} symbols")
        starts.append(pos)
        length = names[pos]
        if length & 0x80:
            pos += 1 + ((length & 0x7F) | (names[pos + 1] << 7)) + 1
        else:
            pos += length + 1
    if pos > end:
        raise NoKallsyms(f"kallsyms_names ends inside its last symbol ({count} symbols)")
    # str, not bytes: bytes.join takes a buffer view (~80 bytes) of every piece first, 170 MB for 6.12's 2 million.
    texts = [token.decode("ascii", "replace") for token in tokens]
    expanded = list(map(texts.__getitem__, names[:pos]))
    for start in starts:
        expanded[start] = "\n"
        if names[start] & 0x80:
            expanded[start + 1] = ""
    return "".join(expanded).split("\n")[1:]


def decode_offsets(offsets: bytes, relative_base: int, count: int) -> list[int]:
    """Each symbol's runtime address from ``kallsyms_offsets``.

    With CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86_64 SMP, from v4.6 until x86 made per-CPU symbols
    relative, v6.15 (inferred)) an offset of 0 or more is the absolute value of a per-CPU symbol and
    a negative one is ``relative_base - 1 - offset``; without it every offset is an unsigned one from
    ``relative_base``. Which one a kernel uses shows in the table itself: its text is below
    ``relative_base`` only in the first encoding, so some offset is negative.
    """
    table = array.array("i")
    table.frombytes(offsets[: 4 * count])
    if sys.byteorder != "little":
        table.byteswap()
    if min(table, default=0) < 0:
        base = relative_base - 1
        return [o if o >= 0 else base - o for o in table]
    return [relative_base + o for o in table]


class Kallsyms:
    """The kernel's symbols, by name and by address (static addresses; see the module docstring).

    Made from the symbols in the tables' order (``typed``: each name with its type letter first, and its static
    address): :meth:`from_memory` reads and decodes them, a cache (:mod:`.debuginfocache`) keeps them.
    """

    def __init__(self, typed: list[str], addresses: list[int]) -> None:
        self.count = len(typed)
        self.typed, self.static_addresses = typed, addresses  # as the tables list them (what a cache keeps)
        names_only = [name[1:] for name in typed]
        # Of namesakes (static functions, static data of several files) the first, as kallsyms_lookup_name().
        self._by_name = dict(zip(reversed(names_only), reversed(addresses)))
        # scripts/kallsyms writes the symbols in address order, the one %pS names first among aliases.
        self._order: Optional[list[int]] = None  # positions in address order, when the tables' is not
        if not all(map(operator.le, addresses, itertools.islice(addresses, 1, None))):
            self._order = sorted(range(len(typed)), key=addresses.__getitem__)
            addresses = [addresses[i] for i in self._order]
            names_only = [names_only[i] for i in self._order]
        self._addresses = addresses
        self._names = names_only

    @classmethod
    def from_memory(cls, read: Read, vmcoreinfo: Mapping[str, str], kaslr_offset: int) -> "Kallsyms":
        """Read and decode the tables VMCOREINFO points at (``read(address, size)`` reads kernel virtual memory at
        runtime addresses; ``kaslr_offset`` is the image's slide); KdlError (one line) when there are none."""
        at = table_addresses(vmcoreinfo)
        try:
            count = symbol_count(read, vmcoreinfo)
            base = int.from_bytes(read(at["kallsyms_relative_base"], 8), "little")
            index = array.array("H")
            index.frombytes(read(at["kallsyms_token_index"], 512))
            if sys.byteorder != "little":
                index.byteswap()
            table = read(at["kallsyms_token_table"], max(index) + 256)
            tokens = [table[i : table.index(b"\0", i)] for i in index]
            names = read(at["kallsyms_names"], _names_size(at, count))
            offsets = read(at["kallsyms_offsets"], 4 * count)
        except ReadError as e:
            raise NoKallsyms(f"cannot read the kernel's kallsyms tables: {e}") from None
        except ValueError:
            raise NoKallsyms("the kernel's kallsyms_token_table is damaged (a token without its NUL)") from None
        typed = decode_names(names, tokens, count)
        runtime = decode_offsets(offsets, base, count)
        return cls(typed, [a - kaslr_offset if a >= START_KERNEL_MAP else a for a in runtime])

    def address(self, name: str) -> Optional[int]:
        """The static address of ``name``, or None."""
        return self._by_name.get(name)

    def lookup(self, address: int) -> Optional[tuple[str, int]]:
        """(name, offset) of the symbol at or below the static ``address``, or None below the first."""
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0:
            return None
        i = bisect.bisect_left(self._addresses, self._addresses[i])  # the first of its aliases
        return self._names[i], address - self._addresses[i]

    def next_address(self, address: int) -> Optional[int]:
        """The first symbol address above ``address`` (where the symbol at ``address`` ends at the latest)."""
        i = bisect.bisect_right(self._addresses, address)
        return self._addresses[i] if i < len(self._addresses) else None

    def type_of(self, name: str) -> Optional[str]:
        """The nm letter of ``name`` (``T`` global text, ``d`` static data, ...), or None."""
        address = self._by_name.get(name)
        if address is None:
            return None
        i = bisect.bisect_left(self._addresses, address)
        while i < len(self._addresses) and self._addresses[i] == address:
            if self._names[i] == name:
                return self.typed[self._order[i] if self._order is not None else i][:1]
            i += 1
        return None


def table_addresses(vmcoreinfo: Mapping[str, str]) -> dict[str, int]:
    """The runtime address of each kallsyms table, from VMCOREINFO; KdlError naming the first one missing."""
    missing = [key for key in KALLSYMS_KEYS if f"SYMBOL({key})" not in vmcoreinfo]
    if missing:
        raise NoKallsyms(f"the dump's VMCOREINFO has no SYMBOL({missing[0]}) (kernels before 6.0 do not give "
                       "kallsyms there)")
    return {key: _hex(vmcoreinfo, f"SYMBOL({key})") for key in KALLSYMS_KEYS}


def symbol_count(read: Read, vmcoreinfo: Mapping[str, str]) -> int:
    """``kallsyms_num_syms``; KdlError when it is no kernel's count (or cannot be read: ReadError)."""
    count = int.from_bytes(read(table_addresses(vmcoreinfo)["kallsyms_num_syms"], 4), "little")
    if not 0 < count <= MAX_SYMBOLS:
        raise NoKallsyms(f"kallsyms_num_syms is {count}: not a kernel's symbol count")
    return count


def _names_size(at: dict[str, int], count: int) -> int:
    """How many bytes of ``kallsyms_names`` to read: up to the next kallsyms table above it (the linker keeps
    them together, ``kallsyms_markers`` after the names), else a bound from the count."""
    above = [a for a in at.values() if a > at["kallsyms_names"]]
    size = min(above) - at["kallsyms_names"] if above else 0
    return size if 0 < size <= MAX_NAMES else min(count * 64, MAX_NAMES)


def _hex(vmcoreinfo: Mapping[str, str], key: str) -> int:
    try:
        return int(vmcoreinfo[key], 16)
    except ValueError:
        raise NoKallsyms(f"the dump's VMCOREINFO {key} is not a hexadecimal number: {vmcoreinfo[key][:40]!r}") from None
