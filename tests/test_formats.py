"""Every dump format people bring gives the same answer: real dumps of one boot, in each form.

The builder dumps each stopped guest several ways (QEMU's paging ELF, its
physical ELF and flattened kdump-zlib, makedumpfile's normal and ``-d 31``
filtered kdump files; for kdl_abba also lzo, snappy and zstd pages). gdb reads
the paging ELF itself; kdlgdb reads all the others through the dump's page
tables. The answers must be identical, and right against the guest's truth.

Each dump is opened with ``kd-open`` in one gdb of its vmlinux, kept open for many tests
(``realgdb.kd_waitfor_json``); the ``kdlgdb`` command itself reads every form once per kernel.
"""
from __future__ import annotations

from typing import Any

import pytest

import matrix
import samples
from expectations import check_dump_answer, check_waitfor, without_wait_sources
from realgdb import gdb, kd_waitfor_json, shared_gdb, waitfor_json

pytestmark = pytest.mark.realkernel

# Each scenario in every form it is built in (the analysis scenarios: a kdump beside the ELF).
FORMS = [(s, kind, kaslr) for s in samples.SCENARIOS for kind in samples.builder.variant_kinds(s)
         if kind != "elf" and kind not in samples.CODEC_KINDS for kaslr in (False, True)]
_by_gdb: dict[tuple[str, bool, str], dict[str, Any]] = {}


def _reference(scenario: str, kaslr: bool, kernel: str) -> dict[str, Any]:
    """kd-waitfor --json on the paging ELF, read by gdb itself, checked as test_gdb_dumps checks the command's."""
    key = (scenario, kaslr, kernel)
    if key not in _by_gdb:
        dump = samples.ensure_dump(scenario, kaslr, kernel)
        status, doc = kd_waitfor_json(dump.vmlinux, dump.path)
        check_dump_answer(status, doc, samples.expected(scenario, kernel), dump)
        _by_gdb[key] = doc
    return _by_gdb[key]


def _same_answer(scenario: str, kaslr: bool, kind: str, kernel: str) -> dict[str, Any]:
    dump = samples.ensure_dump(scenario, kaslr, kernel, kind=kind)
    _, doc = kd_waitfor_json(dump.vmlinux, dump.path)
    check_waitfor(doc, samples.expected(scenario, kernel), dump.truth)
    assert {t["wait_source"] for t in doc["tasks"]} <= {"", "wait list", "blocked_on", "rt_mutex waiter", "cpu registers", "rcuwait", "completion"}
    assert without_wait_sources(doc) == without_wait_sources(_reference(scenario, kaslr, kernel))
    return doc


@matrix.over("scenario, kind, kaslr", FORMS)
def test_every_format_gives_the_same_answer(scenario: str, kaslr: bool, kind: str, real_kernel: str) -> None:
    _same_answer(scenario, kaslr, kind, real_kernel)


@matrix.over("kaslr, kind", [(kaslr, kind) for kaslr in (False, True) for kind in samples.CODEC_KINDS])
def test_every_page_compression(kaslr: bool, kind: str, real_kernel: str) -> None:
    _same_answer(samples.PHYS_SCENARIO, kaslr, kind, real_kernel)


@matrix.over("kind", [k for k in samples.KINDS if k != "elf"])
def test_the_kdlgdb_command_reads_every_form(kind: str, real_kernel: str) -> None:
    """``kdlgdb waitfor`` itself (its own gdb, kdlgdb reading the file) on each form: the same JSON and status."""
    dump = samples.ensure_dump(samples.PHYS_SCENARIO, True, real_kernel, kind=kind)
    status, doc = waitfor_json(dump.vmlinux, dump.path)
    assert (status, doc) == kd_waitfor_json(dump.vmlinux, dump.path)
    assert without_wait_sources(doc) == without_wait_sources(_reference(samples.PHYS_SCENARIO, True, real_kernel))


def test_kd_open_in_gdb(real_kernel: str) -> None:
    """The user's way: gdb with the vmlinux alone, then kd-open the kdump file, then kd-info and kd-waitfor."""
    dump = samples.ensure_dump("kdl_mutex", True, real_kernel, kind="kdump-filtered")
    done = shared_gdb(dump.vmlinux, None, f"kd-open {dump.path}", "kd-info", "kd-waitfor")
    assert "Traceback" not in done.stderr, done.stderr
    out = done.stdout
    level = samples.filter_level("kdl_mutex", True, real_kernel)
    assert f"{dump.path}: kdump-compressed vmcore, dump level {level}, Linux {samples.release(real_kernel)}" in out
    assert f"KASLR offset {dump.truth['kernel_offset']}" in out
    assert f"release       {samples.release(real_kernel)}" in out and "machine       x86_64" in out
    rt = samples.preempt_rt(real_kernel)
    assert ("PREEMPT_RT    yes (struct mutex is built on rt_mutex" in out) == rt and ("PREEMPT_RT    no" in out) != rt
    assert ("lock data     wait-list scan, task->pi_blocked_on, PREEMPT_RT" in out) == rt
    assert "DEADLOCK" in out and f"(pid {dump.truth['tasks']['kdl_m1']})" in out


def test_gdb_loads_a_physical_elf_and_kdlgdb_reads_it(real_kernel: str) -> None:
    """gdb loads a physical-only ELF without complaint but would read the vmlinux's own data:
    kdlgdb notices and reads the dump itself, never giving the silent wrong answer."""
    dump = samples.ensure_dump("kdl_abba", False, real_kernel, kind="phys")
    done = gdb(dump.vmlinux, dump.path, "kd-info", "kd-waitfor")
    assert "Traceback" not in done.stderr and "kd-waitfor:" not in done.stderr, done.stderr
    assert f"dump          ELF vmcore (QEMU dump-guest-memory without paging) {dump.path} (read by kdlgdb)" in done.stdout
    pids = dump.truth["tasks"]
    assert f"\"kdl_a\" (pid {pids['kdl_a']}) and \"kdl_b\" (pid {pids['kdl_b']}) on sem1 [kdl_abba], sem2 [kdl_abba]" in done.stdout
