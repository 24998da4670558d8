"""Machine-readable output: plain dicts ready for :func:`json.dumps`.

The keys documented in :func:`waitfor_json` are a public schema: scripts and
the report depend on them, so keys may be added but never renamed or removed.
Addresses are lowercase hex strings with ``0x``; pids are integers; lists are
sorted (tasks by pid then address, locks by address) so output is stable.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from ..analysis.graph import Chain, Cycle, Edge, WaitForGraph
from ..analysis.kernlog import LockdepFindings, LockdepReport
from ..model import BlockedIn, HeldLock, Lock, Naming, Snapshot, Task

__all__ = ["waitfor_json", "held_json", "held_lock_json", "tasks_json", "task_json", "blocked_in_json", "lock_json", "naming_json", "cycle_json", "chain_json", "edge_json"]


def _hex(address: Optional[int]) -> Optional[str]:
    return None if address is None else f"{address:#x}"


def _pid(snapshot_tasks: dict[int, Task], address: int) -> Optional[int]:
    task = snapshot_tasks.get(address)
    return task.pid if task else None


def _plain(value: Any) -> Any:
    """``value`` with anything JSON cannot hold turned into a string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _holds_by_task(snapshot: Snapshot) -> dict[int, list[int]]:
    holds: dict[int, list[int]] = {}
    for lock in sorted(snapshot.locks, key=lambda lk: lk.address):
        for owner in lock.owners:
            held = holds.setdefault(owner.task, [])
            if lock.address not in held:
                held.append(lock.address)
    return holds


def task_json(task: Task, holds: list[int]) -> dict[str, Any]:
    """One task: ``pid``, ``comm``, ``state``, ``waits_on`` (hex or None) and more."""
    return {
        "pid": task.pid,
        "comm": task.comm,
        "state": task.state,
        "waits_on": _hex(task.waits_on),
        "address": _hex(task.address),
        "tgid": task.tgid,
        "cpu": task.cpu,
        "on_cpu": task.on_cpu,
        "holds": [_hex(lk) for lk in holds],
        "last_ran_ns": task.last_ran_ns,
        "wait_evidence": task.wait_evidence,
        "wait_source": task.wait_source,  # which source decided waits_on: "frame", "blocked_on", "wait list", ...
        "stack": [frame.describe() for frame in task.frames],
        "sources": [frame.source for frame in task.frames],  # stack[i]'s file:line, or None
        "interrupted": [i for i, frame in enumerate(task.frames) if frame.regs],  # stack[i] is a pt_regs' ip
        "guessed": [i for i, frame in enumerate(task.frames) if frame.guessed],  # stack[i]: the frame-pointer guess
        "unwinder": task.unwinder,  # how the stack was found: "orc", "frame pointer" or "scan"
        "unwind_error": task.unwind_error,  # why the unwind stopped before the end of the stack, or None
        "cpu_context": _cpu_context_json(task),
        "blocked_in": blocked_in_json(task.blocked_in),
        "held": None if task.held is None else [held_lock_json(h) for h in task.held],
    }


def held_lock_json(entry: HeldLock) -> dict[str, Any]:
    """One lockdep held_locks entry: ``instance`` (its lockdep_map), ``class``, ``acquire_ip``, ``acquired_at``,
    ``mode`` (exclusive, read, recursive read), ``lock`` (the lock it is in, hex, when the snapshot has it)."""
    return {
        "instance": _hex(entry.instance),
        "class": entry.name,
        "acquire_ip": _hex(entry.acquire_ip),
        "acquired_at": entry.acquired_at,
        "mode": entry.mode(),
        "lock": _hex(entry.lock),
    }


def held_json(snapshot: Snapshot, tasks: list[Task]) -> dict[str, Any]:
    """kd-held --json: ``lockdep`` (null without lockdep, else whether it still checked: ``{"on": bool}``) and
    ``tasks``, the tasks with held_locks entries (``pid``, ``comm``, ``address``, ``held``)."""
    return {
        "lockdep": None if snapshot.lockdep_on is None else {"on": snapshot.lockdep_on},
        "tasks": [{"pid": t.pid, "comm": t.comm, "address": _hex(t.address),
                   "held": [held_lock_json(h) for h in t.held or []]} for t in tasks if t.held],
    }


