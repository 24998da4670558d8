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

``<key>`` hashes the scenario's files, the kernel version and the builder's code: the
top-level definitions of the files in ``cache.BUILDER_FILES`` (not their imports,
comments and docstrings, nor which file holds a definition) and the ``/init``
template. A change to any of them leads to a fresh directory; an existing one is
reused; moving code between the builder's files is not a change.
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

    python3 tests/vmcore_samples/build.py [--kernel VER] [--scenario NAME ...] [--force] [--prune] [--jobs N]

(``--prune`` first deletes the kernels' cache entries with outdated keys; ``--jobs`` runs that many guests at
once, by default one more than the cores: a guest mostly waits.) It prints what it built or reused and its
total time.

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

The builder's parts, beside this file: ``cache.py`` (paths, what a kernel and
the host need, ``expected.json``, the key), ``initramfs.py`` (the module build and
the initramfs, with ``init.sh``, the guest's ``/init``), ``guest.py`` (QEMU and
QMP), ``truth.py`` (the console's facts, the dump's notes), ``formats.py`` (the
dump forms), ``kernelbuild.py`` (kernels of our own), ``catalog.py`` (what is
built). This file builds the dumps from them, several guests at once.

Importable as well (``samples.py`` does so); the main entry points are
:func:`ensure` and :func:`boot`. Python 3.11 standard library only; needs
qemu-system-x86, busybox-static, make/gcc and the kernel's image, headers and
-dbg packages.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The builder's parts, beside this file (not a package). What tests and samples.py use through this module is
# imported here by name.
import formats  # noqa: E402
from cache import (  # noqa: E402,F401
    BUILDER_FILES, NOT_KEYED, BuildError, Log, build_dir, builder_digest, cache_root, definitions, dump_dir,
    ensure_kernel, expected, file_lock, for_kernel, kernel_available, kernel_paths, kernel_release, log_stderr,
    missing_kernel_parts, missing_tools, scenario_files, scenario_key, sleeping_states, tail, variant_complete,
    variant_files, variant_kinds, variant_name,
)
from catalog import (  # noqa: E402,F401
    ALL_KINDS, ANALYSIS_KINDS, BUILT_KERNELS, CODEC_KINDS, DEBIAN_KERNELS, DEFAULT_KERNEL, DEFAULT_SAMPLES,
    GUEST_MEMORY, KERNELS, KINDS, PHYS_SCENARIO, lockdep, SCALE_SAMPLES, SCENARIOS, Sample, sample,
)
import kernelbuild  # noqa: E402
from initramfs import build_initramfs, build_module, cpio_newc, guest_modules, init_script  # noqa: E402,F401
from guest import Guest, blocked_guest  # noqa: E402,F401
from truth import (  # noqa: E402,F401
    START_KERNEL_MAP, elf_notes, elf_program_headers, hung_task_reports, make_truth, parse_console, vmcoreinfo,
)

HUNG_TASK_WAIT = 25.0  # how long to wait for the hung-task report
KASLR_ATTEMPTS = 3  # boots to try when KASLR happens to pick offset 0


# --------------------------------------------------------------------------
# Building dumps
# --------------------------------------------------------------------------

