"""Kernel virtual memory of an ELF vmcore, read from the file by kdlgdb itself.

gdb reads a core file by looking through every PT_LOAD segment for each
request. A dump with paging has one segment per contiguous virtual range, and
every vmapped kernel stack is a range of its own: 10,000 tasks make 10,000
segments, and each read costs time in proportion to all of them, so reading
every task of a dump grows with the square of the tasks. Here the segments are
sorted once and each read finds its own by bisection.
"""
from __future__ import annotations

import bisect
import os

from ..errors import ReadError
from .vmcore import ElfDump

__all__ = ["ElfMemory"]


class ElfMemory:
    """Reads an ELF vmcore's PT_LOAD segments by their kernel virtual addresses (``p_vaddr``), or by
    their physical ones (``physical=True``, ``p_paddr``: for kdlgdb's own page-table walk)."""

    def __init__(self, dump: ElfDump, physical: bool = False) -> None:
        self._file = open(dump.path, "rb")  # noqa: SIM115 (kept open while the target lives; closed with it)
        # (address, memsz, filesz, offset); bytes past p_filesz up to p_memsz read as zeros.
        self._loads = sorted((paddr if physical else vaddr, memsz, filesz, offset)
                             for vaddr, paddr, filesz, memsz, offset in dump.loads if memsz)
        self._starts = [load[0] for load in self._loads]

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at ``address``, across adjacent segments if need be; ReadError if any is missing."""
        chunks = []
        at, left = address, size
        while left > 0:
            i = bisect.bisect_right(self._starts, at) - 1
            if i < 0 or at >= self._loads[i][0] + self._loads[i][1]:
                raise ReadError(address, size, "not in dump")
            vaddr, memsz, filesz, offset = self._loads[i]
            into = at - vaddr
            n = min(left, memsz - into)
            data = os.pread(self._file.fileno(), max(0, min(n, filesz - into)), offset + into)
            chunks.append(data + bytes(n - len(data)))
            at, left = at + n, left - n
        return b"".join(chunks)

    def close(self) -> None:
        self._file.close()
