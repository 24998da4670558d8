"""The kernel log: the printk ring buffer reader on real dumps, and what kdlgdb makes of the log.

The replays (``recordings/<kernel>/dmesg/``, made by ``record.py``) hold what
``kernel_log`` read from each real dump; each is checked against what the guest
itself printed: the module's ``kdl-truth`` lines (the stored truth JSON), the
hung-task detector's reports, and the serial console of the same boot
(``.console.log.gz``, copied from the dump's ``console-*.log`` when recorded).
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Optional

import pytest

import samples
from expectations import idle_tasks
from kdlgdb.analysis import kernlog
from kdlgdb.analysis.kernlog import HungTask, format_record, grep, hung_tasks, notable
from kdlgdb.errors import KdlError, ReadError
from kdlgdb.frontends import commands
from kdlgdb.kernel.collect import collect
from kdlgdb.kernel.layout import Kernel
from kdlgdb.kernel.printk import LogRecord, PrbLayout, kernel_log
from kdlgdb.model import Problem
from kdlgdb.target.replay import ReplayTarget

HERE = Path(__file__).parent
RECORDINGS = sorted((HERE / "vmcore_samples" / "recordings").glob("*/dmesg/*.json.gz"))
IDS = [f"{p.parent.parent.name}/{p.name.split('.')[0]}" for p in RECORDINGS]
CONSOLE_LOGLEVEL = 7  # the guests boot without loglevel=: the console shows levels 0..6


def _scenario(path: Path) -> str:
    return path.name.split(".")[0].rsplit("-", 1)[0]


def _variant(path: Path) -> str:
    return path.name.split(".")[0].rsplit("-", 1)[1]


def _truth(path: Path) -> dict:
    """The truth stored with the waitfor recording of the same dump."""
    return json.loads((path.parent.parent / path.name.replace(".json.gz", ".truth.json")).read_text())


def _console(path: Path) -> list[str]:
    with gzip.open(path.with_name(path.name.replace(".json.gz", ".console.log.gz")), "rt") as f:
        return f.read().splitlines()


def _log(path: Path, problems: Optional[list[Problem]] = None) -> list[LogRecord]:
    return kernel_log(Kernel(ReplayTarget(str(path))), problems)


def _lines(records: list[LogRecord]) -> list[str]:
    return [line for r in records for line in format_record(r).split("\n")]


def _abba() -> Path:
    return next(p for p in RECORDINGS if p.name == "kdl_abba-kaslr.json.gz" and p.parent.parent.name == samples.DEFAULT_KERNEL)


# -- real dumps -----------------------------------------------------------------------------------


def test_every_scenario_has_dmesg_recordings() -> None:
    recorded = {(_scenario(p), _variant(p)) for p in RECORDINGS}
    assert recorded == {(s, v) for s in samples.SCENARIOS for v in ("kaslr", "nokaslr")}


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_log_holds_what_the_kernel_said(path: Path) -> None:
    truth = _truth(path)
    problems: list[Problem] = []
    records = _log(path, problems)
    assert problems == []
    # The whole boot is still in the buffer, in order, banner first.
    assert [r.seq for r in records] == list(range(len(records)))
    banner = records[0].text
    if truth["kernel"] in samples.builder.BUILT_KERNELS:  # a kernel of ours: its release has its localversion
        local = samples.builder.BUILT_KERNELS[truth["kernel"]].localversion
        assert re.match(rf"Linux version \S+{re.escape(local)} \(", banner), banner
    else:
        assert banner.startswith(f"Linux version {truth['kernel']} ("), banner
    # The module's own words, exactly as the truth file has them.
    tasks = {m[1]: int(m[2]) for r in records if (m := re.fullmatch(r"kdl-truth task (\S+) (\d+)", r.text))}
    locks = {m[1]: {"type": m[2], "address": "0x" + m[3]}
             for r in records if (m := re.fullmatch(r"kdl-truth lock (\S+) (\S+) ([0-9a-f]+)", r.text))}
    assert tasks == truth["tasks"]
    assert locks == truth["locks"]
    hung = hung_tasks(records)
    if samples.expected(_scenario(path)).get("blocked_when_loaded"):
        # CPUs spinning on spinlocks: their threads run (R); the hung-task detector names none of them.
        assert not {(h.comm, h.pid) for h in hung} & set(truth["tasks"].items()), hung
        return
    # The hung-task detector reported every scenario thread (the builder waits for it) but the idle ones, some
    # more than once (hung_task_warnings=-1) when the dump came late. A kworker the truth names by its role
    # ("kworker_reset") is reported under its own name (kworker/0:1).
    workers = set(samples.expected(_scenario(path)).get("workers", []))
    idle = idle_tasks(samples.expected(_scenario(path)))
    named = {pid: "kworker/" if comm in workers else comm for comm, pid in truth["tasks"].items() if comm not in idle}
    assert sorted({h.pid for h in hung}) == sorted(named)
    assert all(h.comm.startswith(named[h.pid]) if named[h.pid] == "kworker/" else h.comm == named[h.pid] for h in hung)
    # sysctl.kernel.hung_task_timeout_secs=5 on the command line: 5 s, then 10 s for a report made again
    assert min(h.seconds for h in hung) == 5 and all(h.seconds % 5 == 0 for h in hung)
    for pid in named:
        comm = next(h.comm for h in hung if h.pid == pid)
        line = next(r for r in records if r.text.startswith(f"INFO: task {comm}:{pid} blocked for more than "))
        assert line.level == 3  # pr_err
        assert line.text == f"INFO: task {comm}:{pid} blocked for more than 5 seconds."
    # Timestamps: early boot has the kernel's own jumps back (TSC found unstable, the
    # second CPU's clock); from the module's load on they do not decrease.
    start = next(i for i, r in enumerate(records) if r.text.startswith("kdl-truth"))
    stamps = [r.ts_ns for r in records[start:]]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]


@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_log_matches_the_console_of_the_same_boot(path: Path) -> None:
    records = _log(path)
    ours = _lines(records)
    console = _console(path)
    assert len(console) > 300
    # Every line the console showed is in the log, in the same order, with the same timestamp.
    rest = iter(ours)
    missing = [line for line in console if not any(line == mine for mine in rest)]
    assert missing == []
    # And what the console did not show is exactly the debug-level records (level >= console_loglevel).
    shown = set(console)
    hidden = [r for r in records if any(line not in shown for line in format_record(r).split("\n"))]
    assert hidden and all(r.level >= CONSOLE_LOGLEVEL for r in hidden)
    assert all(r.level < CONSOLE_LOGLEVEL for r in records if r not in hidden)


def test_callers_are_the_tasks_that_printed() -> None:
    """The hung-task lines come from khungtaskd: its pid as the waitfor replay of the same dump has it."""
    path = _abba()
    records = _log(path)
    snap = collect(ReplayTarget(str(path.parent.parent / path.name)))
    khungtaskd = next(t.pid for t in snap.tasks if t.comm == "khungtaskd")
    info = [r for r in records if r.text.startswith("INFO: task ")]
    assert {r.caller for r in info} == {f"T{khungtaskd}"}
    assert records[0].caller == "T0"  # the banner: the boot CPU's idle task, pid 0


def test_kd_dmesg_on_real_data() -> None:
    path = _abba()
    truth = _truth(path)
    k = Kernel(ReplayTarget(str(path)))
    console = _console(path)

    def run(*argv: str) -> str:
        return commands.run("kd-dmesg", commands.parse("kd-dmesg", list(argv)), None, kernel=k)

    assert run("--grep", "kdl-truth").splitlines() == [line for line in console if "] kdl-truth " in line]
    notable_lines = run("--notable").splitlines()
    assert notable_lines == [line for line in console if "] INFO: task " in line]
    assert len(notable_lines) == len(truth["tasks"])
    everything = run().splitlines()
    assert everything[0].startswith("[    0.000000] Linux version ")
    assert len(everything) == len(_lines(_log(path)))
    # Multi-line records keep their lines; the console printed each with the record's timestamp.
    multi = [r for r in _log(path) if "\n" in r.text]
    firsts = [r.text.split("\n")[0] for r in multi]
    assert 'Unstable clock detected, switching default tracing clock to "global"' in firsts
    # Under TCG the delay loop calibration fails in some boots only: a second multi-line record then.
    assert set(firsts) <= {'Unstable clock detected, switching default tracing clock to "global"',
                           "calibrate_delay_direct() failed to get a good estimate for loops_per_jiffy."}
    for record in multi:
        assert all(format_record(record).split("\n")[i] in everything for i in range(record.text.count("\n") + 1))
    if "calibrate_delay_direct() failed to get a good estimate for loops_per_jiffy." in firsts:
        assert "[    0.000000] Probably due to long platform interrupts. Consider using \"lpj=\" boot option." in everything
    assert run("--notable", "--grep", "kdl_b").splitlines() == [line for line in notable_lines if "kdl_b" in line]
    assert run("--grep", "^ kdl_a_fn").splitlines() == [line for line in console if line.endswith("]  kdl_a_fn+0x27/0x50 [kdl_abba]")]
    with pytest.raises(commands.UsageError, match="bad pattern"):
        run("--grep", "(")
    with pytest.raises(KdlError, match="needs a Kernel"):
        commands.run("kd-dmesg", commands.parse("kd-dmesg", []), None)
    assert "--notable" in commands.help_text("kd-dmesg")


# -- damaged dumps --------------------------------------------------------------------------------


class _Patched(ReplayTarget):
    """A real recording with some memory unreadable and some bytes overwritten."""

    def __init__(self, path: str, holes: Optional[list[tuple[int, int]]] = None,
                 patches: Optional[dict[int, bytes]] = None) -> None:
        super().__init__(path)
        self.holes = holes or []
        self.patches = patches or {}

    def read(self, address: int, size: int) -> bytes:
        for start, end in self.holes:
            if address < end and start < address + size:
                raise ReadError(address, size, "not in dump")
        data = bytearray(super().read(address, size))
        for where, value in self.patches.items():
            for i, byte in enumerate(value):
                if address <= where + i < address + size:
                    data[where + i - address] = byte
        return bytes(data)


def _ring(path: Path) -> tuple[Kernel, PrbLayout, int, bytes]:
    k = Kernel(ReplayTarget(str(path)))
    lay = PrbLayout.detect(k)
    prb = k.u64(k.need_symbol("prb"))
    return k, lay, prb, k.read(prb, lay.ring_size)


def _field(data: bytes, where: tuple[int, int]) -> int:
    return int.from_bytes(data[where[0] : where[0] + where[1]], "little")


def test_unreadable_text_page_skips_only_its_records() -> None:
    path = _abba()
    whole = {r.seq: r for r in _log(path)}
    _, lay, _, ring = _ring(path)
    data = _field(ring, lay.data)
    page = (data + 8192) & ~0xFFF  # a page in the middle of the used text
    problems: list[Problem] = []
    records = kernel_log(Kernel(_Patched(str(path), holes=[(page, page + 4096)])), problems)
    skipped = len(whole) - len(records)
    assert 20 < skipped < 120  # a 4 KiB page holds tens of records' text
    assert [(p.what, p.why) for p in problems] == [("printk", f"{skipped} records unreadable (not in the dump)")]
    assert all(r == whole[r.seq] for r in records)  # the rest read exactly as before


def test_record_being_written_and_broken_block_are_skipped() -> None:
    path = _abba()
    whole = _log(path)
    _, lay, _, ring = _ring(path)
    count = 1 << _field(ring, lay.count_bits)
    descs = _field(ring, lay.descs)
    # Record seq 10 sits in descriptor seq % count: set its state to reserved (0) ...
    state_at = descs + (10 % count) * lay.desc_size + lay.state_var[0]
    k0 = Kernel(ReplayTarget(str(path)))
    state_var = k0.u64(state_at)
    reserved = state_var & ((1 << 62) - 1)
    # ... and break the id of record 20's text block.
    blk = k0.read(descs + (20 % count) * lay.desc_size, lay.desc_size)
    begin = _field(blk, lay.blk_begin)
    size_bits = _field(ring, lay.size_bits)
    block_at = _field(ring, lay.data) + (begin & ((1 << size_bits) - 1))
    patches = {state_at: reserved.to_bytes(8, "little"), block_at: b"\xff"}
    problems: list[Problem] = []
    records = kernel_log(Kernel(_Patched(str(path), patches=patches)), problems)
    assert [r.seq for r in records] == [r.seq for r in whole if r.seq not in (10, 20)]
    assert sorted(p.why for p in problems) == ["1 record being written when the kernel stopped",
                                               "1 record inconsistent (text block id)"]


def test_unreadable_ring_header_is_one_error() -> None:
    path = _abba()
    _, _, prb, _ = _ring(path)
    with pytest.raises(KdlError, match="cannot read the printk ring buffer"):
        kernel_log(Kernel(_Patched(str(path), holes=[(prb, prb + 8)])))


# -- a synthetic ring: every wrap and special case the real dumps do not have -----------------------


class _Synthetic(ReplayTarget):
    """A real recording's kernel, with ``prb`` pointing at a ring built in memory by the test."""

    def __init__(self, path: str, prb_variable: int, memory: dict[int, bytearray]) -> None:
        super().__init__(path)
        self.prb_variable, self.memory = prb_variable, memory

    def read(self, address: int, size: int) -> bytes:
        if address == self.prb_variable and size == 8:
            return min(self.memory).to_bytes(8, "little")
        for base, data in self.memory.items():
            if base <= address and address + size <= base + len(data):
                return bytes(data[address - base : address - base + size])
        return super().read(address, size)


