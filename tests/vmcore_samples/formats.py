"""The other dump formats of one boot: what kdump and crash users really have.

QEMU writes two of them itself (``build.py`` asks it over QMP): a physical-only
ELF (``paging: false``) and a *flattened* kdump-compressed file
(``format: kdump-zlib``). This module derives the rest with the real tools:

- ``makedumpfile -R`` turns the flattened file into a normal kdump file;
- ``makedumpfile -c -d 31`` / ``-l -d 31`` filter and compress the physical
  ELF (zlib / lzo), as a kdump service does; QEMU 7.2 puts the ELF program
  headers after its section headers, where makedumpfile does not look for them,
  so they are moved to offset 64 first (:func:`move_program_headers`);
- Debian 12's makedumpfile and QEMU have neither snappy nor zstd, so those two
  are made by re-compressing every page of a real kdump file
  (:func:`recompress`); everything else in the file is kept byte for byte.

Needs ``makedumpfile``; :func:`recompress` needs the ``zstandard`` and
``python-snappy`` modules (the test extras).
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Callable

__all__ = ["move_program_headers", "unflatten", "makedumpfile", "recompress", "without_page", "CODECS"]

MAKEDUMPFILE_TIMEOUT = 300

# kdump page descriptor flags (the format's DUMP_DH_COMPRESSED_* bits)
FLAG_ZLIB, FLAG_LZO, FLAG_SNAPPY, FLAG_ZSTD = 0x1, 0x2, 0x4, 0x20


class FormatError(Exception):
    pass


def _run(cmd: list[str], **kw) -> None:
    done = subprocess.run(cmd, capture_output=True, timeout=MAKEDUMPFILE_TIMEOUT, **kw)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-3:]
        raise FormatError(f"{' '.join(cmd[:3])}... failed ({done.returncode}): {' | '.join(tail)}")


def unflatten(flat: Path, out: Path) -> None:
    """``makedumpfile -R``: a flattened kdump file (QEMU's kdump-zlib) to a normal one."""
    out.unlink(missing_ok=True)
    with open(flat, "rb") as src:
        _run(["makedumpfile", "-R", str(out)], stdin=src)


def makedumpfile(elf: Path, out: Path, compress: str = "-c", level: int = 31) -> None:
    """A kdump-compressed, filtered dump of a physical ELF, as a kdump service writes it."""
    out.unlink(missing_ok=True)
    _run(["makedumpfile", compress, "-d", str(level), str(elf), str(out)])


def move_program_headers(elf: Path, out: Path, hole: tuple[int, int] | None = None) -> None:
    """Copy a QEMU ELF core with its program headers right after the ELF header and no section headers.

    ``hole=(paddr, size)`` also leaves that physical range out of the copy (its PT_LOAD is
    split around it), the way a dump that lost those pages looks.
    """
    with open(elf, "rb") as src:
        ehdr = bytearray(src.read(64))
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        src.seek(phoff)
        table = src.read(phentsize * phnum)
        segments = [list(struct.unpack_from("<IIQQQQQQ", table, i * phentsize)) for i in range(phnum)]
        if hole is not None:
            segments = _split(segments, *hole)
        notes = [s for s in segments if s[0] == 4]
        loads = [s for s in segments if s[0] != 4]
        segments = notes + loads
        offset = 64 + 56 * len(segments)
        plan = []  # (source offset, size) in the order written
        for s in segments:
            plan.append((s[2], s[5]))
            s[2] = offset
            offset += s[5]
        struct.pack_into("<Q", ehdr, 32, 64)  # e_phoff
        struct.pack_into("<Q", ehdr, 40, 0)  # e_shoff
        struct.pack_into("<HHHHHH", ehdr, 52, 64, 56, len(segments), 64, 0, 0)
        with open(out, "wb") as dst:
            dst.write(ehdr)
            for s in segments:
                dst.write(struct.pack("<IIQQQQQQ", *s))
            for source, size in plan:
                src.seek(source)
                _copy(src, dst, size)


def _split(segments: list[list[int]], paddr: int, size: int) -> list[list[int]]:
    out = []
    for s in segments:
        p_type, flags, offset, vaddr, start, filesz, memsz, align = s
        end = start + filesz
        if p_type != 1 or end <= paddr or start >= paddr + size:
            out.append(s)
            continue
        if start < paddr:
            n = paddr - start
            out.append([p_type, flags, offset, vaddr, start, n, n, align])
        if end > paddr + size:
            skip = paddr + size - start
            n = end - (paddr + size)
            out.append([p_type, flags, offset + skip, vaddr + skip, paddr + size, n, n, align])
    return out


def _copy(src, dst, size: int) -> None:
    while size > 0:
        chunk = src.read(min(size, 1 << 22))
        if not chunk:
            raise FormatError("the ELF file ends before its last segment")
        dst.write(chunk)
        size -= len(chunk)


def _snappy() -> tuple[int, Callable[[bytes], bytes]]:
    import snappy  # type: ignore[import-untyped]

    return FLAG_SNAPPY, snappy.compress


def _zstd() -> tuple[int, Callable[[bytes], bytes]]:
    import zstandard  # type: ignore[import-untyped]

    return FLAG_ZSTD, zstandard.ZstdCompressor().compress


CODECS: dict[str, Callable[[], tuple[int, Callable[[bytes], bytes]]]] = {"snappy": _snappy, "zstd": _zstd}


def recompress(kdump: Path, out: Path, codec: str) -> None:
    """Rewrite a zlib kdump file with every page compressed by ``codec`` ("snappy" or "zstd")."""
    flag, compress = CODECS[codec]()
    with open(kdump, "rb") as src:
        head = src.read(4096)
        if head[:8] != b"KDUMP   ":
            raise FormatError(f"{kdump} is not a (normal) kdump file")
        block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", head, 428)
        descs_at = (1 + sub_hdr_size + bitmap_blocks) * block_size
        src.seek((1 + sub_hdr_size) * block_size + bitmap_blocks * block_size // 2)
        pages = int.from_bytes(src.read(bitmap_blocks * block_size // 2), "little").bit_count()
        src.seek(descs_at)
        table = src.read(24 * pages)
        src.seek(0)
        prefix = src.read(descs_at)
        with open(out, "wb") as dst:
            dst.write(prefix)
            data_at = descs_at + 24 * pages
            descs = bytearray()
            blobs = []
            for i in range(pages):
                offset, size, flags, page_flags = struct.unpack_from("<qIIQ", table, 24 * i)
                src.seek(offset)
                raw = src.read(size)
                if flags & FLAG_ZLIB:
                    raw = zlib.decompress(raw)
                elif flags:
                    raise FormatError(f"{kdump}: page {i} has compression flags {flags:#x}, expected zlib")
                packed = compress(raw)
                new_flags = flag
                if len(packed) >= block_size:
                    packed, new_flags = raw, 0
                descs += struct.pack("<qIIQ", data_at, len(packed), new_flags, page_flags)
                data_at += len(packed)
                blobs.append(packed)
            dst.write(descs)
            for blob in blobs:
                dst.write(blob)


def without_page(elf: Path, out: Path, paddr: int, level: int = 31) -> None:
    """A kdump file (``makedumpfile -c -d LEVEL``) of a physical ELF that lacks the page at ``paddr``."""
    tmp = out.with_name(out.name + ".elf")
    try:
        move_program_headers(elf, tmp, hole=(paddr & ~0xFFF, 0x1000))
        makedumpfile(tmp, out, level=level)
    finally:
        tmp.unlink(missing_ok=True)


def filtered(elf: Path, out: Path, compress: str = "-c", level: int = 31) -> None:
    """``makedumpfile COMPRESS -d LEVEL`` of a QEMU physical ELF (program headers moved first)."""
    tmp = out.with_name(out.name + ".elf")
    try:
        move_program_headers(elf, tmp)
        makedumpfile(tmp, out, compress, level)
    finally:
        tmp.unlink(missing_ok=True)


def have_makedumpfile() -> bool:
    return shutil.which("makedumpfile") is not None
