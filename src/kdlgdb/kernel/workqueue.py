"""Work items and workqueues as nodes of the wait-for graph (kernel/workqueue.c).

A task in ``flush_work()``, ``cancel_work_sync()``, ``flush_delayed_work()`` (and
``__flush_work``, ``__cancel_work_timer``/``__cancel_work_sync`` under them) waits on
the completion of a ``struct wq_barrier`` on its own stack (``barr->done``). The
kernel queued that barrier right behind the work waited for (``insert_wq_barrier``):

- when the work is running, at the head of the ``scheduled`` list of the worker
  executing it, so the barrier runs next; that worker's ``current_work`` is the
  work, and ``worker->task`` the kworker: the flusher waits for it (certain);
- when the work is still pending, right behind it on a pool's worklist:
  ``barr->work.entry.prev`` is the work's own list node. Nobody runs it yet; the kworkers
  running works of its pool_workqueue (``work->data``) keep it waiting on an ordered workqueue
  or one at ``max_active`` (inferred).

A task in ``flush_workqueue()``, ``drain_workqueue()`` or ``destroy_workqueue()``
waits on the completion of a ``struct wq_flusher`` on its stack, which is the
workqueue's ``first_flusher`` or queued on its ``flusher_queue``/``flusher_overflow``.
It waits for every work of that workqueue queued before the flush: the workers
whose ``current_pwq->wq`` is the workqueue are running such works. That is
inferred, not certain: a work that started after the flush began is not waited for.

A work item is a ``Lock`` of type ``work`` at the ``work_struct``; a workqueue a
``Lock`` of type ``workqueue`` at the ``workqueue_struct``. Their owners are the
kworkers, their waiters the flushers, so cycles through them need no special case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import CorruptError, KdlError, ReadError
from ..model import CERTAIN, COMPLETION, INFERRED, Lock, Owner, Problem, Task
from .layout import Kernel, le64
from .list import list_for_each
from .symbols import Symbols

__all__ = ["find_work_waits", "PF_WQ_WORKER"]

# task->flags bit of a workqueue worker (include/linux/sched.h, unchanged since v2.6.36).
PF_WQ_WORKER = 0x00000020
WORK_STRUCT_PWQ = 1 << 2  # work->data holds a pool_workqueue pointer (include/linux/workqueue.h)
MAX_SCHEDULED = 10_000  # works and barriers on one worker's scheduled list
MAX_WORKQUEUES = 100_000


@dataclass
class Worker:
    """A ``struct worker``: the kworker ``task`` and what it executes."""

    address: int
    task: int
    current_work: int
    current_func: int
    current_pwq: int
    scheduled: set[int]  # list nodes on worker->scheduled (barriers and linked works)


class _Layout:
    """Offsets of the workqueue structs, from this kernel's types."""

    def __init__(self, k: Kernel) -> None:
        w, b = "struct worker", "struct wq_barrier"
        self.flags = k.offset("struct task_struct", "flags")
        # The kthread struct hangs off task->worker_private since v5.17 ("kthread: Generalize
        # pf_io_worker so it can point to struct kthread"); its data is the struct worker.
        self.kthread = k.offset("struct task_struct", "worker_private")
        self.kthread_data = k.offset("struct kthread", "data")
        self.current_work = k.offset(w, "current_work")
        self.current_func = k.offset(w, "current_func")
        self.current_pwq = k.offset(w, "current_pwq")
        self.scheduled = k.offset(w, "scheduled")
        self.worker_task = k.offset(w, "task")
        self.worker_size = max(self.current_work, self.current_func, self.current_pwq, self.scheduled + 8,
                               self.worker_task) + 8
        self.entry = k.offset("struct work_struct", "entry")
        self.func = k.offset("struct work_struct", "func")
        self.barrier_work = k.offset(b, "work")
        self.barrier_done = k.offset(b, "done")
        self.barrier_task = k.member(b, "task")  # the flusher (v4.10+, for lockdep's dependency)
        self.pwq_wq = k.offset("struct pool_workqueue", "wq")
        wq = "struct workqueue_struct"
        self.wq_name = k.member(wq, "name") or (0, 0)
        self.wq_list = k.offset(wq, "list")
        self.first_flusher = k.offset(wq, "first_flusher")
        self.flusher_lists = [k.offset(wq, m) for m in ("flusher_queue", "flusher_overflow") if k.has_member(wq, m)]
        self.flusher_done = k.offset("struct wq_flusher", "done")
        self.flusher_list = k.offset("struct wq_flusher", "list")


