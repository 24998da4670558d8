"""Collect a Snapshot: every task, what the blocked ones wait on, who holds it."""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import CorruptError, ReadError
from ..model import INFERRED, RT_WAITER, Lock, Owner, Problem, Snapshot, Task
from ..target.base import Target
from .backtrace import Backtracer
from .blocked import find_blocked_in
from .cpus import CpuState, apply_cpu_states, cpu_states
from .held import CodeReader
from .layout import KERNEL_SPACE, Kernel, le64
from .naming import name_locks
from .lockdep import LockdepLayout, held_lock_owners, lockdep_on, read_held_locks, task_held_locks
from .locks import LockKind, lock_kinds, last_reader
from .framevars import SLOW_PATH_VARIABLES, FrameVariables, FrameValue, exact_frames, rt_lock_frames, take_frame_lock
from .freeze import name_freezes
from .superblocks import SuperBlocks
from .owners import Timing, check_owners
from .percpu_rwsem import find_writer_waits, percpu_rwsem_kind
from .rtmutex import RtLayout, find_rt_waits
from .spinlock import SpinWait, find_spin_waits, interrupt_deadlocks
from .stack import Stack, StackReader, add_source_lines
from .symbols import Symbols
from .unwind import SCAN
from .tasks import Runqueue, TaskLayout, for_each_task, per_cpu_runqueues, read_task, task_state_letters
from .functions import slow_path
from .waiters import BlockedOn, StackRanges, Wait, find_wait, find_wait_blocked_on
from .workqueue import find_work_waits

__all__ = ["collect", "Collection", "STAGES", "lock_sources", "crash_time", "LOCK_SOURCES"]

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


@dataclass
class Collection:
    """What the stages of :data:`STAGES` share. Each stage reads some of these fields and writes others
    (its docstring says which); nothing else passes between stages.

    Made by :meth:`start`, which reads the layouts every stage needs (no task yet).
    """

    k: Kernel
    snap: Snapshot  #: the result; ``snap.problems`` is :attr:`problems`
    symbols: Symbols
    stacks: StackReader
    code: CodeReader  #: the acquire calls in a function's code, for inferring holders
    layout: TaskLayout
    letters: list[str]  #: the kernel's task_state_array
    lockdep: Optional[LockdepLayout]  #: None: no CONFIG_LOCKDEP
    progress: Optional[Progress] = None
    source_lines: bool = True
    backtracer: Optional[Backtracer] = None  #: exact unwinds (ORC, frame pointers); None: the stack scan
    tasks: dict[int, Task] = field(default_factory=dict)  #: task_struct address -> Task
    facts: dict[int, TaskFacts] = field(default_factory=dict)  #: what else the task_struct read says, by address
    runqueues: list[Runqueue] = field(default_factory=list)
    live: dict[int, Stack] = field(default_factory=dict)  #: the saved stacks of the tasks off CPU
    ranges: StackRanges = field(default_factory=lambda: StackRanges([], 0))  #: every task's stack
    on_cpu: list[CpuState] = field(default_factory=list)  #: the CPUs whose registers the target has
    locks: dict[int, Lock] = field(default_factory=dict)  #: lock address -> Lock, every lock some task waits on
    spins: dict[int, SpinWait] = field(default_factory=dict)  #: task address -> the spinlock its CPU spins on
    superblocks: Optional[SuperBlocks] = None  #: the super_blocks list, walked once (made by start)

    @property
    def problems(self) -> list[Problem]:
        return self.snap.problems

    @functools.cached_property
    def sleeping_kinds(self) -> dict[str, LockKind]:
        """The layouts of the locks a task sleeps on with a waiter on its stack, by kind name; read once for
        the stages that need them."""
        kinds = lock_kinds(self.k)
        percpu = percpu_rwsem_kind(self.k)
        if percpu is not None:
            kinds[percpu.name] = percpu
        return kinds

    @functools.cached_property
    def rt(self) -> Optional[RtLayout]:
        """This kernel's rt_mutex layout, read once; None: no rt_mutex here."""
        return RtLayout.detect(self.k)

    @classmethod
    def start(cls, source: Target | Kernel, progress: Optional[Progress] = None, source_lines: bool = True,
              exact: bool = True) -> Collection:
        """The context before the first stage: the Snapshot's header and the layouts. Without ``exact`` the
        stacks of sleeping tasks are scanned for return addresses instead of unwound."""
        k = source if isinstance(source, Kernel) else Kernel(source)
        snap = Snapshot(release=k.release, kaslr_offset=k.kaslr_offset, sources=lock_sources(k), dump=k.target.describe(),
                        debug_info=k.target.debug_info,
                        crash_time=crash_time(k.vmcoreinfo))
        layout = TaskLayout.detect(k)
        letters = task_state_letters(k)
        symbols = Symbols(k, snap.problems)
        stacks = StackReader(k, symbols)
        k.forget_kept()  # what an interrupted collect kept
        return cls(k, snap, symbols, stacks, CodeReader(k, symbols), layout, letters, LockdepLayout.detect(k),
                   progress, source_lines, Backtracer(k, symbols, stacks) if exact else None)

    def __post_init__(self) -> None:
        self.superblocks = self.superblocks or SuperBlocks(self.k)

    def run(self, stages: Iterable[Stage]) -> Collection:
        for stage in stages:
            stage(self)
        return self


