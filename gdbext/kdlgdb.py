"""kdlgdb for gdb: `source gdbext/kdlgdb.py`, then `help kd-waitfor`.

gdb embeds the system Python, not a virtualenv: this file puts the project's
src/ on sys.path and says plainly what is missing if a dependency is.
"""
import os
import sys

import gdb

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _load():
    if _SRC not in sys.path:
        sys.path.insert(0, _SRC)
    missing = []
    for module, package in (("pygments", "python3-pygments"), ("tabulate", "python3-tabulate")):
        try:
            __import__(module)
        except ImportError:
            missing.append((module, package))
    if missing:
        names = ", ".join(m for m, _ in missing)
        packages = " ".join(p for _, p in missing)
        gdb.write(
            f"kdlgdb: gdb's Python ({sys.executable or 'python'} {sys.version.split()[0]}) lacks {names}; "
            f"install it with: apt-get install {packages}\n",
            gdb.STDERR,
        )
        return
    from kdlgdb.frontends import gdb as front

    front.register()


_load()
