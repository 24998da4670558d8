"""Record kd-waitfor on the real sample dumps, for the fast replay tests.

    python3 tests/vmcore_samples/record.py [--kernel K] [--scenario S ...]

Each recording (``recordings/<kernel>/<scenario>-<kaslr|nokaslr>.json.gz``)
holds every read and type query the analysis made on the dump; the truth the
guest printed is stored beside it (``.truth.json``) so the replay tests check
against the kernel's own word. Re-record after changing what the kernel model
reads: a replay asked for something not recorded fails loudly.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import samples  # noqa: E402

RECORDINGS = HERE / "recordings"


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", default=samples.DEFAULT_KERNEL)
    p.add_argument("--scenario", action="append", choices=samples.SCENARIOS)
    args = p.parse_args()
    for scenario in args.scenario or samples.SCENARIOS:
        for kaslr in (False, True):
            path = record(scenario, kaslr, args.kernel)
            print(f"{path.relative_to(HERE)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
