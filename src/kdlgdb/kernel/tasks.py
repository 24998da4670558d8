"""Tasks: walking the task list, decoding one ``struct task_struct``.

Each task_struct is read whole in one read and its fields are unpacked at
offsets detected once; over a gdbstub that is one round trip per task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from ..errors import CorruptError, ReadError
from ..model import Problem, Task
from .layout import Kernel, le32, le64
from .list import list_for_each_entry_read

__all__ = ["TaskLayout", "for_each_task", "task_state_letters", "read_task", "per_cpu_runqueues"]

# Bound for list walks: far more tasks than any machine runs, so a corrupt
# (cyclic) list ends with a problem instead of a hang.
MAX_TASKS = 4_000_000
MAX_CPUS = 8192  # x86_64's largest NR_CPUS (CONFIG_MAXSMP)
MAX_TASK_STATES = 16  # entries of task_state_array: 9 since v4.14

# TASK_NOLOAD, 0x400 since v4.14 (92c4bc9f9cd9, "sched/debug: Convert TASK_state
# to hex"); TASK_IDLE is TASK_UNINTERRUPTIBLE | TASK_NOLOAD and reports as 'I'.
TASK_UNINTERRUPTIBLE = 0x2
TASK_NOLOAD = 0x400
# PREEMPT_RT's spinlock_t/rwlock_t sleep in TASK_RTLOCK_WAIT, 0x1000 since v5.15 ("sched: Introduce
# TASK_RTLOCK_WAIT"), and a frozen task is TASK_FROZEN, 0x8000 since v6.1 (f5d39b020809, "freezer,sched:
# Rewrite core freezer logic"); __task_state_index() reports both as TASK_UNINTERRUPTIBLE ('D'). Both
# bits were unused before (TASK_STATE_MAX was 0x1000).
TASK_REPORTED_AS_D = 0x1000 | 0x8000


@dataclass
class TaskLayout:
    """Offsets in ``struct task_struct`` (and friends), detected once per kernel.

    ``size`` is how much of a task_struct we read: up to the last field used.
    Not sizeof(struct task_struct): on x86 the FPU state at its end is sized at
    boot (arch_task_struct_size), so the slab objects are smaller than DWARF says.
    """

    size: int
    state: int
    exit_state: int
    stack: int
    pid: int
    tgid: int
    comm: int
    comm_size: int
    tasks: int
    thread_node: int
    signal: int
    thread_head: int
    sp: int
    on_cpu: Optional[int]
    cpu: Optional[int]
    last_arrival: Optional[int]
    start_time: Optional[int] = None  # u64 ns of CLOCK_MONOTONIC at fork
    exec_start: Optional[int] = None  # se.exec_start: the runqueue's clock_task when it last ran

    @classmethod
    def detect(cls, k: Kernel) -> "TaskLayout":
        t = "struct task_struct"
        # v5.14 renamed task_struct.state to __state (2f064a59a11f).
        state = "__state" if k.has_member(t, "__state") else "state"
        # v5.16 moved cpu into thread_info on x86 (bcf9033e5449); before it was task->cpu.
        cpu = "thread_info.cpu" if k.has_member(t, "thread_info.cpu") else "cpu"
        comm = (k.offset(t, "comm"), (k.member(t, "comm") or (0, 16))[1])  # offset() raises if it is missing
        last_arrival = k.member(t, "sched_info.last_arrival")
        # start_time has been u64 ns of CLOCK_MONOTONIC since v3.17 (ccbf62d8a284, "sched: Make
        # task->start_time nanoseconds based"); before it was a struct timespec: not used then.
        start_time = k.member(t, "start_time")
        if start_time is not None and start_time[1] != 8:
            start_time = None
        exec_start = k.member(t, "se.exec_start")
        on_cpu = k.member(t, "on_cpu")
        cpu_member = k.member(t, cpu)
        offsets = [k.offset(t, m) + 8 for m in (state, "exit_state", "stack", "pid", "tgid", "tasks", "thread_node", "signal", "thread.sp")]
        for found in (comm, last_arrival, on_cpu, cpu_member, start_time, exec_start):
            if found is not None:
                offsets.append(found[0] + max(found[1], 8))
        return cls(
            size=max(offsets) + 8,
            state=k.offset(t, state),
            exit_state=k.offset(t, "exit_state"),
            stack=k.offset(t, "stack"),
            pid=k.offset(t, "pid"),
            tgid=k.offset(t, "tgid"),
            comm=comm[0],
            comm_size=comm[1],
            tasks=k.offset(t, "tasks"),
            thread_node=k.offset(t, "thread_node"),
            signal=k.offset(t, "signal"),
            thread_head=k.offset("struct signal_struct", "thread_head"),
            sp=k.offset(t, "thread.sp"),
            on_cpu=on_cpu[0] if on_cpu else None,
            cpu=cpu_member[0] if cpu_member else None,
            last_arrival=last_arrival[0] if last_arrival else None,
            start_time=start_time[0] if start_time else None,
            exec_start=exec_start[0] if exec_start else None,
        )


def task_state_letters(k: Kernel) -> list[str]:
    """First letters of the kernel's own ``task_state_array`` ("R", "S", "D", ..., "I")."""
    address = k.need_symbol("task_state_array")
    size = k.target.symbol_size("task_state_array")
    if size is not None:
        pointers = k.read(address, size // 8 * 8)
        return [k.string(le64(pointers, 8 * i), 2)[:1] for i in range(size // 8)]
    # A target without the array's type (the dump's BTF describes per-CPU variables only): its entries are
    # "R (running)" ... "I (idle)", 9 since v4.14; it ends where an entry is not such a string (padding).
    letters = []
    for i in range(MAX_TASK_STATES):
        try:
            text = k.string(k.u64(address + 8 * i), 3)
        except ReadError:
            break
        if len(text) < 3 or not text[0].isalpha() or text[1:3] != " (":
            break
        letters.append(text[0])
    return letters


def state_letter(letters: list[str], state: int, exit_state: int) -> str:
    """The ps letter of a task, the way the kernel's task_state_index() computes it."""
    # Masked since "sched/core: Report correct state for TASK_IDLE | TASK_FREEZABLE" (v6.2, in 6.1.y):
    # a freezable idle kthread (TASK_IDLE | TASK_FREEZABLE: nfsd, sunrpc, ...) is 'I', not 'D'.
    # The kernel then reports TASK_RTLOCK_WAIT and TASK_FROZEN as D, idle or not.
    if state & TASK_REPORTED_AS_D:
        state = TASK_UNINTERRUPTIBLE
    elif state & (TASK_UNINTERRUPTIBLE | TASK_NOLOAD) == TASK_UNINTERRUPTIBLE | TASK_NOLOAD and letters:
        return letters[-1]
    report = (1 << max(len(letters) - 2, 0)) - 1
    index = ((state | exit_state) & report).bit_length()
    return letters[index] if index < len(letters) else "?"


@dataclass
class Runqueue:
    cpu: int
    address: int
    curr: int
    idle: int
    clock: int
    per_cpu_offset: int = 0  # __per_cpu_offset[cpu]: this CPU's per-cpu area minus the per-cpu section's link address
    clock_task: Optional[int] = None  # rq.clock_task: clock less IRQ and steal time, what se.exec_start counts in


def per_cpu_offsets(k: Kernel) -> list[int]:
    """``__per_cpu_offset[cpu]`` for each possible CPU (``nr_cpu_ids`` of them): add one to a per-cpu
    variable's address for that CPU's copy."""
    at = k.need_symbol("nr_cpu_ids")
    nr_cpus = k.u32(at)
    if not 0 < nr_cpus <= MAX_CPUS:
        raise CorruptError(f"nr_cpu_ids at {at:#x} is {nr_cpus}: not 1 to {MAX_CPUS} (x86_64's largest NR_CPUS)")
    offsets = k.read(k.need_symbol("__per_cpu_offset"), 8 * nr_cpus)
    return [le64(offsets, 8 * cpu) for cpu in range(nr_cpus)]


def per_cpu_runqueues(k: Kernel) -> list[Runqueue]:
    """Each possible CPU's ``struct rq``: its current task, its idle task, its clock."""
    per_cpu = per_cpu_offsets(k)
    nr_cpus = len(per_cpu)
    base = k.need_symbol("runqueues")
    rq_t = "struct rq"
    curr, idle, clock = k.offset(rq_t, "curr"), k.offset(rq_t, "idle"), k.offset(rq_t, "clock")
    clock_task = k.member(rq_t, "clock_task")  # v2.6.39 (305e6835e055, "sched: Do not account irq time to current task")
    span = max(curr, idle, clock, clock_task[0] if clock_task else 0) + 8
    out = []
    for cpu in range(nr_cpus):
        address = base + per_cpu[cpu]
        try:
            data = k.read(address, span)
        except ReadError:
            continue  # CPU possible but never brought up: its per-cpu area may be absent
        out.append(Runqueue(cpu, address, le64(data, curr), le64(data, idle), le64(data, clock), per_cpu[cpu],
                            le64(data, clock_task[0]) if clock_task else None))
    return out


def for_each_task(k: Kernel, layout: TaskLayout, problems: list[Problem]) -> Iterator[tuple[int, bytes]]:
    """Yield (address, raw task_struct) for every thread of every process.

    Thread-group leaders are on ``init_task.tasks``; the other threads of a group
    hang off ``signal->thread_head`` through ``thread_node``. Both lists are walked
    with a bound and a ``next->prev`` check; a broken list ends with a Problem.
    """
    init_task = k.need_symbol("init_task")
    head = init_task + layout.tasks
    seen: set[int] = set()
    try:
        for leader, data in _walk(k, head, layout.tasks, layout, "init_task.tasks"):
            seen.add(leader)
            if data is None:
                problems.append(Problem("task", f"{leader:#x}", "its task_struct cannot be read; skipped"))
                continue
            yield leader, data
            node = le64(data, layout.thread_node)
            prev = le64(data, layout.thread_node + 8)
            if node == prev:  # single-threaded: the only other node is signal->thread_head
                continue
            try:
                signal = le64(data, layout.signal)
                threads = signal + layout.thread_head
                for thread, tdata in _walk(k, threads, layout.thread_node, layout, f"threads of pid {le32(data, layout.pid)}"):
                    if thread in seen:
                        continue
                    seen.add(thread)
                    if tdata is None:
                        problems.append(Problem("task", f"{thread:#x}", "its task_struct cannot be read; skipped"))
                    else:
                        yield thread, tdata
            except (ReadError, CorruptError) as e:
                problems.append(Problem("thread list", f"task {leader:#x}", str(e)))
    except (ReadError, CorruptError) as e:
        problems.append(Problem("task list", f"{head:#x} (init_task.tasks)", f"{e}; the tasks after it were not seen"))


def _walk(k: Kernel, head: int, link: int, layout: TaskLayout, name: str) -> Iterator[tuple[int, Optional[bytes]]]:
    """Entries of a list of task_structs linked at offset ``link``, each read whole.

    A task_struct that cannot be read whole is yielded with None, and the walk
    goes on through its list node if that much is readable.
    """
    return list_for_each_entry_read(k, head, link, layout.size, name, MAX_TASKS, skip_unreadable=True)


def read_task(k: Kernel, layout: TaskLayout, letters: list[str], address: int, data: bytes) -> Task:
    """A Task from the raw bytes of its task_struct (no stack yet)."""
    comm = data[layout.comm : layout.comm + layout.comm_size].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Task(
        address=address,
        pid=le32(data, layout.pid),
        tgid=le32(data, layout.tgid),
        comm=comm,
        state=state_letter(letters, le32(data, layout.state), le32(data, layout.exit_state)),
        cpu=le32(data, layout.cpu) if layout.cpu is not None else 0,
        on_cpu=bool(le32(data, layout.on_cpu)) if layout.on_cpu is not None else False,
        stack_base=le64(data, layout.stack),
    )
