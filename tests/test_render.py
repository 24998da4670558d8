"""Tests for kdlgdb.render (text, JSON, colour) on hand-built snapshots."""
from __future__ import annotations

import re

import json

import pytest

from kdlgdb.analysis.graph import WaitForGraph
from kdlgdb.model import Frame, Lock, Owner, Problem, Snapshot, Task
from kdlgdb.render.color import paint
from kdlgdb.render.json import tasks_json, waitfor_json
from kdlgdb.render.text import format_last_ran, render_bt, render_locks, render_tasks, render_waitfor

ESC = "\x1b["
A, B, C, D, E, S = (0xFFFF888003A1C000 + k * 0x4000 for k in range(6))
SEM1, SEM2, MC = 0xFFFFFFFFC020E020, 0xFFFFFFFFC020E060, 0xFFFFFFFFC0300040

SLEEP = [
    Frame(pc=0xFFFFFFFF81C5E7A5, symbol="__schedule", offset=0x2C5, sp=0xFFFFC90000123E58),
    Frame(pc=0xFFFFFFFF81C5ECFD, symbol="schedule", offset=0x5D, sp=0xFFFFC90000123EB0),
    Frame(pc=0xFFFFFFFF81C64B25, symbol="schedule_timeout", offset=0x95, sp=0xFFFFC90000123EC8),
    Frame(pc=0xFFFFFFFF8116A5BD, symbol="msleep", offset=0x2D, sp=0xFFFFC90000123EE0),
    Frame(pc=0xFFFFFFFFC0300123, symbol="holder_fn", offset=0x43, module="kdl_control", sp=0xFFFFC90000123EF0),
]


def abba(confidence: str = "certain", problems: bool = True) -> Snapshot:
    """kdl_a (91) holds sem1, wants sem2; kdl_b (92) holds sem2, wants sem1; kdl_c (93) waits on sem1.

    kdl_d (94) sleeps holding mc, which kdl_e (95) waits on; sh (100) is an unrelated sleeper.
    """
    tasks = [
        Task(B, 92, 92, "kdl_b", "D", 1, last_ran_ns=12_300_000_000, waits_on=SEM1, wait_evidence="down frame"),
        Task(A, 91, 91, "kdl_a", "D", 0, last_ran_ns=12_400_000_000, waits_on=SEM2, frames=SLEEP[:2]),
        Task(C, 93, 93, "kdl_c", "D", 1, waits_on=SEM1),
        Task(D, 94, 94, "kdl_d", "D", 0, frames=SLEEP),
        Task(E, 95, 95, "kdl_e", "D", 1, waits_on=MC),
        Task(S, 100, 100, "sh", "S", 1, on_cpu=True, last_ran_ns=5_000_000),
    ]
    locks = [
        Lock(SEM2, "semaphore", "sem2", "kdl_abba", [Owner(B, confidence, "sem2 above down() in kdl_b")], [A]),
        Lock(SEM1, "semaphore", "sem1", "kdl_abba", [Owner(A, confidence, "sem1 above down() in kdl_a")], [B, C],
             details={"count": 0, "wait_list": 0xFFFFFFFFC020E028}),
        Lock(MC, "mutex", "mc", "kdl_control", [Owner(D, "certain", "mutex.owner")], [E]),
    ]
    problem = [Problem("task", "0xffff888003a00000", "unreadable stack")] if problems else []
    return Snapshot(release="6.1.0-kdl", kaslr_offset=0x1E000000, tasks=tasks, locks=locks, problems=problem)


# -- colour --------------------------------------------------------------------

def test_paint():
    assert paint("sem1", "lock", False) == "sem1"
    assert paint("sem1", "lock", True) == "\x1b[36msem1\x1b[39;49;00m"
    assert paint("DEADLOCK:", "deadlock", True) == "\x1b[01m\x1b[31mDEADLOCK:\x1b[39;49;00m"
    with pytest.raises(KeyError):
        paint("x", "no-such-style", True)


# -- tasks and backtraces ------------------------------------------------------

