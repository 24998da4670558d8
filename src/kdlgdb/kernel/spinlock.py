"""CPUs spinning on a spinlock, and the lock each one spins on.

A ``spin_lock()`` that finds the lock taken goes from ``_raw_spin_lock*`` into
the qspinlock slow path (``native_queued_spin_lock_slowpath``; under a
hypervisor without paravirt spinlocks, e.g. QEMU TCG, its test-and-set loop
``virt_spin_lock`` is inlined there) and stays there until the lock is free.
The lock is the slow path's first argument: the caller of ``_raw_spin_lock*``
loaded it into ``%rdi`` right before the call (``lea lock(%rip),%rdi`` or
``mov $lock,%rdi`` for a static lock), and the slow path keeps it in ``%rdi``.

A spinlock records no owner, except with CONFIG_DEBUG_SPINLOCK, whose ``raw_spinlock`` carries ``magic``,
``owner_cpu`` and ``owner`` (set once the lock is taken, -1 when it is free): that owner is certain. Otherwise
holders are inferred by ``held.py`` from code (a caller that called ``_raw_spin_lock*`` on it without a
release), with the interrupted ``ip`` of a frame counting as the point its function has reached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ReadError
from ..model import CERTAIN, CPU_REGISTERS, Frame, Lock, Owner, Problem, Task
from .cpus import CpuState
from .functions import SPIN_ACQUIRE, SPIN_MASKS, SPIN_SLOW_PATHS, base_name
from .held import MAX_FUNCTION, CodeReader, first_argument
from .layout import KERNEL_SPACE, Kernel
from .stack import source_name

__all__ = ["SpinWait", "spin_wait", "find_spin_waits",
           "decode_spinlock", "interrupt_fix", "interrupt_deadlocks", "masks"]

# qspinlock.val (include/asm-generic/qspinlock_types.h) when CONFIG_NR_CPUS < 16K (Debian: 8192): 8-bit
# locked, 8-bit pending, 2-bit tail index, 14-bit tail CPU + 1. With NR_CPUS >= 16K pending is one bit
# and the tail CPU starts at bit 11: not detected here (no type says which), so queue_tail_cpu would be wrong.
_Q_LOCKED_MASK = 0xFF
_Q_PENDING = 0x100
_Q_TAIL_CPU_SHIFT = 18
# CONFIG_DEBUG_SPINLOCK (include/linux/spinlock_types_raw.h): raw_spinlock.magic is SPINLOCK_MAGIC, and owner
# SPINLOCK_OWNER_INIT ((void *)-1L) while the lock is free.
SPINLOCK_MAGIC = 0xDEAD4EAD
SPINLOCK_OWNER_INIT = 0xFFFFFFFFFFFFFFFF


@dataclass
class SpinWait:
    lock: int
    frame: int  # index of the slow-path frame in the CPU's frames
    caller: Frame  # the frame that called _raw_spin_lock*
    acquire: str  # the _raw_spin_lock* function
    context: str  # "task", "softirq" or "hardirq"
    evidence: str


def spin_wait(k: Kernel, code: CodeReader, state: CpuState) -> Optional[SpinWait]:
    """The spinlock a CPU spins on, from its frames (innermost slow path first), or None."""
    frames = state.frames
    for i, frame in enumerate(frames):
        if base_name(frame.symbol) not in SPIN_SLOW_PATHS or frame.module is not None:
            continue
        # The first _raw_spin_lock* frame outside it, then the function that called it; or, when _raw_spin_lock*
        # tail-called the slow path (CONFIG_DEBUG_SPINLOCK with -Os: _raw_spin_lock jumps to do_raw_spin_lock, its
        # frame is gone), the first frame whose call before its return address is to _raw_spin_lock*.
        for j in range(i + 1, min(i + 4, len(frames))):
            acquire = base_name(frames[j].symbol)
            if acquire in SPIN_ACQUIRE and frames[j].module is None and j + 1 < len(frames):
                caller, via = frames[j + 1], frames[j].describe()
            elif acquire not in SPIN_SLOW_PATHS and code.call_target(frames[j].pc) in SPIN_ACQUIRE:
                caller, acquire = frames[j], code.call_target(frames[j].pc)
                via = f"{acquire}() (a tail call: its frame is gone)"
            else:
                continue
            lock = _lock_argument(k, code, caller, acquire)
            where = "%rdi" if i == 0 else "the interrupted %rdi"
            rdi = state.registers.get("rdi") if i == 0 else state.interrupted_di.get(i)
            if lock is not None:
                evidence = f"{caller.describe()} passes it to {acquire}() (the call before {caller.pc:#x})"
                if rdi == lock:
                    evidence += f"; {where} in {frame.describe()} holds it too"
            elif rdi is not None and rdi >= KERNEL_SPACE:
                lock, evidence = rdi, f"{where} in {frame.describe()} (the slow path's first argument)"
            else:
                return None
            return SpinWait(lock, i, caller, acquire, state.contexts[i] if i < len(state.contexts) else "task",
                            f"CPU {state.cpu} spins in {frame.describe()} called by {via}: " + evidence)
        return None
    return None


def _lock_argument(k: Kernel, code: CodeReader, caller: Frame, acquire: str) -> Optional[int]:
    """The constant first argument of the call that ``caller``'s return address follows, if it calls ``acquire``."""
    if caller.symbol is None or not 5 <= caller.offset <= MAX_FUNCTION:
        return None
    start = caller.pc - caller.offset
    try:
        text = k.read(start, caller.offset)
    except ReadError:
        return None
    if code.call_target(caller.pc) != acquire:  # its last 5 bytes, already read
        return None
    return first_argument(text, len(text) - 5, start)