def blocked_in_json(blocked: Optional[BlockedIn]) -> Optional[dict[str, Any]]:
    """What a task waits for when it is not a lock: ``kind`` (completion, waitqueue, io, sleep, unknown),
    ``address``/``symbol``/``module`` of the completion or wait queue head (null for the others, or
    when not found), ``function`` it sleeps in, ``frame`` and ``evidence``; None for other tasks."""
    if blocked is None:
        return None
    return {
        "kind": blocked.kind,
        "address": _hex(blocked.address),
        "symbol": blocked.symbol,
        "module": blocked.module,
        "function": blocked.function,
        "frame": blocked.frame,
        "evidence": blocked.evidence,
    }


def _cpu_context_json(task: Task) -> Optional[dict[str, Any]]:
    """What the CPU of an on-CPU task was doing (None for tasks off CPU, or without CPU registers)."""
    ctx = task.cpu_context
    if ctx is None:
        return None
    return {"cpu": ctx.cpu, "context": ctx.context, "pc": _hex(ctx.pc), "symbol": ctx.symbol, "now": ctx.now,
            "evidence": ctx.evidence, "interrupt_acquire": ctx.interrupt_acquire, "fix": ctx.fix}


def tasks_json(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every task in the snapshot, sorted by pid then address."""
    holds = _holds_by_task(snapshot)
    ordered = sorted(snapshot.tasks, key=lambda t: (t.pid, t.address))
    return [task_json(t, holds.get(t.address, [])) for t in ordered]


def edge_json(edge: Edge, tasks: dict[int, Task]) -> dict[str, Any]:
    """One wait-for edge: ``waiter`` pid waits on ``lock``, held by ``owner`` pid."""
    return {
        "waiter": _pid(tasks, edge.waiter),
        "lock": _hex(edge.lock),
        "owner": _pid(tasks, edge.owner),
        "confidence": edge.confidence,
        "evidence": edge.evidence,
        "waiter_task": _hex(edge.waiter),
        "owner_task": _hex(edge.owner),
    }


def lock_json(lock: Lock, graph: WaitForGraph, tasks: dict[int, Task]) -> dict[str, Any]:
    """One lock with its owners (and why we think so) and its waiters in wait-list order."""
    waiters = graph.waiters(lock.address)
    return {
        "address": _hex(lock.address),
        "type": lock.type,
        "symbol": lock.symbol,
        "module": lock.module,
        "owners": [
            {
                "pid": _pid(tasks, o.task),
                "confidence": o.confidence,
                "evidence": o.evidence,
                "mode": o.mode,
                "task": _hex(o.task),
                "comm": tasks[o.task].comm if o.task in tasks else None,
            }
            for o in lock.owners
        ],
        "waiters": [_pid(tasks, t) for t in waiters],
        "details": _plain(lock.details),
        "name": lock.name(),
        "naming": naming_json(lock.naming),
        "holder": lock.holder,
        "waiter_tasks": [_hex(t) for t in waiters],
    }


def naming_json(naming: Optional[Naming]) -> Optional[dict[str, Any]]:
    """Where a lock with no symbol lives (``Lock.naming``), addresses in hex; None when it has a symbol or
    nothing better than its address is known."""
    if naming is None:
        return None
    out = {key: value for key, value in asdict(naming).items() if value is not None}
    for key in ("object", "container"):
        if key in out:
            out[key] = _hex(out[key])
    return out


def cycle_json(cycle: Cycle, tasks: dict[int, Task]) -> dict[str, Any]:
    """One cycle: ``pids[k]`` waits on ``locks[k]``, which is held by ``pids[k+1]``."""
    return {
        "pids": [_pid(tasks, t) for t in cycle.tasks],
        "comms": [tasks[t].comm if t in tasks else None for t in cycle.tasks],
        "locks": [_hex(lk) for lk in cycle.locks],
        "verdict": cycle.verdict,
        "inferred": [edge_json(e, tasks) for e in cycle.inferred],
        "blocked_behind": [_pid(tasks, t) for t in cycle.blocked_behind],
        "advice": cycle.advice,
        "tasks": [_hex(t) for t in cycle.tasks],
        "edges": [edge_json(e, tasks) for e in cycle.edges],
        "blocked_behind_tasks": [_hex(t) for t in cycle.blocked_behind],
        "interrupt": cycle.interrupt,  # a self-deadlock through an interrupt: {"context", "fix", "acquire"}
    }


def chain_json(chain: Chain, tasks: dict[int, Task]) -> dict[str, Any]:
    """One chain: ``pids[k]`` waits on ``locks[k]``; the last pid is the root when it is known."""
    return {
        "pids": [_pid(tasks, t) for t in chain.tasks],
        "comms": [tasks[t].comm if t in tasks else None for t in chain.tasks],
        "locks": [_hex(lk) for lk in chain.locks],
        "root": None if chain.root is None else _pid(tasks, chain.root),
        "root_task": _hex(chain.root),
        "root_reason": chain.root_reason,
        "joined": [_pid(tasks, t) for t in chain.joined],
        "tasks": [_hex(t) for t in chain.tasks],
        "joined_tasks": [_hex(t) for t in chain.joined],
    }


def lockdep_report_json(report: LockdepReport, cycle: Optional[int]) -> dict[str, Any]:
    """One lockdep report of the kernel log: ``kind`` (circular, recursive, inconsistent, bad unlock),
    ``headline``, ``ts_ns``, ``comm``/``pid`` of the task that triggered it, ``locks`` (``name``, ``role``:
    acquiring, held, releasing, chain; ``map``: its lockdep_map, hex, or null; ``site``), ``scenario`` (the
    lines of its "Possible unsafe locking scenario") and ``cycle``, the index in ``cycles`` of the deadlock
    it explains, or null."""
    return {
        "kind": report.kind, "headline": report.headline, "ts_ns": report.ts_ns, "comm": report.comm,
        "pid": report.pid, "locks": [{"name": lk.name, "role": lk.role, "map": _hex(lk.map), "site": lk.site}
                                     for lk in report.locks],
        "scenario": report.scenario, "cycle": cycle,
    }


def waitfor_json(snapshot: Snapshot, graph: WaitForGraph, lockdep: Optional[LockdepFindings] = None) -> dict[str, Any]:
    """The wait-for report as a dict with this stable schema::

        {"tasks":  [{"pid", "comm", "state", "waits_on", "address", "tgid", "cpu",
                     "holds", "last_ran_ns", "stack", "sources",
                     "blocked_in": {"kind", "address", "symbol", "module", "function", ...} or None,
                     "held": [{"instance", "class", "acquire_ip", "acquired_at", "mode", "lock"}] or None,  # lockdep
                     ...}],  # D-state tasks, tasks in a lock
         "locks":  [{"address", "type", "symbol", "module",
                     "owners": [{"pid", "confidence", "evidence", "mode", ...}],  # certain | inferred | stale
                     "waiters": [pid, ...], "details": {...}, ...}],
         "cycles": [{"pids", "comms", "locks", "verdict", "inferred", "blocked_behind",
                     "advice", ...}],
         "chains": [{"pids", "comms", "locks", "root", "root_task", "root_reason", "joined", ...}],
         "problems": [{"what", "where", "why"}], "release": str, "kaslr_offset": "0x...",
         "lockdep": null (no lockdep) or {"on": bool} (false: it turned itself off, held_locks may be stale),
         "lockdep_reports": [{"kind", "headline", "ts_ns", "comm", "pid", "locks", "scenario", "cycle"}],
         "lockdep_turned_off": bool,  # lockdep's reports in the kernel log (see lockdep_report_json)
         "debug_info": "dwarf" (types and symbols from the vmlinux) or "btf" (the dump's own BTF and kallsyms)}
    """
    tasks = {t.address: t for t in snapshot.tasks}
    involved = {t.address for t in snapshot.tasks if t.state == "D" or t.waits_on is not None}
    for lock in snapshot.locks:
        involved.update(o.task for o in lock.owners)
        involved.update(graph.waiters(lock.address))
    shown = sorted((tasks[a] for a in involved if a in tasks), key=lambda t: (t.pid, t.address))
    return {
        "tasks": [task_json(t, graph.holds(t.address)) for t in shown],
        "locks": [lock_json(lk, graph, tasks) for lk in sorted(snapshot.locks, key=lambda lk: lk.address)],
        "cycles": [cycle_json(c, tasks) for c in graph.cycles],
        "chains": [chain_json(c, tasks) for c in graph.chains],
        "problems": [{"what": p.what, "where": p.where, "why": p.why} for p in snapshot.problems],
        "release": snapshot.release,
        "kaslr_offset": _hex(snapshot.kaslr_offset),
        "lockdep": None if snapshot.lockdep_on is None else {"on": snapshot.lockdep_on},
        "lockdep_reports": [lockdep_report_json(r, c) for r, c in zip(lockdep.reports, lockdep.explains)] if lockdep else [],
        "lockdep_turned_off": bool(lockdep and lockdep.turned_off),
        "debug_info": snapshot.debug_info,
    }