def test_format_last_ran():
    assert [format_last_ran(v) for v in (None, 5_000_000, 12_345_000_000)] == ["-", "5ms", "12.3s"]


def test_render_tasks():
    snap = abba()
    text = render_tasks(snap, [snap.tasks[1], snap.tasks[0], snap.tasks[5]])
    assert text.splitlines() == [
        "      PID    TGID  TASK              ST      CPU    LAST-RAN  COMM",
        "       91      91  ffff888003a1c000  D         0       12.4s  kdl_a",
        "       92      92  ffff888003a20000  D         1       12.3s  kdl_b",
        ">     100     100  ffff888003a30000  S         1         5ms  sh",
    ]


def test_kd_tasks_takes_crash_state_names_and_times():
    """kd-tasks -s takes ps letters and crash's names (UN is D), an unknown state is an error; -t keeps the tasks
    that last ran at least that long ago, -l puts the longest first."""
    from kdlgdb.frontends import commands

    snap = abba()

    def pids(*argv: str) -> list[int]:
        return [t.pid for t in commands.select_tasks(snap, commands.parse("kd-tasks", list(argv)))]

    d_tasks = [t.pid for t in snap.tasks if t.state == "D"]
    assert d_tasks and pids("-s", "UN") == pids("-s", "D") == d_tasks
    assert pids("-s", "UN,IN") == pids("-s", "DS") == [t.pid for t in snap.tasks if t.state in "DS"]
    for bad in ("XY", "WA", "un"):
        with pytest.raises(commands.UsageError, match=f"unknown state '{bad}'"):
            pids("-s", bad)
    slow = [t for t in snap.tasks if t.last_ran_ns is not None and t.last_ran_ns >= 12.35e9]
    assert slow and pids("-t", "12.35") == [t.pid for t in slow] and 100 not in pids("-t", "1")
    longest = pids("-l", "-s", "D")
    ran = {t.pid: t.last_ran_ns for t in snap.tasks}
    assert longest[0] == 91 and [ran[p] for p in longest] == sorted((ran[p] for p in longest), key=lambda v: -(v or -1))


def test_render_bt():
    snap = abba()
    lines = render_bt(snap, snap.tasks[3]).splitlines()
    assert lines[0] == 'PID: 94  TASK: 0xffff888003a28000  CPU: 0  COMMAND: "kdl_d"  STATE: D'
    assert lines[1] == " #0 [ffffc90000123e58] __schedule+0x2c5"
    assert lines[5] == " #4 [ffffc90000123ef0] holder_fn+0x43 [kdl_control]"
    assert len(lines) == 6
    assert render_bt(snap, snap.tasks[2]).splitlines()[1:] == ["    (no stack frames)"]


# -- locks ---------------------------------------------------------------------

def test_render_locks():
    snap = abba()
    graph = WaitForGraph(snap)
    text = render_locks(snap, graph)
    blocks = text.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "semaphore 0xffffffffc020e020  sem1 [kdl_abba]",
        "semaphore 0xffffffffc020e060  sem2 [kdl_abba]",
        "mutex 0xffffffffc0300040  mc [kdl_control]",
    ]
    assert blocks[0].splitlines()[1:] == [
        "  owners:",
        "      PID  COMM    CONFIDENCE    MODE       EVIDENCE",
        "       91  kdl_a   certain       exclusive  sem1 above down() in kdl_a",
        "  waiters:",
        "      PID  COMM",
        "       92  kdl_b",
        "       93  kdl_c",
        "  details: count=0, wait_list=0xffffffffc020e028",
    ]
    assert ESC not in text
    assert ESC in render_locks(snap, graph, color=True)


def test_render_locks_without_owner_or_locks():
    snap = Snapshot(tasks=[Task(A, 1, 1, "t", "D", 0, waits_on=SEM1)], locks=[Lock(SEM1, "semaphore")])
    assert render_locks(snap, WaitForGraph(snap)).splitlines()[:2] == [
        "semaphore 0xffffffffc020e020", "  owners: none known"]
    empty = Snapshot()
    assert render_locks(empty, WaitForGraph(empty)) == "no locks with waiters were found"


