"""Bad input gets one clear line, never a traceback: real files, real gdb."""
from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

import formats
import samples
from kdlgdb.errors import KdlError, ReadError
from kdlgdb.kernel.collect import collect
from kdlgdb.target import kdump
from kdlgdb.target.dumpfile import dump_format, dump_vmcoreinfo, open_dump
from kdlgdb.target.replay import ReplayTarget
from kdlgdb.target.vmcore import PT_LOAD, PT_NOTE
from realgdb import gdb, kdlgdb

RECORDING = Path(__file__).parent / "vmcore_samples" / "recordings" / samples.DEFAULT_KERNEL / "kdl_abba-nokaslr.json.gz"


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.realkernel
def test_not_a_vmlinux(real_kernel: str) -> None:
    dump = samples.ensure_dump("kdl_abba", False, real_kernel)
    line = _one_error(kdlgdb("waitfor", "/bin/ls", str(dump.path)))
    assert "not a Linux vmlinux" in line


@pytest.mark.realkernel
def test_not_a_dump_and_truncated_dump(real_kernel: str, tmp_path: Path) -> None:
    dump = samples.ensure_dump("kdl_abba", False, real_kernel)
    assert "is not an ELF vmcore" in _one_error(kdlgdb("waitfor", str(dump.vmlinux), "/etc/passwd"))
    short = tmp_path / "short.elf"
    with open(dump.path, "rb") as src, open(short, "wb") as dst:
        dst.write(src.read(64 << 20))
    assert "is truncated" in _one_error(kdlgdb("waitfor", str(dump.vmlinux), str(short)))
    assert "no such file" in _one_error(kdlgdb("waitfor", str(dump.vmlinux), str(tmp_path / "nothing")))


@pytest.mark.realkernel
@pytest.mark.parametrize("kind", ["elf", "kdump-filtered"])
def test_dump_of_another_kernel(kind: str, real_kernel: str, tmp_path: Path) -> None:
    """A real dump whose VMCOREINFO names another release: the vmlinux does not match it."""
    dump = samples.ensure_dump("kdl_abba", False, real_kernel, kind=kind)
    other = tmp_path / "other"
    shutil.copyfile(dump.path, other)
    with open(other, "r+b") as f:
        head = f.read(8 << 20)  # past the program headers: a 6.12-rt paging ELF has 65,700 of them (3.5 MiB)
        release = samples.release(real_kernel)
        at = head.index(f"OSRELEASE={release}".encode())
        f.seek(at)
        f.write(b"OSRELEASE=" + ("9.9.9-other" + "x" * len(release))[: len(release)].encode())
    line = _one_error(kdlgdb("waitfor", str(dump.vmlinux), str(other)))
    assert "the vmlinux does not match" in line and "9.9.9-other" in line


