"""Real crash with the kdlgdb extension on real dumps of Debian's kernel: the same answers as gdb.

Every kd-* command's text and JSON in crash is compared with the same command in gdb on the
same dump, and the wait-for JSON with what the guest kernel itself said (the dump's truth).
"""
from __future__ import annotations

import gzip
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matrix
import pytest
import realcrash
import samples
from expectations import check_waitfor, without_wait_sources
from realgdb import shared_gdb

pytestmark = pytest.mark.realkernel

MARK = "@@kdlgdb-test@@"


def gdb_outputs(dump: samples.Dump, *commands: str) -> list[str]:
    """What each command printed in one real gdb session on the same file (``kd-open`` reads every form), in
    the gdb of the vmlinux kept open for many tests (it starts each test's commands afresh)."""
    mark = f"echo {MARK}\\n"
    done = shared_gdb(dump.vmlinux, None, f"kd-open {dump.path}", mark, *(part for c in commands for part in (c, mark)))
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout.split(MARK + "\n")[1 : len(commands) + 1]  # what gdb says when it opens the dump comes first


def _forms() -> list[tuple[str, bool, str]]:
    """Every scenario, KASLR on and off, as QEMU's paging ELF and as a kdump-compressed file; and
    every other form of the samples (physical ELF, flattened, filtered, each page compression)."""
    cases = [(s, k, kind) for s in samples.SCENARIOS for k in (False, True) for kind in ("elf", "kdump")]
    others = [kind for kind in samples.builder.variant_kinds(samples.PHYS_SCENARIO) if kind not in ("elf", "kdump")]
    return cases + [(samples.PHYS_SCENARIO, True, kind) for kind in others]


FORMS = _forms()


# crash takes ~6 s of CPU to open a dump: by default each scenario, form and KASLR setting once (the gdb
# tests run every form of every scenario); --full runs every case.
@matrix.over("scenario,kaslr,kind", FORMS, default_product=False)
def test_crash_prints_what_gdb_prints(crash_kernel: str, scenario: str, kaslr: bool, kind: str) -> None:
    """Every command and option, text and JSON, in crash byte for byte as in gdb on the same file; and the
    wait-for graph is what the guest kernel said."""
    dump = samples.ensure_dump(scenario, kaslr, crash_kernel, kind=kind)
    first = dump.truth["tasks"][next(iter(samples.expected(scenario, crash_kernel)["waits"]))]
    commands = ["kd-waitfor --json", "kd-waitfor", f"kd-waitfor -p {first}", "kd-tasks", "kd-tasks -s D",
                f"kd-tasks -p {first}", "kd-tasks kdl_", f"kd-bt {first}", "kd-locks", "kd-locks --json",
                "kd-dmesg --notable", "kd-dmesg --grep blocked", "kd-info"]
    coloured = ["kd-waitfor", "kd-locks"]
    with ThreadPoolExecutor(1) as pool:  # gdb meanwhile
        in_gdb = pool.submit(gdb_outputs, dump, *commands, "set kd-color on", *coloured)
        in_crash, done = realcrash.outputs(dump.vmlinux, dump.path, *commands, "kd-set color on", *coloured)
        in_gdb = in_gdb.result()
    assert "Traceback" not in done.stdout + done.stderr
    assert len(in_crash) == len(in_gdb) == len(commands) + 1 + len(coloured)
    for command, mine, theirs in zip(commands + ["set colour", *coloured], in_crash, in_gdb):
        if command == "kd-info":  # says who reads the dump: crash, or gdb (kdlgdb)
            mine, theirs = (re.sub(r"(?m)^dump .*\n", "", text) for text in (mine, theirs))
        if command == "kd-waitfor --json":  # which source decided each wait: only gdb reads frame variables
            mine, theirs = (json.dumps(without_wait_sources(json.loads(text))) for text in (mine, theirs))
        assert mine == theirs, f"{command}: crash and gdb differ"
    assert "\x1b[" in in_crash[-2] and "\x1b[" not in in_crash[1]
    assert f"PID: {first}" in in_crash[7]
    assert "(read by crash)" in in_crash[12]
    doc = json.loads(in_crash[0])
    assert json.loads(in_crash[9]) == doc["locks"]
    check_waitfor(doc, samples.expected(scenario, crash_kernel), dump.truth)
    assert doc["release"] == samples.release(crash_kernel)
    assert int(doc["kaslr_offset"], 16) == dump.kernel_offset
    assert doc["problems"] == []


