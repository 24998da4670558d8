"""Which lock a blocked task waits on, from the lock argument of its slow-path frame.

A task asleep in ``__mutex_lock`` has its ``struct mutex *lock`` somewhere the debug info knows at that pc:
a callee-saved register (saved on the stack by the scheduler's frames below it), a stack slot. Where the
exact unwind reaches the slow path (``SLOW_PATHS``), the target reads that variable
(:meth:`~kdlgdb.target.base.Target.frame_variables`: gdb unwinds the frames with the vmlinux's call-frame
information, one at a time). That is the strongest answer to "which lock": the compiler's own record of the
argument the slow path was called with. The wait-list scan and ``task->blocked_on`` come after it.

Asking gdb costs about a millisecond a task. The tasks asleep at one chain of pcs (the same return
addresses from ``__schedule`` to the slow path) keep the variable at one place on their stacks: the
offsets from the saved stack pointer that held the answer for each task asked so far are kept, and once two
tasks have answered, a task whose stack holds one same value at all those offsets is read there. The target
is asked again where they differ (and its answer narrows the offsets), and to confirm a value that disagrees
with the other sources. Where the debug info has no location for the variable at that pc
(optimised out), or the target cannot unwind (crash, kdlgdb's own dump reader), the other sources decide.

:func:`take_frame_lock` is the rule (pure, over model objects): the frame's lock is the task's; where it
disagrees with the other sources, the frame wins and the disagreement becomes a Problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..model import FRAME_VARIABLE, Frame, Lock, Problem, Task
from .backtrace import switch_frame_registers
from .functions import RT_PATH, RT_SLEEP, RTLOCK_SLEEP, RWBASE, SCHEDULER, base_name, past_scheduler
from .layout import Kernel
from .stack import Stack
from .unwind import SCAN

__all__ = ["FrameValue", "FrameVariables", "take_frame_lock", "exact_frames", "rt_lock_frames", "SLOW_PATH_VARIABLES"]

# The parameter of each kind's slow path (kernel/functions.py's SLOW_PATHS) that points to the lock:
# ``struct mutex *lock`` of __mutex_lock and __mutex_lock_common, ``struct semaphore *sem`` of ___down_common,
# ``struct rw_semaphore *sem`` of rwsem_down_{read,write}_slowpath, ``struct percpu_rw_semaphore *sem`` of
# percpu_rwsem_wait.
SLOW_PATH_VARIABLES = {"mutex": ("lock",), "semaphore": ("sem",), "rwsem": ("sem",), "percpu_rwsem": ("sem",)}
# The rt_mutex slow path's functions whose ``struct rt_mutex_base *lock`` is the lock's base; rwbase's take
# ``struct rwbase_rt *rwb``, the rt_mutex_base's container (PREEMPT_RT's rw_semaphore and rwlock_t).
RT_LOCK_FRAMES = (RT_SLEEP | RTLOCK_SLEEP) - RWBASE - SCHEDULER
RT_LOCK_VARIABLES = ("lock",)
RWBASE_VARIABLES = ("rwb",)

LEARN_FROM = 2  # tasks of one chain whose answers must share a single stack offset before it is trusted


@dataclass
class FrameValue:
    """A slow-path frame's lock variable: ``name`` = ``value`` in ``frame``, and how it was read."""

    name: str
    value: int
    frame: Frame
    asked: bool  # the target evaluated it for this task (else read at the offset its chain's answers share)

    def describe(self) -> str:
        how = ("its DWARF location at that pc, evaluated by the debugger" if self.asked else
               "its DWARF location at that pc: the stack slot where the debugger found it for other tasks at the same pcs")
        return f"{self.name} = {self.value:#x} in {self.frame.describe()} ({how})"


@dataclass
class _Chain:
    """What is known of one chain of pcs: the variable's name and offset from the saved sp, once learnt."""

    name: Optional[str] = None
    offsets: Optional[set[int]] = None  # offsets from the saved sp that held every answer so far
    answers: int = 0
    no_location: bool = False  # the debug info has no location for it at the slow path's pc
    unanswered: bool = False  # the target could not unwind this chain (or has no DWARF unwinder)


def exact_frames(task: Task, last: int) -> bool:
    """Whether ``task.frames[: last + 1]`` come from an unwind (not a scan, nor a bundle that does not say) with
    neither an interrupt boundary nor a frame-pointer guess among them."""
    return task.unwinder not in (SCAN, "") and not any(f.regs or f.guessed for f in task.frames[: last + 1])


