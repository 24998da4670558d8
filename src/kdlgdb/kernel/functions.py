"""The kernel functions kdlgdb recognises on a stack or as a call's target: one vocabulary, by role.

Every other module takes its names from here (``tests/test_layers.py`` fails when another module
defines a set of names that overlaps these). Names are the kernel's own C names without a compiler
suffix (:func:`base_name`: ``__mutex_lock.constprop.0`` is ``__mutex_lock``).

- scheduler plumbing (:data:`SCHEDULER`), I/O-wait entries (:data:`IO_WAITS`), entry code (:data:`ENTRY_CODE`);
- lock slow paths per kind (:data:`SLOW_PATHS`, :data:`SPIN_SLOW_PATHS`, :data:`RT_SLEEP`, :data:`RTLOCK_SLEEP`,
  :data:`RWBASE`, :data:`PERCPU_RWSEM_WRITER_WAIT`);
- acquire and release APIs (:data:`ACQUIRE`, :data:`RELEASE`, :data:`SPIN_ACQUIRE`, :data:`SPIN_RELEASE`,
  :data:`SPIN_MASKS`, :data:`RT_API`);
- waits on no lock (:data:`COMPLETION_WAITS`, :data:`SLEEPS`, :data:`FREEZE_WAITERS`);
- interrupt context (:data:`SOFTIRQ_FUNCTIONS`, :data:`HARDIRQ_PREFIXES`).

Pure: names and functions over :class:`~kdlgdb.model.Frame` lists, no reads (the analysis layer uses it too).
"""
from __future__ import annotations

from typing import Optional

from ..model import Frame

__all__ = [
    "base_name", "SCHEDULER", "IO_WAITS", "ENTRY_CODE", "SLOW_PATHS", "SLOW_PATH_KIND", "SPIN_SLOW_PATHS",
    "RT_SLEEP", "RTLOCK_SLEEP", "RWBASE", "RT_API", "RT_API_KIND", "RT_PATH", "PERCPU_RWSEM_WRITER_WAIT",
    "ACQUIRE", "RELEASE", "SPIN_ACQUIRE", "SPIN_RELEASE", "SPIN_MASKS", "COMPLETION_WAITS", "SLEEPS",
    "SLEEP_FALLBACK", "FREEZE_WAITERS", "SOFTIRQ_FUNCTIONS", "HARDIRQ_PREFIXES",
    "is_scheduler", "past_scheduler", "interesting_frame", "io_wait", "slow_path", "STALE_RUN",
]


def base_name(symbol: Optional[str]) -> str:
    """``__mutex_lock.constprop.0`` -> ``__mutex_lock``."""
    return (symbol or "").split(".", 1)[0]


# --- scheduler plumbing and entry code -------------------------------------------------------------

# What a sleeping task's stack starts with before the function that chose to sleep. The one set of
# scheduler plumbing: the lock slow paths, the non-lock waits (blocked.py), the held-lock scan and a
# chain root's description (analysis/graph.py) all look past it.
SCHEDULER = frozenset({
    "__schedule", "schedule", "schedule_timeout", "schedule_preempt_disabled", "schedule_idle",
    "preempt_schedule", "preempt_schedule_common", "context_switch", "finish_task_switch",
    "__switch_to", "__switch_to_asm", "schedule_hrtimeout_range_clock", "schedule_hrtimeout_range",
    "io_schedule", "io_schedule_timeout",
    # rt_mutex waits call the scheduler through rt_mutex_schedule (v6.6, "locking/rtmutex: Use
    # rt_mutex specific scheduler helpers"); PREEMPT_RT's spinlock_t/rwlock_t through schedule_rtlock
    # (v5.15, "sched: Provide schedule point for RT locks").
    "rt_mutex_schedule", "schedule_rtlock",
})
# The scheduler entries of an I/O wait (a task in one is "in I/O wait", as the kernel's iowait accounting says).
IO_WAITS = frozenset({"io_schedule", "io_schedule_timeout"})
# Entry code at either end of a stack: never where a task chose to sleep (prefixes).
ENTRY_CODE = ("__switch_to", "ret_from_fork")

# --- lock slow paths, per kind ---------------------------------------------------------------------

