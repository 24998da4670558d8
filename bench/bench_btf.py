"""Benchmark the no-vmlinux path (the dump's own BTF and kallsyms) against the gdb path, and drgn.

    python3 bench/bench_btf.py [--runs 3] [--kernel VER ...] [--scenario NAME ...] [--kind KIND] [--sizes 10k]

For each sample dump (the scenario dumps, KASLR on, of --kind, default QEMU's paging ELF; and the kdl_scale
dumps of --sizes, QEMU's paging ELF), in fresh processes, process start to verdict and peak RSS:

  btf, first   `kdlgdb waitfor --btf --json DUMP` with an empty cache: kallsyms decoded, BTF indexed, both kept
  btf          the same again, medians of --runs: what was kept is loaded (target/debuginfocache.py)
  gdb          `kdlgdb waitfor --json VMLINUX DUMP`: gdb with the vmlinux's DWARF, medians of --runs
  drgn         open the dump and the vmlinux and list the stacks of the D tasks (bench_scale.DRGN; PyPI drgn),
               split into opening and listing, medians of --runs

The bytecode of kdlgdb is compiled once beforehand (PYTHONPYCACHEPREFIX, as an installed package has it). Each
btf answer is checked against the gdb path's (the same JSON but for source lines, debug_info and symbol names;
tests/test_btf_dumps.py is the strict check), and the scale dumps against the guest's truth.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "vmcore_samples"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import samples  # noqa: E402
from bench_scale import SIZES, drgn  # noqa: E402
from expectations import check_scale  # noqa: E402

PYCACHE = Path(tempfile.gettempdir()) / "kdlgdb-bench-pycache"


def env(cache: str) -> dict[str, str]:
    out = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONPYCACHEPREFIX=str(PYCACHE), KDLGDB_CACHE=cache)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def kdlgdb(args: list[str], cache: str) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS in KiB of it and its children, stdout, CPU seconds: user and system, its children's
    too) of one ``kdlgdb`` process. The CPU time does not grow with the load of a shared machine as the wall time
    does."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "kdlgdb.cli", *args], stdout=out, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=env(cache))
        _, _, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = 0  # reaped by wait4
        out.seek(0)
        return wall, usage.ru_maxrss, out.read().decode(errors="replace"), usage.ru_utime + usage.ru_stime


def comparable(text: str) -> Any:
    doc = json.loads(text)
    doc.pop("debug_info", None)
    for task in doc["tasks"]:
        task["sources"] = [None] * len(task["sources"])
        task["stack"] = [frame.rpartition("+")[2] for frame in task["stack"]]  # offsets: names may differ (docs/btf.md)
    return doc


def bench(dump: samples.Dump, runs: int, cache_root: str) -> dict[str, Any]:
    cache = tempfile.mkdtemp(dir=cache_root)
    first = kdlgdb(["waitfor", "--btf", "--json", str(dump.path)], cache)
    btf = [kdlgdb(["waitfor", "--btf", "--json", str(dump.path)], cache) for _ in range(runs)]
    gdb = [kdlgdb(["waitfor", "--json", str(dump.vmlinux), str(dump.path)], cache) for _ in range(runs)]
    same = comparable(btf[0][2]) == comparable(gdb[0][2])
    row = {"dump": f"{dump.path.parent.name.rsplit('-', 1)[0]} {dump.kind}", "kernel": dump.kernel,
           "size_mb": dump.path.stat().st_size / 1e6,
           "tasks": len(json.loads(btf[0][2])["tasks"]), "same": same,
           "btf_first_s": first[0], "btf_first_kb": first[1], "btf_first_cpu": first[3],
           "btf_s": statistics.median(r[0] for r in btf), "btf_kb": statistics.median(r[1] for r in btf),
           "btf_cpu": statistics.median(r[3] for r in btf),
           "gdb_s": statistics.median(r[0] for r in gdb), "gdb_kb": statistics.median(r[1] for r in gdb),
           "gdb_cpu": statistics.median(r[3] for r in gdb), "load": os.getloadavg()[0]}
    if "kdl_scale" in str(dump.path):
        try:
            check_scale(json.loads(btf[0][2]), dump.truth)
            row["truth"] = "ok"
        except AssertionError as e:
            row["truth"] = f"WRONG: {e}"
    try:
        row.update(drgn(dump, runs))
    except ValueError:  # drgn failed to open it (libkdumpfile reads none of QEMU's kdump files)
        row["drgn"] = "cannot open it"
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| kernel | dump | tasks in the answer | btf, first: wall / CPU (RSS) | btf: wall / CPU (RSS) | "
             "gdb path: wall / CPU (RSS) | drgn: open + D stacks (RSS) | same answer | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drgn_text = (f"{r['drgn_open_s']:.2f} + {r['drgn_list_s']:.2f} s ({r['drgn_kb'] / 1024:.0f} MB)"
                     if "drgn_s" in r else r.get("drgn", "?"))
        lines.append(f"| {r['kernel']} | {r['dump']} ({r['size_mb']:.0f} MB) | {r['tasks']} | "
                     f"{r['btf_first_s']:.2f} / {r['btf_first_cpu']:.2f} s ({r['btf_first_kb'] / 1024:.0f} MB) | "
                     f"{r['btf_s']:.2f} / {r['btf_cpu']:.2f} s ({r['btf_kb'] / 1024:.0f} MB) | "
                     f"{r['gdb_s']:.2f} / {r['gdb_cpu']:.2f} s ({r['gdb_kb'] / 1024:.0f} MB) | "
                     f"{drgn_text} | {'yes' if r['same'] else 'NO'}{' ' + r['truth'] if 'truth' in r else ''} | "
                     f"{r['load']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--kernel", action="append", help="Debian releases (default: the three of the samples)")
    p.add_argument("--scenario", action="append", help="scenario dumps (default: kdl_abba, kdl_mutex)")
    p.add_argument("--kind", default="elf", help="the scenario dumps' form (default elf: drgn reads no QEMU kdump)")
    p.add_argument("--sizes", nargs="*", default=["10k"], choices=sorted(SIZES), help="kdl_scale dumps (6.1)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args()
    kernels = args.kernel or list(samples.builder.DEBIAN_KERNELS)
    dumps = [samples.ensure_dump(s, True, k, kind=args.kind) for k in kernels
             for s in args.scenario or ["kdl_abba", "kdl_mutex"]]
    dumps += [samples.ensure_dump(f"kdl_scale_{size}", True, samples.DEFAULT_KERNEL) for size in args.sizes]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], env=env(""), check=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdlgdb-bench-") as cache_root:
        for dump in dumps:
            rows.append(bench(dump, args.runs, cache_root))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
