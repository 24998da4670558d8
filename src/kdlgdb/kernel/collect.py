"""Collect a Snapshot: every task, what the blocked ones wait on, who holds it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Optional

from ..errors import CorruptError, ReadError
from ..model import INFERRED, Lock, Owner, Problem, Snapshot, Task
from ..target.base import Target
from .backtrace import Backtracer
from .blocked import find_blocked_in
from .cpus import CpuState, apply_cpu_states, cpu_states
from .held import CodeReader
from .layout import Kernel, le64
from .naming import name_locks
from .lockdep import LockdepLayout, held_lock_owners, lockdep_on, read_held_locks, task_held_locks
from .locks import LockKind, lock_kinds, last_reader
from .freeze import name_freezes
from .owners import Timing, check_owners
from .percpu_rwsem import find_writer_waits, percpu_rwsem_kind
from .rtmutex import RtLayout, find_rt_waits
from .spinlock import find_spin_waits, interrupt_deadlocks
from .stack import Stack, StackReader, add_source_lines
from .symbols import Symbols
from .unwind import SCAN
from .tasks import Runqueue, TaskLayout, for_each_task, per_cpu_runqueues, read_task, task_state_letters
from .waiters import BlockedOn, StackRanges, Wait, find_wait, find_wait_blocked_on, slow_path
from .workqueue import find_work_waits

__all__ = ["collect", "lock_sources", "crash_time", "LOCK_SOURCES"]

Progress = Callable[[str, int, int], None]
PROGRESS_EVERY = 100  # tasks between two progress reports


#: Where lock data can come from besides the wait-list scan (always there): label, type, member.
LOCK_SOURCES = (
    ("task->blocker", "struct task_struct", "blocker"),  # DETECT_HUNG_TASK_BLOCKER, v6.16
    ("task->blocker_mutex", "struct task_struct", "blocker_mutex"),  # v6.15 only
    ("task->blocked_on", "struct task_struct", "blocked_on"),  # DEBUG_MUTEXES, or every kernel from v6.17
    ("task->pi_blocked_on", "struct task_struct", "pi_blocked_on"),  # RT_MUTEXES
    ("DEBUG_MUTEXES", "struct mutex", "magic"),
    ("lockdep", "struct task_struct", "held_locks"),
    ("PREEMPT_RT", "struct mutex", "rtmutex"),  # mutex built on rt_mutex
    ("semaphore.last_holder", "struct semaphore", "last_holder"),  # v6.16
)


def lock_sources(k: Kernel) -> list[str]:
    """The lock data sources this kernel offers, for kd-info and the report."""
    return ["wait-list scan"] + [label for label, t, member in LOCK_SOURCES if k.has_member(t, member)]


def crash_time(vmcoreinfo: Mapping[str, str]) -> Optional[int]:
    """VMCOREINFO's ``CRASHTIME`` (seconds since the epoch, written by the kernel that crashed: kdump), or None."""
    try:
        return int(vmcoreinfo["CRASHTIME"])
    except (KeyError, ValueError):
        return None