class Workqueues:
    """The workers of a kernel and what flushers wait for, read once when first needed."""

    def __init__(self, k: Kernel, symbols: Symbols, tasks: dict[int, Task], problems: list[Problem]) -> None:
        self.k, self.symbols, self.tasks, self.problems = k, symbols, tasks, problems
        self._layout: Optional[_Layout] = None
        self._workers: Optional[list[Worker]] = None
        self._barrier_func: Optional[int] = None
        self._flushers: Optional[dict[int, int]] = None

    @property
    def layout(self) -> _Layout:
        if self._layout is None:
            self._layout = _Layout(self.k)
        return self._layout

    def workers(self) -> list[Worker]:
        """Every task with PF_WQ_WORKER, as its struct worker."""
        if self._workers is None:
            self._workers = []
            for address, task in self.tasks.items():
                try:
                    worker = self._worker(address)
                except (ReadError, CorruptError) as e:
                    self.problems.append(Problem("worker", f"task {task.name()}", str(e)))
                    continue
                if worker is not None:
                    self._workers.append(worker)
        return self._workers

    def _worker(self, task: int) -> Optional[Worker]:
        k, lay = self.k, self.layout
        if not k.u32(task + lay.flags) & PF_WQ_WORKER:
            return None
        kthread = k.u64(task + lay.kthread)
        address = k.u64(kthread + lay.kthread_data) if kthread else 0
        if not address:
            return None
        data = k.read(address, lay.worker_size)
        if le64(data, lay.worker_task) != task:
            raise CorruptError(f"struct worker {address:#x} names task {le64(data, lay.worker_task):#x}, not its kworker")
        scheduled = set(list_for_each(k, address + lay.scheduled, MAX_SCHEDULED))
        return Worker(address, task, le64(data, lay.current_work), le64(data, lay.current_func),
                      le64(data, lay.current_pwq), scheduled)

    def function(self, address: int) -> str:
        """``kdl_reset_fn [kdl_flush]`` for a work function's address."""
        name, offset, module = self.symbols.lookup(address)
        text = f"{address:#x}" if name is None else (name if offset == 0 else f"{name}+{offset:#x}")
        return f"{text} [{module}]" if module else text

    def workqueue_name(self, pwq: int) -> tuple[int, str]:
        """(``struct workqueue_struct *``, its name) of a pool_workqueue."""
        wq = self.k.u64(pwq + self.layout.pwq_wq) if pwq else 0
        return wq, self.wq_name(wq)

    def wq_name(self, wq: int) -> str:
        offset, size = self.layout.wq_name
        if not wq or not size:
            return "?"
        return self.k.string(wq + offset, size)

    # -- what a completion belongs to ----------------------------------------

    def barrier_func(self) -> Optional[int]:
        if self._barrier_func is None:
            self._barrier_func = self.k.symbol("wq_barrier_func") or 0
        return self._barrier_func or None

    def barrier(self, completion: int, flusher: int) -> Optional[int]:
        """The ``struct wq_barrier *`` whose ``done`` is ``completion``, queued by ``flusher``; else None."""
        lay, func = self.layout, self.barrier_func()
        barrier = completion - lay.barrier_done
        try:
            if func is None or self.k.u64(barrier + lay.barrier_work + lay.func) != func:
                return None
            if lay.barrier_task is not None and self.k.u64(barrier + lay.barrier_task[0]) != flusher:
                return None
        except ReadError:  # a completion at the start of a page: what lies before it is not a barrier
            return None
        return barrier

    def flushed_workqueue(self, completion: int) -> Optional[int]:
        """The workqueue whose flush ``completion`` (``&wq_flusher->done``) belongs to, else None."""
        if self._flushers is None:
            self._flushers = self._all_flushers()
        return self._flushers.get(completion - self.layout.flusher_done)

    def _all_flushers(self) -> dict[int, int]:
        """``{struct wq_flusher *: struct workqueue_struct *}`` of every workqueue being flushed."""
        k, lay = self.k, self.layout
        head = k.symbol("workqueues")
        found: dict[int, int] = {}
        if head is None:
            return found
        for node in list_for_each(k, head, MAX_WORKQUEUES):
            wq = node - lay.wq_list
            first = k.u64(wq + lay.first_flusher)
            if first:
                found[first] = wq
            for offset in lay.flusher_lists:
                for flusher in list_for_each(k, wq + offset, MAX_SCHEDULED):
                    found[flusher - lay.flusher_list] = wq
        return found


