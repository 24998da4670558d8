"""kd-task: gdb's own ``bt``, ``frame N``, ``info locals``, ``info registers`` and ``p`` on any task.

A gdb Python unwinder (``gdb.unwinder``) registered for the program space gives
the caller of gdb's innermost frame the registers of the chosen task where it
sleeps: ``rip`` the return address into ``__schedule`` and ``rsp``, ``rbp``,
``rbx``, ``r12``..``r15`` from its ``struct inactive_task_frame`` at
``thread.sp`` (what ``__switch_to_asm`` pushed), or, for a task on a CPU, that
CPU's registers from the dump's notes. From there gdb unwinds with the
vmlinux's own DWARF call-frame information, so every frame has its callee-saved
registers and its variables; where gdb has no debug info for a pc (a module
frame), the unwinder gives the caller from kdlgdb's exact ORC unwind.

gdb's frame #0 stays the thread's own (the registers of a core file or a live
vCPU cannot be replaced); a frame filter leaves it out of ``bt``, so the task's
frames are #1 and up. ``kd-task`` alone turns the unwinder off.
"""
from __future__ import annotations

import weakref

from typing import Optional

import gdb  # type: ignore[import-not-found]
import gdb.unwinder  # type: ignore[import-not-found]

from ..errors import KdlError, ReadError
from ..kernel.backtrace import Backtracer
from ..kernel.cpus import CpuState, cpu_of_task
from ..kernel.tasks import per_cpu_runqueues
from ..kernel.layout import Kernel, le64
from ..kernel.stack import StackReader
from ..kernel.symbols import Symbols
from ..kernel.unwind import PT_REGS, start_blocked, unwind
from ..model import Task
from ..target.gdb import is_origin, past_origin, thread_origin, unwind_info

__all__ = ["select_task", "selected", "TaskUnwinder", "frame_variables"]

_CPU_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
                  "r14", "r15", "rip", "eflags")


class TaskUnwinder(gdb.unwinder.Unwinder):
    """Makes gdb's frame #1 the innermost frame of the selected task (``registers``), and unwinds the task's
    frames gdb has no call-frame information for from ``exact`` (pc, sp) -> the caller's registers."""

    def __init__(self) -> None:
        super().__init__("kdlgdb task")
        self.registers: Optional[dict[str, int]] = None
        self.exact: dict[tuple[int, int], dict[str, int]] = {}
        # The (pc, sp) whose caller gdb's CFI cannot find: across an interrupt's pt_regs or a stack switch
        # (call_on_irqstack: the CFI of sysvec_* does not follow it); ours is used there even in the vmlinux.
        self.forced: set[tuple[int, int]] = set()
        self.in_image: Optional[tuple[int, int]] = None  # the vmlinux's text, where gdb has CFI
        self.task: Optional[Task] = None
        # (pc, sp) of the dump thread's own innermost frame, whose caller is made the task: gdb's frame #0, or
        # when the thread stopped in inlined code, the real frame those inline frames share pc and sp with.
        self.origin: Optional[tuple[int, int]] = None

    def __call__(self, pending):  # noqa: ANN001 - gdb.PendingFrame
        if self.registers is None:
            return None
        pc, sp = int(pending.read_register("rip")), int(pending.read_register("rsp"))
        if (pc, sp) == self.origin:
            caller = self.registers
        else:
            caller = self.exact.get((pc, sp))
            if caller is None or ((pc, sp) not in self.forced
                                  and self.in_image is not None and self.in_image[0] <= pc < self.in_image[1]):
                return None  # gdb's DWARF unwinder: it knows the callee-saved registers too
        return unwind_info(pending, pending.read_register("rsp"), caller)


class _HideCpuFrame:
    """A frame filter: while a task is selected, ``bt`` starts at its first frame (#1), not the CPU's #0."""

    def __init__(self, unwinder: TaskUnwinder) -> None:
        self.name = "kdlgdb task"
        self.priority = 100
        self.enabled = True
        self.unwinder = unwinder

    def filter(self, frames):  # noqa: ANN001
        if self.unwinder.registers is None:
            return frames
        # The dump thread's own frames (#0, and the calls inlined there) share its pc and sp; a pc of 0 is past the
        # task's outermost frame.
        return (f for f in frames if f.inferior_frame().pc() != 0 and not self._own(f.inferior_frame()))

    def _own(self, frame) -> bool:  # noqa: ANN001 - gdb.Frame
        return is_origin(frame, self.unwinder.origin)


