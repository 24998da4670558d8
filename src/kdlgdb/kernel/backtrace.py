"""Exact backtraces of the tasks of a kernel: the unwinder (``unwind.py``) over a Kernel.

A ``Backtracer`` is made once per snapshot: it detects the ORC format and the
layout of ``struct inactive_task_frame``, and keeps the ORC tables it reads.
``blocked`` unwinds a sleeping task from its stack as ``StackReader`` read it
(no further memory reads for the stack itself); ``from_registers`` unwinds a
task on a CPU from the CPU's registers, across its IRQ stack.

Frames are ``model.Frame`` like the scan's, with ``sp`` the stack slot that held
the pc and ``regs`` set on a frame whose pc is the interrupted ip of a
``pt_regs`` (the interrupt or exception boundary). Where the exact unwind finds
too little (fewer than two frames), the scan's frames are used, marked ``scan``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ReadError
from ..model import Frame, Problem, Task
from .layout import Kernel
from .orc import KernelOrc
from .stack import Stack, StackReader
from .symbols import Symbols
from .unwind import FRAME_POINTERS, ORC, SCAN, Unwind, start_blocked, start_registers, unwind

__all__ = ["Backtrace", "Backtracer", "scan_frames"]


@dataclass
class Backtrace:
    frames: list[Frame]
    method: str  # ORC, FRAME_POINTERS or SCAN: the evidence name of how the frames were found
    error: Optional[str] = None  # why an exact unwind stopped early (shown as a marked last frame)


# struct inactive_task_frame's callee-saved registers: its member -> gdb's register name.
_SWITCH_FRAME = (("r15", "r15"), ("r14", "r14"), ("r13", "r13"), ("r12", "r12"), ("bx", "rbx"), ("bp", "rbp"))


def switch_frame_registers(k: Kernel) -> list[tuple[str, int]]:
    """(gdb's register name, its offset in ``struct inactive_task_frame``) of each callee-saved register a
    sleeping task's switch frame holds, from the type (which members it has, and their order, is the kernel's:
    x86_64 kept ``flags`` first for a while after 6690e86be83a)."""
    return [(register, found[0]) for member, register in _SWITCH_FRAME
            if (found := k.member("struct inactive_task_frame", member)) is not None]


class Backtracer:
    """Unwinds the tasks of one kernel."""

    def __init__(self, k: Kernel, symbols: Symbols, stacks: StackReader) -> None:
        self.k = k
        self.symbols = symbols
        self.stacks = stacks
        self.orc = KernelOrc(k, lambda address: (m := symbols.module_of(address)) and int(m.address) or None)
        self.frame_pointers = not self.orc.available
        frame = "struct inactive_task_frame"
        ret_addr, bp = k.member(frame, "ret_addr"), k.member(frame, "bp")
        size = k.target.type_size(frame)
        # x86_64's frame since v4.9 (0100301bfdf5): r15, r14, r13, r12, bx, bp, ret_addr; the type says where
        # each is (the fallbacks are that layout, for a target without the type).
        self.frame_layout = (ret_addr[0] if ret_addr else 48, bp[0] if bp else 40, size or 56)
        self.switch_registers = switch_frame_registers(k)
        self._frames: dict[int, tuple[Optional[str], int, Optional[str]]] = {}

    def blocked(self, stack: Stack, stack_base: int) -> Backtrace:
        """The backtrace of a sleeping task whose stack from ``thread.sp`` up is ``stack``."""
        values, sp = stack.values, stack.sp

        def read_u64(address: int) -> int:
            i = (address - sp) >> 3
            if address >= sp and not (address - sp) & 7 and i < len(values):
                return values[i]
            return self.k.u64(address)

        bounds = [(stack_base, stack_base + self.stacks.thread_size)]
        try:
            start = start_blocked(read_u64, sp, *self.frame_layout, exact_ips=self.exact_ips(read_u64(sp + self.frame_layout[0])))
        except ReadError as e:
            return self._scan(stack, f"unreadable inactive_task_frame: {e}")
        return self._finish(unwind(start, self.orc.find, read_u64, bounds, self.frame_pointers), stack)

    def exact_ips(self, ip: int) -> tuple[int, ...]:
        """``(ip,)`` when ``ip`` is the start of ret_from_fork (ret_from_fork_asm since v6.6): where a task that never
        ran "returns" to, an exact ip, not a return address; else ``()``. (By name: looking up a symbol the kernel
        lacks costs gdb tens of milliseconds.)"""
        name, offset, module = self._lookup(ip)
        return (ip,) if offset == 0 and module is None and name in ("ret_from_fork", "ret_from_fork_asm") else ()

    def from_registers(self, registers: dict[str, int], stacks: list[tuple[int, int]]) -> Unwind:
        """The unwind of a task on a CPU from the CPU's registers, over ``stacks`` (its own, the CPU's IRQ stack)."""
        return unwind(start_registers(registers), self.orc.find, self.k.u64, stacks, self.frame_pointers)

    def frames(self, result: Unwind, first_sp: int = 0) -> list[Frame]:
        out = []
        guessed = set(result.guessed)
        for i, f in enumerate(result.frames):
            symbol, offset, module = self._lookup(f.pc)
            out.append(Frame(f.pc, symbol, offset, module, f.slot or first_sp, regs=f.regs is not None,
                             guessed=i in guessed))
        return out

    def _finish(self, result: Unwind, stack: Stack) -> Backtrace:
        if result.error is not None and len(result.frames) < 2:
            return self._scan(stack, f"{result.method} unwind failed: {result.error}")
        method = result.method
        if result.guessed and method == ORC:
            method = f"{ORC}, {FRAME_POINTERS} guess for {len(result.guessed)} frame(s)"
        return Backtrace(self.frames(result), method, result.error)

    def _scan(self, stack: Stack, why: str) -> Backtrace:
        return Backtrace(self.stacks.frames(stack), SCAN, why)

    def _lookup(self, pc: int) -> tuple[Optional[str], int, Optional[str]]:
        if pc not in self._frames:
            self._frames[pc] = self.symbols.lookup(pc)
        return self._frames[pc]



def scan_frames(k: Kernel, task: Task) -> Optional[list[Frame]]:
    """The old stack scan of a sleeping task (``kd-bt -s``): every return address from ``thread.sp`` up.
    None for a task on a CPU: it has no meaningful saved sp."""
    if task.on_cpu:
        return None
    problems: list[Problem] = []
    reader = StackReader(k, Symbols(k, problems))
    stack = reader.read(task.stack_base, k.u64(task.address + k.offset("struct task_struct", "thread.sp")))
    return reader.frames(stack) if stack is not None else []