@pytest.mark.realkernel
def test_truncated_kdump_files(real_kernel: str, tmp_path: Path) -> None:
    for kind in ("kdump", "kdump-flat"):
        dump = samples.ensure_dump("kdl_abba", False, real_kernel, kind=kind)
        short = tmp_path / f"short-{kind}"
        with open(dump.path, "rb") as src, open(short, "wb") as dst:
            dst.write(src.read(dump.path.stat().st_size // 2))
        assert "is truncated" in _one_error(kdlgdb("waitfor", str(dump.vmlinux), str(short)))
        head = tmp_path / f"header-only-{kind}"
        head.write_bytes(dump.path.read_bytes()[:100])
        line = _one_error(kdlgdb("waitfor", str(dump.vmlinux), str(head)))
        assert "cut off" in line or "truncated" in line
    # A normal kdump file cut inside its sub-header (block 1), then inside its VMCOREINFO: each one line.
    dump = samples.ensure_dump("kdl_abba", False, real_kernel, kind="kdump")
    data = dump.path.read_bytes()
    info_at = data.index(b"OSRELEASE=")
    for cut, what in ((4096 + 20, "sub-header is cut off"), (info_at + 8, "VMCOREINFO")):
        short = tmp_path / f"cut-{cut}"
        short.write_bytes(data[:cut])
        line = _one_error(kdlgdb("waitfor", str(dump.vmlinux), str(short)))
        assert "is truncated" in line and what in line, line


@pytest.mark.realkernel
def test_kd_open_not_a_dump(real_kernel: str) -> None:
    dump = samples.ensure_dump("kdl_abba", False, real_kernel)
    done = gdb(dump.vmlinux, None, "kd-open /etc/passwd", "kd-tasks")
    assert "kd-open: /etc/passwd is not an ELF vmcore" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.realkernel
def test_lock_page_filtered_out(real_kernel: str, tmp_path: Path) -> None:
    """A kdump that lacks the page holding a lock: that lock becomes a problem line, the rest is analysed."""
    phys = samples.ensure_dump("kdl_mutex", False, real_kernel, kind="phys")
    lock = int(phys.truth["locks"]["m1"]["address"], 16)
    reader = open_dump(str(phys.path))
    paddr = reader.pages.translate(lock)
    reader.close()
    holed = tmp_path / "holed.kdump"
    formats.without_page(phys.path, holed, paddr, samples.filter_level("kdl_mutex", False, real_kernel))
    done = kdlgdb("waitfor", str(phys.vmlinux), str(holed))
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    assert f"{lock:#x}" in done.stdout and "not in dump" in done.stdout
    assert "skipped:" in done.stdout
    # the other tasks are still there
    assert f"(pid {phys.truth['tasks']['kdl_m2']})" in done.stdout


@pytest.mark.realkernel
def test_vmlinux_without_debug_info(real_kernel: str, tmp_path: Path) -> None:
    dump = samples.ensure_dump("kdl_abba", False, real_kernel)
    stripped = tmp_path / "vmlinux-nodebug"
    subprocess.run(["objcopy", "--strip-debug", str(dump.vmlinux), str(stripped)], check=True)
    line = _one_error(kdlgdb("waitfor", str(stripped), str(dump.path)))
    assert "has no type" in line and "debug info" in line


class _Older(ReplayTarget):
    """Real kernel data, but task_struct lacks a member kdlgdb needs (as a far older kernel would)."""

    def member(self, type_name: str, path: str):
        if (type_name, path) == ("struct task_struct", "thread_node"):
            return None
        return super().member(type_name, path)

    def type_size(self, type_name: str):
        return 9728 if type_name == "struct task_struct" else super().type_size(type_name)


def test_kernel_without_a_needed_member() -> None:
    with pytest.raises(KdlError, match="has no member 'thread_node': kernel too old or too new"):
        collect(_Older(str(RECORDING)))


# -- sizes, counts and offsets a file gives that cannot be true (issue 16): hand-made files, no kernel needed --


def _elf(phdrs: list[tuple[int, int, int, int]], *, phoff: int = 64, phentsize: int = 56, phnum: int | None = None,
         body: bytes = b"") -> bytes:
    """An ELF64 core file: the header, ``(p_type, p_offset, p_filesz, p_paddr)`` program headers, ``body``."""
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HH", head, 16, 4, 62)  # ET_CORE, EM_X86_64
    struct.pack_into("<Q", head, 32, phoff)
    struct.pack_into("<HH", head, 54, phentsize, len(phdrs) if phnum is None else phnum)
    table = b"".join(struct.pack("<IIQQQQQQ", t, 0, off, 0, paddr, size, size, 0) for t, off, size, paddr in phdrs)
    return bytes(head) + table + body


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


def _one_kdl_error(path: Path, *what: str) -> str:
    """open_dump, dump_format and the kdlgdb command each give one line (KdlError) containing ``what``."""
    for call in (open_dump, dump_format, dump_vmcoreinfo):
        with pytest.raises(KdlError) as e:
            call(str(path))
        line = str(e.value)
        assert "\n" not in line and all(w in line for w in what), (call.__name__, line)
    line = _one_error(kdlgdb("waitfor", "/bin/true", str(path), timeout=60))  # the dump is read before gdb runs
    assert all(w in line for w in what), line
    return line


def test_huge_pt_note_size(tmp_path: Path) -> None:
    vmcoreinfo = _note(b"VMCOREINFO", 0, b"OSRELEASE=6.1.0\nSYMBOL(init_top_pgt)=ffffffff82a10000\n")
    body = vmcoreinfo + bytes(4096)
    data = _elf([(PT_NOTE, 64 + 2 * 56, 1 << 62, 0), (PT_LOAD, 64 + 2 * 56 + len(vmcoreinfo), 4096, 0)], body=body)
    path = tmp_path / "vmcore.elf"
    path.write_bytes(data)
    line = _one_kdl_error(path, "PT_NOTE size 4611686018427387904 exceeds the file", f"({len(data)} bytes)")
    assert line.startswith(f"kdlgdb: {path}: ")
    done = gdb(Path("/bin/true"), None, f"kd-open {path}", timeout=120)  # was "kd-open: internal error: MemoryError"
    assert done.stderr.strip().splitlines() == [line.replace("kdlgdb: ", "kd-open: ", 1)], done.stderr


@pytest.mark.parametrize("case", ["phoff past the end", "phoff 2^63", "phnum past the end", "phentsize 1",
                                  "note offset 2^63", "note offset past the end", "PN_XNUM shoff 2^63"])
def test_bad_program_header_offsets(case: str, tmp_path: Path) -> None:
    note = _note(b"VMCOREINFO", 0, b"OSRELEASE=6.1.0\n")
    at = 64 + 56
    phdrs = [(PT_NOTE, at, len(note), 0)]
    kwargs: dict = {}
    if case == "phoff past the end":
        kwargs["phoff"] = 1 << 40
    elif case == "phoff 2^63":
        kwargs["phoff"] = (1 << 64) - 1
    elif case == "phnum past the end":
        kwargs["phnum"] = 60000
    elif case == "phentsize 1":
        kwargs["phentsize"] = 1
    elif case == "note offset 2^63":
        phdrs = [(PT_NOTE, (1 << 64) - 8, len(note), 0)]
    elif case == "note offset past the end":
        phdrs = [(PT_NOTE, 1 << 33, len(note), 0)]
    data = bytearray(_elf(phdrs, body=note, **kwargs))
    if case == "PN_XNUM shoff 2^63":
        struct.pack_into("<H", data, 56, 0xFFFF)  # e_phnum = PN_XNUM
        struct.pack_into("<Q", data, 40, (1 << 63) + 5)  # e_shoff
    path = tmp_path / "vmcore.elf"
    path.write_bytes(bytes(data))
    _one_kdl_error(path, str(path), "exceeds the file" if "past" in case or "2^63" in case else "program header")


def _kdump(**fields: int) -> bytes:
    """A kdump-compressed file's header block and sub-header (version 6, 4 KiB blocks), with ``fields`` changed."""
    f = dict(block_size=4096, sub_hdr_size=1, bitmap_blocks=2, max_mapnr=4096, off_info=8192 + 104, size_info=24,
             phys_base=0, dump_level=31)
    f.update(fields)
    head = bytearray(4096)
    head[:8] = b"KDUMP   "
    struct.pack_into("<i", head, 8, 6)
    head[12 + 65 * 2 : 12 + 65 * 2 + 5] = b"6.1.0"
    struct.pack_into("<iiII", head, 428, f["block_size"], f["sub_hdr_size"], f["bitmap_blocks"], 0)
    struct.pack_into("<i", head, 460, 1)
    sub = bytearray(4096)
    struct.pack_into("<Qi", sub, 0, f["phys_base"], f["dump_level"])
    struct.pack_into("<qQqQ", sub, 32, f["off_info"], f["size_info"], 0, 0)
    struct.pack_into("<Q", sub, 96, f["max_mapnr"])
    sub[104:128] = b"OSRELEASE=6.1.0\n".ljust(24, b"\n")
    return bytes(head) + bytes(sub) + bytes(2 * 4096)  # the file's real bitmaps: 2 blocks


@pytest.mark.parametrize("field, value, what", [
    ("bitmap_blocks", 0xFFFFFFFF, "bitmap_blocks 4294967295"),
    ("sub_hdr_size", 0x7FFFFFFF, "sub_hdr_size 2147483647"),
    ("size_info", 1 << 62, "VMCOREINFO"),
    ("off_info", -(1 << 62), "VMCOREINFO"),
])
def test_kdump_header_sizes_exceed_the_file(field: str, value: int, what: str, tmp_path: Path) -> None:
    path = tmp_path / "vmcore.kdump"
    path.write_bytes(_kdump(**{field: value}))
    _one_kdl_error(path, str(path), what)


def test_kdump_page_descriptor_out_of_the_file(tmp_path: Path) -> None:
    """A dumped page whose descriptor points before the file's start or sizes it past a block: the page is
    unreadable (ReadError), the file opens; a last page past the end is a truncated file."""
    data = bytearray(_kdump(bitmap_blocks=2))
    second = 2 * 4096 + 4096  # the second bitmap: pfns 0 and 1 are dumped
    data[second] = 0b11
    descs = len(data)
    data += struct.pack("<qIIQ", -(1 << 40), 4096, 0, 0) + struct.pack("<qIIQ", descs + 48, 4096, 0, 0)
    data += bytes(4096)
    path = tmp_path / "vmcore.kdump"
    path.write_bytes(bytes(data))
    k = kdump.KdumpFile(open(path, "rb"), str(path))
    with pytest.raises(ReadError, match="page descriptor"):
        k.read_page(0)
    assert k.read_page(1) == bytes(4096)
    struct.pack_into("<qIIQ", data, descs + 24, descs + 48, 1 << 31, 0, 0)
    path.write_bytes(bytes(data))
    with pytest.raises(KdlError, match="truncated|page descriptor"):
        kdump.KdumpFile(open(path, "rb"), str(path))


def test_command_line_turns_any_exception_into_one_line(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """An exception kdlgdb did not foresee: one line naming the command and the exception; the traceback with --debug."""
    from kdlgdb import cli

    monkeypatch.setenv("KDLGDB_DEBUG", "")  # main(--debug) sets it for gdb: gone again after the test

    def boom(*_args, **_kwargs):
        raise MemoryError("boom")

    from kdlgdb import report
    monkeypatch.setattr(cli, "run_batch", boom)
    monkeypatch.setattr(report, "dump_format", lambda path: None)  # the dump's headers are read first: any will do
    assert cli.main(["waitfor", "/bin/true", "/etc/passwd"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "kdlgdb waitfor: internal error: MemoryError: boom (--debug for the traceback)"
    assert cli.main(["--debug", "waitfor", "/bin/true", "/etc/passwd"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("kdlgdb waitfor: internal error: MemoryError: boom")


class _LoopedModules(ReplayTarget):
    """Real kernel data whose first module's ``list.next`` points at itself (found by the fuzzing tier:
    100,000 modules read, then every symbol lookup scanned them all)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.node = int.from_bytes(super().read(self._answer("symbol modules"), 8), "little")

    def read(self, address: int, size: int) -> bytes:
        data = bytearray(super().read(address, size))
        at = self.node - address
        if -8 < at < size:  # the bytes of node->next that this read holds
            loop = self.node.to_bytes(8, "little")
            for i in range(max(0, at), min(size, at + 8)):
                data[i] = loop[i - at]
        return bytes(data)


def test_module_list_that_loops() -> None:
    target = _LoopedModules(str(RECORDING))
    started = time.process_time()
    snap = collect(target)
    assert time.process_time() - started < 5
    [problem] = [p for p in snap.problems if p.what == "module list"]
    assert f"is broken at {target.node:#x}: its prev does not point back to {target.node:#x}" in problem.why
    assert "later modules have no symbols" in problem.why


def test_waitfor_and_report_read_their_arguments_alike(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`kdlgdb waitfor` and `kdlgdb report` take [VMLINUX] VMCORE (or --vmlinux) the same way, with the same
    one-line errors, and look at the dump's headers before starting anything."""
    from kdlgdb import cli
    notdump = tmp_path / "notes.txt"
    notdump.write_text("not a dump\n")
    for command in ("waitfor", "report"):
        assert cli.main([command, "/bin/true", str(notdump), "--vmlinux", "/bin/true"]) == 2
        assert capsys.readouterr().err.strip().endswith("give the vmlinux once: before the dump or with --vmlinux")
        assert cli.main([command, "a", "b", "c"]) == 2
        assert f"kdlgdb {command} [VMLINUX] VMCORE" in capsys.readouterr().err
        assert cli.main([command, "/bin/true", str(notdump)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(notdump) in err, err