Stage = Callable[[Collection], None]


@dataclass
class TaskFacts:
    """What a stage after :func:`read_tasks` needs of a task_struct that the Task does not carry."""

    saved_sp: int  #: thread.sp: where a sleeping task's stack begins
    held: Optional[tuple[int, bytes]] = None  #: lockdep_depth and held_locks
    last_arrival: Optional[int] = None  #: sched_info.last_arrival: when it last got a CPU
    started: Optional[int] = None  #: start_time: when it was forked (CLOCK_MONOTONIC)
    exec_start: Optional[int] = None  #: se.exec_start: when it last ran (its runqueue's clock_task; 0: unknown)


def _add_task(c: Collection, address: int, data: Optional[bytes] = None) -> None:
    """Read one task_struct (unless known) into ``c.tasks`` and ``c.facts``."""
    if address in c.tasks or not address:
        return
    k, layout = c.k, c.layout
    try:
        data = data if data is not None else k.read(address, layout.size)
        c.tasks[address] = read_task(k, layout, c.letters, address, data)
        facts = c.facts[address] = TaskFacts(le64(data, layout.sp))
        facts.held = task_held_locks(c.lockdep, data) if c.lockdep is not None else None
        if layout.last_arrival is not None:
            facts.last_arrival = le64(data, layout.last_arrival)
        if layout.start_time is not None:
            facts.started = le64(data, layout.start_time)
        if layout.exec_start is not None:
            facts.exec_start = le64(data, layout.exec_start)
    except ReadError as e:
        c.problems.append(Problem("task", f"{address:#x}", str(e)))


def read_tasks(c: Collection) -> None:
    """init_task and every task on the task list. Reads the layouts only. Writes ``tasks``, ``facts``."""
    _add_task(c, c.k.need_symbol("init_task"))
    for address, data in for_each_task(c.k, c.layout, c.problems):
        _add_task(c, address, data)
        if c.progress is not None and len(c.tasks) % PROGRESS_EVERY == 0:
            c.progress("tasks", len(c.tasks), 0)


def read_runqueues(c: Collection) -> None:
    """Each CPU's runqueue: its idle task, which task it runs, its clock.
    Reads ``tasks``, ``facts``. Writes ``runqueues``, ``tasks`` (idle tasks; ``on_cpu``, ``cpu``,
    ``last_ran_ns``), ``snap.cpus``, ``snap.uptime_ns``."""
    try:
        c.runqueues = per_cpu_runqueues(c.k)
    except ReadError as e:
        c.problems.append(Problem("runqueues", "runqueues", str(e)))
        c.runqueues = []
    tasks = c.tasks
    for rq in c.runqueues:
        _add_task(c, rq.idle)
        if rq.curr in tasks:
            tasks[rq.curr].on_cpu = True
            tasks[rq.curr].cpu = rq.cpu
    clocks = {rq.cpu: rq.clock for rq in c.runqueues}
    c.snap.cpus = len(c.runqueues)
    c.snap.uptime_ns = max(clocks.values()) if clocks else None
    for address, facts in c.facts.items():
        if facts.last_arrival is None:
            continue
        task, last = tasks[address], facts.last_arrival
        now = clocks.get(task.cpu)
        task.last_ran_ns = 0 if task.on_cpu else (now - last if now and last and now >= last else None)


