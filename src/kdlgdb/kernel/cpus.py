"""Each CPU at the moment its registers were saved: which CPU, what it runs, its stack.

A task that is current on a CPU has no saved stack pointer in ``thread.sp``;
its frames start at the CPU's own registers (``Target.cpu_registers``: the
dump's per-CPU notes, or a gdbstub's vCPU threads). For each register set this
module

* maps it to a Linux CPU: its GS base is that CPU's ``__per_cpu_offset[cpu]``
  (in kernel mode GS points at the CPU's per-cpu area; in user mode the kernel's
  value is in ``kernel_gs_base``), and/or its ``rsp`` lies in the stack of that
  CPU's current task (``rq->curr``) or in that CPU's IRQ stack;
* lists its frames: ``rip`` first, then the return addresses from ``rsp`` up.
  On the IRQ stack (``hardirq_stack_ptr``: its top word holds the stack pointer
  of the code it interrupted, which ``call_on_irqstack`` pushed there) the walk
  goes on from that pointer on the task's stack. An interrupt frame (``struct
  pt_regs`` the entry code saved: ``ip``, ``cs`` = ``__KERNEL_CS``, ``flags``,
  ``sp``, ``ss``) adds the interrupted ``ip`` as a frame: the point the
  interrupted function had reached;
* says in which context each frame runs: ``hardirq`` / ``softirq`` / ``task``,
  from the interrupt entry and softirq functions between it and the next
  interrupt frame, and, for the innermost code, from the CPU's ``preempt_count``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from ..errors import ReadError
from ..model import CpuContext, Frame, Problem, Task
from .backtrace import Backtracer
from .layout import KERNEL_SPACE, Kernel
from .stack import Stack, StackReader
from .symbols import Symbols
from .tasks import Runqueue
from .functions import HARDIRQ_PREFIXES, SOFTIRQ_FUNCTIONS, base_name

__all__ = ["CpuState", "cpu_states", "cpu_of_task", "apply_cpu_states", "frame_context", "map_registers", "CONTEXTS"]

CONTEXTS = ("task", "softirq", "hardirq")
KERNEL_CS = 0x10  # __KERNEL_CS on x86_64 (GDT entry 2)
KERNEL_SS = (0x18, 0x0)  # __KERNEL_DS, or a NULL selector (allowed in 64-bit ring 0)
EFLAGS_FIXED = 0x2  # bit 1 of RFLAGS is always set
# struct pt_regs (arch/x86/include/asm/ptrace.h), in 8-byte slots: r15 ... di at 14, orig_ax 15, ip 16,
# cs 17, flags 18, sp 19, ss 20.
PT_REGS_IP = 16
PT_REGS_DI = 14
PT_REGS_SLOTS = 21
# preempt_count bits (include/linux/preempt.h): SOFTIRQ_OFFSET is set while softirqs are served,
# the HARDIRQ bits while a hard interrupt is; x86 keeps PREEMPT_NEED_RESCHED inverted in bit 31.
SOFTIRQ_OFFSET = 0x100
HARDIRQ_MASK = 0xF0000
NMI_MASK = 0xF00000
PREEMPT_NEED_RESCHED = 0x80000000  # arch/x86/include/asm/preempt.h




@dataclass
class CpuState:
    """One CPU: its registers, the task current on it, its frames and their contexts."""

    cpu: int
    registers: dict[str, int]
    task: int  # struct task_struct * of rq->curr
    evidence: str  # how the register set was matched to this CPU
    frames: list[Frame] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)  # contexts[i]: context of frames[i]
    interrupted: set[int] = field(default_factory=set)  # indexes of frames that are an interrupted ip
    interrupted_di: dict[int, int] = field(default_factory=dict)  # frame index -> saved %rdi of its pt_regs
    preempt_count: Optional[int] = None
    user: bool = False  # the CPU was in user mode
    stacks: list[Stack] = field(default_factory=list)  # what was read from rsp up: the IRQ stack, then the task's
    task_stack: Optional[Stack] = None  # the part of them on the task's own stack
    unwinder: str = "scan"  # how ``frames`` were found: "orc", "frame pointer" or "scan"
    unwind_error: Optional[str] = None  # why an exact unwind stopped early

    @property
    def context(self) -> str:
        """What the CPU ran when it stopped: ``task``, ``softirq``, ``hardirq`` or ``user``."""
        if self.user:
            return "user"
        return self.contexts[0] if self.contexts else "task"


@dataclass
class _CpuArea:
    cpu: int
    per_cpu_offset: int
    task: int
    task_stack: tuple[int, int]  # [base, top) of rq->curr's stack
    irq_stack: Optional[tuple[int, int]]  # [bottom, top) of the hardirq stack; top - 8 holds the saved rsp
    preempt_count: Optional[int]


def map_registers(registers: dict[str, int], areas: list[_CpuArea]) -> tuple[Optional[_CpuArea], str]:
    """The CPU a register set belongs to, and the evidence; (None, why not) when nothing matches.

    The GS base (kernel mode) or the kernel GS base (user mode) naming a CPU's per-cpu offset is
    the CPU's own record; ``rsp`` inside a CPU's current task stack or IRQ stack confirms it, or
    decides alone when the GS bases are unknown.
    """
    by_gs: Optional[_CpuArea] = None
    gs_text = ""
    for key, label in (("gs_base", "GS base"), ("kernel_gs_base", "kernel GS base")):
        value = registers.get(key)
        found = [a for a in areas if value and a.per_cpu_offset == value]
        if len(found) == 1:
            by_gs, gs_text = found[0], f"{label} {value:#x} is __per_cpu_offset[{found[0].cpu}]"
            break
    rsp = registers.get("rsp", 0)
    by_stack = [(a, "its current task's stack") for a in areas if a.task_stack[0] <= rsp < a.task_stack[1]]
    by_stack += [(a, "its IRQ stack") for a in areas if a.irq_stack and a.irq_stack[0] <= rsp < a.irq_stack[1]]
    if by_gs is not None:
        confirm = [what for a, what in by_stack if a is by_gs]
        if confirm:
            return by_gs, f"{gs_text}; rsp {rsp:#x} is in {confirm[0]}"
        return by_gs, gs_text
    if len(by_stack) == 1:
        area, what = by_stack[0]
        return area, f"rsp {rsp:#x} is in CPU {area.cpu}'s {what.removeprefix('its ')}"
    return None, f"rsp {rsp:#x} is in no CPU's current-task or IRQ stack and no GS base names a CPU"


def frame_context(frames: list[Frame], interrupted: set[int], start: int) -> str:
    """The context of ``frames[start]``: the first interrupt or softirq function from it outwards,
    before the next interrupted frame (which runs in the context below the interrupt); else ``task``."""
    for i in range(start + 1, len(frames)):
        if i in interrupted:
            break
        name = base_name(frames[i].symbol)
        if frames[i].module is not None:
            continue
        if name in SOFTIRQ_FUNCTIONS:
            return "softirq"
        if name.startswith(HARDIRQ_PREFIXES):
            return "hardirq"
    return "task"


class _CpuReader:
    def __init__(self, k: Kernel, symbols: Symbols, stacks: StackReader, backtracer: Optional[Backtracer] = None) -> None:
        self.k = k
        self.backtracer = backtracer
        self.symbols = symbols
        self.stacks = stacks
        self.thread_size = stacks.thread_size
        # v6.2 moved hardirq_stack_ptr and preempt_count from per-cpu variables of their own into
        # struct pcpu_hot (Peter Zijlstra's "x86/percpu: Move current_task to pcpu_hot" series).
        self.hot = k.symbol("pcpu_hot") if k.has_member("struct pcpu_hot", "preempt_count") else None
        self.irq_stack_size = k.target.type_size("struct irq_stack") or self.thread_size

    def _percpu(self, name: str, hot_member: str, offset: int) -> Optional[int]:
        """Address of a per-cpu variable (or pcpu_hot member) for the CPU at ``offset``."""
        member = self.k.member("struct pcpu_hot", hot_member) if self.hot is not None else None
        if self.hot is not None and member is not None:
            return self.hot + offset + member[0]
        # Before v6.2, or a member that a kernel's pcpu_hot does not have: a per-cpu variable of its own.
        address = self.k.symbol(name)
        return address + offset if address is not None else None

    def area(self, rq: Runqueue, stack_base: int) -> _CpuArea:
        offset = rq.per_cpu_offset
        irq_stack = None
        tos_at = self._percpu("hardirq_stack_ptr", "hardirq_stack_ptr", offset)
        if tos_at is not None:
            try:
                tos = self.k.u64(tos_at)
                if tos:  # the top-of-stack word (IRQ stack top - 8): where call_on_irqstack saves rsp
                    irq_stack = (tos + 8 - self.irq_stack_size, tos + 8)
            except ReadError:
                pass
        count = None
        count_at = self._percpu("__preempt_count", "preempt_count", offset)
        if count_at is not None:
            try:
                count = self.k.u32(count_at) & ~PREEMPT_NEED_RESCHED
            except ReadError:
                pass
        return _CpuArea(rq.cpu, offset, rq.curr, (stack_base, stack_base + self.thread_size), irq_stack, count)

    def state(self, area: _CpuArea, registers: dict[str, int], evidence: str) -> CpuState:
        state = CpuState(area.cpu, registers, area.task, evidence, preempt_count=area.preempt_count)
        rip, rsp = registers.get("rip", 0), registers.get("rsp", 0)
        if not self.symbols.is_text(rip):
            state.user = rip < KERNEL_SPACE
            return state
        state.frames.append(self._frame(rip, rsp))
        segments: list[Stack] = []
        if area.irq_stack and area.irq_stack[0] <= rsp <= area.irq_stack[1] - 8:  # at or below the saved-rsp word
            top = area.irq_stack[1]
            if rsp < top - 8:
                segments.append(Stack(rsp, self.k.read(rsp, top - 8 - rsp)))
            rsp = self.k.u64(top - 8)  # the interrupted code's stack pointer
        base, top = area.task_stack
        if base <= rsp < top:
            state.task_stack = Stack(rsp, self.k.read(rsp, top - rsp))
            segments.append(state.task_stack)
        state.stacks = segments
        for stack in segments:
            self._scan(stack, state)
        self._unwind(state, area)
        count = area.preempt_count
        for i in range(len(state.frames)):
            context = frame_context(state.frames, state.interrupted, i)
            if i == 0 and count is not None:  # the CPU's own record of where it is now
                context = "hardirq" if count & (HARDIRQ_MASK | NMI_MASK) else "softirq" if count & SOFTIRQ_OFFSET else "task"
            state.contexts.append(context)
        return state

    def _unwind(self, state: CpuState, area: _CpuArea) -> None:
        """Replace the scan's frames with the exact unwind from the CPU's registers, across its IRQ stack and the
        interrupt frames on the way (each an interrupted frame, with the %rdi its pt_regs saved), where it
        finds more than the CPU's own ip."""
        if self.backtracer is None:
            return
        stacks = [area.task_stack] + ([area.irq_stack] if area.irq_stack else [])
        result = self.backtracer.from_registers(state.registers, stacks)
        if len(result.frames) < 2:
            return
        interrupted = {i for i, f in enumerate(result.frames) if f.regs is not None}
        try:
            saved_di = {i: self.k.u64(result.frames[i].regs + 8 * PT_REGS_DI) for i in interrupted}  # type: ignore[operator]
        except ReadError:
            return
        state.frames = self.backtracer.frames(result, first_sp=state.registers.get("rsp", 0))
        state.interrupted, state.interrupted_di = interrupted, saved_di
        state.unwinder, state.unwind_error = result.method, result.error

    def _frame(self, pc: int, sp: int) -> Frame:
        symbol, offset, module = self.symbols.lookup(pc)
        return Frame(pc, symbol, offset, module, sp)

    def _scan(self, stack: Stack, state: CpuState) -> None:
        """Return addresses and interrupted ips on ``stack``, appended to ``state.frames`` in stack order."""
        found = {f.sp: f for f in self.stacks.frames(stack)}
        saved_di: dict[int, int] = {}
        values = stack.values
        for i in range(PT_REGS_IP, len(values) - 4):
            ip = values[i]
            if values[i + 1] != KERNEL_CS or values[i + 4] not in KERNEL_SS or not values[i + 2] & EFLAGS_FIXED:
                continue
            if not stack.sp <= values[i + 3] <= stack.top or not self.symbols.is_text(ip):
                continue
            slot = stack.sp + 8 * i
            found[slot] = self._frame(ip, slot)
            saved_di[slot] = values[i - PT_REGS_IP + PT_REGS_DI]
        for slot in sorted(found):
            if slot in saved_di:
                state.interrupted.add(len(state.frames))
                state.interrupted_di[len(state.frames)] = saved_di[slot]
            state.frames.append(found[slot])