def _put(buf: bytearray, where: tuple[int, int], value: int, base: int = 0) -> None:
    offset, size = where
    buf[base + offset : base + offset + size] = value.to_bytes(size, "little")


def _synthetic_log(records: list[tuple[str, object]], bad_text_tail: bool = False) -> tuple[list[LogRecord], list[Problem]]:
    """Lay ``records`` out as the kernel would in an 8-descriptor, 128-byte ring; read them back.

    Each is (kind, text): kind "final", "committed", "reserved", "reusable", "empty" (no
    text block), "lost" (FAILED_LPOS). Ids start 3 below the 62-bit id mask and the text
    starts 40 bytes below 2**64, so ids, descriptor indices and text all wrap.
    ``bad_text_tail`` puts the text tail a whole ring behind where it is.
    """
    path = _abba()
    k = Kernel(ReplayTarget(str(path)))
    lay = PrbLayout.detect(k)
    count_bits, size_bits = 3, 7
    count, size = 1 << count_bits, 1 << size_bits
    id_mask = (1 << 62) - 1
    base = 0xFFFF888000100000
    ring, descs, infos, data = (bytearray(n) for n in (lay.ring_size, count * lay.desc_size, count * lay.info_size, size))
    first_id, tail_lpos = id_mask - 2, (1 << 64) - 40
    lpos = tail_lpos
    for i, (kind, text) in enumerate(records):
        desc_id = (first_id + i) & id_mask
        index = desc_id & (count - 1)
        state = {"final": 2, "committed": 1, "reserved": 0, "reusable": 3, "empty": 2, "lost": 2}[kind]
        _put(descs, lay.state_var, (state << 62) | desc_id, index * lay.desc_size)
        body = str(text).encode()
        if kind in ("empty", "lost", "reusable"):
            begin = nxt = 3 if kind == "empty" else 1
        else:
            need = (8 + len(body) + 7) & ~7
            begin, nxt = lpos, (lpos + need) % (1 << 64)
            if (begin >> size_bits) != (nxt >> size_bits):
                nxt = (nxt & ~(size - 1)) + need  # does not fit before the end: stored at index 0
                at = 0
            else:
                at = begin & (size - 1)
            data[at : at + 8] = desc_id.to_bytes(8, "little")
            data[at + 8 : at + 8 + len(body)] = body
            lpos = nxt
        _put(descs, lay.blk_begin, begin, index * lay.desc_size)
        _put(descs, lay.blk_next, nxt, index * lay.desc_size)
        seq = 5 + i  # seq % count == id % count, as the kernel keeps them
        info = index * lay.info_size
        _put(infos, lay.seq, seq, info)
        _put(infos, lay.ts_nsec, 1_000_000_000 * seq + 123_456_789, info)
        _put(infos, lay.text_len, len(body), info)
        _put(infos, lay.caller_id, 0x80000001 if i % 2 else 90 + i, info)
        infos[info + lay.level_byte] = (i % 8) << 5 | 0x02  # level:3 over flags:5 (LOG_NEWLINE)
    _put(ring, lay.count_bits, count_bits)
    _put(ring, lay.descs, base + 0x1000)
    _put(ring, lay.infos, base + 0x2000)
    _put(ring, lay.head_id, (first_id + len(records) - 1) & id_mask)
    _put(ring, lay.tail_id, first_id)
    _put(ring, lay.size_bits, size_bits)
    _put(ring, lay.data, base + 0x3000)
    _put(ring, lay.head_lpos, lpos)
    _put(ring, lay.tail_lpos, tail_lpos - (size if bad_text_tail else 0))
    memory = {base: ring, base + 0x1000: descs, base + 0x2000: infos, base + 0x3000: data}
    problems: list[Problem] = []
    target = _Synthetic(str(path), k.need_symbol("prb"), memory)
    return kernel_log(Kernel(target), problems), problems


