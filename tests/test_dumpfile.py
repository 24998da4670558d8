"""kdlgdb's own dump reader, without gdb: page tables, kdump files, flattened files, codecs."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

import samples
from kdlgdb.errors import KdlError, ReadError
from kdlgdb.target import kdump
from kdlgdb.target.dumpfile import dump_format, dump_vmcoreinfo, open_dump
from kdlgdb.target.pagetable import START_KERNEL_MAP, PageTables

# -- the page-table walk, on tables built by hand -------------------------------------------


class _Memory:
    """Physical memory made of 4 KiB pages, for page tables built by the test."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def set(self, table: int, index: int, value: int) -> None:
        self.pages.setdefault(table, bytearray(4096))[index * 8 : index * 8 + 8] = value.to_bytes(8, "little")

    def read(self, address: int, size: int) -> bytes:
        page = self.pages.get(address & ~0xFFF)
        if page is None:
            raise ReadError(address, size, "not in dump")
        return bytes(page[address & 0xFFF : (address & 0xFFF) + size])


def _index(virt: int, shift: int) -> int:
    return (virt >> shift) & 0x1FF


@pytest.mark.parametrize("levels", [4, 5])
def test_page_table_walk_4k_2m_1g(levels: int) -> None:
    mem = _Memory()
    root_virt = 0xFFFFFFFF82A10000
    phys_base = 0x7000000
    root = root_virt - START_KERNEL_MAP + phys_base
    top = 48 if levels == 5 else 39
    info = {"SYMBOL(init_top_pgt)": f"{root_virt:x}", "NUMBER(phys_base)": str(phys_base),
            "NUMBER(pgtable_l5_enabled)": "1" if levels == 5 else "0"}

    def map_to(virt: int, stop: int, leaf: int) -> None:
        """Tables from the root down to level ``stop`` (30 for PUD, 21 PMD, 12 PTE) for ``virt``."""
        table, shift = root, top
        while shift > stop:
            entry = int.from_bytes(mem.pages.setdefault(table, bytearray(4096))[_index(virt, shift) * 8:][:8], "little")
            if not entry & 1:  # a new table below this one
                entry = (0x100000 + 0x1000 * len(mem.pages)) | 0x63
                mem.set(table, _index(virt, shift), entry)
                mem.pages[entry & ~0xFFF] = bytearray(4096)
            table, shift = entry & ~0xFFF, shift - 9
        mem.set(table, _index(virt, shift), leaf)

    small, huge2m, huge1g = 0xFFFFC90000123000, 0xFFFF888004200000, 0xFFFF888040000000
    map_to(small, 12, 0x5555000 | 0x63)
    map_to(huge2m, 21, 0x8000000 | 0xE3)
    map_to(huge1g, 30, 0x40000000 | 0xE3)
    pages = PageTables(mem.read, info)
    assert pages.levels == levels
    assert pages.translate(small + 0x18) == 0x5555018
    assert pages.translate(huge2m + 0x12345) == 0x8012345
    assert pages.translate(huge1g + 0x2345678) == 0x42345678
    with pytest.raises(ReadError, match="not mapped|not in the dump"):
        pages.translate(0xFFFFFFFFDEAD0000)


def test_negative_phys_base_wraps() -> None:
    """VMCOREINFO prints phys_base signed; a kernel loaded below its link address gives a negative one."""
    pages = PageTables(lambda a, n: bytes(n), {"SYMBOL(init_top_pgt)": "ffffffffabc10000", "NUMBER(phys_base)": "-627048448"})
    assert pages.root == 0x6610000


def test_no_page_tables_in_vmcoreinfo() -> None:
    with pytest.raises(KdlError, match="init_top_pgt"):
        PageTables(lambda a, n: bytes(n), {"OSRELEASE": "6.1.0"})


