"""Record kd-waitfor and the kernel log on the real sample dumps, for the fast replay tests.

    python3 tests/vmcore_samples/record.py [--kernel K] [--scenario S ...] [--what all|waitfor|dmesg]

Each recording (``recordings/<kernel>/<scenario>-<kaslr|nokaslr>.json.gz``)
holds every read and type query the analysis made on the dump; the truth the
guest printed is stored beside it (``.truth.json``) so the replay tests check
against the kernel's own word. Re-record after changing what the kernel model
reads: a replay asked for something not recorded fails loudly.

The kernel-log recordings (``recordings/<kernel>/dmesg/<scenario>-<kaslr>.json.gz``,
in a folder of their own so the waitfor replays do not take them for theirs)
hold what ``kernel_log`` read, through a RecordingTarget around the GdbTarget
of a gdb batch run; beside each, ``.console.log.gz`` keeps the timestamped
lines of the serial console of the same boot, to compare the log with.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import samples  # noqa: E402

RECORDINGS = HERE / "recordings"
SRC = HERE.parent.parent / "src"
_ENV = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
_CONSOLE_LINE = re.compile(r"^\[\s*\d+\.\d{6}\] ")

# Run by gdb's own Python (-x), with the dump loaded: read the kernel log through a recorder.
_DMESG_IN_GDB = """\
import sys, traceback
sys.path.insert(0, {src!r})
try:
    from kdlgdb.kernel.layout import Kernel
    from kdlgdb.kernel.printk import kernel_log
    from kdlgdb.target.gdb import GdbTarget
    from kdlgdb.target.replay import RecordingTarget
    recorder = RecordingTarget(GdbTarget())
    problems = []
    records = kernel_log(Kernel(recorder), problems)
    if problems or not records:
        raise RuntimeError(f"{{len(records)}} records; " + "; ".join(map(str, problems)))
    recorder.save({out!r})
except Exception:
    with open({out!r} + ".err", "w") as f:
        f.write(traceback.format_exc())
"""


def recording_path(kernel: str, scenario: str, kaslr: bool) -> Path:
    return RECORDINGS / kernel / f"{scenario}-{'kaslr' if kaslr else 'nokaslr'}.json.gz"


def record(scenario: str, kaslr: bool, kernel: str) -> Path:
    dump = samples.ensure_dump(scenario, kaslr, kernel)
    out = recording_path(kernel, scenario, kaslr)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "kdlgdb.cli", "waitfor", str(dump.vmlinux), str(dump.path), "--json", "--record", str(out)]
    env_src = str(HERE.parent.parent / "src")
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": env_src, "PATH": "/usr/bin:/bin"})
    if done.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"recording {scenario} failed: {done.stderr.strip()}")
    truth = {k: v for k, v in dump.truth.items() if k in ("kernel", "kaslr", "module", "locks", "tasks", "kernel_offset")}
    out.with_suffix("").with_suffix(".truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return out


def dmesg_path(kernel: str, scenario: str, kaslr: bool) -> Path:
    return RECORDINGS / kernel / "dmesg" / f"{scenario}-{'kaslr' if kaslr else 'nokaslr'}.json.gz"


def console_copy_path(recording: Path) -> Path:
    """Where the console lines of a kernel-log recording's boot are kept."""
    return recording.with_name(recording.name.replace(".json.gz", ".console.log.gz"))


def record_dmesg(scenario: str, kaslr: bool, kernel: str) -> Path:
    """Record kernel_log on one dump in a gdb batch run; copy that boot's console lines beside it."""
    dump = samples.ensure_dump(scenario, kaslr, kernel)
    out = dmesg_path(kernel, scenario, kaslr)
    out.parent.mkdir(parents=True, exist_ok=True)
    err = Path(str(out) + ".err")
    err.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="kdlgdb-record-") as tmp:
        script = Path(tmp) / "dmesg.py"
        script.write_text(_DMESG_IN_GDB.format(src=str(SRC), out=str(out)))
        cmd = ["gdb", "-nx", "-q", "-batch", str(dump.vmlinux), str(dump.path), "-x", str(script)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_ENV, stdin=subprocess.DEVNULL)
    if err.exists():
        why = err.read_text().strip()
        err.unlink()
        raise SystemExit(f"recording the kernel log of {scenario} failed:\n{why}")
    if not out.exists():
        raise SystemExit(f"recording the kernel log of {scenario} failed: {done.stderr.strip()}")
    assert dump.console_log is not None
    lines = [line for line in dump.console_log.read_text(errors="replace").splitlines() if _CONSOLE_LINE.match(line)]
    with open(console_copy_path(out), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default=samples.DEFAULT_KERNEL)
    p.add_argument("--scenario", action="append", choices=samples.SCENARIOS)
    p.add_argument("--what", choices=("all", "waitfor", "dmesg"), default="all",
                   help="which recordings to make (default: all)")
    args = p.parse_args()
    for scenario in args.scenario or samples.SCENARIOS:
        for kaslr in (False, True):
            made = []
            if args.what in ("all", "waitfor"):
                made.append(record(scenario, kaslr, args.kernel))
            if args.what in ("all", "dmesg"):
                made.append(record_dmesg(scenario, kaslr, args.kernel))
                made.append(console_copy_path(made[-1]))
            for path in made:
                print(f"{path.relative_to(HERE)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
