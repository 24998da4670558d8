"""The slow-path frame's lock variable as the strongest source of the lock a task waits on (kernel/framevars.py),
on hand-made tasks: the rule (agree: source "frame"; disagree: the frame wins, noted), and how the stack offset
of a chain of pcs is learnt from the debugger's answers so that it is not asked for every task.

That the frame's lock is the truth on real dumps of every scenario: tests/test_gdb_dumps.py
(test_frame_variables_name_each_waiters_lock).
"""
from __future__ import annotations

from array import array
from typing import Optional

from kdlgdb.kernel.framevars import FrameVariables, exact_frames, rt_lock_frames, take_frame_lock
from kdlgdb.kernel.stack import Stack
from kdlgdb.model import FRAME_VARIABLE, WAIT_LIST, Frame, Lock, Task

M1, M2 = 0xFFFFFFFFC05BB000, 0xFFFFFFFFC05BB020  # two mutexes
A, B, C = 0xFFFF888004000000, 0xFFFF888004008000, 0xFFFF888004010000  # tasks


def waiting(address: int, pid: int, lock: Optional[int]) -> Task:
    return Task(address, pid, pid, f"kdl_m{pid}", "D", 0, waits_on=lock, wait_source=WAIT_LIST if lock else "",
                wait_evidence="struct mutex_waiter at 0x… on its stack, linked into struct mutex 0x….wait_list" if lock else "")


def test_agreeing_frame_becomes_the_source() -> None:
    task = waiting(A, 93, M2)
    locks = {M2: Lock(M2, "mutex", waiters=[A])}
    made, problem = take_frame_lock(task, M2, "mutex", "lock = 0xffffffffc05bb020 in __mutex_lock+0x39d", locks)
    assert (made, problem) == (None, None)
    assert task.waits_on == M2 and task.wait_source == FRAME_VARIABLE
    assert task.wait_evidence.startswith("lock = 0xffffffffc05bb020 in __mutex_lock+0x39d; struct mutex_waiter")
    assert locks[M2].waiters == [A]


def test_disagreeing_frame_wins_and_is_noted() -> None:
    """The scan said M1 (a stale waiter struct), the frame says M2: the task moves to M2's waiters, M1 goes
    when no waiter is left, and a problem records both answers."""
    task, other = waiting(A, 93, M1), waiting(B, 94, M2)
    locks = {M1: Lock(M1, "mutex", waiters=[A]), M2: Lock(M2, "mutex", waiters=[B])}
    made, problem = take_frame_lock(task, M2, "mutex", "lock = 0xffffffffc05bb020 in __mutex_lock+0x39d", locks)
    assert made is None and task.waits_on == M2 and task.wait_source == FRAME_VARIABLE
    assert M1 not in locks and locks[M2].waiters == [B, A]
    assert problem is not None and problem.where == "task 93 (kdl_m93)"
    assert f"says it waits on {M2:#x}, the wait list said {M1:#x}" in problem.why and "the frame's lock is taken" in problem.why
    assert other.waits_on == M2


def test_frame_alone_makes_the_lock() -> None:
    """No waiter struct linked anywhere (the scan found nothing): the frame's lock is made, for its owners to be decoded."""
    task = waiting(C, 95, None)
    locks: dict[int, Lock] = {}
    made, problem = take_frame_lock(task, M1, "mutex", "lock = …", locks)
    assert problem is None and made is locks[M1] and made.type == "mutex" and made.waiters == [C]
    assert task.waits_on == M1 and task.wait_source == FRAME_VARIABLE


# --- learning where a chain of pcs keeps the variable ----------------------------------------------------

SCHEDULE, SLOW = 0xFFFFFFFF81A10E3D, 0xFFFFFFFF81A1343D  # __schedule+0x34d, __mutex_lock+0x39d
SWITCH_FRAME = {"r15": 0, "r14": 8, "r13": 16, "r12": 24, "bx": 32, "bp": 40}