def read_stacks(c: Collection) -> None:
    """The saved stack of every task off CPU, read whole once (later stages read waiter structs from it:
    the Kernel keeps it), and its frames. Reads ``tasks``, ``facts``. Writes ``live``, ``ranges``,
    ``tasks`` (``frames``)."""
    tasks = c.tasks
    for n, (address, task) in enumerate(tasks.items()):
        if c.progress is not None and n % PROGRESS_EVERY == 0:
            c.progress("stacks", n, len(tasks))
        if task.on_cpu:
            continue  # only a task off CPU has a meaningful saved stack pointer (read_cpus: a switch's other side)
        _read_saved_stack(c, address, task)
    c.ranges = StackRanges([t.stack_base for t in tasks.values()], c.stacks.thread_size)


def _read_saved_stack(c: Collection, address: int, task: Task) -> None:
    """``task``'s stack from its saved stack pointer (``thread.sp``), and its frames."""
    try:
        stack = c.stacks.read(task.stack_base, c.facts[address].saved_sp)
        if stack is not None:
            c.live[address] = stack
            c.k.keep(stack.sp, stack.data)
            if c.backtracer is not None:
                bt = c.backtracer.blocked(stack, task.stack_base)
                task.frames, task.unwinder, task.unwind_error = bt.frames, bt.method, bt.error
            else:
                task.frames, task.unwinder = c.stacks.frames(stack), SCAN
    except ReadError as e:
        c.problems.append(Problem("stack", f"task {task.name()} {task.stack_base:#x}", str(e)))


def read_cpus(c: Collection) -> None:
    """The tasks current on a CPU: their frames start at the CPU's saved registers. A CPU caught switching: the
    task whose stack holds its rsp runs; the other side of the switch is read from its saved stack pointer.
    Reads ``runqueues``, ``tasks``, ``facts``. Writes ``on_cpu``, ``tasks`` (``frames``, ``cpu_context``),
    ``live`` (the other side of a switch)."""
    c.on_cpu = cpu_states(c.k, c.runqueues, c.tasks, c.symbols, c.stacks, c.problems, c.backtracer)
    apply_cpu_states(c.on_cpu, c.tasks)
    # A CPU caught in a context switch: both tasks say on_cpu (the kernel clears prev's only after the switch), its
    # registers are on one task's stack, and the other's saved stack pointer is still (or already) good.
    running = {s.task for s in c.on_cpu}
    with_registers = {s.cpu for s in c.on_cpu}  # a CPU without (a live target's missing vCPU): nothing to tell by
    for address, task in c.tasks.items():
        if task.on_cpu and address not in running and task.cpu in with_registers and address not in c.live:
            _read_saved_stack(c, address, task)


def list_tasks(c: Collection) -> None:
    """The Snapshot's task list, with file:line on the frames unless ``source_lines`` is off
    (``add_source_lines`` can add them later). Reads ``tasks``. Writes ``snap.tasks``, ``tasks`` (``frames``)."""
    if c.source_lines:
        add_source_lines(c.k, c.tasks.values())
    c.snap.tasks = sorted(c.tasks.values(), key=lambda t: (t.pid, t.address))


def find_rt_mutex_waits(c: Collection) -> None:
    """Tasks asleep on an rt_mutex (PREEMPT_RT's mutexes, rwsems and spinlocks too), and a waiter spinning on
    its CPU while the owner runs (rtmutex_spin_on_owner: queued in the waiter tree all the same; its stack is
    the one its CPU's registers point into). First: the wait-list scan skips the tasks it claims.
    Reads ``tasks``, ``live``, ``on_cpu``, ``ranges``. Writes ``locks``, ``tasks`` (``waits_on``)."""
    rt = c.rt
    if rt is None:
        return
    spinning = {s.task: s.task_stack for s in c.on_cpu if s.task_stack is not None and s.task in c.tasks}
    c.locks.update(find_rt_waits(c.k, rt, c.code, c.tasks, {**spinning, **c.live}, c.problems, c.ranges))


