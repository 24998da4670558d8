"""What a sample boot shows: the facts the guest printed on its console (``kdl-truth``, ``kdl-info``,
``kdl-state``, ``kdl-stack`` lines and the hung-task detector's reports), checked against the scenario's
``expected.json`` into the truth file the tests compare kdlgdb with; and the dump's own ELF notes (VMCOREINFO)."""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, Optional

from cache import BuildError, expected, kernel_paths, tail, variant_name
from catalog import sample

START_KERNEL_MAP = 0xFFFFFFFF81000000  # _text when KASLR is off (x86_64)


_STAMP_ANYWHERE = re.compile(r"\[\s*\d+\.\d+\]")


def parse_console(text: str) -> dict[str, Any]:
    """Pick the ``kdl-truth``, ``kdl-info``, ``kdl-state`` and ``kdl-stack`` lines out of a console log.

    Kernel lines carry a ``[    3.123456] `` prefix; we look for the tag
    anywhere in the line. The scale scenario's compact truth (``cycle``,
    ``behind``, ``chain`` and ``count`` lines) lands in ``cycles``
    (``{name: {"members": [{comm, kind, address}], "behind": n}}``), ``chains``
    (``[{root, blocked, locks}]``, root a pid) and ``counts``.
    """
    locks: dict[str, dict[str, str]] = {}
    tasks: dict[str, int] = {}
    threads: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    cycles: dict[str, dict[str, Any]] = {}
    chains: list[dict[str, int]] = []
    counts: dict[str, int] = {}
    # The kernel's own console output can land right after our text, on the same line (it prints
    # asynchronously): a line is cut where each "[   2.228081]" time stamp begins, and every piece
    # is read ("kdl-info module ...[ 4.1] kdl-truth task ..." holds two facts).
    pieces = (piece for raw in text.splitlines() for piece in _STAMP_ANYWHERE.split(raw))
    for piece in pieces:
        found = [(piece.find(tag), tag) for tag in ("kdl-truth ", "kdl-info ", "kdl-state ", "kdl-stack ")]
        found = [(at, tag) for at, tag in found if at >= 0]
        if not found:
            continue
        at, tag = min(found)
        words = piece[at + len(tag):].strip().split()
        try:
            if tag == "kdl-truth " and words[0] == "lock" and len(words) >= 4:
                locks[words[1]] = {"address": f"{int(words[3], 16):#018x}", "type": words[2]}
            elif tag == "kdl-truth " and words[0] == "task" and len(words) >= 3:
                tasks[words[1]] = int(words[2])
            elif tag == "kdl-truth " and words[0] == "cycle":
                members = [member.split(":") for member in words[2:]]
                cycles.setdefault(words[1], {})["members"] = [
                    {"comm": comm, "kind": kind, "address": f"{int(address, 16):#018x}"}
                    for comm, kind, address in members]
            elif tag == "kdl-truth " and words[0] == "behind":
                cycles.setdefault(words[1], {})["behind"] = int(words[2])
            elif tag == "kdl-truth " and words[0] == "chain":
                chains.append({"root": int(words[1]), "blocked": int(words[2]), "locks": int(words[3])})
            elif tag == "kdl-truth " and words[0] == "count":
                counts[words[1]] = int(words[2])
            elif tag == "kdl-info " and words[0] == "text":
                info["text"] = int(words[1], 16)
            elif tag == "kdl-info " and words[0] == "module":
                info["module_base"] = int(words[2], 16)
                info["module_size"] = int(words[3])
            elif tag == "kdl-state ":
                pid, comm, state = int(words[0]), words[1], words[2]
                wchan = words[3] if len(words) > 3 else "?"
                threads.setdefault(comm, {"stack": []}).update(pid=pid, state=state, wchan=wchan)
            elif tag == "kdl-stack ":
                # "kdl-stack kdl_a [<0>] __schedule+0x2f0/0x860"
                frame = re.sub(r"^\[<[0-9a-fx]+>\]\s*", "", " ".join(words[1:]))
                threads.setdefault(words[0], {"stack": []})["stack"].append(frame)
        except (IndexError, ValueError):
            continue  # a line mangled by interleaved console output
    return {"locks": locks, "tasks": tasks, "threads": threads, "cycles": cycles, "chains": chains,
            "counts": counts, **info}


_HUNG_RE = re.compile(r"INFO: task (\S+):(\d+) blocked for more than")
_STAMP_RE = re.compile(r"^\[\s*\d+\.\d+\]\s?")


