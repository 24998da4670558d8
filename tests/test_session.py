"""The session the front ends share, and the bundle's schema version and converter (kdlgdb.frontends.session)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdlgdb.errors import KdlError
from kdlgdb.frontends import session
from kdlgdb.frontends.session import BUNDLE_SCHEMAS, BUNDLE_VERSION, Bundle, Session, model_schema
from kdlgdb.target.replay import ReplayTarget

RECORDING = Path(__file__).parent / "vmcore_samples" / "recordings" / "6.1.0-56-cloud-amd64" / "kdl_mutex-kaslr.json.gz"


def _session() -> tuple[Session, list[str]]:
    made: list[str] = []

    def target() -> ReplayTarget:
        made.append("target")
        return ReplayTarget(str(RECORDING))

    return Session(target, lambda k: {"dump": "vmcore", "debugger": "replay"}), made


def test_the_bundle_version_is_the_models() -> None:
    """A change to the model's dataclasses changes model_schema(): bump BUNDLE_VERSION, pin the new schema
    in BUNDLE_SCHEMAS and add a converter from the old version to CONVERTERS."""
    assert model_schema() == BUNDLE_SCHEMAS[BUNDLE_VERSION]
    assert set(session.CONVERTERS) == set(BUNDLE_SCHEMAS) - {BUNDLE_VERSION}


def test_a_bundle_reads_back_as_it_was_written(tmp_path: Path) -> None:
    s, _ = _session()
    bundle = s.bundle()
    assert bundle.facts["dump"] == "vmcore" and bundle.facts["debugger"] == "replay" and "kdlgdb" in bundle.facts
    path = str(tmp_path / "bundle.json")
    session.save_bundle(bundle, path)
    again = session.load_bundle(path)
    assert again.snapshot == bundle.snapshot and again.log == json.loads(json.dumps(bundle.log))
    assert json.loads(Path(path).read_text())["kdlgdb_bundle"] == BUNDLE_VERSION


def test_an_older_bundle_goes_through_its_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = _session()
    data = s.bundle().to_dict()
    old = dict(data, kdlgdb_bundle=0, facts={"old": True})
    monkeypatch.setitem(session.CONVERTERS, 0, lambda d: dict(d, kdlgdb_bundle=1, facts={"converted": d["facts"]}))
    assert Bundle.from_dict(old).facts == {"converted": {"old": True}}
    with pytest.raises(KdlError, match="version 7"):
        Bundle.from_dict(dict(data, kdlgdb_bundle=7))
    with pytest.raises(KdlError, match="not a kdlgdb bundle"):
        Bundle.from_dict({"snapshot": {}})


def test_the_session_reads_the_kernel_once() -> None:
    s, made = _session()
    first = s.snapshot()
    assert s.snapshot() is first and s.kernel() is s.kernel() and made == ["target"]
    assert all(f.source is None for t in first.tasks for f in t.frames)
    assert s.snapshot(source_lines=True) is first
    assert any(f.source for t in first.tasks for f in t.frames)
    s.forget()
    assert s.snapshot() is not first and made == ["target", "target"]


def test_the_session_writes_a_report(tmp_path: Path) -> None:
    s, _ = _session()
    out = tmp_path / "r.txt"
    said = s.report(str(out), None)
    assert said.startswith("DEADLOCK: ") and said.endswith(f"kd-report: wrote {out} (txt)")
    assert "kdl_m1" in out.read_text()
