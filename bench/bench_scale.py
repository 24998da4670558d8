"""Benchmark kdlgdb at scale on the kdl_scale dumps (1,000 / 5,000 / 10,000 kthreads), against drgn and crash.

    python3 bench/bench_scale.py [--sizes 1k 5k 10k] [--runs 3] [--live 1k] [--no-peers] [--json FILE]

The dumps come from tests/vmcore_samples/build.py (kdl_scale_1k, _5k, _10k, KASLR on); the 5k and 10k
ones are built on first use (~15 s each, 0.7 and 1 GB in the cache). For each dump, in fresh processes,
the median of --runs runs:

  gdb         `gdb -batch VMLINUX DUMP`: gdb's own start-up, and its peak RSS
  kd-waitfor  the same plus `source gdbext/kdlgdb.py` and `kd-waitfor`: the time and peak RSS it adds
  drgn        the closest peer operation in drgn (PyPI drgn): open the dump and the vmlinux, then for
              every task in for_each_task() that is in D state, its stack trace as text; split into
              opening and listing
  crash       `foreach UN bt` in crash: its time, and how many tasks it showed

and once, inside gdb: the analysis split into collect / graph / render, and the target reads it made.
Each dump's `kdlgdb waitfor --json` is checked against the guest's own truth (tests/expectations.py:
the three cycles exactly, every chain, the counts); a failure is printed, not hidden. The growth
columns divide by the smallest size's numbers.

--live SIZE boots that guest (1k, 5k, 10k) in QEMU and times `kdlgdb waitfor --remote` through a TCP
proxy that counts the gdb remote-protocol packets gdb sends (all, and memory reads `m`), next to gdb's
own connect-and-detach; the answer is checked against that boot's truth too.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "vmcore_samples"))
sys.path.insert(0, str(ROOT / "tests"))

import samples  # noqa: E402
from bench_waitfor import inside_gdb  # noqa: E402
from expectations import check_scale  # noqa: E402

EXTENSION = ROOT / "gdbext" / "kdlgdb.py"
SIZES = {"1k": 1000, "5k": 5000, "10k": 10000}

# The peer operation in drgn: every task, and for those in D state (TASK_UNINTERRUPTIBLE), the stack trace.
DRGN = r'''
import sys, time
import drgn
from drgn.helpers.linux.pid import for_each_task
t0 = time.perf_counter()
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
t1 = time.perf_counter()
lines = []
for task in for_each_task(prog):
    if task.__state.value_() == 2:
        lines.append(f"PID: {task.pid.value_()} COMM: {task.comm.string_().decode()}\n{prog.stack_trace(task)}")
t2 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {len(lines)}")
'''


def run(cmd: list[str], stdin: Optional[str] = None, env: Optional[dict[str, str]] = None,
        timeout: float = 1800) -> tuple[float, int, str, str]:
    """(wall seconds, peak RSS in KiB, stdout, stderr) of one process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=out, stderr=err, env=env)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        deadline = start + timeout
        while True:
            pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise TimeoutError(f"{cmd[0]} took more than {timeout:.0f} s")
            time.sleep(0.01)
        proc.returncode = 0  # reaped by wait4
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return wall, usage.ru_maxrss, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def median_runs(cmd: list[str], runs: int) -> tuple[float, int, list[str]]:
    """Median wall time and median peak RSS of ``runs`` runs, and each run's stderr."""
    results = [run(cmd) for _ in range(runs)]
    return (statistics.median(r[0] for r in results), int(statistics.median(r[1] for r in results)),
            [r[3] for r in results])


# Around `source` and `kd-waitfor` in the same gdb: their own time, which the noise of gdb's start-up on a
# shared machine does not blur the way a difference of two processes' times does.
TIMED_WAITFOR = ["-ex", "python import time; t0 = time.perf_counter()", "-ex", f"source {EXTENSION}", "-ex", "kd-waitfor",
                 "-ex", "python import sys; print('kd-waitfor-seconds', time.perf_counter() - t0, file=sys.stderr)"]


def timed(stderrs: list[str]) -> float:
    """The median of the kd-waitfor-seconds lines TIMED_WAITFOR printed."""
    return statistics.median(float(line.split()[1]) for err in stderrs for line in err.splitlines()
                             if line.startswith("kd-waitfor-seconds "))


def kdlgdb_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), TERM="dumb")


def check(doc_text: str, truth: dict[str, Any]) -> str:
    """'ok' when kdlgdb's JSON matches the guest's truth, else the first mismatch."""
    try:
        check_scale(json.loads(doc_text), truth)
        return "ok"
    except (AssertionError, ValueError, KeyError) as e:
        return f"WRONG: {str(e)[:300]}"


