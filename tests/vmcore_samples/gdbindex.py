#!/usr/bin/env python3
"""Give each test kernel's vmlinux a ``.gdb_index``, so gdb and crash start in a fraction of the time.

    python3 tests/vmcore_samples/gdbindex.py [--kernel K ...]

Neither Debian's ``-dbg`` vmlinux nor a kernel tree's carries an index of its DWARF, so every gdb that
opens one indexes all of it first: about 3.9 s of CPU for Debian's 6.1 vmlinux (two threads), and crash's
gdb about 6.4 s. With the index that gdb's own ``gdb-add-index`` writes into the file, measured here on the
same machine: 0.4 s and 2.6 s. The test suite starts gdb and crash hundreds of times; set-up runs this
once per kernel (~15 s each). The index changes nothing gdb answers.

A vmlinux that a package installed (``dpkg -S`` knows it) is left as it is: set-up only writes to the
files it extracted or built itself. Python 3.11 standard library only, like the sample builder.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402
from catalog import KERNELS  # noqa: E402


def has_index(vmlinux: Path) -> bool:
    """Whether the ELF file has a ``.gdb_index`` or ``.debug_names`` section."""
    out = subprocess.run(["readelf", "-S", "-W", str(vmlinux)], capture_output=True, text=True, timeout=60).stdout
    return ".gdb_index" in out or ".debug_names" in out


def owned_by_a_package(path: Path) -> bool:
    return subprocess.run(["dpkg", "-S", str(path)], capture_output=True, timeout=60).returncode == 0


def add_index(kernel: str) -> str:
    """Index ``kernel``'s vmlinux when it needs it; what was done, as a line for the log."""
    vmlinux = build.kernel_paths(kernel)["vmlinux"]
    if not vmlinux.is_file():
        return f"{kernel}: no vmlinux at {vmlinux} yet"
    if has_index(vmlinux):
        return f"{kernel}: {vmlinux} has an index"
    if owned_by_a_package(vmlinux):
        return f"{kernel}: {vmlinux} belongs to a package; left without an index (gdb starts slower)"
    done = subprocess.run(["gdb-add-index", str(vmlinux)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not has_index(vmlinux):
        return f"{kernel}: gdb-add-index {vmlinux} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return f"{kernel}: indexed {vmlinux}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", action="append", metavar="VER", help="a kernel, repeatable (default: the tests')")
    args = parser.parse_args(argv)
    if shutil.which("gdb-add-index") is None or shutil.which("readelf") is None:
        print("gdbindex: gdb-add-index or readelf missing (apt-get install gdb binutils)", file=sys.stderr)
        return 1
    for kernel in args.kernel or KERNELS:
        print(f"gdbindex: {add_index(kernel)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