def collect(source: Target | Kernel, progress: Optional[Progress] = None, source_lines: bool = True,
            exact: bool = True) -> Snapshot:
    """Read everything the wait-for analysis needs from a target (or a Kernel already made of one,
    so that KASLR and the banner are not worked out twice). Without ``source_lines`` the frames
    have no file:line (``add_source_lines`` can add them later, for output that shows them). Without
    ``exact`` the stacks of sleeping tasks are scanned for return addresses instead of unwound.

    KdlError for what makes analysis impossible (wrong vmlinux, missing types);
    anything wrong with one task or lock becomes a Problem and is skipped.
    """
    k = source if isinstance(source, Kernel) else Kernel(source)
    snap = Snapshot(release=k.release, kaslr_offset=k.kaslr_offset, sources=lock_sources(k), dump=k.target.describe(),
                    crash_time=crash_time(k.vmcoreinfo))
    problems = snap.problems
    layout = TaskLayout.detect(k)
    letters = task_state_letters(k)
    symbols = Symbols(k, problems)
    stacks = StackReader(k, symbols)
    backtracer = Backtracer(k, symbols, stacks) if exact else None
    k.forget_kept()  # what an interrupted collect kept

    tasks: dict[int, Task] = {}
    lockdep = LockdepLayout.detect(k)
    held_raw: dict[int, tuple[int, bytes]] = {}  # lockdep_depth and held_locks, from each task_struct read
    saved_sp: dict[int, int] = {}  # thread.sp: where a sleeping task's stack begins
    arrival: dict[int, int] = {}  # sched_info.last_arrival: when it last got a CPU
    started: dict[int, int] = {}  # start_time: when it was forked (CLOCK_MONOTONIC)
    exec_start: dict[int, int] = {}  # se.exec_start: when it last ran (its runqueue's clock_task; 0: unknown)

    def add(address: int, data: Optional[bytes] = None) -> None:
        if address in tasks or not address:
            return
        try:
            data = data if data is not None else k.read(address, layout.size)
            tasks[address] = read_task(k, layout, letters, address, data)
            saved_sp[address] = le64(data, layout.sp)
            found = task_held_locks(lockdep, data) if lockdep is not None else None
            if found is not None:
                held_raw[address] = found
            if layout.last_arrival is not None:
                arrival[address] = le64(data, layout.last_arrival)
            if layout.start_time is not None:
                started[address] = le64(data, layout.start_time)
            if layout.exec_start is not None:
                exec_start[address] = le64(data, layout.exec_start)
        except ReadError as e:
            problems.append(Problem("task", f"{address:#x}", str(e)))

    add(k.need_symbol("init_task"))
    for address, data in for_each_task(k, layout, problems):
        add(address, data)
        if progress is not None and len(tasks) % PROGRESS_EVERY == 0:
            progress("tasks", len(tasks), 0)
    try:
        runqueues = per_cpu_runqueues(k)
    except ReadError as e:
        problems.append(Problem("runqueues", "runqueues", str(e)))
        runqueues = []
    for rq in runqueues:
        add(rq.idle)
        if rq.curr in tasks:
            tasks[rq.curr].on_cpu = True
            tasks[rq.curr].cpu = rq.cpu
    clocks = {rq.cpu: rq.clock for rq in runqueues}
    snap.cpus = len(runqueues)
    snap.uptime_ns = max(clocks.values()) if clocks else None
    for address, last in arrival.items():
        task, now = tasks[address], clocks.get(tasks[address].cpu)
        task.last_ran_ns = 0 if task.on_cpu else (now - last if now and last and now >= last else None)

    # Stacks: only tasks that are off CPU have a meaningful saved stack pointer.
    # A stack is read whole once; the wait-list walks read its waiter structs again from it.
    live: dict[int, Stack] = {}
    for n, (address, task) in enumerate(tasks.items()):
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress("stacks", n, len(tasks))
        if task.on_cpu:
            continue
        try:
            stack = stacks.read(task.stack_base, saved_sp[address])
            if stack is not None:
                live[address] = stack
                k.keep(stack.sp, stack.data)
                if backtracer is not None:
                    bt = backtracer.blocked(stack, task.stack_base)
                    task.frames, task.unwinder, task.unwind_error = bt.frames, bt.method, bt.error
                else:
                    task.frames, task.unwinder = stacks.frames(stack), SCAN
        except ReadError as e:
            problems.append(Problem("stack", f"task {task.pid} ({task.comm}) {task.stack_base:#x}", str(e)))

    # Tasks current on a CPU: their frames start at the CPU's saved registers.
    on_cpu = cpu_states(k, runqueues, tasks, symbols, stacks, problems, backtracer)
    apply_cpu_states(on_cpu, tasks)

    if source_lines:
        add_source_lines(k, tasks.values())
    snap.tasks = sorted(tasks.values(), key=lambda t: (t.pid, t.address))
    kinds = lock_kinds(k)
    percpu = percpu_rwsem_kind(k)
    if percpu is not None:
        kinds[percpu.name] = percpu
    ranges = StackRanges([t.stack_base for t in tasks.values()], stacks.thread_size)
    code = CodeReader(k, symbols)
    rt = RtLayout.detect(k)
    # PREEMPT_RT's adaptive spin: an rt_mutex waiter spins on its CPU while the owner runs (rtmutex_spin_on_owner),
    # queued in the waiter tree all the same; its stack is the one its CPU's registers point into.
    spinning = {s.task: s.task_stack for s in on_cpu if s.task_stack is not None and s.task in tasks}
    locks = find_rt_waits(k, rt, code, tasks, {**spinning, **live}, problems, ranges) if rt is not None else {}
    locks.update(_find_waits(k, kinds, tasks, live, ranges, problems))
    # After the wait-list scan: a reader queued on a percpu rw-semaphore is not one of its readers.
    find_writer_waits(k, symbols, tasks, live, ranges, locks, problems)
    # Before holders are inferred: a frozen superblock's sb_writers is held by the freeze, not a task.
    name_freezes(k, locks, problems)
    spin_locks, spins = find_spin_waits(k, code, on_cpu, tasks, problems)
    locks.update(spin_locks)
    check_owners(locks.values(), tasks, _timing(tasks, started, exec_start, runqueues),
                 lambda task, lock: _took_before(code, task, lock.address))
    _infer_holders(k, code, locks, tasks, live, on_cpu)
    if lockdep is not None:
        snap.lockdep_on = lockdep_on(k)
        read_held_locks(k, lockdep, symbols, tasks, problems, held_raw)
        held_lock_owners(k, locks, tasks, bool(snap.lockdep_on))
    interrupt_deadlocks(k, code, on_cpu, spins, tasks)
    find_blocked_in(k, symbols, tasks, live, ranges, locks, problems)
    # After find_blocked_in: a flush waits on a completion, which names the work item or workqueue.
    find_work_waits(k, symbols, tasks, locks, problems)
    k.forget_kept()
    snap.locks = sorted(locks.values(), key=lambda lk: lk.address)
    for lock in snap.locks:
        lock.symbol, lock.module = symbols.name(lock.address)
    name_locks(k, snap.locks, tasks, stacks.thread_size, symbols)  # the heap object, per-CPU variable or stack of the others
    return snap


