"""Physical memory from a kdump-compressed file (makedumpfile, QEMU ``kdump-*``), normal or flattened.

The normal format, block by block (block = ``block_size``, the page size):

- block 0: ``disk_dump_header`` (signature ``"KDUMP   "``, version, utsname, ...);
- ``sub_hdr_size`` blocks: ``kdump_sub_header`` (phys_base, dump_level, where the
  VMCOREINFO and ELF notes are in the file, 64-bit max_mapnr), the notes themselves;
- ``bitmap_blocks`` blocks: two bitmaps of one bit per page frame, the first
  "was RAM", the second "is in this file" (bit ``pfn % 8`` of byte ``pfn / 8``);
- one 24-byte page descriptor ``{offset, size, flags, page_flags}`` per page of
  the second bitmap, in pfn order; then the page data, each page compressed on
  its own (flags: zlib 0x1, lzo 0x2, snappy 0x4, zstd 0x20; none: raw).

A page left out of the second bitmap was filtered out (``makedumpfile -d``:
zero pages, page cache, user data, free pages) or was never RAM.

The *flattened* format (``makedumpfile -F``, QEMU's ``dump-guest-memory
format=kdump-*``) is the same file cut into records for a pipe: a 4 KiB header
with the signature ``"makedumpfile"``, then ``{be64 offset, be64 size, data}``
records that say where each piece of the normal file goes. :class:`Flattened`
indexes the records once and reads the file as if it were the normal one.
"""
from __future__ import annotations

import bisect
import struct
import zlib
from typing import BinaryIO, Callable

from ..errors import KdlError, ReadError
from .lzo import LzoError, lzo1x_decompress
from .vmcore import file_size_text, parse_notes, parse_vmcoreinfo

__all__ = ["KdumpFile", "Flattened", "KDUMP_SIGNATURE", "FLAT_SIGNATURE"]

KDUMP_SIGNATURE = b"KDUMP   "
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
DESC = struct.Struct("<qIIQ")  # page_desc: offset, size, flags, page_flags
BITS_PER_CHUNK = 4096 * 8  # pfns per prefix-count entry of the second bitmap

ZLIB, LZO, SNAPPY, ZSTD = 0x1, 0x2, 0x4, 0x20
ZERO_PAGES_ONLY = 1  # dump level that excludes zero pages and nothing else (QEMU's kdump output)


class Flattened:
    """Random access to the normal file that a flattened kdump file describes."""

    def __init__(self, f: BinaryIO, path: str) -> None:
        self._f = f
        pieces: list[tuple[int, int, int]] = []  # (offset in the normal file, size, position in this file)
        pos = FLAT_HEADER_SIZE
        end = f.seek(0, 2)
        while True:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 16:
                raise KdlError(f"{path} is truncated: the flattened dump has no end marker")
            offset, size = struct.unpack(">qq", head)
            if offset == -1:
                break
            if offset < 0 or size < 0 or pos + 16 + size > end:
                raise KdlError(f"{path} is truncated or corrupt: a flattened record at {pos} runs past the end")
            pieces.append((offset, size, pos + 16))
            pos += 16 + size
        pieces.sort()
        self._pieces = pieces
        self._starts = [p[0] for p in pieces]
        self.size = max((start + length for start, length, _ in pieces), default=0)  # of the normal file

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of the normal file: fewer where it has a hole or ends."""
        out = bytearray()
        while size > 0:
            i = bisect.bisect_right(self._starts, offset) - 1
            if i < 0 or offset >= self._pieces[i][0] + self._pieces[i][1]:
                break  # a hole in the normal file: nothing was written there
            start, length, pos = self._pieces[i]
            n = min(size, start + length - offset)
            self._f.seek(pos + offset - start)
            out += self._f.read(n)
            offset += n
            size -= n
        return bytes(out)


class _Plain:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = f.seek(0, 2)

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``: fewer where the file ends (never a read of more than it holds)."""
        size = min(size, self.size - offset)
        if offset < 0 or size <= 0:
            return b""
        self._f.seek(offset)
        return self._f.read(size)


