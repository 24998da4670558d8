"""Kernel stacks of sleeping tasks, by scanning for return addresses.

gdb cannot unwind a task that is not on a CPU. A sleeping task's saved stack
pointer (``thread.sp``) marks where its live stack begins; every word from
there to the top that points just after a call instruction into kernel or
module text is taken as a return address. That names the slow path a task
sleeps in and its callers, which is what the wait-for analysis needs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

from ..errors import ReadError
from ..model import Frame
from .layout import Kernel
from .symbols import Symbols

__all__ = ["StackReader", "Stack", "source_name"]

# The top-level directories of a kernel source tree, to cut a build's own path off an absolute file name.
_TREE_ROOT = re.compile(
    r"^/(?:.*/)?linux(?:-[^/]*)?/(?=(?:arch|block|certs|crypto|drivers|fs|include|init|io_uring|ipc|kernel|lib|mm|"
    r"net|rust|samples|security|sound|tools|usr|virt)/)"
)


@dataclass
class Stack:
    """The live part of a task's stack: [sp, top)."""

    sp: int
    data: bytes

    @property
    def top(self) -> int:
        return self.sp + len(self.data)

    def words(self):
        """(address, value) of each 8-byte slot."""
        for i in range(0, len(self.data) - 7, 8):
            yield self.sp + i, int.from_bytes(self.data[i : i + 8], "little")


class StackReader:
    """Reads task stacks and turns them into frames."""

    def __init__(self, k: Kernel, symbols: Symbols) -> None:
        self.k = k
        self.symbols = symbols
        init_stack = k.target.symbol_size("init_stack")
        # THREAD_SIZE: init_stack is declared as unsigned long[THREAD_SIZE / 8].
        self.thread_size = init_stack or 16384
        self._after_call: dict[int, bool] = {}
        self._frames: dict[int, Frame] = {}

    def read(self, stack_base: int, sp: int) -> Optional[Stack]:
        """The live stack of a sleeping task, or None if sp is not inside its stack."""
        top = stack_base + self.thread_size
        if not stack_base or not stack_base <= sp < top:
            return None
        return Stack(sp, self.k.read(sp, top - sp))

    def frames(self, stack: Stack) -> list[Frame]:
        out = []
        for slot, value in stack.words():
            if self.symbols.is_text(value) and self._follows_call(value):
                frame = self._frame(value)
                out.append(replace(frame, sp=slot))
        return out

    def _frame(self, pc: int) -> Frame:
        """The frame of a return address (symbol, and source line for the vmlinux), found once per pc."""
        if pc not in self._frames:
            name, offset, module = self.symbols.lookup(pc)
            source = None
            if name is not None and module is None and self.k.in_image(pc):
                # Only the vmlinux has debug info loaded; module frames stay without a line.
                found = self.k.target.source_line(self.k.unrelocate(pc))
                source = source_name(*found) if found is not None else None
            self._frames[pc] = Frame(pc, name, offset, module, source=source)
        return self._frames[pc]

    def _follows_call(self, address: int) -> bool:
        """Whether the bytes before ``address`` end with an x86 call instruction."""
        if address not in self._after_call:
            try:
                code = self.k.read(address - 7, 7)
            except ReadError:
                code = b""
            self._after_call[address] = len(code) == 7 and _is_call_end(code)
        return self._after_call[address]


def source_name(filename: str, line: int) -> str:
    """``kernel/locking/semaphore.c:240``: a debug-info file name relative to the kernel tree, and its line.

    C files are named relative to the build directory already; assembler files may carry the
    build's absolute path (``/build/reproducible-path/linux-6.1.192/arch/x86/entry/entry_64.S``),
    cut at a ``linux``/``linux-*`` directory that holds the tree. Other absolute names stay.
    """
    name = filename[2:] if filename.startswith("./") else filename
    return f"{_TREE_ROOT.sub('', name)}:{line}"


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
