"""Per-CPU registers from dump notes, and matching them to Linux CPUs, on hand-made bytes."""
from __future__ import annotations

import struct

import pytest

from kdlgdb.kernel.cpus import _CpuArea, frame_context, map_registers
from kdlgdb.model import Frame
from kdlgdb.target.cpustate import PRSTATUS_REG_OFFSET, USER_REGS, registers_from_notes
from kdlgdb.target.vmcore import parse_notes

RIP, RSP, GS = 0xFFFFFFFF81A18710, 0xFFFFC900003F3EE8, 0xFFFF88800F700000


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note: namesz, descsz, type, name and desc each padded to 4 bytes."""
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


def prstatus(**regs: int) -> bytes:
    """struct elf_prstatus of x86_64 (336 bytes) with pr_reg filled from ``regs``."""
    desc = bytearray(336)
    struct.pack_into("<I", desc, 32, 7)  # pr_pid: must not be read as a register
    struct.pack_into(f"<{len(USER_REGS)}Q", desc, PRSTATUS_REG_OFFSET, *(regs.get(r, 0) for r in USER_REGS))
    return bytes(desc)


def qemu_state(gs_base: int, kernel_gs_base: int, with_kernel_gs: bool = True) -> bytes:
    """QEMUCPUState: version 1; segments cs..ss, ldt, tr, gdt, idt of 24 bytes; cr[5]; kernel_gs_base."""
    size = 8 + 18 * 8 + 10 * 24 + 5 * 8 + (8 if with_kernel_gs else 0)
    desc = bytearray(size)
    struct.pack_into("<II", desc, 0, 1, size)
    struct.pack_into("<Q", desc, 8 + 18 * 8 + 4 * 24 + 16, gs_base)  # gs.base
    if with_kernel_gs:
        struct.pack_into("<Q", desc, size - 8, kernel_gs_base)
    return bytes(desc)


def test_registers_from_qemu_notes() -> None:
    blob = (note(b"CORE", 1, prstatus(rip=RIP, rsp=RSP, rbp=3, rdi=0xFFFFFFFFC02093D0, gs_base=GS))
            + note(b"QEMU", 0, qemu_state(GS, 0))
            + note(b"CORE", 1, prstatus(rip=0x401000, rsp=0x7FFD0000, gs_base=0))
            + note(b"QEMU", 0, qemu_state(0, GS + 0x100000))
            + note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n"))
    cpus = registers_from_notes(parse_notes(blob))
    assert cpus is not None and len(cpus) == 2
    assert (cpus[0]["rip"], cpus[0]["rsp"], cpus[0]["rbp"], cpus[0]["rdi"]) == (RIP, RSP, 3, 0xFFFFFFFFC02093D0)
    assert cpus[0]["gs_base"] == GS and cpus[0]["kernel_gs_base"] == 0
    assert cpus[1]["rip"] == 0x401000 and cpus[1]["kernel_gs_base"] == GS + 0x100000


def test_kdump_notes_without_qemu_state() -> None:
    """A kernel's own dump (/proc/vmcore) has CORE notes only; an older QEMU's state lacks kernel_gs_base."""
    cpus = registers_from_notes(parse_notes(note(b"CORE", 1, prstatus(rip=RIP, rsp=RSP, gs_base=GS))))
    assert cpus == [dict(zip(USER_REGS, [0] * 16 + [RIP, 0, 0, RSP, 0, 0, GS] + [0] * 4))]
    old = registers_from_notes(parse_notes(note(b"CORE", 1, prstatus(rip=RIP, rsp=RSP))
                                           + note(b"QEMU", 0, qemu_state(GS, 0, with_kernel_gs=False))))
    assert old is not None and old[0]["gs_base"] == GS and "kernel_gs_base" not in old[0]
    assert registers_from_notes(parse_notes(note(b"VMCOREINFO", 0, b"X=1\n"))) is None
    assert registers_from_notes(parse_notes(note(b"CORE", 1, b"\0" * 100))) is None  # cut short: not a prstatus


def areas() -> list[_CpuArea]:
    return [
        _CpuArea(0, GS - 0x100000, 0xA0, (0xFFFFC90000390000, 0xFFFFC90000394000), (0xFFFFC90000000000, 0xFFFFC90000004000), 0),
        _CpuArea(1, GS, 0xB0, (0xFFFFC900003F0000, 0xFFFFC900003F4000), (0xFFFFC90000080000, 0xFFFFC90000084000), 0x100),
    ]


def test_map_by_gs_base_confirmed_by_the_stack() -> None:
    area, why = map_registers({"rip": RIP, "rsp": RSP, "gs_base": GS}, areas())
    assert area is not None and area.cpu == 1
    assert why == f"GS base {GS:#x} is __per_cpu_offset[1]; rsp {RSP:#x} is in its current task's stack"


def test_map_user_mode_by_kernel_gs_base() -> None:
    area, why = map_registers({"rip": 0x401000, "rsp": 0x7FFD0000, "gs_base": 0, "kernel_gs_base": GS - 0x100000}, areas())
    assert area is not None and area.cpu == 0 and why.startswith("kernel GS base ")


def test_map_by_irq_stack_without_gs_base() -> None:
    area, why = map_registers({"rip": RIP, "rsp": 0xFFFFC90000003E68}, areas())
    assert area is not None and area.cpu == 0 and why == "rsp 0xffffc90000003e68 is in CPU 0's IRQ stack"


def test_unmapped_registers_say_why() -> None:
    area, why = map_registers({"rip": RIP, "rsp": 0xFFFFFE0000001000, "gs_base": 0x1234}, areas())
    assert area is None and "no CPU's current-task or IRQ stack" in why


def test_frame_contexts() -> None:
    """kdl_irq's CPU 0: a timer callback spinning in softirq, on top of the kthread it interrupted."""
    names = ["native_queued_spin_lock_slowpath", "_raw_spin_lock", "kdl_irq_timer_fn", "call_timer_fn",
             "run_timer_softirq", "handle_softirqs", "__irq_exit_rcu", "sysvec_apic_timer_interrupt",
             "asm_sysvec_apic_timer_interrupt", "kdl_irq_fn", "kthread", "ret_from_fork"]
    frames = [Frame(0, n, 0x10, "kdl_irq" if n.startswith("kdl_") else None) for n in names]
    interrupted = {9}
    assert frame_context(frames, interrupted, 0) == "softirq"
    assert frame_context(frames, interrupted, 7) == "hardirq"
    assert frame_context(frames, interrupted, 9) == "task"
    hard = [Frame(0, n, 0x10) for n in ("native_queued_spin_lock_slowpath", "_raw_spin_lock", "my_hrtimer_fn",
                                         "__hrtimer_run_queues", "hrtimer_interrupt")]
    assert frame_context(hard, set(), 0) == "hardirq"


