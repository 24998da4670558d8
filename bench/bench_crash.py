"""Benchmark kd-waitfor in crash against the same command in gdb, on the same sample dumps.

    python3 bench/bench_crash.py [--runs 3] [--scenario S ...] [--kaslr]

For each dump, the median of --runs separate debugger processes:
  crash      crash -s VMLINUX DUMP, then quit: crash's own start-up
  +waitfor   the same plus `extend crashext/kdlgdb.so` and `kd-waitfor`
  gdb        gdb -batch VMLINUX DUMP: gdb's own start-up (VMLINUX only for the forms gdb cannot read)
  +waitfor   the same plus `source gdbext/kdlgdb.py` (and `kd-open DUMP`) and `kd-waitfor`
and the command alone, timed inside the debugger: the first kd-waitfor (it reads
the kernel) and a second one (crash keeps the snapshot in its Python process, gdb in
its embedded Python). Run `make -C crashext` first (setup.sh does).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "vmcore_samples"))

import samples

EXTENSION = ROOT / "crashext" / "kdlgdb.so"
STAMP = re.compile(r"^@@(\d+\.\d+)$", re.MULTILINE)


def _run(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.stdout


def _crash(dump: samples.Dump, lines: list[str]) -> tuple[float, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".cmd") as script:
        script.write("\n".join(lines + ["quit"]) + "\n")
        script.flush()
        return _run(["crash", "-s", "--no_crashrc", "--no_scroll", str(dump.vmlinux), str(dump.path), "-i", script.name])


def _gdb(dump: samples.Dump, commands: list[str]) -> tuple[float, str]:
    """gdb on the dump: gdb loads a paging ELF itself; kdlgdb's kd-open reads the other forms."""
    cmd = ["gdb", "-nx", "-q", "-batch", str(dump.vmlinux)] + ([str(dump.path)] if dump.kind == "elf" else [])
    if commands and dump.kind != "elf":
        commands = commands[:1] + [f"kd-open {dump.path}"] + commands[1:]
    for c in commands:
        cmd += ["-ex", c]
    return _run(cmd)


def _inside(out: str) -> tuple[float, float]:
    """(first, second) kd-waitfor from the three time stamps around them."""
    t = [float(x) for x in STAMP.findall(out)]
    if len(t) != 3:
        raise SystemExit(f"no time stamps in the debugger's output:\n{out[-2000:]}")
    return t[1] - t[0], t[2] - t[1]


def bench(dump: samples.Dump, runs: int) -> dict[str, float]:
    stamp_crash = "!date +@@%s.%N"
    stamp_gdb = "python import time; print(f'@@{time.time():.6f}')"
    crash_in = ["kd-waitfor", stamp_crash, "kd-waitfor", stamp_crash]
    gdb_in = ["kd-waitfor", stamp_gdb, "kd-waitfor", stamp_gdb]
    r: dict[str, list[float]] = {k: [] for k in ("crash", "crash_waitfor", "crash_first", "crash_again",
                                                 "gdb", "gdb_waitfor", "gdb_first", "gdb_again")}
    for _ in range(runs):
        r["crash"].append(_crash(dump, [])[0])
        r["crash_waitfor"].append(_crash(dump, [f"extend {EXTENSION}", "kd-waitfor"])[0])
        first, again = _inside(_crash(dump, [f"extend {EXTENSION}", stamp_crash] + crash_in)[1])
        r["crash_first"].append(first)
        r["crash_again"].append(again)
        r["gdb"].append(_gdb(dump, [])[0])
        r["gdb_waitfor"].append(_gdb(dump, [f"source {ROOT / 'gdbext' / 'kdlgdb.py'}", "kd-waitfor"])[0])
        first, again = _inside(_gdb(dump, [f"source {ROOT / 'gdbext' / 'kdlgdb.py'}", stamp_gdb] + gdb_in)[1])
        r["gdb_first"].append(first)
        r["gdb_again"].append(again)
    return {k: statistics.median(v) for k, v in r.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scenario", action="append", choices=samples.SCENARIOS)
    p.add_argument("--kaslr", action="store_true", help="use the KASLR dumps")
    p.add_argument("--kind", default="elf", help="the dump's form (crash reads them all; gdb through kd-open)")
    args = p.parse_args()
    if not EXTENSION.exists():
        raise SystemExit(f"{EXTENSION} is missing: run make -C {EXTENSION.parent}")
    print(f"{'dump':<24} {'crash s':>8} {'+waitfor':>9} {'cmd s':>6} {'again':>6}   "
          f"{'gdb s':>6} {'+waitfor':>9} {'cmd s':>6} {'again':>6}")
    for scenario in args.scenario or samples.SCENARIOS:
        dump = samples.ensure_dump(scenario, args.kaslr, kind=args.kind)
        r = bench(dump, args.runs)
        name = f"{scenario}-{'kaslr' if args.kaslr else 'nokaslr'}"
        print(f"{name:<24} {r['crash']:>8.2f} {r['crash_waitfor']:>9.2f} {r['crash_first']:>6.2f} "
              f"{r['crash_again']:>6.3f}   {r['gdb']:>6.2f} {r['gdb_waitfor']:>9.2f} {r['gdb_first']:>6.2f} "
              f"{r['gdb_again']:>6.3f}")


if __name__ == "__main__":
    main()