def cpu_states(k: Kernel, runqueues: list[Runqueue], tasks: dict[int, Task], symbols: Symbols,
               stacks: StackReader, problems: list[Problem], backtracer: Optional[Backtracer] = None) -> list[CpuState]:
    """Every CPU whose registers the target has, mapped to its Linux CPU, with frames (empty when the
    target has no per-CPU registers): exactly unwound with ``backtracer``, else the scan's."""
    registers = k.target.cpu_registers()
    if not registers or not runqueues:
        return []
    reader = _CpuReader(k, symbols, stacks, backtracer)
    areas = []
    for rq in runqueues:
        task = tasks.get(rq.curr)
        areas.append(reader.area(rq, task.stack_base if task else 0))
    states: dict[int, CpuState] = {}
    mapped: dict[int, int] = {}  # CPU -> the register set mapped to it
    for n, regs in enumerate(registers):
        area, evidence = map_registers(regs, areas)
        if area is None:
            problems.append(Problem("cpu registers", f"register set {n} (rip {regs.get('rip', 0):#x})", evidence))
            continue
        if area.cpu in mapped:
            problems.append(Problem("cpu registers", f"register set {n}", f"CPU {area.cpu} already has register set "
                                    f"{mapped[area.cpu]}: {evidence}"))
            continue
        mapped[area.cpu] = n
        area, evidence = _switching_from(area, regs, evidence, tasks, reader.thread_size)
        try:
            states[area.cpu] = reader.state(area, regs, evidence)
        except ReadError as e:
            problems.append(Problem("cpu stack", f"CPU {area.cpu}", str(e)))
    return [states[cpu] for cpu in sorted(states)]