def hung_task_reports(text: str) -> dict[str, list[str]]:
    """The hung-task detector's first report per task: ``{comm: frames}``.

    Frames are the reliable lines of the ``Call Trace`` (those the kernel did
    not mark with ``?``), e.g. ``["__schedule+0x34d/0xa00", ..., "kdl_a_fn+0x27/0x50 [kdl_abba]"]``.
    """
    reports: dict[str, list[str]] = {}
    frames: Optional[list[str]] = None
    in_trace = False
    for raw in text.splitlines():
        line = _STAMP_RE.sub("", raw.strip()).strip()
        match = _HUNG_RE.search(line)
        if match:
            comm = match.group(1)
            frames = None if comm in reports else reports.setdefault(comm, [])
            in_trace = False
        elif frames is None:
            continue
        elif line == "<TASK>":
            in_trace = True
        elif line == "</TASK>":
            frames, in_trace = None, False
        elif in_trace and line and not line.startswith("?"):
            frames.append(line)
    return reports


def make_truth(console_text: str, scenario: str, kernel: str, kaslr: bool) -> dict[str, Any]:
    """The truth dict of one boot, checked against ``expected.json``."""
    parsed = parse_console(console_text)
    exp = expected(scenario)
    problems = []
    for sym, typ in exp["lock_types"].items():
        got = parsed["locks"].get(sym)
        if got is None:
            problems.append(f"no kdl-truth line for lock {sym}")
        elif got["type"] != typ:
            problems.append(f"lock {sym} has type {got['type']}, expected {typ}")
    for comm in exp["tasks"]:
        if comm not in parsed["tasks"]:
            problems.append(f"no kdl-truth line for task {comm}")
    for key in exp.get("truth", []):  # the compact truth of a scale sample
        if not parsed[key]:
            problems.append(f"no kdl-truth {key} lines")
    if "text" not in parsed:
        problems.append("no kdl-info text line (address of _text)")
    if problems:
        raise BuildError(f"{scenario} ({variant_name(kaslr)}): " + "; ".join(problems)
                         + f"\n--- console tail ---\n{tail(console_text)}")
    truth: dict[str, Any] = {
        "kernel": kernel,
        "vmlinux": str(kernel_paths(kernel)["vmlinux"]),
        "kaslr": kaslr,
        "module": sample(scenario).scenario,
        "locks": parsed["locks"],
        "tasks": parsed["tasks"],
        "kernel_offset": f"{parsed['text'] - START_KERNEL_MAP:#x}",
        "text": f"{parsed['text']:#018x}",
    }
    if "module_base" in parsed:
        truth["module_base"] = f"{parsed['module_base']:#018x}"
        truth["module_size"] = parsed["module_size"]
    truth["threads"] = parsed["threads"]
    if parsed["cycles"] or parsed["chains"] or parsed["counts"]:
        for cycle in parsed["cycles"].values():
            for member in cycle.get("members", []):
                member["pid"] = parsed["tasks"].get(member["comm"])
        truth.update(cycles=parsed["cycles"], chains=parsed["chains"], counts=parsed["counts"])
    hung = hung_task_reports(console_text)
    truth["hung_task_reported"] = bool(hung)
    truth["hung_task_stacks"] = {comm: frames for comm, frames in hung.items() if comm in exp["tasks"]}
    return truth


def elf_program_headers(path: Path) -> list[dict[str, int]]:
    """The program headers of a 64-bit little-endian ELF file (handles PN_XNUM)."""
    with open(path, "rb") as fh:
        ehdr = fh.read(64)
        if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
            raise BuildError(f"{path} is not a 64-bit little-endian ELF file")
        phoff, shoff = struct.unpack_from("<QQ", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        if phnum == 0xFFFF:  # real count lives in section header 0's sh_info
            fh.seek(shoff)
            phnum = struct.unpack_from("<I", fh.read(64), 44)[0]
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    keys = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
    return [dict(zip(keys, struct.unpack_from("<IIQQQQQQ", table, i * phentsize)))
            for i in range(phnum)]


def elf_notes(path: Path) -> list[tuple[str, int, bytes]]:
    """All ELF notes ``(name, type, desc)`` in the PT_NOTE segments of ``path``."""
    notes = []
    with open(path, "rb") as fh:
        for ph in elf_program_headers(path):
            if ph["type"] != 4:  # PT_NOTE
                continue
            fh.seek(ph["offset"])
            data = fh.read(ph["filesz"])
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                pos += 12
                name = data[pos:pos + namesz].rstrip(b"\0").decode(errors="replace")
                pos += (namesz + 3) & ~3
                desc = data[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                notes.append((name, ntype, desc))
    return notes


def vmcoreinfo(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of the dump's VMCOREINFO note ({} when absent)."""
    for name, _type, desc in elf_notes(path):
        if name == "VMCOREINFO":
            text = desc.rstrip(b"\0").decode(errors="replace")
            return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {}


# --------------------------------------------------------------------------
