"""The ORC decoder and the unwinder on hand-made tables and stacks (no kernel, no gdb)."""
from __future__ import annotations

import struct

import pytest

from kdlgdb.kernel.orc import CALL, END_OF_STACK, ORC_REG, REGS, REGS_PARTIAL, UNDEFINED, OrcEntry, OrcFormat, OrcTable
from kdlgdb.kernel.unwind import FRAME_POINTERS, PT_REGS, Start, start_blocked, start_registers, unwind

# Bit-fields of struct orc_entry as DWARF gives them: (bit offset from the struct's start, size).
BITS_6_1 = {"sp_reg": (32, 4), "bp_reg": (36, 4), "type": (40, 2), "end": (42, 1)}
BITS_6_3 = {"sp_reg": (32, 4), "bp_reg": (36, 4), "type": (40, 2), "signal": (42, 1), "end": (43, 1)}
BITS_6_12 = {"sp_reg": (32, 4), "bp_reg": (36, 4), "type": (40, 3), "signal": (43, 1)}
SP, BP, PREV_SP, UNDEF = ORC_REG["sp"], ORC_REG["bp"], ORC_REG["prev_sp"], ORC_REG["undefined"]


def raw(sp_offset: int, bp_offset: int, sp_reg: int, bp_reg: int, kind: int, signal: int = 0, end: int = 0,
        bits: dict = BITS_6_12) -> bytes:
    word = sp_reg << (bits["sp_reg"][0] - 32) | bp_reg << (bits["bp_reg"][0] - 32) | kind << (bits["type"][0] - 32)
    if "signal" in bits:
        word |= signal << (bits["signal"][0] - 32)
    if "end" in bits:
        word |= end << (bits["end"][0] - 32)
    return struct.pack("<hhH", sp_offset, bp_offset, word)


def test_formats_from_dwarf_bitfields():
    old = OrcFormat.detect(BITS_6_1.get)
    assert old.decode(raw(8, 0, SP, UNDEF, 0, bits=BITS_6_1)) == OrcEntry(8, 0, SP, UNDEF, CALL, False)
    assert old.decode(raw(0, 0, SP, UNDEF, 1, bits=BITS_6_1)).type == REGS
    assert old.decode(raw(0, 0, SP, UNDEF, 1, bits=BITS_6_1)).signal  # before the bit, regs frames are exact
    assert old.decode(raw(0, 0, UNDEF, UNDEF, 0, end=1, bits=BITS_6_1)).type == END_OF_STACK
    assert old.decode(raw(0, 0, UNDEF, UNDEF, 0, end=0, bits=BITS_6_1)).type == UNDEFINED
    mid = OrcFormat.detect(BITS_6_3.get)
    assert mid.decode(raw(16, -16, SP, PREV_SP, 0, signal=1, bits=BITS_6_3)) == OrcEntry(16, -16, SP, PREV_SP, CALL, True)
    new = OrcFormat.detect(BITS_6_12.get)
    assert [new.decode(raw(8, 0, SP, UNDEF, n)).type for n in range(5)] == [UNDEFINED, END_OF_STACK, CALL, REGS, REGS_PARTIAL]
    assert new.decode(raw(8, 0, SP, UNDEF, 3, signal=1)).signal
    assert new.decode(raw(8, 0, SP, UNDEF, 7)).type == "type 7"
    # No struct orc_entry in the debug info: orc_header (v6.4) decides.
    assert OrcFormat.detect(lambda name: None, has_orc_header=lambda: True) == OrcFormat()
    assert OrcFormat.detect(lambda name: None).end is not None


def test_table_is_self_relative_and_takes_the_rightmost_start():
    fmt = OrcFormat()
    base = 0xFFFFFFFF82000000
    starts = [0xFFFFFFFF81000000, 0xFFFFFFFF81000010, 0xFFFFFFFF81000010, 0xFFFFFFFF81000040]
    ips = b"".join(struct.pack("<i", ip - (base + 4 * i)) for i, ip in enumerate(starts))
    entries = raw(0, 0, UNDEF, UNDEF, 0) + raw(8, 0, SP, UNDEF, 2) + raw(16, 0, SP, UNDEF, 2) + raw(24, 0, SP, UNDEF, 2)
    table = OrcTable.from_memory(base, ips, entries, fmt)
    assert table.find(0xFFFFFFFF80FFFFFF) is None
    assert table.find(0xFFFFFFFF81000000).type == UNDEFINED
    assert table.find(0xFFFFFFFF81000010).sp_offset == 16  # a terminator before a real entry loses
    assert table.find(0xFFFFFFFF8100003F).sp_offset == 16
    assert table.find(0xFFFFFFFF81FFFFFF).sp_offset == 24