def test_cut_files_give_no_registers_or_one_line(tmp_path) -> None:
    """A kdump whose sub-header is cut off has no registers (crash's target asks for them first);
    an ELF core whose e_phnum is PN_XNUM without a section header is a one-line error."""
    from kdlgdb.errors import KdlError
    from kdlgdb.target.cpustate import dump_cpu_registers
    from kdlgdb.target.vmcore import open_elf_dump

    head = bytearray(4096)
    head[:8] = b"KDUMP   "
    struct.pack_into("<i", head, 8, 6)  # header version
    struct.pack_into("<iiII", head, 428, 4096, 1, 1, 100)  # block_size, sub_hdr_size, bitmap_blocks, max_mapnr
    cut = tmp_path / "cut.kdump"
    cut.write_bytes(bytes(head) + bytes(20))  # the sub-header needs 104 bytes at block_size
    assert dump_cpu_registers(str(cut)) is None
    ehdr = bytearray(64)
    ehdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", ehdr, 16, 4)  # ET_CORE
    struct.pack_into("<QQ", ehdr, 32, 64, 0)  # e_phoff, e_shoff: none
    struct.pack_into("<HH", ehdr, 54, 56, 0xFFFF)  # e_phentsize, e_phnum = PN_XNUM
    xnum = tmp_path / "xnum"
    xnum.write_bytes(bytes(ehdr))
    with pytest.raises(KdlError, match="PN_XNUM"):
        open_elf_dump(str(xnum))


def test_a_cpu_caught_switching_belongs_to_the_task_on_whose_stack_it_is() -> None:
    """Dumped between prepare_task_switch and switch_to (6.12-rt kdl_rtmutex, CPU 0 from swapper/0 to
    ksoftirqd/0): rq->curr is the next task, the registers are on the previous one's stack, and both say on_cpu.
    The registers go to the previous task; the next one keeps its saved stack (collect.read_cpus reads it)."""
    from kdlgdb.kernel.cpus import _switching_from
    from kdlgdb.model import Task
    prev = Task(0xC0, 0, 0, "swapper/0", "R", 0, on_cpu=True, stack_base=0xFFFFFFFF82C00000)
    curr = Task(0xA0, 17, 17, "ksoftirqd/0", "R", 0, on_cpu=True, stack_base=0xFFFFC90000390000)
    asleep = Task(0xD0, 5, 5, "kworker", "S", 0, stack_base=0xFFFFFFFF82C00000)  # not on a CPU: never chosen
    area, why = map_registers({"rip": RIP, "rsp": 0xFFFFFFFF82C03E18, "gs_base": GS - 0x100000}, areas())
    assert area is not None and area.task == 0xA0
    moved, why = _switching_from(area, {"rip": RIP, "rsp": 0xFFFFFFFF82C03E18}, why, {0xA0: curr, 0xC0: prev}, 0x4000)
    assert moved.task == 0xC0 and moved.task_stack == (0xFFFFFFFF82C00000, 0xFFFFFFFF82C04000) and moved.cpu == 0
    assert why.endswith('is on the stack of "swapper/0" (pid 0): CPU 0 is switching from it to "ksoftirqd/0" (pid 17)')
    kept, _ = _switching_from(area, {"rip": RIP, "rsp": 0xFFFFFFFF82C03E18}, why, {0xA0: curr, 0xD0: asleep}, 0x4000)
    assert kept is area
    on_own, _ = _switching_from(area, {"rip": RIP, "rsp": 0xFFFFC90000393E00}, why, {0xA0: curr, 0xC0: prev}, 0x4000)
    assert on_own is area  # the registers on rq->curr's own stack: no switch to see
