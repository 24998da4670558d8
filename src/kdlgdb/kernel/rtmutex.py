"""rt_mutex, and the locks PREEMPT_RT builds on it: mutex, rw_semaphore, spinlock_t, rwlock_t.

``struct rt_mutex_base { raw_spinlock_t wait_lock; struct rb_root_cached waiters;
struct task_struct *owner; }``: the owner is a task pointer whose bit 0 is
RT_MUTEX_HAS_WAITERS; the waiters are ``struct rt_mutex_waiter``s (on their
tasks' stacks) in a red-black tree ordered by priority, linked through their
``tree.entry`` node, each with ``->task`` and ``->lock`` (the ``rt_mutex_base``).
A blocked task's ``task->pi_blocked_on`` points at its waiter.

Every kernel with CONFIG_RT_MUTEXES has a plain ``struct rt_mutex``. PREEMPT_RT
(v5.15) builds ``struct mutex``, ``struct rw_semaphore`` (``struct rwbase_rt``:
a readers count beside the rt_mutex_base), ``spinlock_t`` and ``rwlock_t`` on
it, so a wait found through an rt_mutex_base is reported as the lock the code
declared (its type from the functions on the task's stack) at that lock's own
address, which is not the rt_mutex_base's when the base is not its first member.

An RT writer first takes the rw_semaphore's rt_mutex, then sleeps until the
readers leave, without a waiter: it is found as the owner of the rt_mutex of a
lock whose readers count says "writer pending".

A task that asks for an rt_mutex it already owns gets -EDEADLK from the early deadlock check of
task_blocks_on_rt_mutex() (owner == task); a caller that did not ask for deadlock detection
(mutex_lock() on PREEMPT_RT, rt_mutex_lock()) is then parked forever by rt_mutex_handle_deadlock():
it warns "rtmutex deadlock detected" and sleeps (S) in the slow path, with no waiter in the tree.
Such a task is found as the owner of the lock its caller asked for, and its wait names the kernel's
own verdict and log line: a self-deadlock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..errors import CorruptError, KdlError, ReadError
from ..model import CERTAIN, RT_WAITER, Frame, Lock, Owner, Problem, Task
from .held import CodeReader
from .layout import KERNEL_SPACE, Kernel, le32, le64
from .list import rbtree_inorder
from .printk import LogRecord, kernel_log
from .stack import Stack
from .functions import RT_API_KIND, RT_PATH, RT_SLEEP, RTLOCK_SLEEP, RWBASE, base_name, past_scheduler
from .waiters import StackRanges

__all__ = ["RtKind", "RtLayout", "preempt_rt", "find_rt_waits", "walk_waiter_tree", "decode_rt_lock", "rt_kind_of",
           "cite_deadlock", "DEADLOCK_WARNING"]

RT_MUTEX_HAS_WAITERS = 0x1  # rt_mutex_base.owner bit 0 (kernel/locking/rtmutex.c)
# rwbase_rt.readers (include/linux/rwbase_rt.h, v5.15): READER_BIAS set while no writer is
# in; a writer subtracts it (readers left to wait for) and sets WRITER_BIAS once they are gone.
READER_BIAS = 1 << 31
WRITER_BIAS = 1 << 30
MAX_TREE = 1_000_000  # waiters in one tree: more means the tree loops

# rt_mutex_handle_deadlock()'s warning (kernel/locking/rtmutex.c, a WARN(1, ...): seen in 6.12-rt's log). Kernels
# that do not print it are found all the same (from the lock's owner); the evidence then says the log has no such line.
DEADLOCK_WARNING = "rtmutex deadlock detected"


@dataclass(frozen=True)
class RtKind:
    """A lock built on an rt_mutex_base: what its code declares, and where the base sits in it."""

    name: str  # "rt_mutex", "mutex", "rwsem", "spinlock", "rwlock"
    struct: str  # "struct rw_semaphore"
    path: str  # the rt_mutex_base member in it ("rwbase.rtmutex"), "" for a bare rt_mutex_base
    base: int  # its offset
    readers: Optional[int] = None  # offset of rwbase_rt.readers (rwsem, rwlock)

    def member(self, name: str) -> str:
        return f"{self.struct}.{self.path + '.' if self.path else ''}{name}"


@dataclass
class RtLayout:
    """Offsets of rt_mutex_base and rt_mutex_waiter, and the locks this kernel builds on them."""

    owner: int  # rt_mutex_base.owner
    root: int  # rt_mutex_base.waiters' root node pointer
    node: int  # rt_mutex_waiter's tree node
    task: int  # rt_mutex_waiter.task
    lock: int  # rt_mutex_waiter.lock
    pi_blocked_on: Optional[int]  # task_struct.pi_blocked_on
    kinds: dict[str, RtKind] = field(default_factory=dict)

    @classmethod
    def detect(cls, k: Kernel) -> Optional["RtLayout"]:
        """The layout, or None when the kernel has no rt_mutex (CONFIG_RT_MUTEXES off)."""
        # v5.15 ("locking/rtmutex: Split out the inner parts of 'struct rtmutex'") moved the owner and
        # the waiter tree into struct rt_mutex_base, embedded as rt_mutex.rtmutex; before, struct rt_mutex
        # had them itself.
        base = "struct rt_mutex_base" if k.has_member("struct rt_mutex_base", "owner") else "struct rt_mutex"
        owner = k.member(base, "owner")
        # v4.14 (a23ba907d5e6, "locking/rtmutex: replace top-waiter and pi_waiters leftmost caching")
        # made waiters an rb_root_cached; before it was a plain rb_root.
        root = k.member(base, "waiters.rb_root.rb_node") or k.member(base, "waiters.rb_node")
        w = "struct rt_mutex_waiter"
        # v6.5-rc4 added struct rt_waiter_node (f7853c342418, "locking/rtmutex: Fix task->pi_waiters
        # integrity") and put the node in tree.entry; before it was tree_entry. Stable backported it:
        # Debian's 6.1.0-56 has tree.entry.
        node = k.member(w, "tree.entry") or k.member(w, "tree_entry")
        task, lock = k.member(w, "task"), k.member(w, "lock")
        if owner is None or root is None or node is None or task is None or lock is None:
            return None
        pi = k.member("struct task_struct", "pi_blocked_on")
        layout = cls(owner[0], root[0], node[0], task[0], lock[0], pi[0] if pi else None)
        for name, struct, path, readers in (
            ("rt_mutex", "struct rt_mutex", "rtmutex", None),
            # PREEMPT_RT, v5.15: "locking/mutex: Introduce _mutex_t" / "locking/rtmutex: Add mutex variant for RT"
            ("mutex", "struct mutex", "rtmutex", None),
            # PREEMPT_RT, v5.15: "locking/rwsem: Add rtmutex based R/W semaphore implementation"
            ("rwsem", "struct rw_semaphore", "rwbase.rtmutex", "rwbase.readers"),
            # PREEMPT_RT, v5.15: "locking/spinlock: Provide RT variant" (spinlock_t.lock is an rt_mutex_base)
            ("spinlock", "struct spinlock", "lock", None),
            # PREEMPT_RT, v5.15: "locking/rwlock: Provide RT variant"
            ("rwlock", "rwlock_t", "rwbase.rtmutex", "rwbase.readers"),
        ):
            found = k.member(struct, path + ".owner")
            if found is None:
                continue
            readers_at = k.member(struct, readers) if readers else None
            layout.kinds[name] = RtKind(name, struct, path, found[0] - owner[0], readers_at[0] if readers_at else None)
        if "rt_mutex" not in layout.kinds:  # before v5.15 struct rt_mutex is the base itself
            layout.kinds["rt_mutex"] = RtKind("rt_mutex", base, "", 0)
        return layout


def preempt_rt(k: Kernel) -> bool:
    """Whether the kernel is PREEMPT_RT: its struct mutex is built on rt_mutex (v5.15, "locking/rtmutex:
    Add mutex variant for RT"); so are rw_semaphore, spinlock_t and rwlock_t there."""
    return k.has_member("struct mutex", "rtmutex")


def walk_waiter_tree(k: Kernel, rt: RtLayout, base: int) -> list[tuple[int, int]]:
    """(waiter, task) of every rt_mutex_waiter in the tree of the rt_mutex_base at ``base``, top waiter first.

    In-order walk (:func:`~kdlgdb.kernel.list.rbtree_inorder`); every waiter's ``lock`` must be ``base``. CorruptError for a tree that loops or is inconsistent,
    ReadError for one that cannot be read.
    """
    out: list[tuple[int, int]] = []
    for node in rbtree_inorder(k, k.u64(base + rt.root), f"rt_mutex {base:#x}: waiter tree", MAX_TREE):
        waiter = node - rt.node
        lock = k.u64(waiter + rt.lock)
        if lock != base:
            raise CorruptError(f"rt_mutex {base:#x}: waiter {waiter:#x} in its tree is for lock {lock:#x}")
        out.append((waiter, k.u64(waiter + rt.task)))
    return out


def decode_rt_lock(k: Kernel, rt: RtLayout, kind: RtKind, address: int) -> tuple[list[Owner], dict[str, Any]]:
    """(owners, details) of the ``kind`` lock at ``address`` from its rt_mutex_base (and readers count)."""
    word = k.u64(address + kind.base + rt.owner)
    task = word & ~RT_MUTEX_HAS_WAITERS
    details: dict[str, Any] = {"owner": f"{word:#x}", "flags": ["HAS_WAITERS"] if word & RT_MUTEX_HAS_WAITERS else []}
    if kind.base:
        details["rt_mutex_base"] = f"{address + kind.base:#x}"
    if kind.readers is None:
        if not task:
            details["note"] = "no owner recorded (being released)"
            return [], details
        return [Owner(task, CERTAIN, kind.member("owner"))], details
    readers = k.u32(address + kind.readers)
    details["readers_word"] = f"{readers:#x}"
    if readers == WRITER_BIAS and task:
        details["readers"] = 0
        return [Owner(task, CERTAIN, f"{kind.member('owner')} (write-locked: readers is WRITER_BIAS)", "write")], details
    if readers & READER_BIAS:
        details["readers"] = readers - READER_BIAS  # no writer in: the readers that hold it
    else:
        details["readers"] = readers  # a writer took the rt_mutex and waits for these readers to leave
        if task:
            details["writer_pending"] = f"{task:#x}"
    return [], details


def rt_kind_of(frames: list[Frame], code: Optional[CodeReader], kinds: dict[str, RtKind]) -> Optional[tuple[RtKind, int]]:
    """(kind, index of its first lock frame) when the task sleeps on an rt_mutex_base, else None.

    The first frame past the scheduler must be on the rt_mutex path. The lock's type is the
    first API function outward (``mutex_lock``, ``down_write``, ``rt_spin_lock``). When the caller
    reached the slow path by a tail call: the API function its call instruction names, or the one
    (of those that fit the slow path) that the function it calls can reach. Else the slow path
    itself: rtlock is spinlock_t (rwlock_t with rwbase), rwbase alone rw_semaphore, else rt_mutex.
    """
    start = None
    seen: set[str] = set()
    first = past_scheduler(frames, RT_PATH)  # stale frames amid the scheduler's skipped too
    for i, frame in enumerate(frames):
        name = base_name(frame.symbol)
        if start is None and i < first:
            continue
        if start is None:
            if frame.module is not None or name not in RT_PATH:
                return None
            start = i
        if frame.module is None and name in RT_API_KIND:
            if RT_API_KIND[name] not in kinds:
                return None  # e.g. down_read on a kernel whose rw_semaphore has a wait list: not ours
            return _kind(kinds, RT_API_KIND[name]), start
        if frame.module is None and name in RT_SLEEP | RTLOCK_SLEEP:
            seen.add(name)
            continue
        # What the call before this return address calls (one read of the code): "" when unknown.
        target = code.callee(frame.pc) if code is not None else None
        called = code.function_at(target) if code is not None and target is not None else ""
        if _stale(frame, frames[i + 1:], called):
            continue
        fitting = _fitting(seen)
        if code is not None and target is not None:
            if called in RT_API_KIND:
                return _kind(kinds, RT_API_KIND[called]), start
            if len(fitting) > 1:
                reached = {RT_API_KIND[n] for n in code.reached(target, set(RT_API_KIND))} & fitting
                if len(reached) == 1:
                    return _kind(kinds, reached.pop()), start
        break
    if start is None:
        return None
    fitting = _fitting(seen)
    return _kind(kinds, "spinlock" if "spinlock" in fitting else "rt_mutex" if "rt_mutex" in fitting else fitting.pop()), start


def _stale(frame: Frame, outer: list[Frame], called: str) -> bool:
    """Whether a kernel frame amid the rt_mutex path is a stale return address the stack scan found
    (``ttwu_do_activate+0x85`` between ``__rt_mutex_slowlock_locked`` and ``rwbase_write_lock``, seen on
    6.12-rt): the lock path goes on outward, and the call before this address (``called``) is not to a
    lock function."""
    if frame.module is not None or called in RT_PATH:
        return False
    return any(f.module is None and base_name(f.symbol) in RT_PATH for f in outer)


def _fitting(seen: set[str]) -> set[str]:
    """The lock types whose slow path goes through the functions ``seen``."""
    if seen & RTLOCK_SLEEP:
        return {"rwlock"} if seen & RWBASE else {"spinlock", "rwlock"}
    return {"rwsem"} if seen & RWBASE else {"mutex", "rt_mutex"}


def _kind(kinds: dict[str, RtKind], name: str) -> RtKind:
    """The kind called ``name``, or a bare rt_mutex_base when this kernel has no such lock on rt_mutex."""
    return kinds.get(name) or RtKind("rt_mutex", "struct rt_mutex_base", "", 0)


@dataclass
class _RtWait:
    task: int
    kind: RtKind
    lock: int  # the outer lock's address
    evidence: str
    pending_writer: bool = False
    parked: bool = False  # in rt_mutex_handle_deadlock: asked for a lock it owns, not in the tree


def find_rt_waits(k: Kernel, rt: RtLayout, code: CodeReader, tasks: dict[int, Task], live: dict[int, Stack],
                  problems: list[Problem], stacks: Optional[StackRanges] = None) -> dict[int, Lock]:
    """Set ``waits_on`` of every task asleep on an rt_mutex_base; return those locks with owners and waiters.

    ``stacks``: the tasks' stacks, whose addresses are not taken for a lock's. The waiters and tree
    nodes are on the stacks of the waiting tasks: a Kernel that keeps those (collect) reads them free.
    """
    trees: dict[int, Optional[list[tuple[int, int]]]] = {}  # rt_mutex_base -> its waiters (None: unreadable)
    waits: list[_RtWait] = []
    log = _Log(k)
    for address, task in tasks.items():
        if address not in live:
            continue
        found = rt_kind_of(task.frames, code, rt.kinds)
        if found is None:
            continue
        kind, start = found
        where = f"task {task.name()}"
        try:
            wait = _find_one(k, rt, kind, address, live[address], task.frames[start:], trees, stacks)
            if wait is None and task.state == "S":
                wait = _parked_waiter(k, rt, kind, address, live[address], tasks, trees, stacks)
        except (ReadError, CorruptError) as e:
            problems.append(Problem("wait", where, str(e)))
            continue
        if wait is None and task.state == "S":
            try:
                wait = _parked(k, rt, kind, task, live[address], task.frames[start:], code, stacks, log)
            except ReadError as e:
                problems.append(Problem("wait", where, str(e)))
                continue
        if wait is None:
            problems.append(Problem("wait", where, f"in {task.frames[start].describe()} but neither task->pi_blocked_on "
                                    "nor its stack names an rt_mutex it waits on"))
            continue
        task.waits_on, task.wait_evidence, task.wait_source = wait.lock, wait.evidence, RT_WAITER
        waits.append(wait)

    locks: dict[int, Lock] = {}
    for wait in waits:
        if wait.lock in locks:
            continue
        lock = Lock(wait.lock, wait.kind.name)
        lock.waiters = [w.task for w in waits if w.lock == wait.lock and w.pending_writer]
        tree = trees.get(wait.lock + wait.kind.base)
        if tree is not None:
            lock.waiters += [t for _, t in tree]
        else:  # the tree is not in the dump: in task order
            lock.waiters += [w.task for w in waits if w.lock == wait.lock and not w.pending_writer and not w.parked]
        lock.waiters += [w.task for w in waits if w.lock == wait.lock and w.parked]  # asked for it again: in no tree
        try:
            lock.owners, lock.details = decode_rt_lock(k, rt, wait.kind, wait.lock)
        except ReadError as e:
            problems.append(Problem("lock", f"{wait.kind.struct} {wait.lock:#x}", str(e)))
        locks[wait.lock] = lock
    return locks


def _find_one(k: Kernel, rt: RtLayout, kind: RtKind, task: int, stack: Stack, frames: list[Frame],
              trees: dict[int, Optional[list[tuple[int, int]]]], stacks: Optional[StackRanges]) -> Optional[_RtWait]:
    """The wait of one task: its waiter from task->pi_blocked_on, else from its stack; else, for an
    rw lock, the writer that owns the lock's rt_mutex and waits for its readers."""
    waiter, source, on_stack = 0, "", False
    if rt.pi_blocked_on is not None:
        waiter = k.u64(task + rt.pi_blocked_on)
        source = "task->pi_blocked_on"
    if not waiter:
        for slot in stack.slots_holding(task):
            candidate = slot - rt.task
            if candidate >= stack.sp and _in_tree(k, rt, candidate, trees):
                waiter, source, on_stack = candidate, f"struct rt_mutex_waiter at {candidate:#x} on its stack", True
                break
    if waiter:
        base = k.u64(waiter + rt.lock)
        if base < KERNEL_SPACE:
            raise CorruptError(f"{source} {waiter:#x} has lock {base:#x}")
        outer = base - kind.base
        tree = f"{kind.struct} {outer:#x}'s {kind.path + '.' if kind.path else ''}waiters tree"
        what = source if on_stack else f"{source}: struct rt_mutex_waiter {waiter:#x}"
        if base not in trees:
            try:
                trees[base] = walk_waiter_tree(k, rt, base)
            except ReadError:
                if on_stack:
                    raise
                # The lock is not in the dump (a filtered page): the task's own pi_blocked_on still names it,
                # its waiters are the tasks whose waiters name it; the lock itself becomes a problem.
                trees[base] = None
        found = trees[base]
        if found is None:
            return _RtWait(task, kind, outer, f"{what}, for {kind.struct} {outer:#x} (its waiter tree cannot be read)")
        if waiter not in (w for w, _ in found):
            raise CorruptError(f"{source} is waiter {waiter:#x}, which is not in the waiter tree of rt_mutex {base:#x}")
        return _RtWait(task, kind, outer, f"{what}, in {tree}")
    if kind.readers is not None:
        return _pending_writer(k, rt, kind, task, stack, frames, stacks)
    return None


def _parked_waiter(k: Kernel, rt: RtLayout, kind: RtKind, task: int, stack: Stack, tasks: dict[int, Task],
                   trees: dict[int, Optional[list[tuple[int, int]]]], stacks: Optional[StackRanges]) -> Optional[_RtWait]:
    """A task the kernel's own rt_mutex deadlock detection parked on a lock another task owns (a cycle; the
    recursive case, a lock it owns itself, is ``_parked``): with a full chain walk (CONFIG_DEBUG_RT_MUTEXES,
    so every lockdep kernel; or a caller that asks) a lock that would close a cycle fails with -EDEADLK, and
    rt_mutex_handle_deadlock() warns "rtmutex deadlock detected" and puts the task to sleep for good, in S
    (since v2.6.39, 3d5c9340d194, "rtmutex: Handle deadlock detection smarter"). Its waiter, off the lock's tree
    now, is still on its stack and names the lock it asked for: the task waits on that lock forever. The waiter
    is told from other slots holding the task's address by its tree node, which remove_waiter() cleared
    (RB_CLEAR_NODE: the node's parent is itself), and by its lock, whose owner is a task that is not this one."""
    for slot in stack.slots_holding(task):
        waiter = slot - rt.task
        if waiter < stack.sp:
            continue
        try:
            if k.u64(waiter + rt.node) != waiter + rt.node:
                continue
            base = k.u64(waiter + rt.lock)
            if base < KERNEL_SPACE or (stacks is not None and base in stacks):
                continue
            if base not in trees:
                trees[base] = walk_waiter_tree(k, rt, base)
        except (ReadError, CorruptError):
            continue
        owner = decode_rt_lock(k, rt, kind, base - kind.base)[0]
        if (trees[base] is not None and waiter not in (w for w, _ in trees[base] or ()) and owner
                and owner[0].task != task and owner[0].task in tasks):
            return _RtWait(task, kind, base - kind.base,
                           f"struct rt_mutex_waiter at {waiter:#x} on its stack, for {kind.struct} {base - kind.base:#x}: "
                           "the kernel's deadlock detection refused that lock (\"rtmutex deadlock detected\") and "
                           "parked the task in rt_mutex_handle_deadlock for good", parked=True)
    return None


def _in_tree(k: Kernel, rt: RtLayout, waiter: int, trees: dict[int, Optional[list[tuple[int, int]]]]) -> bool:
    """Whether ``waiter`` (a candidate on a stack) is in the tree of the lock it names."""
    try:
        base = k.u64(waiter + rt.lock)
        if base < KERNEL_SPACE:
            return False
        if base not in trees:
            trees[base] = walk_waiter_tree(k, rt, base)
    except (ReadError, CorruptError):
        return False
    tree = trees[base]
    return tree is not None and waiter in (w for w, _ in tree)


def _pending_writer(k: Kernel, rt: RtLayout, kind: RtKind, task: int, stack: Stack, frames: list[Frame],
                    stacks: Optional[StackRanges]) -> Optional[_RtWait]:
    """An RT writer asleep until the readers leave: it owns the lock's rt_mutex, the readers count has
    no READER_BIAS and is not WRITER_BIAS."""
    if kind.readers is None:
        return None
    for outer, lock in _owned_on_stack(k, rt, kind, task, stack, frames, stacks):
        readers = le32(lock, kind.readers)
        if readers != WRITER_BIAS and not readers & READER_BIAS:
            return _RtWait(task, kind, outer,
                           f"{kind.member('owner')} of {kind.struct} {outer:#x} is this task, asleep until its "
                           f"{readers} reader(s) leave (readers count without READER_BIAS: writer pending)", True)
    return None


def _owned_on_stack(k: Kernel, rt: RtLayout, kind: RtKind, task: int, stack: Stack, frames: list[Frame],
                    stacks: Optional[StackRanges]) -> Iterator[tuple[int, bytes]]:
    """(address, bytes as far as its owner and readers) of each ``kind`` lock that ``task`` owns and whose
    address (or its rt_mutex_base's) is on the stack below the caller's frame (in a register the scheduler
    saved, or in the slow path's frame), innermost first; one read a candidate covers both readings of it."""
    end = stack.top
    for frame in frames:
        if frame.module is not None or base_name(frame.symbol) not in RT_PATH:
            end = frame.sp  # the first frame of the code that called the lock function
            break
    owner_at = kind.base + rt.owner
    size = max(owner_at + 8, kind.readers + 4 if kind.readers is not None else 0)  # as far as the owner and readers
    tried: set[int] = set()
    for value in stack.values[: max(0, (end - stack.sp) // 8)]:
        if value < KERNEL_SPACE or value & 0x3 or value in tried or value == task or (stacks is not None and value in stacks):
            continue
        tried.add(value)
        outers = (value - kind.base, value) if kind.base else (value,)  # value is the lock's rt_mutex, or the lock
        try:  # one read for both
            data = k.read(outers[0], outers[-1] - outers[0] + size)
            found = [(outer, data[outer - outers[0] :]) for outer in outers]
        except ReadError:  # a page next to it is not in the dump: each on its own
            found = []
            for outer in outers:
                try:
                    found.append((outer, k.read(outer, size)))
                except ReadError:
                    continue
        for outer, lock in found:
            if le64(lock, owner_at) & ~RT_MUTEX_HAS_WAITERS == task:
                yield outer, lock


def _parked(k: Kernel, rt: RtLayout, kind: RtKind, task: Task, stack: Stack, frames: list[Frame],
            code: Optional[CodeReader], stacks: Optional[StackRanges], log: "_Log") -> Optional[_RtWait]:
    """A task parked by rt_mutex_handle_deadlock(): asleep (S) on the rt_mutex path with no waiter, owning
    the lock its caller asked for. That lock is the constant argument of the caller's call when its code
    loads one (and the task owns it), else the innermost lock on its stack that it owns. None if neither."""
    caller = next((f for f in frames if f.module is not None or base_name(f.symbol) not in RT_PATH), None)
    how = ""
    lock = None
    if caller is not None and code is not None:
        wanted = code.argument_of_call(caller)
        if wanted is not None and wanted >= KERNEL_SPACE:
            word = k.u64(wanted + kind.base + rt.owner)
            if word & ~RT_MUTEX_HAS_WAITERS == task.address:
                lock, how = wanted, f"the lock {caller.describe()} asks for"
    if lock is None:
        lock = next((outer for outer, _ in _owned_on_stack(k, rt, kind, task.address, stack, frames, stacks)), None)
        how = "on its stack"
    if lock is None:
        return None
    where = frames[0].describe() if frames else "the rt_mutex slow path"
    return _RtWait(task.address, kind, lock, (
        f"rt_mutex_handle_deadlock: parked (S) in {where}, asking for {kind.struct} {lock:#x} ({how}), which it "
        f"owns already ({kind.member('owner')}): rt_mutex's deadlock check returned -EDEADLK; {log.cite(task.pid)}"),
        parked=True)


class _Log:
    """The kernel log, read once and only when a task is parked by rt_mutex_handle_deadlock()."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.records: Optional[list[LogRecord]] = None
        self.error = ""

    def cite(self, pid: int) -> str:
        if self.records is None:
            try:
                self.records = kernel_log(self.k)
            except (KdlError, ReadError) as e:
                self.records, self.error = [], f"the kernel log cannot be read ({e})"
        return self.error or cite_deadlock(self.records, pid)


def cite_deadlock(records: list[LogRecord], pid: int) -> str:
    """The kernel's own words about the rt_mutex deadlock of ``pid``: its "rtmutex deadlock detected" record
    (printed by that task, or by an unknown caller) and the ``WARNING: CPU: n PID: pid at ...`` line after it,
    with their time stamps; or that the log has none."""
    for i, record in enumerate(records):
        if DEADLOCK_WARNING in record.text and record.caller in (f"T{pid}", ""):
            said = [f"[{record.ts_ns / 1e9:12.6f}] {DEADLOCK_WARNING}"]
            warning = next((r for r in records[i + 1 : i + 4] if f"PID: {pid} " in r.text), None)
            if warning is not None:
                said.append(f"[{warning.ts_ns / 1e9:12.6f}] {warning.text.splitlines()[0].strip()}")
            return "the kernel log says: " + " / ".join(said)
    return f'the kernel log has no "{DEADLOCK_WARNING}" line of pid {pid}'
