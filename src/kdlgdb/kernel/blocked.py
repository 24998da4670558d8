"""What a blocked task waits for when it waits on no lock: a completion, a wait queue, I/O, a sleep.

The root of a wait chain is often such a task: a lock owner in
``wait_for_completion`` on a completion nobody completes, in ``wait_event`` on a
wait queue nobody wakes, in ``io_schedule``, or in ``msleep`` with a lock held.

Completions and wait queues are found like lock waiters (see ``waiters.py``):
the waiter struct is on the task's own stack, linked into a list whose one node
off every stack is the head inside the object waited for.

- ``wait_for_completion*`` puts a ``struct swait_queue { struct task_struct
  *task; struct list_head task_list; }`` on the stack, linked into
  ``completion.wait.task_list`` (``struct completion { unsigned int done;
  struct swait_queue_head wait; }``).
- ``wait_event*`` (and every ``prepare_to_wait``) puts a ``struct
  wait_queue_entry { unsigned int flags; void *private; wait_queue_func_t
  func; struct list_head entry; }`` whose ``private`` is the task, linked into
  ``wait_queue_head.head``.

A completion declared on the waiter's own stack (``DECLARE_COMPLETION_ONSTACK``)
is found too: on the task's own stack, only its waiter structs count as "on a
stack", so the completion's head there is the one node that does not.

I/O waits and sleeps are named from the frames above the scheduler; anything
else blocked is "unknown", with the innermost frame that is not the scheduler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import CorruptError, ReadError
from ..model import BlockedIn, Lock, Problem, Task
from .layout import Kernel
from .locks import LockKind
from .stack import Stack
from .symbols import Symbols
from .functions import COMPLETION_WAITS, SLEEP_FALLBACK, SLEEPS, base_name, interesting_frame, io_wait, past_scheduler, slow_path
from .waiters import StackRanges, Wait, find_wait

__all__ = ["blocked_in", "find_blocked_in"]

@dataclass
class _Queue:
    """One kind of wait-queue waiter: where its list node and task pointer are, and in what head."""

    what: str  # "completion" | "waitqueue"
    kind: LockKind  # the layout waiters.find_wait walks (its ``wait_list`` is the head's offset in ``struct``)
    done: Optional[int]  # offset of completion.done, for the evidence


class _Queues:
    """The waiter layouts this kernel has, detected from its types when first needed
    (a dump whose blocked tasks all wait on locks or sleep is asked nothing about them)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self._found: Optional[dict[str, _Queue]] = None

    def get(self, what: str) -> Optional[_Queue]:
        if self._found is None:
            self._found = _queues(self.k)
        return self._found.get(what)


def _queues(k: Kernel) -> dict[str, _Queue]:
    """The waiter layouts this kernel has, detected from its types."""
    found: dict[str, _Queue] = {}
    wq_entry = "struct wait_queue_entry"
    entry = (wq_entry, "entry", "private")  # the waiter struct, its list node and its task member
    waiter: Optional[tuple[str, str, str]] = None
    if k.has_member("struct completion", "wait.task_list") and k.has_member("struct swait_queue", "task"):
        # Completions sleep on a simple wait queue since v5.7 (a5c6234e1028, "completion: Use simple wait queues").
        head, waiter = k.offset("struct completion", "wait.task_list"), ("struct swait_queue", "task_list", "task")
    elif k.has_member("struct completion", "wait.head") and k.has_member(wq_entry, "private"):
        head, waiter = k.offset("struct completion", "wait.head"), entry  # before v5.7: a wait_queue_head_t
    if waiter is not None:
        kind = LockKind("completion", "struct completion", waiter[0], head, k.offset(waiter[0], waiter[1]),
                        k.offset(waiter[0], waiter[2]), _no_decode)
        found["completion"] = _Queue("completion", kind, k.offset("struct completion", "done"))
    # struct wait_queue_head { spinlock_t lock; struct list_head head; } since v4.13 (2055da97389a and
    # ac6424b981bc renamed struct __wait_queue_head and its task_list); older kernels are not read here.
    # The offset of head comes from DWARF: spinlock_t is bigger with PREEMPT_RT or lock debugging.
    if (k.has_member("struct wait_queue_head", "head") and k.has_member(wq_entry, "entry")
            and k.has_member(wq_entry, "private")):
        kind = LockKind("waitqueue", "struct wait_queue_head", wq_entry, k.offset("struct wait_queue_head", "head"),
                        k.offset(wq_entry, "entry"), k.offset(wq_entry, "private"), _no_decode)
        found["waitqueue"] = _Queue("waitqueue", kind, None)
    return found


def _no_decode(k: Kernel, address: int) -> tuple[list, dict]:
    return [], {}