def find_lock_waits(c: Collection) -> None:
    """The wait-list scan: every task off CPU in a lock slow path (mutex, rwsem, semaphore), found by its
    waiter struct on its stack linked into the lock's wait list, or by ``task->blocked_on``.
    Reads ``tasks``, ``live``, ``ranges``; skips the tasks that already wait. Writes ``locks``,
    ``tasks`` (``waits_on``, ``wait_evidence``)."""
    k, tasks, live, ranges, problems = c.k, c.tasks, c.live, c.ranges, c.problems
    kinds = c.sleeping_kinds
    locks = c.locks
    known: dict[int, Wait] = {}
    blocked_on = BlockedOn.detect(k) if "mutex" in kinds else None
    for address, task in tasks.items():
        if address not in live or task.waits_on is not None:
            continue
        found = slow_path(task.frames)
        where = f"task {task.name()}"
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
        task.wait_source = wait.source
        if wait.lock not in locks:
            lock = Lock(wait.lock, kind.name, waiters=[t for _, t in wait.waiters])
            _decode(k, kind, lock, problems)
            locks[wait.lock] = lock


def _decode(k: Kernel, kind: LockKind, lock: Lock, problems: list[Problem]) -> None:
    """A lock's owners and details from its own fields."""
    try:
        lock.owners, lock.details = kind.decode(k, lock.address)
    except ReadError as e:
        problems.append(Problem("lock", f"{kind.struct} {lock.address:#x}", str(e)))


def find_frame_locks(c: Collection) -> None:
    """The lock argument of each blocked task's slow-path frame where the debug info locates it (``lock`` of
    __mutex_lock, ``sem`` of __down_common, rwsem_down_*_slowpath, percpu_rwsem_wait): the strongest source of
    the lock it waits on (kernel/framevars.py). It agrees with the wait-list scan: the source becomes "frame";
    it disagrees: the frame wins, a Problem says so. On an rt_mutex (``lock``, the rt_mutex_base, of the rt
    slow path) the frame confirms the waiter tree's lock, or a Problem says it does not. Only frames an exact
    unwind found. Reads ``tasks``, ``live``, ``locks``. Writes ``tasks`` (``waits_on``, ``wait_source``,
    ``wait_evidence``), ``locks`` (waiters; a lock only the frame found)."""
    if c.backtracer is None:
        return
    k, kinds = c.k, c.sleeping_kinds
    frames = FrameVariables(k, c.backtracer.frame_layout[2])
    rt = c.rt if any(t.wait_source == RT_WAITER for t in c.tasks.values()) else None
    for address, task in c.tasks.items():
        stack = c.live.get(address)
        if rt is not None and stack is not None and task.wait_source == RT_WAITER:
            _confirm_rt_wait(c, rt, frames, task, stack)
            continue
        found = slow_path(task.frames)
        if stack is None or found is None or found[0] not in kinds or not exact_frames(task, found[1]):
            continue
        kind_name, last = found
        got = frames.lock(task, last, stack, SLOW_PATH_VARIABLES[kind_name])
        if got is not None and not got.asked and got.value != task.waits_on:
            got = frames.lock(task, last, stack, SLOW_PATH_VARIABLES[kind_name], confirm=True)  # the debugger's own word
        if got is None or got.value < KERNEL_SPACE:
            continue
        made, problem = take_frame_lock(task, got.value, kind_name, got.describe(), c.locks)
        if made is not None:
            _decode(k, kinds[kind_name], made, c.problems)
        if problem is not None:
            c.problems.append(problem)