class Debugger:
    """A target that knows each task's ``lock`` by its stack pointer, and counts the questions."""

    def __init__(self, answers: dict[int, Optional[int]]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    def frame_variables(self, pcs, registers, names):  # noqa: ANN001
        self.asked.append(registers["rsp"])
        if registers["rsp"] not in self.answers:
            return None
        return {"lock": self.answers[registers["rsp"]]}


class Kernel:
    def __init__(self, target: Debugger) -> None:
        self.target = target

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        if type_name == "struct rwbase_rt":
            return (8, 32) if path == "rtmutex" else None
        return (SWITCH_FRAME[path], 8) if path in SWITCH_FRAME else None

    def unrelocate(self, address: int) -> int:
        return address


def sleeper(address: int, pid: int, sp: int, lock: int, noise: int) -> tuple[Task, Stack]:
    """A task asleep in __mutex_lock: its switch frame (rbx = the lock), then a spill of ``noise``, the lock again
    at +0x40 (where __mutex_lock's caller-saved copy lies), and its caller."""
    words = [0, 0, 0, 0, lock, sp + 0x80, SCHEDULE, noise, lock, 0, 0, 0, 0, 0, 0, SLOW, 0]
    stack = Stack(sp, array("Q", words).tobytes())
    frames = [Frame(SCHEDULE, "__schedule", 0x34D, sp=sp + 48), Frame(SLOW, "__mutex_lock", 0x39D, sp=sp + 120),
              Frame(0xFFFFFFFFC05B9027, "kdl_m1_fn", 0x27, "kdl_mutex", sp=sp + 128)]
    return Task(address, pid, pid, f"kdl_m{pid}", "D", 0, frames=frames, unwinder="orc"), stack


def test_a_chains_offset_is_learnt_from_two_answers_then_read() -> None:
    sps = [0xFFFFC90000100000 + 0x4000 * i for i in range(5)]
    locks = [M1, M2, M1, M2, M1]
    # The first task's noise slot also holds its lock: two candidates, until the second answer rules one out.
    tasks = [sleeper(A + i, 90 + i, sp, lock, lock if i == 0 else 7) for i, (sp, lock) in enumerate(zip(sps, locks))]
    debugger = Debugger({sp + 56: lock for sp, lock in zip(sps, locks)})
    frames = FrameVariables(Kernel(debugger), 56)  # type: ignore[arg-type]
    got = [frames.lock(task, 1, stack, ("lock",)) for task, stack in tasks]
    assert [g.value if g else None for g in got] == locks
    assert [g.asked for g in got if g] == [True, True, False, False, False]
    assert len(debugger.asked) == 2 and frames.asked == 2
    assert "evaluated by the debugger" in got[0].describe() and "where the debugger found it for other tasks" in got[4].describe()
    # The registers given are the switch frame's: rbx is the lock, rsp above the frame.
    assert got[0].describe().startswith("lock = 0xffffffffc05bb000 in __mutex_lock+0x39d")


def test_optimised_out_or_no_debugger_falls_back() -> None:
    task, stack = sleeper(A, 93, 0xFFFFC90000100000, M1, 7)
    frames = FrameVariables(Kernel(Debugger({stack.sp + 56: None})), 56)  # type: ignore[arg-type]
    assert frames.lock(task, 1, stack, ("lock",)) is None
    assert frames.lock(task, 1, stack, ("lock",)) is None and frames.asked == 1  # known for the chain: not asked again
    crash = FrameVariables(Kernel(Debugger({})), 56)  # type: ignore[arg-type]
    assert crash.lock(task, 1, stack, ("lock",)) is None


def test_only_exact_frames_count() -> None:
    task, _ = sleeper(A, 93, 0xFFFFC90000100000, M1, 7)
    assert exact_frames(task, 1)
    task.unwinder = "scan"
    assert not exact_frames(task, 1)
    task.unwinder = "orc"
    task.frames[0].regs = True  # an interrupt boundary below the slow path
    assert not exact_frames(task, 1)
    task.frames[0].regs = False
    task.unwinder = "orc, frame pointer guess for 1 frame(s)"
    assert exact_frames(task, 1)  # the guess came later, outside the frames asked about
    task.frames[1].guessed = True  # the slow path's frame itself found by the guess
    assert not exact_frames(task, 1) and exact_frames(task, 0)
    task.unwinder = ""  # a bundle that does not say how its frames were found
    task.frames[1].guessed = False
    assert not exact_frames(task, 1)


def test_rt_frames_that_name_the_base() -> None:
    """An RT rw_semaphore's writer: the rt_mutex slow path's `lock` (the base itself), else rwbase's `rwb` (its
    container: the base is 8 bytes in); the scheduler entries and the module's caller name none."""
    names = ["__schedule", "rt_mutex_schedule", "__rt_mutex_slowlock_locked.constprop.0", "rwbase_write_lock",
             "down_write", "kdl_r_writer_fn"]
    frames = [Frame(0xFFFFFFFF81000000 + i, name, 0x10, "kdl_rwsem" if name.startswith("kdl") else None, sp=8 * i)
              for i, name in enumerate(names)]
    assert rt_lock_frames(Kernel(Debugger({})), frames) == [(2, ("lock",), 0), (3, ("rwb",), 8)]  # type: ignore[arg-type]
