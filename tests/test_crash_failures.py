"""Failures inside crash stay inside crash: one line each, and the session goes on working.

Faults are real: a missing interpreter or package, a Python that lacks a module, an
exception and a dying Python process injected through ``sitecustomize`` (which the real
Python process imports at start-up), and Ctrl-C on a real terminal.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import realcrash
import samples

pytestmark = pytest.mark.realkernel


@pytest.fixture(scope="module")
def dump(crash_kernel: str) -> samples.Dump:
    return samples.ensure_dump("kdl_abba", False, crash_kernel)


def kd_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("kd-")]


def still_works(out: str, dump: samples.Dump) -> bool:
    """The `kd-tasks -s D` each session ends with printed both D-state tasks."""
    a, b = dump.truth["tasks"]["kdl_a"], dump.truth["tasks"]["kdl_b"]
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in ([str(a)], [str(b)])]
    return sorted((int(r[0]), r[3], r[-1]) for r in rows) == [(a, "D", "kdl_a"), (b, "D", "kdl_b")]


def test_bad_options_are_one_line(dump: samples.Dump) -> None:
    done = realcrash.crash(dump.vmlinux, dump.path, "kd-tasks --bogus", "kd-bt 99999", "kd-waitfor -p x",
                           "kd-set colour pink", "kd-set", "kd-tasks -s D")
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert kd_lines(out) == [
        "kd-tasks: unrecognized arguments: --bogus; usage: kd-tasks [-h] [-s STATES] [-t SECONDS] [-l] [-p PID] [pattern]",
        "kd-bt: no task with pid or address 99999",
        "kd-waitfor: argument -p/--pid: invalid int value: 'x'; usage: kd-waitfor [-h] [--json] [-p PID] [--stacks]",
        "kd-set: unknown setting 'colour pink': kd-set [color on|off|auto] [debug on|off]",
    ]
    assert "color auto\ndebug off\n" in out
    assert still_works(out, dump)


@pytest.mark.parametrize("env,line", [
    ({"KDLGDB_PYTHON": "/nonexistent/python3"},
     "kd-waitfor: cannot run /nonexistent/python3: No such file or directory (install python3, or set KDLGDB_PYTHON)"),
    ({"KDLGDB_SRC": "/nonexistent/src"},
     ("kd-waitfor: cannot find the kdlgdb package (/nonexistent/src/kdlgdb): set KDLGDB_SRC to the checkout's src "
     "directory")),
], ids=["no-python", "no-package"])
def test_no_python_or_package(dump: samples.Dump, env: dict[str, str], line: str) -> None:
    done = realcrash.crash(dump.vmlinux, dump.path, "kd-waitfor", "sym linux_banner", env=env)
    assert kd_lines(done.stdout) == [line]
    assert any(x.endswith("(D) linux_banner") for x in done.stdout.splitlines())  # crash goes on


def test_python_lacks_a_module(dump: samples.Dump, tmp_path: Path) -> None:
    fake = tmp_path / "tabulate"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'tabulate'\", name='tabulate')\n")
    done = realcrash.crash(dump.vmlinux, dump.path, "kd-waitfor", "kd-tasks", "sym linux_banner",
                           env={"PYTHONPATH": str(tmp_path)})
    needs = "kdlgdb needs the Python module tabulate, which /usr/bin/python3 ("
    lines = kd_lines(done.stdout)
    assert [line.split(needs)[0] for line in lines] == ["kd-waitfor: ", "kd-tasks: "], lines
    assert all(line.endswith("lacks: install it with: apt-get install python3-tabulate") for line in lines)
    assert "Traceback" not in done.stdout + done.stderr
    assert any(x.endswith("(D) linux_banner") for x in done.stdout.splitlines())


INJECT = """\
import os
from kdlgdb.frontends import commands

_run = commands.run


def run(command, args, *more, **kw):
    if getattr(args, "pid", None) == 424242:
        raise ZeroDivisionError("injected")
    if getattr(args, "pid", None) == 535353:
        os._exit(3)
    return _run(command, args, *more, **kw)


commands.run = run
"""


def test_python_errors_are_one_line(dump: samples.Dump, tmp_path: Path) -> None:
    """An exception (one line; the traceback with kd-set debug on), a Python process that dies."""
    (tmp_path / "sitecustomize.py").write_text(INJECT)
    done = realcrash.crash(dump.vmlinux, dump.path, "kd-waitfor -p 424242", "kd-set debug on", "kd-waitfor -p 424242",
                           "kd-set debug off", "kd-waitfor -p 535353", "kd-tasks -s D", env={"PYTHONPATH": str(tmp_path)})
    out = done.stdout
    assert kd_lines(out) == [
        "kd-waitfor: internal error: ZeroDivisionError: injected (kd-set debug on for the traceback)",
        "kd-waitfor: Traceback (most recent call last):",
        "kd-waitfor: the kdlgdb Python process stopped (status 3)",
    ]
    assert 'raise ZeroDivisionError("injected")' in out and out.count("Traceback") == 1
    assert still_works(out, dump)  # a new Python process took over


# Only the first Python process the session starts is slowed (the one Ctrl-C ends): the marker file says
# one has started, and the next (the command after the prompt comes back) runs at full speed.
SLOW = """\
import os
import time
from kdlgdb.target import crash

_read = crash.CrashTarget.read
_first = not os.path.exists(os.path.join(os.path.dirname(__file__), "started"))
open(os.path.join(os.path.dirname(__file__), "started"), "w").close()


def read(self, address, size):
    if _first:
        time.sleep(0.05)
    return _read(self, address, size)


crash.CrashTarget.read = read
"""


def test_ctrl_c_returns_to_the_prompt(dump: samples.Dump, tmp_path: Path) -> None:
    """Ctrl-C on crash's terminal during a (slowed-down) analysis: the prompt comes back, the Python
    process is gone, and the next kd-* command works."""
    (tmp_path / "sitecustomize.py").write_text(SLOW)
    session = realcrash.Interactive(dump.vmlinux, dump.path, env={"PYTHONPATH": str(tmp_path)})
    try:
        session.expect(session.PROMPT)
        session.type(f"extend {realcrash.EXTENSION}")
        session.expect("shared object loaded")
        session.expect(session.PROMPT)
        session.type("kd-waitfor")
        deadline = time.monotonic() + 60
        while not session.children() and time.monotonic() < deadline:
            time.sleep(0.1)
        (python,) = session.children()
        time.sleep(1.5)  # well into the analysis: every read takes 50 ms
        assert os.path.exists(f"/proc/{python}")
        session.interrupt()
        interrupted = session.expect(session.PROMPT, timeout=30)
        assert "DEADLOCK" not in interrupted and "Traceback" not in interrupted
        assert not os.path.exists(f"/proc/{python}")  # ended and reaped
        session.type("sym linux_banner")
        assert "(D) linux_banner" in session.expect(session.PROMPT)
        session.type("kd-tasks -s D")
        assert still_works(session.expect(session.PROMPT), dump)
    finally:
        session.close()