def bench_dump(size: str, runs: int, peers: bool, kernel: str) -> dict[str, Any]:
    dump = samples.ensure_dump(f"kdl_scale_{size}", kaslr=True, kernel=kernel)
    base = ["gdb", "-nx", "-q", "-batch", str(dump.vmlinux), str(dump.path)]
    r: dict[str, Any] = {"size": size, "threads": SIZES[size], "dump_mb": dump.path.stat().st_size / 2**20}
    r["gdb_s"], r["gdb_kb"], _ = median_runs(base, runs)
    r["full_s"], r["full_kb"], stderrs = median_runs(base + TIMED_WAITFOR, runs)
    r["inner_s"] = timed(stderrs)
    r["inside"] = inside_gdb(base)
    _, _, doc, _ = run([sys.executable, "-m", "kdlgdb.cli", "waitfor", str(dump.vmlinux), str(dump.path), "--json"],
                       env=kdlgdb_env())
    r["check"] = check(doc, dump.truth)
    if peers:
        r.update(drgn(dump, runs))
        r.update(crash(dump))
    return r


def drgn(dump: samples.Dump, runs: int) -> dict[str, Any]:
    if importlib.util.find_spec("drgn") is None:
        return {"drgn": "not installed (pip install drgn)"}
    results = [run([sys.executable, "-c", DRGN, str(dump.path), str(dump.vmlinux)]) for _ in range(runs)]
    opened, listed, count = zip(*(map(float, r[2].split()) for r in results))
    return {"drgn_s": statistics.median(r[0] for r in results), "drgn_kb": statistics.median(r[1] for r in results),
            "drgn_open_s": statistics.median(opened), "drgn_list_s": statistics.median(listed),
            "drgn_tasks": int(count[0])}


def crash(dump: samples.Dump) -> dict[str, Any]:
    """``foreach UN bt`` in crash; the count of tasks it showed (``PID:`` lines) and of all tasks it saw."""
    if not Path("/usr/bin/crash").exists():
        return {"crash": "not installed"}
    wall, kb, out, _ = run(["crash", "-s", str(dump.vmlinux), str(dump.path)],
                             stdin="foreach UN bt\nps | wc -l\nq\n")
    lines = out.splitlines()
    shown = sum(line.startswith("PID:") for line in lines)
    listed = next((int(x) - 1 for x in reversed(lines) if x.strip().isdigit()), None)
    return {"crash_s": wall, "crash_kb": kb, "crash_un": shown, "crash_ps": listed}