def _registers_on(area: _CpuArea, registers: dict[str, int]) -> bool:
    """Whether the registers are ``area``'s current task's: user mode, or ``rsp`` on its stack or the IRQ stack."""
    rsp = registers.get("rsp", 0)
    return (registers.get("rip", 0) < KERNEL_SPACE or area.task_stack[0] <= rsp < area.task_stack[1]
            or (area.irq_stack is not None and area.irq_stack[0] <= rsp < area.irq_stack[1]))


def _switching_from(area: _CpuArea, registers: dict[str, int], evidence: str, tasks: dict[int, Task],
                    thread_size: int) -> tuple[_CpuArea, str]:
    """A CPU caught in a context switch before ``switch_to``: ``rq->curr`` is the next task already, the registers
    are still on the previous one's stack (its ``on_cpu`` still set). The registers belong to the task whose
    stack holds ``rsp``; else ``area`` as it is."""
    rsp = registers.get("rsp", 0)
    if _registers_on(area, registers):
        return area, evidence
    for address, task in tasks.items():
        if task.on_cpu and address != area.task and task.stack_base <= rsp < task.stack_base + thread_size:
            curr = tasks.get(area.task)
            to = f" to {curr.name()}" if curr is not None else ""
            return (replace(area, task=address, task_stack=(task.stack_base, task.stack_base + thread_size)),
                    f"{evidence}; rsp {rsp:#x} is on the stack of {task.name()}: CPU {area.cpu} is switching from it{to}")
    return area, evidence


