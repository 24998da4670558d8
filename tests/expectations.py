"""Check a `kd-waitfor --json` document against what the kernel itself said.

Each scenario's ``expected.json`` names its tasks and locks; the truth of a
dump or a live guest gives their pids and addresses as the guest printed them
(``kdl-truth`` lines from the module). So these checks compare kdlgdb's answer
with the kernel's own, not with another kdlgdb run.
"""
from __future__ import annotations

from typing import Any

CERTAIN_TYPES = {"mutex"}


def _rotate(seq: list[Any]) -> list[Any]:
    i = seq.index(min(seq))
    return seq[i:] + seq[:i]


def check_waitfor(doc: dict[str, Any], expected: dict[str, Any], truth: dict[str, Any]) -> None:
    """Assert every fact of ``expected`` (names) holds in ``doc`` (kdlgdb's JSON), via ``truth``."""
    pid = truth["tasks"]
    address = {name: lock["address"] for name, lock in truth["locks"].items()}
    module = expected["module"]
    tasks = {t["pid"]: t for t in doc["tasks"]}
    locks = {lk["address"]: lk for lk in doc["locks"]}

    for comm in expected["tasks"]:
        assert pid[comm] in tasks, f"{comm} (pid {pid[comm]}) missing from tasks"
        assert tasks[pid[comm]]["comm"] == comm
    for comm, lock in expected["waits"].items():
        task = tasks[pid[comm]]
        assert task["state"] == "D", f"{comm} is {task['state']}, not D"
        assert task["waits_on"] == address[lock], f"{comm} waits on {task['waits_on']}, not {lock} {address[lock]}"
    for name, kind in expected["lock_types"].items():
        lock = locks.get(address[name])
        waiters = sorted(pid[c] for c, w in expected["waits"].items() if w == name)
        if not waiters:
            continue
        assert lock is not None, f"{name} ({address[name]}) missing from locks"
        assert lock["type"] == kind
        assert (lock["symbol"], lock["module"]) == (name, module)
        assert sorted(lock["waiters"]) == waiters, f"{name} waiters {lock['waiters']} != {waiters}"
        holders = sorted(pid[c] for c, held in expected["holds"].items() if name in held)
        scenario_pids = set(pid.values())
        owners = sorted(o["pid"] for o in lock["owners"] if o["pid"] in scenario_pids)
        assert owners == holders, f"{name} owners {owners} != {holders}"
        for owner in lock["owners"]:
            if owner["pid"] in holders:
                mode = expected.get("hold_modes", {}).get(_comm(pid, owner["pid"]), {}).get(name)
                certain = kind in CERTAIN_TYPES or mode == "write"
                assert owner["confidence"] == ("certain" if certain else "inferred"), owner
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
    d_state = {t["pid"] for t in doc["tasks"] if t["state"] == "D"}
    assert {pid[c] for c in expected["waits"]} <= d_state


def _comm(pid: dict[str, int], p: int) -> str:
    return next(c for c, q in pid.items() if q == p)
