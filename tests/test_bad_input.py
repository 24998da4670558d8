"""Bad input gets one clear line, never a traceback: real files, real gdb."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import formats
import samples
from kdlgdb.errors import KdlError
from kdlgdb.kernel.collect import collect
from kdlgdb.target.dumpfile import open_dump
from kdlgdb.target.replay import ReplayTarget
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
    assert f"({phys.truth['tasks']['kdl_m2']})" in done.stdout


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
