"""The crash target: the kernel that the ``crash`` utility has open.

crash's embedded gdb has no Python, so kdlgdb runs in a Python process of its own,
started by the crash extension (``crashext/kdlgdb.c``), and asks crash for what it
reads over a socket. This module is that protocol's one description and its
Python end.

Each message, either way, is a frame: ``VERB LENGTH\\n`` and LENGTH bytes.

crash to Python::

    run    a command: NUL-separated COMMAND, COLOR, DEBUG, LIVE ("0" or "1"), then its words
    ok     an answer (the payload)
    none   no such symbol, type, member or VMCOREINFO key
    err    a read failed (the payload says why)

Python to crash, each answered by ok, none or err::

    read         "ADDRESS SIZE" (hex, decimal)   ok: SIZE bytes, or err
    symbol       NAME                            ok: hex address (relocated by crash: see below)
    symbol_size  NAME                            ok: decimal size of the symbol's type
    type_size    TYPE ("struct mutex")           ok: decimal
    member       "TYPE<TAB>PATH" ("thread.sp")   ok: "OFFSET SIZE"; err if a step has an unnamed type
    gdb          a gdb command                   ok: what crash's gdb printed
    vmcoreinfo   KEY                             ok: the value
    describe                                     ok: "FORMAT<TAB>DUMPFILE<TAB>VMLINUX<TAB>crash VERSION"

and, not answered: ``progress`` (a line for crash's terminal), then one of
``done`` (the command is over; the payload is its output, which crash prints where
its pipes and redirections say) and ``error`` (the command failed; one line, which
crash prints after the command's name).

crash relocates the vmlinux's symbols for KASLR itself, so the addresses this target
gives are the kernel's runtime ones; :class:`kdlgdb.kernel.layout.Kernel` notices
(its slide is 0) and reports the offset from VMCOREINFO, as with gdb's
``symbol-file -o``.
"""
from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Mapping

from ..errors import KdlError, ReadError
from .base import Target, TargetKind
from .cpustate import dump_cpu_registers

__all__ = ["Channel", "CrashTarget", "crash_socket"]

MAX_HEADER = 64
_INFO_SYMBOL = re.compile(r"^(\S+)(?: \+ (\d+))? in section (\S+)")
_INFO_LINE = re.compile(r'^Line (\d+) of "(.+?)"')


def crash_socket(fd: int) -> socket.socket:
    """The socket the crash extension gave this process as file descriptor ``fd``."""
    return socket.socket(fileno=fd)


class Channel:
    """Frames over a socket (``VERB LENGTH\\n`` and LENGTH bytes)."""

    def __init__(self, sock: socket.socket) -> None:
        self._stream = sock.makefile("rwb")

    def send(self, verb: str, payload: bytes | str = b"") -> None:
        data = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
        self._stream.write(f"{verb} {len(data)}\n".encode("ascii") + data)
        self._stream.flush()

    def receive(self) -> tuple[str, bytes]:
        """The next frame; EOFError when crash has gone (or sent something that is not a frame)."""
        header = self._stream.readline(MAX_HEADER)
        parts = header.split()
        if not header.endswith(b"\n") or len(parts) != 2 or not parts[1].isdigit():
            raise EOFError("the crash extension closed the connection")
        length = int(parts[1])
        payload = self._stream.read(length)
        if len(payload) != length:
            raise EOFError("the crash extension closed the connection")
        return parts[0].decode("ascii", "replace"), payload

    def ask(self, verb: str, request: str = "") -> tuple[str, bytes]:
        self.send(verb, request)
        return self.receive()