def test_synthetic_ring_wraps_and_special_records() -> None:
    records, problems = _synthetic_log([
        ("reusable", ""),                       # the kernel's placeholder at the tail
        ("final", "first"),
        ("empty", ""),                          # printk("\n"): no text block
        ("final", "two lines\nthe second wraps"),  # crosses the ring's end: stored at index 0
        ("lost", ""),                           # FAILED_LPOS
        ("committed", "not final"),             # the last record of a stopped kernel
        ("reserved", "half"),                   # being written
    ])
    assert [(r.seq, r.text) for r in records] == [
        (6, "first"), (7, ""), (8, "two lines\nthe second wraps"), (10, "not final")]
    assert [(r.level, r.caller) for r in records] == [(1, "C1"), (2, "T92"), (3, "C1"), (5, "C1")]
    assert records[0].ts_ns == 6_123_456_789
    assert sorted(p.why for p in problems) == ["1 record being written when the kernel stopped",
                                               "1 record lost (text never stored)"]
    assert format_record(records[2]) == "[    8.123456] two lines\n[    8.123456] the second wraps"


def test_text_ring_with_impossible_tail_reads_one_ring_back() -> None:
    records, problems = _synthetic_log([("final", "a"), ("final", "b" * 30), ("final", "c")], bad_text_tail=True)
    assert [r.text for r in records] == ["a", "b" * 30, "c"]
    assert len(problems) == 1 and "more than 128 bytes apart: read the last 128" in problems[0].why


