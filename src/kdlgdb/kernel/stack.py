"""Kernel stacks of sleeping tasks, by scanning for return addresses.

gdb cannot unwind a task that is not on a CPU. A sleeping task's saved stack
pointer (``thread.sp``) marks where its live stack begins; every word from
there to the top that points just after a call instruction into kernel or
module text is taken as a return address. That names the slow path a task
sleeps in and its callers, which is what the wait-for analysis needs.
"""
from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from ..errors import ReadError
from ..model import Frame, Task
from .layout import Kernel
from .symbols import Symbols

__all__ = ["StackReader", "Stack", "add_source_lines", "source_name"]

# The top-level directories of a kernel source tree, to cut a build's own path off an absolute file name.
_TREE_ROOT = re.compile(
    r"^/(?:.*/)?linux(?:-[^/]*)?/(?=(?:arch|block|certs|crypto|drivers|fs|include|init|io_uring|ipc|kernel|lib|mm|"
    r"net|rust|samples|security|sound|tools|usr|virt)/)"
)

# Debian builds a flavour with its own patches (PREEMPT_RT) from a copy of the tree: its debug info
# names C files relative to the build directory as debian/build/source_rt/kernel/locking/rtmutex.c.
_FLAVOUR_TREE = re.compile(r"^debian/build/source[^/]*/")


@dataclass
class Stack:
    """The live part of a task's stack: [sp, top)."""

    sp: int
    data: bytes

    @property
    def top(self) -> int:
        return self.sp + len(self.data)

    @cached_property
    def values(self) -> array:
        """The 8-byte slots from sp up, as unsigned integers (little-endian, as on x86_64)."""
        values = array("Q", self.data[: len(self.data) // 8 * 8])
        if sys.byteorder == "big":
            values.byteswap()
        return values

    def slots_holding(self, value: int) -> list[int]:
        """Addresses of the slots that hold ``value``."""
        found: list[int] = []
        i = -1
        while True:
            try:
                i = self.values.index(value, i + 1)
            except ValueError:
                return found
            found.append(self.sp + 8 * i)


class StackReader:
    """Reads task stacks and turns them into frames."""

    def __init__(self, k: Kernel, symbols: Symbols) -> None:
        self.k = k
        self.symbols = symbols
        # THREAD_SIZE: init_stack is declared as unsigned long[THREAD_SIZE / 8]. Where the debug info has no
        # size for it (BTF describes per-CPU variables only), struct irq_stack's: x86_64 sizes both by the same
        # order (THREAD_SIZE_ORDER and IRQ_STACK_ORDER are 2 + KASAN_STACK_ORDER), so a KASAN kernel's 32 KiB
        # is read whole too. 16 KiB, x86_64's without KASAN, when neither is known.
        self.thread_size = (k.target.symbol_size("init_stack") or k.target.type_size("struct irq_stack")
                            or 16384)
        self._return_address: dict[int, bool] = {}
        self._frames: dict[int, Frame] = {}

    def read(self, stack_base: int, sp: int) -> Optional[Stack]:
        """The live stack of a sleeping task, or None if sp is not inside its stack."""
        top = stack_base + self.thread_size
        if not stack_base or not stack_base <= sp < top:
            return None
        return Stack(sp, self.k.read(sp, top - sp))

    def frames(self, stack: Stack) -> list[Frame]:
        """The return addresses on the stack, innermost first."""
        out = []
        lowest = self.symbols.text_start  # most words are below all text: skip them cheaply
        for i, value in enumerate(stack.values):
            if value >= lowest and self._is_return_address(value):
                f = self._frame(value)
                out.append(Frame(f.pc, f.symbol, f.offset, f.module, stack.sp + 8 * i))
        return out

    def _frame(self, pc: int) -> Frame:
        """The frame of a return address (its symbol), found once per pc."""
        if pc not in self._frames:
            self._frames[pc] = Frame(pc, *self.symbols.lookup(pc))
        return self._frames[pc]

    def _is_return_address(self, value: int) -> bool:
        """Whether ``value`` points into text just after an x86 call instruction (found once per value)."""
        if value not in self._return_address:
            found = False
            if self.symbols.is_text(value):
                try:
                    found = _is_call_end(self.k.read(value - 7, 7))
                except ReadError:
                    pass
            self._return_address[value] = found
        return self._return_address[value]


def add_source_lines(k: Kernel, tasks: Iterable[Task]) -> None:
    """Set ``source`` (the call's file:line) of the vmlinux frames on the stacks of ``tasks``.

    Apart from reading the stacks because it is slow and most output does not show it: gdb reads
    a compilation unit's line table at the first lookup in it, ~7 ms each (0.4 s of the 0.7 s that
    kd-waitfor takes on 1,000 tasks). Only the vmlinux has debug info; module frames get no line.
    """
    found: dict[int, Optional[str]] = {}
    for task in tasks:
        for frame in task.frames:
            if frame.symbol is None or frame.module is not None or not k.in_image(frame.pc):
                continue
            if frame.pc not in found:
                line = k.target.source_line(k.unrelocate(frame.pc))
                found[frame.pc] = source_name(*line) if line is not None else None
            frame.source = found[frame.pc]


def source_name(filename: str, line: int) -> str:
    """``kernel/locking/semaphore.c:240``: a debug-info file name relative to the kernel tree, and its line.

    C files are named relative to the build directory already; assembler files may carry the
    build's absolute path (``/build/reproducible-path/linux-6.1.192/arch/x86/entry/entry_64.S``),
    cut at a ``linux``/``linux-*`` directory that holds the tree; a Debian flavour's copy of the tree
    (``debian/build/source_rt/``) is cut too. Other absolute names stay.
    """
    name = filename[2:] if filename.startswith("./") else filename
    return f"{_TREE_ROOT.sub('', _FLAVOUR_TREE.sub('', name))}:{line}"


def _is_call_end(code: bytes) -> bool:
    """``code`` is the 7 bytes before a return address."""
    if code[2] == 0xE8:  # call rel32
        return True
    if code[5] == 0xFF and 0xD0 <= code[6] <= 0xD7:  # call *%reg
        return True
    if code[4] == 0xFF and 0x50 <= code[5] <= 0x57:  # call *disp8(%reg)
        return True
    if code[1] == 0xFF and (code[2] == 0x15 or 0x90 <= code[2] <= 0x97):  # call *disp32(%rip|%reg)
        return True
    if code[0] == 0xFF and code[1] == 0x14:  # call *disp32(,%reg,8) via SIB
        return True
    return False
