"""Run real crash with this checkout's kdlgdb extension, for the crash tests."""
from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CRASHEXT = ROOT / "crashext"
EXTENSION = CRASHEXT / "kdlgdb.so"


def build_extension() -> Path:
    """``make`` the extension (as setup.sh does); the .so of this checkout."""
    if shutil.which("crash") is None:
        raise AssertionError("crash is not installed: run the README's set-up command (./setup.sh)")
    done = subprocess.run(["make", "-s", "-C", str(CRASHEXT)], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"building the crash extension failed:\n{done.stdout}{done.stderr}"
    return EXTENSION


def crash_command(vmlinux: Path, dump: Path, *options: str) -> list[str]:
    return ["crash", "-s", "--no_crashrc", "--no_scroll", *options, str(vmlinux), str(dump)]


def crash(vmlinux: Path, dump: Path, *commands: str, options: tuple[str, ...] = (), env: dict[str, str] | None = None,
          timeout: int = 300) -> subprocess.CompletedProcess:
    """Real crash, non-interactive (``-i CMDFILE``): load the extension the way a user does, run commands, quit."""
    with tempfile.NamedTemporaryFile("w", prefix="kdlgdb-crash-", suffix=".cmd") as script:
        script.write("\n".join([f"extend {EXTENSION}", *commands, "quit"]) + "\n")
        script.flush()
        return subprocess.run(crash_command(vmlinux, dump, *options) + ["-i", script.name], check=False,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, **(env or {})))


def outputs(vmlinux: Path, dump: Path, *commands: str, options: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> tuple[list[str], subprocess.CompletedProcess]:
    """What each command printed (crash redirects each into its own file), and the crash run itself."""
    with tempfile.TemporaryDirectory(prefix="kdlgdb-crash-") as tmp:
        files = [Path(tmp) / f"out{i}" for i in range(len(commands))]
        done = crash(vmlinux, dump, *(f"{c} > {f}" for c, f in zip(commands, files)), options=options, env=env)
        return [f.read_text() if f.exists() else "" for f in files], done


class Interactive:
    """crash on a terminal (a pty), as a user runs it: type lines, press Ctrl-C, read the screen."""

    PROMPT = "crash> "

    def __init__(self, vmlinux: Path, dump: Path, env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: crash, with the pty as its controlling terminal
            os.execvpe("crash", crash_command(vmlinux, dump), dict(os.environ, TERM="dumb", **(env or {})))
        self.screen = ""

    def expect(self, text: str, timeout: float = 120) -> str:
        """Read until ``text`` appears after what was read before; what came up to and with it."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no {text!r} from crash within {timeout}s; last output:\n{self.screen[-3000:]}")
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # crash has gone: the pty is closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"crash ended before {text!r}; last output:\n{self.screen[-3000:]}")
            self.screen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        end = self.screen.index(text) + len(text)
        seen, self.screen = self.screen[:end], self.screen[end:]
        return seen

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def interrupt(self) -> None:
        """Ctrl-C, as the terminal sends it: SIGINT to crash's foreground process group."""
        os.write(self.fd, b"\x03")

    def children(self) -> list[int]:
        """Pids of crash's child processes."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.pid and fields[0] != "Z":
                    found.append(int(entry.name))
        return found

    def close(self) -> None:
        try:
            self.type("quit")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                time.sleep(0.1)
        except (OSError, ChildProcessError):
            pass
        finally:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except (OSError, ChildProcessError):
                pass
            os.close(self.fd)


def cannot_open(dump: Any) -> tuple[str, bool]:
    """Why crash does not get to its prompt on ``dump`` (a samples.Dump), or '' when it does; and whether
    crash stopped before it loaded the extension (its own refusal, nothing of kdlgdb's)."""
    done = crash(dump.vmlinux, dump.path, "kd-set")
    if "color auto" in done.stdout:
        return "", False
    version = subprocess.run(["crash", "--version"], capture_output=True, text=True, check=False).stdout.split()
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("crash:")]
    return (f"{' '.join(version[:2])} cannot open {dump.kernel} dumps: "
            f"{said[0] if said else f'it exits with status {done.returncode}'}"), "shared object loaded" not in done.stdout