# -- the wait-for report -------------------------------------------------------

ABBA_REPORT = """\
DEADLOCK: "kdl_a" (pid 91) and "kdl_b" (pid 92) on sem1 [kdl_abba], sem2 [kdl_abba]
  "kdl_a" (pid 91) --waits on--> sem2 [kdl_abba] --held by--> "kdl_b" (pid 92)
  "kdl_b" (pid 92) --waits on--> sem1 [kdl_abba] --held by--> "kdl_a" (pid 91)
  "kdl_a" (pid 91): holds sem1 [kdl_abba]; wants sem2 [kdl_abba]
  "kdl_b" (pid 92): holds sem2 [kdl_abba]; wants sem1 [kdl_abba]
  blocked behind it: 1 task
    "kdl_c" (pid 93) --waits on--> sem1 [kdl_abba] --held by--> "kdl_a" (pid 91)
  advice: take sem1 before sem2 [kdl_abba]: "kdl_b" (pid 92) holds sem2 and then takes sem1

CHAIN: 1 task blocked behind "kdl_d" (pid 94)
  "kdl_e" (pid 95) --waits on--> mc [kdl_control] --held by--> "kdl_d" (pid 94)
  root: "kdl_d" (pid 94) sleeps (D) in msleep+0x2d while holding mc [kdl_control]

2 tasks in 1 deadlock, 1 blocked behind it; 1 other chain
D tasks: 5, 5 in the graph above, 0 not decoded

skipped: task at 0xffff888003a00000: unreadable stack"""


def test_render_waitfor_deadlock_report():
    snap = abba()
    assert render_waitfor(snap, WaitForGraph(snap)) == ABBA_REPORT


def test_render_waitfor_probable_names_inferred_edges():
    snap = abba("inferred", problems=False)
    text = render_waitfor(snap, WaitForGraph(snap))
    lines = text.splitlines()
    assert lines[0] == (
        "PROBABLE DEADLOCK: \"kdl_a\" (pid 91) and \"kdl_b\" (pid 92) on sem1 [kdl_abba], sem2 [kdl_abba] (inferred: "
        "\"kdl_b\" (pid 92) holds sem2 [kdl_abba]; \"kdl_a\" (pid 91) holds sem1 [kdl_abba])")
    assert lines[1] == ("  \"kdl_a\" (pid 91) --waits on--> sem2 [kdl_abba] --held by--> \"kdl_b\" (pid 92) "
                        "[inferred: sem2 above down() in kdl_b]")
    assert lines[-2:] == ["2 tasks in 1 probable deadlock, 1 blocked behind it; 1 other chain",
                          "D tasks: 5, 5 in the graph above, 0 not decoded"]
    assert "skipped:" not in text


def test_render_waitfor_colour_only_when_asked():
    snap = abba()
    graph = WaitForGraph(snap)
    assert ESC not in render_waitfor(snap, graph)
    coloured = render_waitfor(snap, graph, color=True)
    assert paint("DEADLOCK:", "deadlock", True) in coloured
    assert paint("sem2 [kdl_abba]", "lock", True) in coloured
    assert paint("root:", "root", True) in coloured


def test_render_waitfor_pid_filter():
    snap = abba(problems=False)
    graph = WaitForGraph(snap)
    chain_only = render_waitfor(snap, graph, pid=94)  # the root of the chain
    assert chain_only.splitlines()[0] == "CHAIN: 1 task blocked behind \"kdl_d\" (pid 94)"
    assert "DEADLOCK" not in chain_only
    behind = render_waitfor(snap, graph, pid=93)
    assert behind.splitlines()[0].startswith("DEADLOCK: \"kdl_a\" (pid 91) and \"kdl_b\" (pid 92)")
    assert "CHAIN" not in behind
    assert render_waitfor(snap, graph, pid=100) == "pid 100 is not in any deadlock or wait chain"
    assert render_waitfor(snap, graph, pid=4242) == "no task with pid 4242"


