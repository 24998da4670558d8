"""Check a `kd-waitfor --json` document against what the kernel itself said.

Each scenario's ``expected.json`` names its tasks and locks; the truth of a
dump or a live guest gives their pids and addresses as the guest printed them
(``kdl-truth`` lines from the module). So these checks compare kdlgdb's answer
with the kernel's own, not with another kdlgdb run.
"""
from __future__ import annotations

import re
from typing import Any

import samples

CERTAIN_TYPES = {"mutex", "rt_mutex"}  # the kernel records their owner
# A lock named by its address alone ("mutex 0xffff…", "readers of percpu_rwsem 0xffff…"), not by what it is in.
BARE = re.compile(r"(^|\bof )[a-z_]+ 0x[0-9a-f]+$")


def _rotate(seq: list[Any]) -> list[Any]:
    i = seq.index(min(seq))
    return seq[i:] + seq[:i]


def for_kernel(expected: dict[str, Any], kernel: str) -> dict[str, Any]:
    """``expected`` for one kernel (its ``"preempt_rt"`` or ``"lockdep"`` shape): ``samples.for_kernel``."""
    return samples.for_kernel(expected, kernel)


def idle_tasks(expected: dict[str, Any]) -> set[str]:
    """The scenario's threads that wait for work, on nothing (``"states"`` says I: TASK_IDLE, with or without
    TASK_FREEZABLE): in no cycle or chain, and in no list of blocked (D) tasks."""
    return {comm for comm, state in expected.get("states", {}).items() if state == "I"}


def without_wait_sources(doc: dict[str, Any]) -> dict[str, Any]:
    """``kd-waitfor --json`` without the tasks' ``wait_source`` and ``wait_evidence``, to compare the answers of two
    readers of which only one reads frame variables: gdb with its own core file or gdbstub does (the slow-path
    frame's lock argument, ``"frame"``); crash and gdb on a dump kdlgdb reads itself (no registers for gdb's frames)
    do not (``Target.frame_variables`` is None there), so their waits come from the wait lists and other records,
    which name the same locks (``waits_on`` is compared)."""
    tasks = [{k: v for k, v in task.items() if k not in ("wait_source", "wait_evidence")} for task in doc["tasks"]]
    return {**doc, "tasks": tasks}


# What a task asleep on these waits for is no lock argument of a slow path: a flush's completion, the readers a
# percpu rw-semaphore's writer waits out (kernel/framevars.py covers every other lock a task sleeps on).
NO_SLOW_PATH = ("work", "workqueue", "percpu_rwsem_readers")
# Waiters whose slow-path frame has no location for the lock at the pc it sleeps at, by kernel: the -Os
# lock-debugging 6.1 keeps percpu_rwsem_wait's `sem` only as the entry value of its caller's %rdi there.
FRAME_GAPS = {"6.1-lockdep": ("percpu_rwsem",)}


def check_wait_sources(doc: dict[str, Any], expected: dict[str, Any], truth: dict[str, Any], kernel: str) -> int:
    """Each lock waiter's lock is the truth, and every waiter asleep in a lock's slow path has it from that frame's
    lock argument (``wait_source`` "frame": `lock` of __mutex_lock, `sem` of __down_common, rwsem_down_*_slowpath,
    percpu_rwsem_wait, `lock` of the rt_mutex slow path or `rwb` of rwbase's, PREEMPT_RT's mutexes, rwsems and
    sleeping spinlocks included) with no disagreement noted; only where the DWARF has no location for it
    (FRAME_GAPS) the wait list decides. A task spinning on a CPU has its lock from the CPU's registers (on
    PREEMPT_RT the rt_mutex waiter tree), a flush from its completion, a percpu rw-semaphore's writer from the
    rcuwait. For ``kd-waitfor --json`` read by gdb with its own frames (a paging ELF, a gdbstub). Returns how many
    waiters the frame decided."""
    by_pid = {t["pid"]: t for t in doc["tasks"]}
    gaps = FRAME_GAPS.get(kernel, ())
    assert not [p for p in doc["problems"] if "slow-path frame" in p["why"]]
    frames = 0
    for comm, lock_name in expected.get("waits", {}).items():
        task = by_pid[truth["tasks"][comm]]
        assert task["waits_on"] == truth["locks"][lock_name]["address"], comm
        kind = expected["lock_types"][lock_name]
        frame = not task["on_cpu"] and kind not in NO_SLOW_PATH and kind not in gaps
        assert (task["wait_source"] == "frame") == frame, (comm, kind, task["wait_source"], task["stack"][:5])
        assert not frame or task["wait_evidence"].startswith(("lock = ", "sem = ", "rwb = ")), task["wait_evidence"]
        frames += frame
    return frames