def _without(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import module`` fail, and kdump forget the codecs it loaded."""
    import builtins

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name == module:
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    monkeypatch.setattr(kdump, "_CODECS", {})


def test_missing_codec_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _without("snappy", monkeypatch)
    with pytest.raises(KdlError, match=r"snappy-compressed: install python3-snappy \(apt-get install python3-snappy\)"):
        kdump._codec(kdump.SNAPPY)


def test_lzo_without_python_lzo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without python-lzo, kdlgdb's own LZO1X decoder (target/lzo.py): literals, a match that overlaps its own
    output, the end marker; a corrupt stream is a corrupt page."""
    _without("lzo", monkeypatch)
    codec = kdump._codec(kdump.LZO)
    end = b"\x11\x00\x00"
    assert codec(b"\x16hello" + end, 4096) == b"hello"  # first byte 22: 5 literals
    # 3 literals, then 1 01 010 00 (copy 5 + 1 bytes from (0 << 3) + 2 + 1 = 3 back), its byte H = 0
    assert codec(b"\x14abc" + bytes([0b10101000, 0]) + end, 4096) == b"abcabcabc"
    # state 0, opcode 0 and its byte 3: a run of 15 + 3 + 3 literals; then 0 0 1 00011 (copy 3 + 2 bytes),
    # le16 (1 << 2) | 2: from 2 back, then 2 literals
    run = bytes(range(65, 86))
    assert codec(b"\x00\x03" + run + bytes([0b00100011, 0b110, 0]) + b"yz" + end, 4096) == \
        run + run[-2:] * 2 + run[-2:-1] + b"yz"
    # 0 0 0 1 0 001: copy 2 + 1 bytes from 16384 + (4 >> 2) back, with nothing out yet
    with pytest.raises(ReadError, match="corrupt compressed page: lzo: a match 16385 bytes back, with 0 bytes out"):
        kdump.KdumpFile._decompress(types.SimpleNamespace(block_size=4096), kdump.LZO,  # type: ignore[arg-type]
                                    bytes([0b00010001, 4, 0]) + end, 0x1000)
    with pytest.raises(ReadError, match="more than 8 bytes"):
        kdump.KdumpFile._decompress(types.SimpleNamespace(block_size=8), kdump.LZO,  # type: ignore[arg-type]
                                    b"\x14abc" + bytes([0b10101000, 0]) + end, 0x1000)


# -- the real sample dumps ---------------------------------------------------------------------


@pytest.mark.realkernel
@pytest.mark.parametrize("kaslr", [False, True], ids=["nokaslr", "kaslr"])
def test_every_format_holds_the_same_kernel_memory(kaslr: bool, real_kernel: str) -> None:
    """The kdl_abba semaphores, the banner and both kthreads' stacks read the same from every format."""
    truth = samples.ensure_dump("kdl_abba", kaslr, real_kernel).truth
    offset = int(truth["kernel_offset"], 16)
    # Debian's -dbg package puts it beside the vmlinux; a kernel of ours has it in its build tree
    system_map = samples.builder.kernel_paths(real_kernel).get("system_map", Path(f"/usr/lib/debug/boot/System.map-{real_kernel}"))
    banner = next(int(line.split()[0], 16) for line in system_map.read_text().splitlines() if line.endswith(" linux_banner"))
    sems = [int(lock["address"], 16) for lock in truth["locks"].values()]
    seen = {}
    kinds = [k for k in samples.KINDS + samples.CODEC_KINDS if k != "elf"]
    for kind in kinds:
        path = samples.ensure_dump("kdl_abba", kaslr, real_kernel, kind=kind).path
        assert dump_format(str(path)) == ("elf-physical" if kind == "phys" else "kdump")
        assert dump_vmcoreinfo(str(path))["KERNELOFFSET"] == f"{offset:x}"
        if kind != "kdump-lzo" and not _importable(CODEC_MODULES.get(kind, "zlib")):  # (lzo: kdlgdb's own)
            continue  # read in gdb's Python (Debian's packages) by test_formats; this Python may lack it
        dump = open_dump(str(path))
        try:
            seen[kind] = (dump.read(banner + offset, 200), [dump.read(s, 24) for s in sems])
        finally:
            dump.close()
    first = seen["phys"]
    assert first[0].startswith(f"Linux version {samples.release(real_kernel)} ".encode())
    assert all(value == first for value in seen.values()), [k for k, v in seen.items() if v != first]


CODEC_MODULES = {"kdump-lzo": "lzo", "kdump-snappy": "snappy", "kdump-zstd": "zstandard"}


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


@pytest.mark.realkernel
def test_flattened_and_normal_kdump_are_one_file(real_kernel: str) -> None:
    flat = samples.ensure_dump("kdl_rwsem", True, real_kernel, kind="kdump-flat").path
    normal = samples.ensure_dump("kdl_rwsem", True, real_kernel, kind="kdump").path
    with open(flat, "rb") as f:
        reader = kdump.Flattened(f, str(flat))
        data = normal.read_bytes()
        for offset in (0, 4096, 8192, len(data) // 2, len(data) - 100):
            assert reader.pread(offset, 100) == data[offset : offset + 100]


@pytest.mark.realkernel
def test_kdump_header(real_kernel: str) -> None:
    path = samples.ensure_dump("kdl_abba", False, real_kernel, kind="kdump-filtered").path
    with open(path, "rb") as f:
        k = kdump.KdumpFile(f, str(path))
        assert (k.block_size, k.dump_level, k.utsname[2]) == (4096, samples.filter_level("kdl_abba", False, real_kernel), samples.release(real_kernel))
        with pytest.raises(ReadError, match="filtered out of the dump"):
            for pfn in range(k.max_mapnr):  # some page of RAM was left out by -d 31
                if k._bit(k._valid, pfn) and not k._bit(k._dumped, pfn):
                    k.read_page(pfn)
