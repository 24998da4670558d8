"""The command loop of a shared test gdb (tests/realgdb.py ``shared_gdb``): runs *inside* gdb.

gdb is started as the old helper started it (``gdb -nx -q -batch VMLINUX [CORE] -ex 'source
gdbext/kdlgdb.py'``) and then runs ``serve(fd)``, which reads one JSON request per line from the
pipe ``fd``: ``{"mark": ..., "commands": [...]}``. Before each request it resets what kdlgdb keeps
between commands (:func:`reset`), so every request starts where a fresh gdb would; then it runs each
command as an ``-ex`` command of a batch gdb runs (``from_tty`` false, output straight to gdb's
stdout and stderr, a gdb error printed as one line on stderr and the next command run), and ends
with ``MARK STATUS`` on stdout and ``MARK`` on stderr (STATUS: 1 when the last command failed, the
status ``gdb -batch`` exits with). gdb's embedded Python is Debian's /usr/bin/python3.
"""
import json
import os

import gdb  # type: ignore[import-not-found]

# What kdlgdb.frontends.gdb keeps at module level, and what reset() does with it. A new cache there
# fails every shared-gdb request until it is named here (and reset, if it outlives a command).
KNOWN_STATE = {
    "_cache": "the Snapshot (and the one with source lines): cleared",
    "_kernels": "the Kernel (KASLR offset, layouts): cleared",
    "_opened": "the dump kd-open gave: closed",
    "_progress_shown": "whether a progress line is on the terminal: cleared",
    "_params": "kd-color, kd-debug: set back to their defaults",
}


def _front():
    from kdlgdb.frontends import gdb as front  # imported by `source gdbext/kdlgdb.py`

    return front


def check_state_is_known() -> None:
    front = _front()
    unknown = sorted(name for name, value in vars(front).items()
                     if isinstance(value, (dict, list, set)) and not name.startswith("__") and name not in KNOWN_STATE)
    if unknown:
        raise RuntimeError(f"kdlgdb.frontends.gdb keeps {', '.join(unknown)} between commands: "
                           "name it in tests/gdb_serve.py KNOWN_STATE and reset it there")


def reset(has_core: bool) -> None:
    """Back to the state right after start-up: no snapshot, no kernel, no kd-open'd dump, default settings;
    a gdb started without a core file drops one a test's ``kd-open`` of a paging ELF loaded."""
    front = _front()
    check_state_is_known()
    front._close()
    front._forget()
    front._progress_shown.clear()
    gdb.execute("set kd-color auto", to_string=True)
    gdb.execute("set kd-debug off", to_string=True)
    if not has_core and gdb.selected_inferior().connection is not None:
        gdb.execute("core-file", to_string=True)


def run(command: str) -> bool:
    """``command`` as gdb runs an ``-ex`` command in batch mode; whether it failed."""
    try:
        gdb.execute(command, from_tty=False)
        return False
    except KeyboardInterrupt:
        gdb.write("Quit\n", gdb.STDERR)
    except gdb.error as e:  # gdb prints the error's message on stderr and goes on with the next command
        text = str(e)
        gdb.write(text if text.endswith("\n") else text + "\n", gdb.STDERR)
    return True


def _say(mark: str, status: str = "") -> None:
    gdb.flush()
    gdb.write(f"{mark}{status}\n", gdb.STDOUT)
    gdb.write(f"{mark}\n", gdb.STDERR)
    gdb.flush()


def serve(fd: int, ready: str, has_core: bool) -> None:
    check_state_is_known()
    _say(ready)
    with os.fdopen(fd, "r") as requests:
        for line in requests:
            request = json.loads(line)
            failed = False
            try:
                reset(has_core)
                for command in request["commands"]:
                    failed = run(command)
            except Exception as e:  # noqa: BLE001  (a broken reset: the test fails with it)
                gdb.write(f"@@kdlgdb shared gdb: {type(e).__name__}: {e}\n", gdb.STDERR)
                failed = True
            _say(request["mark"], f" {int(failed)}")
