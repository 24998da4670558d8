"""Real gdb on real dumps of Debian's kernel: every scenario, KASLR on and off.

The `kdlgdb` command runs its own gdb; the commands a user types in gdb run in a gdb kept open
for the dump (``realgdb.shared_gdb``, kdlgdb's caches and settings reset before each test's commands).
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

import matrix
import samples
from expectations import check_dump_answer, check_wait_sources, idle_tasks
from realgdb import EXTENSION, gdb, kd_waitfor_json, kdlgdb, shared_gdb, waitfor_json

pytestmark = pytest.mark.realkernel

CASES = [(s, k) for s in samples.SCENARIOS for k in (False, True)]


# The command on each scenario and KASLR setting of every kernel; test_formats checks the same facts on
# every scenario, KASLR on and off, of the default kernel (its reference answer, the paging ELF in gdb).
@matrix.over("scenario,kaslr", CASES, default_product=False)
def test_kdlgdb_waitfor_on_dump(real_kernel: str, scenario: str, kaslr: bool) -> None:
    dump = samples.ensure_dump(scenario, kaslr, real_kernel)
    status, doc = waitfor_json(dump.vmlinux, dump.path)
    check_dump_answer(status, doc, samples.expected(scenario, real_kernel), dump)
    assert doc["release"] == samples.release(real_kernel)


def test_gdb_session_commands(real_kernel: str) -> None:
    """What a user types in gdb after `source gdbext/kdlgdb.py`, on the KASLR ABBA dump."""
    dump = samples.ensure_dump("kdl_abba", True, real_kernel)
    a, b = dump.truth["tasks"]["kdl_a"], dump.truth["tasks"]["kdl_b"]
    done = shared_gdb(dump.vmlinux, dump.path, "kd-tasks -s D", f"kd-bt {a}", "kd-locks", "kd-waitfor", "kd-waitfor -p 1", "help kd-waitfor")
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    rows = [line.split() for line in out.splitlines() if line.strip().endswith(("kdl_a", "kdl_b")) and line.split()[0].isdigit()]
    assert sorted((int(r[0]), r[3], r[-1]) for r in rows[:2]) == [(a, "D", "kdl_a"), (b, "D", "kdl_b")]
    assert f'PID: {a}' in out and "kdl_a_fn+" in out and "[kdl_abba]" in out and "__down_common+" in out
    assert re.search(r"down\+0x\w+ +kernel/locking/semaphore\.c:\d+\n", out)  # looked up after kd-tasks ran
    sem1 = dump.truth["locks"]["sem1"]["address"]
    assert f"semaphore {sem1}  sem1 [kdl_abba]" in out
    assert f"PROBABLE DEADLOCK: \"kdl_a\" (pid {a}) and \"kdl_b\" (pid {b})" in out
    assert "take sem1 before sem2 [kdl_abba]" in out
    assert "usage: kd-waitfor" in out  # help text from the argparse declaration


@pytest.mark.parametrize("real_kernel", [samples.DEFAULT_KERNEL], indirect=True)  # the test helper: one kernel
def test_a_shared_gdb_answers_as_a_fresh_gdb(real_kernel: str) -> None:
    """The helper the other tests use: a gdb kept open gives what a new gdb gives for the same commands (start-up
    messages, both streams, the exit status), also after another test's commands, settings and kd-open."""
    dump = samples.ensure_dump("kdl_mutex", False, real_kernel)
    other = samples.ensure_dump("kdl_abba", True, real_kernel, kind="kdump")
    commands = ("kd-tasks -s D", "kd-bt 99999", "set kd-color on", "kd-waitfor", "kd-locks --json", "kd-tasks --bogus")
    fresh = gdb(dump.vmlinux, dump.path, *commands)
    assert fresh.returncode == 0 and "\x1b[" in fresh.stdout and "kd-bt: no task" in fresh.stderr
    for _ in range(2):
        again = shared_gdb(dump.vmlinux, dump.path, *commands)
        assert (again.stdout, again.stderr, again.returncode) == (fresh.stdout, fresh.stderr, fresh.returncode)
    failed = gdb(dump.vmlinux, dump.path, "kd-tasks -s D", "print no_such_symbol")  # gdb's own error, last
    assert failed.returncode == 1 and 'No symbol "no_such_symbol" in current context.' in failed.stderr
    again = shared_gdb(dump.vmlinux, dump.path, "kd-tasks -s D", "print no_such_symbol")
    assert (again.stdout, again.stderr, again.returncode) == (failed.stdout, failed.stderr, failed.returncode)
    opened = shared_gdb(dump.vmlinux, None, f"kd-open {other.path}", "set kd-debug on", "kd-waitfor")
    assert "kdl_a" in opened.stdout
    after = shared_gdb(dump.vmlinux, None, "kd-waitfor", "show kd-debug")
    assert gdb(dump.vmlinux, None, "kd-waitfor", "show kd-debug").stderr == after.stderr
    assert "kd-waitfor: no kernel to read" in after.stderr and "kdl_a" not in after.stdout  # kd-open's dump is closed


