"""Exact backtraces of x86-64 kernel stacks: ORC, else frame pointers.

``unwind`` follows the kernel's own ``unwind_next_frame`` (arch/x86/kernel/unwind_orc.c):
from an instruction pointer, stack pointer and frame pointer it finds the entry
that describes the code at ip, computes the caller's sp from it, reads the
return address below that sp (a call), or a ``struct pt_regs`` at it (an
interrupt, exception or syscall entry), and the caller's bp. It is pure: memory
comes through a ``read_u64`` callable, unwind data through a ``find`` callable,
and the stacks it may read are given as ranges, so it is tested without a kernel.

It never runs away on a corrupt stack: every read must lie inside one of the
given stacks, sp must grow while on the same stack, a stack once left is not
re-entered, the depth is bounded, and whatever goes wrong ends the unwind with
the reason in ``Unwind.error`` (the frames up to there stay).

Starting points, as the kernel's ``__unwind_start`` has them:

* a sleeping task: ``task->thread.sp`` points at its ``struct inactive_task_frame``
  (the registers ``__switch_to_asm`` pushed); ``ret_addr`` is the return into
  ``__schedule``, ``bp`` its frame pointer, and the caller's sp is just above the
  frame (``start_blocked``);
* a task on a CPU: that CPU's saved registers (``start_registers``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import ReadError
from .orc import CALL, END_OF_STACK, FRAME_POINTER, ORC_REG, REGS, REGS_PARTIAL, UNDEFINED, OrcEntry

__all__ = ["Start", "UnwoundFrame", "Unwind", "unwind", "start_blocked", "start_registers", "PT_REGS",
           "MAX_FRAMES", "ORC", "FRAME_POINTERS", "SCAN"]

#: Evidence names: which way a task's frames were found.
ORC = "orc"
FRAME_POINTERS = "frame pointer"
SCAN = "scan"

MAX_FRAMES = 256
# struct pt_regs (arch/x86/include/asm/ptrace.h), x86_64: byte offset of each register.
PT_REGS = {name: 8 * i for i, name in enumerate(
    ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di", "orig_ax",
     "ip", "cs", "flags", "sp", "ss"))}
IRET_FRAME_OFFSET = PT_REGS["ip"]  # a partial pt_regs: only the hardware's iret frame from ip on is there
# The names a CPU's register set (target/cpustate.py) gives the registers that ORC can base sp on.
_CPU_NAMES = {"dx": "rdx", "di": "rdi", "bp": "rbp", "r10": "r10", "r13": "r13"}
_SP_FROM_REG = {ORC_REG["r10"]: "r10", ORC_REG["r13"]: "r13", ORC_REG["di"]: "di", ORC_REG["dx"]: "dx"}


@dataclass
class Start:
    """Where an unwind begins."""

    ip: int
    sp: int
    bp: int
    slot: int = 0  # the stack slot ip was read from (0: a register)
    signal: bool = False  # ip is exact (an interrupted instruction), not a return address
    registers: Optional[dict[str, int]] = None  # a CPU's full register set, for entries based on r10/r13/di/dx


@dataclass
class UnwoundFrame:
    pc: int
    slot: int  # the stack address that held pc: a return address slot, or pt_regs->ip (0: a register)
    regs: Optional[int] = None  # the struct pt_regs * pc was read from: an interrupt/exception boundary
    sp: int = 0  # the stack pointer while this frame runs: its callee's slot + 8, or pt_regs->sp past an interrupt


@dataclass
class Unwind:
    frames: list[UnwoundFrame] = field(default_factory=list)
    method: str = ORC
    error: Optional[str] = None  # why the unwind stopped before the end of the stack; None: it reached the end
    guessed: list[int] = field(default_factory=list)  # indexes of frames found by the frame-pointer guess in ORC code


class _Stop(Exception):
    pass


def start_blocked(read_u64: Callable[[int], int], thread_sp: int, ret_addr_offset: int, bp_offset: int,
                  frame_size: int, exact_ips: tuple[int, ...] = ()) -> Start:
    """The start of a sleeping task: its ``struct inactive_task_frame`` at ``thread.sp`` (offsets of ``ret_addr``
    and ``bp``, and its size, from the debug info). ``exact_ips``: ``ret_from_fork`` (``ret_from_fork_asm`` since
    v6.6): a task that never ran yet "returns" to the start of it, an exact ip."""
    ip = read_u64(thread_sp + ret_addr_offset)
    return Start(ip, thread_sp + frame_size, read_u64(thread_sp + bp_offset), thread_sp + ret_addr_offset,
                 signal=ip in exact_ips)


def start_registers(registers: dict[str, int]) -> Start:
    """The start of a task current on a CPU: the CPU's registers (``rip``, ``rsp``, ``rbp``...)."""
    return Start(registers.get("rip", 0), registers.get("rsp", 0), registers.get("rbp", 0), 0, signal=True,
                 registers=registers)


