#!/usr/bin/env python3
"""Time to open and analyse each format of the same dump.

For every form of one sample dump (kdl_abba, KASLR by default: QEMU's paging ELF,
which gdb reads, and the physical ELF, flattened and normal kdump files, filtered
``-d 31`` and re-compressed ones, which kdlgdb reads itself), in one gdb:

- ``open``: gdb loading the vmlinux (and the core file when gdb reads it) until
  the extension is sourced;
- ``kd-open``: kdlgdb opening the file (headers, bitmaps, the first page-table walk,
  the KASLR and banner checks);
- ``kd-waitfor``: the whole analysis on top;

and ``kdlgdb waitfor`` as a user runs it (wall time, median of ``--runs``).

    python3 bench/bench_formats.py [--runs 3] [--scenario kdl_abba] [--nokaslr]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "vmcore_samples"))
import samples  # noqa: E402

TIMER = "python import time; t0 = time.perf_counter()"
LAP = "python print('LAP', '{label}', round(time.perf_counter() - t0, 3)); t0 = time.perf_counter()"


def inside_gdb(vmlinux: Path, path: Path, kind: str) -> dict[str, float]:
    core = [str(path)] if kind == "elf" else []
    cmd = ["gdb", "-nx", "-q", "-batch", str(vmlinux)] + core + ["-ex", f"source {ROOT / 'gdbext' / 'kdlgdb.py'}",
                                                                  "-ex", TIMER]
    if kind != "elf":
        cmd += ["-ex", f"kd-open {path}", "-ex", LAP.format(label="kd-open")]
    cmd += ["-ex", "kd-waitfor", "-ex", LAP.format(label="kd-waitfor")]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    total = time.perf_counter() - t
    laps = {line.split()[1]: float(line.split()[2]) for line in out.splitlines() if line.startswith("LAP ")}
    laps["open"] = total - sum(laps.values())
    return laps


def cli(vmlinux: Path, path: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdlgdb.cli", "waitfor", str(vmlinux), str(path)], capture_output=True,
                   timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", default=samples.PHYS_SCENARIO)
    parser.add_argument("--nokaslr", action="store_true")
    args = parser.parse_args()
    kinds = list(samples.KINDS) + (list(samples.CODEC_KINDS) if args.scenario == samples.PHYS_SCENARIO else [])
    print(f"{args.scenario} {'nokaslr' if args.nokaslr else 'kaslr'}, median of {args.runs} runs")
    print(f"{'format':14} {'size MB':>8} {'gdb open s':>10} {'kd-open s':>9} {'kd-waitfor s':>12} {'kdlgdb waitfor s':>16}")
    for kind in kinds:
        dump = samples.ensure_dump(args.scenario, not args.nokaslr, kind=kind)
        laps = [inside_gdb(dump.vmlinux, dump.path, kind) for _ in range(args.runs)]
        walls = [cli(dump.vmlinux, dump.path) for _ in range(args.runs)]

        def med(key: str) -> str:
            values = [lap[key] for lap in laps if key in lap]
            return f"{statistics.median(values):.2f}" if values else "-"

        size = dump.path.stat().st_size / 2**20
        print(f"{kind:14} {size:8.1f} {med('open'):>10} {med('kd-open'):>9} {med('kd-waitfor'):>12} "
              f"{statistics.median(walls):16.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
