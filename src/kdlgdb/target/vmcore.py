"""Facts read straight from a vmcore's ELF headers, without a debugger.

gdb loads a QEMU or kdump ELF without telling us what is in it. We need two
things from the file itself: the VMCOREINFO note (KASLR offset, release) and
whether its program headers carry kernel virtual addresses at all (a
physical-only ELF loads in gdb without complaint but reads back the vmlinux's
static data: a silently wrong answer).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

from ..errors import KdlError

__all__ = ["ElfDump", "open_elf_dump", "parse_vmcoreinfo", "parse_notes", "check_in_file", "file_size_text", "ELF_MAGIC"]

ELF_MAGIC = b"\x7fELF"

PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
KERNEL_SPACE = 0xFFFF800000000000


@dataclass
class ElfDump:
    path: str
    loads: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # vaddr, paddr, filesz, memsz, offset
    notes: list[tuple[str, int, bytes]] = field(default_factory=list)  # name, type, desc

    @property
    def has_virtual_addresses(self) -> bool:
        """True if some PT_LOAD maps kernel virtual addresses (QEMU paging dumps, kdump /proc/vmcore)."""
        return any(load[0] >= KERNEL_SPACE for load in self.loads)

    @property
    def kind(self) -> str:
        """What made the dump, as far as its notes tell: ``"ELF vmcore (QEMU dump-guest-memory with paging)"``.

        QEMU's dump-guest-memory writes a ``QEMU`` note (its CPU state) beside each ``CORE`` one; a kernel's own
        crash dump (kdump's /proc/vmcore, makedumpfile -E) has ``CORE`` notes and VMCOREINFO only.
        """
        names = {name for name, _, _ in self.notes}
        if "QEMU" in names:
            paging = "with paging" if self.has_virtual_addresses else "without paging"
            return f"ELF vmcore (QEMU dump-guest-memory {paging})"
        if "VMCOREINFO" in names:
            return "ELF vmcore (kdump)"
        return "ELF vmcore"

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        for name, _, desc in self.notes:
            if name == "VMCOREINFO":
                return parse_vmcoreinfo(desc)
        return None


def parse_vmcoreinfo(text: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines of a VMCOREINFO note."""
    info: dict[str, str] = {}
    for line in text.decode("ascii", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip().rstrip("\0")
    return info


def open_elf_dump(path: str) -> ElfDump:
    """Read the program headers and notes of an ELF vmcore; KdlError if it is not one."""
    try:
        with open(path, "rb") as f:
            return _parse(path, f)
    except OSError as e:
        raise KdlError(f"cannot open dump {path}: {e.strerror}") from None
    except struct.error:
        raise KdlError(f"{path}: truncated ELF headers") from None


def file_size_text(size: int) -> str:
    """A file's size as an error message gives it: ``"285 MB"``, ``"4096 bytes"``."""
    return f"{size / 1e6:.0f} MB" if size >= 10**6 else f"{size} bytes"


def check_in_file(path: str, what: str, offset: int, size: int, file_size: int) -> None:
    """KdlError naming the file and the field when ``size`` bytes at ``offset`` (both read from the file)
    are not all inside it: ``"vmcore.elf: PT_NOTE size 4611686018427387904 exceeds the file (285 MB)"``."""
    if size < 0 or size > file_size:
        raise KdlError(f"{path}: {what} size {size} exceeds the file ({file_size_text(file_size)})")
    if offset < 0 or offset + size > file_size:
        raise KdlError(f"{path}: {what} at offset {offset} (size {size}) exceeds the file "
                       f"({file_size_text(file_size)})")


PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr


def _parse(path: str, f: BinaryIO) -> ElfDump:
    ident = f.read(64)
    if ident[:4] != ELF_MAGIC:
        raise KdlError(f"{path} is not an ELF vmcore")  # (a kdump-compressed one is told apart by dumpfile.sniff)
    if ident[4] != 2 or ident[5] != 1:
        raise KdlError(f"{path}: only 64-bit little-endian dumps are supported")
    e_type, = struct.unpack_from("<H", ident, 16)
    if e_type != 4:
        raise KdlError(f"{path} is an ELF file but not a core dump")
    size = f.seek(0, 2)
    phoff, shoff = struct.unpack_from("<QQ", ident, 32)
    phentsize, phnum = struct.unpack_from("<HH", ident, 54)
    if phentsize < PHDR.size:
        raise KdlError(f"{path}: program header size (e_phentsize) {phentsize} is less than {PHDR.size}")
    if phnum == PN_XNUM:
        # More than 65534 program headers (a paging dump of a kernel with many vmapped ranges:
        # 6.12-rt makes ~65,700): the real count is section header 0's sh_info (ELF gABI).
        if not shoff:
            raise KdlError(f"{path}: e_phnum is PN_XNUM but there is no section header with the real count")
        check_in_file(path, "section header 0 (e_shoff)", shoff, 64, size)
        f.seek(shoff)
        phnum, = struct.unpack_from("<I", f.read(64), 44)
    check_in_file(path, f"program header table ({phnum} entries)", phoff, phentsize * phnum, size)
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    dump = ElfDump(path)
    # (iter_unpack: one C loop over the table; a 6.12-rt paging dump has ~65,700 entries)
    headers = PHDR.iter_unpack(table) if phentsize == PHDR.size else \
        (PHDR.unpack_from(table, i * phentsize) for i in range(phnum))
    for p_type, _, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _ in headers:
        if p_type == PT_LOAD:
            if p_offset + p_filesz > size:
                raise KdlError(f"{path} is truncated: it ends at {size} bytes, its headers say {p_offset + p_filesz}")
            dump.loads.append((p_vaddr, p_paddr, p_filesz, p_memsz, p_offset))
        elif p_type == PT_NOTE:
            check_in_file(path, "PT_NOTE", p_offset, p_filesz, size)
            f.seek(p_offset)
            dump.notes.extend(parse_notes(f.read(p_filesz)))
    return dump


def parse_notes(data: bytes) -> list[tuple[str, int, bytes]]:
    """``(name, type, desc)`` of each ELF note in a PT_NOTE segment's bytes."""
    notes = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos : pos + namesz].rstrip(b"\0").decode("ascii", "replace")
        pos += (namesz + 3) & ~3
        desc = data[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        notes.append((name, ntype, desc))
    return notes