def test_render_waitfor_nothing_blocked():
    snap = Snapshot(tasks=[Task(A, 1, 1, "init", "S", 0), Task(B, 2, 2, "kworker", "D", 0)])
    assert render_waitfor(snap, WaitForGraph(snap)).splitlines() == [
        "no lock cycle found; 1 D task with undecoded waits: no task waits on a known lock",
        "",
        "NOT DECODED: blocked (D) tasks whose wait kdlgdb cannot follow",
        "  1 task in D in an unknown function: wait not decoded: \"kworker\" (pid 2)",
        "",
        "D tasks: 1, 0 in the graph above, 1 not decoded",
    ]


def test_render_waitfor_chain_with_no_holder_and_joined_task():
    snap = Snapshot(
        tasks=[Task(A, 1, 1, "a", "D", 0, waits_on=SEM1), Task(B, 2, 2, "b", "D", 0, waits_on=SEM1)],
        locks=[Lock(SEM1, "semaphore")],
    )
    assert render_waitfor(snap, WaitForGraph(snap)).splitlines() == [
        "CHAIN: 2 tasks blocked on semaphore 0xffffffffc020e020, which has no known holder",
        "  \"a\" (pid 1) --waits on--> semaphore 0xffffffffc020e020 (no known holder)",
        "  root: none known: \"a\" (pid 1) waits on semaphore 0xffffffffc020e020 with no known holder",
        "  also blocked:",
        "    \"b\" (pid 2) --waits on--> semaphore 0xffffffffc020e020 (no known holder)",
        "",
        "no deadlock; 2 blocked tasks in 1 chain",
        "D tasks: 2, 2 in the graph above, 0 not decoded",
    ]


# -- JSON ----------------------------------------------------------------------

def test_waitfor_json_schema_and_values():
    snap = abba("inferred")
    data = waitfor_json(snap, WaitForGraph(snap))
    assert json.loads(json.dumps(data)) == data
    assert list(data)[:7] == ["tasks", "locks", "cycles", "chains", "problems", "release", "kaslr_offset"]
    # D-state tasks and tasks in a lock, not the unrelated sleeper; sorted by pid
    assert [t["pid"] for t in data["tasks"]] == [91, 92, 93, 94, 95]
    first = data["tasks"][0]
    assert {k: first[k] for k in ("pid", "comm", "state", "waits_on", "address", "tgid", "cpu", "holds",
                                  "last_ran_ns")} == {
        "pid": 91, "comm": "kdl_a", "state": "D", "waits_on": "0xffffffffc020e060",
        "address": "0xffff888003a1c000", "tgid": 91, "cpu": 0, "holds": ["0xffffffffc020e020"],
        "last_ran_ns": 12_400_000_000}
    assert [lk["address"] for lk in data["locks"]] == ["0xffffffffc020e020", "0xffffffffc020e060", "0xffffffffc0300040"]
    sem1 = data["locks"][0]
    assert {k: sem1[k] for k in ("address", "type", "symbol", "module", "waiters", "details")} == {
        "address": "0xffffffffc020e020", "type": "semaphore", "symbol": "sem1", "module": "kdl_abba",
        "waiters": [92, 93], "details": {"count": 0, "wait_list": 0xFFFFFFFFC020E028}}
    assert [{k: o[k] for k in ("pid", "confidence", "evidence", "mode")} for o in sem1["owners"]] == [
        {"pid": 91, "confidence": "inferred", "evidence": "sem1 above down() in kdl_a", "mode": "exclusive"}]
    [cycle] = data["cycles"]
    assert {k: cycle[k] for k in ("pids", "comms", "locks", "verdict", "blocked_behind")} == {
        "pids": [91, 92], "comms": ["kdl_a", "kdl_b"], "locks": ["0xffffffffc020e060", "0xffffffffc020e020"],
        "verdict": "probable", "blocked_behind": [93]}
    assert [(e["waiter"], e["lock"], e["owner"]) for e in cycle["inferred"]] == [
        (91, "0xffffffffc020e060", 92), (92, "0xffffffffc020e020", 91)]
    assert cycle["advice"].startswith("take sem1 before sem2 [kdl_abba]: \"kdl_b\" (pid 92)")
    [chain] = data["chains"]
    assert {k: chain[k] for k in ("pids", "locks", "root", "root_task", "root_reason")} == {
        "pids": [95, 94], "locks": ["0xffffffffc0300040"], "root": 94, "root_task": "0xffff888003a28000",
        "root_reason": "sleeps (D) in msleep+0x2d while holding mc [kdl_control]"}
    assert data["problems"] == [{"what": "task", "where": "0xffff888003a00000", "why": "unreadable stack"}]
    assert data["release"] == "6.1.0-kdl"
    assert data["kaslr_offset"] == "0x1e000000"


