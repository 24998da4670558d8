"""No vmlinux: the real dumps read with their own BTF and kallsyms (kdlgdb.target.btfdump) give the DWARF path's answer.

The DWARF path is gdb with the vmlinux (``realgdb.kd_waitfor_json``); the BTF path runs in this process, as
``kdlgdb waitfor --btf`` runs it. What only DWARF knows (source lines) and how the two name a few symbols (see
docs/btf.md) are the only differences allowed, and each renamed frame must be the same address.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import matrix
import samples
from expectations import check_dump_answer, without_wait_sources
from kdlgdb.errors import KdlError, ReadError
from kdlgdb.frontends import btf as btf_front_end
from kdlgdb.target.btfdump import BtfTarget, open_btf_target
from kdlgdb.target.kallsyms import Kallsyms
from realgdb import gdb, kd_waitfor_json, kdlgdb

pytestmark = pytest.mark.realkernel

FORMS = [(s, kind, kaslr) for s in samples.SCENARIOS for kind in samples.builder.variant_kinds(s)
         for kaslr in (False, True)]
_FRAME = re.compile(r"^(\S+)\+(0x[0-9a-f]+)$")


def has_btf(kernel: str) -> bool:
    return "CONFIG_DEBUG_INFO_BTF=y" in samples.kernel_config(kernel)


def btf_waitfor(dump: Path) -> tuple[int, dict[str, Any]]:
    text, status = btf_front_end.batch("kd-waitfor", ["--json"], str(dump))
    return status, json.loads(text)


def _frame_address(symbols: Kallsyms, frame: str) -> int:
    """The static address a vmlinux frame ``name+0xoff`` names; gdb drops the last ``.N`` of some clones'
    names (``foo.constprop`` for ``foo.constprop.0``)."""
    m = _FRAME.match(frame)
    assert m, frame
    name, offset = m.group(1), int(m.group(2), 16)
    candidates = [name] + [f"{name}.{i}" for i in range(10)]
    found = [a for a in map(symbols.address, candidates) if a is not None]
    assert found, f"{frame}: no such symbol in kallsyms"
    return found[0] + offset


def same_but_for_debug_info(dwarf: dict[str, Any], btf: dict[str, Any], symbols: Kallsyms) -> None:
    """``btf`` is ``dwarf`` but for source lines (none), ``debug_info`` and frames named by another symbol at the
    same address (an assembler label inside a function, a clone's ``.N``)."""
    assert dwarf.pop("debug_info") == "dwarf" and btf.pop("debug_info") == "btf"
    for task in btf["tasks"]:
        assert task["sources"] == [None] * len(task["stack"])
    for theirs, mine in zip(dwarf["tasks"], btf["tasks"]):
        theirs["sources"] = [None] * len(theirs["sources"])
        if len(theirs["stack"]) != len(mine["stack"]):
            continue  # the whole comparison below says how
        for i, (a, b) in enumerate(zip(theirs["stack"], mine["stack"])):
            if a != b and " [" not in a:
                assert _frame_address(symbols, a) == _frame_address(symbols, b), (a, b)
                theirs["stack"][i] = b
    assert btf == dwarf


@matrix.over("scenario, kind, kaslr", FORMS, default_product=False)
def test_btf_path_gives_the_dwarf_answer(scenario: str, kind: str, kaslr: bool, real_kernel: str) -> None:
    dump = samples.ensure_dump(scenario, kaslr, real_kernel, kind=kind)
    if not has_btf(real_kernel):
        with pytest.raises(KdlError, match=r"^this kernel carries no BTF .*: kdlgdb needs its vmlinux"):
            btf_waitfor(dump.path)
        return
    status, doc = btf_waitfor(dump.path)
    dwarf_status, dwarf = kd_waitfor_json(dump.vmlinux, dump.path)
    assert status == dwarf_status
    check_dump_answer(status, doc, samples.expected(scenario, real_kernel), dump)
    target = open_btf_target(str(dump.path))
    # gdb reads the slow-path frames' lock arguments where it has the registers (its own core file: the paging
    # ELF); the BTF path has no DWARF: there its waits come from the wait lists, naming the same locks.
    assert all(t["wait_source"] != "frame" for t in doc["tasks"])
    same_but_for_debug_info(without_wait_sources(dwarf), without_wait_sources(doc), target.kallsyms)


_GDB_FACTS = """
import json
def address(n):
    return int(gdb.parse_and_eval(f"(unsigned long)&{n}"))
def offset(t, m):
    return int(gdb.parse_and_eval(f"(unsigned long)&(({t} *)0)->{m}"))
print("@@" + json.dumps({"symbols": {n: address(n) for n in SYMBOLS},
                         "sizes": {t: gdb.lookup_type(t).sizeof for t in TYPES},
                         "offsets": [offset(t, m) for t, m in MEMBERS]}))
"""
SYMBOLS = ("init_task", "linux_banner", "runqueues", "_stext", "__start_BTF", "modules", "task_state_array",
           "schedule", "__per_cpu_offset")
TYPES = ("struct task_struct", "struct mutex", "struct rw_semaphore", "struct module", "struct rq")
MEMBERS = (("struct task_struct", "thread.sp"), ("struct task_struct", "tasks"), ("struct task_struct", "comm"),
           ("struct task_struct", "pi_blocked_on"), ("struct task_struct", "se.exec_start"),
           ("struct uts_namespace", "name.release"), ("struct page", "lru"), ("struct rq", "curr"),
           ("struct module", "list"))


def test_symbols_and_types_equal_gdbs(real_kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few symbols' addresses, type sizes and member offsets, from the dump's kallsyms and BTF and from gdb's
    DWARF of the vmlinux: decoded from the dump, and loaded from the cache the decoding wrote."""
    if not has_btf(real_kernel):
        pytest.skip(f"{real_kernel} is built without CONFIG_DEBUG_INFO_BTF")
    dump = samples.ensure_dump("kdl_mutex", True, real_kernel, kind="kdump")
    script = _GDB_FACTS.replace("SYMBOLS", repr(SYMBOLS)).replace("TYPES", repr(TYPES))
    script = script.replace("MEMBERS", repr(MEMBERS))
    done = gdb(dump.vmlinux, None, f"python exec({script!r})")
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    facts = json.loads(line[2:])
    monkeypatch.setenv("KDLGDB_CACHE", str(tmp_path))
    decoded = open_btf_target(str(dump.path))
    assert decoded._kept is None and list(tmp_path.glob("debuginfo/*.v1"))
    kept = open_btf_target(str(dump.path))
    assert kept._kept is not None
    for target in decoded, kept:
        same_as_gdb(target, facts)


def same_as_gdb(target: BtfTarget, facts: dict[str, Any]) -> None:
    assert {n: target.symbol(n) for n in SYMBOLS} == facts["symbols"]
    assert {t: target.type_size(t) for t in TYPES} == facts["sizes"]
    assert [(target.member(t, m) or (None,))[0] for t, m in MEMBERS] == facts["offsets"]
    assert target.member_type("struct task_struct", "pi_blocked_on") == "struct rt_mutex_waiter *"
    assert target.symbolize(facts["symbols"]["schedule"] + 0x10) == ("schedule", 0x10)
    assert target.source_line(facts["symbols"]["schedule"] + 0x10) is None
    assert target.symbol_size("runqueues") == facts["sizes"]["struct rq"]


def test_the_commands_without_a_vmlinux(tmp_path: Path, real_kernel: str) -> None:
    """kdlgdb waitfor, report and triage with --btf (this machine has the vmlinux installed): the answer, which
    source gave the types, and no gdb (none on the PATH)."""
    if not has_btf(real_kernel):
        pytest.skip(f"{real_kernel} is built without CONFIG_DEBUG_INFO_BTF")
    dump = samples.ensure_dump("kdl_mutex", True, real_kernel, kind="kdump-filtered")
    env = {"KDLGDB_GDB": str(tmp_path / "no-gdb-here")}  # a gdb run would fail: "gdb is not installed"
    done = kdlgdb("waitfor", "--btf", str(dump.path), env=env)
    assert done.returncode == 1, done.stderr
    pids = dump.truth["tasks"]
    assert f'DEADLOCK: "kdl_m1" (pid {pids["kdl_m1"]}) and "kdl_m2" (pid {pids["kdl_m2"]})' in done.stdout
    out = tmp_path / "r.json"
    done = kdlgdb("report", "--btf", str(dump.path), "-o", str(out), env=env)
    assert done.returncode == 0 and "DEADLOCK" in done.stdout, done.stderr
    report = json.loads(out.read_text())
    assert report["debug_info"] == report["facts"]["debug_info"] == "btf" and "vmlinux" not in report["facts"]
    done = kdlgdb("triage", "--btf", str(dump.path), str(dump.path), env=env)
    assert done.returncode == 1 and done.stdout.count(" deadlock ") == 2, done.stdout + done.stderr


def test_a_kernel_without_btf_is_one_line() -> None:
    """The lock-debugging kernel is built without CONFIG_DEBUG_INFO_BTF: the one line says to give the vmlinux."""
    kernel = next((k for k in samples.KERNELS if not has_btf(k)), None)
    if kernel is None:
        pytest.skip("no kernel without BTF among the kernels tested")
    dump = samples.ensure_dump("kdl_mutex", True, kernel, kind="kdump")
    done = kdlgdb("waitfor", str(dump.path))  # its vmlinux is in the sample cache, not where kdlgdb looks
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("kdlgdb: this kernel carries no BTF")
    assert "kdlgdb needs its vmlinux" in done.stderr and f"no vmlinux for {samples.release(kernel)}" in done.stderr


def test_no_kallsyms_in_vmcoreinfo_is_one_line(tmp_path: Path) -> None:
    """A kernel before 6.0 gives no kallsyms tables in VMCOREINFO: one line, naming the entry, saying to give the
    vmlinux (a copy of a real dump whose VMCOREINFO lost the entry)."""
    dump = samples.ensure_dump("kdl_mutex", True, samples.DEFAULT_KERNEL, kind="kdump-filtered")
    copy = tmp_path / "old.kdump"
    shutil.copyfile(dump.path, copy)
    data = copy.read_bytes()
    assert data.count(b"SYMBOL(kallsyms_token_table)=") == 1
    copy.write_bytes(data.replace(b"SYMBOL(kallsyms_token_table)=", b"SYMBOL(kallsyms_token_tablX)="))
    done = kdlgdb("waitfor", "--btf", str(copy))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("kdlgdb: the dump's VMCOREINFO has no SYMBOL(kallsyms_token_table) (kernels before "
                                  "6.0") and "kdlgdb needs the vmlinux of this dump" in done.stderr


@pytest.mark.parametrize("damage, message", [("zeros", "is not BTF"), ("unread", "is not in the dump")])
def test_btf_missing_from_the_dump_is_one_line(damage: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """BTF pages zeroed or left out of a dump: one line saying to give the vmlinux."""
    monkeypatch.setenv("KDLGDB_CACHE", "")
    dump = samples.ensure_dump("kdl_mutex", True, samples.DEFAULT_KERNEL, kind="kdump-filtered")
    target = BtfTarget(open_dump_of(dump.path))
    start = target.symbol("__start_BTF")
    assert start is not None
    runtime = start + target.kaslr_offset
    read = target.dump.read

    def damaged(address: int, size: int) -> bytes:
        if address <= runtime < address + size:
            if damage == "unread":
                raise ReadError(address, size, "filtered out of the dump")
            return bytes(size)
        return read(address, size)

    target.dump.read = damaged  # type: ignore[method-assign]
    with pytest.raises(KdlError, match=f"{message}.*kdlgdb needs (its|the) vmlinux") as e:  # (the cache is off)
        target.type_size("struct task_struct")
    assert "\n" not in str(e.value)


def open_dump_of(path: Path):
    from kdlgdb.target.dumpfile import open_dump

    return open_dump(str(path))


def test_a_modules_type_from_its_own_btf(real_kernel: str) -> None:
    """``struct kdl_dev`` of kdl_exit.c (a name, a mutex, an enum and two ints) from the module's BTF, which the
    kernel keeps in ``btf_modules``; its mutex is the vmlinux's type."""
    if not has_btf(real_kernel):
        pytest.skip(f"{real_kernel} is built without CONFIG_DEBUG_INFO_BTF")
    dump = samples.ensure_dump("kdl_exit", True, real_kernel, kind="kdump")
    target = open_btf_target(str(dump.path))
    if not any(m.what == "module kdl_exit's BTF" for m in target._module_btfs()):
        pytest.skip(f"the sample modules of {real_kernel} are built without BTF (its headers have no vmlinux)")
    mutex = target.type_size("struct mutex")
    assert mutex is not None and target.type_size("struct vmcore_nothing") is None
    assert target.member("struct kdl_dev", "lock") == (8, mutex)
    assert target.member_type("struct kdl_dev", "lock") == "struct mutex"
    assert target.member("struct kdl_dev", "users") == (8 + mutex + 4, 4)
    assert target.member("struct kdl_dev", "cfg") == (8 + mutex + 8, 4)
    assert target.type_size("struct kdl_dev") == 8 + mutex + 16


def test_no_vmlinux_installed_means_the_btf_path(real_kernel: str, tmp_path: Path) -> None:
    """Where no vmlinux of the dump's release is installed (here: looked for where there is none), triage and the
    report read the dump's own BTF and kallsyms, and say where they looked."""
    if not has_btf(real_kernel):
        pytest.skip(f"{real_kernel} is built without CONFIG_DEBUG_INFO_BTF")
    from kdlgdb import report

    dump = samples.ensure_dump("kdl_mutex", False, real_kernel, kind="kdump")
    nowhere = [str(tmp_path / "vmlinux-{release}")]
    row = report.triage_one(str(dump.path), places=nowhere)
    assert (row.verdict, row.status, row.release) == ("deadlock", 1, samples.release(real_kernel))
    vmlinux, how = report.debug_info_for(str(dump.path), None, places=nowhere)
    assert vmlinux is None and how.startswith(f"no vmlinux for {samples.release(real_kernel)} (looked in {tmp_path}")
    bundle = report.collect_bundle(None, str(dump.path), how=how)
    assert bundle.snapshot.debug_info == "btf" and all(f.source is None for t in bundle.snapshot.tasks for f in t.frames)
    assert "vmlinux" not in bundle.facts and "debugger" not in bundle.facts
