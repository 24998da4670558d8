"""The kernel log: the printk ring buffer of a dump or a live kernel.

Since v5.10 (b6cf8b3f3312, "printk: add lockless ringbuffer") the log lives in
the lockless ring buffer that ``prb`` (``struct printk_ringbuffer *``) points
to: a descriptor ring (``struct prb_desc descs[]`` with a parallel
``struct printk_info infos[]``, both ``1 << count_bits`` long) and a text data
ring (``1 << size_bits`` bytes). Descriptors from ``tail_id`` to ``head_id``
are the records still in the buffer; each names the block of the data ring
that holds its text by logical positions (``text_blk_lpos``).

Everything is read in a few large reads: the used part of the descriptor
array, of the info array and of the data ring (each at most two reads, when
the used part wraps around the end of its array), then decoded in Python.
Every offset and size comes from the vmlinux's DWARF. Records that cannot be
read (a page missing from the dump, a record being written when the kernel
stopped, a data block that does not check out) are skipped and counted in
``Problem`` notes, one per reason.

The older ``log_buf`` of ``struct printk_log`` records (v3.5 to v5.9) is not
supported: :func:`kernel_log` raises a one-line ``KdlError`` for it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ..errors import KdlError, ReadError
from ..model import Problem
from .layout import Kernel

__all__ = ["LogRecord", "PrbLayout", "kernel_log", "panic_message"]

PAGE = 4096
PAGEWISE_MOST = 64 << 20  # the most of a ring that fails to read whole kdlgdb tries page by page

# Descriptor states, in the top two bits of prb_desc.state_var ("enum
# desc_state" of kernel/printk/printk_ringbuffer.h, v5.10+; constants, not in
# the DWARF the target answers from).
DESC_RESERVED = 0
DESC_COMMITTED = 1
DESC_FINALIZED = 2
DESC_REUSABLE = 3

# Special text_blk_lpos values of data-less records (both odd, which no real
# block position is): FAILED_LPOS (0x1) the text was lost; NO_LPOS (0x3,
# later renamed EMPTY_LINE_LPOS) an empty line with no text block.
FAILED_LPOS = 0x1
NO_LPOS = 0x3

# printk_info.caller_id: a task's pid, or 0x80000000 | cpu when printk ran
# outside task context (since v5.1, 15ff2069cb7f "printk: Add caller
# information to printk() output"; always stored in the lockless buffer).
CALLER_CPU = 0x80000000

U64 = (1 << 64) - 1


@dataclass
class LogRecord:
    """One record of the kernel log (``struct printk_info`` plus its text).

    ``text`` is the record's whole text without the final newline; a record
    printed with embedded newlines, or continued with ``pr_cont``, keeps them
    (``"\\n"`` inside ``text``). ``level`` is the syslog level (0 emerg .. 7
    debug); ``caller`` is ``"T<pid>"`` or ``"C<cpu>"``, as the kernel's
    ``CONFIG_PRINTK_CALLER`` prefix writes it.
    """

    seq: int
    ts_ns: int
    level: int
    text: str
    caller: str = ""


@dataclass(frozen=True)
class PrbLayout:
    """(offset, size) of every field the reader needs, from the DWARF.

    Offsets of ``ring_*`` fields are within ``struct printk_ringbuffer``, of
    ``desc_*`` within ``struct prb_desc``, of ``info_*`` within
    ``struct printk_info``.
    """

    ring_size: int
    count_bits: tuple[int, int]
    descs: tuple[int, int]
    infos: tuple[int, int]
    head_id: tuple[int, int]
    tail_id: tuple[int, int]
    size_bits: tuple[int, int]
    data: tuple[int, int]
    head_lpos: tuple[int, int]
    tail_lpos: tuple[int, int]
    desc_size: int
    state_var: tuple[int, int]
    blk_begin: tuple[int, int]
    blk_next: tuple[int, int]
    info_size: int
    seq: tuple[int, int]
    ts_nsec: tuple[int, int]
    text_len: tuple[int, int]
    caller_id: tuple[int, int]
    level_byte: int  # offset of the byte that holds ``flags:5`` and ``level:3``
    block_id: tuple[int, int]  # struct prb_data_block.id
    block_data: int  # offset of struct prb_data_block.data

    @classmethod
    def detect(cls, k: Kernel) -> PrbLayout:
        """The lockless ring buffer's layout; KdlError for a kernel without one."""
        if k.symbol("prb") is None:
            if k.symbol("log_buf") is not None:
                # v3.5 (7ff9554bb578) to v5.9: a char log_buf of struct printk_log records.
                raise KdlError("this kernel's printk buffer layout is not supported (log_buf of struct printk_log, before v5.10)")
            raise KdlError("the vmlinux has no printk buffer (neither prb nor log_buf): a kernel without CONFIG_PRINTK?")
        ring, desc, info = "struct printk_ringbuffer", "struct prb_desc", "struct printk_info"
        if not k.has_member(ring, "desc_ring.infos"):
            # Only in the v5.10 merge window, before "printk: move printk_info
            # into separate array" (same release): no released kernel has it.
            raise KdlError("this kernel's printk buffer layout is not supported (printk_info inside prb_desc)")
        flags, level = _field(k, info, "flags"), _field(k, info, "level")
        if flags != level or level[1] != 1:
            # Every kernel since v3.5 declares "u8 flags:5; u8 level:3;" in one
            # byte; gdb reports both bit-fields at that byte. Anything else is new.
            raise KdlError("this kernel's printk_info.level is not the 3-bit field kdlgdb knows: printk layout not supported")
        return cls(
            ring_size=k.size(ring),
            count_bits=_field(k, ring, "desc_ring.count_bits"),
            descs=_field(k, ring, "desc_ring.descs"),
            infos=_field(k, ring, "desc_ring.infos"),
            head_id=_field(k, ring, "desc_ring.head_id"),
            tail_id=_field(k, ring, "desc_ring.tail_id"),
            size_bits=_field(k, ring, "text_data_ring.size_bits"),
            data=_field(k, ring, "text_data_ring.data"),
            head_lpos=_field(k, ring, "text_data_ring.head_lpos"),
            tail_lpos=_field(k, ring, "text_data_ring.tail_lpos"),
            desc_size=k.size(desc),
            state_var=_field(k, desc, "state_var"),
            blk_begin=_field(k, desc, "text_blk_lpos.begin"),
            blk_next=_field(k, desc, "text_blk_lpos.next"),
            info_size=k.size(info),
            seq=_field(k, info, "seq"),
            ts_nsec=_field(k, info, "ts_nsec"),
            text_len=_field(k, info, "text_len"),
            caller_id=_field(k, info, "caller_id"),
            level_byte=level[0],
            block_id=_field(k, "struct prb_data_block", "id"),
            block_data=k.offset("struct prb_data_block", "data"),
        )