def test_waitfor_json_absent_owner_and_null_waits_on():
    gone = 0xFFFF8880DEAD0000
    snap = Snapshot(tasks=[Task(A, 1, 1, "a", "D", 0, waits_on=SEM1), Task(B, 2, 2, "b", "D", 0)],
                    locks=[Lock(SEM1, "mutex", owners=[Owner(gone, "certain", "mutex.owner")])])
    data = waitfor_json(snap, WaitForGraph(snap))
    assert [(t["pid"], t["waits_on"]) for t in data["tasks"]] == [(1, "0xffffffffc020e020"), (2, None)]
    assert data["locks"][0]["owners"][0]["pid"] is None
    assert data["locks"][0]["owners"][0]["task"] == "0xffff8880dead0000"
    assert data["locks"][0]["symbol"] is None
    assert data["chains"][0]["root"] is None
    assert data["chains"][0]["root_task"] == "0xffff8880dead0000"
    assert data["chains"][0]["root_reason"] == "owner task 0xffff8880dead0000 not found (exited?)"


def test_tasks_json_lists_every_task_sorted():
    snap = abba()
    data = tasks_json(snap)
    assert [t["pid"] for t in data] == [91, 92, 93, 94, 95, 100]
    assert data[-1]["on_cpu"] is True
    assert data[1]["holds"] == ["0xffffffffc020e060"]


def test_render_waitfor_accounts_for_every_d_task():
    """D tasks whose wait is not decoded are listed, grouped by where they sleep, and counted."""
    frames = [Frame(0xFFFFFFFF81000001, "__schedule", 0x10), Frame(0xFFFFFFFF81000002, "schedule", 0x5),
              Frame(0xFFFFFFFF81000003, "nfs_wait_bit", 0x22)]
    snap = Snapshot(
        tasks=[Task(A, 1, 1, "a", "D", 0, waits_on=SEM1), Task(B, 2, 2, "b", "S", 0),
               Task(A + 0x4000, 3, 3, "c", "D", 0, frames=frames), Task(A + 0x8000, 4, 4, "d", "D", 0, frames=frames),
               Task(A + 0xC000, 5, 5, "e", "D", 0)],
        locks=[Lock(SEM1, "semaphore", holder="the freeze of ext2 ram0 on /mnt/data (frozen; `fsfreeze --unfreeze /mnt/data` thaws it)")],
    )
    lines = render_waitfor(snap, WaitForGraph(snap)).splitlines()
    assert lines[:3] == [
        "CHAIN: 1 task blocked on semaphore 0xffffffffc020e020, held by the freeze of ext2 ram0 on /mnt/data "
        "(frozen; `fsfreeze --unfreeze /mnt/data` thaws it)",
        "  \"a\" (pid 1) --waits on--> semaphore 0xffffffffc020e020 (held by the freeze of ext2 ram0 on /mnt/data)",
        "  root: the freeze of ext2 ram0 on /mnt/data (frozen; `fsfreeze --unfreeze /mnt/data` thaws it)",
    ]
    assert lines[4:7] == [
        "NOT DECODED: blocked (D) tasks whose wait kdlgdb cannot follow",
        "  2 tasks in D in nfs_wait_bit: wait not decoded: \"c\" (pid 3), \"d\" (pid 4)",
        "  1 task in D in an unknown function: wait not decoded: \"e\" (pid 5)",
    ]
    # No cycle, but not every D task is accounted for: the verdict says what is known, not "no deadlock".
    assert lines[-2:] == ["no lock cycle found; 3 D tasks with undecoded waits; 1 blocked task in 1 chain",
                          "D tasks: 4, 1 in the graph above, 3 not decoded"]