def decode_spinlock(k: Kernel, address: int) -> dict[str, object]:
    """What a qspinlock's word says: locked, pending, the CPU at the queue's tail."""
    val = k.u32(address)
    details: dict[str, object] = {"val": f"{val:#x}", "locked": bool(val & _Q_LOCKED_MASK)}
    if val & _Q_PENDING:
        details["pending"] = True
    if val >> _Q_TAIL_CPU_SHIFT:
        details["queue_tail_cpu"] = (val >> _Q_TAIL_CPU_SHIFT) - 1
    return details


def interrupt_fix(context: str) -> str:
    """The acquire that keeps a ``context`` handler away while the lock is held."""
    return "spin_lock_bh" if context == "softirq" else "spin_lock_irqsave"


def find_spin_waits(k: Kernel, code: CodeReader, cpus: list[CpuState], tasks: dict[int, Task],
                    problems: list[Problem]) -> tuple[dict[int, Lock], dict[int, SpinWait]]:
    """Set ``waits_on`` of each task whose CPU spins on a spinlock; return the locks and the waits by task."""
    locks: dict[int, Lock] = {}
    waits: dict[int, SpinWait] = {}
    for state in cpus:
        task = tasks.get(state.task)
        if task is None:
            continue
        wait = spin_wait(k, code, state)
        if wait is None:
            continue
        task.waits_on, task.wait_evidence, task.wait_source = wait.lock, wait.evidence, CPU_REGISTERS
        if task.cpu_context is not None:  # the context of the spinning frame (a timer interrupt may be on top of it)
            task.cpu_context.context = wait.context
        waits[task.address] = wait
        lock = locks.setdefault(wait.lock, Lock(wait.lock, "spinlock"))
        lock.waiters.append(task.address)
        try:
            lock.details = decode_spinlock(k, wait.lock)
            owner = debug_spinlock_owner(k, wait.lock, lock.details)
            if owner is not None and owner in tasks and not lock.owners:
                lock.owners.append(Owner(owner, CERTAIN, "raw_spinlock.owner (CONFIG_DEBUG_SPINLOCK)"))
        except ReadError as e:
            problems.append(Problem("lock", f"spinlock {wait.lock:#x}", str(e)))
    return locks, waits


def debug_spinlock_owner(k: Kernel, address: int, details: dict[str, object]) -> Optional[int]:
    """The task that holds the spinlock at ``address`` as CONFIG_DEBUG_SPINLOCK records it (None without that
    option, when the lock's magic is wrong or it records no owner); its owner_cpu goes into ``details``."""
    t = "struct raw_spinlock"
    owner, magic, cpu = k.member(t, "owner"), k.member(t, "magic"), k.member(t, "owner_cpu")
    if owner is None or magic is None:
        return None
    if k.u32(address + magic[0]) != SPINLOCK_MAGIC:
        details["magic"] = f"{k.u32(address + magic[0]):#x} (not SPINLOCK_MAGIC)"
        return None
    task = k.u64(address + owner[0])
    if cpu is not None:
        details["owner_cpu"] = int.from_bytes(k.read(address + cpu[0], 4), "little", signed=True)
    return task if task not in (0, SPINLOCK_OWNER_INIT) else None


def masks(acquire: str, context: str) -> bool:
    """Whether a lock taken with ``acquire`` keeps ``context`` handlers off its CPU."""
    return acquire in SPIN_MASKS.get(context, ())


def interrupt_deadlocks(k: Kernel, code: CodeReader, cpus: list[CpuState], waits: dict[int, SpinWait],
                        tasks: dict[int, Task]) -> None:
    """Note on each task's ``cpu_context`` when an interrupt handler on its CPU spins on a lock that the
    code it interrupted (the same task, lower on the same stack) took without masking that interrupt."""
    by_task = {state.task: state for state in cpus}
    for address, wait in waits.items():
        task, state = tasks[address], by_task.get(address)
        if wait.context not in ("softirq", "hardirq") or state is None or task.cpu_context is None:
            continue
        below = [n for n in sorted(state.interrupted) if n > wait.frame]
        if not below:
            continue
        for frame in state.frames[below[0]:]:
            found = [a for a in code.held_in(frame) if a.lock == wait.lock and not masks(a.function, wait.context)]
            if not found:
                continue
            acq = found[0]
            site = Frame(acq.call_site, acq.frame.symbol, acq.call_site - (acq.frame.pc - acq.frame.offset), acq.frame.module)
            where = f"{site.describe()} ({acq.call_site:#x}) took it with {acq.function}()"
            if k.in_image(acq.call_site):
                line = k.target.source_line(k.unrelocate(acq.call_site + 5))
                if line is not None:
                    where += f" ({source_name(*line)})"
            task.cpu_context.interrupt_acquire = where
            task.cpu_context.fix = interrupt_fix(wait.context)
            break