_unwinder: Optional[TaskUnwinder] = None


def _install() -> TaskUnwinder:
    global _unwinder
    if _unwinder is None:
        _unwinder = TaskUnwinder()
        gdb.unwinder.register_unwinder(None, _unwinder, replace=True)
        gdb.frame_filters[_HideCpuFrame(_unwinder).name] = _HideCpuFrame(_unwinder)
    return _unwinder


_tracers: "weakref.WeakKeyDictionary[Kernel, Backtracer]" = weakref.WeakKeyDictionary()


def pt_regs_registers(k: Kernel, regs: int) -> dict[str, int]:
    """gdb's names of the general registers an interrupt or exception saved in the struct pt_regs at ``regs``
    (an unreadable one: none, and gdb shows them unknown)."""
    try:
        data = k.read(regs, PT_REGS["ss"] + 8)
    except ReadError:
        return {}
    names = {"bp": "rbp", "bx": "rbx", "ax": "rax", "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi",
             **{f"r{n}": f"r{n}" for n in range(8, 16)}}  # not flags: gdb's eflags is 4 bytes, unwind_info gives 8
    return {gdb_name: le64(data, PT_REGS[name]) for name, gdb_name in names.items()}


def _backtracer(k: Kernel) -> Backtracer:
    """One Backtracer (its module symbols, ORC tables) per Kernel, for every kd-task and ``kd-bt -f`` on it."""
    if k not in _tracers:
        symbols = Symbols(k, [])
        _tracers[k] = Backtracer(k, symbols, StackReader(k, symbols))
    return _tracers[k]


def select_task(k: Kernel, task: Optional[Task]) -> str:
    """Make ``task`` the one gdb's frame commands show (None: the dump's own thread again); a line saying so."""
    unwinder = _install()
    if task is None:
        unwinder.registers, unwinder.exact, unwinder.task = None, {}, None
        gdb.invalidate_cached_frames()
        return "gdb shows the dump's own thread again"
    tracer = _backtracer(k)
    symbols, stacks = tracer.symbols, tracer.stacks
    state = cpu_of_task(k, per_cpu_runqueues(k), task, symbols, stacks) if task.on_cpu else None
    if task.on_cpu and state is None and not k.target.cpu_registers():
        raise KdlError(f"task {task.pid} is on CPU {task.cpu} and the target has no registers of that CPU")
    if state is not None:  # else asleep, or the next task of a switch its CPU has not made yet (its saved sp is good)
        registers = {name: state.registers[name] for name in _CPU_REGISTERS if name in state.registers}
        bounds = [(task.stack_base, task.stack_base + stacks.thread_size)]
        irq = reader_irq_stack(state)
        result = tracer.from_registers(state.registers, bounds + ([irq] if irq else []))
    else:
        sp = k.u64(task.address + k.offset("struct task_struct", "thread.sp"))
        frame_size = tracer.frame_layout[2]
        data = k.read(sp, frame_size)
        registers = {name: le64(data, offset) for name, offset in tracer.switch_registers if offset + 8 <= len(data)}
        registers["rip"] = le64(data, tracer.frame_layout[0])
        registers["rsp"] = sp + frame_size
        if not task.stack_base <= sp < task.stack_base + stacks.thread_size:
            raise KdlError(f"task {task.pid}'s saved sp {sp:#x} is not inside its stack")
        start = start_blocked(k.u64, sp, *tracer.frame_layout, exact_ips=tracer.exact_ips(registers["rip"]))
        result = unwind(start, tracer.orc.find, k.u64, [(task.stack_base, task.stack_base + stacks.thread_size)],
                        tracer.frame_pointers)
    unwinder.exact, unwinder.forced = {}, set()
    sps = [registers["rsp"]] + [f.sp for f in result.frames[1:]]
    for i in range(len(result.frames) - 1):
        callee, caller = result.frames[i], result.frames[i + 1]
        key = (callee.pc, sps[i])
        unwinder.exact[key] = {"rip": caller.pc, "rsp": sps[i + 1]}
        if caller.regs is not None:  # an interrupted frame: every register it had is in the pt_regs
            unwinder.exact[key] = {**pt_regs_registers(k, caller.regs), **unwinder.exact[key]}
            unwinder.forced.add(key)
        elif not 0 <= sps[i + 1] - sps[i] < stacks.thread_size:  # the caller runs on another stack
            unwinder.forced.add(key)
    if result.frames and result.error is None:
        # The unwind reached the end of the kernel stack (a kthread's ret_from_fork, or the pt_regs of an entry from
        # user space): gdb's frames stop there too, instead of guessing on through the entry code into user addresses.
        end = (result.frames[-1].pc, sps[-1])
        unwinder.exact[end] = {"rip": 0, "rsp": 0}
        unwinder.forced.add(end)
    text = (k.symbol("_stext") or 0, k.symbol("_etext") or 0)
    unwinder.in_image = text if k.slide == 0 or k.target.symbol("_stext") == text[0] else None
    unwinder.registers = None  # the dump thread's own frame, unwound by gdb alone
    gdb.invalidate_cached_frames()
    unwinder.origin = thread_origin()
    unwinder.registers, unwinder.task = registers, task
    gdb.invalidate_cached_frames()
    first = past_origin(unwinder.origin)[1]  # the task's first frame number: after the dump thread's own
    where = (f"on CPU {task.cpu}" if state is not None else
             f"on CPU {task.cpu}, whose registers are not on its stack: from its saved stack pointer" if task.on_cpu
             else "sleeping")
    note = ""
    if unwinder.in_image is None:
        note = (f"; gdb's symbols are not relocated by the KASLR offset {k.kaslr_offset:#x}: for frame variables, "
                f"`symbol-file -o {k.slide:#x} VMLINUX` first")
    return (f'gdb shows task {task.pid} ("{task.comm}", {where}) from frame #{first} on: bt, frame N, info locals, '
            f"info registers, p; `kd-task` alone returns to the dump's own thread{note}")