def _confirm_rt_wait(c: Collection, rt: RtLayout, frames: FrameVariables, task: Task, stack: Stack) -> None:
    """The rt_mutex slow path's ``lock`` against the lock the waiter tree gave ``task``: the same base, the frame
    is its source too; another, a Problem (the kernel's waiter tree is kept: the task is queued there)."""
    lock = c.locks.get(task.waits_on) if task.waits_on is not None else None
    kind = rt.kinds.get(lock.type) if lock is not None else None
    if lock is None or kind is None:
        return
    base = lock.address + kind.base
    first: Optional[tuple[FrameValue, int]] = None  # the innermost frame's answer, when no frame agrees
    # Innermost first; one frame that agrees confirms the waiter tree. An inlined frame's `lock` can be read from a
    # register the call below it reused (6.12-rt, rt_mutex_handle_deadlock inlined into __rt_mutex_slowlock_locked,
    # after rt_mutex_schedule: the task's own address), so a disagreeing frame is not the last word while an outer
    # one is left.
    for last, names, to_base in rt_lock_frames(c.k, task.frames):
        if not exact_frames(task, last):
            break
        got = frames.lock(task, last, stack, names)
        if got is not None and not got.asked and got.value + to_base != base:
            got = frames.lock(task, last, stack, names, confirm=True)
        if got is None or got.value < KERNEL_SPACE:
            continue
        if got.value + to_base == base:
            take_frame_lock(task, lock.address, lock.type, f"{got.describe()}: the rt_mutex of {kind.struct} {lock.address:#x}", c.locks)
            return
        first = first or (got, to_base)
    if first is not None:
        got, to_base = first
        c.problems.append(Problem("wait", f"task {task.pid} ({task.comm})", f"its slow-path frame says it waits on the "
                                  f"rt_mutex_base {got.value + to_base:#x}, its rt_mutex waiter is queued on {base:#x} "
                                  f"({kind.struct} {lock.address:#x}): the waiter tree's lock is kept"))


def find_percpu_rwsem_writer_waits(c: Collection) -> None:
    """A writer waiting on a percpu rw-semaphore. After the wait-list scan: a reader queued on one is not one of
    its readers. Reads ``tasks``, ``live``, ``ranges``, ``locks``. Writes ``locks``, ``tasks`` (``waits_on``)."""
    find_writer_waits(c.k, c.symbols, c.tasks, c.live, c.ranges, c.locks, c.problems)


def find_freezes(c: Collection) -> None:
    """A frozen superblock's sb_writers is held by the freeze, not a task. Before holders are inferred.
    Reads ``locks``. Writes ``locks`` (owners, details)."""
    name_freezes(c.k, c.locks, c.problems, c.superblocks)


def find_spinlock_waits(c: Collection) -> None:
    """Each task whose CPU spins on a spinlock. Reads ``on_cpu``, ``tasks``. Writes ``locks``, ``spins``,
    ``tasks`` (``waits_on``, ``cpu_context``)."""
    spin_locks, c.spins = find_spin_waits(c.k, c.code, c.on_cpu, c.tasks, c.problems)
    c.locks.update(spin_locks)


def check_lock_owners(c: Collection) -> None:
    """Whether each recorded owner is consistent (a live task, started before its waiters blocked).
    Before holders are inferred. Reads ``tasks``, ``facts``, ``runqueues``. Writes ``locks`` (owners)."""
    check_owners(c.locks.values(), c.tasks, _timing(c),
                 lambda task, lock: _took_before(c.code, task, lock.address))


# The registers a CPU's note saves that can hold a lock's address (not rip, rsp, the segment bases).
GENERAL_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def infer_holders(c: Collection) -> None:
    """Add inferred owners to locks whose owner the kernel does not record (:func:`_infer_holders`).
    Reads ``tasks``, ``live``, ``on_cpu``. Writes ``locks`` (owners)."""
    _infer_holders(c.k, c.code, c.locks, c.tasks, c.live, c.on_cpu)


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


def _timing(c: Collection) -> dict[int, Timing]:
    """Each task's :class:`~kdlgdb.kernel.owners.Timing`: start_time, and se.exec_start moved onto its
    runqueue's clock by how far that runqueue's clock_task is behind its clock now (an upper bound)."""
    lag = {rq.cpu: rq.clock - rq.clock_task for rq in c.runqueues if rq.clock_task is not None and rq.clock >= rq.clock_task}
    timing = {}
    for address, task in c.tasks.items():
        facts = c.facts.get(address)
        last = facts.exec_start if facts is not None else None
        behind = lag.get(task.cpu)
        started = facts.started if facts is not None else None
        timing[address] = Timing(started or None, last + behind if last and behind is not None else None)
    return timing


def _took_before(code: CodeReader, task: Task, lock: int) -> Optional[str]:
    """Evidence that ``task`` acquired ``lock`` in a frame outside the call it is in now, else None."""
    for acq in code.held_by_frames(task.frames):
        if acq.lock == lock:
            return acq.describe()
    return None


