"""Build a sample kernel of our own from a Debian source package (the lock-debugging kernel).

Debian ships no kernel with lockdep, so the catalog's :class:`catalog.BuiltKernel` entries are made
here from ``/usr/src/<source_package>.tar.xz`` (``apt-get install linux-source-6.1 bc bison flex
libelf-dev libssl-dev``): ``make tinyconfig``, the entry's config lines merged over it (the kernel's own
``merge_config.sh``, through a fragment in ``kernel/configs/``), every line checked in the resulting
``.config`` (a line Kconfig dropped for an unmet dependency is an error, not a silently different
kernel), then ``make`` (vmlinux, bzImage and the modules: ``qemu_fw_cfg`` for VMCOREINFO). The scenario
modules are built against that tree (``make -C TREE M=...``) like against Debian's headers.

Cached outside the checkout, beside the dumps::

    ${KDLGDB_CACHE:-~/.cache/kdlgdb}/kernels/<name>-<package version>-<key>/
        linux/           the built tree: vmlinux (DWARF), arch/x86/boot/bzImage, .config, Module.symvers
        modules/kernel/drivers/firmware/qemu_fw_cfg.ko   (debug info stripped: it goes into each initramfs)
        built.json       timings and the release; written last, it marks the kernel complete

``<key>`` hashes the source package's version and the entry (config lines, local version), so a new
Debian source upload or another config builds another kernel. Build it with
``python3 tests/vmcore_samples/build.py --kernel NAME`` (dumps too) or ``--kernel-only``; the dump
builder builds it on first use. Run it under ``nice``: the make uses every core.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from catalog import BuiltKernel

BUILD_TOOLS = {"make": "make", "gcc": "gcc", "bc": "bc", "bison": "bison", "flex": "flex", "xz": "xz-utils",
               "strip": "binutils"}
BUILD_PACKAGES = ("bc", "bison", "flex", "libelf-dev", "libssl-dev", "xz-utils", "make", "gcc")
MAKE_TIMEOUT = 3 * 3600.0  # the whole kernel: ~5 min on 2 idle cores, much more on a shared machine
FRAGMENT = "kdlgdb.config"  # under kernel/configs/: `make kdlgdb.config` merges it

Log = Callable[[str], None]


class KernelBuildError(RuntimeError):
    """Building the kernel failed, or cannot start; the message says what to install or what went wrong."""


def source_tarball(bk: BuiltKernel) -> Path:
    return Path("/usr/src") / f"{bk.source_package}.tar.xz"


def source_version(bk: BuiltKernel) -> str:
    """The installed version of the entry's source package ('' when it is not installed)."""
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", bk.source_package],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    status, _, version = proc.stdout.rpartition(" ")
    return version if proc.returncode == 0 and status.endswith("installed") and source_tarball(bk).is_file() else ""


def kernel_key(bk: BuiltKernel) -> str:
    """Short hash of what the built kernel is: the source package's version and the entry's config (not
    this file's code: a kernel takes minutes to build, and how it is built does not change what it is)."""
    h = hashlib.sha256()
    h.update(f"{bk.source_package}={source_version(bk)}\n{bk.localversion}\n".encode())
    h.update("\n".join(bk.config).encode())
    return h.hexdigest()[:12]


def kernel_dir(bk: BuiltKernel, cache: Path) -> Path:
    version = source_version(bk) or "not-installed"
    return cache / "kernels" / f"{bk.name}-{version}-{kernel_key(bk)}"


def paths(bk: BuiltKernel, cache: Path) -> dict[str, Path]:
    """Where the built kernel's pieces are (or will be): the same keys as for a Debian kernel."""
    top = kernel_dir(bk, cache)
    tree = top / "linux"
    return {
        "vmlinux": tree / "vmlinux",
        "vmlinuz": tree / "arch" / "x86" / "boot" / "bzImage",
        "headers": tree,
        "modules": top / "modules",
        "config": tree / ".config",
        "system_map": tree / "System.map",
        "built": top / "built.json",
    }


def missing(bk: BuiltKernel) -> list[str]:
    """What building the kernel needs and this machine lacks (empty when it can be built)."""
    out = []
    if not source_version(bk):
        out.append(f"{source_tarball(bk)} (apt-get install {bk.source_package})")
    for tool, package in BUILD_TOOLS.items():
        if shutil.which(tool) is None:
            out.append(f"{tool} (apt-get install {package})")
    for header, package in (("/usr/include/libelf.h", "libelf-dev"), ("/usr/include/openssl/ssl.h", "libssl-dev")):
        if not Path(header).is_file():
            out.append(f"{header} (apt-get install {package})")
    return out


def built(bk: BuiltKernel, cache: Path) -> bool:
    return paths(bk, cache)["built"].is_file()