class CrashTarget(Target):
    """The kernel crash has open (a dump in any format crash reads, or a live system)."""

    def __init__(self, channel: Channel, live: bool = False) -> None:
        self.channel = channel
        self.kind = TargetKind.LIVE if live else TargetKind.DUMP
        self._described: list[str] | None = None

    def _answer(self, verb: str, request: str = "") -> bytes | None:
        answer, payload = self.channel.ask(verb, request)
        if answer == "ok":
            return payload
        if answer == "none":
            return None
        raise KdlError(f"crash could not answer '{verb} {request}': {payload.decode('utf-8', 'replace')}")

    def _number(self, verb: str, request: str, base: int = 10) -> int | None:
        payload = self._answer(verb, request)
        return int(payload, base) if payload is not None else None

    def _gdb(self, command: str) -> str:
        return (self._answer("gdb", command) or b"").decode("utf-8", "replace").strip()

    def read(self, address: int, size: int) -> bytes:
        answer, payload = self.channel.ask("read", f"{address:x} {size}")
        if answer == "ok" and len(payload) == size:
            return payload
        raise ReadError(address, size, payload.decode("utf-8", "replace") if answer == "err" else "bad answer")

    def symbol(self, name: str) -> int | None:
        return self._number("symbol", name, 16)

    def symbol_size(self, name: str) -> int | None:
        return self._number("symbol_size", name)

    def type_size(self, type_name: str) -> int | None:
        return self._number("type_size", type_name)

    def member(self, type_name: str, path: str) -> tuple[int, int] | None:
        answer, payload = self.channel.ask("member", f"{type_name}\t{path}")
        if answer == "ok":
            offset, size = payload.split()
            return int(offset), int(size)
        if answer == "none":
            return None
        # A step through a type without a name: gdb evaluates the C expression.
        where = self._gdb(f"output/d (unsigned long)&(({type_name} *)0)->{path}")
        length = self._gdb(f"output/d sizeof((({type_name} *)0)->{path})")
        if not (where.isdigit() and length.isdigit()):
            return None
        return int(where), int(length)

    def member_type(self, type_name: str, path: str) -> str | None:
        m = re.match(r"type = (.+)$", self._gdb(f"whatis (({type_name} *)0)->{path}"))
        return m.group(1).strip() if m else None

    def member_bits(self, type_name: str, path: str) -> tuple[int, int] | None:
        # crash's gdb prints bit-fields in `ptype/o` as "/* byte: bit | size */ type name : bits;"
        # (only a small type is asked: ptype/o of a big one takes seconds).
        head, _, name = path.rpartition(".")
        outer = self.member(type_name, head) if head else (0, 0)
        owner = self.member_type(type_name, head) if head else type_name
        if outer is None or owner is None:
            return None
        for line in self._gdb(f"ptype/o {owner}").splitlines():
            m = re.match(rf"/\*\s*(\d+)(?::\s*(\d+))?\s*\|\s*\d+\s*\*/\s.*\b{re.escape(name)}(?:\s*:\s*(\d+))?;$",
                         line.strip())
            if m:
                return outer[0] * 8 + int(m.group(1)) * 8 + int(m.group(2) or 0), int(m.group(3) or 0)
        return None

    def symbolize(self, address: int) -> tuple[str, int] | None:
        m = _INFO_SYMBOL.match(self._gdb(f"info symbol {address:#x}"))
        return (m.group(1), int(m.group(2) or 0)) if m else None

    def source_line(self, address: int) -> tuple[str, int] | None:
        # The call's own line: the one of the byte before the return address.
        m = _INFO_LINE.match(self._gdb(f"info line *{address - 1:#x}"))
        return (m.group(2), int(m.group(1))) if m else None

    def vmcoreinfo(self) -> Mapping[str, str] | None:
        info = CrashVmcoreinfo(self)
        return info if "OSRELEASE" in info else None

    def cpu_registers(self) -> list[dict[str, int]] | None:
        """The per-CPU notes of the dump file crash opened (read from the file: crash's own
        per-CPU register data has no extension interface); None on a live system."""
        dump = self.described()[1]
        return dump_cpu_registers(dump) if self.kind is TargetKind.DUMP and dump else None

    def describe(self) -> str:
        fmt, dump, _, _ = self.described()
        return " ".join(filter(None, (fmt, dump))) + " (read by crash)"

    def described(self) -> list[str]:
        """[format, dump file, vmlinux, "crash VERSION"] as crash tells them."""
        if self._described is None:
            fields = (self._answer("describe") or b"").decode("utf-8", "replace").split("\t")
            self._described = (fields + [""] * 4)[:4]
        return self._described


class CrashVmcoreinfo(Mapping[str, str]):
    """The dump's VMCOREINFO as crash reads it, key by key.

    crash looks keys up one at a time and has no list of them: iterating gives
    the keys looked up so far.
    """

    def __init__(self, target: CrashTarget) -> None:
        self._target = target
        self._values: dict[str, str | None] = {}

    def __getitem__(self, key: str) -> str:
        if key not in self._values:
            value = self._target._answer("vmcoreinfo", key)
            self._values[key] = value.decode("utf-8", "replace").strip() if value is not None else None
        found = self._values[key]
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, v in self._values.items() if v is not None])

    def __len__(self) -> int:
        return sum(v is not None for v in self._values.values())

    def __bool__(self) -> bool:
        return True
