"""Post-mortem reports: bundles of real dumps rendered in every format, and `kdlgdb report`/`triage`.

The fast tests build each bundle the way gdb does, from replays of real dumps:
the snapshot from ``recordings/<kernel>/<scenario>-kaslr.json.gz`` and the
kernel log from ``recordings/<kernel>/dmesg/`` (what ``kernel_log`` read from
the same dump). Names, pids and addresses are checked against the truth the
guest printed. The ``realkernel`` tests run ``kdlgdb report`` and ``triage``
(real gdb, real dumps) and ``kd-report`` in gdb.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import matrix
import pytest
import samples
from expectations import _behind, check_waitfor, idle_tasks
from realgdb import kdlgdb, shared_gdb

from kdlgdb import cli, report
from kdlgdb.analysis.graph import WaitForGraph
from kdlgdb.errors import KdlError
from kdlgdb.kernel.collect import collect
from kdlgdb.kernel.layout import Kernel
from kdlgdb.model import Frame, Lock, Owner, Snapshot, Task
from kdlgdb.render import dot as render_dot
from kdlgdb.render import report as render_report
from kdlgdb.render import report_data
from kdlgdb.render.json import waitfor_json
from kdlgdb.target.replay import ReplayTarget

HERE = Path(__file__).parent
RECORDED = HERE / "vmcore_samples" / "recordings" / samples.DEFAULT_KERNEL
SCENARIOS = list(samples.SCENARIOS)
FORMATS = ("html", "md", "json", "txt")
SCHEMA = ("tasks", "locks", "cycles", "chains", "problems", "release", "kaslr_offset")
REPORT_KEYS = ("report_version", "verdict", "headline", "summary", "dot", "d_state_groups", "kernel_log", "facts")


# -- building bundles from replays ---------------------------------------------------------------


def _truth(scenario: str) -> dict[str, Any]:
    """The recording's truth, with each kworker the module names by role ("kworker_reset") under its own
    name (kworker/1:0), as the report shows it."""
    truth = json.loads((RECORDED / f"{scenario}-kaslr.truth.json").read_text())
    workers = set(samples.expected(scenario).get("workers", []))
    if workers:
        comm = {t.pid: t.comm for t in bundle_of(scenario).snapshot.tasks}
        truth["roles"] = {name: comm[pid] for name, pid in truth["tasks"].items() if name in workers}
        truth["tasks"] = {truth["roles"].get(name, name): pid for name, pid in truth["tasks"].items()}
    return truth


def _name(truth: dict[str, Any], name: str) -> str:
    """A task of expected.json by the name the report uses (a kworker's own comm)."""
    return truth.get("roles", {}).get(name, name)


_bundles: dict[str, report.Bundle] = {}


def bundle_of(scenario: str) -> report.Bundle:
    """The bundle gdb would write for the KASLR dump of ``scenario`` (snapshot, kernel log, facts)."""
    if scenario not in _bundles:
        snap = collect(ReplayTarget(str(RECORDED / f"{scenario}-kaslr.json.gz")))
        kernel = Kernel(ReplayTarget(str(RECORDED / "dmesg" / f"{scenario}-kaslr.json.gz")))
        log, log_facts = report.read_kernel_log(kernel)
        facts = report.make_facts(dump=f"/var/crash/{scenario}/vmcore", vmlinux="/usr/lib/debug/boot/vmlinux-x",
                                  debugger="gdb 13.1", **log_facts)
        # Through JSON and back, as the CLI gets it from gdb.
        _bundles[scenario] = report.Bundle.from_dict(json.loads(json.dumps(report.Bundle(snap, log, facts).to_dict())))
    return _bundles[scenario]


_rendered: dict[tuple[str, str], str] = {}


def rendered(scenario: str, fmt: str) -> str:
    if (scenario, fmt) not in _rendered:
        _rendered[scenario, fmt] = report.render(bundle_of(scenario), fmt)
    return _rendered[scenario, fmt]


# The lock slow-path frame a report marks: mutex, semaphore, rwsem; rt_mutex's wait loop (a plain rt_mutex, and
# PREEMPT_RT's mutex and rwsem), and an RT rwsem writer waiting for its readers.
SLOW_PATH = r"(__mutex_lock\S*|__down_common|rwsem_down_\w+|rt_mutex_slowlock_block\S*|__rt_mutex_slowlock_locked\S*|rwbase_write_lock|native_queued_spin_lock_slowpath|percpu_rwsem_wait|percpu_down_write)"


def expected_summary(scenario: str, truth: Optional[dict[str, Any]] = None, undecoded: int = 0) -> dict[str, Any]:
    """What the summary sentence must say, from the scenario's facts and the guest's truth
    (the recording's, unless the truth of another boot of the scenario is given); with no cycle and
    ``undecoded`` D tasks whose waits were not decoded (a kernel's own kworker), no lock cycle found."""
    want = _expected_summary(scenario, truth or _truth(scenario))
    if want["verdict"] == "none" and undecoded:
        said = f"No lock cycle found; {undecoded} D task{'s' if undecoded > 1 else ''} with undecoded waits"
        want.update(headline=said.upper().split(";")[0], verb=said if want["verb"] == "No deadlock" else want["verb"])
    return want


def _undecoded_in(stdout: str) -> int:
    """The D tasks with undecoded waits that ``kdlgdb report``'s first line counts (0 when it names none)."""
    found = re.match(r"NO LOCK CYCLE FOUND; (\d+) D tasks? with undecoded waits", stdout)
    return int(found.group(1)) if found else 0


def _expected_summary(scenario: str, truth: dict[str, Any]) -> dict[str, Any]:
    exp = samples.expected(scenario, truth.get("kernel", ""))  # PREEMPT_RT: the shape the code takes there
    pid = truth["tasks"]
    module = exp["module"]
    if not exp["cycles"] and exp.get("owner_exited"):  # the waiters of a lock whose owner exited
        (lock,) = exp["owner_exited"]
        waiters = sorted((c for c, lk in exp["waits"].items() if lk == lock), key=lambda c: pid[c])
        return {"verdict": "none", "headline": "NO DEADLOCK", "names": [f"\"{c}\" (pid {pid[c]})" for c in waiters],
                "locks": [], "verb": "whose owner exited without releasing it"}
    if not exp["cycles"] and exp.get("held_by"):  # waiters of a lock no task holds (a frozen filesystem)
        (lock, holder), = exp["held_by"].items()
        waiters = sorted((c for c, lk in exp["waits"].items() if lk == lock), key=lambda c: pid[c])
        return {"verdict": "none", "headline": "NO DEADLOCK", "names": [f"\"{c}\" (pid {pid[c]})" for c in waiters],
                "locks": [], "verb": f"held by {holder}"}
    if not exp["cycles"]:
        # The sentence names the largest chain (ties: the one whose first blocked task has the lowest pid).
        # A root holds and waits on no lock; behind it, every task whose waits lead to it (kdl_inode: two hops).
        behind = {root: sorted(_behind(exp, root)) for root, held in exp["holds"].items() if held and root not in exp["waits"]}
        root = min(behind, key=lambda r: (-len(behind[r]), min(pid[c] for c in behind[r])))
        named = behind[root] if len(behind[root]) <= report_data.MAX_NAMED else []  # else "... and N more"
        heap = set(exp["holds"][root]) <= set(exp.get("heap_locks", ()))  # named by their objects, not symbols
        more = [] if named else [f" and {len(behind[root]) - report_data.MAX_NAMED} more are blocked behind \"{root}\" "]
        return {"verdict": "none", "headline": "NO DEADLOCK",
                "names": [f"\"{c}\" (pid {pid[c]})" for c in named + [root]] + more,
                "locks": ([part for lk in exp["holds"][root] for part in exp.get("lock_names", {}).get(lk, [" object 0xffff"])]
                          if heap else [f"{lk} [{module}]" for lk in exp["holds"][root]]),
                "verb": "No deadlock"}
    (cycle,) = exp["cycles"]
    certain = cycle["verdict"] == "deadlock"
    if "interrupt" in cycle:  # one task: an interrupt handler spins on what the code it interrupted holds
        (a,), (lock,) = cycle["tasks"], cycle["locks"]
        return {"verdict": "deadlock" if certain else "probable",
                "headline": "DEADLOCK" if certain else "PROBABLE DEADLOCK",
                "names": [f"\"{a}\" (pid {pid[a]})"], "locks": [f"{lock} [{module}]"],
                "verb": f"\"{a}\" (pid {pid[a]}) {'deadlocks' if certain else 'probably deadlocks'} on itself through an "
                        f"interrupt: a {cycle['interrupt']['context']} handler on its CPU spins on {lock} [{module}], "
                        f"which the code it interrupted holds (take it with {cycle['interrupt']['fix']}())"}
    if len(cycle["tasks"]) == 1:  # a recursive lock
        (a,), (lock,) = cycle["tasks"], cycle["locks"]
        return {"verdict": "deadlock", "headline": "DEADLOCK", "names": [f"\"{a}\" (pid {pid[a]})"],
                "locks": [f"{lock} [{module}]"],
                "verb": f"\"{a}\" (pid {pid[a]}) deadlocks on itself: it waits for {lock} [{module}], which it already holds"}
    flushed = [lk for lk in cycle["locks"] if exp["lock_types"][lk] == "work"]
    if flushed and "roles" not in truth:
        # Another boot's truth: a kworker's own name and the work's are in that dump only; its pids and the
        # pattern are what the sentence must hold.
        return {"verdict": "deadlock" if certain else "probable",
                "headline": "DEADLOCK" if certain else "PROBABLE DEADLOCK",
                "names": [f"(pid {pid[c]})" for c in cycle["tasks"]], "locks": [],
                "verb": "under a lock its work needs"}
    a, b = sorted((_name(truth, c) for c in cycle["tasks"]), key=lambda c: pid[c])
    if flushed:  # the work's name (its function and workqueue), as the recording's snapshot has it
        named = {f"{lk.address:#018x}": lk.name() for lk in bundle_of(scenario).snapshot.locks}
        both = " and ".join(sorted(named[truth["locks"][lk]["address"]] for lk in cycle["locks"]))
    elif set(cycle["locks"]) <= set(exp.get("heap_locks", ())):  # no symbol: named by their heap object
        # "kmalloc-16 object 0xffff…+0x8": the object's address is not in the truth; its cache and offset
        # depend on the kernel (spinlock_t is an rt_mutex on PREEMPT_RT).
        return {"verdict": "deadlock" if certain else "probable",
                "headline": "DEADLOCK" if certain else "PROBABLE DEADLOCK",
                "names": [f"\"{c}\" (pid {pid[c]})" for c in (a, b)], "locks": [" object 0xffff"],
                "verb": f"\"{a}\" (pid {pid[a]}) and \"{b}\" (pid {pid[b]}) {'deadlock' if certain else 'probably deadlock'} on "}
    else:
        locks = sorted(cycle["locks"])
        both = f"{locks[0]} and {locks[1]} [{module}]"
    if flushed:
        pattern = f"a flush of {named[truth['locks'][flushed[0]]['address']]} under a lock its work needs"
    else:
        pattern = "ABBA order"
    return {
        "verdict": "deadlock" if certain else "probable",
        "headline": "DEADLOCK" if certain else "PROBABLE DEADLOCK",
        "names": [f"\"{_name(truth, c)}\" (pid {pid[_name(truth, c)]})" for c in cycle["tasks"]],
        "locks": [both],
        "verb": f"\"{a}\" (pid {pid[a]}) and \"{b}\" (pid {pid[b]}) {'deadlock' if certain else 'probably deadlock'} on "
                f"{both}: {pattern}",
    }


def _last_ran(scenario: str, pid: int) -> str:
    """How long the task ``pid`` of the recorded dump had not run, as the sentences say it ("8.1s")."""
    (task,) = [t for t in bundle_of(scenario).snapshot.tasks if t.pid == pid]
    assert task.last_ran_ns and task.last_ran_ns > 5e9  # the builder waits for the hung-task report (5 s)
    return f"{task.last_ran_ns / 1e9:.1f}s"


# -- the summary sentence and the verdict ---------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_summary_names_tasks_locks_and_verdict(scenario: str) -> None:
    bundle = bundle_of(scenario)
    graph = WaitForGraph(bundle.snapshot)
    sentence = render_report.summary_sentence(bundle.snapshot, graph)
    want = expected_summary(scenario)
    assert render_report.verdict(graph) == want["verdict"]
    assert want["verb"] in sentence, sentence
    for text in want["names"] + want["locks"]:
        assert text in sentence, (text, sentence)
    assert report.summary_line(bundle).startswith(want["headline"] + ("" if want["verdict"] == "none" else ":"))
    assert report.status(bundle) == (0 if want["verdict"] == "none" else 1)


def test_summary_sentences_word_for_word() -> None:
    t = {s: _truth(s)["tasks"] for s in SCENARIOS}
    line = {s: report.summary_line(bundle_of(s)) for s in SCENARIOS}
    m = t["kdl_mutex"]
    assert line["kdl_mutex"] == (
        f"DEADLOCK: \"kdl_m1\" (pid {m['kdl_m1']}) and \"kdl_m2\" (pid {m['kdl_m2']}) deadlock on m1 and m2 [kdl_mutex]: "
        f"ABBA order, with \"kdl_m3\" (pid {m['kdl_m3']}) blocked behind them.")
    a = t["kdl_abba"]
    assert line["kdl_abba"] == (
        f"PROBABLE DEADLOCK: \"kdl_a\" (pid {a['kdl_a']}) and \"kdl_b\" (pid {a['kdl_b']}) probably deadlock on sem1 and "
        "sem2 [kdl_abba]: ABBA order (inferred, not recorded by the kernel: \"kdl_b\" holds sem2, \"kdl_a\" holds sem1).")
    c = t["kdl_control"]
    slept = _last_ran("kdl_control", c["kdl_c_owner"])
    assert line["kdl_control"] == (
        f"NO DEADLOCK: \"kdl_c_w1\" (pid {c['kdl_c_w1']}) and \"kdl_c_w2\" (pid {c['kdl_c_w2']}) are blocked behind "
        f"\"kdl_c_owner\" (pid {c['kdl_c_owner']}), which sleeps (D) in msleep+0x29 for {slept} while holding mc [kdl_control].")
    w = t["kdl_chain"]
    assert line["kdl_chain"] == (
        f"NO DEADLOCK: 4 blocked tasks in 4 chains; the largest: \"kdl_c2\" (pid {w['kdl_c2']}) is blocked behind "
        f"\"kdl_c1\" (pid {w['kdl_c1']}), which waits (D) for completion c_done [kdl_chain] in __wait_for_common+0x94 "
        f"for {_last_ran('kdl_chain', w['kdl_c1'])} while holding m_c [kdl_chain].")
    r = t["kdl_rwsem"]
    assert line["kdl_rwsem"].startswith(
        f"PROBABLE DEADLOCK: \"kdl_r_reader\" (pid {r['kdl_r_reader']}) and \"kdl_r_writer\" (pid {r['kdl_r_writer']}) "
        "probably deadlock on mr and rw1 [kdl_rwsem]: ABBA order (inferred, not recorded by the kernel: "
        "\"kdl_r_reader\" holds rw1)")


# -- every format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ("html", "md", "txt"))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_document_formats_hold_summary_stacks_log_and_facts(scenario: str, fmt: str) -> None:
    text = rendered(scenario, fmt)
    bundle = bundle_of(scenario)
    graph = WaitForGraph(bundle.snapshot)
    sentence = render_report.summary_sentence(bundle.snapshot, graph)
    want = expected_summary(scenario)
    plain = _plain(text) if fmt == "html" else text
    head = plain[: plain.index(sentence) + len(sentence)]
    assert want["headline"] in head  # the verdict and its sentence come first
    assert len(head) < 600
    exp, truth = samples.expected(scenario), _truth(scenario)
    for comm in exp["tasks"]:  # the idle ones (TASK_IDLE, also freezable) in no cycle, chain or list of D tasks
        named = f"\"{comm}\" (pid {truth['tasks'][comm]})" in plain or f"\"{comm}\" ({truth['tasks'][comm]})" in plain
        assert named != (comm in idle_tasks(exp)), comm
    # Stacks: every blocked task's lock slow path, marked.
    if fmt == "html":
        marked = re.findall(r'<span class="hll">(.*?)</span>\n', text)
        assert any(re.search(SLOW_PATH, _plain(m)) for m in marked)
    else:
        assert re.search(rf"#\d+ {SLOW_PATH}\+0x[0-9a-f]+ +<-- lock slow path", text)
    for cycle in exp["cycles"]:
        # Each edge's evidence and the lock order advice (or, through an interrupt, the acquisition to change).
        assert ("mutex.owner" in plain) or ("called down" in plain) or ("called _raw_spin_lock" in plain) or (
            "its address is in %" in plain)  # a lock reached through a pointer: in its holder's CPU registers
        if "interrupt" in cycle:
            assert f"take it there with {cycle['interrupt']['fix']}()" in plain and len(cycle["tasks"]) == 1
        elif len(cycle["tasks"]) == 1:  # a recursive lock
            assert f"takes {cycle['locks'][0]} [{exp['module']}] again while holding it" in plain
        else:
            assert "take " in plain and " before " in plain
            assert len(cycle["tasks"]) == 2
    if exp.get("blocked_when_loaded"):  # spinning CPUs: running threads, which no hung-task report names
        assert not any(f"INFO: task {comm}:{pid} blocked" in plain for comm, pid in truth["tasks"].items())
    else:
        # The kernel log: the hung-task detector named every thread but the idle ones, and the graph explains each.
        for comm, pid in truth["tasks"].items():
            assert (f"INFO: task {comm}:{pid} blocked for more than 5 seconds." in plain) != (comm in idle_tasks(exp))
        assert "NO" not in re.findall(r"\bNO\b", plain.split("Kernel log")[-1].split("System")[0])  # every row says yes
    # System facts and the problems footer.
    for fact in (truth["kernel"], truth["kernel_offset"], f"/var/crash/{scenario}/vmcore", "wait-list scan",
                 f"{len(bundle.snapshot.tasks)} ("):
        assert fact in plain, fact
    assert "Problems" in plain and "every task and lock was read" in plain


def _plain(html_text: str) -> str:
    """The visible text of an HTML report, roughly: tags dropped, entities decoded."""
    import html

    no_style = re.sub(r"<(style|svg)\b.*?</\1>", "", html_text, flags=re.DOTALL)  # (the DOT source stays)
    return html.unescape(re.sub(r"<[^>]+>", "", no_style))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_json_is_the_waitfor_schema_plus_report_keys(scenario: str) -> None:
    doc = json.loads(rendered(scenario, "json"))
    bundle = bundle_of(scenario)
    graph = WaitForGraph(bundle.snapshot)
    base = waitfor_json(bundle.snapshot, graph)
    for key in SCHEMA:
        assert doc[key] == base[key], key
    for key in REPORT_KEYS:
        assert key in doc, key
    check_waitfor(doc, samples.expected(scenario), json.loads((RECORDED / f"{scenario}-kaslr.truth.json").read_text()))
    want = expected_summary(scenario)
    assert doc["verdict"] == want["verdict"] and doc["headline"] == want["headline"]
    assert doc["summary"] == render_report.summary_sentence(bundle.snapshot, graph)
    truth = _truth(scenario)
    hung = doc["kernel_log"]["hung_tasks"]
    if samples.expected(scenario).get("blocked_when_loaded"):  # spinning CPUs: their threads are not hung
        assert not {(h["comm"], h["pid"]) for h in hung} & set(truth["tasks"].items())
    else:
        # each task but the idle ones, once or more: the detector reports again after another timeout when the
        # dump came late
        idle = idle_tasks(samples.expected(scenario))
        assert {(h["comm"], h["pid"]) for h in hung} == {(c, p) for c, p in truth["tasks"].items() if c not in idle}
        assert all(h["explained"] for h in hung)
    assert doc["kernel_log"]["records"] == len(bundle.log) > 300
    assert doc["facts"]["task_count"] == len(bundle.snapshot.tasks)
    assert doc["facts"]["sources"] == bundle.snapshot.sources
    assert doc["facts"]["dump"] == f"/var/crash/{scenario}/vmcore"
    assert doc["dot"].startswith("digraph waitfor {")


# -- the graph: DOT and SVG -----------------------------------------------------------------------


def _dot_plain(source: str) -> list[list[str]]:
    """``dot -Tplain`` of ``source`` (fails the test on any Graphviz complaint), as split lines."""
    assert shutil.which("dot"), "Graphviz is not installed (apt-get install graphviz; ./setup.sh)"
    done = subprocess.run(["dot", "-Tplain"], input=source, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def _cycle_edges(scenario: str) -> set[tuple[str, str]]:
    """(tail, head) node names of every cycle edge, from the truth: task -> lock it waits on -> its holder."""
    bundle = bundle_of(scenario)
    exp, truth = samples.expected(scenario), _truth(scenario)
    by_pid = {t.pid: t for t in bundle.snapshot.tasks}
    edges = set()
    for cycle in exp["cycles"]:
        tasks = cycle["tasks"]
        for k, comm in enumerate(tasks):
            task = by_pid[truth["tasks"][_name(truth, comm)]]
            lock = int(truth["locks"][exp["waits"][comm]]["address"], 16)
            holder = by_pid[truth["tasks"][_name(truth, tasks[(k + 1) % len(tasks)])]]
            edges.add((render_dot.task_node(task.pid, task.address), render_dot.lock_node(lock)))
            edges.add((render_dot.lock_node(lock), render_dot.task_node(holder.pid, holder.address)))
    return edges


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_dot_parses_and_draws_the_cycle_in_red(scenario: str) -> None:
    source = json.loads(rendered(scenario, "json"))["dot"]
    plain = _dot_plain(source)
    edges = {(e[1], e[2]): e[-1] for e in plain if e[0] == "edge"}
    red = {pair for pair, color in edges.items() if color == "red"}
    assert red == _cycle_edges(scenario)
    nodes = {n[1]: n for n in plain if n[0] == "node"}
    exp, truth = samples.expected(scenario), _truth(scenario)
    by_pid = {t.pid: t for t in bundle_of(scenario).snapshot.tasks}
    for comm in exp["tasks"]:  # an idle task waits for work, not for a lock: no node
        task = by_pid[truth["tasks"][comm]]
        assert (render_dot.task_node(task.pid, task.address) in nodes) != (comm in idle_tasks(exp)), comm
    for comm, held in exp["holds"].items():  # every chain's root is marked (a holder that waits on nothing)
        if held and not exp["cycles"] and comm not in exp["waits"]:
            root = by_pid[truth["tasks"][comm]]
            fields = nodes[render_dot.task_node(root.pid, root.address)]  # ... style shape color fillcolor
            assert "ROOT" in source and fields[-2] == "#8e44ad"
    for comm, blocked in exp.get("blocked_in", {}).items():  # what a root waits for that is no lock: a node
        if "object" in blocked:
            root = by_pid[truth["tasks"][comm]]
            node = "wait_" + truth["locks"][blocked["object"]]["address"][2:]
            assert node in nodes and f'{node} [shape="octagon", label="{blocked["object"]} [{exp["module"]}]\\n' in source
            assert edges[render_dot.task_node(root.pid, root.address), node] == "#8e44ad"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_html_is_one_file_with_the_svg_inline(scenario: str) -> None:
    text = rendered(scenario, "html")
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    # One picture per connected part of the graph (a cycle with those behind it, a chain), one under the other.
    snap = bundle_of(scenario).snapshot
    parts = render_dot.render_dots(snap, WaitForGraph(snap))
    assert text.count("<svg") == text.count('<figure class="graph">') == len(parts)
    assert scenario != "kdl_chain" or len(parts) == 4  # four chains that share nothing
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text
    # The parts together are the whole picture, each node and edge once.
    def drawn(source: str) -> list[tuple[str, ...]]:
        return [tuple(f[:2] if f[0] == "node" else f[:3]) for f in _dot_plain(source) if f[0] in ("node", "edge")]

    whole = drawn(render_dot.render_dot(snap, WaitForGraph(snap)))
    assert sorted(whole) == sorted(line for part in parts for line in drawn(part))
    # Nothing is fetched: no scripts, stylesheets, images or fonts from elsewhere.
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", text)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text)
    assert "@import" not in text and "url(" not in text
    urls = set(re.findall(r"https?://[^\s\"'<>]+", text))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls  # namespace names only
    svg = text[text.index("<svg"): text.rindex("</svg>")]
    red_groups = re.findall(r'<g id="[^"]+" class="edge cycle">(.*?)</g>', svg, re.DOTALL)
    assert len(red_groups) == len(_cycle_edges(scenario))
    assert all('stroke="red"' in g for g in red_groups)
    assert "DOT source" in text and "digraph" in text


def test_markdown_embeds_the_picture_and_the_dot_source() -> None:
    text = rendered("kdl_mutex", "md")
    m = re.search(r"!\[wait-for graph[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", text)
    assert m
    import base64

    svg = base64.b64decode(m.group(1)).decode()
    assert svg.startswith("<svg") and 'stroke="red"' in svg
    assert "```dot\ndigraph waitfor {" in text
    assert "| waiter " in text and "mutex.owner" in text


def test_without_graphviz_the_report_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_dot.shutil, "which", lambda name: None)
    text = report.render(bundle_of("kdl_mutex"), "html")
    assert "No picture: Graphviz is not installed (apt-get install graphviz)" in text
    assert "<svg" not in text and "digraph waitfor {" in _plain(text)  # the DOT source is still there
    with pytest.raises(KdlError, match="Graphviz is not installed"):
        render_dot.dot_to_svg("digraph { a }")


def test_dot_quotes_odd_names_and_collapses_a_herd() -> None:
    """A comm with quotes and backslashes; 500 tasks queued on one mutex held by a sleeper."""
    base = 0xFFFF888004000000
    owner = Task(base, 10, 10, 'we"ird\\N', "D", 0, frames=[Frame(0xFFFFFFFF81000000, "msleep", 0x29)])
    herd = [Task(base + (k + 1) * 0x4000, 100 + k, 100 + k, f"w{k}", "D", 0, waits_on=0xFFFFFFFFC0001000)
            for k in range(500)]
    lock = Lock(0xFFFFFFFFC0001000, "mutex", "big", "mod", [Owner(base, "certain", "mutex.owner")],
                [t.address for t in herd])
    snap = Snapshot(release="6.1", tasks=[owner, *herd], locks=[lock])
    graph = WaitForGraph(snap)
    source = render_dot.render_dot(snap, graph)
    plain = _dot_plain(source)
    labels = " ".join(" ".join(n) for n in plain if n[0] == "node")
    assert "more tasks wait here" in source and "495 more tasks wait here" in source.replace("\\n", " ")
    assert sum(1 for n in plain if n[0] == "node") < 12
    assert 'we\\"ird\\\\N' in source and "ROOT" in labels
    text = render_report.render_report(snap, graph, "txt")
    assert ("NO DEADLOCK" in text and "\"w0\" (pid 100), \"w1\" (pid 101), \"w2\" (pid 102) and 497 more are blocked behind "
            "\"we\"ird\\N\" (pid 10), which sleeps (D) in msleep+0x29 while holding big [mod]") in text
    assert "500 tasks: \"w0\" (pid 100), \"w1\" (pid 101)" in text  # their stacks, in one group


# -- D-state groups and the kernel log ------------------------------------------------------------


def _with_sleepers(snap: Snapshot) -> Snapshot:
    """``snap`` plus three D-state tasks on no lock: two with one stack, one with another."""
    io = [Frame(0xFFFFFFFF81C5E7A5, "__schedule", 0x34D), Frame(0xFFFFFFFF81C5ECFD, "io_schedule", 0x46),
          Frame(0xFFFFFFFF8121A5BD, "folio_wait_bit_common", 0x13E)]
    other = [Frame(0xFFFFFFFF81C5E7A5, "__schedule", 0x34D), Frame(0xFFFFFFFF8116A5BD, "msleep", 0x29)]
    extra = [
        Task(0xFFFF888010000000, 700, 700, "kworker/0:1", "D", 0, frames=io),
        Task(0xFFFF888010004000, 701, 701, "kworker/1:2", "D", 1, frames=list(io)),
        Task(0xFFFF888010008000, 702, 702, "jbd2/sda1-8", "D", 1, frames=other),
    ]
    return dataclasses.replace(snap, tasks=snap.tasks + extra)


def test_d_state_tasks_on_no_lock_are_grouped_by_stack() -> None:
    snap = _with_sleepers(bundle_of("kdl_mutex").snapshot)
    graph = WaitForGraph(snap)
    groups = render_report.d_state_groups(snap, graph)
    assert [(g["count"], g["pids"]) for g in groups] == [(2, [700, 701]), (1, [702])]
    assert groups[0]["stack"] == ["__schedule+0x34d", "io_schedule+0x46", "folio_wait_bit_common+0x13e"]
    assert groups[0]["focus"] == 2  # the first frame past the scheduler
    text = render_report.render_report(snap, graph, "txt")
    assert "2 tasks: \"kworker/0:1\" (pid 700), \"kworker/1:2\" (pid 701)" in text
    html = render_report.render_report(snap, graph, "html")
    assert "2 tasks: &quot;kworker/0:1&quot; (pid 700), &quot;kworker/1:2&quot; (pid 701)" in html and "1 task: &quot;jbd2/sda1-8&quot; (pid 702)" in html
    # The scenario's own tasks are in the deadlock, not in a group.
    assert all(p not in _truth("kdl_mutex")["tasks"].values() for g in groups for p in g["pids"])


def test_no_cycle_with_undecoded_d_tasks_is_no_lock_cycle_found() -> None:
    """A chain and three D tasks whose waits were not decoded: not "NO DEADLOCK" in green, but what is known."""
    snap = _with_sleepers(bundle_of("kdl_control").snapshot)
    graph = WaitForGraph(snap)
    assert render_report.verdict(graph) == "none" and len(render_report.undecoded(snap, graph)) == 3
    sentence = render_report.summary_sentence(snap, graph)
    assert sentence.startswith('No lock cycle found; 3 D tasks with undecoded waits: "kdl_c_w1" (pid ')
    html = render_report.render_report(snap, graph, "html")
    assert '<header class="verdict unsure">' in html and '<div class="label">NO LOCK CYCLE FOUND</div>' in html
    assert "NO DEADLOCK" not in html and 'class="verdict none"' not in html
    assert render_report.render_report(snap, graph, "txt").startswith("kdlgdb report: NO LOCK CYCLE FOUND\n")
    assert render_report.render_report(snap, graph, "md").startswith("# kdlgdb report: NO LOCK CYCLE FOUND\n")
    doc = json.loads(render_report.render_report(snap, graph, "json"))
    assert (doc["verdict"], doc["headline"], doc["undecoded_d_tasks"]) == ("none", "NO LOCK CYCLE FOUND", 3)
    assert report.summary_line(report.Bundle(snap, [])).startswith(
        "NO LOCK CYCLE FOUND; 3 D tasks with undecoded waits: ")
    # Every D task accounted for: no deadlock, said so, in green.
    alone = bundle_of("kdl_control").snapshot
    assert render_report.summary_sentence(alone, WaitForGraph(alone)).startswith("No deadlock: ")
    assert '<header class="verdict none">' in render_report.render_report(alone, WaitForGraph(alone), "html")


@pytest.mark.realkernel
def test_a_real_dump_with_an_undecoded_d_task_finds_no_lock_cycle(tmp_path: Path) -> None:
    """kdl_irq on PREEMPT_RT: a chain (the timer thread sleeps on the lock the running kdl_irq holds) and a kworker
    of the kernel's own in D in a wait kdlgdb does not decode. The verdict is no lock cycle found, not no deadlock."""
    kernel = next(k for k in samples.KERNELS if samples.preempt_rt(k))
    why = samples.missing_message(kernel)
    if why:
        pytest.fail(why)
    dump = samples.ensure_dump("kdl_irq", True, kernel)
    done = kdlgdb("waitfor", str(dump.vmlinux), str(dump.path), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert not doc["cycles"] and doc["chains"]
    explained = {p for c in doc["chains"] for p in c["pids"] + c["joined"]}
    lost = sorted(t["comm"] for t in doc["tasks"] if t["state"] == "D" and t["pid"] not in explained)
    assert lost and not set(lost) & set(dump.truth["tasks"])  # the kernel's own threads, not the scenario's
    n = len(lost)
    said = f"no lock cycle found; {n} D task{'s' if n > 1 else ''} with undecoded waits"
    text = kdlgdb("waitfor", str(dump.vmlinux), str(dump.path))
    assert text.returncode == 0 and f"\n{said}; " in text.stdout and "no deadlock" not in text.stdout
    out = tmp_path / "irq.html"
    done = kdlgdb("report", str(dump.vmlinux), str(dump.path), "-o", str(out))
    assert done.returncode == 0 and done.stdout.startswith(f"NO LOCK CYCLE FOUND; {said[len('no lock cycle found; '):]}: ")
    html = out.read_text()
    assert '<header class="verdict unsure">' in html and "NO DEADLOCK" not in html


def test_hung_tasks_the_graph_does_not_explain() -> None:
    """Synthetic records: a pid not in the dump, a pid that is another task now, a task no longer blocked."""
    bundle = bundle_of("kdl_control")
    snap = bundle.snapshot
    init = next(t for t in snap.tasks if t.pid == 1)
    said = ["INFO: task gone:4242 blocked for more than 120 seconds.",
            f"INFO: task imposter:{init.pid} blocked for more than 120 seconds.",
            f"INFO: task {init.comm}:{init.pid} blocked for more than 120 seconds.",
            "WARNING: CPU: 1 PID: 7 at kernel/foo.c:12 bar+0x1/0x2"]
    log = bundle.log + [{"seq": 10_000 + k, "ts_ns": 20_000_000_000 + k * 100_000_000, "level": 3, "text": text}
                        for k, text in enumerate(said)]
    odd = report.Bundle(snap, log, bundle.facts)
    doc = json.loads(report.render(odd, "json"))
    rows = {(h["comm"], h["pid"]): h for h in doc["kernel_log"]["hung_tasks"]}
    assert rows["gone", 4242]["explained"] is False and "no task with this pid" in rows["gone", 4242]["explanation"]
    assert rows["imposter", 1]["explanation"] == f'pid 1 is now "{init.comm}", not "imposter": the hung task has exited'
    assert rows[init.comm, 1]["explanation"] == f"now in state {init.state}: it is no longer blocked"
    truth = _truth("kdl_control")["tasks"]
    owner = rows["kdl_c_owner", truth["kdl_c_owner"]]
    assert owner["explanation"].startswith("root of chain 1: it sleeps (D) in msleep+")
    assert rows["kdl_c_w1", truth["kdl_c_w1"]]["explanation"] == (
        f"in chain 1, blocked behind \"kdl_c_owner\" (pid {truth['kdl_c_owner']})")
    assert [r["text"] for r in doc["kernel_log"]["notable"]][-1].startswith("WARNING: CPU: 1 PID: 7")
    html = report.render(odd, "html")
    assert '<td class="no">no</td>' in html and '<a href="#chain-1">in chain 1' in html
    text = report.render(odd, "txt")
    assert "[   20.300000] WARNING: CPU: 1 PID: 7" in text


def test_a_bundle_without_a_log_says_why() -> None:
    bundle = bundle_of("kdl_abba")
    bare = report.Bundle(bundle.snapshot, [], {"log_note": "the kernel log could not be read: test"})
    for fmt in ("txt", "md", "html"):
        assert "No kernel log: the kernel log could not be read: test" in report.render(bare, fmt).replace(
            "no kernel log", "No kernel log")
    doc = json.loads(report.render(bare, "json"))
    assert doc["kernel_log"] == {"records": 0, "note": "the kernel log could not be read: test", "hung_tasks": [],
                                 "notable": [], "tail": []}


# -- bundles, formats, vmlinux ------------------------------------------------------------------------


def test_bundle_round_trip(tmp_path: Path) -> None:
    bundle = bundle_of("kdl_rwsem")
    path = tmp_path / "b.json"
    report.save_bundle(bundle, str(path))
    again = report.load_bundle(str(path))
    assert again.snapshot == bundle.snapshot and again.log == bundle.log and again.facts == bundle.facts
    (tmp_path / "no.json").write_text('{"snapshot": {}}')
    with pytest.raises(KdlError, match="not a kdlgdb bundle"):
        report.load_bundle(str(tmp_path / "no.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KdlError, match="is not a kdlgdb bundle"):
        report.load_bundle(str(tmp_path / "bad.json"))
    with pytest.raises(KdlError, match="version 99"):
        report.Bundle.from_dict({"kdlgdb_bundle": 99, "snapshot": {}})


def test_format_from_extension_or_option() -> None:
    assert [report.format_for(p, None) for p in ("a.html", "a.HTM", "b.md", "c.json", "d.txt", None, "-")] == [
        "html", "html", "md", "json", "txt", "txt", "txt"]
    assert report.format_for("x.html", "json") == "json"
    with pytest.raises(KdlError, match="cannot tell the format"):
        report.format_for("report.pdf", None)
    with pytest.raises(KdlError, match="unknown report format"):
        report.format_for("x", "pdf")


def test_find_vmlinux_in_order_and_says_where_it_looked(tmp_path: Path) -> None:
    places = [str(tmp_path / "a" / "vmlinux-{release}"), str(tmp_path / "b" / "{release}" / "vmlinux")]
    assert report.find_vmlinux("6.1.0-x", places) == (None, [str(tmp_path / "a" / "vmlinux-6.1.0-x"),
                                                           str(tmp_path / "b" / "6.1.0-x" / "vmlinux")])
    (tmp_path / "b" / "6.1.0-x").mkdir(parents=True)
    (tmp_path / "b" / "6.1.0-x" / "vmlinux").write_text("")
    assert report.find_vmlinux("6.1.0-x", places)[0] == str(tmp_path / "b" / "6.1.0-x" / "vmlinux")
    assert report.VMLINUX_PLACES == ("/usr/lib/debug/boot/vmlinux-{release}",
                                     "/usr/lib/debug/lib/modules/{release}/vmlinux", "/boot/vmlinux-{release}")


def test_cli_renders_a_saved_bundle_without_gdb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for scenario, status in (("kdl_mutex", 1), ("kdl_control", 0)):
        path = tmp_path / f"{scenario}.bundle.json"
        report.save_bundle(bundle_of(scenario), str(path))
        out = tmp_path / f"{scenario}.html"
        assert cli.main(["report", "--bundle", str(path), "-o", str(out)]) == 0  # written: done, whatever it found
        printed = capsys.readouterr()
        assert printed.out == f"{report.summary_line(bundle_of(scenario))}\nwrote {out} (html)\n"
        assert printed.err == ""
        assert out.read_text() == rendered(scenario, "html").replace(
            _analysed(rendered(scenario, "html")), _analysed(out.read_text()))
        assert cli.main(["report", "--bundle", str(path), "--format", "json"]) == status
        assert json.loads(capsys.readouterr().out)["verdict"] == expected_summary(scenario)["verdict"]
    assert cli.main(["report", "--bundle", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("kdlgdb: cannot read bundle ")
    assert cli.main(["report", "--bundle", str(path), "-o", str(tmp_path / "x.pdf")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err


def _analysed(text: str) -> str:
    return re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text).group(0)


def test_triage_goes_on_past_a_file_that_is_no_dump(tmp_path: Path) -> None:
    junk = tmp_path / "vmcore"
    shutil.copy("/etc/passwd", junk)
    row = report.triage_one(str(junk))
    assert (row.verdict, row.status) == (f"error: {junk} is not an ELF vmcore", 2)
    missing = report.triage_one(str(tmp_path / "nothing"))
    assert missing.verdict == f"error: no such file: {tmp_path / 'nothing'}"
    table = report.triage_table([row, missing])
    assert table.splitlines()[0].split() == ["DUMP", "RELEASE", "CRASH", "TIME", "VERDICT", "CYCLE"]
    assert report.triage_status([row, missing]) == 2
    # No CRASHTIME to read: the file's own time, marked as such; nothing for a file that is not there.
    assert row.crash_time == render_report.format_utc(junk.stat().st_mtime) + " (file time)"
    assert missing.crash_time == ""
    assert f" {row.crash_time} " in table.splitlines()[1]


def test_triage_table_has_a_crash_time_column() -> None:
    rows = [report.TriageRow("/var/crash/a/vmcore", "6.1.0-x", "deadlock", "\"t1\" (pid 1) -> A [m] -> \"t1\" (pid 1)", 1,
                             render_report.format_crash_time(1_700_000_000)),
            report.TriageRow("/var/crash/b/vmcore", "6.1.0-x", "no deadlock", "", 0,
                             render_report.format_crash_time(None, 1_700_000_060.5))]
    lines = report.triage_table(rows).splitlines()
    assert lines[0].split() == ["DUMP", "RELEASE", "CRASH", "TIME", "VERDICT", "CYCLE"]
    assert lines[1].split()[:6] == ["/var/crash/a/vmcore", "6.1.0-x", "2023-11-14", "22:13:20", "UTC", "deadlock"]
    assert lines[2].split() == ["/var/crash/b/vmcore", "6.1.0-x", "2023-11-14", "22:14:20", "UTC", "(file", "time)",
                                "no", "deadlock"]
    assert lines[0].index("CRASH TIME") == lines[1].index("2023-11-14")  # a column of its own


# -- source lines and system facts ---------------------------------------------------------------------


def _slow_path_source(scenario: str, comm: str) -> tuple[str, str]:
    """(``Frame.describe()``, source) of the lock slow-path frame of ``comm``'s stack in the scenario's dump."""
    task = next(t for t in bundle_of(scenario).snapshot.tasks if t.comm == comm)
    frame = task.frames[render_report._focus(task)]
    assert frame.source is not None, frame
    return frame.describe(), frame.source


def test_report_stacks_show_source_lines() -> None:
    frame, source = _slow_path_source("kdl_abba", "kdl_a")
    assert frame.startswith("__down_common+") and re.fullmatch(r"kernel/locking/semaphore\.c:\d+", source)
    html = rendered("kdl_abba", "html")
    assert source in html
    marked = [_plain(m) for m in re.findall(r'<span class="hll">(.*?)</span>\n', html)]
    assert any(frame in m and "lock slow path" in m and m.rstrip().endswith(source) for m in marked), marked
    for fmt in ("txt", "md"):
        text = rendered("kdl_abba", fmt)
        assert re.search(rf"#\d+ {re.escape(frame)} +<-- lock slow path +{re.escape(source)}\n", text), fmt
        assert re.search(r"#\d+ kdl_a_fn\+0x[0-9a-f]+ \[kdl_abba\]\n", text)  # a module frame: no line
    doc = json.loads(rendered("kdl_abba", "json"))
    a = next(t for t in doc["tasks"] if t["comm"] == "kdl_a")
    assert len(a["sources"]) == len(a["stack"]) and a["sources"][a["stack"].index(frame)] == source
    assert a["sources"][[s.startswith("kdl_a_fn+") for s in a["stack"]].index(True)] is None
    # The grouped stacks (tasks blocked behind a cycle) show them too.
    m3_frame, m3_source = _slow_path_source("kdl_mutex", "kdl_m3")
    assert re.fullmatch(r"kernel/locking/mutex\.c:\d+", m3_source)
    assert re.search(rf"#\d+ {re.escape(m3_frame)} +<-- lock slow path +{re.escape(m3_source)}\n",
                     rendered("kdl_mutex", "txt"))


@pytest.mark.parametrize("fmt", ("html", "md", "txt"))
def test_system_section_has_cpus_uptime_dump_format_crash_time_panic(fmt: str) -> None:
    bundle = bundle_of("kdl_abba")
    snap = bundle.snapshot
    plain = _plain(rendered("kdl_abba", fmt)) if fmt == "html" else rendered("kdl_abba", fmt)
    system = plain[plain.rindex("System"):]
    uptime = render_report.format_uptime(snap.uptime_ns)
    assert re.fullmatch(r"1\d\.\ds", uptime)
    for fact in ("CPUs", "2", "uptime", uptime, "dump format", "ELF vmcore (QEMU dump-guest-memory with paging)",
                 "crash time", "unknown (no CRASHTIME in the dump's VMCOREINFO)", "panic",
                 'none (no "Kernel panic - not syncing" in the kernel log)'):
        assert (_md(fact) if fmt == "md" else fact) in system, fact
    doc = json.loads(rendered("kdl_abba", "json"))["facts"]
    assert doc["cpus"] == 2 and doc["uptime_ns"] == snap.uptime_ns and doc["read_from"] == snap.dump
    assert doc["crash_time"] is None and doc["crash_time_text"] == "" and doc["panic"] is None


def _md(text: str) -> str:
    return render_report._md(text)


def test_panic_crash_time_and_file_time_in_the_report() -> None:
    bundle = bundle_of("kdl_mutex")
    panic = ["Kernel panic - not syncing: hung_task: blocked tasks",
             "---[ end Kernel panic - not syncing: hung_task: blocked tasks ]---"]
    log = bundle.log + [{"seq": 20_000 + k, "ts_ns": 30_000_000_000 + k, "level": 0, "text": text}
                        for k, text in enumerate(panic)]
    crashed = report.Bundle(dataclasses.replace(bundle.snapshot, crash_time=1_700_000_000), log,
                            {**bundle.facts, "dump_mtime": 1_700_000_900.0})
    text = report.render(crashed, "txt")
    system = text[text.index("== System =="):]
    assert "panic:              hung_task: blocked tasks\n" in system
    assert "crash time:         2023-11-14 22:13:20 UTC\n" in system  # CRASHTIME wins over the file's time
    doc = json.loads(report.render(crashed, "json"))["facts"]
    assert doc["panic"] == "hung_task: blocked tasks" and doc["crash_time"] == 1_700_000_000
    assert doc["crash_time_text"] == "2023-11-14 22:13:20 UTC"
    # No CRASHTIME (QEMU's dumps): the dump file's time, marked.
    filed = report.Bundle(bundle.snapshot, bundle.log, {**bundle.facts, "dump_mtime": 1_700_000_900.0})
    assert "crash time:         2023-11-14 22:28:20 UTC (file time)\n" in report.render(filed, "txt")
    # The panic message survives a bundle's trip through JSON once it is in the snapshot.
    snap = report.with_log_facts(bundle.snapshot, log)
    assert snap.panic == "hung_task: blocked tasks" and bundle.snapshot.panic is None
    assert report.Bundle.from_dict(json.loads(json.dumps(report.Bundle(snap, log).to_dict()))).snapshot == snap
    assert report.with_log_facts(bundle.snapshot, bundle.log) is bundle.snapshot  # no panic line: unchanged


def test_the_html_header_labels_the_dump_s_time_and_the_analysis_time() -> None:
    """Two times in the HTML header, each labelled: when the dump was taken (CRASHTIME, else the file's time, with
    the uptime then) and when kdlgdb analysed it; the same two lines head the text and Markdown reports."""
    bundle = bundle_of("kdl_mutex")
    facts = {**bundle.facts, "analysed": "2026-12-05 14:20:07 UTC", "dump_mtime": 1_700_000_900.0}
    uptime = render_report.format_uptime(bundle.snapshot.uptime_ns)
    assert bundle.snapshot.uptime_ns and bundle.snapshot.crash_time is None  # QEMU's dump: no CRASHTIME
    html = report.render(report.Bundle(bundle.snapshot, bundle.log, facts), "html")
    header = html[html.index('<header class="verdict'):html.index("</header>")]
    assert (f'<span class="time"><b>dump taken:</b> 2023-11-14 22:28:20 UTC (the dump file&#x27;s time), {uptime} '
            'after boot</span>') in header
    assert '<span class="time"><b>analysed:</b> 2026-12-05 14:20:07 UTC</span>' in header
    crashed = report.Bundle(dataclasses.replace(bundle.snapshot, crash_time=1_700_000_000), bundle.log, facts)
    assert ("<b>dump taken:</b> 2023-11-14 22:13:20 UTC (the kernel&#x27;s CRASHTIME)"
            in report.render(crashed, "html"))  # CRASHTIME wins over the file's time
    text = report.render(crashed, "txt").splitlines()
    assert text[4:6] == [f"dump taken: 2023-11-14 22:13:20 UTC (the kernel's CRASHTIME), {uptime} after boot",
                         "analysed: 2026-12-05 14:20:07 UTC"]
    assert "*analysed:* 2026-12-05 14:20:07 UTC" in report.render(crashed, "md")


def test_uptime_and_crash_time_formats() -> None:
    f = render_report.format_uptime
    assert [f(None), f(360_000_000), f(10_937_731_082), f(307 * 10**9), f(11_529 * 10**9), f(190_320 * 10**9)] == [
        "unknown", "0.4s", "10.9s", "5m 07s", "3h 12m 09s", "2d 04h 52m"]
    assert render_report.format_crash_time(None) == ""
    assert render_report.format_crash_time(1_700_000_000, 5.0) == "2023-11-14 22:13:20 UTC"


# -- real gdb, real dumps -------------------------------------------------------------------------


def _dump(scenario: str, real_kernel: str) -> samples.Dump:
    return samples.ensure_dump(scenario, True, real_kernel)


@pytest.mark.realkernel
# Each scenario and each format on every kernel (the formats of every scenario: the replay tests above).
@matrix.over("scenario, fmt", [(s, fmt) for s in SCENARIOS for fmt in FORMATS], default_product=False)
def test_kdlgdb_report_every_format(real_kernel: str, scenario: str, fmt: str, tmp_path: Path) -> None:
    dump = _dump(scenario, real_kernel)
    out = tmp_path / f"report.{fmt}"
    done = kdlgdb("report", str(dump.vmlinux), str(dump.path), "-o", str(out))
    # a rebuilt dump may give other pids than the recording; a kernel thread of its own may wait undecoded
    want = expected_summary(scenario, dump.truth, _undecoded_in(done.stdout))
    assert done.returncode == 0, done.stderr  # the report is written: 0 whatever it found (status is for stdout)
    assert done.stderr == ""
    assert done.stdout.startswith(want["headline"]) and done.stdout.endswith(f"wrote {out} ({fmt})\n")
    text = out.read_text()
    if fmt == "json":
        doc = json.loads(text)
        check_waitfor(doc, samples.expected(scenario, real_kernel), dump.truth)
        assert doc["verdict"] == want["verdict"] and doc["facts"]["dump"] == str(dump.path)
        facts = doc["facts"]
        assert facts["cpus"] == 2 and facts["read_from"] == f"ELF vmcore (QEMU dump-guest-memory with paging) {dump.path}"
        # a guest is dumped ~3 s after boot (kdl_irq: as soon as its CPU locks up), or after the hung-task report
        assert 1e9 < facts["uptime_ns"] < 600e9 and facts["crash_time"] is None and facts["panic"] is None
        assert facts["crash_time_text"] == render_report.format_utc(dump.path.stat().st_mtime) + " (file time)"
        # gdb's line table names the call each blocked task sleeps in.
        for task in doc["tasks"]:
            if task["comm"] in dump.truth["tasks"] and task["cpu_context"]:  # spinning: an inlined slow path
                assert all(src for frame, src in zip(task["stack"], task["sources"]) if "[" not in frame), task
            elif task["comm"] in dump.truth["tasks"] and task["waits_on"]:
                assert any(re.fullmatch(r"kernel/(locking/(mutex|semaphore|rwsem|rtmutex|rtmutex_api|rwbase_rt|percpu-rwsem)|workqueue|sched/completion)\.c:\d+", s or "")
                           for s in task["sources"]), task
        assert int(doc["kaslr_offset"], 16) == dump.kernel_offset
        hung = doc["kernel_log"]["hung_tasks"]
        if samples.expected(scenario, real_kernel).get("blocked_when_loaded"):  # spinning CPUs: their threads are not hung
            assert not {(h["comm"], h["pid"]) for h in hung} & set(dump.truth["tasks"].items())
        else:
            # each task once or more: the detector reports again after another timeout (the 6.12-rt boots
            # print slower, and may be dumped after a second round)
            # (the detector reports D only: not a task the kernel parked in S, kdl_rtmutex on a lockdep kernel)
            in_d = {(c, p) for c, p in dump.truth["tasks"].items() if dump.truth["threads"].get(c, {}).get("state", "D") == "D"}
            assert {(h["comm"], h["pid"]) for h in hung} == in_d
            assert all(h["explained"] for h in hung)
        return
    plain = _plain(text) if fmt == "html" else text
    assert want["verb"] in plain
    for name in want["names"]:
        assert name in plain
    assert str(dump.path) in plain and samples.release(real_kernel) in plain
    if fmt == "html":
        assert text.count("<svg") == text.count('<figure class="graph">') >= 1  # one picture per part of the graph
        assert ('class="edge cycle"' in text) == bool(samples.expected(scenario, real_kernel)["cycles"])


def _installed_vmlinux(kernel: str) -> None:
    """Skip for a kernel of ours: its vmlinux is in the sample cache, not where a distribution installs one."""
    if kernel in samples.builder.BUILT_KERNELS:
        pytest.skip(f"{kernel}'s vmlinux is in the sample cache, not where kdlgdb looks for an installed one")


@pytest.mark.realkernel
def test_kdlgdb_report_finds_the_vmlinux(real_kernel: str, tmp_path: Path) -> None:
    _installed_vmlinux(real_kernel)
    dump = _dump("kdl_mutex", real_kernel)
    out = tmp_path / "hang.html"
    done = kdlgdb("report", str(dump.path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert kdlgdb("report", "--vmlinux", str(dump.vmlinux), str(dump.path), "--format", "txt").returncode == 1
    text = out.read_text()
    assert f"found by the dump&#x27;s release {real_kernel}" in text
    assert str(dump.vmlinux) in text
    # Text on standard output when there is no -o.
    done = kdlgdb("report", str(dump.path))
    assert done.returncode == 1 and done.stdout.startswith("kdlgdb report: DEADLOCK\n")
    assert "== Kernel log ==" in done.stdout
    # No vmlinux for the release: where it looked, one line, status 2.
    with pytest.raises(KdlError) as e:
        report.vmlinux_for(str(dump.path), None, [str(tmp_path / "vmlinux-{release}")])
    assert str(e.value) == (f"no vmlinux for {real_kernel}: looked in {tmp_path / ('vmlinux-' + real_kernel)} "
                            f"(install its debug symbols, e.g. linux-image-{real_kernel}-dbg, or give VMLINUX)")


@pytest.mark.realkernel
def test_kdlgdb_report_cannot_analyse(real_kernel: str, tmp_path: Path) -> None:
    junk = tmp_path / "vmcore"
    shutil.copy("/etc/passwd", junk)
    for args in ([str(junk)], ["/bin/ls", str(_dump("kdl_abba", real_kernel).path), "-o", str(tmp_path / "r.html")]):
        done = kdlgdb("report", *args)
        assert done.returncode == 2 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kdlgdb: ") and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.realkernel
def test_kdlgdb_triage(real_kernel: str, tmp_path: Path) -> None:
    _installed_vmlinux(real_kernel)
    dumps = []
    for scenario in ("kdl_abba", "kdl_control"):
        (tmp_path / scenario).mkdir()
        (tmp_path / scenario / "vmcore").symlink_to(_dump(scenario, real_kernel).path)
        dumps.append(str(tmp_path / scenario / "vmcore"))
    (tmp_path / "broken").mkdir()
    shutil.copy("/etc/passwd", tmp_path / "broken" / "vmcore")
    dumps.insert(1, str(tmp_path / "broken" / "vmcore"))
    done = kdlgdb("triage", *dumps)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["DUMP", "RELEASE", "CRASH", "TIME", "VERDICT", "CYCLE"] and len(lines) == 4
    rows = {line.split()[0]: line for line in lines[1:]}
    # QEMU's dumps hold no CRASHTIME: the crash time is the dump file's, marked so.
    for dump in dumps:
        when = render_report.format_utc(Path(dump).stat().st_mtime) + " (file time)"
        assert rows[dump][lines[0].index("CRASH TIME"):].startswith(when + " "), rows[dump]
    a = _dump("kdl_abba", real_kernel).truth["tasks"]
    abba = rows[dumps[0]]
    assert f" {real_kernel} " in abba and " probable deadlock " in abba
    assert abba.rstrip().endswith(f"\"kdl_a\" (pid {a['kdl_a']}) -> sem2 [kdl_abba] -> \"kdl_b\" (pid {a['kdl_b']}) -> "
                                  f"sem1 [kdl_abba] -> \"kdl_a\" (pid {a['kdl_a']})")
    assert f"error: {dumps[1]} is not an ELF vmcore" in rows[dumps[1]]
    control = rows[dumps[2]]
    assert " no deadlock " in control and 'chain: "kdl_c_w1"' in control and "kdl_c_owner" in control
    assert [line.split()[0] for line in lines[1:]] == dumps  # in the order given


@pytest.mark.realkernel
def test_kd_report_in_gdb(real_kernel: str, tmp_path: Path) -> None:
    dump = _dump("kdl_rwsem", real_kernel)
    out = tmp_path / "in-gdb.md"
    done = shared_gdb(dump.vmlinux, dump.path, f"kd-report -o {out}", "kd-report", f"kd-report -o {tmp_path / 'x.pdf'}",
                      "help kd-report")
    assert "Traceback" not in done.stdout + done.stderr
    assert f"kd-report: wrote {out} (md)" in done.stdout
    assert 'PROBABLE DEADLOCK: "kdl_r_reader"' in done.stdout
    text = out.read_text()
    assert text.startswith("# kdlgdb report: PROBABLE DEADLOCK") and "INFO: task kdl_r_reader:" in text
    assert "| dump " in text and str(dump.path) in text
    errors = [line for line in done.stderr.splitlines() if line.startswith("kd-report")]
    assert errors[0].startswith("kd-report: the following arguments are required: -o/--output; usage: kd-report")
    assert errors[1].startswith("kd-report: cannot tell the format from ")
    assert "usage: kd-report" in done.stdout  # help


def test_sentences_for_other_shapes() -> None:
    """A self-deadlock, a three-task cycle and two cycles at once, on hand-made snapshots."""
    a, b, c, d = (0xFFFF888020000000 + k * 0x4000 for k in range(4))
    la, lb, lc, ld = (0xFFFFFFFFC0100000 + k * 0x40 for k in range(4))

    def snap(tasks: list[Task], locks: list[Lock]) -> tuple[Snapshot, WaitForGraph]:
        s = Snapshot(release="6.1", tasks=tasks, locks=locks)
        return s, WaitForGraph(s)

    s, g = snap([Task(a, 1, 1, "self", "D", 0, waits_on=la)],
                [Lock(la, "mutex", "big", "m", [Owner(a, "certain", "mutex.owner")], [a])])
    assert render_report.summary_sentence(s, g) == (
        "\"self\" (pid 1) deadlocks on itself: it waits for big [m], which it already holds.")
    three = [Task(a, 1, 1, "t1", "D", 0, waits_on=la), Task(b, 2, 2, "t2", "D", 0, waits_on=lb),
             Task(c, 3, 3, "t3", "D", 0, waits_on=lc)]
    locks = [Lock(la, "mutex", "A", "m", [Owner(b, "certain", "o")], [a]),
             Lock(lb, "mutex", "B", "m", [Owner(c, "certain", "o")], [b]),
             Lock(lc, "mutex", "C", "m", [Owner(a, "certain", "o")], [c])]
    s, g = snap(three, locks)
    assert render_report.summary_sentence(s, g) == (
        "\"t1\" (pid 1), \"t2\" (pid 2) and \"t3\" (pid 3) deadlock on A, B and C [m]: circular lock order A -> B -> C -> A.")
    assert render_report.cycle_line(g.cycles[0], g) == "\"t1\" (pid 1) -> A [m] -> \"t2\" (pid 2) -> B [m] -> \"t3\" (pid 3) -> C [m] -> \"t1\" (pid 1)"
    s, g = snap(three + [Task(d, 4, 4, "t4", "D", 0, waits_on=ld)],
                locks + [Lock(ld, "semaphore", None, None, [Owner(d, "inferred", "down() above")], [d])])
    sentence = render_report.summary_sentence(s, g)
    assert sentence.startswith("2 deadlocks: \"t1\" (pid 1), \"t2\" (pid 2) and \"t3\" (pid 3) deadlock on A, B and C [m]")
    assert sentence.endswith(f"; \"t4\" (pid 4) probably deadlocks on itself: it waits for semaphore {ld:#x}, which it "
                             "already holds (inferred, not recorded by the kernel: \"t4\" holds semaphore "
                             f"{ld:#x}).")
    assert render_report.verdict(g) == "deadlock"
    _dot_plain(render_dot.render_dot(s, g))
    s, g = snap([Task(a, 1, 1, "idle", "S", 0)], [])
    assert render_report.summary_sentence(s, g) == "No deadlock: no task waits on a lock."
    for fmt in FORMATS:
        assert "No deadlock: no task waits on a lock." in render_report.render_report(s, g, fmt)
