"""Running gdb in batch mode with the extension: what ``kdlgdb waitfor``, ``report``
and ``triage`` share.

gdb loads the vmlinux and the dump (or connects to a gdbstub), calls one function of
``kdlgdb.frontends.gdb`` that writes its result to a file and its error line to
``FILE.err``, and quits with a status. What gdb itself prints while loading is
captured and shown only when gdb fails before kdlgdb runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Optional

from .errors import KdlError
from .target.dumpfile import dump_format

__all__ = ["gdb_env", "run_batch", "FRONT_END", "BATCH", "BATCH_BUNDLE", "BATCH_OPEN", "REGISTER", "ENTRY_POINTS"]

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The entry points of the gdb front end a batch gdb calls, by name (it cannot import them here: they need
# gdb's own Python). tests/test_layers.py checks that each exists in FRONT_END with these parameters.
FRONT_END = "kdlgdb.frontends.gdb"
REGISTER = "register"  # () -> None: the kd-* commands
BATCH = "batch"  # (command, argv, out, record=None): one kd-* command's output to the file ``out``
BATCH_BUNDLE = "batch_bundle"  # (out): the post-mortem bundle to the file ``out``
BATCH_OPEN = "batch_open"  # (path, out) -> bool: kd-open a dump gdb cannot read
ENTRY_POINTS = {REGISTER: (), BATCH: ("command", "argv", "out", "record"), BATCH_BUNDLE: ("out",),
                BATCH_OPEN: ("path", "out")}


def gdb_env() -> dict[str, str]:
    """The environment for a batch gdb: its progress goes to our terminal when stderr is one
    (we capture gdb's stderr, so gdb writes to /dev/tty; see frontends/gdb.py)."""
    env = dict(os.environ)
    if sys.stderr.isatty():
        env["KDLGDB_PROGRESS"] = "tty"
    return env


def run_batch(vmlinux: str, dump: Optional[str], remote: Optional[str], function: str, kwargs: dict[str, Any],
              timeout: Optional[float] = None) -> tuple[str, int]:
    """(what ``frontends.gdb.FUNCTION(**kwargs, out=FILE)`` wrote, gdb's exit status); ``function`` is one of
    :data:`ENTRY_POINTS`.

    KdlError (one line) when gdb is missing, times out, or kdlgdb or gdb failed.
    """
    if function not in ENTRY_POINTS:
        raise ValueError(f"{function} is no entry point of {FRONT_END}")
    gdb = os.environ.get("KDLGDB_GDB", "gdb")
    if shutil.which(gdb) is None:
        raise KdlError("gdb is not installed (apt-get install gdb)")
    core = dump
    if dump is not None and not dump_format(dump).gdb_reads:
        core = None  # gdb cannot read it right: kdlgdb does, kd_open() below
    if not os.path.isfile(vmlinux):
        raise KdlError(f"no such file: {vmlinux}")
    with tempfile.TemporaryDirectory(prefix="kdlgdb-") as tmp:
        out = os.path.join(tmp, "out")
        call = f"f.{function}(out={out!r}, **{kwargs!r})"
        if dump is not None and core is None:
            call = f"f.{BATCH_OPEN}({dump!r}, {out!r}) and {call}"
        script = f"import sys; sys.path.insert(0, {SRC!r}); import {FRONT_END} as f; f.{REGISTER}(); {call}"
        cmd = [gdb, "-nx", "-q", "-batch", vmlinux] + ([core] if core else [])
        cmd += (["-ex", f"target remote {remote}"] if remote else []) + ["-ex", f"python {script}"]
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                  env=gdb_env())
        except subprocess.TimeoutExpired:
            raise KdlError(f"gdb took more than {timeout:.0f}s on {dump or remote}") from None
        if os.path.exists(out + ".err"):
            if os.environ.get("KDLGDB_DEBUG"):
                sys.stderr.write(done.stderr)  # kd-debug's traceback
            with open(out + ".err") as f:
                raise KdlError((f.read().strip().splitlines() or ["failed"])[0])
        if not os.path.exists(out):
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise KdlError(f"gdb failed: {tail[0]}")
        with open(out) as f:
            return f.read(), done.returncode
