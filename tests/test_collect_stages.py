"""Single stages of the collection pipeline on a replay of a real dump (6.1, kdl_rtmutex and kdl_abba)."""
from __future__ import annotations

import json
from pathlib import Path

from kdlgdb.kernel import collect as pipeline
from kdlgdb.kernel.collect import STAGES, Collection
from kdlgdb.target.replay import ReplayTarget

RECORDINGS = Path(__file__).parent / "vmcore_samples" / "recordings" / "6.1.0-56-cloud-amd64"


def _until(name: str, stage: pipeline.Stage) -> tuple[Collection, dict]:
    """A Collection of recording ``name`` after every stage before ``stage``, and the recording's truth."""
    path = RECORDINGS / f"{name}-kaslr.json.gz"
    c = Collection.start(ReplayTarget(str(path)))
    c.run(STAGES[:STAGES.index(stage)])
    return c, json.loads(path.with_suffix("").with_suffix(".truth.json").read_text())


def _pid(c: Collection, comm: str):
    return next(t for t in c.tasks.values() if t.comm == comm)


def test_stages_are_the_algorithm() -> None:
    assert len(set(STAGES)) == len(STAGES)
    for stage in STAGES:
        assert stage.__doc__ and "Reads" in stage.__doc__ and "Writes" in stage.__doc__, stage.__name__
    # The order the stages depend on.
    order = STAGES.index
    assert order(pipeline.find_rt_mutex_waits) < order(pipeline.find_lock_waits)
    assert order(pipeline.find_lock_waits) < order(pipeline.find_percpu_rwsem_writer_waits)
    assert order(pipeline.find_freezes) < order(pipeline.check_lock_owners) < order(pipeline.infer_holders)
    assert order(pipeline.infer_holders) < order(pipeline.find_blocked_on_other) < order(pipeline.find_work_item_waits)


def test_rt_mutex_stage_alone() -> None:
    c, truth = _until("kdl_rtmutex", pipeline.find_rt_mutex_waits)
    assert c.locks == {} and all(t.waits_on is None for t in c.tasks.values())
    pipeline.find_rt_mutex_waits(c)
    r1, r2 = (int(truth["locks"][n]["address"], 16) for n in ("r1", "r2"))
    assert _pid(c, "kdl_rt1").waits_on == r2
    assert _pid(c, "kdl_rt2").waits_on == r1
    assert _pid(c, "kdl_rt3").waits_on == r1
    assert set(c.locks) == {r1, r2} and {c.locks[r1].type, c.locks[r2].type} == {"rt_mutex"}
    assert [o.task for o in c.locks[r1].current_owners()] == [_pid(c, "kdl_rt1").address]
    # The wait-list scan after it finds nothing more: the rt_mutex waiters are claimed.
    pipeline.find_lock_waits(c)
    assert set(c.locks) == {r1, r2}


def test_wait_list_and_holder_stages_alone() -> None:
    c, truth = _until("kdl_abba", pipeline.find_lock_waits)
    pipeline.find_lock_waits(c)
    sem1, sem2 = (int(truth["locks"][n]["address"], 16) for n in ("sem1", "sem2"))
    a, b = _pid(c, "kdl_a"), _pid(c, "kdl_b")
    assert (a.waits_on, b.waits_on) == (sem2, sem1)
    assert all(not lk.owners for lk in c.locks.values())  # a semaphore records no owner
    c.run(STAGES[STAGES.index(pipeline.find_lock_waits) + 1:STAGES.index(pipeline.infer_holders)])
    pipeline.infer_holders(c)
    assert [o.task for o in c.locks[sem1].owners] == [a.address]
    assert [o.task for o in c.locks[sem2].owners] == [b.address]
    assert c.locks[sem1].owners[0].confidence == "inferred"
