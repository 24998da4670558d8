"""Inferred holders of locks that record no owner (collect._infer_holders), on hand-made tasks and CPUs.

A spinlock reached through a pointer (``spin_lock(&job->src->lock)``) is named by no constant in any code;
its holder is found where the value really is: in the registers of the CPU that runs the holder, or on
its stack. The lock a task spins on is never counted as held by it.
"""
from __future__ import annotations

from array import array

from kdlgdb.analysis.graph import WaitForGraph
from kdlgdb.kernel.collect import _infer_holders
from kdlgdb.kernel.cpus import CpuState
from kdlgdb.kernel.held import first_argument
from kdlgdb.kernel.stack import Stack
from kdlgdb.model import Lock, Snapshot, Task

QA, QB = 0xFFFF8880052787D8, 0xFFFF888005278F48  # two spinlocks in kmalloc'd structs
A, B = 0xFFFF888004000000, 0xFFFF888004008000  # the two tasks


class NoCode:
    """Code that names no lock as a constant (the locks are reached through pointers)."""

    def held_by_frames(self, frames: list) -> list:
        return []


def spinning(address: int, pid: int, cpu: int, waits_on: int) -> Task:
    return Task(address, pid, pid, f"kdl_job_{pid}", "R", cpu, on_cpu=True, waits_on=waits_on)


def stack_with(sp: int, *values: int) -> Stack:
    return Stack(sp, array("Q", [0x10, *values, 0x20]).tobytes())


def test_holders_from_the_cpus_registers_and_stacks() -> None:
    tasks = {A: spinning(A, 93, 0, QB), B: spinning(B, 94, 1, QA)}
    locks = {QA: Lock(QA, "spinlock", waiters=[B]), QB: Lock(QB, "spinlock", waiters=[A])}
    # CPU 0 keeps qa's lock in a callee-saved register (%rdi is the lock it spins on); CPU 1 spilled qb's.
    cpu0 = CpuState(0, {"rdi": QB, "r13": QA, "rip": 0xFFFFFFFF81000000}, A, "note 0")
    cpu1 = CpuState(1, {"rdi": QA, "rbx": QA}, B, "note 1", stacks=[stack_with(0xFFFFC90000203F00, QA, QB)])
    _infer_holders(None, NoCode(), locks, tasks, {}, [cpu0, cpu1])  # type: ignore[arg-type]
    assert [(o.task, o.confidence, o.evidence) for o in locks[QA].owners] == [
        (A, "inferred", "its address is in %r13 of CPU 0, which runs the task")]
    assert [(o.task, o.evidence) for o in locks[QB].owners] == [
        (B, f"its address is on the task's stack at {0xFFFFC90000203F00 + 16:#x}")]
    (cycle,) = WaitForGraph(Snapshot(tasks=list(tasks.values()), locks=list(locks.values()))).cycles
    assert cycle.verdict == "probable" and sorted(cycle.tasks) == [A, B]


def test_the_lock_a_cpu_spins_on_is_not_held_by_it() -> None:
    tasks = {A: spinning(A, 93, 0, QB)}
    locks = {QB: Lock(QB, "spinlock", waiters=[A])}
    cpu0 = CpuState(0, {"rdi": QB, "rbx": QB}, A, "note 0", stacks=[stack_with(0xFFFFC90000203F00, QB)])
    _infer_holders(None, NoCode(), locks, tasks, {}, [cpu0])  # type: ignore[arg-type]
    assert locks[QB].owners == []


# -- the constant argument of a call, from the code before it (kernel/held.py) ------------------------------
def _call(code: bytes) -> bytes:
    return code + b"\xe8\x00\x00\x00\x00"


MOV_LOCK = b"\x48\xc7\xc7" + (0xFFFFFFFFC0123450 - (1 << 64)).to_bytes(4, "little", signed=True)  # mov $lock,%rdi


def test_the_constant_loaded_into_rdi_right_before_the_call() -> None:
    assert first_argument(_call(MOV_LOCK), len(MOV_LOCK), 0) == 0xFFFFFFFFC0123450
    # the second argument set up in between: xor %esi,%esi; mov $0x2,%edx
    between = b"\x31\xf6\xba\x02\x00\x00\x00"
    assert first_argument(_call(MOV_LOCK + between), len(MOV_LOCK + between), 0) == 0xFFFFFFFFC0123450
    lea = b"\x48\x8d\x3d\x10\x00\x00\x00"  # lea 0x10(%rip),%rdi: relative to the next instruction
    assert first_argument(_call(lea), len(lea), 0x1000) == 0x1000 + len(lea) + 0x10


def test_no_constant_when_rdi_is_written_after_it() -> None:
    """What made a printk format read as kdl_spinjob's lock on the lock-debugging kernel: the constant was
    an earlier call's argument."""
    for between in (b"\xe8\x00\x00\x00\x00",  # call printk: %rdi is the callee's to change
                    b"\x48\x89\xdf",  # mov %rbx,%rdi
                    b"\x48\x8b\x7b\x08",  # mov 0x8(%rbx),%rdi
                    b"\x48\x8d\x7b\x10",  # lea 0x10(%rbx),%rdi
                    b"\xbf\x01\x00\x00\x00",  # mov $1,%edi
                    b"\x31\xff"):  # xor %edi,%edi
        code = MOV_LOCK + between
        assert first_argument(_call(code), len(code), 0) is None, between.hex()
    # ... but not when another register is written: mov %rbx,%r15; mov 0x8(%rbx),%r15
    for between in (b"\x49\x89\xdf", b"\x4c\x8b\x7b\x08"):
        code = MOV_LOCK + between
        assert first_argument(_call(code), len(code), 0) == 0xFFFFFFFFC0123450, between.hex()
