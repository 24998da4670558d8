"""The fuzzing tier's machinery (tests/test_fuzz.py): small real dumps, mutations, the case runner.

Three kinds of case, each seeded on its own (``random.Random(f"{seed}/{kind}/{case}")``), so any one
failure is replayed alone with ``--fuzz-seed SEED --fuzz-case KIND:CASE``:

- ``dump``: a *mini dump* made once a session from a real sample dump of each format (only the
  pages that opening it and reading the kernel objects its VMCOREINFO names touch; a few hundred
  KiB instead of 40-285 MB), mutated and opened with DumpFile (ElfMemory for gdb's paging ELF);
- ``memory``: a replay recording of a real dump with its memory mutated, through the analysis and
  every renderer;
- ``gdbstub``: real gdb against a fake remote stub (tests/fakestub.py) that fails on purpose.

A case fails on an exception that is not one of kdlgdb's own (KdlError and its kinds) and on a
hang (more than ``CASE_SECONDS``).
"""
from __future__ import annotations

import bisect
import contextlib
import gzip
import json
import random
import signal
import struct
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from kdlgdb.errors import KdlError, ReadError
from kdlgdb.target import kdump as kdump_mod
from kdlgdb.target.cpustate import dump_cpu_registers, registers_from_notes
from kdlgdb.target.dumpfile import DumpFile, dump_format, dump_vmcoreinfo
from kdlgdb.target.elfmemory import ElfMemory
from kdlgdb.target.replay import ReplayTarget
from kdlgdb.target.vmcore import PT_LOAD, PT_NOTE, open_elf_dump, parse_vmcoreinfo

#: A case taking longer than this (wall seconds, on a loaded 2-core machine) is a hang.
CASE_SECONDS = 10.0
#: The same for a gdbstub case: gdb loads the vmlinux (2-3 s), then reads through the stub.
GDB_CASE_SECONDS = 150.0

PAGE = 4096


# -- one case: what counts as a failure -------------------------------------------------------------


class Hang(Exception):
    """A case ran past its time limit."""


@dataclass
class Failure:
    kind: str
    case: int
    what: str  # the source and the mutations
    error: str  # the exception's last traceback lines

    def __str__(self) -> str:
        return f"{self.kind}:{self.case} ({self.what}): {self.error}"


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Hang inside the block after ``seconds`` (SIGALRM: the main thread, as pytest and its workers run tests)."""
    def expire(_signum: int, _frame: Any) -> None:
        raise Hang(f"no answer after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_case(kind: str, case: int, what: str, body: Callable[[], object]) -> Optional[Failure]:
    """None when ``body`` ends or raises one of kdlgdb's own errors; a Failure otherwise."""
    try:
        with time_limit(GDB_CASE_SECONDS + 10 if kind == "gdbstub" else CASE_SECONDS):
            body()
    except KdlError:
        return None
    except Exception as e:  # noqa: BLE001 (anything else is what the tier looks for)
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Failure(kind, case, what, f"{type(e).__name__}: {str(e)[:200]} at {where.filename}:{where.lineno}")
    return None


def case_rng(seed: int, kind: str, case: int) -> random.Random:
    return random.Random(f"{seed}/{kind}/{case}")


# -- mutations ------------------------------------------------------------------------------------

INTERESTING = (0, 1, 2, 7, 0xFF, 0xFFFF, 0x7FFF, 0x8000, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 1 << 32, 1 << 40,
               1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, (1 << 64) - 8, 4096, 4095, 4097, 65536)


