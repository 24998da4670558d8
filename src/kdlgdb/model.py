"""Plain data that the kernel model produces and the analysis consumes.

Nothing here knows about a debugger. Tasks and locks are keyed by their kernel
addresses (``struct task_struct *``, the lock's own address); pids are not
unique (every CPU's idle task has pid 0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

__all__ = ["task_name", "symbol_name", "Frame", "BlockedIn", "CpuContext", "HeldLock", "Task", "Owner", "Naming", "Lock", "Problem", "Snapshot"]

CERTAIN = "certain"  # the kernel's own record (mutex.owner, a write-held rw_semaphore's owner, rt_mutex_base.owner)
INFERRED = "inferred"  # evidence from code or the stack, not a record
# An owner field that cannot be true: it names no task in the task list, or a task that started after
# the waiters blocked, or a waiter of the same lock with no earlier acquisition of it (kernel/owners.py).
# Kept for what it says about the lock, but no holder: it makes no wait-for edge.
STALE = "stale"

# Where a task's ``waits_on`` came from (``Task.wait_source``), strongest first.
FRAME_VARIABLE = "frame"  # the lock argument of its slow-path frame, as the debug info locates it (kernel/framevars.py)
BLOCKED_ON = "blocked_on"  # task->blocked_on (DEBUG_MUTEXES, or every kernel from v6.17)
WAIT_LIST = "wait list"  # its waiter struct on its stack, linked into the lock's wait list
RT_WAITER = "rt_mutex waiter"  # its struct rt_mutex_waiter, in the lock's waiter tree (kernel/rtmutex.py)
CPU_REGISTERS = "cpu registers"  # the spinlock a CPU spins on, from its registers (kernel/spinlock.py)
RCUWAIT = "rcuwait"  # a percpu rw-semaphore writer in its rcuwait (kernel/percpu_rwsem.py)
COMPLETION = "completion"  # a flush's completion, tied to the work it waits for (kernel/workqueue.py)


def task_name(comm: str, pid: int) -> str:
    """A task as every sentence of kdlgdb names it: ``"kdl_m1" (pid 93)``.

    The command in double quotes, as crash prints ``COMMAND: "kdl_m1"``, so that a task called ``sleep`` or
    ``cat`` does not read as a verb ("blocked behind "sleep" (pid 105), which sleeps (S)"). Tables and JSON
    fields show the bare command."""
    return f'"{comm}" (pid {pid})'


def symbol_name(symbol: str, module: Optional[str]) -> str:
    """``sem1 [kdl_abba]`` for a module's symbol, ``sem1`` for the vmlinux's."""
    return f"{symbol} [{module}]" if module else symbol


@dataclass
class Frame:
    """One return address found on a kernel stack."""

    pc: int
    symbol: Optional[str]
    offset: int
    module: Optional[str] = None  # None for vmlinux
    sp: int = 0  # stack slot that held the return address
    source: Optional[str] = None  # "kernel/locking/semaphore.c:240": the call's line, where debug info has it
    regs: bool = False  # pc is an interrupted ip from a struct pt_regs: an interrupt or exception boundary
    guessed: bool = False  # found by the frame-pointer guess in code ORC has no entry for: this and outer frames may be wrong

    def describe(self) -> str:
        if self.symbol is None:
            return f"{self.pc:#x}"
        text = f"{self.symbol}+{self.offset:#x}"
        return f"{text} [{self.module}]" if self.module else text


@dataclass
class BlockedIn:
    """What a blocked task waits for when it is not a lock (``Task.waits_on`` is None)."""

    kind: str  # completion | waitqueue | io | sleep | unknown
    function: Optional[str] = None  # the wait it sleeps in: "__wait_for_common", "msleep", "io_schedule_timeout", ...
    frame: Optional[str] = None  # the frame that says where: "msleep+0x29", "kdl_w1_fn+0x64 [kdl_chain]"
    address: Optional[int] = None  # struct completion * / wait_queue_head_t *, when found
    symbol: Optional[str] = None  # its name, "c_done" (or "sym+0x10" inside a bigger object)
    module: Optional[str] = None  # the module it is in; None for vmlinux
    evidence: str = ""

    def object_name(self) -> Optional[str]:
        """``c_done [kdl_chain]``, or the bare address when it has no symbol, or None when not found."""
        if self.address is None:
            return None
        return f"{self.address:#x}" if self.symbol is None else symbol_name(self.symbol, self.module)


@dataclass
class CpuContext:
    """What the CPU a task is current on was doing when its registers were saved."""

    cpu: int
    context: str  # "task", "softirq", "hardirq" or "user": of the spinning frame when it spins, else of pc
    pc: int  # the CPU's instruction pointer
    symbol: Optional[str]  # pc as function+offset [module]
    evidence: str  # how the register set was matched to this Linux CPU
    now: str = ""  # the context of pc itself (an interrupt may have come on top of the spin)
    # When an interrupt handler spins on a lock that the code it interrupted on this CPU holds:
    interrupt_acquire: Optional[str] = None  # where the interrupted code took it: "f+0x1b [mod] called _raw_spin_lock() at 0x…"
    fix: Optional[str] = None  # "spin_lock_bh" (softirq handler) or "spin_lock_irqsave" (hardirq)


@dataclass
class HeldLock:
    """One entry of a task's lockdep ``held_locks`` (a kernel with CONFIG_LOCKDEP): a lock it took, or is
    taking (lockdep records an acquisition before the wait), as lockdep's "Showing all locks held" lists it."""

    instance: int  # struct lockdep_map * (the map inside the lock, or a pseudo-lock's own map)
    name: str  # the lock class as lockdep prints it: "m1", "&sb->s_type->i_mutex_key#3", "(work_completion)(&w)"
    acquire_ip: int  # where it was taken
    acquired_at: Optional[str] = None  # acquire_ip as "kdl_m1_fn+0x2a [kdl_mutex]"
    read: int = 0  # 0 exclusive (write), 1 shared (read), 2 recursive read
    lock: Optional[int] = None  # the lock's own address, when it is a lock in the snapshot (instance minus dep_map)

    def mode(self) -> str:
        return ("exclusive", "read", "recursive read")[self.read] if 0 <= self.read <= 2 else f"read={self.read}"


