"""Exact backtraces on the real dumps of every kernel: kdlgdb's frames of each task the hung-task detector
reported equal, frame for frame, the stack the kernel printed (the frames its unwinder vouched for)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import matrix
import samples
from realgdb import EXTENSION

pytestmark = pytest.mark.realkernel
HERE = Path(__file__).parent
# gdb's minimal symbol of a compiler clone may lack the number kallsyms gives it ("f.constprop" for
# "f.constprop.0"): the same function at the same offset.
_CLONE_NUMBER = re.compile(r"(\.(?:constprop|isra|part|cold))\.\d+(?=[.+])")


def same_frames(task: dict) -> bool:
    """Frame for frame the same: the same address where the kernel's name resolves to one (names differ
    where two symbols share an address: entry_SYSCALL_64+0xa6 is entry_SYSCALL_64_after_hwframe+0x6e),
    else the same name."""
    if len(task["ours"]) != len(task["kernel"]):
        return False
    for ours, kernels, pc, kernel_pc in zip(task["ours"], task["kernel"], task["ours_pcs"], task["kernel_pcs"]):
        if kernel_pc is not None and pc == kernel_pc:
            continue
        if _CLONE_NUMBER.sub(r"\1", ours) != _CLONE_NUMBER.sub(r"\1", kernels):
            return False
    return True


def compare_on_dump(dump: samples.Dump) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = ["gdb", "-nx", "-q", "-batch", str(dump.vmlinux), str(dump.path), "-ex", f"source {EXTENSION}",
               "-ex", f"python import sys; sys.path.insert(0, {str(HERE)!r}); import unwind_check; "
                      f"unwind_check.compare({str(out)!r})"]
        subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        doc = json.loads(out.read_text())
    assert "exception" not in doc, doc.get("exception")
    return doc


@matrix.over("scenario,kaslr", [(s, k) for s in samples.SCENARIOS for k in (False, True)])
def test_backtraces_equal_the_kernels_own(real_kernel: str, scenario: str, kaslr: bool) -> None:
    doc = compare_on_dump(samples.ensure_dump(scenario, kaslr, real_kernel))
    stats = os.environ.get("KDLGDB_UNWIND_STATS")  # a file to append this dump's counts to (for the README)
    if stats:
        compared = [t for t in doc["tasks"].values() if t["ours"] is not None]
        with open(stats, "a") as f:
            f.write(json.dumps({"kernel": real_kernel, "scenario": scenario, "kaslr": kaslr, "tasks": len(compared),
                                "frames": sum(len(t["kernel"]) for t in compared),
                                "agree": sum(len(t["kernel"]) for t in compared if same_frames(t))}) + "\n")
    differ = {pid: t for pid, t in doc["tasks"].items() if t["ours"] is not None and not same_frames(t)}
    assert not differ, json.dumps(differ, indent=1)
    assert not doc["errors"], doc["errors"]
    assert set(doc["methods"]) <= {"orc", ""}, doc["methods"]  # "": tasks on a CPU (their CPU's frames)
