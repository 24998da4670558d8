"""One QEMU guest of a sample: start it (TCG, no network, gdbstub on 127.0.0.1 only), watch its serial
console, talk QMP (``dump-guest-memory``), stop it; and a guest booted until its scenario is blocked."""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from cache import QEMU, BuildError, Log, expected, kernel_paths, tail, variant_name
from catalog import GUEST_MEMORY, sample

QMP_TIMEOUT = 300.0  # one QMP command, a dump included
# Boots to try when the kernel dies before /init reached the scenario: under TCG a 2-vCPU boot
# sometimes oopses on an int3 that text patching (jump labels, static calls) left behind, seen
# about once in 300 boots of 6.12 ("Oops: int3" in sched_clock_cpu). Nothing of ours ran yet.
EARLY_BOOT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """One QEMU run: start, watch the serial console, talk QMP, stop.

    Use as a context manager; QEMU is killed on exit whatever happened.
    """

    FAILURES = ("KDL-ERROR", "KDL-NOT-BLOCKED", "Kernel panic", "kdl-error")

    def __init__(self, kernel: str, initrd: Path, kaslr: bool, console_log: Path,
                 memory: str = GUEST_MEMORY) -> None:
        self.kernel = kernel
        self.memory = memory
        self.initrd = initrd
        self.kaslr = kaslr
        self.console_log = console_log
        self.tmp = Path(tempfile.mkdtemp(prefix="kdlgdb-qemu-"))
        self.qmp_path = self.tmp / "qmp.sock"
        self.qemu_out = self.tmp / "qemu.out"
        self.gdb_port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._qmp: Optional[socket.socket] = None
        self._qmp_buf = b""

    def command(self) -> list[str]:
        # A bare "hung_task_timeout_secs=5" is no boot parameter on 6.1 (the
        # kernel hands it to /init as unknown); the sysctl. form works.
        # hung_task_warnings=-1: the detector's default of 10 reports runs out before every thread of a
        # scenario with many is reported (kdl_chain's 8 on the slower PREEMPT_RT boots).
        append = ["console=ttyS0", "panic=-1", "sysctl.kernel.hung_task_timeout_secs=5",
                  "sysctl.kernel.hung_task_warnings=-1", "printk.devkmsg=on"]
        if not self.kaslr:
            append.insert(1, "nokaslr")  # KASLR is on by default in Debian's kernels
        return [
            QEMU, "-accel", "tcg", "-m", self.memory, "-smp", "2",
            "-kernel", str(kernel_paths(self.kernel)["vmlinuz"]),
            "-initrd", str(self.initrd),
            "-append", " ".join(append),
            "-display", "none", "-nic", "none", "-no-reboot",
            "-serial", f"file:{self.console_log}",
            "-device", "vmcoreinfo",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-gdb", f"tcp:127.0.0.1:{self.gdb_port}",
        ]

    def start(self) -> "Guest":
        """Start QEMU and connect to its QMP socket (retrying if the gdb port was taken)."""
        for attempt in range(3):
            self.gdb_port = free_port()
            self.console_log.unlink(missing_ok=True)
            with open(self.qemu_out, "wb") as out:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT)
            try:
                self._connect_qmp(timeout=30.0)
                return self
            except BuildError:
                if self.proc.poll() is not None and "bind" in self._qemu_output() and attempt < 2:
                    continue
                raise
        raise AssertionError("unreachable")

    def _qemu_output(self) -> str:
        try:
            return self.qemu_out.read_text(errors="replace")
        except OSError:
            return ""

    def console(self) -> str:
        """Everything the guest wrote to its serial console so far."""
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def failure(self, what: str) -> BuildError:
        """An error that says ``what`` failed and shows the console and QEMU output."""
        qemu = self._qemu_output().strip()
        status = "running" if self.proc and self.proc.poll() is None else \
            f"exited with {self.proc.returncode if self.proc else '?'}"
        return BuildError(
            f"{what} (kernel {self.kernel}, {variant_name(self.kaslr)}, QEMU {status})\n"
            f"--- console tail ({self.console_log}) ---\n{tail(self.console())}\n"
            + (f"--- QEMU output ---\n{tail(qemu, 20)}\n" if qemu else "")
            + f"--- command ---\n{' '.join(self.command())}")

    def wait_until(self, done: Callable[[str], bool], what: str, timeout: float,
                   required: bool = True) -> bool:
        """Poll the console until ``done(text)``; fail early on guest errors and panics.

        Returns False on timeout when ``required`` is False, raises otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.console()
            for bad in self.FAILURES:
                if bad in text:
                    raise self.failure(f"guest reported {bad!r} while waiting for {what}")
            if done(text):
                return True
            if self.proc is None or self.proc.poll() is not None:
                raise self.failure(f"QEMU ended while waiting for {what}")
            if time.monotonic() > deadline:
                if required:
                    raise self.failure(f"no {what} on the console after {timeout:.0f} s")
                return False
            time.sleep(0.2)

    def settle(self, quiet: float = 1.0, timeout: float = 6.0) -> None:
        """Wait until the console has been quiet for ``quiet`` seconds (at most ``timeout``): a report's
        first line can come well before the rest of it (the PREEMPT_RT kernel prints late)."""
        deadline, last, since = time.monotonic() + timeout, self.console(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.2)
            text = self.console()
            if text != last:
                last, since = text, time.monotonic()

    def died_before_init(self) -> bool:
        """Whether the kernel panicked before /init printed its first line (``kdl-info text``)."""
        text = self.console()
        return "Kernel panic" in text and "kdl-info text" not in text

    def wait_for(self, needle: str, timeout: float, required: bool = True) -> bool:
        """Wait until the console shows ``needle`` (see :meth:`wait_until`)."""
        return self.wait_until(lambda text: needle in text, repr(needle), timeout, required)

    def _connect_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise self.failure("QEMU exited before its QMP socket was ready")
            if self.qmp_path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self.qmp_path))
                    break
                except OSError:
                    sock.close()
            if time.monotonic() > deadline:
                raise self.failure(f"QMP socket {self.qmp_path} not ready after {timeout:.0f} s")
            time.sleep(0.1)
        sock.settimeout(QMP_TIMEOUT)
        self._qmp = sock
        greeting = self._qmp_read()
        if "QMP" not in greeting:
            raise self.failure(f"unexpected QMP greeting {greeting!r}")
        self.qmp("qmp_capabilities")

    def _qmp_read(self) -> dict[str, Any]:
        assert self._qmp is not None
        while b"\n" not in self._qmp_buf:
            try:
                chunk = self._qmp.recv(65536)
            except socket.timeout as exc:
                raise self.failure(f"no QMP answer within {QMP_TIMEOUT:.0f} s") from exc
            if not chunk:
                raise self.failure("QMP connection closed")
            self._qmp_buf += chunk
        line, self._qmp_buf = self._qmp_buf.split(b"\n", 1)
        return json.loads(line)

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value (events are skipped)."""
        if self._qmp is None:
            raise self.failure("QMP is not connected")
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qmp.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._qmp_read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise self.failure(f"QMP {command} failed: {reply['error']}")
            # anything else is an asynchronous event (STOP, RESUME, DUMP_COMPLETED, ...)

    def dump(self, path: Path, paging: bool = True, fmt: str = "elf") -> float:
        """``dump-guest-memory`` to ``path`` (``fmt`` "elf" or "kdump-zlib"); returns the seconds it took."""
        t0 = time.monotonic()
        path.unlink(missing_ok=True)
        self.qmp("dump-guest-memory", paging=paging, protocol=f"file:{path}", format=fmt)
        magic = b"\x7fELF" if fmt == "elf" else b"makedumpfile"
        if _magic(path, len(magic)) != magic:
            raise self.failure(f"dump-guest-memory did not write a {fmt} file at {path}")
        return time.monotonic() - t0

    def stop(self) -> None:
        """Quit QEMU (QMP ``quit``, then kill) and remove the temporary directory."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                if self._qmp is not None:
                    self._qmp.settimeout(5)
                    self._qmp.sendall(b'{"execute": "quit"}\n')
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "Guest":
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _magic(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


# --------------------------------------------------------------------------


@contextlib.contextmanager
def blocked_guest(scenario: str, kaslr: bool, kernel: str, initrd: Path, console_log: Path,
                  log: Log) -> Iterator[Guest]:
    """A guest of ``scenario`` booted until ``KDL-BLOCKED`` (and its ``ready_marker``, for the modules whose
    threads spin); booted again (up to EARLY_BOOT_ATTEMPTS
    times) when the kernel died before /init ran. QEMU is stopped on exit."""
    for attempt in range(1, EARLY_BOOT_ATTEMPTS + 1):
        with Guest(kernel, initrd, kaslr, console_log, sample(scenario).memory) as guest:
            try:
                guest.wait_for("KDL-BLOCKED", sample(scenario).boot_timeout)
                # A module whose threads lock up their CPUs prints a marker (from a timer: softirqs still
                # run) once they spin; /init's KDL-BLOCKED came before.
                marker = expected(scenario, kernel).get("ready_marker")
                if marker:
                    guest.wait_for(marker, sample(scenario).boot_timeout)
            except BuildError:
                if attempt < EARLY_BOOT_ATTEMPTS and guest.died_before_init():
                    log(f"{scenario} {variant_name(kaslr)} on {kernel}: the kernel panicked before /init "
                        f"(console: {tail(guest.console(), 1).strip()}); booting again")
                    continue
                raise
            yield guest
            return