class PacketCounter:
    """A TCP proxy to a gdbstub that counts the remote-protocol packets gdb sends, by their first letter."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.counts: dict[str, int] = {}
        self.bytes_in = self.bytes_out = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        """One gdb connection at a time, as the gdbstub takes them; each is closed before the next."""
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):  # one small packet at a time: no Nagle delays
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            back = threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True)
            back.start()
            self._pipe(client, upstream, True)
            back.join()
            client.close()
            upstream.close()
            time.sleep(0.5)  # let the stub see the end of this connection before the next one

    def _pipe(self, src: socket.socket, dst: socket.socket, from_gdb: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_gdb:
                    self.bytes_out += len(data)
                    for part in data.split(b"$")[1:]:  # gdb escapes '$' inside packets: it starts one
                        key = chr(part[0]) if part else "?"
                        self.counts[key] = self.counts.get(key, 0) + 1
                else:
                    self.bytes_in += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> dict[str, int]:
        """Packets since the last take: {"all": n, "m": memory reads, "bytes": bytes received from the stub}."""
        out = {"all": sum(self.counts.values()), "m": self.counts.get("m", 0), "bytes_in": self.bytes_in}
        self.counts, self.bytes_in, self.bytes_out = {}, 0, 0
        return out


def bench_live(size: str, kernel: str) -> dict[str, Any]:
    r: dict[str, Any] = {"size": size, "threads": SIZES[size]}
    t0 = time.perf_counter()
    with samples.boot_live(f"kdl_scale_{size}", kaslr=True, kernel=kernel) as live:
        r["boot_s"] = time.perf_counter() - t0
        proxy = PacketCounter(("127.0.0.1", live.gdb_port))
        remote = f"127.0.0.1:{proxy.port}"
        r["gdb_s"], r["gdb_kb"], _, _ = run(["gdb", "-nx", "-q", "-batch", str(live.vmlinux),
                                             "-ex", f"target remote {remote}", "-ex", "detach"])
        r["gdb_packets"] = proxy.take()
        r["full_s"], _, doc, err = run([sys.executable, "-m", "kdlgdb.cli", "waitfor", str(live.vmlinux),
                                        "--remote", remote, "--json"], env=kdlgdb_env())
        r["packets"] = proxy.take()
        r["check"] = check(doc, live.truth) if doc else f"WRONG: {err.strip()[-300:]}"
        inside = inside_gdb(["gdb", "-nx", "-q", "-batch", str(live.vmlinux), "-ex", f"target remote {remote}"],
                            then=("detach",))
        r["reads"], r["bytes"], r["collect_s"] = inside["reads"], inside["bytes"], inside["collect"]
        proxy.server.close()
    return r


def print_dumps(rows: list[dict[str, Any]]) -> None:
    print("On the kdl_scale dumps (KASLR; medians; MB = MiB). kd-waitfor: `source` + `kd-waitfor` beyond gdb's")
    print("start-up, as the difference of the two processes' times and as timed inside gdb; +MB: peak RSS beyond gdb's.")
    print(f"{'tasks':>6} {'dump MB':>7} {'gdb s':>6} {'gdb MB':>6} {'kd-waitfor s':>12} {'(in gdb)':>8} {'+MB':>5} "
          f"{'reads':>6} {'MB read':>7} {'drgn s (open+list)':>19} {'drgn MB':>7} {'crash s':>7} {'crash UN':>8}  check")
    for r in rows:
        inside = r["inside"]
        drgn_text = (f"{r['drgn_s']:.2f} ({r['drgn_open_s']:.2f}+{r['drgn_list_s']:.2f})" if "drgn_s" in r
                     else r.get("drgn", "-"))
        print(f"{inside['tasks']:>6} {r['dump_mb']:>7.0f} {r['gdb_s']:>6.2f} {r['gdb_kb'] / 1024:>6.0f} "
              f"{r['full_s'] - r['gdb_s']:>12.2f} {r['inner_s']:>8.2f} {(r['full_kb'] - r['gdb_kb']) / 1024:>5.0f} "
              f"{inside['reads']:>6} {inside['bytes'] / 2**20:>7.1f} {drgn_text:>19} "
              f"{r.get('drgn_kb', 0) / 1024:>7.0f} {r.get('crash_s', 0):>7.1f} {r.get('crash_un', '-')!s:>8}  "
              f"{r['check']}")
    first = rows[0]
    print("\nRatios and growth (kd-waitfor as timed in gdb; growth from the first size):")
    for r in rows:
        line = (f"  {r['threads']:>6} tasks: tasks x{r['threads'] / first['threads']:.1f}, "
                f"kd-waitfor x{r['inner_s'] / first['inner_s']:.2f}, reads x{r['inside']['reads'] / first['inside']['reads']:.2f}, "
                f"RSS added x{(r['full_kb'] - r['gdb_kb']) / max(1, first['full_kb'] - first['gdb_kb']):.2f}")
        if "drgn_s" in r:
            line += (f"; kd-waitfor / drgn's listing {r['inner_s'] / r['drgn_list_s']:.2f}, "
                     f"gdb + kd-waitfor / drgn's open + listing {r['full_s'] / r['drgn_s']:.2f}")
        print(line)
    if any("crash_ps" in r for r in rows):
        print("  crash 8.0.2 on this kernel sees " + ", ".join(f"{r['crash_ps']} tasks of {r['threads']}+"
                                                              for r in rows if "crash_ps" in r)
              + " (its pid handling predates a 6.1.y backport): its `foreach UN bt` lists no D task.")


def print_live(rows: list[dict[str, Any]]) -> None:
    print("\nLive, QEMU gdbstub (TCG) on 127.0.0.1, through a packet-counting proxy:")
    print(f"{'tasks':>6} {'boot s':>6} {'gdb connect s':>13} {'kdlgdb waitfor s':>16} {'packets':>7} "
          f"{'m reads':>7} {'KB from stub':>12} {'target reads':>12} {'MB read':>7}  check")
    for r in rows:
        p = r["packets"]
        print(f"{r['threads']:>6} {r['boot_s']:>6.1f} {r['gdb_s']:>13.2f} {r['full_s']:>16.2f} {p['all']:>7} "
              f"{p['m']:>7} {p['bytes_in'] / 1024:>12.0f} {r['reads']:>12} {r['bytes'] / 2**20:>7.1f}  {r['check']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--live", nargs="*", choices=SIZES, default=[], help="also boot guests of these sizes")
    p.add_argument("--no-peers", action="store_true", help="skip drgn and crash")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    p.add_argument("--kernel", default=samples.DEFAULT_KERNEL, choices=samples.KERNELS,
                   help=f"the kernel of the samples (default {samples.DEFAULT_KERNEL})")
    args = p.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print(f"kernel {args.kernel}")
    rows = [bench_dump(size, args.runs, not args.no_peers, args.kernel) for size in args.sizes]
    print_dumps(rows)
    live = [bench_live(size, args.kernel) for size in args.live]
    if live:
        print_live(live)
    if args.json:
        Path(args.json).write_text(json.dumps({"dumps": rows, "live": live}, indent=2) + "\n")


if __name__ == "__main__":
    main()
