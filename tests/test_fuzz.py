"""The fuzzing tier (issue 16): no input, however broken, makes kdlgdb raise an exception of its own
making or hang.

By default a fixed budget with fixed seeds (see ``BUDGET``); ``--fuzz-cases N`` runs N cases across
the three kinds, ``--fuzz-seed S`` another seed, ``--fuzz-case KIND:CASE`` one case again. Each failure
is printed with its seed, kind, case and mutations. The machinery is in tests/fuzzing.py.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

import fuzzing
import samples

#: gdb's Python (Debian's), which has every codec's package (python3-lzo, ...): see README's set-up.
GDB_PYTHON = "/usr/bin/python3"
RECORDINGS = sorted((Path(__file__).parent / "vmcore_samples" / "recordings").glob("*/*.json.gz"))

#: Cases of each kind in the default run (seed 0): ~7 s of CPU for the dumps, ~14 s for the memory, ~7 s (gdb's
#: own, mostly loading the vmlinux) for the gdbstub on this 2-core machine; wall time on a loaded machine more.
BUDGET = {"dump": 6000, "memory": 300, "gdbstub": 3}
#: How ``--fuzz-cases N`` shares N out: a memory case (~50 ms: the analysis and every renderer) costs forty
#: dump cases, a gdbstub case (a gdb that loads the vmlinux, ~3 s of CPU) a hundred memory cases.
SHARE = {"dump": 0.7, "memory": 0.3}


def _cases(config: pytest.Config, kind: str) -> list[int]:
    only = config.getoption("--fuzz-case")
    if only:
        want, _, number = only.partition(":")
        return [int(number)] if want == kind else []
    total = config.getoption("--fuzz-cases")
    if not total:
        return list(range(BUDGET[kind]))
    if kind == "gdbstub":
        return list(range(max(BUDGET["gdbstub"], total // 2000)))
    return list(range(int(total * SHARE[kind])))


def _progress(kind: str, done: int, total: int, failures: list[fuzzing.Failure]) -> None:
    """A line every 1,000 cases of a long run (``-s`` shows it), so that a run cut short still says how far it got."""
    if total >= 10_000 and done % 1000 == 0:
        print(f"fuzz {kind}: {done}/{total} cases, {len(failures)} failed so far", file=sys.stderr, flush=True)


def _check(config: pytest.Config, kind: str, failures: list[fuzzing.Failure], ran: int, started: float) -> None:
    seed = config.getoption("--fuzz-seed")
    print(f"\nfuzz {kind}: {ran} cases, seed {seed}, {len(failures)} failed, {time.process_time() - started:.1f} s CPU",
          file=sys.stderr)
    if failures:
        lines = [f"seed {seed} {f}" for f in failures[:20]]
        replay = f"replay one: python3 -m pytest -n 0 tests/test_fuzz.py --fuzz-seed {seed} --fuzz-case KIND:CASE"
        pytest.fail(f"{len(failures)} of {ran} {kind} cases failed ({replay}):\n" + "\n".join(lines), pytrace=False)


@pytest.fixture(scope="module")
def minis(tmp_path_factory: pytest.TempPathFactory) -> list[fuzzing.Mini]:
    """A mini dump of each form of the kdl_abba sample on the default kernel (the form with every codec)."""
    scenario = samples.PHYS_SCENARIO
    why = samples.missing_message(samples.DEFAULT_KERNEL)
    if why:
        pytest.fail(why)
    kinds = [k for k in samples.KINDS + samples.CODEC_KINDS]
    paths = {kind: samples.ensure_dump(scenario, False, samples.DEFAULT_KERNEL, kind=kind).path for kind in kinds}
    return fuzzing.make_minis(paths)


@pytest.mark.realkernel
def test_fuzz_dump_files(minis: list[fuzzing.Mini], request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Mutated headers, program headers, notes, VMCOREINFO, bitmaps, page descriptors and compressed pages of
    every dump form: each opens with one line of error at most, and its kernel objects read or not."""
    config = request.config
    seed = config.getoption("--fuzz-seed")
    here = [m for m in minis if not m.needs or importlib.util.find_spec(m.needs)]
    for m in minis:
        assert len(m.data) < 2 << 20, (m.name, len(m.data))
        path = tmp_path / f"unmutated-{m.name}"
        path.write_bytes(m.data)
        if m in here:
            fuzzing.open_and_read(str(path), m)  # as it is, the mini dump reads without an error
    failures, cases, started = [], _cases(config, "dump"), time.process_time()
    elsewhere: dict[str, list[int]] = {}  # a codec this Python lacks (python3-lzo): its cases in gdb's Python
    for case in cases:
        mini = minis[case % len(minis)]
        if mini not in here:
            elsewhere.setdefault(mini.name, []).append(case)
            continue
        what, body = fuzzing.dump_case(mini, fuzzing.case_rng(seed, "dump", case), tmp_path)
        failure = fuzzing.run_case("dump", case, what, body)
        if failure:
            failures.append(failure)
            print(f"\nfuzz failed: seed {seed} {failure}", file=sys.stderr, flush=True)  # at once: a long run
        _progress("dump", case + 1, len(cases), failures)
    for mini in minis:
        if mini.name in elsewhere:
            failures += fuzzing.run_dump_cases_in(GDB_PYTHON, mini, seed, elsewhere[mini.name], tmp_path)
    _check(config, "dump", failures, len(cases), started)