def test_stacks_grouped_and_the_graph_s_stacks():
    """kd-bt -g: identical call chains (offsets aside) are one group, the biggest first; kd-waitfor --stacks:
    kd-bt of each task of each cycle (and those behind it) and chain, in the graph's order."""
    from kdlgdb.analysis.graph import WaitForGraph
    from kdlgdb.render.text import render_graph_stacks, render_stack_groups

    snap = abba()
    d_tasks = [t for t in snap.tasks if t.state == "D"]
    text = render_stack_groups(snap, d_tasks)
    chains = {tuple(f.symbol for f in t.frames) for t in d_tasks}
    assert text.splitlines()[0] == f"{len(d_tasks)} tasks in {len(chains)} distinct stack{'s' if len(chains) > 1 else ''}"
    assert all(f'"{t.comm}" (pid {t.pid})' in text for t in d_tasks)
    assert render_stack_groups(snap, []) == "no task in those states"
    graph = WaitForGraph(snap)
    stacks = render_graph_stacks(snap, graph)
    in_graph = [a for c in graph.cycles for a in c.tasks + c.blocked_behind] + [a for c in graph.chains for a in c.tasks + c.joined]
    assert in_graph and [int(m) for m in re.findall(r"^PID: (\d+) ", stacks, re.M)] == [graph.task(a).pid for a in dict.fromkeys(in_graph)]
    assert render_graph_stacks(snap, graph, pid=100) == "stacks: no task in a cycle or chain"


def test_every_list_of_tasks_names_the_first_then_counts_the_rest() -> None:
    from kdlgdb.render.words import first_names
    assert first_names(["a", "b", "c"], 3) == ["a", "b", "c"]
    assert first_names(["a", "b", "c", "d", "e"], 3) == ["a", "b", "c", "2 more"]
    tasks = [Task(0x1000 + i, 100 + i, 100 + i, f"kw{i}", "D", 0) for i in range(10)]
    from kdlgdb.render.text import render_stack_groups
    text = render_stack_groups(Snapshot(tasks=tasks), tasks)
    assert '"kw7" (pid 107), 2 more' in text and "kw8" not in text


def test_a_guessed_frame_is_marked_in_kd_bt_and_the_json() -> None:
    """A frame the frame-pointer guess found (code without ORC entries) reads '? func+0x..', as the kernel prints
    an address it cannot vouch for, and its index is in the JSON's `guessed`; an interrupted frame in `interrupted`."""
    frames = [Frame(0xFFFFFFFF81000010, "__schedule", 0x10, sp=0xFFFFC90000001000),
              Frame(0xFFFFFFFFC0001020, "bpf_prog_x", 0x20, sp=0xFFFFC90000001010, guessed=True),
              Frame(0xFFFFFFFF81000030, "kthread", 0x30, sp=0xFFFFC90000001100, regs=True)]
    task = Task(0xFFFF888000001000, 7, 7, "t", "D", 0, frames=frames, unwinder="orc, frame pointer guess for 1 frame(s)")
    snap = Snapshot(tasks=[task])
    lines = render_bt(snap, task).splitlines()
    assert lines[1] == "    (orc, frame pointer guess for 1 frame(s))"
    assert "] ? bpf_prog_x+0x20" in lines[3] and "] __schedule+0x10" in lines[2] and "] kthread+0x30" in lines[5]
    shown = tasks_json(snap)[0]
    assert shown["guessed"] == [1] and shown["interrupted"] == [2]