def check_waitfor(doc: dict[str, Any], expected: dict[str, Any], truth: dict[str, Any]) -> None:
    """Assert every fact of ``expected`` (names) holds in ``doc`` (kdlgdb's JSON), via ``truth``.

    Waiting tasks are in D unless ``expected["states"]`` says otherwise (a CPU spinning on a spinlock
    is R), and idle tasks (:func:`idle_tasks`) are not listed at all (the JSON lists D tasks and tasks on
    locks); ``expected["cpus"]`` names the CPU and context (``task``, ``softirq``, ``hardirq``) of tasks
    kdlgdb must find current on a CPU; a cycle's ``"interrupt"`` is a self-deadlock through an interrupt
    whose advice names the fix and the function that took the lock.
    """
    expected = for_kernel(expected, truth.get("kernel", ""))
    certain_types = set(expected.get("certain_types", CERTAIN_TYPES))
    states = expected.get("states", {})
    pid = truth["tasks"]
    address = {name: lock["address"] for name, lock in truth["locks"].items()}
    module = expected["module"]
    tasks = {t["pid"]: t for t in doc["tasks"]}
    locks = {lk["address"]: lk for lk in doc["locks"]}

    idle = idle_tasks(expected)
    for comm in expected["tasks"]:
        if comm in idle:
            assert pid[comm] not in tasks, f"{comm} (pid {pid[comm]}) is idle, but listed: {tasks.get(pid[comm])}"
            continue
        assert pid[comm] in tasks, f"{comm} (pid {pid[comm]}) missing from tasks"
        assert tasks[pid[comm]]["comm"] == comm
    for comm, lock in expected["waits"].items():
        task = tasks[pid[comm]]
        allowed = states.get(comm, "D")  # a letter, or the letters it may be (which one depends on the boot)
        letters = allowed.split("|") if isinstance(allowed, str) else allowed
        assert task["state"] in letters, f"{comm} is {task['state']}, not {allowed}"
        assert task["waits_on"] == address[lock], f"{comm} waits on {task['waits_on']}, not {lock} {address[lock]}"
    for name, kind in expected["lock_types"].items():
        lock = locks.get(address[name])
        waiters = sorted(pid[c] for c, w in expected["waits"].items() if w == name)
        if not waiters:
            continue
        assert lock is not None, f"{name} ({address[name]}) missing from locks"
        assert lock["type"] == kind
        if name in expected.get("heap_locks", ()):  # kmalloc'd: no symbol names it, its object does
            assert lock["symbol"] is None, f"{name}: {lock}"
            for part in expected.get("lock_names", {}).get(name, ()):
                assert part in lock["name"], f"{name}: {part!r} not in {lock['name']!r}"
        else:
            assert (lock["symbol"], lock["module"]) == (name, module)
        assert sorted(lock["waiters"]) == waiters, f"{name} waiters {lock['waiters']} != {waiters}"
        holders = sorted(pid[c] for c, held in expected["holds"].items() if name in held)
        scenario_pids = set(pid.values())
        owners = sorted(o["pid"] for o in lock["owners"] if o["pid"] in scenario_pids and o["confidence"] != "stale")
        assert owners == holders, f"{name} owners {owners} != {holders}"
        if name in expected.get("owner_exited", ()):
            _check_owner_exited(doc, lock, name)
        for owner in lock["owners"]:
            if owner["pid"] in holders:
                mode = expected.get("hold_modes", {}).get(_comm(pid, owner["pid"]), {}).get(name)
                certain = (kind in certain_types or mode == "write") and name not in expected.get("inferred_locks", ())
                assert owner["confidence"] == ("certain" if certain else "inferred"), owner
    for name, holder in expected.get("held_by", {}).items():  # a holder that is not a task: a freeze
        lock = locks[address[name]]
        assert not lock["owners"] and (lock["holder"] or "").startswith(holder), f"{name}: {lock}"
        (chain,) = [c for c in doc["chains"] if c["locks"][-1] == address[name]]
        assert chain["root"] is None and holder in chain["root_reason"], chain
    want = sorted(
        (_rotate([pid[c] for c in cyc["tasks"]]), cyc["verdict"]) for cyc in expected["cycles"]
    )
    got = sorted((c["pids"], c["verdict"]) for c in doc["cycles"])
    assert got == want, f"cycles {got} != {want}"
    for cyc in expected["cycles"]:
        pids = [pid[c] for c in cyc["tasks"]]
        (found,) = [c for c in doc["cycles"] if sorted(c["pids"]) == sorted(pids)]
        for k, p in enumerate(found["pids"]):
            i = pids.index(p)
            assert found["locks"][k] == address[cyc["locks"][i]], "cycle lock order"
        if "interrupt" in cyc:
            want = cyc["interrupt"]
            assert found["interrupt"]["context"] == want["context"], found["interrupt"]
            assert found["interrupt"]["fix"] == want["fix"], found["interrupt"]
            assert found["interrupt"]["acquire"].startswith(want["caller"] + "+0x"), found["interrupt"]
            assert f"{want['fix']}()" in found["advice"] and want["caller"] + "+0x" in found["advice"], found["advice"]
        else:
            assert found.get("interrupt") is None, found
    for comm, where in expected.get("cpus", {}).items():
        ctx = tasks[pid[comm]].get("cpu_context")
        assert ctx is not None, f"{comm} has no cpu_context"
        assert (ctx["cpu"], ctx["context"]) == (where["cpu"], where["context"]), f"{comm}: {ctx}"
        assert tasks[pid[comm]]["on_cpu"] and tasks[pid[comm]]["stack"], f"{comm}: no frames on its CPU"
    for lock in doc["locks"]:  # every lock named better than by its bare address
        assert not BARE.search(lock["name"]), f"{lock['address']} is named {lock['name']!r}"
    d_state = {t["pid"] for t in doc["tasks"] if t["state"] == "D"}
    assert {pid[c] for c in expected["waits"] if states.get(c, "D") == "D"} <= d_state
    for comm in expected["waits"]:
        assert tasks[pid[comm]].get("blocked_in") is None, f"{comm} waits on a lock: no blocked_in"
    for comm in expected.get("deadlock_detected", ()):  # rt_mutex's -EDEADLK: the kernel's own verdict, cited
        evidence = tasks[pid[comm]]["wait_evidence"]
        assert "rt_mutex_handle_deadlock: parked (S)" in evidence, evidence  # after the frame's, if it has one
        assert f"rtmutex deadlock detected / [" in evidence and f"PID: {pid[comm]} at " in evidence, evidence
    _check_blocked_in(doc, expected, truth)