def test_fuzz_kernel_memory(request: pytest.FixtureRequest) -> None:
    """Mutated memory of the replay recordings (pointers, list heads, counts, stacks) through the analysis,
    every kd-* command's text and JSON, DOT and every report format."""
    config = request.config
    seed = config.getoption("--fuzz-seed")
    recordings = [fuzzing.load_recording(p) for p in RECORDINGS]
    for rec in recordings[:2]:  # as it is, a recording analyses and renders (kd-info: not recorded)
        errors = fuzzing.analyse_and_render(fuzzing.FuzzReplay(rec, [bytearray(d) for d in rec.data], rec.answers))
        assert all(e.startswith("kd-info:") for e in errors), errors
    failures, cases, started = [], _cases(config, "memory"), time.process_time()
    for case in cases:
        rng = fuzzing.case_rng(seed, "memory", case)
        what, target = fuzzing.memory_case(recordings[case % len(recordings)], rng)
        failure = fuzzing.run_case("memory", case, what, lambda: fuzzing.analyse_and_render(target))
        if failure:
            failures.append(failure)
            print(f"\nfuzz failed: seed {seed} {failure}", file=sys.stderr, flush=True)  # at once: a long run
        _progress("memory", case + 1, len(cases), failures)
    _check(config, "memory", failures, len(cases), started)


@pytest.mark.realkernel
def test_fuzz_gdbstub(request: pytest.FixtureRequest) -> None:
    """Real gdb, ``target remote`` to a fake stub serving a real dump's memory that, after a random number of
    reads, answers with errors, short or garbled packets, nothing, or drops the connection: ``kd-waitfor``
    ends with its analysis or one line, no traceback, no hang."""
    import random

    import fakestub
    import realgdb
    from kdlgdb.target.dumpfile import DumpFile

    config = request.config
    seed = config.getoption("--fuzz-seed")
    cases = _cases(config, "gdbstub")
    if not cases:
        return
    sample = samples.ensure_dump(samples.PHYS_SCENARIO, False, samples.DEFAULT_KERNEL, kind="kdump")
    dump = DumpFile(str(sample.path))
    failures, started = [], time.process_time()
    try:
        for case in cases:
            rng = fuzzing.case_rng(seed, "gdbstub", case)
            fault = fakestub.FAULTS[(case + seed) % len(fakestub.FAULTS)]
            good = rng.randrange(0, 240)  # kd-waitfor on this dump makes ~230 reads
            what = f"{fault} after {good} reads"
            with fakestub.FakeStub(dump.read, fault, good, rng) as stub:
                failure = fuzzing.run_case("gdbstub", case, what, lambda: _one_line_from_gdb(realgdb, sample.vmlinux, stub.port))
            if stub.error:
                failure = fuzzing.Failure("gdbstub", case, what, f"the fake stub itself failed: {stub.error}")
            if failure:
                failures.append(failure)
                print(f"\nfuzz failed: seed {seed} {failure}", file=sys.stderr, flush=True)
    finally:
        dump.close()
    _check(config, "gdbstub", failures, len(cases), started)


def _one_line_from_gdb(realgdb, vmlinux: Path, port: int) -> None:
    """kd-waitfor over the stub: an analysis or one kd-waitfor line; AssertionError for a traceback, an internal
    error or more lines; fuzzing.Hang when gdb does not end."""
    import subprocess

    try:
        done = realgdb.gdb(vmlinux, None, "set remotetimeout 2", "kd-waitfor", remote=f"127.0.0.1:{port}",
                           timeout=int(fuzzing.GDB_CASE_SECONDS))
    except subprocess.TimeoutExpired:
        raise fuzzing.Hang(f"gdb did not end in {fuzzing.GDB_CASE_SECONDS:.0f} s") from None
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "internal error" not in out, out[-2000:]
    ours = [line for line in done.stderr.splitlines() if line.startswith("kd-")]
    assert len(ours) <= 1, ours
    assert ours or '"kdl_a" (pid' in done.stdout or "skipped:" in done.stdout, out[-2000:]