# The functions a task sleeps in while it waits for each kind of lock (the wait-list scan, waiters.py).
SLOW_PATHS = {
    "mutex": frozenset({
        "__mutex_lock", "__mutex_lock_slowpath", "__mutex_lock_killable_slowpath",
        "__mutex_lock_interruptible_slowpath", "mutex_lock", "mutex_lock_killable",
        "mutex_lock_interruptible", "mutex_lock_io", "__ww_mutex_lock", "ww_mutex_lock",
        "ww_mutex_lock_interruptible", "__ww_mutex_lock_slowpath",
        "__ww_mutex_lock_interruptible_slowpath",
        # CONFIG_DEBUG_LOCK_ALLOC's entry points (mutex_lock() is mutex_lock_nested(lock, 0) there); with -Os
        # (tinyconfig) gcc inlines __mutex_lock into them, so they are the frame that sleeps.
        "mutex_lock_nested", "_mutex_lock_nest_lock", "mutex_lock_killable_nested",
        "mutex_lock_interruptible_nested", "mutex_lock_io_nested", "__mutex_lock_common",
    }),
    "semaphore": frozenset({
        "__down", "__down_common", "__down_interruptible", "__down_killable", "__down_timeout",
        "down", "down_interruptible", "down_killable", "down_timeout",
    }),
    "rwsem": frozenset({
        "rwsem_down_read_slowpath", "rwsem_down_write_slowpath", "down_read", "down_write",
        "down_read_killable", "down_write_killable", "down_read_interruptible",
        "__down_read", "__down_write", "__down_read_common", "__down_write_common",
        "down_read_nested", "down_write_nested",
        # CONFIG_DEBUG_LOCK_ALLOC's entry points
        "down_read_killable_nested", "down_write_killable_nested", "_down_write_nest_lock", "down_read_non_owner",
    }),
    # Queued behind a writer's block (percpu-rwsem.c); a writer waiting for readers sleeps in
    # percpu_down_write itself, which percpu_rwsem.find_writer_waits decodes.
    "percpu_rwsem": frozenset({"percpu_rwsem_wait", "__percpu_down_read"}),
}
SLOW_PATH_KIND = {fn: kind for kind, fns in SLOW_PATHS.items() for fn in fns}
# Where a percpu rw-semaphore's writer sleeps until the readers are gone (rcuwait inlined).
PERCPU_RWSEM_WRITER_WAIT = "percpu_down_write"

# A CPU spinning on a (non-RT) spinlock.
SPIN_SLOW_PATHS = frozenset({
    "native_queued_spin_lock_slowpath", "queued_spin_lock_slowpath", "__pv_queued_spin_lock_slowpath",
    "pv_queued_spin_lock_slowpath", "do_raw_spin_lock", "virt_spin_lock",
})

# Functions a task runs in while it sleeps on an rt_mutex_base, whatever lock embeds it.
RT_SLEEP = frozenset({
    "rt_mutex_schedule", "rt_mutex_slowlock_block", "__rt_mutex_slowlock_locked", "__rt_mutex_slowlock",
    "rt_mutex_slowlock", "rt_mutex_lock_state", "__rt_mutex_lock", "__rt_mutex_lock_common",
    "rwbase_write_lock", "__rwbase_read_lock", "rwbase_read_lock", "rwbase_rtmutex_lock_state",
})
# spinlock_t and rwlock_t on PREEMPT_RT: the rtlock slow path (v5.15, "locking/rtmutex: Provide the
# spin/rwlock core lock function") and the scheduler entry it sleeps in.
RTLOCK_SLEEP = frozenset({"schedule_rtlock", "rtlock_slowlock_locked", "rtlock_slowlock", "rtlock_lock"})
# The rw_semaphore and rwlock_t of PREEMPT_RT (rwbase_rt.c): those of RT_SLEEP that say "an rw lock".
RWBASE = frozenset({"rwbase_write_lock", "__rwbase_read_lock", "rwbase_read_lock", "rwbase_rtmutex_lock_state"})
# The rt_mutex-based entry points the code that declared the lock calls: they name the lock's type.
RT_API = {
    "rt_mutex": frozenset({"rt_mutex_lock", "rt_mutex_lock_nested", "_rt_mutex_lock_nest_lock",
                           "rt_mutex_lock_interruptible", "rt_mutex_lock_killable"}),
    "mutex": frozenset({"mutex_lock", "mutex_lock_nested", "_mutex_lock_nest_lock", "mutex_lock_interruptible",
                        "mutex_lock_interruptible_nested", "mutex_lock_killable", "mutex_lock_killable_nested",
                        "mutex_lock_io", "mutex_lock_io_nested", "__mutex_lock_common"}),
    "rwsem": frozenset({"down_read", "down_read_nested", "down_read_interruptible", "down_read_killable",
                        "down_read_non_owner", "down_write", "down_write_nested", "_down_write_nest_lock",
                        "down_write_killable", "__down_read", "__down_write", "__down_read_interruptible",
                        "__down_read_killable", "__down_write_killable"}),
    "spinlock": frozenset({"rt_spin_lock", "rt_spin_lock_nested", "rt_spin_lock_nest_lock"}),
    "rwlock": frozenset({"rt_read_lock", "rt_write_lock", "rt_write_lock_nested"}),
}
RT_API_KIND = {fn: kind for kind, fns in RT_API.items() for fn in fns}
# Every function of an rt_mutex wait, from the API call to the scheduler.
RT_PATH = RT_SLEEP | RTLOCK_SLEEP | frozenset(RT_API_KIND)