# A hand-made kernel: text at 0x1000.., one stack [0x8000, 0xC000).
STACK = (0x8000, 0xC000)
CALL8 = OrcEntry(8, 0, SP, UNDEF, CALL, False)  # a leaf-like function: return address just above sp
CALL24 = OrcEntry(24, -16, SP, PREV_SP, CALL, False)  # pushed bp and one more word
END = OrcEntry(0, 0, UNDEF, UNDEF, END_OF_STACK, False)
ENTRY_REGS = OrcEntry(0, 0, SP, UNDEF, REGS, True)


def code(mapping: dict[int, OrcEntry]):
    """find(ip): functions at 0x100-byte strides, ip // 0x100 -> entry."""
    return lambda ip: mapping.get(ip >> 8)


class Memory(dict):
    def u64(self, address: int) -> int:
        return self.get(address, 0)


def test_call_frames_to_the_end_of_a_kthread():
    mem = Memory()
    # inactive_task_frame at 0x9000: ..., bp at +40, ret_addr at +48; size 56.
    mem[0x9000 + 40], mem[0x9000 + 48] = 0x9999, 0x1010  # __schedule
    mem[0x9038] = 0x2020  # schedule's caller: one word above (CALL8 of 0x10xx)
    mem[0x9040 + 8] = 0x0BAD  # a saved bp
    mem[0x9040 + 16] = 0x3030  # CALL24 of 0x20xx: return address at sp + 24 - 8
    start = start_blocked(mem.u64, 0x9000, 48, 40, 56)
    assert (start.ip, start.sp, start.slot) == (0x1010, 0x9038, 0x9030)
    result = unwind(start, code({0x10: CALL8, 0x20: CALL24, 0x30: END}), mem.u64, [STACK])
    assert result.error is None
    assert [(f.pc, f.slot) for f in result.frames] == [(0x1010, 0x9030), (0x2020, 0x9038), (0x3030, 0x9050)]
    assert [f.sp for f in result.frames] == [0x9038, 0x9040, 0x9058]  # each caller's sp: the slot above its return


def test_interrupt_frame_is_crossed_and_marked():
    mem = Memory()
    regs = 0x9100
    mem[regs + PT_REGS["ip"]], mem[regs + PT_REGS["cs"]], mem[regs + PT_REGS["sp"]] = 0x2040, 0x10, 0x9400
    mem[regs + PT_REGS["bp"]] = 0x1234
    mem[0x9400 + 8 - 8] = 0x3030  # the interrupted function's caller (CALL8 of 0x20xx)
    start = Start(0x4010, regs, 0, slot=regs - 8)  # an entry stub whose sp points at the pt_regs
    result = unwind(start, code({0x40: ENTRY_REGS, 0x20: CALL8, 0x30: END}), mem.u64, [STACK])
    assert result.error is None
    assert [f.pc for f in result.frames] == [0x4010, 0x2040, 0x3030]
    assert result.frames[1].regs == regs and result.frames[1].slot == regs + PT_REGS["ip"]
    # The interrupted function runs on the sp the interrupt saved, not on the word above pt_regs->ip.
    assert result.frames[1].sp == 0x9400 and result.frames[2].sp == 0x9400 + 8


def test_user_mode_pt_regs_end_a_user_task_stack():
    mem = Memory()
    regs = 0xBF58
    mem[regs + PT_REGS["ip"]], mem[regs + PT_REGS["cs"]], mem[regs + PT_REGS["sp"]] = 0x7F0000001000, 0x33, 0x7FFF0000
    result = unwind(Start(0x4010, regs, 0), code({0x40: ENTRY_REGS}), mem.u64, [STACK])
    assert result.error is None and [f.pc for f in result.frames] == [0x4010]


def test_irq_stack_then_task_stack():
    irq = (0x20000, 0x24000)
    mem = Memory()
    # On the IRQ stack: a handler (CALL8) called from the stack-switch code, whose entry is SP_INDIRECT:
    # the word at sp holds the interrupted task-stack sp.
    mem[0x23FF0] = 0x5010  # return into the switcher
    mem[0x23FF8] = 0x9800  # saved task sp (the top word of the IRQ stack)
    mem[0x9800] = 0x3030
    switcher = OrcEntry(8, 0, ORC_REG["sp_indirect"], UNDEF, CALL, False)
    result = unwind(start_registers({"rip": 0x2010, "rsp": 0x23FF0, "rbp": 0}),
                    code({0x20: CALL8, 0x50: switcher, 0x30: END}), mem.u64, [STACK, irq])
    assert result.error is None, result.error
    assert [f.pc for f in result.frames] == [0x2010, 0x5010, 0x3030]