def cpu_of_task(k: Kernel, runqueues: list[Runqueue], task: Task, symbols: Symbols, stacks: StackReader,
                backtracer: Optional[Backtracer] = None) -> Optional[CpuState]:
    """The CPU ``task`` is current on, with its registers (mapped as ``cpu_states`` maps them), or None: also for
    the next task of a context switch caught before ``switch_to`` (the registers are the previous task's, and
    its saved stack pointer is still good), while the previous one gets them."""
    registers = k.target.cpu_registers() or []
    reader = _CpuReader(k, symbols, stacks, backtracer)
    areas = [reader.area(rq, task.stack_base if rq.curr == task.address else 0) for rq in runqueues]
    for regs in registers:
        area, evidence = map_registers(regs, areas)
        if area is None:
            continue
        if area.task != task.address:
            area, evidence = _switching_from(area, regs, evidence, {task.address: task}, reader.thread_size)
        elif not _registers_on(area, regs):
            return None
        if area.task == task.address:
            return reader.state(area, regs, evidence)
    return None


def apply_cpu_states(states: list[CpuState], tasks: dict[int, Task]) -> None:
    """Give each on-CPU task its CPU's frames and a ``cpu_context``."""
    for state in states:
        task = tasks.get(state.task)
        if task is None:
            continue
        task.frames = state.frames
        task.unwinder, task.unwind_error = state.unwinder, state.unwind_error
        rip = state.registers.get("rip", 0)
        symbol = state.frames[0].describe() if state.frames else None
        task.cpu_context = CpuContext(state.cpu, state.context, rip, symbol, state.evidence, now=state.context)