# --- acquire and release APIs (held-lock inference: a call to one with the lock as first argument) -------

# spin_lock*() and spin_unlock*() on a non-RT kernel: out-of-line _raw_spin_* functions on x86
# (CONFIG_INLINE_SPIN_* is off). A spinlock records no owner either.
SPIN_ACQUIRE = frozenset({
    "_raw_spin_lock", "_raw_spin_lock_irqsave", "_raw_spin_lock_irq", "_raw_spin_lock_bh",
    "_raw_spin_lock_nested", "_raw_spin_lock_irqsave_nested", "_raw_spin_lock_bh_nested",
})
SPIN_RELEASE = frozenset({"_raw_spin_unlock", "_raw_spin_unlock_irqrestore", "_raw_spin_unlock_irq", "_raw_spin_unlock_bh"})
# Acquisitions that keep the interrupt handlers of a context off the CPU while the lock is held.
SPIN_MASKS = {"softirq": ("_raw_spin_lock_bh", "_raw_spin_lock_irq", "_raw_spin_lock_irqsave", "_raw_spin_lock_irqsave_nested"),
              "hardirq": ("_raw_spin_lock_irq", "_raw_spin_lock_irqsave", "_raw_spin_lock_irqsave_nested")}
ACQUIRE = frozenset({
    "down", "down_interruptible", "down_killable", "down_timeout", "down_trylock",
    "down_read", "down_read_killable", "down_read_interruptible", "down_read_trylock", "down_read_nested",
    "down_read_non_owner",
    "down_write", "down_write_killable", "down_write_trylock", "down_write_nested",
    "mutex_lock", "mutex_lock_interruptible", "mutex_lock_killable", "mutex_lock_io", "mutex_trylock",
    "mutex_lock_nested", "mutex_lock_killable_nested", "mutex_lock_interruptible_nested", "mutex_lock_io_nested",
    "_mutex_lock_nest_lock", "down_read_killable_nested", "down_write_killable_nested", "_down_write_nest_lock",
}) | SPIN_ACQUIRE
RELEASE = frozenset({"up", "up_read", "up_read_non_owner", "up_write", "mutex_unlock", "downgrade_write"}) | SPIN_RELEASE

# --- waits on no lock ------------------------------------------------------------------------------

# The functions a completion waiter sleeps in (wait_for_completion tail-calls
# __wait_for_common on 6.1 and 6.12, so often only that one is on the stack).
COMPLETION_WAITS = frozenset({
    "wait_for_completion", "wait_for_completion_io", "wait_for_completion_timeout",
    "wait_for_completion_io_timeout", "wait_for_completion_interruptible",
    "wait_for_completion_interruptible_timeout", "wait_for_completion_killable",
    "wait_for_completion_killable_timeout", "wait_for_completion_state", "__wait_for_common",
    "wait_for_common", "wait_for_common_io", "do_wait_for_common",
})
# Sleeps that wait for time, not for an event, first past the scheduler (ssleep is msleep inlined;
# usleep_range is usleep_range_state). schedule_hrtimeout_range* are scheduler plumbing (SCHEDULER).
SLEEPS = frozenset({
    "msleep", "msleep_interruptible", "usleep_range_state", "usleep_range", "schedule_timeout_uninterruptible",
    "schedule_timeout_interruptible", "schedule_timeout_killable", "schedule_timeout_idle", "do_nanosleep",
    "hrtimer_nanosleep", "schedule_hrtimeout",
})
# The scheduler entry that makes a wait a sleep when nothing else names it.
SLEEP_FALLBACK = "schedule_timeout"
# Where a writer to a freezing filesystem waits, by sb_writers level (include/linux/fs.h).
FREEZE_WAITERS = {1: "sb_start_write", 2: "sb_start_pagefault", 3: "sb_start_intwrite"}