def test_frame_pointers_without_orc():
    mem = Memory()
    mem[0x9000 + 40], mem[0x9000 + 48] = 0x9100, 0x1010
    mem[0x9100], mem[0x9108] = 0x9200, 0x2020
    mem[0x9200], mem[0x9208] = 0, 0x3030
    result = unwind(start_blocked(mem.u64, 0x9000, 48, 40, 56), lambda ip: None, mem.u64, [STACK], frame_pointers=True)
    assert result.method == FRAME_POINTERS
    assert [f.pc for f in result.frames][:3] == [0x1010, 0x2020, 0x3030]
    assert result.error is not None  # bp 0 at the end: a read outside the stack, not a crash


@pytest.mark.parametrize("entry, why", [
    (OrcEntry(0, 0, SP, UNDEF, CALL, False), "does not grow"),  # sp + 0: the same frame again
    (OrcEntry(-64, 0, SP, UNDEF, CALL, False), "does not grow"),  # sp going down
    (OrcEntry(0x10000, 0, SP, UNDEF, CALL, False), "leave the task's stacks"),  # far above the stack
    (OrcEntry(8, 0, 15, UNDEF, CALL, False), "unknown sp base register"),
    (OrcEntry(8, 0, SP, 15, CALL, False), "unknown bp base register"),
    (OrcEntry(8, 0, SP, UNDEF, "type 7", False), "unknown type"),
    (OrcEntry(8, 0, SP, UNDEF, UNDEFINED, False), "undefined"),
    (OrcEntry(8, 0, ORC_REG["r10"], UNDEF, CALL, False), "%r10"),
])
def test_corrupt_orc_ends_with_a_reason(entry, why):
    mem = Memory({0x9038: 0x1010})
    result = unwind(Start(0x1010, 0x9038, 0, slot=0x9030), lambda ip: entry, mem.u64, [STACK])
    assert result.error is not None and why in result.error
    assert result.frames[0].pc == 0x1010


def test_looping_stack_is_bounded():
    # Every return address points back into the same function and sp grows by 8 each time:
    # the depth limit stops it, with a reason.
    mem = Memory({a: 0x1010 for a in range(0x8000, 0xC000, 8)})
    result = unwind(Start(0x1010, 0x8008, 0), code({0x10: CALL8}), mem.u64, [STACK], limit=50)
    assert len(result.frames) == 50 and "more than 50 frames" in result.error


def test_bad_start_and_unreadable_memory():
    result = unwind(Start(0x1010, 0x100, 0), code({0x10: CALL8}), Memory().u64, [STACK])
    assert "none of the task's stacks" in result.error

    def unreadable(address: int) -> int:
        from kdlgdb.errors import ReadError
        raise ReadError(address, 8, "not in dump")

    result = unwind(Start(0x1010, 0x9000, 0), code({0x10: CALL8}), unreadable, [STACK])
    assert result.error.startswith("unreadable stack") and len(result.frames) == 1


def test_unknown_code_is_guessed_with_frame_pointers():
    mem = Memory({0x9100: 0x9200, 0x9108: 0x3030})
    result = unwind(Start(0x7010, 0x9000, 0x9100), code({0x30: END}), mem.u64, [STACK])
    assert [f.pc for f in result.frames] == [0x7010, 0x3030] and result.guessed == [1]


def test_hung_task_stacks_keep_the_frames_the_kernel_vouched_for():
    from kdlgdb.analysis.kernlog import hung_task_stacks
    from kdlgdb.kernel.printk import LogRecord

    lines = ["INFO: task kdl_m1:93 blocked for more than 5 seconds.",
             "task:kdl_m1          state:D stack:0     pid:93    ppid:2      flags:0x00004000",
             "Call Trace:", " <TASK>", " __schedule+0x34d/0xa00", " schedule+0x5a/0xd0",
             " __mutex_lock.constprop.0+0x39d/0x720", " ? __bpf_trace_tick_stop+0x10/0x10",
             " ? kdl_m3_fn+0x40/0x40 [kdl_mutex]", " kdl_m1_fn+0x27/0x50 [kdl_mutex]", " ret_from_fork+0x22/0x30",
             " </TASK>", "task:other state:D stack:0 pid:94 ppid:2 flags:0x0", " <TASK>", " schedule+0x5a/0xd0"]
    records = [LogRecord(n, n, 6, text) for n, text in enumerate(lines)]
    assert hung_task_stacks(records) == {93: ["__schedule+0x34d", "schedule+0x5a", "__mutex_lock.constprop.0+0x39d",
                                              "kdl_m1_fn+0x27 [kdl_mutex]", "ret_from_fork+0x22"]}