def read_lockdep(c: Collection) -> None:
    """lockdep's held_locks of each task (CONFIG_LOCKDEP), and the owners they name.
    Reads ``facts``, ``tasks``, ``locks``. Writes ``tasks`` (``held``), ``locks`` (owners), ``snap.lockdep_on``."""
    if c.lockdep is None:
        return
    c.snap.lockdep_on = lockdep_on(c.k)
    held_raw = {a: f.held for a, f in c.facts.items() if f.held is not None}
    read_held_locks(c.k, c.lockdep, c.symbols, c.tasks, c.problems, held_raw)
    held_lock_owners(c.k, c.locks, c.tasks, bool(c.snap.lockdep_on))


def find_interrupt_deadlocks(c: Collection) -> None:
    """An interrupt handler spinning on a lock the code it interrupted took without masking it.
    Reads ``on_cpu``, ``spins``, ``tasks``. Writes ``tasks`` (``cpu_context``)."""
    interrupt_deadlocks(c.k, c.code, c.on_cpu, c.spins, c.tasks)


def find_blocked_on_other(c: Collection) -> None:
    """What each blocked task that waits on no lock waits for (completion, wait queue, I/O, sleep). After
    owners are inferred (a lock holder asleep in S gets one too). Reads ``tasks``, ``live``, ``ranges``,
    ``locks``. Writes ``tasks`` (``blocked_in``)."""
    find_blocked_in(c.k, c.symbols, c.tasks, c.live, c.ranges, c.locks, c.problems)


def find_work_item_waits(c: Collection) -> None:
    """A flush waits on a completion, which names the work item or workqueue: after
    :func:`find_blocked_on_other`. Reads ``tasks`` (``blocked_in``), ``locks``. Writes ``locks``, ``tasks``."""
    find_work_waits(c.k, c.symbols, c.tasks, c.locks, c.problems)


def list_locks(c: Collection) -> None:
    """The Snapshot's lock list, each named by its symbol. Reads ``locks``. Writes ``snap.locks``;
    forgets the stacks the Kernel kept."""
    c.k.forget_kept()
    c.snap.locks = sorted(c.locks.values(), key=lambda lk: lk.address)
    for lock in c.snap.locks:
        lock.symbol, lock.module = c.symbols.name(lock.address)


def name_heap_locks(c: Collection) -> None:
    """A name for each lock no symbol names: the field of a slab object (an inode's i_rwsem, a kmalloc'd
    struct's), a per-CPU variable, a task's stack object. Reads ``snap.locks``, ``tasks``. Writes
    ``snap.locks`` (``naming``)."""
    name_locks(c.k, c.snap.locks, c.tasks, c.stacks.thread_size, c.symbols, superblocks=c.superblocks)


#: The algorithm: the stages of :func:`collect`, in order.
STAGES: tuple[Stage, ...] = (
    read_tasks,
    read_runqueues,
    read_stacks,
    read_cpus,
    list_tasks,
    find_rt_mutex_waits,
    find_lock_waits,
    find_frame_locks,
    find_percpu_rwsem_writer_waits,
    find_freezes,
    find_spinlock_waits,
    check_lock_owners,
    infer_holders,
    read_lockdep,
    find_interrupt_deadlocks,
    find_blocked_on_other,
    find_work_item_waits,
    list_locks,
    name_heap_locks,
)


def collect(source: Target | Kernel, progress: Optional[Progress] = None, source_lines: bool = True,
            exact: bool = True) -> Snapshot:
    """Read everything the wait-for analysis needs from a target (or a Kernel already made of one,
    so that KASLR and the banner are not worked out twice): :data:`STAGES` run on a :class:`Collection`.
    Without ``source_lines`` the frames have no file:line (``add_source_lines`` can add them later, for
    output that shows them). Without ``exact`` the stacks of sleeping tasks are scanned for return
    addresses instead of unwound.

    KdlError for what makes analysis impossible (wrong vmlinux, missing types);
    anything wrong with one task or lock becomes a Problem and is skipped.
    """
    return Collection.start(source, progress, source_lines, exact).run(STAGES).snap