def test_old_log_buf_kernel_is_one_line_error() -> None:
    class _Old(ReplayTarget):
        def symbol(self, name: str) -> Optional[int]:
            if name == "prb":
                return None
            if name == "log_buf":
                return 0xFFFFFFFF82000000
            return super().symbol(name)

    with pytest.raises(KdlError, match="printk buffer layout is not supported"):
        kernel_log(Kernel(_Old(str(_abba()))))


# -- kernlog on hand-made records ------------------------------------------------------------------


def _rec(seq: int, text: str, ts_ns: int = 0, level: int = 6) -> LogRecord:
    return LogRecord(seq, ts_ns, level, text)


SPLAT = [
    _rec(1, "Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)"),
    _rec(2, "INFO: task kworker/0:1:37 blocked for more than 120 seconds.", level=3),
    _rec(3, "      Not tainted 6.1.0 #1"),
    _rec(4, "INFO: task my task: x:4242 blocked for more than 5 seconds.", level=3),
    _rec(5, "WARNING: possible circular locking dependency detected", level=4),
    _rec(6, "the existing dependency chain (in reverse order) is:"),
    _rec(7, " Possible unsafe locking scenario:\n       CPU0                    CPU1\n  *** DEADLOCK ***"),
    _rec(8, "WARNING: possible recursive locking detected", level=4),
    _rec(9, "BUG: kernel NULL pointer dereference, address: 0000000000000000", level=1),
    _rec(10, "Oops: 0000 [#1] PREEMPT SMP NOPTI", level=4),
    _rec(11, "Kernel panic - not syncing: hung_task: blocked tasks", level=0),
    _rec(12, "RIP: 0010:do_thing+0x10/0x20"),
    _rec(13, "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kdl:94]"),
    _rec(14, "some driver: Oopsie is not an oops; BUGS and WARNINGS neither"),
    _rec(15, "INFO: task kdl_a:94 is blocked on a mutex likely owned by task kdl_b:95.", level=3),
    _rec(16, "INFO: task kdl_a:94 blocked for more than 10 seconds.", level=3),
]


