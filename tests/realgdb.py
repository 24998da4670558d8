"""Run real gdb with the extension, and the kdlgdb command, for the real-kernel tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "gdbext" / "kdlgdb.py"


def kdlgdb(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The ``kdlgdb`` command of *this* checkout (an installed console script may point at another clone)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "kdlgdb.cli"] + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def waitfor_json(vmlinux: Path, dump: Optional[Path] = None, remote: Optional[str] = None) -> tuple[int, dict[str, Any]]:
    args = [str(vmlinux)] + ([str(dump)] if dump else []) + (["--remote", remote] if remote else []) + ["--json"]
    done = kdlgdb("waitfor", *args)
    assert done.returncode in (0, 1), f"kdlgdb failed ({done.returncode}): {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def gdb(vmlinux: Path, core: Optional[Path], *commands: str, remote: Optional[str] = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Real gdb in batch mode: load, source the extension the way a user does, run commands."""
    cmd = ["gdb", "-nx", "-q", "-batch", str(vmlinux)] + ([str(core)] if core else [])
    if remote:
        cmd += ["-ex", f"target remote {remote}"]
    cmd += ["-ex", f"source {EXTENSION}"]
    for c in commands:
        cmd += ["-ex", c]
    if remote:
        cmd += ["-ex", "detach"]
    env = dict(os.environ, TERM="dumb")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