class _OwnStackAware:
    """``address in stacks`` for one task's wait-list walk, with its own stack narrowed to its waiter
    structs: an object waited for that lies on the task's own stack (a completion declared on it)
    is then the one node "off every stack", as a static one is."""

    def __init__(self, stacks: StackRanges, stack: Stack, kind: LockKind, task: int, base: int) -> None:
        self.stacks, self.stack, self.kind, self.task = stacks, stack, kind, task
        self.base, self.end = base, base + stacks.thread_size

    def __contains__(self, address: int) -> bool:
        if not self.base <= address < self.end:
            return address in self.stacks
        slot = address - self.kind.waiter_list + self.kind.waiter_task
        i = (slot - self.stack.sp) // 8
        return slot % 8 == 0 and 0 <= i < len(self.stack.values) and self.stack.values[i] == self.task


def blocked_in(k: Kernel, queues: _Queues, symbols: Symbols, task: Task, stack: Optional[Stack],
               stacks: StackRanges, known: dict[str, dict[int, Wait]]) -> Optional[BlockedIn]:
    """What ``task`` (not on a CPU, waiting on no lock) is blocked in, from its frames and stack.

    ``known`` caches the wait lists already walked, per queue kind. ReadError/CorruptError of a
    walk only means "not this one"; None when the task has no frames.
    """
    frames = task.frames
    if not frames:
        return None
    first = past_scheduler(frames)
    inner = interesting_frame(frames)
    name = base_name(inner.symbol) if inner is not None and inner.module is None else ""
    where = inner.describe() if inner is not None else None
    io = io_wait(frames)
    if name in COMPLETION_WAITS:
        found = BlockedIn("completion", name, where)
        queue = queues.get("completion") if stack is not None else None
        if queue is not None and stack is not None:
            _link(k, queue, symbols, task, stack, stacks, known, found)
        return found
    if io is not None:
        return BlockedIn("io", io, where, evidence=f"{io} is on its stack")
    if name in SLEEPS:
        return BlockedIn("sleep", name, where, evidence=f"{name} is on its stack")
    queue = queues.get("waitqueue") if stack is not None else None
    if queue is not None and stack is not None:
        found = BlockedIn("waitqueue", base_name(inner.symbol) if inner is not None else None, where)
        if _link(k, queue, symbols, task, stack, stacks, known, found):
            return found
    if any(base_name(f.symbol) == SLEEP_FALLBACK for f in frames[:first]):
        return BlockedIn("sleep", SLEEP_FALLBACK, where, evidence=f"{SLEEP_FALLBACK} is on its stack")
    return BlockedIn("unknown", base_name(inner.symbol) if inner is not None else None, where)


def _link(k: Kernel, queue: _Queue, symbols: Symbols, task: Task, stack: Stack, stacks: StackRanges,
          known: dict[str, dict[int, Wait]], found: BlockedIn) -> bool:
    """Fill in the object ``task`` is queued on (its address, name, evidence); False if none is found."""
    kind = queue.kind
    ranges = _OwnStackAware(stacks, stack, kind, task.address, task.stack_base)
    try:
        wait = find_wait(k, kind, task.address, stack, ranges, known.setdefault(queue.what, {}))  # type: ignore[arg-type]
    except (ReadError, CorruptError) as e:
        found.evidence = f"no {kind.waiter} of it is linked into a {kind.struct}: {e}"
        return False
    if wait is None:
        found.evidence = f"no {kind.waiter} of it is linked into a {kind.struct}"
        return False
    found.address = wait.lock
    found.symbol, found.module = symbols.name(wait.lock)
    head = kind.struct.replace("struct ", "")
    found.evidence = f"{kind.waiter} at {wait.node:#x} on its stack, linked into {head} {wait.lock:#x}"
    if queue.done is not None:
        try:
            found.evidence += f" (done={k.u32(wait.lock + queue.done)})"
        except ReadError:
            pass
    others = len(wait.waiters) - 1
    if others > 0:
        found.evidence += f"; {others} other waiter{'s' if others > 1 else ''}"
    return True


def find_blocked_in(k: Kernel, symbols: Symbols, tasks: dict[int, Task], live: dict[int, Stack],
                    stacks: StackRanges, locks: dict[int, Lock], problems: list[Problem]) -> None:
    """Set ``blocked_in`` of every task that is blocked (D), or holds a lock while asleep (S),
    and waits on no lock: the roots of wait chains that end somewhere else."""
    owners = {o.task for lock in locks.values() for o in lock.current_owners()}
    queues = _Queues(k)
    known: dict[str, dict[int, Wait]] = {}
    for address, task in tasks.items():
        if task.on_cpu or task.waits_on is not None or slow_path(task.frames) is not None:
            continue
        if not (task.state == "D" or (task.state == "S" and address in owners)):
            continue
        try:
            task.blocked_in = blocked_in(k, queues, symbols, task, live.get(address), stacks, known)
        except ReadError as e:
            problems.append(Problem("blocked", f"task {task.name()}", str(e)))