def _check_owner_exited(doc: dict[str, Any], lock: dict[str, Any], name: str) -> None:
    """The owner of ``lock`` exited holding it: whatever task its owner field names now (none, a new thread
    in the freed slot, or a waiter of the lock itself) is no holder, and its waiters' chain ends at
    "owner exited", with no cycle through it."""
    assert lock["owners"] and all(o["confidence"] == "stale" for o in lock["owners"]), lock["owners"]
    assert all(o["evidence"].startswith(("owner exited: ", "owner exited or slot reused: ")) for o in lock["owners"])
    (chain,) = [c for c in doc["chains"] if c["locks"][-1] == lock["address"]]
    assert chain["root"] is None and "whose recorded owner is gone (owner exited" in chain["root_reason"], chain
    assert sorted(chain["pids"] + chain["joined"]) == sorted(lock["waiters"]), (chain, lock)
    assert not any(lock["address"] in c["locks"] for c in doc["cycles"]), doc["cycles"]
    assert all(lock["address"] not in t["holds"] for t in doc["tasks"]), name


# How a chain's root_reason names each kind of blocked_in (name: "c_done [kdl_chain]").
ROOT_WORDS = {"completion": "waits (D) for completion {name} in ", "waitqueue": "waits (D) on wait queue {name} in ",
              "io": "is in I/O wait ({function}) in ", "sleep": "sleeps (D) in {function}+"}


# Where a kernel build inlines the function a root sleeps in, its caller takes its place on the stack
# (6.12-rt inlines __wait_for_common into wait_for_completion).
INLINED_INTO = {"__wait_for_common": "wait_for_completion"}


def check_dump_answer(status: int, doc: dict[str, Any], expected: dict[str, Any], dump: Any) -> None:
    """``check_waitfor`` of a whole dump's answer (``dump`` a samples.Dump), and the exit status a
    ``kdlgdb waitfor`` gives it: 1 with a cycle, else 0; the dump's release and KASLR offset; no problem."""
    check_waitfor(doc, expected, dump.truth)
    assert status == (1 if expected["cycles"] else 0)
    assert doc["release"] == samples.release(dump.kernel)
    assert int(doc["kaslr_offset"], 16) == dump.kernel_offset
    assert doc["problems"] == []


def functions(blocked_in: dict[str, Any]) -> set[str]:
    """The function a root of expected.json's ``blocked_in`` sleeps in, or the one it is inlined into."""
    return {blocked_in["function"], INLINED_INTO.get(blocked_in["function"], blocked_in["function"])}