def test_crash_session(crash_kernel: str) -> None:
    """What a user types in crash: help, -h, crash's own commands in between, the hex radix."""
    dump = samples.ensure_dump("kdl_abba", True, crash_kernel)
    a, b = dump.truth["tasks"]["kdl_a"], dump.truth["tasks"]["kdl_b"]
    done = realcrash.crash(dump.vmlinux, dump.path, "help kd-waitfor", "kd-waitfor -h", "sym linux_banner", "kd-waitfor",
                           "help", options=("--hex",))
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert "kd-waitfor - the wait-for graph" in out and "SYNOPSIS\n  kd-waitfor [-h] [--json] [-p PID]" in out
    assert "usage: kd-waitfor [-h] [--json] [-p PID] [--stacks]" in out
    assert any(line.endswith("(D) linux_banner") for line in out.splitlines())
    assert f"PROBABLE DEADLOCK: \"kdl_a\" (pid {a}) and \"kdl_b\" (pid {b})" in out
    assert "take sem1 before sem2 [kdl_abba]" in out
    assert all(name in out.split("kd-waitfor -h")[-1] for name in ("kd-bt", "kd-locks", "kd-tasks", "kd-set"))


def test_crash_report(crash_kernel: str, tmp_path: Path) -> None:
    """kd-report in crash: gdb's report of the same dump, but for who read it."""
    dump = samples.ensure_dump("kdl_rwsem", True, crash_kernel)
    mine, theirs, html = tmp_path / "crash.json", tmp_path / "gdb.json", tmp_path / "crash.html"
    (said, _), done = realcrash.outputs(dump.vmlinux, dump.path, f"kd-report -o {mine}", f"kd-report -o {html}")
    (told,) = gdb_outputs(dump, f"kd-report -o {theirs}")
    assert said.replace(str(mine), "FILE") == told.replace(str(theirs), "FILE"), done.stdout[-2000:]
    from_crash, from_gdb = json.loads(mine.read_text()), json.loads(theirs.read_text())
    facts, gdb_facts = from_crash.pop("facts"), from_gdb.pop("facts")
    # crash has no DWARF unwinder for kdlgdb (Target.frame_variables is None there): its waits come from the wait
    # lists, gdb's from the slow-path frames, which agree; the rest is the same.
    # (On a DEBUG_MUTEXES kernel crash's source for a mutex waiter is the task's own blocked_on.)
    for doc, wanted in ((from_crash, ("wait list", "blocked_on")), (from_gdb, ("frame",))):
        for task in doc["tasks"]:
            source, evidence = task.pop("wait_source"), task.pop("wait_evidence")
            assert (source in wanted) if task["waits_on"] else source == "", (task["comm"], source)
            if source == "wait list":  # its waiter, linked into the wait list
                assert evidence.split("; ")[-1].startswith("struct "), evidence
    assert from_crash == from_gdb
    assert facts["debugger"].startswith("crash 8.") and gdb_facts["debugger"].startswith("gdb ")
    assert facts["dump"] == str(dump.path) and facts["vmlinux"] == str(dump.vmlinux)
    differ = {k for k in facts.keys() | gdb_facts.keys() if facts.get(k) != gdb_facts.get(k)}
    assert differ <= {"debugger", "analysed", "read_from"}, differ
    assert "<svg" in html.read_text()