def reader_irq_stack(state: CpuState) -> Optional[tuple[int, int]]:
    """The [low, high) of the IRQ stack the CPU's registers are on, when they are (the stack below its saved-rsp word)."""
    rsp = state.registers.get("rsp", 0)
    for stack in state.stacks:
        if stack.sp <= rsp < stack.top and state.task_stack is not stack:
            return stack.sp, stack.top + 8
    return None


def selected() -> Optional[Task]:
    """The task kd-task selected, or None (gdb shows the dump's own thread)."""
    return _unwinder.task if _unwinder is not None else None


def frame_variables(number: int, pc: int) -> list[str]:
    """``name = value`` of the arguments and locals of the task's frame ``number`` (kd-bt -f): gdb's frames at
    that frame's ``pc`` (a function and the calls inlined into it share one), innermost block out; nothing when
    gdb unwound the task otherwise or has no debug info there."""
    groups: list[list] = []
    frame = past_origin(_unwinder.origin if _unwinder is not None else None)[0]
    while frame is not None and len(groups) <= number:
        if groups and groups[-1][0].pc() == frame.pc() and groups[-1][-1].type() == gdb.INLINE_FRAME:
            groups[-1].append(frame)
        else:
            groups.append([frame])
        frame = frame.older()
    if len(groups) <= number or groups[number][0].pc() != pc:
        return ["(gdb unwound this task otherwise: no variables)"]
    lines: list[str] = []
    for frame in groups[number]:
        lines.extend(_variables(frame))
    return lines


def _variables(frame) -> list[str]:  # noqa: ANN001
    try:
        block = frame.block()
    except RuntimeError:
        return []
    name = frame.name() or "??"
    lines: list[str] = []
    seen: set[str] = set()
    while block is not None:
        for symbol in block:
            if not (symbol.is_argument or symbol.is_variable) or symbol.name in seen:
                continue
            seen.add(symbol.name)
            try:
                value = frame.read_var(symbol, block)
                text = "<optimized out>" if value.is_optimized_out else value.format_string(max_elements=8, max_depth=1)
            except (gdb.error, RuntimeError) as e:
                text = f"<{e}>"
            kind = "arg" if symbol.is_argument else "local"
            lines.append(f"{name}: {kind} {symbol.name} = {' '.join(text.split())[:160]}")
        if block.function is not None:
            break
        block = block.superblock
    return lines
