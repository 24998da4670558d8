"""The Python end of the crash extension on recordings of real dumps, without crash.

A thread plays crash's part of the protocol (``kdlgdb.target.crash``), answering from a
recording of a real dump; the real crash runs in test_crash.py. This tier is fast and
pins down the Python side: frames, answers, one-line errors, help.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from kdlgdb.errors import ReadError
from kdlgdb.frontends import commands
from kdlgdb.frontends.crash import Session
from kdlgdb.kernel.collect import collect
from kdlgdb.target.crash import Channel
from kdlgdb.target.replay import ReplayTarget

RECORDINGS = Path(__file__).parent / "vmcore_samples" / "recordings" / "6.1.0-56-cloud-amd64"


def answer(target: ReplayTarget, verb: str, request: str) -> tuple[str, bytes]:
    """What the extension answers, here from the recording (the C code asks crash)."""
    def number(value: int | None, fmt: str = "{}") -> tuple[str, bytes]:
        return ("none", b"") if value is None else ("ok", fmt.format(value).encode())

    if verb == "read":
        address, size = request.split()
        try:
            return "ok", target.read(int(address, 16), int(size))
        except ReadError:
            return "err", b"not readable in crash"
    if verb == "symbol":
        return number(target.symbol(request), "{:x}")
    if verb in ("symbol_size", "type_size"):
        return number(getattr(target, verb)(request))
    if verb == "member":
        found = target.member(*request.split("\t"))
        return ("none", b"") if found is None else ("ok", f"{found[0]} {found[1]}".encode())
    if verb == "gdb" and request.startswith("info symbol "):
        name = target.symbolize(int(request.split()[-1], 16))
        return "ok", (f"{name[0]} + {name[1]} in section .text\n" if name else "No symbol matches.\n").encode()
    if verb == "gdb" and request.startswith("info line *"):
        line = target.source_line(int(request.split("*")[1], 16) + 1)
        return "ok", (f'Line {line[1]} of "{line[0]}" starts at address\n' if line else "No line number\n").encode()
    if verb == "gdb" and request.startswith("ptype/o "):
        # crash's gdb prints a bit-field as "/* byte: bit | size */ type name : bits;": made from the bit-fields the
        # recording holds for that type (struct orc_entry's, asked by the ORC format detection).
        owner, lines = request[len("ptype/o "):], []
        for key, found in target._answers.items():
            if key.startswith(f"member_bits {owner} ") and found:
                bit, bits = found
                lines.append(f"/* {bit // 8}: {bit % 8} | 2 */ unsigned int {key.rsplit(' ', 1)[1]} : {bits};")
        return "ok", ("\n".join(lines) + "\n").encode()
    if verb == "vmcoreinfo":
        value = (target.vmcoreinfo() or {}).get(request)
        return ("none", b"") if value is None else ("ok", value.encode())
    if verb == "describe":
        return "ok", b"ELF vmcore\t/dumps/vmcore\t/vmlinux\tcrash 8.0.2"
    return "err", b"unknown request"


class WithoutFrames(ReplayTarget):
    """The recording as crash serves it: crash has no DWARF unwinder for kdlgdb (``frame_variables`` is None)."""

    def frame_variables(self, pcs, registers, names):  # type: ignore[no-untyped-def]
        return None


def run(recording: Path, *command_lines: list[str], debug: bool = False) -> list[tuple[str, str]]:
    """(final verb, payload) of each command, run by a Session as crash would run it."""
    target = ReplayTarget(str(recording))
    ours, theirs = socket.socketpair()
    session = threading.Thread(target=Session(Channel(theirs)).serve, daemon=True)
    session.start()
    crash = Channel(ours)
    results = []
    for words in command_lines:
        crash.send("run", "\0".join([words[0], "0", "1" if debug else "0", "0", *words[1:]]))
        while True:
            verb, payload = crash.receive()
            if verb in ("done", "error"):
                results.append((verb, payload.decode()))
                break
            if verb != "progress":
                crash.send(*answer(target, verb, payload.decode()))
    ours.shutdown(socket.SHUT_RDWR)  # crash has gone: the session ends
    session.join(timeout=10)
    assert not session.is_alive()
    return results


@pytest.mark.parametrize("name", ["kdl_abba-kaslr", "kdl_rwsem-nokaslr"])
def test_session_prints_what_the_commands_print(name: str) -> None:
    recording = RECORDINGS / f"{name}.json.gz"
    snap = collect(WithoutFrames(str(recording)))
    lines = [["kd-waitfor", "--json"], ["kd-waitfor"], ["kd-locks"], ["kd-tasks", "-s", "D"]]
    got = run(recording, *lines)
    for words, (verb, text) in zip(lines, got):
        expected = commands.run(words[0], commands.parse(words[0], words[1:]), snap)
        assert (verb, text) == ("done", expected + "\n"), words
    assert json.loads(got[0][1])["cycles"]


def test_errors_help_and_debug() -> None:
    recording = RECORDINGS / "kdl_mutex-nokaslr.json.gz"
    got = run(recording, ["kd-tasks", "--bogus"], ["kd-bt", "99999"], ["kd-waitfor", "-h"], ["kd-nothing"],
              ["kd-tasks", "-s", "D"])
    assert got[0] == ("error", "unrecognized arguments: --bogus; usage: kd-tasks [-h] [-s STATES] [-t SECONDS] [-l] [-p PID] [pattern]")
    assert got[1] == ("error", "no task with pid or address 99999")
    assert got[2][0] == "done" and got[2][1].startswith("usage: kd-waitfor [-h] [--json] [-p PID] [--stacks]\n")
    assert got[3] == ("error", "kdlgdb has no command kd-nothing")
    assert got[4][0] == "done" and "kdl_m1" in got[4][1]  # the session goes on after errors
    (verb, text), = run(recording, ["kd-bt", "99999"], debug=True)
    assert verb == "error" and text.startswith("Traceback (most recent call last):")
    assert text.endswith("KdlError: no task with pid or address 99999")