@dataclass
class Task:
    """A ``struct task_struct`` as the analysis needs it."""

    address: int
    pid: int
    tgid: int
    comm: str
    state: str  # one letter from the kernel's task_state_array
    cpu: int
    on_cpu: bool = False  # current task of its runqueue
    last_ran_ns: Optional[int] = None  # time since it last ran, in ns
    stack_base: int = 0
    frames: list[Frame] = field(default_factory=list)
    waits_on: Optional[int] = None  # address of the lock it waits on
    wait_evidence: str = ""
    # Which source decided waits_on: FRAME_VARIABLE, BLOCKED_ON, WAIT_LIST, RT_WAITER, CPU_REGISTERS, RCUWAIT or
    # COMPLETION (the constants above); "" when it waits on no lock.
    wait_source: str = ""
    blocked_in: Optional[BlockedIn] = None  # what it waits for when blocked but not on a lock
    cpu_context: Optional[CpuContext] = None  # for the task current on a CPU whose registers are known
    held: Optional[list[HeldLock]] = None  # lockdep's held_locks, oldest first (None: the kernel has no lockdep)
    unwinder: str = ""  # how ``frames`` were found: "orc", "frame pointer" or "scan" (kernel/unwind.py)
    unwind_error: Optional[str] = None  # why the unwind stopped before the end of the stack (a corrupt stack)

    def awaited_entry(self) -> Optional[HeldLock]:
        """The held_locks entry of the lock this task waits on: the last one for that lock (lockdep records the
        acquisition before the wait; an earlier one for the same lock is a hold: recursive locking). Not always
        the last entry: once lockdep turned itself off, locks taken and released later (the runqueue lock in
        __schedule, rcu_read_lock) can stay listed after it."""
        if self.waits_on is None:
            return None
        return next((e for e in reversed(self.held or []) if e.lock == self.waits_on), None)

    def name(self) -> str:
        """``"kdl_m1" (pid 93)``: :func:`task_name`."""
        return task_name(self.comm, self.pid)


@dataclass
class Owner:
    """Why we believe ``task`` holds a lock."""

    task: int  # task_struct address
    confidence: str  # CERTAIN, INFERRED or STALE
    evidence: str
    mode: str = "exclusive"  # exclusive | read | write


@dataclass
class Naming:
    """Where a lock that no symbol names lives, as a user would name it (kernel/naming.py)."""

    kind: str  # "heap" (a slab object), "percpu" (a per-CPU variable), "stack" (on a task's kernel stack)
    text: str  # "i_rwsem of struct inode 0xffff… (ext2 ram0, ino 12, ext4_inode_cache)", "kmalloc-64 object 0x…+0x8"
    object: Optional[int] = None  # heap: the object's start; stack: the task_struct
    offset: Optional[int] = None  # of the lock from the object's start (heap), from the variable's (percpu)
    cache: Optional[str] = None  # heap: the slab cache, "ext4_inode_cache", "kmalloc-64"
    type: Optional[str] = None  # heap: the C type the lock is a member of, when known: "struct inode"
    member: Optional[str] = None  # heap: the member path in that type, "i_rwsem", "i_data.i_mmap_rwsem"
    container: Optional[int] = None  # heap: the address of that type's instance (the inode inside ext4_inode_info)
    cpu: Optional[int] = None  # percpu: the CPU whose copy it is
    symbol: Optional[str] = None  # percpu: the variable, "runqueues+0x10"; stack: the function whose frame holds it
    details: dict[str, Any] = field(default_factory=dict)  # what identifies the object: {"ino": 12, "filesystem": ...}


