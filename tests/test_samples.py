"""Tests of the real-kernel sample pipeline (tests/vmcore_samples/).

The first group checks the scenario definitions and the builder's pure
helpers without running anything. The ``realkernel`` group builds (or reuses
from ``${KDLGDB_CACHE:-~/.cache/kdlgdb}``) the QEMU dumps and checks them with
real gdb: the guest's ground truth is complete, KASLR moves things, gdb reads
the dumps, and the locks in the dumps really hold the expected waiters and
owners. Building everything from scratch takes a few minutes under TCG.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "vmcore_samples"))
import matrix  # noqa: E402
import samples  # noqa: E402
from expectations import functions  # noqa: E402

builder = samples.builder
SCENARIO_DIR = Path(__file__).resolve().parent / "vmcore_samples" / "scenarios"
LOCK_TYPES = {"mutex", "semaphore", "rwsem", "rt_mutex", "spinlock", "work", "workqueue", "percpu_rwsem",
              "percpu_rwsem_readers"}
# Lock types whose holder the kernel records (besides expected.json's own "certain_types").
RECORDED = ("mutex", "rt_mutex")
# Scenarios whose threads spin on CPUs (running, R) instead of sleeping in D: no /proc scan, no hung-task report.
SPINNING = tuple(s for s in samples.SCENARIOS if samples.expected(s).get("blocked_when_loaded"))
SLEEPING = tuple(s for s in samples.SCENARIOS if s not in SPINNING)
VARIANTS = [pytest.param(False, id="nokaslr"), pytest.param(True, id="kaslr")]
MODULE_GAP = 0x4000  # how far apart a module's text and data may be allocated (v6.4+)


# --------------------------------------------------------------------------
# Scenario definitions (no QEMU)
# --------------------------------------------------------------------------

def find_cycles(exp: dict) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Wait-for cycles implied by ``waits`` and ``holds``, each rotated to start at its smallest task."""
    holders: dict[str, list[str]] = {}
    for task, locks in exp["holds"].items():
        for lock in locks:
            holders.setdefault(lock, []).append(task)
    found = set()

    def walk(path: list[str], locks: list[str]) -> None:
        lock = exp["waits"].get(path[-1])
        for holder in holders.get(lock, []) if lock else []:
            if holder == path[0]:
                k = path.index(min(path))
                found.add((tuple(path[k:] + path[:k]), tuple((locks + [lock])[k:] + (locks + [lock])[:k])))
            elif holder not in path:
                walk(path + [holder], locks + [lock])

    for task in exp["tasks"]:
        walk([task], [])
    return sorted(found)


@pytest.mark.parametrize("scenario", samples.SCENARIOS)
def test_expected_json_is_consistent(scenario):
    exp = samples.expected(scenario)
    assert exp["module"] == scenario
    tasks = set(exp["tasks"]) | set(exp.get("workers", []))  # workers: kworkers the module names from its work
    assert set(exp["waits"]) <= tasks and set(exp["holds"]) <= tasks
    assert set(exp.get("user_tasks", [])) <= set(exp["tasks"]) and set(exp.get("blocking_calls", {})) <= tasks
    assert set(exp["lock_types"].values()) <= LOCK_TYPES
    used = set(exp["waits"].values()) | {lock for locks in exp["holds"].values() for lock in locks}
    assert used == set(exp["lock_types"])
    for task, locks in exp["holds"].items():
        assert set(exp["hold_modes"].get(task, {})) == set(locks)
    for cycle in exp["cycles"]:
        n = len(cycle["tasks"])
        assert n == len(cycle["locks"]) >= 1  # one task: through an interrupt, or a recursive lock
        recorded = True
        for k, (task, lock) in enumerate(zip(cycle["tasks"], cycle["locks"])):
            holder = cycle["tasks"][(k + 1) % n]
            assert exp["waits"][task] == lock, f"{task} should wait on {lock}"
            assert lock in exp["holds"][holder], f"{lock} should be held by {holder}"
            mode = exp["hold_modes"][holder][lock]
            kind = exp["lock_types"][lock]
            recorded &= (kind in (*RECORDED, *exp.get("certain_types", ())) or (kind == "rwsem" and mode == "write")) \
                and lock not in exp.get("inferred_locks", ())
        assert cycle["verdict"] == ("deadlock" if recorded else "probable")
    listed = sorted(
        (tuple(c["tasks"][k:] + c["tasks"][:k]), tuple(c["locks"][k:] + c["locks"][:k]))
        for c in exp["cycles"] for k in [c["tasks"].index(min(c["tasks"]))])
    assert find_cycles(exp) == listed


