"""Run real gdb with the extension, and the kdlgdb command, for the real-kernel tests.

``gdb()`` starts a gdb for its commands, as a user would; ``shared_gdb()`` runs them in a gdb
kept open for that vmlinux and dump (one per test process, at most ``MAX_SHARED`` at once), and
returns what the same ``gdb()`` call returns, start-up messages included.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "gdbext" / "kdlgdb.py"
HERE = Path(__file__).resolve().parent


def kdlgdb(*args: str, timeout: int = 300, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """The ``kdlgdb`` command of *this* checkout (an installed console script may point at another clone); ``env``
    adds to the environment."""
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
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


# -- one gdb per dump, many tests --------------------------------------------------------------------

#: Shared gdbs kept open in one test process (each holds ~450 MB); the least recently used one goes first.
MAX_SHARED = int(os.environ.get("KDLGDB_TEST_GDBS", "4"))
#: Commands that change what gdb has loaded: a test that needs them starts its own gdb (``gdb()``).
#: (``kd-open`` is allowed in a gdb started without a core file: the next request starts without it.)
_LOADERS = ("file", "core-file", "core", "symbol-file", "add-symbol-file", "exec-file", "target", "attach",
            "detach", "disconnect", "kill", "run", "start", "source", "quit", "q", "shell", "!", "pipe", "|")


class SharedGdb:
    """One ``gdb -batch VMLINUX [CORE] -ex 'source gdbext/kdlgdb.py'`` running tests/gdb_serve.py's loop."""

    def __init__(self, vmlinux: Path, core: Optional[Path], timeout: float = 300) -> None:
        self.key = (str(vmlinux), str(core) if core else None)
        read_end, self._write_end = os.pipe()
        os.set_inheritable(read_end, True)
        ready = f"@@kdlgdb-ready-{uuid.uuid4().hex}@@"
        serve = (f"python import sys; sys.path.insert(0, {str(HERE)!r}); import gdb_serve; "
                 f"gdb_serve.serve({read_end}, {ready!r}, {core is not None})")
        cmd = ["gdb", "-nx", "-q", "-batch", str(vmlinux)] + ([str(core)] if core else [])
        cmd += ["-ex", f"source {EXTENSION}", "-ex", serve]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=(read_end,), env=dict(os.environ, TERM="dumb"))
        os.close(read_end)
        self._buffers = {"stdout": b"", "stderr": b""}
        # What gdb prints loading the files and the extension: the start of every answer, as in a fresh gdb.
        self.startup_out, self.startup_err, _ = self._read_until(ready, timeout)
        self.args = cmd[:-2]

    def _read_until(self, mark: str, timeout: float) -> tuple[str, str, str]:
        """Read both streams until ``mark`` is on each; (stdout before it, stderr before it, the rest of
        stdout's marker line)."""
        token = mark.encode()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            assert self.proc.stdout is not None and self.proc.stderr is not None
            sel.register(self.proc.stdout, selectors.EVENT_READ, "stdout")
            sel.register(self.proc.stderr, selectors.EVENT_READ, "stderr")
            while not all(b"\n" in buffer.partition(token)[2] for buffer in self._buffers.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise subprocess.TimeoutExpired(self.args, timeout, self._buffers["stdout"], self._buffers["stderr"])
                events = sel.select(left)
                for key, _ in events:
                    chunk = os.read(key.fileobj.fileno(), 1 << 16)  # type: ignore[union-attr]
                    if not chunk:
                        self.close()
                        raise GdbDied(self, mark)
                    self._buffers[key.data] += chunk
        out, _, rest = self._buffers["stdout"].partition(token)
        line, _, self._buffers["stdout"] = rest.partition(b"\n")
        err, _, after = self._buffers["stderr"].partition(token)
        self._buffers["stderr"] = after.partition(b"\n")[2]
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), line.decode()

    def run(self, commands: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess:
        mark = f"@@kdlgdb-end-{uuid.uuid4().hex}@@"
        try:
            os.write(self._write_end, (json.dumps({"mark": mark, "commands": list(commands)}) + "\n").encode())
            out, err, status = self._read_until(mark, timeout)
        except BaseException:  # Ctrl-C, a timeout, gdb gone: never read the rest of this answer as the next one's
            self.close()
            raise
        args = self.args + [part for c in commands for part in ("-ex", c)]
        return subprocess.CompletedProcess(args, int(status), self.startup_out + out, self.startup_err + err)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            os.close(self._write_end)  # gdb_serve's loop ends, gdb quits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class GdbDied(AssertionError):
    def __init__(self, session: SharedGdb, mark: str) -> None:
        super().__init__(f"the shared gdb for {session.key} ended (status {session.proc.returncode}) before {mark}; "
                         f"its output:\n{session._buffers['stdout'][-3000:].decode(errors='replace')}"
                         f"\n{session._buffers['stderr'][-3000:].decode(errors='replace')}")


_shared: OrderedDict[tuple[str, Optional[str]], SharedGdb] = OrderedDict()


def shared_gdb(vmlinux: Path, core: Optional[Path], *commands: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """What ``gdb(vmlinux, core, *commands)`` returns (stdout, stderr, gdb's exit status), from a gdb kept
    open for (vmlinux, core): kdlgdb's caches and settings are reset first, so no test sees another's state.

    Not for commands that load other files or connect (``_LOADERS``; ``kd-open`` only without a core):
    those tests start their own gdb.
    """
    for c in commands:
        word = c.split()[0] if c.split() else ""
        if word in _LOADERS or (word == "kd-open" and core is not None):
            raise ValueError(f"{c!r} changes what gdb has loaded: use gdb() for this test")
    key = (str(vmlinux), str(core) if core else None)
    session = _shared.pop(key, None)
    if session is None or not session.alive():
        while len(_shared) >= MAX_SHARED:
            _shared.popitem(last=False)[1].close()
        session = SharedGdb(vmlinux, core, timeout)
    _shared[key] = session  # the most recently used, last
    return session.run(commands, timeout)


def close_shared() -> None:
    """End every shared gdb (at the end of the test session)."""
    while _shared:
        _shared.popitem()[1].close()


def kd_waitfor_json(vmlinux: Path, dump: Path) -> tuple[int, dict[str, Any]]:
    """``kd-open DUMP`` then ``kd-waitfor --json`` in the shared gdb of ``vmlinux`` alone (one gdb for every
    dump of a kernel): gdb reads a paging ELF itself (kd-open loads it as gdb's core file), kdlgdb reads
    any other form, as ``kdlgdb waitfor`` reads them; and the status that command would exit with
    (0 no cycle, 1 a cycle). ``waitfor_json`` runs the command itself."""
    mark = "echo @@kdlgdb-json@@\\n"
    status = "python from kdlgdb.frontends import commands, gdb as f; print('@@status', commands.verdict_status(f.snapshot()))"
    done = shared_gdb(vmlinux, None, f"kd-open {dump}", mark, "kd-waitfor --json", mark, status)
    errors = [line for line in done.stderr.splitlines() if line.startswith(("kd-", "Traceback", "Python Exception"))]
    assert not errors and done.returncode == 0, f"kd-waitfor failed: {done.stderr}"
    _, text, rest = done.stdout.split("@@kdlgdb-json@@\n")
    (line,) = [line for line in rest.splitlines() if line.startswith("@@status ")]
    return int(line.split()[1]), json.loads(text)