# --- interrupt context -----------------------------------------------------------------------------

# Functions that mark the context of the frames inside them.
SOFTIRQ_FUNCTIONS = frozenset({"__do_softirq", "handle_softirqs", "do_softirq", "__irq_exit_rcu", "irq_exit_rcu",
                               "irq_exit", "run_ksoftirqd", "do_softirq_own_stack", "__local_bh_enable_ip"})
HARDIRQ_PREFIXES = ("__sysvec_", "sysvec_", "asm_sysvec_", "common_interrupt", "asm_common_interrupt",
                    "__common_interrupt", "handle_irq_event", "__handle_irq_event_percpu",
                    "handle_edge_irq", "handle_level_irq", "handle_fasteoi_irq", "hrtimer_interrupt",
                    "__hrtimer_run_queues", "exc_nmi", "asm_exc_nmi")

# --- over frames -----------------------------------------------------------------------------------

STALE_RUN = 3  # stale return addresses skipped between two scheduler frames (past_scheduler)


def is_scheduler(frame: Frame) -> bool:
    """Whether ``frame`` is scheduler plumbing (``SCHEDULER``), not where the task chose to sleep."""
    return frame.module is None and base_name(frame.symbol) in SCHEDULER


def past_scheduler(frames: list[Frame], keep: frozenset[str] = frozenset()) -> int:
    """Index of the first frame that is not scheduler plumbing (``SCHEDULER``), len(frames) if none.

    Frames amid the scheduler's (scheduler plumbing before and right after them, at most STALE_RUN of them)
    that are no lock slow path are stale return addresses the stack scan found, not callers:
    ``__schedule+0x4da``, ``find_held_lock+0x2b``, ``kdl_r_reader_fn+0x24 [kdl_rwsem]``, ``schedule+0x6e``,
    ``schedule_preempt_disabled+0x10``, ``__mutex_lock+0x1ed`` on the -Os 6.1-lockdep kernel, whose __schedule
    leaves slots of its frame unwritten. They are skipped; so are not the functions named in ``keep`` (the
    rt_mutex path, for rtmutex.py).
    """
    i = 0
    while i < len(frames):
        if is_scheduler(frames[i]):
            i += 1
            continue
        resume = next((j for j in range(i + 1, min(i + 1 + STALE_RUN, len(frames))) if is_scheduler(frames[j])), None)
        if i == 0 or resume is None or any(base_name(f.symbol) in SLOW_PATH_KIND or base_name(f.symbol) in keep
                                           for f in frames[i:resume]):
            return i
        i = resume
    return len(frames)


def interesting_frame(frames: list[Frame]) -> Optional[Frame]:
    """The innermost frame that is neither scheduler plumbing nor entry code: where the task chose to
    sleep (``msleep+0x2d``, ``kdl_w1_fn+0x64 [kdl_chain]``). None when the stack has nothing else."""
    for frame in frames[past_scheduler(frames):]:
        if frame.symbol is not None and not is_scheduler(frame) and not frame.symbol.startswith(ENTRY_CODE):
            return frame
    return None


def io_wait(frames: list[Frame]) -> Optional[str]:
    """The I/O-wait entry (``io_schedule``, ``io_schedule_timeout``) among the scheduler frames on top, else None."""
    return next((base_name(f.symbol) for f in frames[:past_scheduler(frames)] if base_name(f.symbol) in IO_WAITS), None)


def slow_path(frames: list[Frame]) -> Optional[tuple[str, int]]:
    """(lock kind, index of the slow-path frame) when the task sleeps in a lock's slow path.

    The first frame past the scheduler must be the slow path: a stack scan also
    finds stale return addresses deeper down (an old ``down_write`` of a task now
    in nanosleep), and those must not count.
    """
    i = past_scheduler(frames)
    if i == len(frames):
        return None
    kind = SLOW_PATH_KIND.get(base_name(frames[i].symbol))
    return (kind, i) if kind is not None and frames[i].module is None else None