def test_usage_error_is_one_line(real_kernel: str) -> None:
    dump = samples.ensure_dump("kdl_abba", False, real_kernel)
    done = shared_gdb(dump.vmlinux, dump.path, "kd-tasks --bogus", "kd-bt 99999", "kd-tasks -s D")
    errors = [line for line in done.stderr.splitlines() if line.startswith("kd-")]
    assert errors[0].startswith("kd-tasks: unrecognized arguments: --bogus; usage: kd-tasks")
    assert errors[1] == "kd-bt: no task with pid or address 99999"
    assert "Traceback" not in done.stderr
    assert "kdl_a" in done.stdout  # gdb and kdlgdb go on working after the errors


def test_symbols_already_relocated_by_the_user(real_kernel: str) -> None:
    """`symbol-file VMLINUX -o OFFSET` first (so gdb's own `p` works): kdlgdb must not add KASLR twice."""
    dump = samples.ensure_dump("kdl_mutex", True, real_kernel)
    offset = f"{dump.kernel_offset:#x}"
    done = subprocess.run(
        ["gdb", "-nx", "-q", "-batch", "-ex", f"symbol-file {dump.vmlinux} -o {offset}", "-ex", f"core-file {dump.path}",
         "-ex", f"source {EXTENSION}", "-ex", "kd-waitfor", "-ex", "p init_task.comm"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    m1, m2 = dump.truth["tasks"]["kdl_m1"], dump.truth["tasks"]["kdl_m2"]
    assert f"DEADLOCK: \"kdl_m1\" (pid {m1}) and \"kdl_m2\" (pid {m2}) on m1 [kdl_mutex], m2 [kdl_mutex]" in done.stdout
    assert '= "swapper/0' in done.stdout


def test_colour_and_pid_filter(real_kernel: str) -> None:
    dump = samples.ensure_dump("kdl_mutex", False, real_kernel)
    m3 = dump.truth["tasks"]["kdl_m3"]
    plain = shared_gdb(dump.vmlinux, dump.path, f"kd-waitfor -p {m3}").stdout
    assert f"\"kdl_m3\" (pid {m3}) --waits on--> m1 [kdl_mutex]" in plain and "\x1b[" not in plain
    coloured = shared_gdb(dump.vmlinux, dump.path, "set kd-color on", "kd-waitfor").stdout
    assert "\x1b[" in coloured and "DEADLOCK" in coloured
    nothing = shared_gdb(dump.vmlinux, dump.path, "kd-waitfor -p 1").stdout  # colour off again: a fresh start
    assert "DEADLOCK" not in nothing


def test_stacks_grouped_and_crash_state_names(real_kernel: str) -> None:
    """kdl_mutex: kd-tasks -s UN lists what -s D lists, with each task_struct's address; kd-bt -g groups the
    three waiters' stacks (their thread functions differ: three groups of one, each through the mutex slow
    path); kd-waitfor --stacks prints the stack of each of the three after the graph."""
    dump = samples.ensure_dump("kdl_mutex", False, real_kernel)
    pids = {c: dump.truth["tasks"][c] for c in ("kdl_m1", "kdl_m2", "kdl_m3")}
    un, d, groups, stacks = (shared_gdb(dump.vmlinux, dump.path, c).stdout
                             for c in ("kd-tasks -s UN", "kd-tasks -s D", "kd-bt -g UN", "kd-waitfor --stacks"))
    assert un == d and all(re.search(rf"^\s+{p}\s+{p}\s+[0-9a-f]{{16}}\s+D\s", un, re.M) for p in pids.values()), un
    assert re.search(r"^3 tasks in 3 distinct stacks$", groups, re.M), groups
    for comm, pid in pids.items():
        assert f"1 task [D]: \"{comm}\" (pid {pid})" in groups and f"{comm}_fn [kdl_mutex]" in groups
    assert groups.count("mutex_lock") >= 3 or groups.count("rt_mutex") >= 3, groups
    assert stacks.index("DEADLOCK") < min(stacks.index(f"PID: {p} ") for p in pids.values()), stacks


def test_idle_kthreads_read_I_and_are_not_blocked(real_kernel: str, tmp_path) -> None:
    """kdl_control's two threads that wait for work: in TASK_IDLE, and in TASK_IDLE | TASK_FREEZABLE as nfsd's
    threads do (0x2402). Both read I, as the guest's own /proc said, and are in no list of blocked tasks:
    kd-tasks -s D, kd-bt -g, kd-waitfor's D count and NOT DECODED, the report's tasks, D groups and hung
    tasks. A state compared with TASK_IDLE exactly reads the freezable one as D, and fails here."""
    dump = samples.ensure_dump("kdl_control", False, real_kernel)
    exp = samples.expected("kdl_control", real_kernel)
    idle = {comm: dump.truth["tasks"][comm] for comm in idle_tasks(exp)}
    assert set(idle) == {"kdl_c_idle", "kdl_c_frzidle"}
    assert all(dump.truth["threads"][comm]["state"] == "I" for comm in idle)  # the kernel's own letter
    report = tmp_path / "report.json"
    listed, d_tasks, groups, graph, wrote = (shared_gdb(dump.vmlinux, dump.path, c).stdout for c in (
        "kd-tasks kdl_c_", "kd-tasks -s D", "kd-bt -g", "kd-waitfor", f"kd-report -o {report}"))
    assert f"wrote {report}" in wrote
    for comm, pid in idle.items():
        assert re.search(rf"^\s+{pid}\s+{pid}\s+[0-9a-f]{{16}}\s+I\s.*\s{comm}$", listed, re.M), listed
        assert comm not in d_tasks + groups + graph
    blocked = len(exp["tasks"]) - len(idle)  # the mutex's owner and its two waiters, all in the chain
    assert f"D tasks: {blocked}, {blocked} in the graph above, 0 not decoded" in graph, graph
    doc = json.loads(report.read_text())
    pids = set(idle.values())
    assert not pids & {t["pid"] for t in doc["tasks"]}  # the JSON lists D tasks and tasks on locks
    assert not pids & {p for group in doc["d_state_groups"] for p in group["pids"]}
    assert not pids & {h["pid"] for h in doc["kernel_log"]["hung_tasks"]}


def test_spinning_cpus_in_gdb(real_kernel: str) -> None:
    """kdl_spin: each CPU's line names what it spins on, who holds that, and what it holds; kd-bt shows
    the on-CPU stacks from the CPUs' registers (GS base = the CPU's per-cpu offset)."""
    dump = samples.ensure_dump("kdl_spin", True, real_kernel)
    a, b = dump.truth["tasks"]["kdl_spin_a"], dump.truth["tasks"]["kdl_spin_b"]
    done = shared_gdb(dump.vmlinux, dump.path, "kd-waitfor", "kd-tasks -s R", "kd-bt kdl_spin_a")
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    if samples.preempt_rt(real_kernel):
        # spinlock_t is an rt_mutex on PREEMPT_RT: each lock records its owner. Both tasks sleep, or (in some
        # boots) still spin adaptively on their CPUs while the owner runs (rtmutex_spin_on_owner), queued all the same.
        assert f"DEADLOCK: \"kdl_spin_a\" (pid {a}) and \"kdl_spin_b\" (pid {b}) on lock_a [kdl_spin], lock_b [kdl_spin]" in out
        assert f"\"kdl_spin_a\" (pid {a}) --waits on--> lock_b [kdl_spin] --held by--> \"kdl_spin_b\" (pid {b})" in out
        assert f"\"kdl_spin_b\" (pid {b}) --waits on--> lock_a [kdl_spin] --held by--> \"kdl_spin_a\" (pid {a})" in out
        assert "PROBABLE" not in out
        if "spins on" in out:
            assert (f"CPU 0: \"kdl_spin_a\" (pid {a}) spins on lock_b [kdl_spin] (held by \"kdl_spin_b\" (pid {b}), the task on "
                    "CPU 1) while holding lock_a [kdl_spin]") in out
        frames = re.findall(r"^ *#\d+ \[\w+\] (\S+)", out.split(f"PID: {a} ")[1], re.M)
        assert any(f.startswith("rt_spin_lock+") for f in frames) and any(f.startswith("kdl_spin_a_fn+") for f in frames)
        return
    assert (f"CPU 0: \"kdl_spin_a\" (pid {a}) spins on lock_b [kdl_spin] (held by \"kdl_spin_b\" (pid {b}), the task on CPU 1) "
            "while holding lock_a [kdl_spin]") in out
    assert (f"CPU 1: \"kdl_spin_b\" (pid {b}) spins on lock_a [kdl_spin] (held by \"kdl_spin_a\" (pid {a}), the task on CPU 0) "
            "while holding lock_b [kdl_spin]") in out
    assert re.search(rf"^>\s+{a}\s+{a}\s+[0-9a-f]+\s+R\s+0\s", out, re.M) and re.search(rf"^>\s+{b}\s+{b}\s+[0-9a-f]+\s+R\s+1\s", out, re.M)
    frames = re.findall(r"^ *#\d+ \[\w+\] (\S+)", out.split(f"PID: {a} ")[1], re.M)
    assert frames[-1].startswith(("ret_from_fork", "ret_from_fork_asm"))
    # The dump may catch the CPU in an interrupt (the timer tick) on top of the spin: its frames come first.
    spin = [i for i, f in enumerate(frames) if f.startswith(("queued_spin_lock_slowpath+", "native_queued_spin_lock_slowpath+"))]
    assert spin, frames
    frames = frames[spin[0]:]
    if samples.lockdep(real_kernel):
        # DEBUG_SPINLOCK records both owners (a certain DEADLOCK); -Os: _raw_spin_lock tail-calls do_raw_spin_lock.
        assert f"DEADLOCK: \"kdl_spin_a\" (pid {a}) and \"kdl_spin_b\" (pid {b})" in out and "PROBABLE" not in out
        assert frames[0].startswith("queued_spin_lock_slowpath+") and frames[1].startswith("do_raw_spin_lock+")
        assert frames[2].startswith("kdl_spin_a_fn+")
        return
    assert f"PROBABLE DEADLOCK: \"kdl_spin_a\" (pid {a}) and \"kdl_spin_b\" (pid {b})" in out
    assert frames[0].startswith("native_queued_spin_lock_slowpath+") and frames[1].startswith("_raw_spin_lock+")
    assert frames[2].startswith("kdl_spin_a_fn+")


def test_irq_self_deadlock_names_the_call(real_kernel: str) -> None:
    """kdl_irq: the advice names the spin_lock() call of kdl_irq_fn; gdb's own disassembly of that
    address in the dump is a call to _raw_spin_lock with l's address loaded before it."""
    dump = samples.ensure_dump("kdl_irq", False, real_kernel)
    if samples.preempt_rt(real_kernel):
        # The timer callback runs in the ktimers/0 thread on PREEMPT_RT, and sleeps on l behind the running
        # kdl_irq: a chain whose root runs, no cycle and no interrupt advice.
        irq, timer = dump.truth["tasks"]["kdl_irq"], dump.truth["tasks"]["ktimers/0"]
        out = shared_gdb(dump.vmlinux, dump.path, "kd-waitfor").stdout
        assert f"\"ktimers/0\" (pid {timer}) --waits on--> l [kdl_irq] --held by--> \"kdl_irq\" (pid {irq})" in out
        assert re.search(rf"root: \"kdl_irq\" \(pid {irq}\) is running on CPU 0 .*while holding .*l \[kdl_irq\]", out), out
        assert "DEADLOCK" not in out and "spin_lock_bh" not in out
        return
    _, doc = kd_waitfor_json(dump.vmlinux, dump.path)
    (cycle,) = doc["cycles"]
    site = re.match(r"kdl_irq_fn\+(0x[0-9a-f]+) \[kdl_irq\] \((0x[0-9a-f]+)\) took it with _raw_spin_lock\(\)",
                    cycle["interrupt"]["acquire"])
    assert site, cycle["interrupt"]
    call = int(site.group(2), 16)
    base = int(dump.truth["module_base"], 16)
    assert base < call < base + dump.truth["module_size"]
    start = call - int(site.group(1), 16)  # kdl_irq_fn itself
    code = shared_gdb(dump.vmlinux, dump.path, f"x/{int(site.group(1), 16)}i {start:#x}", f"x/i {call:#x}").stdout
    assert re.search(rf"^\s*{call:#x}:\s+call\s+0x[0-9a-f]+ <_raw_spin_lock>", code, re.M), code
    lock = int(dump.truth["locks"]["l"]["address"], 16)
    assert re.search(rf"(mov\s+\${lock:#x},%rdi|lea\s+.*\(%rip\),%rdi\s+# {lock:#x})$", code, re.M), code
    assert "spin_lock_bh()" in cycle["advice"] and "softirq handler on CPU 0" in cycle["advice"]


def test_lockdep_held_locks_and_reports(real_kernel: str) -> None:
    """On a kernel with lockdep: kd-held lists each task's held_locks as the kernel itself printed them (the map
    addresses and classes of its own report in the console log), owners carry "lockdep held_locks", and the
    kernel's circular-dependency report is tied to the cycle it explains."""
    if not samples.lockdep(real_kernel):
        pytest.skip(f"{real_kernel} has no lockdep")
    dump = samples.ensure_dump("kdl_mutex", True, real_kernel)
    console = dump.console_log.read_text()
    printed = dict(re.findall(r"\] (?:\s*#\d+: )?([0-9a-f]{16}) \((m[12])\)\{", console))  # map -> class
    assert set(printed.values()) == {"m1", "m2"}, console
    done = gdb(dump.vmlinux, dump.path, "kd-held", "kd-held --json", "kd-waitfor")
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    pid = dump.truth["tasks"]
    held = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^ #\d+: ([0-9a-f]{16}) \((\w+)\), at: (\S+)", out, re.M)}
    for address, name in printed.items():
        assert held[address][0] == name, (address, held)
    assert f"lock held by kdl_m1/{pid['kdl_m1']}:" in out or f"locks held by kdl_m1/{pid['kdl_m1']}:" in out
    doc = json.loads(out[out.index("{"):out.index("\n}\n") + 2])
    by_pid = {t["pid"]: t for t in doc["tasks"]}
    m1 = dump.truth["locks"]["m1"]["address"]
    first = by_pid[pid["kdl_m1"]]["held"][0]
    assert (first["class"], first["lock"], first["mode"]) == ("m1", m1, "exclusive")
    assert first["acquired_at"].startswith("kdl_m1_fn+") and first["acquired_at"].endswith("[kdl_mutex]")
    assert doc["lockdep"] == {"on": False}  # its report turned it off
    _, wf = waitfor_json(dump.vmlinux, dump.path)
    owners = {lk["symbol"]: lk["owners"] for lk in wf["locks"]}
    assert all("lockdep held_locks: " in o["evidence"] and o["confidence"] == "certain" for o in owners["m1"] + owners["m2"])
    (report,) = wf["lockdep_reports"]
    reporter = re.search(r"\] (kdl_m[12])/(\d+) is trying to acquire lock:", console)
    assert (report["kind"], report["comm"], report["pid"], report["cycle"]) == (
        "circular", reporter.group(1), int(reporter.group(2)), 0)
    assert {lk["name"] for lk in report["locks"]} == {"m1", "m2"} and wf["lockdep_turned_off"] is True
    assert "possible circular locking dependency detected" in out and ": this is the deadlock above" in out
    # The report: its own section, the report tied to deadlock 1, in text and in JSON.
    report = kdlgdb("report", str(dump.vmlinux), str(dump.path), "--format", "txt", "-o", "-")
    section = report.stdout.split("== lockdep's reports ==")[1].split("==")[0]
    assert "possible circular locking dependency detected" in section and ": this is deadlock 1" in section


def test_heap_locks_named_by_their_objects(real_kernel: str) -> None:
    """kdl_inode: each i_rwsem is named by the struct inode the module printed (its address, inode number, the
    filesystem and the slab cache ext2's inodes live in: ext4's), and the driver struct's mutex by the kmalloc
    object the module printed, its offset, and the module variable that points to it."""
    dump = samples.ensure_dump("kdl_inode", True, real_kernel)
    console = dump.console_log.read_text()
    printed = re.search(r"kdl-info inodes dir ([0-9a-f]+) ino (\d+) file ([0-9a-f]+) ino (\d+)", console)
    obj = re.search(r"kdl-info object kdl_ino_dev ([0-9a-f]+) size (\d+)", console)
    assert printed and obj, console[-2000:]
    _, doc = kd_waitfor_json(dump.vmlinux, dump.path)
    locks = {lk["address"]: lk for lk in doc["locks"]}
    for lock, inode, ino in (("i_rwsem_dir", printed.group(1), printed.group(2)), ("i_rwsem_file", printed.group(3), printed.group(4))):
        naming = locks[dump.truth["locks"][lock]["address"]]["naming"]
        assert (naming["kind"], naming["type"], naming["member"], naming["cache"]) == ("heap", "struct inode", "i_rwsem", "ext4_inode_cache")
        assert int(naming["container"], 16) == int(inode, 16), naming
        assert naming["details"]["ino"] == int(ino) and naming["details"]["filesystem"] == "ext2 ram0", naming
        assert naming["text"] == f"i_rwsem of struct inode {naming['container']} (ext2 ram0, ino {ino}, ext4_inode_cache)"
    dev = locks[dump.truth["locks"]["dev_lock"]["address"]]
    naming = dev["naming"]
    start, size = int(obj.group(1), 16), int(obj.group(2))
    assert int(naming["object"], 16) == start and naming["offset"] == int(dev["address"], 16) - start == 8, naming
    cache_size = int(naming["cache"].removeprefix("kmalloc-").replace("k", "000"))
    assert naming["cache"].startswith("kmalloc-") and size <= cache_size < 2 * size + 64, naming
    assert naming["details"] == {"pointer": "kdl_ino_dev [kdl_inode]"}
    assert dev["name"] == f"{naming['cache']} object {start:#x}+0x8 (pointed to by kdl_ino_dev [kdl_inode])"


def test_frame_variables_name_each_waiters_lock(real_kernel: str) -> None:
    """Every lock waiter of every scenario (KASLR on): the lock it waits on is the guest's own truth, and every
    waiter asleep in a lock's slow path has it from that frame's lock argument (expectations.check_wait_sources)."""
    frames = 0
    for scenario in samples.SCENARIOS:
        dump = samples.ensure_dump(scenario, True, real_kernel)
        _, doc = kd_waitfor_json(dump.vmlinux, dump.path)
        frames += check_wait_sources(doc, samples.expected(scenario, real_kernel), dump.truth, real_kernel)
    assert frames >= 30


@pytest.mark.parametrize("real_kernel", [samples.DEFAULT_KERNEL], indirect=True)
def test_frame_variables_beside_kd_task(real_kernel: str) -> None:
    """With gdb showing a task (kd-task's unwinder on), the analysis still reads each waiter's frame, and gdb
    shows the same task after it; in symbols relocated by the user (`symbol-file -o`) as in static ones."""
    sources = ("python from kdlgdb.frontends import gdb as f; "
               "print('@@', sorted((t.pid, t.wait_source) for t in f.snapshot().tasks if t.waits_on))")

    def want(dump: samples.Dump) -> str:
        return f"@@ {sorted((dump.truth['tasks'][c], 'frame') for c in ('kdl_m1', 'kdl_m2', 'kdl_m3'))}"

    plain = samples.ensure_dump("kdl_mutex", False, real_kernel)  # KASLR off: kd-task's frames have gdb's names
    done = shared_gdb(plain.vmlinux, plain.path, f"kd-task {plain.truth['tasks']['kdl_m1']}", "bt 4", sources, "bt 4")
    assert want(plain) in done.stdout, done.stdout + done.stderr
    before, after = done.stdout.split("gdb shows task", 1)[1].split("\n", 1)[1].split(want(plain))
    assert before.strip() == after.strip() and before.count("\n#") == 3, done.stdout  # kd-task's frames, as before
    dump = samples.ensure_dump("kdl_mutex", True, real_kernel)
    relocated = subprocess.run(
        ["gdb", "-nx", "-q", "-batch", "-ex", f"symbol-file {dump.vmlinux} -o {dump.kernel_offset:#x}",
         "-ex", f"core-file {dump.path}", "-ex", f"source {EXTENSION}", "-ex", sources],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert want(dump) in relocated.stdout, relocated.stdout + relocated.stderr