def rt_lock_frames(k: Kernel, frames: list[Frame]) -> list[tuple[int, tuple[str, ...], int]]:
    """The frames of an rt_mutex wait that name its rt_mutex_base, innermost first: (index, the variable, what to
    add to its value for the base): ``lock`` of the rt_mutex slow path, ``rwb`` of rwbase's (plus the offset of
    ``rtmutex`` in ``struct rwbase_rt``, PREEMPT_RT v5.15)."""
    rwbase = k.member("struct rwbase_rt", "rtmutex")
    found: list[tuple[int, tuple[str, ...], int]] = []
    for i in range(past_scheduler(frames, RT_PATH), len(frames)):
        name = base_name(frames[i].symbol)
        if frames[i].module is not None or name not in RT_PATH:
            break
        if name in RT_LOCK_FRAMES:
            found.append((i, RT_LOCK_VARIABLES, 0))
        elif name in RWBASE and rwbase is not None:
            found.append((i, RWBASE_VARIABLES, rwbase[0]))
    return found


class FrameVariables:
    """The lock variables of slow-path frames, per :mod:`this module <kdlgdb.kernel.framevars>`."""

    def __init__(self, k: Kernel, switch_frame_size: int) -> None:
        self.k = k
        self.switch_frame_size = switch_frame_size
        self.registers = switch_frame_registers(k)
        self.chains: dict[tuple[int, ...], _Chain] = {}
        self.asked = 0  # questions put to the target

    def lock(self, task: Task, last: int, stack: Stack, names: tuple[str, ...], confirm: bool = False) -> Optional[FrameValue]:
        """The first of ``names`` in ``task.frames[last]`` (a slow path; the frames below it exact), or None.
        ``confirm``: ask the target even when the chain's offset is known."""
        frames = task.frames[: last + 1]
        key = tuple(self.k.unrelocate(f.pc) for f in frames)
        chain = self.chains.setdefault(key, _Chain())
        if chain.no_location or chain.unanswered:
            return None
        if chain.answers >= LEARN_FROM and chain.offsets and chain.name is not None and not confirm:
            there = {stack.values[o // 8] for o in chain.offsets if o // 8 < len(stack.values)}
            if len(there) == 1:
                return FrameValue(chain.name, there.pop(), frames[-1], asked=False)
        self.asked += 1
        answer = self.k.target.frame_variables(key, self._registers(stack), names)
        name = next((n for n in names if answer is not None and n in answer), None)
        if answer is None or name is None:
            chain.unanswered = True
            return None
        value = answer[name]
        if value is None:
            chain.no_location = True
            return None
        self._learn(chain, name, value, stack, task, last)
        return FrameValue(name, value, frames[-1], asked=True)

    def _registers(self, stack: Stack) -> dict[str, int]:
        """The innermost frame's callee-saved registers and rsp, from the inactive_task_frame at the saved sp."""
        regs = {register: stack.values[offset // 8] for register, offset in self.registers if offset // 8 < len(stack.values)}
        regs["rsp"] = stack.sp + self.switch_frame_size
        return regs

    def _learn(self, chain: _Chain, name: str, value: int, stack: Stack, task: Task, last: int) -> None:
        """Narrow the chain's offsets to those that hold ``value`` on this task's stack, below the slow path's caller."""
        if chain.name is not None and chain.name != name:
            chain.offsets = set()  # inlined differently: ask every time
            return
        end = task.frames[last + 1].sp if last + 1 < len(task.frames) else stack.top
        here = {slot - stack.sp for slot in stack.slots_holding(value) if slot < end}
        chain.name = name
        chain.offsets = here if chain.offsets is None else chain.offsets & here
        chain.answers += 1


def take_frame_lock(task: Task, lock: int, kind: str, evidence: str, locks: dict[int, Lock]) -> tuple[Optional[Lock], Optional[Problem]]:
    """Make ``lock`` (the slow-path frame's variable) the lock ``task`` waits on, the strongest source.

    Agreeing with what the other sources found: the source becomes FRAME_VARIABLE, the evidence both. Else the
    frame wins: the task leaves the other lock's waiters (the lock goes when no waiter is left) and joins
    ``lock``'s, and the disagreement is returned as a Problem. Returns (the Lock made for ``lock`` when
    ``locks`` had none: its owners are the caller's to decode; the Problem, if any).
    """
    where = f"task {task.pid} ({task.comm})"
    before, source, why = task.waits_on, task.wait_source, task.wait_evidence
    task.wait_source = FRAME_VARIABLE
    if before == lock:
        task.wait_evidence = f"{evidence}; {why}" if why else evidence
        return None, None
    problem = None
    if before is not None:
        problem = Problem("wait", where, f"its slow-path frame says it waits on {lock:#x}, the {source or 'other evidence'} "
                                         f"said {before:#x} ({why}): the frame's lock is taken")
        old = locks.get(before)
        if old is not None and task.address in old.waiters:
            old.waiters.remove(task.address)
            if not old.waiters:
                del locks[before]
    task.waits_on, task.wait_evidence = lock, evidence
    made = None
    if lock not in locks:
        made = locks[lock] = Lock(lock, kind)
    if task.address not in locks[lock].waiters:
        locks[lock].waiters.append(task.address)
    return made, problem
