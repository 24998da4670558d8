"""The seam between kdlgdb and a debugger.

A target answers a handful of questions about one kernel image and its memory.
Every address and symbol here is *static*: as the vmlinux's debug info has it,
before any KASLR relocation. The kernel model (``kdlgdb.kernel``) applies the
offset. (A debugger that relocated the symbols itself, crash or gdb's
``symbol-file -o``, is fine too: the kernel model notices.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Optional

__all__ = ["Target", "TargetKind", "Spelling", "DEBUG_INFO"]

#: Where a target's types and symbols come from (``Target.debug_info``), and those words in prose.
DEBUG_INFO = {"dwarf": "the vmlinux's DWARF and symbol table",
              "btf": "the dump's own BTF and kallsyms (no vmlinux)"}


class Spelling(str, Enum):
    """A closed set of names that are strings too (``== "dump"``, JSON, f-strings give the value), on every
    Python kdlgdb runs on (enum.StrEnum is 3.11's)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class TargetKind(Spelling):
    """What a target reads (the one spelling; ``describe()`` for prose)."""

    DUMP = "dump"  # a vmcore: memory as it was when dumped
    LIVE = "live"  # a running kernel (a gdbstub, or crash on a live system)

    def describe(self) -> str:
        return "a vmcore" if self is TargetKind.DUMP else "a live kernel"


class Target:
    """What the kernel model needs from a debugger. Subclasses implement all of it."""

    kind: TargetKind = TargetKind.DUMP
    #: Where types and symbols come from: a key of :data:`DEBUG_INFO` (gdb and crash read the vmlinux's DWARF).
    debug_info: str = "dwarf"

    def read(self, address: int, size: int) -> bytes:
        """Return ``size`` bytes of kernel virtual memory; raise ReadError if any is unreadable."""
        raise NotImplementedError

    def symbol(self, name: str) -> Optional[int]:
        """Static address of a global or static symbol of the vmlinux, or None."""
        raise NotImplementedError

    def symbol_size(self, name: str) -> Optional[int]:
        """Size in bytes of a data symbol's type, or None."""
        raise NotImplementedError

    def type_size(self, type_name: str) -> Optional[int]:
        """``sizeof(type_name)`` (e.g. ``"struct mutex"``), or None when the type is unknown."""
        raise NotImplementedError

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        """(offset, size) of a member, dotted for nested ones (``"thread.sp"``); None if absent."""
        raise NotImplementedError

    def member_type(self, type_name: str, path: str) -> Optional[str]:
        """The C type of a member as the debugger spells it (``"struct mutex_waiter *"``); None if absent.

        For members whose meaning changed with their type (``task_struct.blocked_on``)."""
        raise NotImplementedError

    def member_bits(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        """(bit offset from the start of the type, bit size) of a bit-field member (``"class_idx"`` of
        ``struct held_lock``); the size is 0 for a member that is not a bit-field; None if absent."""
        raise NotImplementedError

    def symbolize(self, address: int) -> Optional[tuple[str, int]]:
        """(name, offset) of the vmlinux symbol that contains a static address, or None."""
        raise NotImplementedError

    def source_line(self, address: int) -> Optional[tuple[str, int]]:
        """(file, line) of the call that a return address at a static vmlinux address follows, or None.

        The file is as the debug info names it (relative to the build directory, or absolute).
        """
        raise NotImplementedError

    def vmcoreinfo(self) -> Optional[Mapping[str, str]]:
        """The dump's VMCOREINFO note as key -> value, or None (live targets)."""
        raise NotImplementedError

    def cpu_registers(self) -> Optional[list[dict[str, int]]]:
        """Each CPU's saved registers, or None when the target has none.

        One dict per CPU as the debugger knows them (a dump's per-CPU ``NT_PRSTATUS`` notes in
        note order, a gdbstub's threads in thread order): register name -> value, at least
        ``rip``, ``rsp``, ``rbp``, and ``gs_base`` / ``kernel_gs_base`` where known. Which
        Linux CPU a set belongs to is for the kernel model to work out (``kernel/cpus.py``).
        """
        return None

    def frame_variables(self, pcs: Sequence[int], registers: Mapping[str, int],
                        names: Sequence[str]) -> Optional[dict[str, Optional[int]]]:
        """The values the debug info gives the variables ``names`` in the last frame of a call chain.

        ``pcs`` are the frames' pcs, innermost first, as static addresses (like :meth:`symbolize`'s): the
        return addresses an exact unwind found. ``registers`` are the innermost frame's callee-saved registers
        and stack pointer (``rsp``, ``rbp``, ``rbx``, ``r12``..``r15``: a sleeping task's
        ``inactive_task_frame``). The debugger unwinds them frame by frame with the vmlinux's call-frame
        information and reads each name in the last frame (and the calls inlined into it).

        Returns name -> value for each name the frame has: a pointer or integer variable's value, a variable in
        memory's address; None where the debug info has no location for it at that pc (optimised out). None
        when the target cannot tell (no DWARF unwinder: crash, kdlgdb's own reader): never an exception.
        """
        return None

    def describe(self) -> str:
        """One line naming what is being read: ``"ELF vmcore (QEMU dump-guest-memory with paging) /x/y"``,
        ``"live gdbstub localhost:1234"``."""
        raise NotImplementedError