def mutate_bytes(data: bytearray, start: int, end: int, rng: random.Random, extra: tuple[int, ...] = ()) -> str:
    """One mutation of ``data[start:end]``; what it did, in a few words."""
    end = min(end, len(data))
    if end <= start:
        return "nothing"
    op = rng.randrange(4)
    if op == 0:
        at = rng.randrange(start, end)
        bit = rng.randrange(8)
        data[at] ^= 1 << bit
        return f"bit {bit} of byte {at}"
    if op == 1:
        width = rng.choice((2, 4, 8))
        at = start + rng.randrange(max(1, (end - start) // width)) * width
        if at + width > len(data):
            return "nothing"
        value = rng.choice(INTERESTING + extra) & ((1 << (8 * width)) - 1)
        data[at : at + width] = value.to_bytes(width, "little")
        return f"u{8 * width} at {at} = {value:#x}"
    if op == 2:
        at = rng.randrange(start, end)
        n = rng.randint(1, 32)
        data[at : at + n] = bytes(rng.randrange(256) for _ in range(len(data[at : at + n])))
        return f"{n} random bytes at {at}"
    at = rng.randrange(start, end)
    n = rng.randint(1, 64)
    data[at : at + n] = bytes(len(data[at : at + n]))
    return f"{n} zero bytes at {at}"


_TEXT_VALUES = ("", "-1", "0", "0x", "zz", "ffffffffffffffffffffffffffffffff", "18446744073709551616", "1", "-0x10",
                "4611686018427387904", "1e9", "\xff")


def mutate_vmcoreinfo(data: bytearray, start: int, end: int, rng: random.Random) -> str:
    """A value of a ``KEY=VALUE`` line replaced in place (padded to its length), or a key spoilt."""
    text = bytes(data[start:end])
    lines = [i for i, c in enumerate(text) if c == ord("=")]
    if not lines:
        return mutate_bytes(data, start, end, rng)
    eq = rng.choice(lines)
    line_start = text.rfind(b"\n", 0, eq) + 1
    line_end = text.find(b"\n", eq)
    line_end = len(text) if line_end < 0 else line_end
    if rng.randrange(5) == 0:
        data[start + line_start : start + eq] = b"X" * (eq - line_start)
        return f"VMCOREINFO key at {start + line_start} spoilt"
    room = line_end - eq - 1
    value = rng.choice(_TEXT_VALUES).encode("latin-1")[:room].ljust(room)
    data[start + eq + 1 : start + line_end] = value
    key = text[line_start:eq].decode("ascii", "replace")
    return f"VMCOREINFO {key}={value.strip()!r}"


# -- mini dumps: the pages a reader touches, in each format -------------------------------------


@dataclass
class Mini:
    """A small dump file's bytes, its format, and where its parts are (for aimed mutations)."""

    name: str  # the source's kind: phys, elf, kdump, kdump-flat, kdump-filtered, kdump-lzo, ...
    data: bytes
    regions: dict[str, tuple[int, int]]
    symbols: list[int]  # kernel virtual addresses of the objects VMCOREINFO names (from the source)
    virtual: bool = False  # a paging ELF: read by ElfMemory (gdb reads it in real use)
    needs: str = ""  # a Python module the pages' codec needs
    pfns: list[int] = field(default_factory=list)  # the page frames it holds (kdump)


def vmcoreinfo_symbols(info: dict[str, str]) -> list[int]:
    out = []
    for key, value in sorted(info.items()):
        if key.startswith("SYMBOL("):
            with contextlib.suppress(ValueError):
                out.append(int(value, 16))
    return out


def touch(read: Callable[[int, int], bytes], symbols: list[int]) -> None:
    """What a case does with an open dump: read each object VMCOREINFO names, and one long read."""
    for address in symbols:
        with contextlib.suppress(ReadError):
            read(address, 64)
    if symbols:
        with contextlib.suppress(ReadError):
            read(symbols[0] & ~0xFFF, 3 * PAGE)


def _elf_bytes(notes: bytes, loads: list[tuple[int, int, bytes]]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """An ELF64 core: a PT_NOTE with ``notes``, a PT_LOAD per ``(vaddr, paddr, data)``."""
    phnum = 1 + len(loads)
    at = 64 + 56 * phnum
    head = bytearray(64)
    head[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", head, 16, 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    table = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, at, 0, 0, len(notes), len(notes), 4)]
    body = [notes]
    pos = at + len(notes)
    for vaddr, paddr, data in loads:
        table.append(struct.pack("<IIQQQQQQ", PT_LOAD, 7, pos, vaddr, paddr, len(data), len(data), PAGE))
        body.append(data)
        pos += len(data)
    out = bytes(head) + b"".join(table) + b"".join(body)
    note_at = 64 + 56 * phnum
    info_at = out.find(b"VMCOREINFO\0", note_at, note_at + len(notes))
    regions = {"ELF header": (0, 64), "program headers": (64, note_at), "notes": (note_at, note_at + len(notes)),
               "VMCOREINFO": (info_at + 12, note_at + len(notes)) if info_at >= 0 else (note_at, note_at),
               "pages": (note_at + len(notes), len(out))}
    return out, regions


def _raw_notes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * min(phnum, 64))
        for i in range(min(phnum, 64)):
            p_type, _, offset, _, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
            if p_type == PT_NOTE:
                f.seek(offset)
                return f.read(filesz)
    raise AssertionError(f"{path} has no PT_NOTE in its first 64 program headers")


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page numbers as (first, count) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for p in sorted(set(pages)):
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


def mini_physical_elf(path: Path, name: str) -> Mini:
    dump = DumpFile(str(path))
    try:
        symbols = vmcoreinfo_symbols(dump.vmcoreinfo())
        seen: list[int] = []
        inner = dump._memory.read_page

        def read_page(pfn: int) -> bytes:
            seen.append(pfn)
            return inner(pfn)

        dump._memory.read_page = read_page  # type: ignore[method-assign]
        touch(dump.read, symbols)
        loads = [(0, first * PAGE, b"".join(inner(p) for p in range(first, first + n))) for first, n in _runs(seen)]
    finally:
        dump.close()
    data, regions = _elf_bytes(_raw_notes(path), loads)
    return Mini(name, data, regions, symbols)


def mini_paging_elf(path: Path, name: str) -> Mini:
    elf = open_elf_dump(str(path))
    symbols = vmcoreinfo_symbols(elf.vmcoreinfo() or {})
    memory = ElfMemory(elf)
    seen: list[int] = []

    def read(address: int, size: int) -> bytes:
        data = memory.read(address, size)
        seen.extend(range(address >> 12, (address + size - 1 >> 12) + 1))
        return data

    try:
        touch(read, symbols)
        by_vaddr = sorted((v, p, m) for v, p, _, m, _ in elf.loads)
        loads = []
        for first, n in _runs(seen):
            vaddr = first * PAGE
            i = bisect.bisect_right(by_vaddr, (vaddr, 1 << 64, 0)) - 1
            seg_v, seg_p, _ = by_vaddr[i]
            loads.append((vaddr, seg_p + vaddr - seg_v, memory.read(vaddr, n * PAGE)))
    finally:
        memory.close()
    data, regions = _elf_bytes(_raw_notes(path), loads)
    return Mini(name, data, regions, symbols, virtual=True)


def mini_kdump(path: Path, name: str, flattened: bool, needs: str = "", pfns: Optional[list[int]] = None) -> Mini:
    """A normal (or flattened) kdump-compressed file holding only the pages the reads touch (or ``pfns``,
    when this Python cannot decompress the source's pages), each page's compressed bytes and flags as the
    source has them."""
    dump = DumpFile(str(path))
    try:
        k = dump.kdump
        assert k is not None
        symbols = vmcoreinfo_symbols(dump.vmcoreinfo())
        seen: list[int] = []
        descs: dict[int, tuple[int, int, int, bytes]] = {}
        real_desc = k._file.pread

        def read_page(pfn: int) -> bytes:
            seen.append(pfn)
            return inner(pfn)

        inner = k.read_page
        k.read_page = read_page  # type: ignore[method-assign]
        if pfns is None:
            touch(dump.read, symbols)
        else:
            seen = list(pfns)
        bs = k.block_size
        head = bytearray(real_desc(0, bs).ljust(bs, b"\0"))  # a flattened file leaves holes: zeros
        _, sub_hdr_size, bitmap_blocks, _ = struct.unpack_from("<iiII", head, 428)
        sub = real_desc(bs, sub_hdr_size * bs).ljust(sub_hdr_size * bs, b"\0")
        half = bitmap_blocks * bs // 2
        dumped = bytearray(half)
        for pfn in sorted(set(seen)):
            if not k._bit(k._dumped, pfn):
                continue
            chunk = pfn // kdump_mod.BITS_PER_CHUNK
            first = chunk * kdump_mod.BITS_PER_CHUNK // 8
            index = k._rank[chunk] + int.from_bytes(k._dumped[first : pfn >> 3], "little").bit_count()
            index += (k._dumped[pfn >> 3] & ((1 << (pfn & 7)) - 1)).bit_count()
            offset, size, flags, page_flags = kdump_mod.DESC.unpack(real_desc(k._descs_at + 24 * index, 24))
            descs[pfn] = (size, flags, page_flags, real_desc(offset, size))
            dumped[pfn >> 3] |= 1 << (pfn & 7)
    finally:
        dump.close()
    bitmap_at = (1 + sub_hdr_size) * bs
    descs_at = bitmap_at + 2 * half
    data_at = descs_at + 24 * len(descs)
    table, pages, page_at = bytearray(), bytearray(), []
    for pfn in sorted(descs):
        size, flags, page_flags, raw = descs[pfn]
        page_at.append(data_at + len(pages))
        table += kdump_mod.DESC.pack(data_at + len(pages), len(raw), flags, page_flags)
        pages += raw
    normal = bytes(head) + sub + k._valid + bytes(dumped) + bytes(table) + bytes(pages)
    sub_fields = struct.unpack_from("<qQqQ", sub, 32)
    regions = {"kdump header": (0, 464), "sub-header": (bs, bs + 104),
               "VMCOREINFO": (sub_fields[0], sub_fields[0] + sub_fields[1]),
               "notes": (sub_fields[2], sub_fields[2] + sub_fields[3]),
               "bitmaps": (bitmap_at, descs_at), "page descriptors": (descs_at, data_at),
               "compressed pages": (data_at, len(normal))}
    if not flattened:
        return Mini(name, normal, regions, symbols, needs=needs, pfns=sorted(descs))
    # Flattened: the same file as records, one a part (and one a page), then the end marker.
    cuts = sorted({0, bs, bitmap_at, descs_at, data_at, len(normal)} | set(page_at))
    out = bytearray(b"makedumpfile".ljust(4096, b"\0"))
    struct.pack_into(">qq", out, 16, 1, 1)  # type, version
    moved: dict[str, tuple[int, int]] = {"records": (4096, 0)}
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            continue
        out += struct.pack(">qq", a, b - a)
        for what, (start, end) in regions.items():
            if a <= start < b:
                moved[what] = (len(out) + start - a, len(out) + min(end, b) - a)
        out += normal[a:b]
    out += struct.pack(">qq", -1, -1)
    moved["records"] = (4096, len(out))
    return Mini(name, bytes(out), moved, symbols, needs=needs, pfns=sorted(descs))


def make_minis(dumps: dict[str, Path]) -> list[Mini]:
    """One mini dump per source form (``{kind: path}`` of sample dumps)."""
    import importlib.util

    minis: list[Mini] = []
    codecs = {"kdump-lzo": "lzo", "kdump-snappy": "snappy", "kdump-zstd": "zstandard"}
    for kind, path in sorted(dumps.items(), key=lambda item: item[0] in codecs):  # the zlib ones first
        needs = codecs.get(kind, "")
        if kind == "elf":
            minis.append(mini_paging_elf(path, kind))
        elif kind == "phys":
            minis.append(mini_physical_elf(path, kind))
        elif needs and importlib.util.find_spec(needs) is None:
            # The same pages as the filtered zlib dump of the same instant (every form of a sample is one).
            same = next(m for m in minis if m.name == "kdump-filtered")
            minis.append(mini_kdump(path, kind, flattened=False, needs=needs, pfns=same.pfns))
        else:
            minis.append(mini_kdump(path, kind, flattened=kind == "kdump-flat", needs=needs))
    return minis


def open_and_read(path: str, mini: Mini) -> None:
    """What kdlgdb does with a dump file: its format, VMCOREINFO, CPU registers, then its kernel memory."""
    dump_format(path)
    info = dump_vmcoreinfo(path)
    dump_cpu_registers(path)
    symbols = mini.symbols + vmcoreinfo_symbols(info)[:8]
    if mini.virtual:
        elf = open_elf_dump(path)
        _ = elf.kind, elf.has_virtual_addresses, registers_from_notes(elf.notes)
        memory = ElfMemory(elf)
        try:
            touch(memory.read, symbols)
        finally:
            memory.close()
        return
    dump = DumpFile(path)
    try:
        _ = dump.kind, dump.describe(), registers_from_notes(dump.notes)
        touch(dump.read, symbols)
        with contextlib.suppress(ReadError):
            dump.read_phys(0, 64)
    finally:
        dump.close()


def dump_case(mini: Mini, rng: random.Random, tmp: Path) -> tuple[str, Callable[[], None]]:
    """A mutated copy of ``mini`` written under ``tmp``, and the call that opens and reads it."""
    data = bytearray(mini.data)
    done = []
    for _ in range(rng.randint(1, 3)):
        region = rng.choice(sorted(mini.regions))
        start, end = mini.regions[region]
        if region == "VMCOREINFO" and rng.randrange(2):
            done.append(f"{region}: {mutate_vmcoreinfo(data, start, end, rng)}")
        else:
            done.append(f"{region}: {mutate_bytes(data, start, end, rng, (len(data), len(data) - 1, start))}")
    if rng.randrange(12) == 0:
        cut = rng.randrange(len(data))
        del data[cut:]
        done.append(f"cut at {cut}")
    path = tmp / f"fuzz-{mini.name}"
    path.write_bytes(bytes(data))
    return f"{mini.name}: " + "; ".join(done), lambda: open_and_read(str(path), mini)


# -- kernel memory: mutated recordings ---------------------------------------------------------------


class FuzzReplay(ReplayTarget):
    """A recording whose memory a case has changed: a read it does not hold is unreadable memory (as a
    pointer into nowhere is on a real dump), a question it does not hold has no answer."""

    def __init__(self, base: "Recording", memory: list[bytearray], answers: dict[str, Any]) -> None:
        self.path = base.name
        self.kind = base.kind
        self._starts = base.starts
        self._data = memory  # type: ignore[assignment]
        self._failed = base.failed
        self._answers = answers

    def read(self, address: int, size: int) -> bytes:
        if (address, size) in self._failed:
            raise ReadError(address, size, "not in dump (recorded)")
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address - self._starts[i] + size <= len(self._data[i]):
            offset = address - self._starts[i]
            return bytes(self._data[i][offset : offset + size])
        raise ReadError(address, size, "not in the recording")

    def _answer(self, key: str) -> Any:
        value = self._answers.get(key)
        return tuple(value) if isinstance(value, list) else value


@dataclass
class Recording:
    """A waitfor recording merged with its kernel-log one: memory ranges and answers."""

    name: str
    kind: str
    starts: list[int]
    data: list[bytes]
    failed: set[tuple[int, int]]
    answers: dict[str, Any]
    pointers: list[int] = field(default_factory=list)  # addresses inside the recorded memory


def load_recording(path: Path) -> Recording:
    docs = [json.loads(gzip.decompress(path.read_bytes()))]
    log = path.parent / "dmesg" / path.name
    if log.exists():
        docs.append(json.loads(gzip.decompress(log.read_bytes())))
    ranges: dict[int, bytes] = {}
    for doc in docs:
        for a, d in doc["memory"]:
            ranges[int(a, 16)] = max(ranges.get(int(a, 16), b""), bytes.fromhex(d), key=len)
    starts: list[int] = []
    data: list[bytes] = []
    for a in sorted(ranges):  # merge overlaps so bisection finds each address's one range
        if starts and a <= starts[-1] + len(data[-1]):
            merged = bytearray(data[-1])
            merged[a - starts[-1] : a - starts[-1] + len(ranges[a])] = ranges[a]
            data[-1] = bytes(merged)
        else:
            starts.append(a)
            data.append(ranges[a])
    answers: dict[str, Any] = {}
    for doc in reversed(docs):
        answers.update(doc["answers"])
    failed = {(int(a, 16), n) for doc in docs for a, n in doc["failed"]}
    pointers = [s + 8 * rng for s, d in zip(starts, data) for rng in range(0, len(d) // 8, 97)]
    return Recording(path.name.split(".")[0], docs[0]["kind"], starts, data, failed, answers, pointers)


def _word_value(rec: Recording, at: int, old: int, rng: random.Random) -> tuple[int, str]:
    op = rng.randrange(8)
    if op == 0:
        return rng.choice(rec.pointers), "a pointer elsewhere"
    if op == 1:
        return at, "a pointer to itself"
    if op == 2:
        return (old + rng.choice((8, -8, 16, -16, 0x1000))) & ((1 << 64) - 1), "a pointer nudged"
    if op == 3:
        return rng.choice(INTERESTING), "an interesting value"
    if op == 4:
        return old ^ (1 << rng.randrange(64)), "a bit flipped"
    if op == 5:
        return rng.getrandbits(64), "random"
    if op == 6:
        return 0xFFFF880000000000 | rng.getrandbits(40), "a kernel-looking pointer into nowhere"
    return 0, "zero"


def memory_case(rec: Recording, rng: random.Random) -> tuple[str, FuzzReplay]:
    """A copy of ``rec`` with 1-8 words (pointers, counts, list heads, stack slots) or a span changed."""
    memory = [bytearray(d) for d in rec.data]
    answers = dict(rec.answers)
    done = []
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(memory))
        chunk = memory[i]
        if len(chunk) < 8:
            continue
        slot = rng.randrange(len(chunk) // 8) * 8
        at = rec.starts[i] + slot
        if rng.randrange(10) == 0:
            n = rng.choice((64, 512, 4096))
            chunk[slot : slot + n] = bytes(rng.randrange(256) for _ in range(len(chunk[slot : slot + n])))
            done.append(f"{n} random bytes at {at:#x}")
            continue
        old = int.from_bytes(chunk[slot : slot + 8], "little")
        if old < 1 << 32 and rng.randrange(3) == 0:  # a count, an index, a length
            width = rng.choice((4, 8))
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            chunk[slot : slot + width] = value.to_bytes(width, "little")
            done.append(f"u{8 * width} at {at:#x} = {value:#x}")
            continue
        value, how = _word_value(rec, at, old, rng)
        chunk[slot : slot + 8] = value.to_bytes(8, "little")
        done.append(f"{at:#x} = {value:#x} ({how})")
    if rng.randrange(20) == 0 and isinstance(answers.get("vmcoreinfo"), dict):
        info = dict(answers["vmcoreinfo"])
        key = rng.choice(sorted(info))
        info[key] = rng.choice(_TEXT_VALUES)
        answers["vmcoreinfo"] = info
        done.append(f"VMCOREINFO {key}={info[key]!r}")
    return f"{rec.name}: " + "; ".join(done), FuzzReplay(rec, memory, answers)


def analyse_and_render(target: FuzzReplay) -> list[str]:
    """The analysis and every renderer: every kd-* command's text and JSON, DOT, and each report format.

    Each is run on its own: one that stops with kdlgdb's own error (a one-line message) does not keep
    the others from running. The errors, one line each, are returned."""
    from kdlgdb import report
    from kdlgdb.analysis.graph import WaitForGraph
    from kdlgdb.frontends import commands
    from kdlgdb.kernel.collect import collect
    from kdlgdb.kernel.layout import Kernel
    from kdlgdb.render.dot import render_dot

    errors: list[str] = []

    def each(name: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except KdlError as e:
            assert "\n" not in str(e), (name, str(e))
            errors.append(f"{name}: {e}")
            return None

    kernel = Kernel(target)
    snap = collect(kernel)
    for command, argv in (("kd-tasks", []), ("kd-tasks", ["-s", "D"]), ("kd-locks", []), ("kd-locks", ["--json"]),
                          ("kd-held", []), ("kd-held", ["--json"]), ("kd-waitfor", []), ("kd-waitfor", ["--json"]),
                          ("kd-info", ["--json"]), ("kd-dmesg", ["--notable"])):
        args = commands.parse(command, argv)
        each(command, lambda: commands.run(command, args, snap, color=command == "kd-waitfor", kernel=kernel))
    for task in snap.tasks[:: max(1, len(snap.tasks) // 4)]:
        each("kd-bt", lambda: commands.run("kd-bt", commands.parse("kd-bt", [str(task.address)]), snap))
    for task in snap.tasks:
        if task.state == "D":
            each("kd-waitfor -p", lambda: commands.run("kd-waitfor", commands.parse("kd-waitfor", ["-p", str(task.pid)]),
                                                       snap))
            break
    each("dot", lambda: render_dot(snap, WaitForGraph(snap)))
    log, log_facts = each("kernel log", lambda: report.read_kernel_log(kernel)) or ([], {})
    facts = report.make_facts(dump="/var/crash/vmcore", vmlinux="/usr/lib/debug/boot/vmlinux", debugger="gdb", **log_facts)
    bundle = report.Bundle.from_dict(json.loads(json.dumps(report.Bundle(snap, log, facts).to_dict())))
    for fmt in report.FORMATS:
        each(fmt, lambda: report.render(bundle, fmt, svg="<svg></svg>"))
    each("summary", lambda: report.summary_line(bundle))
    return errors


# -- dump cases in another Python: the one with the codec this one lacks (Debian's python3-lzo) -------------


def run_dump_cases(mini: Mini, seed: int, cases: list[int], tmp: Path) -> list[Failure]:
    failures = []
    for case in cases:
        what, body = dump_case(mini, case_rng(seed, "dump", case), tmp)
        failure = run_case("dump", case, what, body)
        if failure:
            failures.append(failure)
    return failures


def run_dump_cases_in(python: str, mini: Mini, seed: int, cases: list[int], tmp: Path) -> list[Failure]:
    """:func:`run_dump_cases` in the Python ``python`` (gdb's, which has every codec Debian packages)."""
    import os
    import subprocess
    import sys

    spec = tmp / f"mini-{mini.name}.json"
    spec.write_text(json.dumps({"name": mini.name, "data": mini.data.hex(), "regions": mini.regions,
                                "symbols": mini.symbols, "virtual": mini.virtual, "needs": mini.needs,
                                "seed": seed, "cases": cases, "tmp": str(tmp)}))
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent / "src"), str(here)]))
    done = subprocess.run([python, str(Path(__file__)), str(spec)], capture_output=True, text=True, env=env,
                          timeout=CASE_SECONDS * len(cases) + 60, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return [Failure("dump", cases[0], f"{mini.name} in {python}", (done.stderr or done.stdout)[-500:])]
    sys.stderr.write(done.stderr)
    return [Failure(**f) for f in json.loads(done.stdout)]


def _main(spec_path: str) -> None:
    from dataclasses import asdict

    spec = json.loads(Path(spec_path).read_text())
    mini = Mini(spec["name"], bytes.fromhex(spec["data"]), {k: tuple(v) for k, v in spec["regions"].items()},
                spec["symbols"], spec["virtual"], spec["needs"])
    __import__(mini.needs)  # the reason to be here: fail loudly if this Python lacks it too
    unmutated = Path(spec["tmp"]) / f"unmutated-{mini.name}"
    unmutated.write_bytes(mini.data)
    open_and_read(str(unmutated), mini)  # as it is, the mini dump reads without an error
    failures = run_dump_cases(mini, spec["seed"], spec["cases"], Path(spec["tmp"]))
    print(json.dumps([asdict(f) for f in failures]))


if __name__ == "__main__":
    import sys

    _main(sys.argv[1])