def _find_waits(
    k: Kernel,
    kinds: dict[str, LockKind],
    tasks: dict[int, Task],
    live: dict[int, Stack],
    ranges: StackRanges,
    problems: list[Problem],
) -> dict[int, Lock]:
    """Set ``waits_on`` of every task in a lock slow path; return the locks waited on."""
    locks: dict[int, Lock] = {}
    known: dict[int, Wait] = {}
    blocked_on = BlockedOn.detect(k) if "mutex" in kinds else None
    for address, task in tasks.items():
        if address not in live or task.waits_on is not None:
            continue
        found = slow_path(task.frames)
        where = f"task {task.pid} ({task.comm})"
        wait = None
        if blocked_on is not None and (found is None or found[0] == "mutex"):
            # The kernel's own pointer, strongest, and whatever the compiler made of the slow path's frames.
            try:
                wait = find_wait_blocked_on(k, kinds["mutex"], blocked_on, address, ranges, known)
            except (ReadError, CorruptError):
                wait = None  # a stale or broken pointer: the waiter on the stack still tells
        if wait is not None:
            kind = kinds["mutex"]
        elif found is None:
            continue
        else:
            kind_name = found[0]
            kind = kinds.get(kind_name)
            if kind is None:
                problems.append(Problem("wait", where, f"sleeps in a {kind_name} slow path this kernel's {kind_name} layout does not support"))
                continue
            try:
                wait = find_wait(k, kind, address, live[address], ranges, known)
            except (ReadError, CorruptError) as e:
                problems.append(Problem("wait", where, str(e)))
                continue
        if wait is None and found is not None:
            problems.append(Problem("wait", where, f"in {task.frames[found[1]].describe()} but no {kind.waiter} of it is linked into a wait list"))
            continue
        task.waits_on = wait.lock
        task.wait_evidence = wait.evidence
        if wait.lock not in locks:
            lock = Lock(wait.lock, kind.name, waiters=[t for _, t in wait.waiters])
            try:
                lock.owners, lock.details = kind.decode(k, wait.lock)
            except ReadError as e:
                problems.append(Problem("lock", f"{kind.struct} {wait.lock:#x}", str(e)))
            locks[wait.lock] = lock
    return locks


