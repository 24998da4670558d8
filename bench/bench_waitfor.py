"""Benchmark kd-waitfor on the real sample dumps: gdb's own start-up, then kdlgdb on top.

    python3 bench/bench_waitfor.py [--runs 3] [--scenario S ...] [--kaslr]

For each dump it measures, in separate gdb processes (the median of --runs):
  gdb      gdb -batch VMLINUX DUMP loading and exiting, nothing else
  waitfor  the same plus `source gdbext/kdlgdb.py` and `kd-waitfor`
and inside gdb: the analysis split into collect / graph / render, the number of
target reads and bytes read, and the growth of gdb's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "vmcore_samples"))

import samples  # noqa: E402

# Run by gdb's Python with the dump (or a gdbstub) loaded: the analysis' parts, the target's reads.
INSIDE = r'''
import json, resource, sys, time
sys.path.insert(0, SRC)
from kdlgdb.target.gdb import GdbTarget
from kdlgdb.kernel.collect import collect
from kdlgdb.analysis.graph import WaitForGraph
from kdlgdb.render.text import render_waitfor

rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
target = GdbTarget()
snap = collect(target, source_lines=False)  # as kd-waitfor does: its text shows no source lines
t1 = time.perf_counter()
graph = WaitForGraph(snap)
t2 = time.perf_counter()
render_waitfor(snap, graph)
t3 = time.perf_counter()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(OUT, "w") as f:
    json.dump({"collect": t1 - t0, "graph": t2 - t1, "render": t3 - t2, "reads": target.reads,
               "bytes": target.bytes_read, "tasks": len(snap.tasks), "rss_growth_kb": rss1 - rss0,
               "rss_kb": rss1}, f)
'''


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def inside_gdb(base: list[str], then: tuple[str, ...] = ()) -> dict:
    """The INSIDE script's numbers, from gdb started as ``base`` (after the script, gdb runs ``then``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "inside.json"
        script = Path(tmp) / "inside.py"
        script.write_text(f"SRC = {str(ROOT / 'src')!r}\nOUT = {str(out)!r}\n" + INSIDE)
        done = subprocess.run(base + ["-x", str(script)] + [arg for c in then for arg in ("-ex", c)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if not out.exists():
            raise RuntimeError(f"gdb failed: {(done.stderr or done.stdout)[-500:]}")
        return json.loads(out.read_text())


def bench(dump: samples.Dump, runs: int) -> dict:
    base = ["gdb", "-nx", "-q", "-batch", str(dump.vmlinux), str(dump.path)]
    gdb_only = statistics.median(_time(base) for _ in range(runs))
    full = statistics.median(
        _time(base + ["-ex", f"source {ROOT / 'gdbext' / 'kdlgdb.py'}", "-ex", "kd-waitfor"]) for _ in range(runs)
    )
    return {"gdb": gdb_only, "waitfor": full, **inside_gdb(base)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scenario", action="append", choices=samples.SCENARIOS)
    p.add_argument("--kaslr", action="store_true", help="use the KASLR dumps")
    p.add_argument("--kernel", default=samples.DEFAULT_KERNEL, choices=samples.KERNELS,
                   help=f"the kernel of the samples (default {samples.DEFAULT_KERNEL})")
    args = p.parse_args()
    print(f"kernel {args.kernel}")
    print(f"{'dump':<22} {'tasks':>5} {'gdb s':>6} {'+kd-waitfor s':>13} {'collect ms':>10} {'graph ms':>8} "
          f"{'reads':>6} {'KiB read':>8} {'RSS +MiB':>8}")
    for scenario in args.scenario or samples.SCENARIOS:
        dump = samples.ensure_dump(scenario, args.kaslr, args.kernel)
        r = bench(dump, args.runs)
        name = f"{scenario}-{'kaslr' if args.kaslr else 'nokaslr'}"
        print(f"{name:<22} {r['tasks']:>5} {r['gdb']:>6.2f} {r['waitfor'] - r['gdb']:>13.2f} {r['collect'] * 1000:>10.0f} "
              f"{r['graph'] * 1000:>8.1f} {r['reads']:>6} {r['bytes'] / 1024:>8.0f} {r['rss_growth_kb'] / 1024:>8.1f}")


if __name__ == "__main__":
    main()