@dataclass
class Lock:
    """A lock that at least one task waits on."""

    address: int
    type: str  # mutex | semaphore | rwsem | ...
    symbol: Optional[str] = None
    module: Optional[str] = None
    owners: list[Owner] = field(default_factory=list)
    waiters: list[int] = field(default_factory=list)  # task addresses, wait-list order
    details: dict[str, Any] = field(default_factory=dict)
    # How a user names it when it is more than a symbol says: "work kdl_reset_fn [kdl_flush] on events"
    label: Optional[str] = None
    # A holder that is not a task: "the freeze of ext2 /dev/ram0 on /mnt (fsfreeze --unfreeze /mnt thaws it)"
    holder: Optional[str] = None
    # Where it lives when no symbol names it: a heap object, a per-CPU variable, a task's stack.
    naming: Optional[Naming] = None

    def current_owners(self) -> list[Owner]:
        """The owners believed to hold it: all but the STALE ones (an owner field that cannot be true)."""
        return [o for o in self.owners if o.confidence != STALE]

    def owner_exited(self) -> bool:
        """Whether its only recorded owner is STALE: the owner exited (or its task_struct slot was reused)."""
        return not self.current_owners() and any(o.confidence == STALE for o in self.owners)

    def name(self) -> str:
        if self.label is not None:
            return self.label
        if self.symbol is None:
            return self.naming.text if self.naming is not None else f"{self.type} {self.address:#x}"
        return symbol_name(self.symbol, self.module)


@dataclass
class Problem:
    """Something that could not be read or made sense of; analysis went on."""

    what: str
    where: str
    why: str

    def __str__(self) -> str:
        return f"{self.what} at {self.where}: {self.why}"


@dataclass
class Snapshot:
    """Everything collected from one kernel at one moment."""

    release: str = ""
    kaslr_offset: int = 0
    tasks: list[Task] = field(default_factory=list)
    locks: list[Lock] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # lock data sources this kernel offers
    cpus: int = 0  # CPUs with a runqueue
    uptime_ns: Optional[int] = None  # the largest runqueue clock: time since boot when the snapshot was taken
    dump: str = ""  # what was read: "ELF vmcore (QEMU dump-guest-memory with paging) /x/y", "live gdbstub host:port"
    crash_time: Optional[int] = None  # seconds since the epoch: VMCOREINFO's CRASHTIME (kdump), else None
    panic: Optional[str] = None  # the kernel log's "Kernel panic - not syncing: ..." message, else None
    # lockdep (CONFIG_LOCKDEP): None without it; else whether it was still checking (debug_locks): after its first
    # report it turns itself off and records no acquisition or release since, so held_locks may be stale.
    lockdep_on: Optional[bool] = None
    # Where the types and symbols came from: "dwarf" (the vmlinux, through gdb or crash) or "btf" (the dump's own
    # BTF and kallsyms, no vmlinux: frames then have no file:line). target.base.DEBUG_INFO says it in words.
    debug_info: str = "dwarf"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        tasks = [
            Task(**{**t, "frames": [Frame(**f) for f in t.get("frames", [])],
                    "blocked_in": BlockedIn(**t["blocked_in"]) if t.get("blocked_in") else None,
                    "cpu_context": CpuContext(**t["cpu_context"]) if t.get("cpu_context") else None,
                    "held": [HeldLock(**h) for h in t["held"]] if t.get("held") is not None else None})
            for t in data.get("tasks", [])
        ]
        locks = [
            Lock(**{**lk, "owners": [Owner(**o) for o in lk.get("owners", [])],
                    "naming": Naming(**lk["naming"]) if lk.get("naming") else None})
            for lk in data.get("locks", [])
        ]
        problems = [Problem(**p) for p in data.get("problems", [])]
        return cls(
            release=data.get("release", ""),
            kaslr_offset=data.get("kaslr_offset", 0),
            tasks=tasks,
            locks=locks,
            problems=problems,
            sources=list(data.get("sources", [])),
            cpus=int(data.get("cpus") or 0),
            uptime_ns=data.get("uptime_ns"),
            dump=str(data.get("dump") or ""),
            crash_time=data.get("crash_time"),
            panic=data.get("panic"),
            lockdep_on=data.get("lockdep_on"),
        )