def _field(k: Kernel, type_name: str, path: str) -> tuple[int, int]:
    """(offset, size) of a member; the usual one-line KdlError when it is missing."""
    k.offset(type_name, path)
    found = k.member(type_name, path)
    assert found is not None
    return found


def _get(data: bytes, where: tuple[int, int], base: int = 0) -> int:
    """The little-endian unsigned integer of field ``where`` of a struct at ``base`` in ``data``."""
    offset, size = where
    return int.from_bytes(data[base + offset : base + offset + size], "little")


@dataclass
class _Window:
    """Bytes of one ring's used part, in ring order, and the ranges that could not be read."""

    data: bytearray = field(default_factory=bytearray)
    holes: list[tuple[int, int]] = field(default_factory=list)

    def add(self, k: Kernel, address: int, size: int) -> None:
        """Append ``size`` bytes at ``address``: one read, or page by page if that one fails."""
        if size <= 0:
            return
        try:
            self.data += k.read(address, size)
            return
        except ReadError as e:
            if size > PAGEWISE_MOST:  # a ring that big, unreadable: page by page would take for ever
                raise KdlError(f"cannot read the printk ring buffer: {e}") from None
        end = address + size
        while address < end:
            n = min(end, (address // PAGE + 1) * PAGE) - address
            try:
                self.data += k.read(address, n)
            except ReadError:
                self.holes.append((len(self.data), len(self.data) + n))
                self.data += bytes(n)
            address += n

    def add_ring(self, k: Kernel, base: int, entry: int, count: int, first: int, n: int) -> None:
        """Append entries ``first .. first + n`` (modulo ``count``) of an array of ``entry``-byte items."""
        head = min(n, count - first)
        self.add(k, base + first * entry, head * entry)
        self.add(k, base, (n - head) * entry)

    def unreadable(self, offset: int, size: int) -> bool:
        """Whether any of ``size`` bytes at ``offset`` could not be read."""
        return any(offset < end and start < offset + size for start, end in self.holes)

    def get(self, offset: int, size: int) -> Optional[bytes]:
        """``size`` bytes at ``offset``, or None when they are outside the window or unreadable."""
        if offset < 0 or offset + size > len(self.data) or self.unreadable(offset, size):
            return None
        return bytes(self.data[offset : offset + size])


def kernel_log(k: Kernel, problems: Optional[list[Problem]] = None) -> list[LogRecord]:
    """Every record of the kernel log still in the ring buffer, oldest first (by sequence number).

    ``k`` is the kernel read; ``prb`` is its ``struct printk_ringbuffer *``.
    Records that cannot be read are left out; when ``problems`` is given, one
    ``Problem("printk", ...)`` per reason says how many. KdlError when the
    kernel has no lockless ring buffer or its header cannot be read.
    """
    lay = PrbLayout.detect(k)
    prb = k.u64(k.need_symbol("prb"))
    try:
        ring = k.read(prb, lay.ring_size)
    except ReadError as e:
        raise KdlError(f"cannot read the printk ring buffer: {e}") from None
    count_bits, size_bits = _get(ring, lay.count_bits), _get(ring, lay.size_bits)
    # LOG_BUF_LEN_MAX is 1 << 31; a descriptor per 32 bytes of text on average (PRB_AVGBITS 5).
    if not 0 < count_bits <= size_bits <= 31:
        raise KdlError(f"the printk ring buffer at {prb:#x} makes no sense (count_bits {count_bits}, size_bits {size_bits})")
    notes: dict[str, int] = {}  # why records were skipped -> how many
    broken: list[str] = []  # what is wrong with the ring itself

    def skip(why: str) -> None:
        notes[why] = notes.get(why, 0) + 1

    # Descriptor ids: the top two bits of state_var are the state, the rest the
    # id (DESC_FLAGS_SHIFT = BITS_PER_LONG - 2).
    sv_bits = 8 * lay.state_var[1]
    id_mask = (1 << (sv_bits - 2)) - 1
    count = 1 << count_bits
    head_id, tail_id = _get(ring, lay.head_id) & id_mask, _get(ring, lay.tail_id) & id_mask
    n = ((head_id - tail_id) & id_mask) + 1
    if n > count:
        broken.append(f"descriptor head {head_id:#x} and tail {tail_id:#x} are more than {count} apart: read the last {count}")
        n, tail_id = count, (head_id - count + 1) & id_mask
    first = tail_id & (count - 1)
    descs, infos = _Window(), _Window()
    descs.add_ring(k, _get(ring, lay.descs), lay.desc_size, count, first, n)
    infos.add_ring(k, _get(ring, lay.infos), lay.info_size, count, first, n)

    # The text data ring: logical positions (lpos) grow for ever; a position's
    # byte is at index lpos & (size - 1). Read [tail_lpos, head_lpos).
    size = 1 << size_bits
    head_lpos, tail_lpos = _get(ring, lay.head_lpos), _get(ring, lay.tail_lpos)
    used = (head_lpos - tail_lpos) & U64
    if used > size:
        broken.append(f"text head {head_lpos:#x} and tail {tail_lpos:#x} are more than {size} bytes apart: read the last {size}")
        used, tail_lpos = size, (head_lpos - size) & U64
    text = _Window()
    text.add_ring(k, _get(ring, lay.data), 1, size, tail_lpos & (size - 1), used)

    records: list[LogRecord] = []
    for i in range(n):
        desc_id = (tail_id + i) & id_mask
        desc, info = descs.get(i * lay.desc_size, lay.desc_size), infos.get(i * lay.info_size, lay.info_size)
        if desc is None or info is None:
            skip("unreadable (not in the dump)")
            continue
        state_var = _get(desc, lay.state_var)
        state = state_var >> (sv_bits - 2)
        if state_var & id_mask != desc_id:
            # The head descriptor keeps its old id until its new writer sets it.
            skip("being written when the kernel stopped" if desc_id == head_id else "inconsistent (descriptor id)")
            continue
        if state == DESC_REUSABLE:
            continue  # dropped by the kernel itself: its text may be overwritten
        if state == DESC_RESERVED:
            skip("being written when the kernel stopped")
            continue
        seq = _get(info, lay.seq)
        if seq & (count - 1) != desc_id & (count - 1):
            skip("inconsistent (sequence number)")  # readers find seq's descriptor at index seq % count
            continue
        body = _text(desc, lay, desc_id, size, tail_lpos, text)
        if isinstance(body, str):
            skip(body)
            continue
        body = body[: _get(info, lay.text_len)]
        caller_id = _get(info, lay.caller_id)
        caller = f"C{caller_id & ~CALLER_CPU}" if caller_id & CALLER_CPU else f"T{caller_id}"
        # flags:5 then level:3 in one byte; the x86-64 psABI allocates
        # bit-fields from the least significant bit, so level is the top 3 bits
        # (the DWARF agrees: bit offset 5, size 3; tests/test_printk.py checks it in gdb).
        level = info[lay.level_byte] >> 5
        records.append(LogRecord(seq, _get(info, lay.ts_nsec), level, body.decode("utf-8", "replace"), caller))

    if problems is not None:
        problems.extend(Problem("printk", f"prb {prb:#x}", why) for why in broken)
        for why, many in notes.items():
            problems.append(Problem("printk", f"prb {prb:#x}", f"{many} record{'' if many == 1 else 's'} {why}"))
    records.sort(key=lambda r: r.seq)
    return records


def _text(desc: bytes, lay: PrbLayout, desc_id: int, size: int, tail_lpos: int, text: _Window) -> bytes | str:
    """The data block of a descriptor (its text plus any slack), or why it cannot be had.

    A block is ``struct prb_data_block { unsigned long id; char data[]; }`` at
    ``begin``; one that would cross the end of the ring is stored whole at
    index 0 instead, and then ``next`` is in the following wrap.
    """
    begin, end = _get(desc, lay.blk_begin), _get(desc, lay.blk_next)
    if begin & 1 or end & 1:
        return b"" if begin == NO_LPOS and end == NO_LPOS else "lost (text never stored)"
    wraps = size.bit_length() - 1
    if begin >> wraps == end >> wraps:
        start, length = begin, (end - begin) & U64
    elif ((begin >> wraps) + 1) & (U64 >> wraps) == end >> wraps:
        start, length = end & ~(size - 1), end & (size - 1)
    else:
        return "inconsistent (text position)"
    if length < lay.block_data:
        return "inconsistent (text position)"
    offset = (start - tail_lpos) & U64
    block = text.get(offset, length)
    if block is None:
        if text.unreadable(offset, length):
            return "unreadable (not in the dump)"
        return "inconsistent (text outside the ring's used part)"
    if _get(block, lay.block_id) != desc_id:
        return "inconsistent (text block id)"
    return block[lay.block_data :]


# panic() (kernel/panic.c): "Kernel panic - not syncing: %s", and at its end "---[ end Kernel panic - not syncing: %s ]---".
_PANIC = re.compile(r"Kernel panic - not syncing: ?(?P<message>.*?)(?: \]---)?\s*$")


def panic_message(records: Iterable[LogRecord]) -> Optional[str]:
    """The message of the first ``Kernel panic - not syncing: MESSAGE`` line (in any line of a record), or None
    when the kernel did not panic."""
    for record in records:
        for line in record.text.split("\n"):
            m = _PANIC.search(line)
            if m:
                return m["message"] or "(no message)"
    return None
