#!/usr/bin/python3
"""Build real deadlocked-kernel dumps for kdlgdb's tests.

For every scenario in ``scenarios/<name>/`` (a kernel module that deadlocks a
few kthreads on purpose, plus ``expected.json``) this builder

1. compiles the module against the installed headers of the chosen kernel,
2. packs a busybox initramfs whose ``/init`` loads ``qemu_fw_cfg`` and the
   module, waits until every ``kdl_*`` thread sits in D state, and prints
   ``KDL-BLOCKED`` (every line the host reads goes through ``/dev/kmsg``, so
   the kernel prints it whole and in order with its own messages),
3. boots it in QEMU (TCG, no network, gdbstub on 127.0.0.1 only; booted again
   if the kernel dies before ``/init`` runs), waits for the hung-task
   detector's ``blocked for more than`` report (at most ~25 s; not for
   ``blocked_when_loaded`` scenarios, whose threads spin), and
4. stops the guest and dumps its memory over QMP (``dump-guest-memory``) in
   every form people bring (see :data:`KINDS` and ``formats.py``): ELF with
   paging, physical-only ELF, QEMU's flattened kdump-zlib, then with
   makedumpfile its normal kdump form and a ``-d 31`` filtered kdump,

once with KASLR off and once with it on. All forms of one variant show the
same instant of the same boot, so they must give the same answers. Results
land in a cache outside the checkout::

    ${KDLGDB_CACHE:-~/.cache/kdlgdb}/vmcores/<kernel>/<scenario>-<key>/
        vmcore-nokaslr.elf  truth-nokaslr.json  console-nokaslr.log
        vmcore-nokaslr-phys.elf  vmcore-nokaslr.kdump-flat  vmcore-nokaslr.kdump
        vmcore-nokaslr-filtered.kdump (-d 31; kdl_abba also -lzo, -snappy, -zstd .kdump)
        ... the same for kaslr

``<key>`` hashes the scenario's files, the code of this file and ``formats.py``
(not their comments and docstrings) and the kernel version, so a change to any
of them leads to a fresh directory; an existing one is reused.
Files are written under ``.*.part`` names and renamed when complete, the truth
file last: a variant counts as built once its truth file exists.
Build products (module, initramfs) go to ``<cache>/build/<kernel>/``.

The truth file records what the guest itself reported: lock addresses and
thread pids (``kdl-truth`` lines printed by the module), the address of
``_text`` and of the module (``kdl-info`` lines printed by ``/init``), each
thread's state, wchan and ``/proc/PID/stack`` at the time it was found
blocked (the kernel leaves scheduler and lock slow-path frames out of those),
the hung-task detector's full call trace of each thread (when it reported
one), and the KERNELOFFSET from the dump's VMCOREINFO note. A KASLR boot that
happens to draw offset 0 is repeated, so "kaslr" dumps are always relocated.

Command line::

    python3 tests/vmcore_samples/build.py [--kernel VER] [--scenario NAME ...] [--force] [--prune]

(``--prune`` first deletes this kernel's cache entries with outdated keys.)

A *sample* is what one boot runs: a scenario's module, its ``insmod``
arguments and the guest's memory. Each scenario is a sample of its own name;
the scale scenario ``kdl_scale`` has one per thread count (``kdl_scale_1k``,
``_5k``, ``_10k``, see :data:`SCALE_SAMPLES`), built only with KASLR by
default. ``--scenario`` takes sample names; without it the builder makes
:data:`DEFAULT_SAMPLES` (all but the big scale ones, which the benchmark
builds on demand). A module whose ``expected.json`` says
``"blocked_when_loaded"`` returns from its init only when its threads are in
place and prints a compact truth itself; ``/init`` then does not scan
``/proc`` (thousands of threads).

Importable as well (``samples.py`` does so); the main entry points are
:func:`ensure` and :func:`boot`. Python 3.11 standard library only; needs
qemu-system-x86, busybox-static, make/gcc and the kernel's image, headers and
-dbg packages.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import formats  # noqa: E402  (beside this file; not a package)
import kernelbuild  # noqa: E402  (kernels of our own; keyed by their source and config)
from catalog import (  # noqa: E402  (what is built; not part of the cache key)
    ALL_KINDS, ANALYSIS_KINDS, BUILT_KERNELS, CODEC_KINDS, DEBIAN_KERNELS, DEFAULT_KERNEL, DEFAULT_SAMPLES,
    GUEST_MEMORY, KERNELS, KINDS, PHYS_SCENARIO, lockdep, SCALE_SAMPLES, SCENARIOS, Sample, sample,
)

HERE = Path(__file__).resolve().parent
SCENARIO_DIR = HERE / "scenarios"
BUSYBOX = Path("/bin/busybox")  # from busybox-static
QEMU = "qemu-system-x86_64"
START_KERNEL_MAP = 0xFFFFFFFF81000000  # _text when KASLR is off (x86_64)

HUNG_TASK_WAIT = 25.0  # how long to wait for the hung-task report
QMP_TIMEOUT = 300.0  # one QMP command, a dump included
MAKE_TIMEOUT = 300.0
KASLR_ATTEMPTS = 3  # boots to try when KASLR happens to pick offset 0
# Boots to try when the kernel dies before /init reached the scenario: under TCG a 2-vCPU boot
# sometimes oopses on an int3 that text patching (jump labels, static calls) left behind, seen
# about once in 300 boots of 6.12 ("Oops: int3" in sched_clock_cpu). Nothing of ours ran yet.
EARLY_BOOT_ATTEMPTS = 3


Log = Callable[[str], None]


class BuildError(RuntimeError):
    """Something in the pipeline failed; the message says what and shows context."""


def _log_stderr(msg: str) -> None:
    print(f"[kdl-build] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Paths, requirements, cache keys
# --------------------------------------------------------------------------

def cache_root() -> Path:
    """``$KDLGDB_CACHE``, or ``~/.cache/kdlgdb``."""
    env = os.environ.get("KDLGDB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdlgdb"


def kernel_paths(kernel: str) -> dict[str, Path]:
    """Where Debian puts the pieces of ``kernel`` this pipeline needs; for a kernel of ours
    (``BUILT_KERNELS``), where its build in the cache has them (see ``kernelbuild.py``)."""
    if kernel in BUILT_KERNELS:
        return kernelbuild.paths(BUILT_KERNELS[kernel], cache_root())
    return {
        "vmlinux": Path(f"/usr/lib/debug/boot/vmlinux-{kernel}"),
        "vmlinuz": Path(f"/boot/vmlinuz-{kernel}"),
        "headers": Path(f"/lib/modules/{kernel}/build"),
        "modules": Path(f"/lib/modules/{kernel}"),
        "config": Path(f"/boot/config-{kernel}"),
    }


def kernel_release(kernel: str) -> str:
    """``uname -r`` of ``kernel`` (the OSRELEASE of its dumps): its name for Debian's, the built release
    for ours ('' before it is built)."""
    if kernel in BUILT_KERNELS:
        return kernelbuild.release(BUILT_KERNELS[kernel], cache_root())
    return kernel


def ensure_kernel(kernel: str, log: Log = _log_stderr) -> None:
    """Build ``kernel`` if it is one of ours and the cache lacks it (nothing to do for Debian's)."""
    bk = BUILT_KERNELS.get(kernel)
    if bk is None or kernelbuild.built(bk, cache_root()):
        return
    top = kernelbuild.kernel_dir(bk, cache_root())
    with _file_lock(top.with_name(top.name + ".lock")):
        if not kernelbuild.built(bk, cache_root()):
            try:
                kernelbuild.build(bk, cache_root(), log)
            except kernelbuild.KernelBuildError as exc:
                raise BuildError(str(exc)) from None


def missing_kernel_parts(kernel: str) -> list[str]:
    """Human-readable list of what is missing for ``kernel`` (empty when complete). A kernel of ours
    that is not built yet lacks nothing when it can be built: the builder builds it on first use."""
    if kernel in BUILT_KERNELS:
        return kernelbuild.missing(BUILT_KERNELS[kernel])
    paths = kernel_paths(kernel)
    missing = []
    if not paths["vmlinux"].is_file():
        missing.append(f"{paths['vmlinux']} (apt-get install linux-image-{kernel}-dbg)")
    if not paths["vmlinuz"].is_file():
        missing.append(f"{paths['vmlinuz']} (apt-get install linux-image-{kernel})")
    if not (paths["headers"] / "Makefile").is_file():
        missing.append(f"{paths['headers']}/Makefile (apt-get install linux-headers-{kernel})")
    return missing


def missing_tools() -> list[str]:
    """Host tools the builder runs, that are not installed."""
    missing = []
    for tool, package in ((QEMU, "qemu-system-x86"), ("make", "make"), ("gcc", "gcc"),
                          ("makedumpfile", "makedumpfile")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if not BUSYBOX.is_file():
        missing.append(f"{BUSYBOX} (apt-get install busybox-static)")
    return missing


def kernel_available(kernel: str = DEFAULT_KERNEL) -> bool:
    """True when the vmlinux with DWARF, the vmlinuz and the headers of ``kernel`` are present."""
    return not missing_kernel_parts(kernel)


def scenario_files(scenario: str) -> list[Path]:
    """The files that define ``scenario``'s module (source, Kbuild, expected.json); a sample name works too."""
    folder = SCENARIO_DIR / sample(scenario).scenario
    if not folder.is_dir():
        raise BuildError(f"unknown scenario {scenario!r}: no folder {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file())


def expected(scenario: str, kernel: str = "") -> dict[str, Any]:
    """The scenario's ``expected.json`` (wait-for facts, cycles, lock types); for ``kernel``, with the shape the
    same code takes there (:func:`for_kernel`)."""
    return for_kernel(json.loads((SCENARIO_DIR / sample(scenario).scenario / "expected.json").read_text()), kernel)


def for_kernel(exp: dict[str, Any], kernel: str) -> dict[str, Any]:
    """``exp`` for one kernel: a scenario whose code behaves differently on PREEMPT_RT (spinlock_t is an
    rt_mutex there, softirqs run in threads) gives that shape under ``"preempt_rt"``, key by key; one whose
    answer differs with lockdep under ``"lockdep"`` (its held_locks and DEBUG_SPINLOCK name owners the other
    kernels only infer; DEBUG_RT_MUTEXES's deadlock detection parks a task in S). The flavour is Debian's
    package name (``-rt-``) or the catalog's (:func:`lockdep`)."""
    if "-rt-" in kernel and "preempt_rt" in exp:
        exp = {**exp, **exp["preempt_rt"]}
    if lockdep(kernel) and "lockdep" in exp:
        exp = {**exp, **exp["lockdep"]}
    return exp


def sleeping_states(exp: dict[str, Any]) -> dict[str, str]:
    """The state each thread of a sleeping scenario is in once blocked: D, unless ``"states"`` says otherwise
    (alternatives as "D|S": which thread the kernel parks can depend on the boot)."""
    return {comm: exp.get("states", {}).get(comm, "D") for comm in exp["tasks"]}


def code_digest(path: Path) -> bytes:
    """The code of a Python file without its comments and docstrings (its syntax tree): editing the
    prose of the builder does not rebuild every dump; any change to code or to a string it uses does."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def scenario_key(scenario: str, kernel: str) -> str:
    """Short hash of the scenario's files, this builder and the kernel version."""
    h = hashlib.sha256()
    h.update(f"kernel={kernel}\n{sample(scenario)}\n".encode())
    if kernel in BUILT_KERNELS:  # its source version and config
        h.update(kernelbuild.kernel_key(BUILT_KERNELS[kernel]).encode())
    h.update(code_digest(Path(__file__)))
    h.update(code_digest(Path(__file__).with_name("formats.py")))
    for path in scenario_files(scenario):
        h.update(f"\0{path.name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def dump_dir(scenario: str, kernel: str = DEFAULT_KERNEL) -> Path:
    """The cache directory that holds (or will hold) the scenario's dumps."""
    return cache_root() / "vmcores" / kernel / f"{scenario}-{scenario_key(scenario, kernel)}"


def build_dir(scenario: str, kernel: str = DEFAULT_KERNEL) -> Path:
    """The cache directory for the scenario's module build and initramfs."""
    return cache_root() / "build" / kernel / f"{scenario}-{scenario_key(scenario, kernel)}"


def variant_name(kaslr: bool) -> str:
    return "kaslr" if kaslr else "nokaslr"


def variant_kinds(scenario: str) -> dict[str, str]:
    """The dump kinds a scenario's variants come in (kind -> file name suffix)."""
    return {kind: ALL_KINDS[kind] for kind in sample(scenario).kinds}


def variant_files(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL) -> dict[str, Path]:
    """Paths of one variant's outputs: truth, console and a dump per kind ("elf", "phys", ...)."""
    d = dump_dir(scenario, kernel)
    v = variant_name(kaslr)
    files = {
        "truth": d / f"truth-{v}.json",
        "console": d / f"console-{v}.log",
    }
    for kind, suffix in variant_kinds(scenario).items():
        files[kind] = d / f"vmcore-{v}{suffix}"
    return files


def variant_complete(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL) -> bool:
    return all(p.is_file() for p in variant_files(scenario, kaslr, kernel).values())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two test runs do not build the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Module and initramfs
# --------------------------------------------------------------------------

def build_module(scenario: str, kernel: str, force: bool = False, log: Log = _log_stderr) -> Path:
    """Compile the scenario module out of tree (in the cache) and return the .ko path."""
    bdir = build_dir(scenario, kernel) / "module"
    ko = bdir / f"{sample(scenario).scenario}.ko"
    if ko.is_file() and not force:
        return ko
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)
    for path in scenario_files(scenario):
        if path.suffix == ".c" or path.name == "Kbuild":
            shutil.copy2(path, bdir / path.name)
    ensure_kernel(kernel, log)
    headers = kernel_paths(kernel)["headers"]
    cmd = ["make", "-C", str(headers), f"M={bdir}", "modules"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=MAKE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{' '.join(cmd)} took more than {MAKE_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0 or not ko.is_file():
        raise BuildError(f"building {scenario}.ko failed ({' '.join(cmd)}):\n{_tail(proc.stdout)}")
    log(f"{scenario}: module built in {time.monotonic() - t0:.1f} s")
    return ko


def fw_cfg_module(kernel: str) -> bytes:
    """The kernel's qemu_fw_cfg module, decompressed (6.1 ships .ko, 6.12 .ko.xz)."""
    base = kernel_paths(kernel)["modules"] / "kernel" / "drivers" / "firmware"
    for path in (base / "qemu_fw_cfg.ko", base / "qemu_fw_cfg.ko.xz", base / "qemu_fw_cfg.ko.zst"):
        if path.is_file():
            return _module_bytes(path)
    raise BuildError(f"no qemu_fw_cfg module under {base}: without it -device vmcoreinfo stays empty")


def _module_bytes(path: Path) -> bytes:
    """A kernel module file's contents, decompressed (.ko, .ko.xz, .ko.zst)."""
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".zst":
        if shutil.which("zstd") is None:
            raise BuildError(f"{path} needs zstd to decompress (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, stdout=subprocess.PIPE,
                              timeout=60).stdout
    return path.read_bytes()


def guest_modules(scenario: str, kernel: str) -> list[tuple[str, bytes]]:
    """The kernel's own modules a scenario's guest script needs (``expected.json`` ``guest_modules``,
    e.g. brd, ext4), with what they depend on, in load order: ``[(name, contents)]``. A module
    built into this kernel (``modules.builtin``) is left out."""
    wanted = expected(scenario).get("guest_modules", [])
    if not wanted:
        return []
    root = kernel_paths(kernel)["modules"]
    deps: dict[str, list[str]] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_ko_name(path): path for path in deps}
    builtin = {_ko_name(line) for line in (root / "modules.builtin").read_text().split()}
    order: list[str] = []

    def add(path: str) -> None:
        for dep in deps.get(path, []):
            add(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        if name in by_name:
            add(by_name[name])
        elif name not in builtin:
            raise BuildError(f"{scenario} needs module {name}, which {kernel} neither has nor builds in")
    return [(_ko_name(path), _module_bytes(root / path)) for path in order]


def _ko_name(path: str) -> str:
    """``kernel/fs/ext4/ext4.ko.xz`` -> ``ext4``."""
    return Path(path).name.split(".ko", 1)[0]


INIT_TEMPLATE = r"""#!/bin/busybox sh
# /init of a kdlgdb sample guest, generated by tests/vmcore_samples/build.py
# for scenario @MODULE@ @ARGS@. Output goes to the serial console.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 5 > /proc/sys/kernel/hung_task_timeout_secs
# The default allows one thread per 128 KiB of memory; kdl_scale starts up to 10,000 in less.
echo 100000 > /proc/sys/kernel/threads-max

park() { while :; do sleep 3600; done; }
# Every line the host reads goes through the kernel log: the kernel prints each record whole and in
# order. A plain echo to the console can land inside a kernel message, or a message inside it
# (PREEMPT_RT prints from a thread, late: kdl_scale's thousand kdl-truth lines were cut so).
# printk.devkmsg=on on the command line lifts the rate limit on /dev/kmsg.
say() { echo "$*" > /dev/kmsg; }

insmod /lib/modules/qemu_fw_cfg.ko || say "kdl-init: insmod qemu_fw_cfg failed, vmcoreinfo will be empty"
set -- $(grep -m1 ' _text$' /proc/kallsyms)
say "kdl-info text $1"
# A scenario may need the kernel's own modules (a RAM disk, a filesystem) and a script of its own
# (user processes, mounts) that runs before its module is loaded.
for m in @GUEST_MODULES@; do
    insmod /lib/modules/guest/$m.ko || say "KDL-ERROR insmod $m failed"
done
if [ -f /guest.sh ]; then
    . /guest.sh
fi
if ! insmod /lib/modules/@MODULE@.ko @ARGS@; then
    say "KDL-ERROR insmod @MODULE@ failed"
    park
fi
while read -r name size refs deps live addr rest; do
    [ "$name" = @MODULE@ ] && say "kdl-info module $name $addr $size"
done < /proc/modules
if [ @BLOCKED_WHEN_LOADED@ = yes ]; then
    say "KDL-BLOCKED"
    park
fi

# Sets KDL_N (number of kdl_* threads), KDL_NOTD (those not blocked: in D, or in the state expected.json gives
# a thread on this kernel), KDL_STATES.
kdl_scan() {
    KDL_N=0; KDL_NOTD=0; KDL_STATES=""
    for d in /proc/[0-9]*; do
        line=""
        read -r line 2>/dev/null < "$d/stat" || continue
        rest=${line#*(}; comm=${rest%%)*}
        st=${line##*) }; st=${st%% *}
        case "$comm" in
        kdl_*)
            KDL_N=$((KDL_N + 1))
            case "$comm:$st" in @BLOCKED@) ;; *) KDL_NOTD=$((KDL_NOTD + 1)) ;; esac
            KDL_STATES="$KDL_STATES $comm:$st"
            ;;
        esac
    done
}
all_blocked() { kdl_scan; [ "$KDL_N" -ge @NTHREADS@ ] && [ "$KDL_NOTD" -eq 0 ]; }

tries=0
while :; do
    # All in D may still mean "inside msleep": check again after 3 s.
    if all_blocked; then
        sleep 3
        if all_blocked; then break; fi
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
        say "KDL-NOT-BLOCKED$KDL_STATES"
        park
    fi
    sleep 1
done

for d in /proc/[0-9]*; do
    read -r line 2>/dev/null < "$d/stat" || continue
    rest=${line#*(}; comm=${rest%%)*}
    st=${line##*) }; st=${st%% *}
    case "$comm" in
    kdl_*)
        read -r wchan 2>/dev/null < "$d/wchan"
        say "kdl-state ${d#/proc/} $comm $st ${wchan:-?}"
        while read -r frame; do
            say "kdl-stack $comm $frame"
        done < "$d/stack"
        ;;
    esac
done
say "KDL-BLOCKED"
park
"""


def init_script(scenario: str, kernel: str = "") -> str:
    """The guest's /init for ``scenario`` on ``kernel``."""
    exp, run = expected(scenario, kernel), sample(scenario)
    blocked = "|".join(["kdl_*:D"] + [f"{comm}:{alt}" for comm, st in sleeping_states(exp).items() if st != "D"
                                      for alt in st.split("|") if alt != "D"])
    return (INIT_TEMPLATE.replace("@MODULE@", run.scenario).replace("@ARGS@", run.args).replace("@BLOCKED@", blocked)
            .replace("@NTHREADS@", str(len(exp["tasks"])))
            .replace("@BLOCKED_WHEN_LOADED@", "yes" if exp.get("blocked_when_loaded") else "no")
            .replace("@GUEST_MODULES@", " ".join(name for name, _ in guest_modules(scenario, kernel)) if kernel else ""))


def cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """An uncompressed cpio archive in the kernel's ``newc`` format.

    ``entries`` are ``(name, mode, data, (rdev_major, rdev_minor))``; ``mode``
    includes the file type bits (``stat.S_IFDIR`` and so on).
    """
    out = bytearray()

    def pad4() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    def add(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(encoded)
        pad4()
        out.extend(data)
        pad4()

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(ino, name, mode, data, rdev)
    add(0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def build_initramfs(scenario: str, kernel: str, force: bool = False, log: Log = _log_stderr) -> Path:
    """Module + busybox + /init, packed as ``initramfs.cpio`` in the build cache."""
    path = build_dir(scenario, kernel) / "initramfs.cpio"
    if path.is_file() and not force:
        return path
    ko = build_module(scenario, kernel, force=force, log=log)
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [
        ("bin", d, b"", (0, 0)),
        ("dev", d, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("lib", d, b"", (0, 0)),
        ("lib/modules", d, b"", (0, 0)),
        ("proc", d, b"", (0, 0)),
        ("sys", d, b"", (0, 0)),
        ("tmp", d, b"", (0, 0)),
        ("init", x, init_script(scenario, kernel).encode(), (0, 0)),
        ("bin/busybox", x, BUSYBOX.read_bytes(), (0, 0)),
        ("lib/modules/qemu_fw_cfg.ko", f, fw_cfg_module(kernel), (0, 0)),
        (f"lib/modules/{ko.name}", f, ko.read_bytes(), (0, 0)),
        ("lib/modules/guest", d, b"", (0, 0)),
    ]
    entries += [(f"lib/modules/guest/{name}.ko", f, data, (0, 0)) for name, data in guest_modules(scenario, kernel)]
    guest = SCENARIO_DIR / sample(scenario).scenario / "guest.sh"
    if guest.is_file():
        entries.append(("guest.sh", f, guest.read_bytes(), (0, 0)))
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(cpio_newc(entries))
    tmp.rename(path)
    return path


# --------------------------------------------------------------------------
# QEMU and QMP
# --------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """One QEMU run: start, watch the serial console, talk QMP, stop.

    Use as a context manager; QEMU is killed on exit whatever happened.
    """

    FAILURES = ("KDL-ERROR", "KDL-NOT-BLOCKED", "Kernel panic", "kdl-error")

    def __init__(self, kernel: str, initrd: Path, kaslr: bool, console_log: Path,
                 memory: str = GUEST_MEMORY) -> None:
        self.kernel = kernel
        self.memory = memory
        self.initrd = initrd
        self.kaslr = kaslr
        self.console_log = console_log
        self.tmp = Path(tempfile.mkdtemp(prefix="kdlgdb-qemu-"))
        self.qmp_path = self.tmp / "qmp.sock"
        self.qemu_out = self.tmp / "qemu.out"
        self.gdb_port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._qmp: Optional[socket.socket] = None
        self._qmp_buf = b""

    def command(self) -> list[str]:
        # A bare "hung_task_timeout_secs=5" is no boot parameter on 6.1 (the
        # kernel hands it to /init as unknown); the sysctl. form works.
        # hung_task_warnings=-1: the detector's default of 10 reports runs out before every thread of a
        # scenario with many is reported (kdl_chain's 8 on the slower PREEMPT_RT boots).
        append = ["console=ttyS0", "panic=-1", "sysctl.kernel.hung_task_timeout_secs=5",
                  "sysctl.kernel.hung_task_warnings=-1", "printk.devkmsg=on"]
        if not self.kaslr:
            append.insert(1, "nokaslr")  # KASLR is on by default in Debian's kernels
        return [
            QEMU, "-accel", "tcg", "-m", self.memory, "-smp", "2",
            "-kernel", str(kernel_paths(self.kernel)["vmlinuz"]),
            "-initrd", str(self.initrd),
            "-append", " ".join(append),
            "-display", "none", "-nic", "none", "-no-reboot",
            "-serial", f"file:{self.console_log}",
            "-device", "vmcoreinfo",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-gdb", f"tcp:127.0.0.1:{self.gdb_port}",
        ]

    def start(self) -> "Guest":
        """Start QEMU and connect to its QMP socket (retrying if the gdb port was taken)."""
        for attempt in range(3):
            self.gdb_port = free_port()
            self.console_log.unlink(missing_ok=True)
            with open(self.qemu_out, "wb") as out:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT)
            try:
                self._connect_qmp(timeout=30.0)
                return self
            except BuildError:
                if self.proc.poll() is not None and "bind" in self._qemu_output() and attempt < 2:
                    continue
                raise
        raise AssertionError("unreachable")

    def _qemu_output(self) -> str:
        try:
            return self.qemu_out.read_text(errors="replace")
        except OSError:
            return ""

    def console(self) -> str:
        """Everything the guest wrote to its serial console so far."""
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def failure(self, what: str) -> BuildError:
        """An error that says ``what`` failed and shows the console and QEMU output."""
        qemu = self._qemu_output().strip()
        status = "running" if self.proc and self.proc.poll() is None else \
            f"exited with {self.proc.returncode if self.proc else '?'}"
        return BuildError(
            f"{what} (kernel {self.kernel}, {variant_name(self.kaslr)}, QEMU {status})\n"
            f"--- console tail ({self.console_log}) ---\n{_tail(self.console())}\n"
            + (f"--- QEMU output ---\n{_tail(qemu, 20)}\n" if qemu else "")
            + f"--- command ---\n{' '.join(self.command())}")

    def wait_until(self, done: Callable[[str], bool], what: str, timeout: float,
                   required: bool = True) -> bool:
        """Poll the console until ``done(text)``; fail early on guest errors and panics.

        Returns False on timeout when ``required`` is False, raises otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.console()
            for bad in self.FAILURES:
                if bad in text:
                    raise self.failure(f"guest reported {bad!r} while waiting for {what}")
            if done(text):
                return True
            if self.proc is None or self.proc.poll() is not None:
                raise self.failure(f"QEMU ended while waiting for {what}")
            if time.monotonic() > deadline:
                if required:
                    raise self.failure(f"no {what} on the console after {timeout:.0f} s")
                return False
            time.sleep(0.2)

    def settle(self, quiet: float = 1.0, timeout: float = 6.0) -> None:
        """Wait until the console has been quiet for ``quiet`` seconds (at most ``timeout``): a report's
        first line can come well before the rest of it (the PREEMPT_RT kernel prints late)."""
        deadline, last, since = time.monotonic() + timeout, self.console(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.2)
            text = self.console()
            if text != last:
                last, since = text, time.monotonic()

    def died_before_init(self) -> bool:
        """Whether the kernel panicked before /init printed its first line (``kdl-info text``)."""
        text = self.console()
        return "Kernel panic" in text and "kdl-info text" not in text

    def wait_for(self, needle: str, timeout: float, required: bool = True) -> bool:
        """Wait until the console shows ``needle`` (see :meth:`wait_until`)."""
        return self.wait_until(lambda text: needle in text, repr(needle), timeout, required)

    def _connect_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise self.failure("QEMU exited before its QMP socket was ready")
            if self.qmp_path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self.qmp_path))
                    break
                except OSError:
                    sock.close()
            if time.monotonic() > deadline:
                raise self.failure(f"QMP socket {self.qmp_path} not ready after {timeout:.0f} s")
            time.sleep(0.1)
        sock.settimeout(QMP_TIMEOUT)
        self._qmp = sock
        greeting = self._qmp_read()
        if "QMP" not in greeting:
            raise self.failure(f"unexpected QMP greeting {greeting!r}")
        self.qmp("qmp_capabilities")

    def _qmp_read(self) -> dict[str, Any]:
        assert self._qmp is not None
        while b"\n" not in self._qmp_buf:
            try:
                chunk = self._qmp.recv(65536)
            except socket.timeout as exc:
                raise self.failure(f"no QMP answer within {QMP_TIMEOUT:.0f} s") from exc
            if not chunk:
                raise self.failure("QMP connection closed")
            self._qmp_buf += chunk
        line, self._qmp_buf = self._qmp_buf.split(b"\n", 1)
        return json.loads(line)

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value (events are skipped)."""
        if self._qmp is None:
            raise self.failure("QMP is not connected")
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qmp.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._qmp_read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise self.failure(f"QMP {command} failed: {reply['error']}")
            # anything else is an asynchronous event (STOP, RESUME, DUMP_COMPLETED, ...)

    def dump(self, path: Path, paging: bool = True, fmt: str = "elf") -> float:
        """``dump-guest-memory`` to ``path`` (``fmt`` "elf" or "kdump-zlib"); returns the seconds it took."""
        t0 = time.monotonic()
        path.unlink(missing_ok=True)
        self.qmp("dump-guest-memory", paging=paging, protocol=f"file:{path}", format=fmt)
        magic = b"\x7fELF" if fmt == "elf" else b"makedumpfile"
        if _magic(path, len(magic)) != magic:
            raise self.failure(f"dump-guest-memory did not write a {fmt} file at {path}")
        return time.monotonic() - t0

    def stop(self) -> None:
        """Quit QEMU (QMP ``quit``, then kill) and remove the temporary directory."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                if self._qmp is not None:
                    self._qmp.settimeout(5)
                    self._qmp.sendall(b'{"execute": "quit"}\n')
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "Guest":
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _magic(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


# --------------------------------------------------------------------------
# Reading what the guest said, and the dump's notes
# --------------------------------------------------------------------------

_STAMP_ANYWHERE = re.compile(r"\[\s*\d+\.\d+\]")


def parse_console(text: str) -> dict[str, Any]:
    """Pick the ``kdl-truth``, ``kdl-info``, ``kdl-state`` and ``kdl-stack`` lines out of a console log.

    Kernel lines carry a ``[    3.123456] `` prefix; we look for the tag
    anywhere in the line. The scale scenario's compact truth (``cycle``,
    ``behind``, ``chain`` and ``count`` lines) lands in ``cycles``
    (``{name: {"members": [{comm, kind, address}], "behind": n}}``), ``chains``
    (``[{root, blocked, locks}]``, root a pid) and ``counts``.
    """
    locks: dict[str, dict[str, str]] = {}
    tasks: dict[str, int] = {}
    threads: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    cycles: dict[str, dict[str, Any]] = {}
    chains: list[dict[str, int]] = []
    counts: dict[str, int] = {}
    # The kernel's own console output can land right after our text, on the same line (it prints
    # asynchronously): a line is cut where each "[   2.228081]" time stamp begins, and every piece
    # is read ("kdl-info module ...[ 4.1] kdl-truth task ..." holds two facts).
    pieces = (piece for raw in text.splitlines() for piece in _STAMP_ANYWHERE.split(raw))
    for piece in pieces:
        found = [(piece.find(tag), tag) for tag in ("kdl-truth ", "kdl-info ", "kdl-state ", "kdl-stack ")]
        found = [(at, tag) for at, tag in found if at >= 0]
        if not found:
            continue
        at, tag = min(found)
        words = piece[at + len(tag):].strip().split()
        try:
            if tag == "kdl-truth " and words[0] == "lock" and len(words) >= 4:
                locks[words[1]] = {"address": f"{int(words[3], 16):#018x}", "type": words[2]}
            elif tag == "kdl-truth " and words[0] == "task" and len(words) >= 3:
                tasks[words[1]] = int(words[2])
            elif tag == "kdl-truth " and words[0] == "cycle":
                members = [member.split(":") for member in words[2:]]
                cycles.setdefault(words[1], {})["members"] = [
                    {"comm": comm, "kind": kind, "address": f"{int(address, 16):#018x}"}
                    for comm, kind, address in members]
            elif tag == "kdl-truth " and words[0] == "behind":
                cycles.setdefault(words[1], {})["behind"] = int(words[2])
            elif tag == "kdl-truth " and words[0] == "chain":
                chains.append({"root": int(words[1]), "blocked": int(words[2]), "locks": int(words[3])})
            elif tag == "kdl-truth " and words[0] == "count":
                counts[words[1]] = int(words[2])
            elif tag == "kdl-info " and words[0] == "text":
                info["text"] = int(words[1], 16)
            elif tag == "kdl-info " and words[0] == "module":
                info["module_base"] = int(words[2], 16)
                info["module_size"] = int(words[3])
            elif tag == "kdl-state ":
                pid, comm, state = int(words[0]), words[1], words[2]
                wchan = words[3] if len(words) > 3 else "?"
                threads.setdefault(comm, {"stack": []}).update(pid=pid, state=state, wchan=wchan)
            elif tag == "kdl-stack ":
                # "kdl-stack kdl_a [<0>] __schedule+0x2f0/0x860"
                frame = re.sub(r"^\[<[0-9a-fx]+>\]\s*", "", " ".join(words[1:]))
                threads.setdefault(words[0], {"stack": []})["stack"].append(frame)
        except (IndexError, ValueError):
            continue  # a line mangled by interleaved console output
    return {"locks": locks, "tasks": tasks, "threads": threads, "cycles": cycles, "chains": chains,
            "counts": counts, **info}


_HUNG_RE = re.compile(r"INFO: task (\S+):(\d+) blocked for more than")
_STAMP_RE = re.compile(r"^\[\s*\d+\.\d+\]\s?")


def hung_task_reports(text: str) -> dict[str, list[str]]:
    """The hung-task detector's first report per task: ``{comm: frames}``.

    Frames are the reliable lines of the ``Call Trace`` (those the kernel did
    not mark with ``?``), e.g. ``["__schedule+0x34d/0xa00", ..., "kdl_a_fn+0x27/0x50 [kdl_abba]"]``.
    """
    reports: dict[str, list[str]] = {}
    frames: Optional[list[str]] = None
    in_trace = False
    for raw in text.splitlines():
        line = _STAMP_RE.sub("", raw.strip()).strip()
        match = _HUNG_RE.search(line)
        if match:
            comm = match.group(1)
            frames = None if comm in reports else reports.setdefault(comm, [])
            in_trace = False
        elif frames is None:
            continue
        elif line == "<TASK>":
            in_trace = True
        elif line == "</TASK>":
            frames, in_trace = None, False
        elif in_trace and line and not line.startswith("?"):
            frames.append(line)
    return reports


def make_truth(console_text: str, scenario: str, kernel: str, kaslr: bool) -> dict[str, Any]:
    """The truth dict of one boot, checked against ``expected.json``."""
    parsed = parse_console(console_text)
    exp = expected(scenario)
    problems = []
    for sym, typ in exp["lock_types"].items():
        got = parsed["locks"].get(sym)
        if got is None:
            problems.append(f"no kdl-truth line for lock {sym}")
        elif got["type"] != typ:
            problems.append(f"lock {sym} has type {got['type']}, expected {typ}")
    for comm in exp["tasks"]:
        if comm not in parsed["tasks"]:
            problems.append(f"no kdl-truth line for task {comm}")
    for key in exp.get("truth", []):  # the compact truth of a scale sample
        if not parsed[key]:
            problems.append(f"no kdl-truth {key} lines")
    if "text" not in parsed:
        problems.append("no kdl-info text line (address of _text)")
    if problems:
        raise BuildError(f"{scenario} ({variant_name(kaslr)}): " + "; ".join(problems)
                         + f"\n--- console tail ---\n{_tail(console_text)}")
    truth: dict[str, Any] = {
        "kernel": kernel,
        "vmlinux": str(kernel_paths(kernel)["vmlinux"]),
        "kaslr": kaslr,
        "module": sample(scenario).scenario,
        "locks": parsed["locks"],
        "tasks": parsed["tasks"],
        "kernel_offset": f"{parsed['text'] - START_KERNEL_MAP:#x}",
        "text": f"{parsed['text']:#018x}",
    }
    if "module_base" in parsed:
        truth["module_base"] = f"{parsed['module_base']:#018x}"
        truth["module_size"] = parsed["module_size"]
    truth["threads"] = parsed["threads"]
    if parsed["cycles"] or parsed["chains"] or parsed["counts"]:
        for cycle in parsed["cycles"].values():
            for member in cycle.get("members", []):
                member["pid"] = parsed["tasks"].get(member["comm"])
        truth.update(cycles=parsed["cycles"], chains=parsed["chains"], counts=parsed["counts"])
    hung = hung_task_reports(console_text)
    truth["hung_task_reported"] = bool(hung)
    truth["hung_task_stacks"] = {comm: frames for comm, frames in hung.items() if comm in exp["tasks"]}
    return truth


def elf_program_headers(path: Path) -> list[dict[str, int]]:
    """The program headers of a 64-bit little-endian ELF file (handles PN_XNUM)."""
    with open(path, "rb") as fh:
        ehdr = fh.read(64)
        if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
            raise BuildError(f"{path} is not a 64-bit little-endian ELF file")
        phoff, shoff = struct.unpack_from("<QQ", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        if phnum == 0xFFFF:  # real count lives in section header 0's sh_info
            fh.seek(shoff)
            phnum = struct.unpack_from("<I", fh.read(64), 44)[0]
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    keys = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
    return [dict(zip(keys, struct.unpack_from("<IIQQQQQQ", table, i * phentsize)))
            for i in range(phnum)]


def elf_notes(path: Path) -> list[tuple[str, int, bytes]]:
    """All ELF notes ``(name, type, desc)`` in the PT_NOTE segments of ``path``."""
    notes = []
    with open(path, "rb") as fh:
        for ph in elf_program_headers(path):
            if ph["type"] != 4:  # PT_NOTE
                continue
            fh.seek(ph["offset"])
            data = fh.read(ph["filesz"])
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                pos += 12
                name = data[pos:pos + namesz].rstrip(b"\0").decode(errors="replace")
                pos += (namesz + 3) & ~3
                desc = data[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                notes.append((name, ntype, desc))
    return notes


def vmcoreinfo(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of the dump's VMCOREINFO note ({} when absent)."""
    for name, _type, desc in elf_notes(path):
        if name == "VMCOREINFO":
            text = desc.rstrip(b"\0").decode(errors="replace")
            return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {}


# --------------------------------------------------------------------------
# Building dumps
# --------------------------------------------------------------------------

@contextlib.contextmanager
def blocked_guest(scenario: str, kaslr: bool, kernel: str, initrd: Path, console_log: Path,
                  log: Log) -> Iterator[Guest]:
    """A guest of ``scenario`` booted until ``KDL-BLOCKED`` (and its ``ready_marker``, for the modules whose
    threads spin); booted again (up to EARLY_BOOT_ATTEMPTS
    times) when the kernel died before /init ran. QEMU is stopped on exit."""
    for attempt in range(1, EARLY_BOOT_ATTEMPTS + 1):
        with Guest(kernel, initrd, kaslr, console_log, sample(scenario).memory) as guest:
            try:
                guest.wait_for("KDL-BLOCKED", sample(scenario).boot_timeout)
                # A module whose threads lock up their CPUs prints a marker (from a timer: softirqs still
                # run) once they spin; /init's KDL-BLOCKED came before.
                marker = expected(scenario, kernel).get("ready_marker")
                if marker:
                    guest.wait_for(marker, sample(scenario).boot_timeout)
            except BuildError:
                if attempt < EARLY_BOOT_ATTEMPTS and guest.died_before_init():
                    log(f"{scenario} {variant_name(kaslr)}: the kernel panicked before /init "
                        f"(console: {_tail(guest.console(), 1).strip()}); booting again")
                    continue
                raise
            yield guest
            return


def build_variant(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL,
                  log: Log = _log_stderr) -> dict[str, Any]:
    """Boot ``scenario`` once and write that variant's dump(s), truth and console log.

    The caller holds the lock. Returns a small report (timings, sizes).
    """
    missing = missing_kernel_parts(kernel) + missing_tools()
    if missing:
        raise BuildError(f"cannot build dumps for {kernel}; missing:\n  " + "\n  ".join(missing))
    ensure_kernel(kernel, log)
    files = variant_files(scenario, kaslr, kernel)
    outdir = files["elf"].parent
    outdir.mkdir(parents=True, exist_ok=True)
    part = {k: p.with_name(f".{p.name}.part") for k, p in files.items()}
    initrd = build_initramfs(scenario, kernel, log=log)
    v = variant_name(kaslr)
    report: dict[str, Any] = {"scenario": scenario, "variant": v}

    exp = expected(scenario, kernel)
    for attempt in range(1, KASLR_ATTEMPTS + 1):
        t0 = time.monotonic()
        with blocked_guest(scenario, kaslr, kernel, initrd, part["console"], log) as guest:
            report["blocked_s"] = round(time.monotonic() - t0, 1)
            text_addr = parse_console(guest.console()).get("text")
            if kaslr and text_addr == START_KERNEL_MAP and attempt < KASLR_ATTEMPTS:
                log(f"{scenario} {v}: KASLR chose offset 0 this time; booting again")
                continue  # a "KASLR" dump should really be relocated
            # Threads that spin (blocked_when_loaded: on a CPU, or in PREEMPT_RT's rtlock wait) are never
            # reported by the hung-task detector, which looks only at TASK_UNINTERRUPTIBLE sleepers.
            report["hung_task"] = not exp.get("blocked_when_loaded") and guest.wait_until(
                lambda text: all(t in hung_task_reports(text) for t, st in sleeping_states(exp).items() if st == "D"),
                "hung-task report for every thread", HUNG_TASK_WAIT, required=False)
            guest.settle()  # the rest of the last report's call trace
            guest.qmp("stop")  # all dumps of one boot show the same instant
            report["dump_s"] = round(guest.dump(part["elf"], paging=True), 1)
            if "phys" in part:
                guest.dump(part["phys"], paging=False)
            if "kdump-flat" in part:
                guest.dump(part["kdump-flat"], paging=False, fmt="kdump-zlib")
            console_text = guest.console()
        report["total_s"] = round(time.monotonic() - t0, 1)
        break

    t1 = time.monotonic()
    try:
        derive_kinds(part)
    except formats.FormatError as e:
        raise BuildError(f"{scenario} {v}: {e}") from None
    report["derive_s"] = round(time.monotonic() - t1, 1)
    truth = make_truth(console_text, scenario, kernel, kaslr)
    info = vmcoreinfo(part["elf"])
    if "KERNELOFFSET" not in info:
        raise BuildError(f"{part['elf']} has no VMCOREINFO note with KERNELOFFSET "
                         "(was qemu_fw_cfg loaded in the guest?)\n" + _tail(console_text))
    truth["vmcoreinfo_kernel_offset"] = f"{int(info['KERNELOFFSET'], 16):#x}"
    truth["osrelease"] = info.get("OSRELEASE", "")
    part["truth"].write_text(json.dumps(truth, indent=2) + "\n")

    for key in [k for k in part if k != "truth"] + ["truth"]:  # truth last: it marks completion
        part[key].rename(files[key])
    report["vmcore_mb"] = round(files["elf"].stat().st_size / 2**20)
    log(f"{scenario} {v}: blocked after {report['blocked_s']} s, hung-task report "
        f"{'seen' if report['hung_task'] else 'NOT seen'}, dump {report['vmcore_mb']} MB "
        f"in {report['dump_s']} s, other forms {report['derive_s']} s, {report['total_s']} s in all")
    return report


def filter_level(info: dict[str, str]) -> int:
    """The makedumpfile ``-d`` level of a boot's filtered dumps, from its VMCOREINFO: 31, as kdump
    services use, where Debian 12's makedumpfile (1.7.2) can tell slab pages by ``PG_slab``.

    Kernels that made slab a page type (6.12 here: VMCOREINFO has PAGE_SLAB_MAPCOUNT_VALUE and no
    PG_slab) are beyond it: it takes slab pages, task_structs among them, for page cache or user
    pages and drops them at levels 2, 4 and 8 (measured: -d 15 loses the task list, -d 16 and -d 1
    do not). Those dumps drop zero and free pages only (-d 17).
    """
    return 31 if "NUMBER(PG_slab)" in info else 17


def derive_kinds(part: dict[str, Path]) -> None:
    """Make the makedumpfile forms (and the re-compressed ones) from QEMU's physical ELF and kdump."""
    if "kdump" in part:
        formats.unflatten(part["kdump-flat"], part["kdump"])
    if "kdump-filtered" not in part:
        return
    level = filter_level(vmcoreinfo(part["elf"]))
    formats.filtered(part["phys"], part["kdump-filtered"], level=level)
    if "kdump-lzo" in part:
        formats.filtered(part["phys"], part["kdump-lzo"], "-l", level=level)
        formats.recompress(part["kdump-filtered"], part["kdump-snappy"], "snappy")
        formats.recompress(part["kdump-filtered"], part["kdump-zstd"], "zstd")


def ensure(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL, force: bool = False,
           log: Log = _log_stderr) -> dict[str, Path]:
    """Make sure one variant of ``scenario`` is in the cache; return its file paths.

    Reuses a complete variant unless ``force`` (which re-boots and re-dumps;
    the module and initramfs are rebuilt only when their build directory is
    gone, see :func:`clean_build`).
    """
    files = variant_files(scenario, kaslr, kernel)
    if variant_complete(scenario, kaslr, kernel) and not force:
        return files
    lock = files["elf"].parent.with_name(files["elf"].parent.name + ".lock")
    with _file_lock(lock):
        if force or not variant_complete(scenario, kaslr, kernel):
            build_variant(scenario, kaslr, kernel, log=log)
    return files


def clean_build(scenario: str, kernel: str = DEFAULT_KERNEL) -> None:
    """Remove the scenario's module build and initramfs, so the next build redoes them."""
    shutil.rmtree(build_dir(scenario, kernel), ignore_errors=True)


def prune(kernel: str = DEFAULT_KERNEL) -> list[Path]:
    """Remove cached dumps and builds of ``kernel`` whose key is no longer current.

    Every edit of a scenario or of this file changes the key, and each stale
    set of dumps takes about 1 GB. Returns what was removed.
    """
    current = {f"{s}-{scenario_key(s, kernel)}" for s in SCENARIOS + tuple(SCALE_SAMPLES)}
    removed = []
    for top in (cache_root() / "vmcores" / kernel, cache_root() / "build" / kernel):
        if not top.is_dir():
            continue
        for path in sorted(top.iterdir()):
            stem = path.name.removesuffix(".lock")
            # only this builder's scenarios: another checkout's (a branch with more) are not ours to judge
            name = stem.rpartition("-")[0]
            if (name in SCENARIOS or name in SCALE_SAMPLES) and re.fullmatch(r"kdl_\w+-[0-9a-f]{12}", stem) and stem not in current:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def load_truth(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL) -> dict[str, Any]:
    return json.loads(variant_files(scenario, kaslr, kernel)["truth"].read_text())


@contextlib.contextmanager
def boot(scenario: str, kaslr: bool = True, kernel: str = DEFAULT_KERNEL,
         log: Log = _log_stderr) -> Iterator[tuple[Guest, dict[str, Any]]]:
    """Boot ``scenario`` until ``KDL-BLOCKED``; yield ``(guest, truth)``; always stop QEMU.

    The console log lives in a temporary directory removed on exit.
    """
    missing = missing_kernel_parts(kernel) + missing_tools()
    if missing:
        raise BuildError(f"cannot boot {kernel}; missing:\n  " + "\n  ".join(missing))
    ensure_kernel(kernel, log)
    lock = build_dir(scenario, kernel).with_name(build_dir(scenario, kernel).name + ".lock")
    with _file_lock(lock):
        initrd = build_initramfs(scenario, kernel, log=log)
    workdir = Path(tempfile.mkdtemp(prefix="kdlgdb-live-"))
    try:
        with blocked_guest(scenario, kaslr, kernel, initrd, workdir / "console.log", log) as guest:
            yield guest, make_truth(guest.console(), scenario, kernel, kaslr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", action="append", metavar="VER",
                        help=f"kernel version, repeatable (default: all of {', '.join(KERNELS)})")
    parser.add_argument("--list-kernels", action="store_true", help="print the kernels the tests use, and stop")
    parser.add_argument("--list-packages", action="store_true",
                        help="print the Debian packages the kernels need (images and headers, or a source "
                             "package and its build tools), and stop")
    parser.add_argument("--list-debian-kernels", action="store_true",
                        help="print the kernels that come from Debian's packages (their vmlinux is in -dbg), and stop")
    parser.add_argument("--kernel-only", action="store_true", help="build the kernels of our own only, no dumps")
    parser.add_argument("--scenario", action="extend", nargs="+", choices=SCENARIOS + tuple(SCALE_SAMPLES),
                        metavar="NAME", help=f"samples to build (default: {', '.join(DEFAULT_SAMPLES)}; "
                                             f"also {', '.join(s for s in SCALE_SAMPLES if s not in DEFAULT_SAMPLES)})")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    parser.add_argument("--prune", action="store_true",
                        help="first remove this kernel's cached dumps whose key is out of date")
    args = parser.parse_args(argv)
    kernels = args.kernel or list(KERNELS)
    if args.list_kernels:
        print(" ".join(KERNELS))
        return 0
    if args.list_debian_kernels:
        print(" ".join(k for k in kernels if k not in BUILT_KERNELS))
        return 0
    if args.list_packages:
        packages = [p for k in kernels for p in (
            (BUILT_KERNELS[k].source_package, *kernelbuild.BUILD_PACKAGES) if k in BUILT_KERNELS
            else (f"linux-image-{k}", f"linux-headers-{k}"))]
        print(" ".join(dict.fromkeys(packages)))
        return 0
    missing = [m for kernel in kernels for m in missing_kernel_parts(kernel)] + missing_tools()
    if missing:
        print("missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        for kernel in kernels:
            ensure_kernel(kernel)
            if args.kernel_only:
                continue
            if args.prune:
                for path in prune(kernel):
                    print(f"removed {path}")
            for scenario in args.scenario or DEFAULT_SAMPLES:
                if args.force:
                    clean_build(scenario, kernel)
                for kaslr in sample(scenario).kaslr:
                    reused = variant_complete(scenario, kaslr, kernel) and not args.force
                    files = ensure(scenario, kaslr, kernel, force=args.force)
                    for path in sorted(files.values()):
                        size = path.stat().st_size / 2**20
                        print(f"{'reused' if reused else 'built':6} {size:8.1f} MB  {path}", flush=True)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - t0:.1f} s; cache {cache_root()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