def test_hung_tasks_parse_comm_pid_seconds_seq() -> None:
    assert hung_tasks(SPLAT) == [
        HungTask("kworker/0:1", 37, 120, 2),
        HungTask("my task: x", 4242, 5, 4),  # a comm may hold spaces and colons
        HungTask("kdl_a", 94, 10, 16),       # reported again: listed again
    ]
    assert hung_tasks([_rec(1, "first line\nINFO: task a:1 blocked for more than 2 seconds.")]) == [HungTask("a", 1, 2, 1)]
    assert hung_tasks([_rec(1, "INFO: task a:b blocked for more than 2 seconds.")]) == []


def test_notable_keeps_headlines_only() -> None:
    assert [r.seq for r in notable(SPLAT)] == [2, 4, 5, 7, 8, 9, 10, 11, 13, 15, 16]
    assert notable([]) == []
    assert {what for what, _ in kernlog.NOTABLE} >= {"hung task", "lockdep", "BUG", "WARNING", "Oops", "panic"}


def test_grep_matches_any_line_and_keeps_whole_records() -> None:
    assert [r.seq for r in grep(SPLAT, "DEADLOCK")] == [7]
    assert [r.seq for r in grep(SPLAT, r"^\s+CPU0")] == [7]  # ^ at each line of a multi-line record
    assert [r.seq for r in grep(SPLAT, re.compile("kdl_a"))] == [15, 16]
    assert grep(SPLAT, "no such text") == []
    with pytest.raises(re.error):
        grep(SPLAT, "(")