def build_variant(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL,
                  log: Log = log_stderr) -> dict[str, Any]:
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
                log(f"{scenario} {v} on {kernel}: KASLR chose offset 0 this time; booting again")
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
                         "(was qemu_fw_cfg loaded in the guest?)\n" + tail(console_text))
    truth["vmcoreinfo_kernel_offset"] = f"{int(info['KERNELOFFSET'], 16):#x}"
    truth["osrelease"] = info.get("OSRELEASE", "")
    part["truth"].write_text(json.dumps(truth, indent=2) + "\n")

    for key in [k for k in part if k != "truth"] + ["truth"]:  # truth last: it marks completion
        part[key].rename(files[key])
    report["vmcore_mb"] = round(files["elf"].stat().st_size / 2**20)
    log(f"{scenario} {v} on {kernel}: blocked after {report['blocked_s']} s, hung-task report "
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
           log: Log = log_stderr) -> dict[str, Path]:
    """Make sure one variant of ``scenario`` is in the cache; return its file paths.

    Reuses a complete variant unless ``force`` (which re-boots and re-dumps;
    the module and initramfs are rebuilt only when their build directory is
    gone, see :func:`clean_build`).
    """
    files = variant_files(scenario, kaslr, kernel)
    if variant_complete(scenario, kaslr, kernel) and not force:
        return files
    lock = files["elf"].parent.with_name(files["elf"].parent.name + ".lock")
    with file_lock(lock):
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
         log: Log = log_stderr) -> Iterator[tuple[Guest, dict[str, Any]]]:
    """Boot ``scenario`` until ``KDL-BLOCKED``; yield ``(guest, truth)``; always stop QEMU.

    The console log lives in a temporary directory removed on exit.
    """
    missing = missing_kernel_parts(kernel) + missing_tools()
    if missing:
        raise BuildError(f"cannot boot {kernel}; missing:\n  " + "\n  ".join(missing))
    ensure_kernel(kernel, log)
    lock = build_dir(scenario, kernel).with_name(build_dir(scenario, kernel).name + ".lock")
    with file_lock(lock):
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
    parser.add_argument("--jobs", "-j", type=int, default=default_jobs(), metavar="N",
                        help="guests to run at once (default: %(default)s: one more than the cores, at most one per GiB of memory available)")
    parser.add_argument("--prune", action="store_true",
                        help="first remove the kernels' cached dumps whose key is out of date")
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
    if args.prune and not args.kernel_only:
        for kernel in kernels:
            for path in prune(kernel):
                print(f"removed {path}")
    # A kernel of ours compiles (on every core) beside the first guests, which mostly wait; its samples come
    # last and wait for it.
    ours = [k for k in kernels if k in BUILT_KERNELS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as compiler:
        kernel_builds = {k: compiler.submit(ensure_kernel, k) for k in ours}
        jobs = [] if args.kernel_only else [
            (kernel, scenario) for kernel_group in ([k for k in kernels if k not in ours], ours)
            for scenario in args.scenario or DEFAULT_SAMPLES for kernel in kernel_group]
        done = build_all(jobs, args.jobs, args.force, kernel_builds)
    failed = []
    for kernel, future in kernel_builds.items():
        if future.exception() is not None:
            failed.append(kernel)
            print(f"error: building kernel {kernel}: {future.exception()}", file=sys.stderr)
    for (kernel, scenario), outcome in done.items():
        if isinstance(outcome, BuildError) and kernel not in failed:
            failed.append(f"{scenario} on {kernel}")
            print(f"error: {scenario} on {kernel}: {outcome}", file=sys.stderr)
    booted = sum(n for n in done.values() if isinstance(n, int))
    print(f"done in {time.monotonic() - t0:.1f} s: {len(jobs)} samples, {booted} boots, "
          f"{args.jobs} at a time, {len(failed)} failed; cache {cache_root()}")
    return 1 if failed else 0


GUEST_BUDGET = 1 << 30  # host memory one guest at a time needs: its RAM, QEMU, and the page cache of its dumps


def default_jobs() -> int:
    """Guests to run at once: a boot keeps a core busy for a few seconds, then the guest mostly waits (for its
    threads to block, for the hung-task detector, for the dump to be written); one more than the cores keeps
    them busy (measured on 2 cores: see docs/tests.md), as far as the memory available allows."""
    by_cpu = (os.cpu_count() or 1) + 1
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return by_cpu
    return max(1, min(by_cpu, available // GUEST_BUDGET))


def build_all(jobs: list[tuple[str, str]], parallel: int, force: bool = False,
              kernel_builds: Optional[dict[str, concurrent.futures.Future]] = None) -> dict[tuple[str, str], Any]:
    """Build every variant of each ``(kernel, sample)`` in ``jobs``, ``parallel`` samples at a time (the variants
    of one sample share its build and lock, so they boot one after the other). Returns, per job, the number of
    boots it made, or the BuildError that stopped it; the others go on. A sample of a kernel in
    ``kernel_builds`` (being compiled) waits for it, and fails with it."""
    def one(kernel: str, scenario: str) -> int:
        if kernel_builds and kernel in kernel_builds:
            kernel_builds[kernel].result()
        if force:
            clean_build(scenario, kernel)
        booted = 0
        for kaslr in sample(scenario).kaslr:
            reused = variant_complete(scenario, kaslr, kernel) and not force
            files = ensure(scenario, kaslr, kernel, force=force)
            booted += not reused
            size = sum(path.stat().st_size for path in files.values()) / 2**20
            print(f"{'reused' if reused else 'built':6} {scenario} {variant_name(kaslr)} on {kernel}: {len(files)} files, "
                  f"{size:.0f} MB in {files['elf'].parent}", flush=True)
        return booted

    done: dict[tuple[str, str], Any] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(one, *job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            try:
                done[futures[future]] = future.result()
            except BuildError as exc:
                done[futures[future]] = exc
    return done


if __name__ == "__main__":
    sys.exit(main())