def unwind(start: Start, find: Callable[[int], Optional[OrcEntry]], read_u64: Callable[[int], int],
           stacks: list[tuple[int, int]], frame_pointers: bool = False, limit: int = MAX_FRAMES) -> Unwind:
    """The frames from ``start`` outwards, innermost first.

    ``find(ip)``: the ORC entry for ip, or None; ``read_u64``: memory (may raise ReadError); ``stacks``: the
    [low, high) ranges the unwind may read and move through (the task's stack, its CPU's IRQ stack);
    ``frame_pointers``: a kernel without ORC: every frame is a frame-pointer frame.
    """
    result = Unwind(method=FRAME_POINTERS if frame_pointers else ORC)
    result.frames.append(UnwoundFrame(start.ip, start.slot, sp=start.sp))
    walker = _Walker(start, find, read_u64, stacks, frame_pointers)
    try:
        walker.check_start()
        while True:
            if len(result.frames) >= limit:
                raise _Stop(f"more than {limit} frames: a loop in the stack?")
            frame = walker.next()
            if frame is None:
                return result
            if walker.guessed:
                result.guessed.append(len(result.frames))
            result.frames.append(frame)
    except _Stop as e:
        result.error = str(e)
    except ReadError as e:
        result.error = f"unreadable stack: {e}"
    return result