def _check_blocked_in(doc: dict[str, Any], expected: dict[str, Any], truth: dict[str, Any]) -> None:
    """Each task of ``expected["blocked_in"]`` waits on no lock but on what the guest said (a completion
    or wait queue head at the address it printed, I/O, a sleep), and it is the root of the chain of
    the tasks waiting on the locks it holds, named so in the chain's root_reason."""
    pid = truth["tasks"]
    module = expected["module"]
    tasks = {t["pid"]: t for t in doc["tasks"]}
    for comm, want in expected.get("blocked_in", {}).items():
        task = tasks[pid[comm]]
        got = task["blocked_in"]
        assert task["waits_on"] is None and got is not None, f"{comm}: waits_on {task['waits_on']}, blocked_in {got}"
        assert got["kind"] == want["kind"] and got["function"] in functions(want), f"{comm}: {got}"
        if "object" in want:
            where = truth["locks"][want["object"]]["address"]
            assert (got["address"], got["symbol"], got["module"]) == (where, want["object"], module), f"{comm}: {got}"
        else:
            assert got["address"] is None, f"{comm}: {got}"
        waiters = sorted(pid[c] for c in _behind(expected, comm))
        (chain,) = [c for c in doc["chains"] if c["root"] == pid[comm]]
        assert sorted(chain["pids"][:-1] + chain["joined"]) == waiters, f"chain of {comm}: {chain}"
        name = f"{want.get('object')} [{module}]"
        assert ROOT_WORDS[want["kind"]].format(name=name, function=got["function"]) in chain["root_reason"], chain


def _behind(expected: dict[str, Any], root: str) -> set[str]:
    """Every task whose waits lead to ``root`` through the locks (and work items) each holder holds."""
    found: set[str] = set()
    frontier = {root}
    while frontier:
        held = {lock for c in frontier for lock in expected["holds"].get(c, [])}
        frontier = {c for c, lock in expected["waits"].items() if lock in held} - found - {root}
        found |= frontier
    return found


def _comm(pid: dict[str, int], p: int) -> str:
    return next(c for c, q in pid.items() if q == p)


# What kdlgdb calls each kind of lock the kdl_scale module reports, and whether the kernel records its holder.
SCALE_KINDS = {"mutex": ("mutex", True), "rwsem-write": ("rwsem", True),
               "semaphore": ("semaphore", False), "rwsem-read": ("rwsem", False)}


def check_scale(doc: dict[str, Any], truth: dict[str, Any]) -> None:
    """Assert kdlgdb's answer on a kdl_scale dump is what the guest printed (its compact truth).

    The three cycles exactly (members in order, their locks, the verdict, how many tasks are blocked
    behind each) and no other; every chain by its root, its blocked tasks and its locks; the number of
    blocked tasks and of locks of each kind; one holder per lock, certain where the kernel records it.
    """
    counts = truth["counts"]
    want_cycles = []
    for cycle in truth["cycles"].values():
        members = cycle["members"]
        recorded = all(SCALE_KINDS[m["kind"]][1] for m in members)
        want_cycles.append((_rotate_with([m["pid"] for m in members], [m["address"] for m in members]),
                            "deadlock" if recorded else "probable", cycle["behind"]))
    got_cycles = [((c["pids"], c["locks"]), c["verdict"], len(c["blocked_behind"])) for c in doc["cycles"]]
    assert sorted(got_cycles) == sorted(want_cycles), f"cycles {got_cycles} != {want_cycles}"

    waits_on = {t["pid"]: t["waits_on"] for t in doc["tasks"]}
    got_chains = sorted(
        (c["root"], len(c["pids"]) - 1 + len(c["joined"]), len({waits_on[p] for p in c["pids"][:-1] + c["joined"]}))
        for c in doc["chains"])
    want_chains = sorted((c["root"], c["blocked"], c["locks"]) for c in truth["chains"])
    assert got_chains == want_chains, f"chains {got_chains[:5]}... != {want_chains[:5]}..."

    assert sum(w is not None for w in waits_on.values()) == counts["blocked"]
    assert len(doc["locks"]) == counts["locks"]
    want_kinds: dict[tuple[str, str], int] = {}
    for kind, (lock_type, recorded) in SCALE_KINDS.items():
        key = (lock_type, "certain" if recorded else "inferred")
        want_kinds[key] = want_kinds.get(key, 0) + counts[f"locks-{kind}"]
    got_kinds: dict[tuple[str, str], int] = {}
    for lock in doc["locks"]:
        assert len(lock["owners"]) == 1, f"{lock['name']} has owners {lock['owners']}"
        key = (lock["type"], lock["owners"][0]["confidence"])
        got_kinds[key] = got_kinds.get(key, 0) + 1
    assert got_kinds == {k: v for k, v in want_kinds.items() if v}
    assert doc["problems"] == []


def _rotate_with(pids: list[int], locks: list[str]) -> tuple[list[int], list[str]]:
    """A cycle's pids and locks, rotated together to start at the smallest pid (as kdlgdb prints it)."""
    k = pids.index(min(pids))
    return pids[k:] + pids[:k], locks[k:] + locks[:k]