def find_work_waits(k: Kernel, symbols: Symbols, tasks: dict[int, Task], locks: dict[int, Lock],
                    problems: list[Problem]) -> None:
    """Turn each wait for a flush's completion into a wait on the work item or workqueue flushed.

    Reads: tasks' ``blocked_in`` (completions found on their stacks), the kworkers' struct worker.
    Writes: the flusher's ``waits_on``/``wait_evidence`` (and clears its ``blocked_in``); adds
    ``work`` and ``workqueue`` locks with the kworkers as owners.
    """
    flushers = [t for t in tasks.values() if t.waits_on is None and t.blocked_in is not None
                and t.blocked_in.kind == "completion" and t.blocked_in.address]
    if not flushers:
        return
    wqs = Workqueues(k, symbols, tasks, problems)
    try:
        wqs.layout
    except KdlError as e:  # a kernel without these types: its flushes are left as completions
        problems.append(Problem("workqueue", "types", str(e)))
        return
    for task in sorted(flushers, key=lambda t: (t.pid, t.address)):
        completion = task.blocked_in.address  # type: ignore[union-attr]
        assert completion is not None
        where = f"task {task.name()}"
        try:
            barrier = wqs.barrier(completion, task.address)
            if barrier is not None:
                _wait_on_work(wqs, task, barrier, locks)
                continue
            wq = wqs.flushed_workqueue(completion)
            if wq is not None:
                _wait_on_workqueue(wqs, task, wq, completion, locks)
        except (ReadError, CorruptError) as e:
            problems.append(Problem("work", where, str(e)))


def _wait_on_work(wqs: Workqueues, task: Task, barrier: int, locks: dict[int, Lock]) -> None:
    k, lay = wqs.k, wqs.layout
    node = barrier + lay.barrier_work + lay.entry
    running = next((w for w in wqs.workers() if node in w.scheduled), None)
    if running is not None and running.current_work:
        work = running.current_work
        evidence = (f"its wq_barrier at {barrier:#x} is on the scheduled list of the worker executing the work "
                    f"(struct worker {running.address:#x})")
    else:
        work = k.u64(node + 8) - lay.entry  # pending: the barrier sits right behind the work
        running = next((w for w in wqs.workers() if w.current_work == work), None)
        evidence = f"its wq_barrier at {barrier:#x} is queued right behind the work, which has not started"
    lock = locks.get(work)
    if lock is None:
        func = k.u64(work + lay.func)
        details = {"function": wqs.function(func), "barrier": f"{barrier:#x}"}
        owners = []
        if running is not None:
            wq, name = wqs.workqueue_name(running.current_pwq)
            details.update(workqueue=name, worker=f"{running.address:#x}", state="running")
            owners.append(Owner(running.task, CERTAIN, f"worker->current_work of struct worker {running.address:#x}: it runs the work", "exclusive"))
        else:
            details["state"] = "pending (queued, not started)"
            owners = _queued_behind(wqs, work, details)
        label = f"work {details['function']}" + (f" on {details['workqueue']}" if "workqueue" in details else "")
        lock = locks[work] = Lock(work, "work", owners=owners, details=details, label=label)
    lock.waiters.append(task.address)
    task.waits_on, task.wait_evidence, task.blocked_in = work, evidence, None
    task.wait_source = COMPLETION


def _queued_behind(wqs: Workqueues, work: int, details: dict) -> list[Owner]:
    """The kworkers running works of the same pool_workqueue as a pending ``work``: on an ordered
    workqueue, or one at its max_active, the pending work waits for them (inferred).

    A queued work's ``data`` is its ``pool_workqueue *`` with WORK_STRUCT_PWQ (bit 2) set; the flag
    bits below the pointer are 8 (9 with CONFIG_DEBUG_OBJECTS_WORK), and pwqs are aligned past them."""
    data = wqs.k.u64(work)
    if not data & WORK_STRUCT_PWQ:
        return []
    candidates = {data & ~0xFF, data & ~0x1FF}
    owners = []
    for worker in wqs.workers():
        if worker.current_work and worker.current_pwq in candidates:
            wq, name = wqs.workqueue_name(worker.current_pwq)
            details.setdefault("workqueue", name)
            owners.append(Owner(worker.task, INFERRED,
                                f"it runs {wqs.function(worker.current_func)} (work {worker.current_work:#x}) of the same "
                                f"pool_workqueue of {name}, ahead of this pending work (ordered, or at max_active)",
                                "exclusive"))
    return owners


def _wait_on_workqueue(wqs: Workqueues, task: Task, wq: int, completion: int, locks: dict[int, Lock]) -> None:
    lock = locks.get(wq)
    if lock is None:
        name = wqs.wq_name(wq)
        owners = []
        for worker in wqs.workers():
            if worker.current_work and wqs.workqueue_name(worker.current_pwq)[0] == wq:
                owners.append(Owner(worker.task, INFERRED,
                                    f"it runs {wqs.function(worker.current_func)}, a work of {name} "
                                    f"(work {worker.current_work:#x}) that the flush waits for unless it began after the flush",
                                    "exclusive"))
        lock = locks[wq] = Lock(wq, "workqueue", owners=owners, details={"name": name}, label=f"workqueue {name}")
    lock.waiters.append(task.address)
    task.waits_on, task.wait_source = wq, COMPLETION
    task.wait_evidence = f"its wq_flusher's completion {completion:#x} on its stack belongs to the flush of workqueue {lock.details['name']}"
    task.blocked_in = None
