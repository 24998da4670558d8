"""A fake GDB remote stub that goes wrong on purpose, for the fuzzing tier's gdbstub cases.

It speaks enough of the GDB remote serial protocol for ``target remote`` and an analysis
(``?``, ``g``, ``m``, ``qSupported``, thread queries, ``D``), serves kernel memory from a real dump
(``read(address, size)``: a DumpFile's kernel virtual memory), and after ``good`` memory reads
misbehaves in one of the ``FAULTS``:

- ``error``: every later ``m`` is answered ``E01``;
- ``short``: later ``m`` answers carry fewer bytes than asked for;
- ``garbage``: later ``m`` answers are not hex;
- ``drop``: the connection is closed;
- ``silence``: no more answers (gdb's ``remotetimeout`` ends it).
"""
from __future__ import annotations

import contextlib
import random
import socket
import threading
from typing import Callable, Optional

__all__ = ["FakeStub", "FAULTS"]

FAULTS = ("error", "short", "garbage", "drop", "silence")


def _frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + f"{sum(payload) & 0xFF:02x}".encode()


class FakeStub:
    """One connection's stub on 127.0.0.1 (``port``), served by a thread until it is closed."""

    def __init__(self, read: Callable[[int, int], bytes], fault: str, good: int, rng: random.Random) -> None:
        self._read = read
        self.fault = fault
        self.good = good
        self._rng = rng
        self.reads = 0
        self.error: Optional[str] = None  # an exception of the stub itself (a bug in the test, not in kdlgdb)
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(5)

    def __enter__(self) -> "FakeStub":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the protocol ------------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            self._server.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    conn, _ = self._server.accept()
                except socket.timeout:
                    continue
                with conn:
                    self._talk(conn)
                return
        except OSError:
            return
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = f"{type(e).__name__}: {e}"

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            buf += chunk
            while True:
                buf = buf.lstrip(b"+-\x03")
                start, end = buf.find(b"$"), buf.find(b"#")
                if start < 0 or end < 0 or len(buf) < end + 3:
                    break
                packet, buf = buf[start + 1 : end], buf[end + 3 :]
                conn.sendall(b"+")
                reply = self._answer(packet.decode("latin-1"))
                if reply is None:
                    return  # drop the connection
                if reply is not _SILENT:
                    conn.sendall(_frame(reply))

    def _answer(self, packet: str) -> Optional[bytes]:
        if packet.startswith("qSupported"):
            return b"PacketSize=4000"
        if packet == "?":
            return b"S05"
        if packet == "g":
            return b"00" * 164  # rax..r15, rip (8 bytes each), eflags and 6 segments (4 each)
        if packet.startswith("m"):
            return self._memory(packet)
        if packet in ("qfThreadInfo",):
            return b"m1"
        if packet in ("qsThreadInfo",):
            return b"l"
        if packet == "qC":
            return b"QC1"
        if packet == "qAttached":
            return b"1"
        if packet.startswith("H") or packet.startswith("T") or packet == "D" or packet.startswith("D;"):
            return b"OK"
        if packet.startswith("p"):
            return b"0000000000000000"
        if packet == "k":
            return None
        return b""  # not supported

    def _memory(self, packet: str) -> Optional[bytes]:
        try:
            address_text, size_text = packet[1:].split(",")
            address, size = int(address_text, 16), int(size_text, 16)
        except ValueError:
            return b"E02"
        self.reads += 1
        if self.reads > self.good:
            if self.fault == "drop":
                return None
            if self.fault == "silence":
                return _SILENT
            if self.fault == "error":
                return b"E01"
        try:
            data = self._read(address, size)
        except Exception:  # noqa: BLE001 (unreadable memory: what a real stub says)
            return b"E14"
        if self.reads > self.good:
            if self.fault == "short":
                return data[: self._rng.randrange(max(1, len(data)))].hex().encode()
            if self.fault == "garbage":
                return bytes(self._rng.choice(b"xyz#$}*0123456789") for _ in range(2 * len(data) or 1))
        return data.hex().encode()


_SILENT = b"<silent>"