def release(bk: BuiltKernel, cache: Path) -> str:
    """``uname -r`` of the built kernel (the OSRELEASE in its dumps); '' before it is built."""
    try:
        return json.loads(paths(bk, cache)["built"].read_text())["release"]
    except (OSError, ValueError, KeyError):
        return ""


def _run(cmd: list[str], cwd: Path, what: str, timeout: float = MAKE_TIMEOUT) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise KernelBuildError(f"{what}: {' '.join(cmd)} took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise KernelBuildError(f"{what} failed ({' '.join(cmd)} in {cwd}):\n{tail}")


def config_lines(bk: BuiltKernel) -> list[str]:
    return [*bk.config, f'CONFIG_LOCALVERSION="{bk.localversion}"', "# CONFIG_LOCALVERSION_AUTO is not set"]


def check_config(config: str, wanted: list[str]) -> list[str]:
    """The wanted lines (``CONFIG_X=v`` or ``# CONFIG_X is not set``) that ``config`` does not hold."""
    have: dict[str, str] = {}
    for line in config.splitlines():
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line) or re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if m:
            have[m.group(1)] = m.group(2) if m.lastindex == 2 else "n"
    wrong = []
    for line in wanted:
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line) or re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if m and have.get(m.group(1), "n") != (m.group(2) if m.lastindex == 2 else "n"):
            wrong.append(f"{line} (the .config has {have.get(m.group(1), 'nothing')})")
    return wrong


def build(bk: BuiltKernel, cache: Path, log: Log) -> dict[str, Any]:
    """Extract, configure and build the kernel into its cache directory (the caller holds the lock)."""
    lacking = missing(bk)
    if lacking:
        raise KernelBuildError(f"cannot build kernel {bk.name}; missing:\n  " + "\n  ".join(lacking))
    p = paths(bk, cache)
    top, tree = kernel_dir(bk, cache), p["headers"]
    if top.exists():
        shutil.rmtree(top)  # an interrupted build: start clean
    tree.mkdir(parents=True)
    times: dict[str, float] = {}
    t0 = time.monotonic()
    log(f"kernel {bk.name}: extracting {source_tarball(bk)} into {tree}")
    _run(["tar", "-xf", str(source_tarball(bk)), "--strip-components=1", "-C", str(tree)], tree, "extracting", 900)
    times["extract_s"] = round(time.monotonic() - t0, 1)
    wanted = config_lines(bk)
    (tree / "kernel" / "configs" / FRAGMENT).write_text("\n".join(wanted) + "\n")
    t1 = time.monotonic()
    _run(["make", "tinyconfig"], tree, "make tinyconfig", 600)
    _run(["make", FRAGMENT], tree, f"merging {FRAGMENT}", 600)
    wrong = check_config(p["config"].read_text(), wanted)
    if wrong:
        raise KernelBuildError(f"kernel {bk.name}: Kconfig did not take these lines (an unmet dependency?):\n  "
                               + "\n  ".join(wrong))
    times["config_s"] = round(time.monotonic() - t1, 1)
    jobs = str(os.cpu_count() or 1)
    log(f"kernel {bk.name}: make -j{jobs} (vmlinux, bzImage, modules) in {tree}")
    t2 = time.monotonic()
    _run(["make", f"-j{jobs}", "all"], tree, f"building kernel {bk.name}")
    times["make_s"] = round(time.monotonic() - t2, 1)
    fw_cfg = p["modules"] / "kernel" / "drivers" / "firmware" / "qemu_fw_cfg.ko"
    fw_cfg.parent.mkdir(parents=True)
    _run(["strip", "--strip-debug", "-o", str(fw_cfg), str(tree / "drivers" / "firmware" / "qemu_fw_cfg.ko")],
         tree, "copying qemu_fw_cfg.ko", 60)
    # What a scenario's guest_modules finds there (build.guest_modules): the one module installed, and the
    # modules built in (a RAM disk, ext4), which it then leaves out.
    (p["modules"] / "modules.dep").write_text("kernel/drivers/firmware/qemu_fw_cfg.ko:\n")
    shutil.copyfile(tree / "modules.builtin", p["modules"] / "modules.builtin")
    info = {"name": bk.name, "source_package": bk.source_package, "source_version": source_version(bk),
            "release": (tree / "include" / "config" / "kernel.release").read_text().strip(),
            "vmlinux_mb": round(p["vmlinux"].stat().st_size / 2**20), "total_s": round(time.monotonic() - t0, 1),
            **times}
    part = p["built"].with_name(".built.json.part")
    part.write_text(json.dumps(info, indent=2) + "\n")
    part.rename(p["built"])
    log(f"kernel {bk.name} {info['release']}: built in {info['total_s']} s (make {info['make_s']} s), "
        f"vmlinux {info['vmlinux_mb']} MB")
    return info