def test_format_record_like_dmesg() -> None:
    assert format_record(_rec(1, "hello", ts_ns=12_345_678_901)) == "[   12.345678] hello"
    assert format_record(_rec(1, "", ts_ns=0)) == "[    0.000000] "
    assert format_record(_rec(1, "a\nb", ts_ns=123_456_000_000_000)) == "[123456.000000] a\n[123456.000000] b"


# -- real gdb --------------------------------------------------------------------------------------


@pytest.mark.realkernel
def test_kd_dmesg_in_real_gdb(real_kernel: str) -> None:
    from realgdb import shared_gdb

    dump = samples.ensure_dump("kdl_mutex", True, real_kernel)
    truth = dump.truth
    # The bit-field layout kernel_log relies on (flags:5 then level:3 in one byte), as gdb reads the DWARF.
    probe = ("python t = gdb.lookup_type('struct printk_info'); "
             "print('bits', t['flags'].bitpos, t['flags'].bitsize, t['level'].bitpos, t['level'].bitsize)")
    done = shared_gdb(dump.vmlinux, dump.path, "kd-dmesg --grep kdl-truth", "kd-dmesg --notable", "kd-dmesg --grep '('", probe, "kd-dmesg")
    assert "Traceback" not in done.stdout + done.stderr
    out = done.stdout.splitlines()
    truth_lines = [line for line in out if re.match(r"\[\s*\d+\.\d{6}\] kdl-truth ", line)]
    tasks = {m[1]: int(m[2]) for line in truth_lines if (m := re.search(r"kdl-truth task (\S+) (\d+)$", line))}
    assert tasks == truth["tasks"]
    assert len(truth_lines) == 2 * (len(truth["tasks"]) + len(truth["locks"]))  # --grep, then the whole log
    info = [line for line in out if "] INFO: task " in line]
    # --notable, then the whole log: each task's report once (or again, 5 s later, when the dump came late)
    assert len(info) % 2 == 0 and {int(re.search(r":(\d+) blocked", line)[1]) for line in info} == set(truth["tasks"].values())
    assert "kd-dmesg: bad pattern '('" in done.stderr
    level = next(line for line in out if line.startswith("bits "))
    offset = PrbLayout.detect(Kernel(ReplayTarget(str(_abba())))).level_byte
    assert level.split() == ["bits", str(offset * 8), "5", str(offset * 8 + 5), "3"]
    # The whole log against the console of this very boot.
    assert dump.console_log is not None
    console = [line for line in dump.console_log.read_text(errors="replace").splitlines() if re.match(r"\[\s*\d+\.\d{6}\] ", line)]
    whole = out[out.index(level) + 1 :]
    assert whole[0].startswith(f"[    0.000000] Linux version {samples.release(real_kernel)} ")
    rest = iter(whole)
    assert [line for line in console if not any(line == mine for mine in rest)] == []