@pytest.mark.parametrize("scenario", samples.SCENARIOS)
def test_module_source_matches_expected(scenario):
    exp = samples.expected(scenario)
    folder = SCENARIO_DIR / scenario
    assert (folder / "Kbuild").read_text().strip() == f"obj-m := {scenario}.o"
    source = (folder / f"{scenario}.c").read_text()
    assert "module_exit(" not in source
    for lock, kind in exp["lock_types"].items():
        if lock in exp.get("heap_locks", ()):  # a field of a kmalloc'd object: printed by name
            assert f'"kdl-truth lock {lock} {kind} %px\\n"' in source, lock
            continue
        assert re.search(rf"^static .*\b{lock}\b", source, re.M), f"{lock} is not a static"
        assert (f"KDL_TRUTH_LOCK({lock}, \"{kind}\")" in source
                or f'"kdl-truth lock {lock} {kind} %px\\n", &{lock})' in source)
    comms = re.findall(r'kthread_(?:run|create)\(\w+, \w+, "(\w+)"\)|kdl_start_on\(\w+, (?:\w+, )?"(\w+)"'
                       r'|kdl_start\(\w+, \w+, "(\w+)"\)', source)
    guest = folder / "guest.sh"  # user processes the guest script starts
    users = re.findall(r'^say "kdl-truth task (\w+) \$!"$', guest.read_text(), re.M) if guest.is_file() else []
    assert sorted(users) == sorted(exp.get("user_tasks", []))
    # "exits": threads that exit during the scenario (an owner that leaves its lock held): not in the dump.
    assert sorted(["".join(c) for c in comms] + users) == sorted(exp["tasks"] + exp.get("exits", []))
    for worker in exp.get("workers", []):
        assert f'"kdl-truth task {worker} %d\\n", current->pid' in source, worker


def test_cache_key_depends_on_sources_and_kernel():
    a = builder.scenario_key("kdl_abba", samples.DEFAULT_KERNEL)
    assert a == builder.scenario_key("kdl_abba", samples.DEFAULT_KERNEL)
    assert a != builder.scenario_key("kdl_mutex", samples.DEFAULT_KERNEL)
    assert a != builder.scenario_key("kdl_abba", "6.12.0-0-cloud-amd64")
    assert re.fullmatch(r"[0-9a-f]{12}", a)


def test_builder_definitions_ignore_prose_and_imports_not_code(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('"""Doc."""\nimport os\nX = "echo a"  # why\n\ndef f():\n    """Doc."""\n    return X\n')
    digest = builder.definitions(src)
    src.write_text('"""Other doc."""\n# a comment\nfrom os import path\nX = "echo a"\n\ndef f():\n    """Other."""\n'
                   '    return X\n')
    assert builder.definitions(src) == digest
    src.write_text('"""Doc."""\nX = "say a"\n\ndef f():\n    return X\n')  # a string the code uses
    assert builder.definitions(src) != digest


def test_moving_a_definition_between_builder_files_keeps_the_key(tmp_path):
    """The dump cache key hashes the builder's definitions, not its file layout: splitting a file does not
    rebuild every dump, and a changed definition does."""
    (tmp_path / "a.py").write_text("import os\n\ndef f():\n    return 1\n\ndef g():\n    return 2\n")
    (tmp_path / "b.py").write_text("")
    (tmp_path / "t.sh").write_text("echo @X@\n")
    before = builder.builder_digest(("a.py", "b.py", "t.sh"), tmp_path)
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "b.py").write_text("from a import f\n\n\ndef g():\n    return 2\n")
    assert builder.builder_digest(("a.py", "b.py", "t.sh"), tmp_path) == before
    (tmp_path / "b.py").write_text("def g():\n    return 3\n")
    assert builder.builder_digest(("a.py", "b.py", "t.sh"), tmp_path) != before
    (tmp_path / "b.py").write_text("def g():\n    return 2\n")
    (tmp_path / "t.sh").write_text("echo @Y@\n")
    assert builder.builder_digest(("a.py", "b.py", "t.sh"), tmp_path) != before