class KdumpFile:
    """Pages of a kdump-compressed dump, by physical address."""

    def __init__(self, f: BinaryIO, path: str) -> None:
        self.path = path
        f.seek(0)
        magic = f.read(16)
        self.flattened = magic.startswith(FLAT_SIGNATURE)
        self._file = Flattened(f, path) if self.flattened else _Plain(f)
        head = self._file.pread(0, 4096)
        if len(head) < 464 or head[:8] != KDUMP_SIGNATURE:
            raise KdlError(f"{path} is not a kdump-compressed dump (or its header is cut off)")
        self.version, = struct.unpack_from("<i", head, 8)
        self.utsname = [head[12 + 65 * i : 12 + 65 * (i + 1)].split(b"\0")[0].decode("ascii", "replace") for i in range(6)]
        self.block_size, sub_hdr_size, bitmap_blocks, max_mapnr32 = struct.unpack_from("<iiII", head, 428)
        self.nr_cpus, = struct.unpack_from("<i", head, 460)
        if self.block_size not in (4096, 8192, 16384, 65536) or sub_hdr_size < 1:
            raise KdlError(f"{path}: corrupt kdump header (block size {self.block_size})")
        sub = self._file.pread(self.block_size, 104)
        if len(sub) < (104 if self.version >= 6 else 64):
            raise KdlError(f"{path} is truncated: its kdump sub-header is cut off")
        self.phys_base, self.dump_level = struct.unpack_from("<Qi", sub, 0)
        off_info, size_info, off_note, size_note = struct.unpack_from("<qQqQ", sub, 32)
        self.max_mapnr = struct.unpack_from("<Q", sub, 96)[0] if self.version >= 6 else max_mapnr32
        self._vmcoreinfo = parse_vmcoreinfo(self._region(off_info, size_info, "VMCOREINFO")) \
            if self.version >= 3 and size_info else {}
        self.notes = parse_notes(self._region(off_note, size_note, "ELF notes")) if self.version >= 4 and size_note else []

        size = self._file.size
        if (1 + sub_hdr_size) * self.block_size > size:
            raise KdlError(f"{path} is truncated or corrupt: its sub-header (sub_hdr_size {sub_hdr_size}, blocks of "
                           f"{self.block_size}) exceeds the file ({file_size_text(size)})")
        half = bitmap_blocks * self.block_size // 2
        bitmap_at = (1 + sub_hdr_size) * self.block_size
        if bitmap_at + 2 * half > size:
            raise KdlError(f"{path} is truncated or corrupt: its page bitmaps (bitmap_blocks {bitmap_blocks}, "
                           f"{2 * half} bytes at {bitmap_at}) exceed the file ({file_size_text(size)})")
        self._valid = self._file.pread(bitmap_at, half)
        self._dumped = self._file.pread(bitmap_at + half, half)
        if len(self._dumped) < half:
            raise KdlError(f"{path} is truncated: its page bitmaps are cut off")
        # how many dumped pages come before each chunk of BITS_PER_CHUNK pfns
        self._rank = [0]
        step = BITS_PER_CHUNK // 8
        for i in range(0, len(self._dumped), step):
            self._rank.append(self._rank[-1] + int.from_bytes(self._dumped[i : i + step], "little").bit_count())
        self._descs_at = bitmap_at + 2 * half
        self._check_complete()

    def _region(self, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``offset`` of the sub-header's data; KdlError when the file ends first."""
        data = self._file.pread(offset, size) if offset >= 0 and 0 < size < 1 << 30 else b""
        if len(data) != size:
            raise KdlError(f"{self.path} is truncated or corrupt: its {what} ({size} bytes at {offset}) are cut off")
        return data

    def _check_complete(self) -> None:
        """KdlError up front when the file ends before its last page's data."""
        pages = self._rank[-1]
        if pages == 0:
            return
        last = self._file.pread(self._descs_at + DESC.size * (pages - 1), DESC.size)
        if len(last) < DESC.size:
            raise KdlError(f"{self.path} is truncated: its page table is cut off")
        offset, size, _, _ = DESC.unpack(last)
        if offset < 0 or not 0 < size <= self.block_size:
            raise KdlError(f"{self.path}: the last page descriptor is corrupt (offset {offset}, size {size})")
        if len(self._file.pread(offset + size - 1, 1)) != 1:
            raise KdlError(f"{self.path} is truncated: its last page ends at {offset + size} bytes")

    # -- what the file says about itself ----------------------------------------
    def vmcoreinfo(self) -> dict[str, str]:
        return self._vmcoreinfo

    @property
    def kind(self) -> str:
        what = "flattened kdump-compressed" if self.flattened else "kdump-compressed"
        level = f", dump level {self.dump_level}" if self.dump_level else ""
        return f"{what} vmcore{level}"

    # -- pages -----------------------------------------------------------------
    def _bit(self, bitmap: bytes, pfn: int) -> bool:
        byte = pfn >> 3
        return byte < len(bitmap) and bool(bitmap[byte] >> (pfn & 7) & 1)

    def read_page(self, pfn: int) -> bytes:
        """The page frame ``pfn``; ReadError when it is not in the file."""
        address = pfn * self.block_size
        if not self._bit(self._dumped, pfn):
            if self._bit(self._valid, pfn):
                if self.dump_level == ZERO_PAGES_ONLY:
                    return bytes(self.block_size)  # only all-zero pages were left out: this was one
                raise ReadError(address, self.block_size, f"filtered out of the dump (dump level {self.dump_level})")
            raise ReadError(address, self.block_size, "not in dump")
        chunk = pfn // BITS_PER_CHUNK
        first = chunk * BITS_PER_CHUNK // 8
        index = self._rank[chunk] + int.from_bytes(self._dumped[first : pfn >> 3], "little").bit_count()
        index += (self._dumped[pfn >> 3] & ((1 << (pfn & 7)) - 1)).bit_count()
        desc = self._file.pread(self._descs_at + DESC.size * index, DESC.size)
        if len(desc) < DESC.size:
            raise ReadError(address, self.block_size, "page descriptor cut off (truncated dump)")
        offset, size, flags, _ = DESC.unpack(desc)
        if offset < 0 or not 0 < size <= self.block_size:
            raise ReadError(address, self.block_size, f"corrupt page descriptor (offset {offset}, size {size})")
        data = self._file.pread(offset, size)
        if len(data) != size:
            raise ReadError(address, self.block_size, "page data cut off (truncated dump)")
        if flags & (ZLIB | LZO | SNAPPY | ZSTD):
            data = self._decompress(flags, data, address)
        if len(data) != self.block_size:
            raise ReadError(address, self.block_size, "corrupt page in dump")
        return data

    def _decompress(self, flags: int, data: bytes, address: int) -> bytes:
        try:
            return _codec(flags)(data, self.block_size)
        except KdlError:
            raise
        except _BadPage as e:
            raise ReadError(address, self.block_size, f"corrupt compressed page: {e}") from None
        except Exception as e:  # each library has its own error type
            raise ReadError(address, self.block_size, f"corrupt compressed page ({type(e).__name__})") from None


_CODECS: dict[int, Callable[[bytes, int], bytes]] = {}


def _codec(flags: int) -> Callable[[bytes, int], bytes]:
    """The decompressor for a page's flags; KdlError naming the Debian package when it is missing."""
    kind = next(k for k in (ZLIB, LZO, SNAPPY, ZSTD) if flags & k)
    if kind not in _CODECS:
        _CODECS[kind] = _load_codec(kind)
    return _CODECS[kind]


def _load_codec(kind: int) -> Callable[[bytes, int], bytes]:
    if kind == ZLIB:
        return _zlib
    names = {LZO: ("lzo", "python3-lzo"), SNAPPY: ("snappy", "python3-snappy"), ZSTD: ("zstandard", "python3-zstandard")}
    module, package = names[kind]
    try:
        lib = __import__(module)
    except ImportError:
        if kind == LZO:  # kdlgdb's own, slower (~0.2 ms a page)
            return _lzo_in_python
        raise KdlError(f"this dump's pages are {module}-compressed: install {package} "
                       f"(apt-get install {package})") from None
    if kind == LZO:
        return lambda data, size: lib.decompress(data, False, size)
    if kind == SNAPPY:
        return lambda data, size: lib.uncompress(_said_size(_snappy_length(data), size, "snappy", data))
    decompressor = lib.ZstdDecompressor()
    return lambda data, size: decompressor.decompress(
        _said_size(lib.frame_content_size(data), size, "zstd", data), max_output_size=size)


def _lzo_in_python(data: bytes, size: int) -> bytes:
    try:
        return lzo1x_decompress(data, size)
    except LzoError as e:
        raise _BadPage(f"lzo: {e}") from None


def _zlib(data: bytes, size: int) -> bytes:
    """At most ``size`` + 1 bytes out of a zlib stream (a corrupt page cannot inflate without bound)."""
    return zlib.decompressobj().decompress(data, size + 1)


def _snappy_length(data: bytes) -> int:
    """The uncompressed length a snappy block starts with (a little-endian base-128 varint)."""
    length = 0
    for i, byte in enumerate(data[:5]):
        length |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return length
    return -1


def _said_size(said: int, size: int, codec: str, data: bytes) -> bytes:
    """``data`` when the size its header says (-1: none said) is at most the page's; _BadPage otherwise:
    a codec library allocates what the header says before it looks at the rest."""
    if said > size:
        raise _BadPage(f"{codec} says it holds {said} bytes, more than a page ({size})")
    return data


class _BadPage(Exception):
    """A compressed page whose own header cannot be true."""
