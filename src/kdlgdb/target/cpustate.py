"""Each CPU's registers as a dump saved them: the ELF notes QEMU and kdump write per CPU.

QEMU's ``dump-guest-memory`` (every form: ELF with or without paging, the kdump
formats) writes, per vCPU in CPU-index order, an ``NT_PRSTATUS`` note named
``CORE`` (``struct elf_prstatus``; on x86_64 its ``pr_reg`` is a
``struct user_regs_struct``) and a ``QEMU`` note (``QEMUCPUState``: the
registers again, every segment with its base, and, when its ``size`` says so,
``kernel_gs_base``). A kernel's own crash dump (kdump's ``/proc/vmcore``) has the
``CORE`` notes only. Register sets are dicts of register name to value
(``rip``, ``rsp``, ``rbp``, ``rdi``, ``gs_base``, and ``kernel_gs_base`` where
known), one per note, in note order.
"""
from __future__ import annotations

import struct
from typing import Optional

from ..errors import KdlError
from .dumpfile import sniff
from .kdump import KdumpFile
from .vmcore import open_elf_dump

__all__ = ["registers_from_notes", "dump_cpu_registers", "USER_REGS", "PRSTATUS_REG_OFFSET"]

NT_PRSTATUS = 1
# struct elf_prstatus on x86_64: elf_siginfo (12), pr_cursig (2, padded), pr_sigpend, pr_sighold (8 each),
# pid, ppid, pgrp, sid (4 each), four struct timeval (16 each): pr_reg starts at byte 112.
PRSTATUS_REG_OFFSET = 112
# struct user_regs_struct (arch/x86/include/asm/user_64.h), in order.
USER_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)
# QEMUCPUState (QEMU target/i386/arch_dump.c): version, size (u32 each), 16 general registers, rip, rflags
# (u64 each), then QEMUCPUSegment {u32 selector, limit, flags, pad; u64 base} for cs, ds, es, fs, gs, ss,
# ldt, tr, gdt, idt; cr[5]; and kernel_gs_base, present when ``size`` covers it.
QEMU_SEGMENT = 24
QEMU_GS_BASE = 8 + 18 * 8 + 4 * QEMU_SEGMENT + 16
QEMU_KERNEL_GS_BASE = 8 + 18 * 8 + 10 * QEMU_SEGMENT + 5 * 8


def registers_from_notes(notes: list[tuple[str, int, bytes]]) -> Optional[list[dict[str, int]]]:
    """One register set per CPU from a dump's notes (``(name, type, desc)``), or None if it has none.

    The n-th ``QEMU`` note belongs to the n-th ``CORE`` one (QEMU writes them in pairs, CPU by CPU);
    it adds ``kernel_gs_base``, the kernel's GS base while the CPU was in user mode.
    """
    sets: list[dict[str, int]] = []
    for name, ntype, desc in notes:
        if name == "CORE" and ntype == NT_PRSTATUS and len(desc) >= PRSTATUS_REG_OFFSET + 8 * len(USER_REGS):
            values = struct.unpack_from(f"<{len(USER_REGS)}Q", desc, PRSTATUS_REG_OFFSET)
            sets.append(dict(zip(USER_REGS, values)))
    if not sets:
        return None
    qemu = [desc for name, _, desc in notes if name == "QEMU"]
    for regs, desc in zip(sets, qemu):
        if len(desc) < 8:
            continue
        size = struct.unpack_from("<I", desc, 4)[0]
        if size >= QEMU_KERNEL_GS_BASE + 8 and len(desc) >= QEMU_KERNEL_GS_BASE + 8:
            regs["kernel_gs_base"] = struct.unpack_from("<Q", desc, QEMU_KERNEL_GS_BASE)[0]
        if len(desc) >= QEMU_GS_BASE + 8 and not regs.get("gs_base"):
            regs["gs_base"] = struct.unpack_from("<Q", desc, QEMU_GS_BASE)[0]
    return sets


def dump_cpu_registers(path: str) -> Optional[list[dict[str, int]]]:
    """The per-CPU registers of the dump file at ``path`` (ELF or kdump, normal or flattened), or None."""
    try:
        with open(path, "rb") as f:
            if sniff(f) == "kdump":
                return registers_from_notes(KdumpFile(f, path).notes)
    except (OSError, KdlError, struct.error):  # struct.error: a kdump header cut short (kdump.py does not check)
        return None
    try:
        return registers_from_notes(open_elf_dump(path).notes)
    except KdlError:
        return None