def test_crash_pipes_and_redirection(crash_kernel: str, tmp_path: Path) -> None:
    """`kd-waitfor --json | less` and the like: the output goes where crash's pipes and redirections say."""
    dump = samples.ensure_dump("kdl_mutex", False, crash_kernel)
    saved, text = tmp_path / "waitfor.json", tmp_path / "waitfor.txt"
    # Pipe ends that read all their input: crash polls /proc for the pipe's process, and one that exits
    # early (head -1) is gone before crash looks; every such pipe failed on a quiet machine. Only `wc`:
    # on the CI machine every `| grep` failed in crash's own lookup ("pipe operation failed", and the
    # command does not run) while every `| wc` beside it worked.
    pipes = ["kd-waitfor --json | wc -c", "kd-waitfor | wc -l"] * 5
    done = realcrash.crash(dump.vmlinux, dump.path, f"kd-waitfor --json > {saved}", f"kd-waitfor > {text}", *pipes,
                           "kd-tasks -s D | wc -l")
    out = done.stdout
    m1, m2 = dump.truth["tasks"]["kdl_m1"], dump.truth["tasks"]["kdl_m2"]
    header = f"DEADLOCK: \"kdl_m1\" (pid {m1}) and \"kdl_m2\" (pid {m2}) on m1 [kdl_mutex], m2 [kdl_mutex]"
    counts = [int(line) for line in out.splitlines() if line.strip().isdigit()]
    size, lines = saved.stat().st_size, len(text.read_text().splitlines())
    assert json.loads(saved.read_text())["cycles"]
    assert header in text.read_text().splitlines(), text.read_text()
    # Every pipe that crash did set up carries the whole output; each kind is tried five times, one must work.
    failed = out.count("crash: pipe operation failed")
    assert size in counts and lines in counts, out
    assert len([c for c in counts if c not in (size, lines, 4)]) <= failed, out


ANSWERS = """\
import gzip
import json
import re
import os

from kdlgdb.target import crash

KEYS = {"symbol": "symbol {}", "symbol_size": "symbol_size {}", "type_size": "type_size {}",
        "member": "member {} {}", "symbolize": "symbolize {:#x}", "source_line": "source_line {:#x}"}


def logged(name, key):
    method = getattr(crash.CrashTarget, name)

    def answer(self, *args):
        value = method(self, *args)
        with open(os.environ["KDLGDB_TEST_ANSWERS"], "a") as f:
            f.write(json.dumps([key.format(*args), value]) + "\\n")
        return value

    setattr(crash.CrashTarget, name, answer)


for name, key in KEYS.items():
    logged(name, key)
"""


def test_crash_target_answers_what_gdb_answers(crash_kernel: str, tmp_path: Path) -> None:
    """Every question the kernel model asks (types, nested members, symbols, names, source lines), answered
    by crash as by gdb: the recording of a gdb run holds gdb's answers (static addresses: no KASLR)."""
    scenario = "kdl_rwsem"
    recordings = Path(__file__).parent / "vmcore_samples" / "recordings" / crash_kernel
    if not (recordings / f"{scenario}-nokaslr.json.gz").is_file():
        pytest.skip(f"no recording of gdb's answers on {crash_kernel} (record.py --kernel {crash_kernel} makes one)")
    dump = samples.ensure_dump(scenario, False, crash_kernel)
    (tmp_path / "sitecustomize.py").write_text(ANSWERS)
    log = tmp_path / "answers.jsonl"
    (waitfor, _), done = realcrash.outputs(dump.vmlinux, dump.path, "kd-waitfor --json", "kd-dmesg",
                                           env={"PYTHONPATH": str(tmp_path), "KDLGDB_TEST_ANSWERS": str(log)})
    assert json.loads(waitfor)["cycles"], done.stdout[-2000:]
    crash_answers = {key: value for key, value in map(json.loads, log.read_text().splitlines())}
    gdb_answers = {}
    for recording in (recordings / f"{scenario}-nokaslr.json.gz", recordings / "dmesg" / f"{scenario}-nokaslr.json.gz"):
        with gzip.open(recording, "rt") as f:
            gdb_answers.update(json.load(f)["answers"])
    common = sorted(set(crash_answers) & set(gdb_answers))
    kinds = {key.split()[0] for key in common}
    assert kinds == {"symbol", "symbol_size", "type_size", "member", "symbolize", "source_line"}, kinds
    assert len(common) > 150 and "member struct printk_ringbuffer desc_ring.count_bits" in common
    differ = [(k, crash_answers[k], gdb_answers[k]) for k in common if crash_answers[k] != gdb_answers[k]]
    assert not differ, differ[:10]