def test_every_builder_module_is_in_the_cache_key():
    """Each module of tests/vmcore_samples/ that the builder imports, directly or through another, is hashed
    into the dump key (BUILDER_FILES) or contributes only data that is (NOT_KEYED); a new file split off
    build.py and left off the list would stop rebuilds silently."""
    here = Path(builder.__file__).parent
    local = {p.stem for p in here.glob("*.py")}
    seen, todo = set(), ["build"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((here / f"{name}.py").read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            todo += [n for n in names if n in local]
    assert seen - {"build"}, "the walk found no module"
    listed = {Path(f).stem for f in builder.BUILDER_FILES + builder.NOT_KEYED if f.endswith(".py")}
    assert seen <= listed, f"imported by the builder but not in BUILDER_FILES or NOT_KEYED: {sorted(seen - listed)}"
    assert (here / "init.sh").read_text() and "init.sh" in builder.BUILDER_FILES
    for name in builder.BUILDER_FILES + builder.NOT_KEYED:
        assert (here / name).is_file(), name


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_cpio_writer_is_readable_by_cpio(tmp_path):
    import stat
    archive = builder.cpio_newc([
        ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n", (0, 0)),
    ])
    out = subprocess.run(["cpio", "-itv"], input=archive, capture_output=True, timeout=30, check=True)
    listing = out.stdout.decode()
    assert re.search(r"^crw------- .* 5,\s+1 .* dev/console$", listing, re.M), listing
    assert re.search(r"^-rwxr-xr-x .* 18 .* init$", listing, re.M), listing
    data = subprocess.run(["cpio", "-i", "--to-stdout", "init"], input=archive, capture_output=True,
                          timeout=30, check=True).stdout
    assert data == b"#!/bin/sh\necho hi\n"


def test_console_parsing():
    log = "\r\n".join([
        "[    2.753333] kdl-truth lock sem1 semaphore ffffffffc04673a0",
        "[    2.754741] kdl-truth task kdl_a 94",
        "[    2.754800] kdl-truth lock sem2 semaphore ffffffffc04673c0[    2.754801] kdl-truth task kdl_b 95",  # two facts, one line
        "kdl-info text ffffffff81200000[    2.228081] clocksource: Switched to clocksource tsc",  # as a 6.12 boot printed it
        "kdl-info module kdl_abba 0xffffffffc0465000 16384",
        "kdl-state 94 kdl_a D kdl_a_fn",
        "kdl-stack kdl_a [<0>] kdl_a_fn+0x27/0x50 [kdl_abba]",
        "[   11.249890] INFO: task kdl_a:94 blocked for more than 5 seconds.",
        "[   11.251639] Call Trace:",
        "[   11.251866]  <TASK>",
        "[   11.252121]  __schedule+0x34d/0xa00",
        "[   11.252994]  ? 0xffffffffc0465000",
        "[   11.253300]  down+0x43/0x60",
        "[   11.253835]  </TASK>",
    ])
    parsed = builder.parse_console(log)
    assert parsed["locks"] == {"sem1": {"address": "0xffffffffc04673a0", "type": "semaphore"},
                               "sem2": {"address": "0xffffffffc04673c0", "type": "semaphore"}}
    assert parsed["tasks"] == {"kdl_a": 94, "kdl_b": 95}
    assert parsed["text"] == 0xFFFFFFFF81200000
    assert parsed["module_base"] == 0xFFFFFFFFC0465000
    assert parsed["threads"]["kdl_a"] == {"pid": 94, "state": "D", "wchan": "kdl_a_fn",
                                         "stack": ["kdl_a_fn+0x27/0x50 [kdl_abba]"]}
    assert builder.hung_task_reports(log) == {"kdl_a": ["__schedule+0x34d/0xa00", "down+0x43/0x60"]}


def test_a_kernel_that_dies_before_init_is_booted_again(monkeypatch, tmp_path):
    """A TCG boot that oopses before /init ran (nothing of the scenario yet) is retried; a panic after
    /init started is the scenario's failure and is raised at once."""
    consoles = iter(["[ 2.19] Oops: int3\n[ 2.19] Kernel panic - not syncing: Fatal exception in interrupt\n",
                     "kdl-info text ffffffff81000000\nKDL-BLOCKED\n"])
    booted = []

    class FakeGuest(builder.Guest):
        def __enter__(self):
            self.text = next(consoles)
            booted.append(self.text)
            return self

        def __exit__(self, *exc):
            return False

        def console(self):
            return self.text

    monkeypatch.setattr(sys.modules[builder.blocked_guest.__module__], "Guest", FakeGuest)
    logged = []
    with builder.blocked_guest("kdl_abba", False, "k", tmp_path / "initrd", tmp_path / "console", logged.append) as guest:
        assert "KDL-BLOCKED" in guest.console()
    assert len(booted) == 2 and "panicked before /init" in logged[0]

    consoles = iter(["kdl-info text ffffffff81000000\n[ 9.1] Kernel panic - not syncing: hung_task: blocked tasks\n"] * 3)
    with pytest.raises(builder.BuildError, match="Kernel panic"):
        with builder.blocked_guest("kdl_abba", False, "k", tmp_path / "initrd", tmp_path / "console", logged.append):
            pass
    assert len(booted) == 3  # no second boot

    # kdl_spin's threads spin 2 s after /init's KDL-BLOCKED: the guest is ready at the module's marker.
    consoles = iter(["kdl-info text ffffffff81000000\nKDL-BLOCKED\n"])
    with pytest.raises(builder.BuildError, match="QEMU ended while waiting for 'kdl-info spinning'"):
        with builder.blocked_guest("kdl_spin", False, "k", tmp_path / "initrd", tmp_path / "console", logged.append):
            pass


# --------------------------------------------------------------------------
# Real dumps (QEMU, gdb)
# --------------------------------------------------------------------------

def run_gdb(*args: str, timeout: float = 300) -> str:
    """Run ``gdb -nx -batch`` with ``args``; return stdout+stderr."""
    proc = subprocess.run(["gdb", "-nx", "-batch", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc.stdout + proc.stderr


def gdb_load(vmlinux: Path, kernel_offset: int) -> list[str]:
    """gdb arguments that load ``vmlinux`` relocated by the KASLR offset."""
    return ["-ex", f"symbol-file -o {kernel_offset:#x} {vmlinux}"]


def address(text: str) -> int:
    return int(text, 16)


@pytest.mark.realkernel
@pytest.mark.parametrize("kaslr", VARIANTS)
@pytest.mark.parametrize("scenario", samples.SCENARIOS)
def test_truth_names_every_thread_and_lock(real_kernel, scenario, kaslr):
    dump = samples.ensure_dump(scenario, kaslr=kaslr, kernel=real_kernel)
    exp = samples.expected(scenario, real_kernel)
    truth = dump.truth
    assert dump.path.is_file() and dump.path.stat().st_size > 100 * 2**20
    assert truth["kernel"] == dump.kernel and truth["osrelease"] == samples.release(dump.kernel)
    assert truth["kaslr"] is kaslr and truth["module"] == scenario
    assert Path(truth["vmlinux"]) == dump.vmlinux
    # Besides the locks, the objects the roots of kdl_chain wait on (a completion, a wait queue head).
    waited = {b["object"]: b["kind"] for b in exp.get("blocked_in", {}).values() if "object" in b}
    assert set(truth["locks"]) == set(exp["lock_types"]) | set(waited)
    for sym, info in truth["locks"].items():
        assert info["type"] == {**exp["lock_types"], **waited}[sym]
        assert re.fullmatch(r"0xffff[0-9a-f]{12}", info["address"]), info
        if sym in exp.get("heap_locks", ()):
            continue  # kmalloc'd
        base, size = address(truth["module_base"]), truth["module_size"]
        # Since v6.4 (module_memory, "module: introduce module_memory") a module's data is allocated apart from
        # its text: in some boots other module memory sits between them (seen on 6.12: data 0x3000 further).
        assert base <= address(info["address"]) < base + size + MODULE_GAP, f"{sym} outside the module"
    assert set(truth["tasks"]) == set(exp["tasks"]) | set(exp.get("workers", []))
    assert all(isinstance(pid, int) and pid > 1 for pid in truth["tasks"].values())
    assert len(set(truth["tasks"].values())) == len(truth["tasks"])
    if scenario in SPINNING:  # /init does not scan /proc: the CPUs spin, user space starves
        assert truth["threads"] == {}
        return
    states = builder.sleeping_states(exp)  # D, or what expected.json says for this kernel
    for comm, pid in truth["tasks"].items():
        if comm in exp.get("workers", []):  # a kworker: /init reports kdl_* tasks only
            continue
        assert truth["threads"][comm]["pid"] == pid
        assert truth["threads"][comm]["state"] in states[comm].split("|")


@pytest.mark.realkernel
@pytest.mark.parametrize("kaslr", VARIANTS)
@pytest.mark.parametrize("scenario", samples.SCENARIOS)
def test_kernel_offset_agrees_with_vmcoreinfo(real_kernel, scenario, kaslr):
    truth = samples.ensure_dump(scenario, kaslr=kaslr, kernel=real_kernel).truth
    assert truth["kernel_offset"] == truth["vmcoreinfo_kernel_offset"]
    assert (address(truth["kernel_offset"]) != 0) is kaslr


@pytest.mark.realkernel
@pytest.mark.parametrize("scenario", samples.SCENARIOS)
def test_kaslr_moves_the_module(real_kernel, scenario):
    plain = samples.ensure_dump(scenario, kaslr=False, kernel=real_kernel).truth
    moved = samples.ensure_dump(scenario, kaslr=True, kernel=real_kernel).truth
    assert plain["module_base"] != moved["module_base"]
    heap = samples.expected(scenario).get("heap_locks", ())
    for sym in (s for s in plain["locks"] if s not in heap):
        assert plain["locks"][sym]["address"] != moved["locks"][sym]["address"]
        # same module layout, so the offset inside the module is the same (up to whole pages between its text
        # and its data since v6.4, see MODULE_GAP)
        offsets = [address(t["locks"][sym]["address"]) - address(t["module_base"]) for t in (plain, moved)]
        assert offsets[0] % 4096 == offsets[1] % 4096 and abs(offsets[0] - offsets[1]) <= MODULE_GAP, offsets


# The slow-path function each blocking call ends up in on 6.1 (mutex_lock and
# down_write tail-call theirs, so they do not show up in the trace themselves).
SLOW_PATH = {"down": "__down_common", "mutex_lock": "__mutex_lock", "rt_mutex_lock": "__rt_mutex_slowlock_locked",
             "down_read": "rwsem_down_read_slowpath", "down_write": "rwsem_down_write_slowpath",
             # a flush waits for its wq_barrier's (or wq_flusher's) completion
             "flush_work": "__wait_for_common", "cancel_work_sync": "__wait_for_common",
             "flush_workqueue": "__wait_for_common",
             "percpu_down_read": "percpu_rwsem_wait", "percpu_down_write": "percpu_down_write"}
# PREEMPT_RT builds mutex and rw_semaphore on rt_mutex: readers block on its rt_mutex, a writer
# waits for the readers in rwbase_write_lock.
RT_SLOW_PATH = {**SLOW_PATH, "mutex_lock": "__rt_mutex_slowlock_locked", "down_read": "__rt_mutex_slowlock_locked",
                "down_write": "rwbase_write_lock"}


def blocking_call(scenario: str, comm: str, lock: str) -> str:
    """The function ``comm`` calls to take ``lock``: expected.json's ``blocking_calls`` (a lock taken in a
    helper, or through a pointer), else read from the module source."""
    called = samples.expected(scenario).get("blocking_calls", {}).get(comm)
    if called is not None:
        return called
    source = (SCENARIO_DIR / scenario / f"{scenario}.c").read_text()
    body = source.split(f"static int {comm}_fn(", 1)[1].split("\n}\n", 1)[0]
    return re.search(rf"\b(\w+)\(&{lock}\)", body).group(1)


@pytest.mark.realkernel
@pytest.mark.parametrize("kaslr", VARIANTS)
@pytest.mark.parametrize("scenario", SLEEPING)
def test_hung_task_detector_saw_every_thread(real_kernel, scenario, kaslr):
    """The kernel itself reports every thread blocked, inside the expected lock slow path."""
    truth = samples.ensure_dump(scenario, kaslr=kaslr, kernel=real_kernel).truth
    exp = samples.expected(scenario, real_kernel)
    assert truth["hung_task_reported"]
    for comm, state in builder.sleeping_states(exp).items():
        if truth["threads"][comm]["state"] != "D":  # the detector reports D only: a task parked in S (lockdep kernel)
            assert state != "D" and comm not in truth["hung_task_stacks"]
            continue
        frames = [f.split("+")[0] for f in truth["hung_task_stacks"][comm]]
        # ret_from_fork_asm: the entry code's name on newer kernels (6.12 here), ret_from_fork on 6.1
        if comm in exp.get("user_tasks", ()):  # a process blocked in a system call: the trace ends at the entry
            frames = [f for f in frames if not f.startswith(("RIP:", "RSP:", "RAX:", "RDX:", "RBP:", "R08:", "R10:", "R13:"))]
            assert frames[0] == "__schedule" and frames[-1].startswith("entry_SYSCALL_64"), frames
        else:
            assert frames[0] == "__schedule" and frames[-1] in ("ret_from_fork", "ret_from_fork_asm"), frames
            assert f"{comm}_fn" in frames, frames
        lock = exp["waits"].get(comm)
        if lock is None:  # an owner asleep with its lock held: in msleep, or what expected.json says
            assert functions(exp.get("blocked_in", {}).get(comm, {"function": "msleep"})) & set(frames), frames
        else:
            slow = (RT_SLOW_PATH if samples.preempt_rt(real_kernel) else SLOW_PATH)[blocking_call(scenario, comm, lock)]
            assert functions({"function": slow}) & {f.split(".")[0] for f in frames}, (slow, frames)


@pytest.mark.realkernel
def test_gdb_reads_the_nokaslr_dump(real_kernel):
    dump = samples.ensure_dump("kdl_abba", kaslr=False, kernel=real_kernel)
    out = run_gdb(str(dump.vmlinux), str(dump.path), "-ex", "p init_task.comm")
    assert '"swapper/0' in out, out


@pytest.mark.realkernel
def test_gdb_reads_the_kaslr_dump_with_the_offset(real_kernel):
    dump = samples.ensure_dump("kdl_mutex", kaslr=True, kernel=real_kernel)
    assert dump.kernel_offset != 0
    out = run_gdb(*gdb_load(dump.vmlinux, dump.kernel_offset), "-ex", f"core-file {dump.path}",
                  "-ex", "p init_task.comm")
    assert '"swapper/0' in out, out


@pytest.mark.realkernel
def test_phys_dump_has_no_virtual_addresses(real_kernel):
    phys = samples.ensure_dump("kdl_abba", kaslr=False, kind="phys", kernel=real_kernel)
    paged = samples.ensure_dump("kdl_abba", kaslr=False, kernel=real_kernel)
    assert phys.truth == paged.truth and phys.path != paged.path
    loads = [ph for ph in builder.elf_program_headers(phys.path) if ph["type"] == 1]
    assert loads and all(ph["vaddr"] == ph["paddr"] < 2**48 for ph in loads)
    paged_loads = [ph for ph in builder.elf_program_headers(paged.path) if ph["type"] == 1]
    assert any(ph["vaddr"] >= 0xFFFF800000000000 for ph in paged_loads)
    # gdb opens it without complaint but sees only the vmlinux's static data:
    out = run_gdb(str(phys.vmlinux), str(phys.path), "-ex", "p init_task.comm")
    assert '"swapper/0' not in out, out


GDB_LOCK_SCRIPT = r'''
import gdb, json
truth = json.load(open(TRUTH_PATH))
# PREEMPT_RT (v5.15) builds mutex and rw_semaphore on struct rt_mutex_base; a plain rt_mutex is one everywhere.
RT = "rtmutex" in [f.name for f in gdb.lookup_type("struct mutex").fields()]
LIST_TYPES = {"mutex": ("struct mutex", "struct mutex_waiter"),
              "semaphore": ("struct semaphore", "struct semaphore_waiter"),
              "rwsem": ("struct rw_semaphore", "struct rwsem_waiter")}
RT_TYPES = {"rt_mutex": ("struct rt_mutex", "rtmutex"), "mutex": ("struct mutex", "rtmutex"),
            "rwsem": ("struct rw_semaphore", "rwbase.rtmutex"), "spinlock": ("spinlock_t", "lock")}
task_ptr = gdb.lookup_type("struct task_struct").pointer()
waiter_ptr = gdb.lookup_type("struct rt_mutex_waiter").pointer()
node_offset = int(gdb.parse_and_eval("(unsigned long)&((struct rt_mutex_waiter *)0)->tree.entry"))

def task_info(ptr):
    # Through an integer: gdb casts one CU's `struct task_struct *` to another's by comparing the two
    # structs, 0.5-1.5 s a cast on Debian's 6.1 vmlinux; from a number it is free.
    task = gdb.Value(int(ptr)).cast(task_ptr).dereference()
    return [task["comm"].string(), int(task["pid"])]

def member(value, path):
    for name in path.split("."):
        value = value[name]
    return value

def rb_in_order(node, out):
    if int(node) and len(out) < 64:
        rb_in_order(node["rb_left"], out)
        out.append(gdb.Value(int(node) - node_offset).cast(waiter_ptr).dereference())
        rb_in_order(node["rb_right"], out)

result = {}
# The objects kdl_chain's roots wait on: (type, list head member, waiter type, its list and task members).
QUEUES = {"completion": ("struct completion", "wait.task_list", "struct swait_queue", "task_list", "task"),
          "waitqueue": ("struct wait_queue_head", "head", "struct wait_queue_entry", "entry", "private")}
PCPU = gdb.lookup_type("struct percpu_rw_semaphore")
for sym, info in truth["locks"].items():
    kind = info["type"]
    if kind == "percpu_rwsem_readers":  # &sem->writer: the writer waits there for the readers to leave
        sem = int(info["address"], 16) - [f.bitpos // 8 for f in PCPU.fields() if f.name == "writer"][0]
        sem = gdb.Value(sem).cast(PCPU.pointer()).dereference()
        cpus = int(gdb.parse_and_eval("nr_cpu_ids"))
        count = sum(int(gdb.parse_and_eval(f"*(unsigned int *)((unsigned long){int(sem['read_count'])} + __per_cpu_offset[{c}])"))
                    for c in range(cpus)) & 0xFFFFFFFF
        writer = sem["writer"]["task"]
        result[sym] = {"waiters": [task_info(writer)] if int(writer) else [], "read_held": count > 0}
        continue
    if kind in ("work", "workqueue"):  # who runs them is in the kworkers' struct worker, not in the object
        result[sym] = {}
        continue
    if kind == "percpu_rwsem":  # waiters queued behind the writer's block; the writer in writer.task
        QUEUES[kind] = ("struct percpu_rw_semaphore", "waiters.head", "struct wait_queue_entry", "entry", "private")
    if kind in QUEUES:
        obj_t, head_path, entry_t, list_name, task_name = QUEUES[kind]
        obj = gdb.Value(int(info["address"], 16)).cast(gdb.lookup_type(obj_t).pointer()).dereference()
        head = obj
        for part in head_path.split("."):
            head = head[part]
        entry_t = gdb.lookup_type(entry_t)
        list_offset = [f.bitpos // 8 for f in entry_t.fields() if f.name == list_name][0]
        waiters, node = [], head["next"]
        while int(node) != int(head.address) and len(waiters) < 64:
            entry = gdb.Value(int(node) - list_offset).cast(entry_t.pointer()).dereference()
            waiters.append(task_info(entry[task_name]))
            node = node["next"]
        result[sym] = {"waiters": waiters}
        if kind == "percpu_rwsem":
            writer = obj["writer"]["task"]
            result[sym].update(owner=task_info(writer) if int(writer) else None, block=int(obj["block"]["counter"]))
        continue
    if kind == "spinlock" and not RT:  # qspinlock: the locked byte (1 while held, also under virt_spin_lock)
        result[sym] = {"locked": int(gdb.parse_and_eval(f"*(unsigned char *){info['address']}"))}
        continue
    if kind in RT_TYPES and (RT or kind == "rt_mutex"):
        lock_t, path = RT_TYPES[kind]
        lock = gdb.Value(int(info["address"], 16)).cast(gdb.lookup_type(lock_t).pointer()).dereference()
        base = member(lock, path)
        nodes = []
        rb_in_order(base["waiters"]["rb_root"]["rb_node"], nodes)
        waiters = [task_info(w["task"]) for w in nodes]
        assert all(int(w["lock"]) == int(base.address) for w in nodes)
        owner = int(base["owner"]) & ~1
        entry = {"waiters": waiters, "owner": task_info(gdb.Value(owner)) if owner else None, "read_held": False}
        if kind == "rwsem":
            readers = int(lock["rwbase"]["readers"]["counter"]) & 0xFFFFFFFF
            writer_pending = owner and readers != 1 << 30 and not readers & 1 << 31
            entry["read_held"] = readers & ~(1 << 31) not in (0, 1 << 30)
            if writer_pending:  # it waits for the readers without a waiter, in front of the queue
                entry["waiters"].insert(0, entry.pop("owner"))
                entry["owner"] = None
    else:
        lock_t, waiter_t = (gdb.lookup_type(n) for n in LIST_TYPES[kind])
        lock = gdb.Value(int(info["address"], 16)).cast(lock_t.pointer()).dereference()
        head = lock["wait_list"]
        list_offset = [f.bitpos // 8 for f in waiter_t.fields() if f.name == "list"][0]
        waiters, node = [], head["next"]
        while int(node) != int(head.address) and len(waiters) < 64:
            waiter = gdb.Value(int(node) - list_offset).cast(waiter_t.pointer()).dereference()
            waiters.append(task_info(waiter["task"]))
            node = node["next"]
        entry = {"waiters": waiters}
        if kind == "semaphore":
            entry["count"] = int(lock["count"])
        else:
            owner = int(lock["owner"]["counter"]) & (2**64 - 1)
            entry["read_held"] = bool(owner & 1)  # RWSEM_READER_OWNED
            entry["owner"] = task_info(gdb.Value(owner & ~7)) if owner & ~7 else None
    result[sym] = entry
print("KDL-RESULT " + json.dumps(result))
'''


@pytest.mark.realkernel
@matrix.over("scenario, kaslr", [(s, k) for s in samples.SCENARIOS for k in (False, True)])
def test_dump_locks_hold_the_expected_waiters_and_owners(real_kernel, scenario, kaslr, tmp_path):
    """Read every lock out of the dump with gdb and compare it with expected.json."""
    dump = samples.ensure_dump(scenario, kaslr=kaslr, kernel=real_kernel)
    exp = samples.expected(scenario, real_kernel)
    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps(dump.truth))
    script = tmp_path / "locks.py"
    script.write_text(f"TRUTH_PATH = {str(truth_path)!r}\n" + GDB_LOCK_SCRIPT)
    out = run_gdb(*gdb_load(dump.vmlinux, dump.kernel_offset), "-ex", f"core-file {dump.path}",
                  "-ex", f"source {script}")
    match = re.search(r"^KDL-RESULT (.*)$", out, re.M)
    assert match, out
    locks = json.loads(match.group(1))
    pids = dump.truth["tasks"]
    for sym, kind in exp["lock_types"].items():
        got = locks[sym]
        if kind == "spinlock" and "owner" not in got:  # a qspinlock: no wait list, no owner; held is all it says
            assert got == {"locked": 1}, (sym, got)
            continue
        if kind in ("work", "workqueue"):  # recorded in the kworkers' struct worker: kdlgdb's own tests read them
            continue
        # A task rt_mutex found deadlocked (-EDEADLK) is parked out of the wait tree.
        parked = set(exp.get("deadlock_detected", ()))
        # ... and a thread the kernel parked in S (DEBUG_RT_MUTEXES' deadlock detection, kdl_rtmutex on a lockdep
        # kernel) waits for good, but its waiter is off the lock's tree.
        parked |= {t for t, st in builder.sleeping_states(exp).items()
                   if "S" in st.split("|") and dump.truth["threads"].get(t, {}).get("state") == "S"}
        want_waiters = {t for t, lock in exp["waits"].items() if lock == sym and t not in parked}
        got_pids = {pid for _, pid in got["waiters"]}
        workers = set(exp.get("workers", []))  # a kworker's comm is kworker/N:M: the truth names it by role
        assert all(comm == name for comm, pid in got["waiters"] for name in want_waiters
                   if pids[name] == pid and name not in workers), (sym, got)
        if sym in exp.get("owner_exited", ()):
            # The owner field names the exited owner's (perhaps reused) slot; on PREEMPT_RT a waiter in that
            # slot is parked by rt_mutex's deadlock check, out of the tree.
            assert got_pids <= {pids[comm] for comm in want_waiters}, (sym, got)
            continue
        assert got_pids == {pids[comm] for comm in want_waiters}, (sym, got)
        if sym in exp.get("held_by", {}):  # held by a freeze, not a task: blocked, no writer recorded
            assert got["owner"] is None and got["block"] == 1, (sym, got)
            continue
        holders = [t for t, held in exp["holds"].items() if sym in held]
        assert len(holders) == 1
        mode = exp["hold_modes"][holders[0]][sym]
        if kind == "semaphore":
            assert got["count"] == 0, (sym, got)
        elif kind in ("mutex", "rt_mutex", *exp.get("certain_types", ())) or mode == "write":  # owner recorded
            assert got["owner"] == [holders[0], pids[holders[0]]], (sym, got)
        else:  # read-held rwsem: RWSEM_READER_OWNED (bit 0) set, owner is only a hint; on RT a readers count
            assert got["read_held"], (sym, got)
    for comm, blocked in exp.get("blocked_in", {}).items():  # the completion or wait queue has its root queued
        if "object" in blocked:
            assert locks[blocked["object"]]["waiters"] == [[comm, pids[comm]]], (blocked, locks[blocked["object"]])


@pytest.mark.realkernel
def test_second_ensure_reuses_the_cache(real_kernel):
    first = samples.ensure_dump("kdl_control", kaslr=True, kernel=real_kernel)
    mtime = first.path.stat().st_mtime_ns
    t0 = time.monotonic()
    again = samples.ensure_dump("kdl_control", kaslr=True, kernel=real_kernel)
    assert time.monotonic() - t0 < 5
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime


@pytest.mark.realkernel
def test_live_guest_through_the_gdbstub(real_kernel):
    with samples.boot_live("kdl_abba", kaslr=True, kernel=real_kernel) as live:
        guest = live.guest
        assert live.truth["kaslr"] and live.kernel_offset != 0
        assert "KDL-BLOCKED" in live.console_log.read_text(errors="replace")
        sem1 = live.truth["locks"]["sem1"]["address"]
        out = run_gdb(*gdb_load(live.vmlinux, live.kernel_offset),
                      "-ex", f"target remote 127.0.0.1:{live.gdb_port}",
                      "-ex", "p init_task.comm",
                      "-ex", f"p ((struct semaphore *){sem1})->count",
                      "-ex", "detach")
        assert '"swapper/0' in out, out
        assert re.search(r"^\$2 = 0$", out, re.M), out
    assert guest.proc.poll() is not None  # QEMU is gone


# --------------------------------------------------------------------------
# Kernels of our own (the lock-debugging kernel, opt-in)
# --------------------------------------------------------------------------

def test_a_thread_parked_in_s_counts_as_blocked_only_where_expected_says_so():
    """kdl_rtmutex on a lockdep kernel: DEBUG_RT_MUTEXES parks kdl_rt1 or kdl_rt2 in S; /init must accept that."""
    lockdep = builder.init_script("kdl_rtmutex", "6.1-lockdep")
    debian = builder.init_script("kdl_rtmutex", samples.DEFAULT_KERNEL)
    assert 'case "$comm:$st" in kdl_*:D|kdl_rt1:S|kdl_rt2:S)' in lockdep
    assert 'case "$comm:$st" in kdl_*:D)' in debian and "kdl_rt2:S" not in debian
    assert builder.sleeping_states(samples.expected("kdl_rtmutex", "6.1-lockdep"))["kdl_rt2"] == "D|S"
    assert builder.sleeping_states(samples.expected("kdl_rtmutex", samples.DEFAULT_KERNEL))["kdl_rt2"] == "D"


def test_built_kernel_is_in_the_default_run_and_keyed_by_its_config(monkeypatch):
    import catalog
    import kernelbuild

    monkeypatch.delenv("KDLGDB_KERNELS", raising=False)
    assert catalog.selected_kernels() == catalog.DEBIAN_KERNELS + ("6.1-lockdep",)
    monkeypatch.setenv("KDLGDB_KERNELS", "6.1.0-56-cloud-amd64")
    assert catalog.selected_kernels() == ("6.1.0-56-cloud-amd64",)
    monkeypatch.setenv("KDLGDB_KERNELS", "6.1-lockdep 6.1.0-56-cloud-amd64 6.1-lockdep")
    assert catalog.selected_kernels() == ("6.1-lockdep", "6.1.0-56-cloud-amd64")
    kernel = catalog.LOCKDEP_KERNEL
    other = catalog.BuiltKernel(kernel.name, kernel.source_package, kernel.localversion, kernel.config[:-1])
    assert kernelbuild.kernel_key(kernel) != kernelbuild.kernel_key(other)
    assert builder.kernel_paths("6.1-lockdep")["vmlinux"].parts[-3].startswith("6.1-lockdep-")
    assert samples.lockdep("6.1-lockdep") and not samples.lockdep(samples.DEFAULT_KERNEL)


def test_check_config_names_what_kconfig_dropped():
    import kernelbuild

    config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_S=\"-x\"\n"
    assert kernelbuild.check_config(config, ["CONFIG_A=y", "# CONFIG_B is not set", "CONFIG_S=\"-x\""]) == []
    wrong = kernelbuild.check_config(config, ["CONFIG_B=y", "CONFIG_C=y", "CONFIG_D=y", "# CONFIG_A is not set"])
    assert wrong == ["CONFIG_B=y (the .config has n)", "CONFIG_C=y (the .config has m)",
                     "CONFIG_D=y (the .config has nothing)", "# CONFIG_A is not set (the .config has y)"]
