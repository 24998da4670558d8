"""Record what the kernel model asks of a real target, and serve it back.

A recording of ``kd-waitfor`` on a real vmcore is a few hundred KiB (gzip'd
JSON), so the analysis can be tested on real kernel data without gdb, QEMU or
the 600 MB vmlinux. A replay asked for anything that was not recorded raises
``RecordingMiss``, which is deliberately not a ``ReadError``: the kernel model
must not quietly skip it as an unreadable page.
"""
from __future__ import annotations

import bisect
import gzip
import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .base import Target, TargetKind

__all__ = ["RecordingTarget", "ReplayTarget", "RecordingMiss"]


class RecordingMiss(Exception):
    """The replayed analysis asked for something the recording does not hold."""


class RecordingTarget(Target):
    """Wraps a real target and remembers every answer it gives."""

    def __init__(self, inner: Target) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.debug_info = inner.debug_info
        self.memory: dict[int, bytes] = {}
        self.failed: set[tuple[int, int]] = set()
        self.answers: dict[str, Any] = {}

    def read(self, address: int, size: int) -> bytes:
        from ..errors import ReadError

        try:
            data = self.inner.read(address, size)
        except ReadError:
            self.failed.add((address, size))
            raise
        self.memory[address] = max(self.memory.get(address, b""), data, key=len)
        return data

    def _ask(self, key: str, value: Any) -> Any:
        self.answers[key] = value
        return value

    def symbol(self, name: str) -> Optional[int]:
        return self._ask(f"symbol {name}", self.inner.symbol(name))

    def symbol_size(self, name: str) -> Optional[int]:
        return self._ask(f"symbol_size {name}", self.inner.symbol_size(name))

    def type_size(self, type_name: str) -> Optional[int]:
        return self._ask(f"type_size {type_name}", self.inner.type_size(type_name))

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        return self._ask(f"member {type_name} {path}", self.inner.member(type_name, path))

    def member_type(self, type_name: str, path: str) -> Optional[str]:
        return self._ask(f"member_type {type_name} {path}", self.inner.member_type(type_name, path))

    def member_bits(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        return self._ask(f"member_bits {type_name} {path}", self.inner.member_bits(type_name, path))

    def symbolize(self, address: int) -> Optional[tuple[str, int]]:
        return self._ask(f"symbolize {address:#x}", self.inner.symbolize(address))

    def source_line(self, address: int) -> Optional[tuple[str, int]]:
        return self._ask(f"source_line {address:#x}", self.inner.source_line(address))

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        return self._ask("vmcoreinfo", self.inner.vmcoreinfo())

    def describe(self) -> str:
        return self._ask("describe", self.inner.describe())

    def cpu_registers(self) -> Optional[list[dict[str, int]]]:
        return self._ask("cpu_registers", self.inner.cpu_registers())

    def frame_variables(self, pcs: Sequence[int], registers: Mapping[str, int],
                        names: Sequence[str]) -> Optional[dict[str, Optional[int]]]:
        return self._ask(_frame_key(pcs, registers, names), self.inner.frame_variables(pcs, registers, names))

    def save(self, path: str) -> None:
        """Write the recording: memory as merged ranges, answers as they were given."""
        ranges: list[list[Any]] = []
        for address in sorted(self.memory):
            data = self.memory[address]
            if ranges and address <= ranges[-1][0] + len(ranges[-1][1]):
                start, prev = ranges[-1]
                merged = bytearray(prev)
                merged[address - start : address - start + len(data)] = data
                ranges[-1][1] = bytes(merged)
            else:
                ranges.append([address, data])
        doc = {
            "kind": self.kind,
            "debug_info": self.debug_info,
            "memory": [[f"{a:#x}", d.hex()] for a, d in ranges],
            "failed": [[f"{a:#x}", n] for a, n in sorted(self.failed)],
            "answers": self.answers,
        }
        with gzip.open(path, "wt", encoding="ascii") as f:
            json.dump(doc, f, separators=(",", ":"), sort_keys=True)


class ReplayTarget(Target):
    """Serves a recording made by RecordingTarget."""

    def __init__(self, path: str) -> None:
        with gzip.open(path, "rt", encoding="ascii") as f:
            doc = json.load(f)
        self.path = path
        self.kind = TargetKind(doc["kind"])
        self.debug_info = doc.get("debug_info", "dwarf")  # recordings before the BTF target: gdb's
        self._starts = [int(a, 16) for a, _ in doc["memory"]]
        self._data = [bytes.fromhex(d) for _, d in doc["memory"]]
        self._failed = {(int(a, 16), n) for a, n in doc["failed"]}
        self._answers = doc["answers"]

    def read(self, address: int, size: int) -> bytes:
        from ..errors import ReadError

        if (address, size) in self._failed:
            raise ReadError(address, size, "not in dump (recorded)")
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            offset = address - self._starts[i]
            if offset + size <= len(self._data[i]):
                return self._data[i][offset : offset + size]
        raise RecordingMiss(f"{self.path}: read of {size} bytes at {address:#x} was not recorded")

    def _answer(self, key: str) -> Any:
        if key not in self._answers:
            raise RecordingMiss(f"{self.path}: '{key}' was not recorded")
        value = self._answers[key]
        return tuple(value) if isinstance(value, list) else value

    def symbol(self, name: str) -> Optional[int]:
        return self._answer(f"symbol {name}")

    def symbol_size(self, name: str) -> Optional[int]:
        return self._answer(f"symbol_size {name}")

    def type_size(self, type_name: str) -> Optional[int]:
        return self._answer(f"type_size {type_name}")

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        return self._answer(f"member {type_name} {path}")

    def member_type(self, type_name: str, path: str) -> Optional[str]:
        return self._answer(f"member_type {type_name} {path}")

    def member_bits(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        return self._answer(f"member_bits {type_name} {path}")

    def symbolize(self, address: int) -> Optional[tuple[str, int]]:
        return self._answer(f"symbolize {address:#x}")

    def source_line(self, address: int) -> Optional[tuple[str, int]]:
        return self._answer(f"source_line {address:#x}")

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        return self._answer("vmcoreinfo")

    def describe(self) -> str:
        return self._answer("describe")

    def cpu_registers(self) -> Optional[list[dict[str, int]]]:
        value = self._answer("cpu_registers")
        return [dict(regs) for regs in value] if value is not None else None

    def frame_variables(self, pcs: Sequence[int], registers: Mapping[str, int],
                        names: Sequence[str]) -> Optional[dict[str, Optional[int]]]:
        value = self._answer(_frame_key(pcs, registers, names))
        return dict(value) if value is not None else None


def _frame_key(pcs: Sequence[int], registers: Mapping[str, int], names: Sequence[str]) -> str:
    """The answer's key: the chain's pcs, the registers it starts from (sorted by name) and the names asked."""
    regs = ",".join(f"{name}={registers[name]:#x}" for name in sorted(registers))
    return f"frame_variables {','.join(f'{pc:#x}' for pc in pcs)} {regs} {','.join(names)}"