# The registers a CPU's note saves that can hold a lock's address (not rip, rsp, the segment bases).
GENERAL_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def _infer_holders(k: Kernel, code: CodeReader, locks: dict[int, Lock], tasks: dict[int, Task], live: dict[int, Stack],
                   on_cpu: list[CpuState]) -> None:
    """Add inferred owners to locks whose owner the kernel does not record.

    Evidence, strongest first: a caller on the task's stack that called an acquire function on the lock
    (a constant operand in its code) and no release; the lock's address in the registers of the CPU the
    task runs on (a lock reached through a pointer stays in a callee-saved register until it is released);
    the lock's address on its stack (a saved register, a spill slot). The lock a task waits on is not
    counted for it.
    """
    ownerless = {a for a, lk in locks.items() if not lk.current_owners() and lk.holder is None}
    if not ownerless:
        return
    cpus = {state.task: state for state in on_cpu}
    for address, task in tasks.items():
        if task.state not in ("D", "S") and not task.waits_on and task.cpu_context is None:
            continue
        found: dict[int, str] = {}
        if task.frames and (task.waits_on or task.state == "D" or task.cpu_context is not None):
            for acq in code.held_by_frames(task.frames):
                if acq.lock in ownerless and acq.lock not in found:
                    found[acq.lock] = f"{acq.describe()} and has not released it"
        cpu = cpus.get(address)
        if cpu is not None:
            for name in GENERAL_REGISTERS:
                value = cpu.registers.get(name)
                if value in ownerless and value != task.waits_on and value not in found:
                    found[value] = f"its address is in %{name} of CPU {cpu.cpu}, which runs the task"
        stacks = [live[address]] if address in live else cpu.stacks if cpu is not None else []
        for stack in stacks:
            for value in sorted(ownerless.intersection(stack.values), key=stack.values.index):
                if value != task.waits_on and value not in found:
                    found[value] = f"its address is on the task's stack at {stack.slots_holding(value)[0]:#x}"
        for lock_address, evidence in found.items():
            lock = locks[lock_address]
            mode = "read" if lock.type == "rwsem" else "exclusive"
            lock.owners.append(Owner(address, INFERRED, evidence, mode))
    for lock in locks.values():
        hint = last_reader(lock.details) if lock.address in ownerless else None
        if hint is not None and not lock.current_owners() and hint in tasks:
            lock.owners.append(Owner(hint, INFERRED, "rw_semaphore.owner names it as the last reader (may be stale)", "read"))
        for owner in lock.owners:
            if owner.task == hint:
                owner.evidence += "; also the last reader in rw_semaphore.owner"


def _timing(tasks: dict[int, Task], started: dict[int, int], exec_start: dict[int, int],
            runqueues: list[Runqueue]) -> dict[int, Timing]:
    """Each task's :class:`~kdlgdb.kernel.owners.Timing`: start_time, and se.exec_start moved onto its
    runqueue's clock by how far that runqueue's clock_task is behind its clock now (an upper bound)."""
    lag = {rq.cpu: rq.clock - rq.clock_task for rq in runqueues if rq.clock_task is not None and rq.clock >= rq.clock_task}
    timing = {}
    for address, task in tasks.items():
        last = exec_start.get(address)
        behind = lag.get(task.cpu)
        timing[address] = Timing(started.get(address) or None, last + behind if last and behind is not None else None)
    return timing


def _took_before(code: CodeReader, task: Task, lock: int) -> Optional[str]:
    """Evidence that ``task`` acquired ``lock`` in a frame outside the call it is in now, else None."""
    for acq in code.held_by_frames(task.frames):
        if acq.lock == lock:
            return acq.describe()
    return None
