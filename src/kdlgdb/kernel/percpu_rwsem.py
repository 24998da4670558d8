"""Per-CPU rw-semaphores (kernel/locking/percpu-rwsem.c): ``sb_writers``, ``cpu_hotplug_lock``,
``cgroup_threadgroup_rwsem`` and drivers' own.

``struct percpu_rw_semaphore { struct rcu_sync rss; unsigned int __percpu *read_count;
struct rcuwait writer; wait_queue_head_t waiters; atomic_t block; ... }`` (v5.8+,
"locking/percpu-rwsem: Add ->waiters and ->block"):

- a reader counts itself in its CPU's ``read_count`` and is recorded nowhere else;
- a writer sets ``block`` (new readers and writers then queue on ``waiters`` in
  ``percpu_rwsem_wait``, a ``wait_queue_entry`` on their stack whose ``private`` is
  the task) and then sleeps in ``percpu_down_write`` on the ``writer`` rcuwait
  (``writer.task`` is that writer) until the readers' counts sum to zero.

So there are two waits with different holders, and two graph nodes:

- the semaphore itself (type ``percpu_rwsem``): its waiters are the queued tasks, its
  owner the writer that set ``block`` (``writer.task``, certain, while it waits for
  readers; a writer that got the lock is not recorded and is inferred like any holder);
- its readers (type ``percpu_rwsem_readers``, at ``&sem->writer``, named "readers of ..."): the
  waiting writer waits on it, its owners are the readers, inferred from the semaphore's
  address on their stacks, with the per-CPU count as a check.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import ReadError
from ..model import CERTAIN, INFERRED, RCUWAIT, Lock, Owner, Problem, Task
from .layout import KERNEL_SPACE, Kernel, le32
from .locks import LockKind
from .stack import Stack
from .symbols import Symbols
from .tasks import MAX_CPUS, per_cpu_offsets
from .functions import PERCPU_RWSEM_WRITER_WAIT as WRITER_WAIT, base_name, past_scheduler
from .waiters import StackRanges

__all__ = ["STRUCT", "percpu_rwsem_kind", "decode_percpu_rwsem", "readers", "find_writer_waits"]

STRUCT = "struct percpu_rw_semaphore"
READERS = "percpu_rwsem_readers"  # the type of the node a waiting writer waits on


def readers(k: Kernel, sem: int) -> Optional[int]:
    """The sum of ``read_count`` over the possible CPUs: how many readers hold ``sem``; None if unreadable."""
    try:
        counts = k.u64(sem + k.offset(STRUCT, "read_count"))
        total = 0
        for offset in per_cpu_offsets(k)[:MAX_CPUS]:
            try:
                total += le32(k.read(counts + offset, 4), 0)
            except ReadError:
                continue  # a possible CPU never brought up
        return total & 0xFFFFFFFF  # the per-CPU counts wrap: one CPU's +1 and another's -1 sum to 0
    except ReadError:
        return None


def percpu_rwsem_kind(k: Kernel) -> Optional[LockKind]:
    """The queued waiters' layout: a ``wait_queue_entry`` (``entry``, task in ``private``) linked into
    ``sem->waiters.head``; None on kernels before the ``waiters`` queue (v5.8)."""
    entry = "struct wait_queue_entry"
    if not (k.has_member(STRUCT, "waiters") and k.has_member(STRUCT, "block")
            and k.has_member(STRUCT, "writer.task") and k.has_member(entry, "private")):
        return None
    head = k.offset(STRUCT, "waiters") + k.offset("struct wait_queue_head", "head")
    return LockKind("percpu_rwsem", STRUCT, entry, head, k.offset(entry, "entry"), k.offset(entry, "private"),
                    decode_percpu_rwsem)


def decode_percpu_rwsem(k: Kernel, sem: int) -> tuple[list[Owner], dict[str, Any]]:
    """Owners and details of ``sem``, for the tasks queued on its ``waiters``."""
    writer = k.u64(sem + k.offset(STRUCT, "writer"))
    block = k.u32(sem + k.offset(STRUCT, "block"))
    details: dict[str, Any] = {"block": block, "readers": readers(k, sem), "writer": f"{writer:#x}"}
    if writer and block:
        return [Owner(writer, CERTAIN, "percpu_rw_semaphore.writer: the writer that set block, waiting for the readers", "write")], details
    return [], details


def find_writer_waits(k: Kernel, symbols: Symbols, tasks: dict[int, Task], live: dict[int, Stack],
                      stacks: StackRanges, locks: dict[int, Lock], problems: list[Problem]) -> None:
    """Writers asleep in ``percpu_down_write`` waiting for readers: each waits on the node "readers of SEM".

    Reads: tasks' frames and stacks. Writes: the writer's ``waits_on``; adds the readers node,
    with readers inferred from the semaphore's address on their stacks.
    """
    writer_off, block_off = None, None
    for address, task in sorted(tasks.items(), key=lambda item: (item[1].pid, item[0])):
        i = past_scheduler(task.frames)
        if task.waits_on is not None or i == len(task.frames) or task.frames[i].module is not None:
            continue
        if base_name(task.frames[i].symbol) != WRITER_WAIT or address not in live:
            continue
        where = f"task {task.name()}"
        try:
            if writer_off is None or block_off is None:
                writer_off, block_off = k.offset(STRUCT, "writer"), k.offset(STRUCT, "block")
            sem = _sem_of_writer(k, live[address], address, stacks, writer_off, block_off)
            if sem is None:
                problems.append(Problem("wait", where, f"in {task.frames[i].describe()} but no percpu_rw_semaphore on its stack names it as the writer"))
                continue
            node = sem + writer_off
            lock = locks.get(node)
            if lock is None:
                count = readers(k, sem)
                sym, module = symbols.name(sem)
                name = (f"{sym} [{module}]" if module else sym) if sym else f"percpu_rwsem {sem:#x}"
                lock = locks[node] = Lock(node, READERS, label=f"readers of {name}",
                                          details={"semaphore": f"{sem:#x}", "readers": count, "waits_for": "readers"})
                lock.owners = _readers_by_stack(tasks, live, sem, address, count)
            lock.waiters.append(address)
            task.waits_on, task.wait_source = node, RCUWAIT
            task.wait_evidence = (f"in {WRITER_WAIT}, and percpu_rw_semaphore {sem:#x}.writer (an rcuwait) names it: "
                                  f"it waits for the readers to leave")
        except ReadError as e:
            problems.append(Problem("wait", where, str(e)))


def _sem_of_writer(k: Kernel, stack: Stack, task: int, stacks: StackRanges, writer_off: int,
                   block_off: int) -> Optional[int]:
    """The semaphore among the values on the writer's stack whose ``writer.task`` is the writer and whose
    ``block`` is set. Not on a stack itself: a stack holds the task pointer in many slots."""
    seen: set[int] = set()
    for value in stack.values:
        if value < KERNEL_SPACE or value in seen or value == task or value in stacks:
            continue
        seen.add(value)
        try:
            if k.u64(value + writer_off) == task and k.u32(value + block_off):
                return value
        except ReadError:
            continue
    return None


def _readers_by_stack(tasks: dict[int, Task], live: dict[int, Stack], sem: int, writer: int,
                      count: Optional[int]) -> list[Owner]:
    """Readers are counted per CPU, not recorded: a blocked or running task with ``sem`` on its stack
    (kept in a callee-saved register across its later calls, as a reader does until percpu_up_read)."""
    owners = []
    for address, task in sorted(tasks.items(), key=lambda item: (item[1].pid, item[0])):
        stack = live.get(address)
        if address == writer or stack is None or task.waits_on == sem or sem not in stack.values:
            continue
        if task.state not in ("D", "S") and task.cpu_context is None:
            continue
        counted = f"; the per-CPU read_count sums to {count}" if count is not None else ""
        owners.append(Owner(address, INFERRED, f"its address is on the task's stack at {stack.slots_holding(sem)[0]:#x}{counted}", "read"))
    return owners