class _Walker:
    """The state of one unwind (the kernel's ``struct unwind_state``)."""

    def __init__(self, start: Start, find: Callable[[int], Optional[OrcEntry]], read_u64: Callable[[int], int],
                 stacks: list[tuple[int, int]], frame_pointers: bool) -> None:
        self.find = find
        self.read_u64 = read_u64
        self.stacks = stacks
        self.frame_pointers = frame_pointers
        self.ip, self.sp, self.bp, self.signal = start.ip, start.sp, start.bp, start.signal
        self.cpu_registers = start.registers  # a register set's values stand for pt_regs until the first call frame
        self.regs: Optional[int] = None  # struct pt_regs * of the last interrupt frame crossed
        self.full_regs = False
        self.prev_regs: Optional[int] = None
        self.stack = -1
        self.left: set[int] = set()
        self.guessed = False

    def check_start(self) -> None:
        self.stack = self._stack_of(self.sp)
        if self.stack < 0:
            raise _Stop(f"sp {self.sp:#x} is on none of the task's stacks")

    def _stack_of(self, address: int) -> int:
        for i, (low, high) in enumerate(self.stacks):
            if low <= address and address + 8 <= high:
                return i
        # The top of a stack is a valid sp (nothing pushed yet) though no slot there can be read.
        for i, (low, high) in enumerate(self.stacks):
            if low <= address <= high:
                return i
        return -1

    def _read(self, address: int) -> int:
        for low, high in self.stacks:
            if low <= address and address + 8 <= high:
                return self.read_u64(address)
        raise _Stop(f"a read at {address:#x} would leave the task's stacks")

    def _reg(self, name: str) -> Optional[int]:
        """A register of the interrupt frame last crossed (the kernel's ``get_reg``)."""
        if self.regs is not None:
            if self.full_regs:
                return self._read(self.regs + PT_REGS[name])
            if self.prev_regs is not None:
                return self._read(self.prev_regs + PT_REGS[name])
            return None
        if self.cpu_registers is not None:
            return self.cpu_registers.get(_CPU_NAMES.get(name, name))
        return None

    def next(self) -> Optional[UnwoundFrame]:
        """Unwind one frame: the caller's frame, or None at the end of the stack."""
        orc: Optional[OrcEntry] = FRAME_POINTER if self.frame_pointers else self.find(self.ip if self.signal else self.ip - 1)
        self.guessed = orc is None
        if orc is None:
            if not self.ip:
                raise _Stop("return address 0")
            orc = FRAME_POINTER  # code ORC does not know (BPF, a trampoline): the kernel guesses the same way
        elif orc.type == UNDEFINED:
            raise _Stop(f"no unwind data for {self.ip:#x} (ORC entry undefined)")
        elif orc.type == END_OF_STACK:
            return None
        signal = orc.signal
        prev_sp, prev_stack = self.sp, self.stack

        indirect = False
        if orc.sp_reg == ORC_REG["sp"]:
            sp = self.sp + orc.sp_offset
        elif orc.sp_reg == ORC_REG["bp"]:
            sp = self.bp + orc.sp_offset
        elif orc.sp_reg == ORC_REG["sp_indirect"]:
            sp, indirect = self.sp, True
        elif orc.sp_reg == ORC_REG["bp_indirect"]:
            sp, indirect = self.bp + orc.sp_offset, True
        elif orc.sp_reg in _SP_FROM_REG:
            value = self._reg(_SP_FROM_REG[orc.sp_reg])
            if value is None:
                raise _Stop(f"the ORC entry of {self.ip:#x} bases sp on %{_SP_FROM_REG[orc.sp_reg]}, which is not known here")
            sp = value
        else:
            raise _Stop(f"the ORC entry of {self.ip:#x} has an unknown sp base register {orc.sp_reg}")
        if indirect:
            sp = self._read(sp)
            if orc.sp_reg == ORC_REG["sp_indirect"]:
                sp += orc.sp_offset
        sp &= (1 << 64) - 1

        if orc.type == CALL:
            slot = sp - 8
            ip = self._read(slot)
            self.ip, self.sp = ip, sp
            self.regs = self.prev_regs = None
            self.cpu_registers = None
            frame = UnwoundFrame(ip, slot, sp=sp)
        elif orc.type == REGS:
            regs = sp
            ip, self.sp = self._read(regs + PT_REGS["ip"]), self._read(regs + PT_REGS["sp"])
            self.ip = ip
            self.regs, self.prev_regs, self.full_regs = regs, None, True
            self.cpu_registers = None
            frame = UnwoundFrame(ip, regs + PT_REGS["ip"], regs, self.sp)
        elif orc.type == REGS_PARTIAL:
            regs = sp - IRET_FRAME_OFFSET
            ip, self.sp = self._read(sp), self._read(sp + PT_REGS["sp"] - IRET_FRAME_OFFSET)
            self.ip = ip
            if self.full_regs:
                self.prev_regs = self.regs
            self.regs, self.full_regs = regs, False
            self.cpu_registers = None
            frame = UnwoundFrame(ip, sp, regs, self.sp)
        else:
            raise _Stop(f"the ORC entry of {self.ip:#x} has an unknown type ({orc.type})")

        if orc.bp_reg == ORC_REG["undefined"]:
            value = self._reg("bp")
            if value is not None:
                self.bp = value
        elif orc.bp_reg == ORC_REG["prev_sp"]:
            self.bp = self._read(sp + orc.bp_offset)
        elif orc.bp_reg == ORC_REG["bp"]:
            self.bp = self._read(self.bp + orc.bp_offset)
        else:
            raise _Stop(f"the ORC entry of {self.ip:#x} has an unknown bp base register {orc.bp_reg}")
        self.signal = signal

        if frame.regs is not None and self._read(frame.regs + PT_REGS["cs"]) & 3:
            return None  # pt_regs of the entry from user space: the kernel stack ends here
        stack = self._stack_of(self.sp)
        if stack < 0:
            raise _Stop(f"sp {self.sp:#x} after {prev_sp:#x} is on none of the task's stacks")
        if stack == prev_stack and self.sp <= prev_sp:
            raise _Stop(f"sp {self.sp:#x} does not grow (was {prev_sp:#x}): a loop in the stack?")
        if stack != prev_stack:
            if stack in self.left:
                raise _Stop(f"sp {self.sp:#x} goes back to a stack the unwind left")
            self.left.add(prev_stack)
            self.stack = stack
        return frame
