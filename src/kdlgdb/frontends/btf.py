"""The kd-* commands without a debugger: a dump read with its own BTF and kallsyms.

What ``kdlgdb waitfor``, ``report`` and ``triage`` run when there is no vmlinux (or ``--btf``
asks for this path): the same commands (:mod:`.commands`) and bundle (:mod:`.session`) as in
gdb, over a :class:`~kdlgdb.target.btfdump.BtfTarget`, in the ``kdlgdb`` process itself. No gdb
is started; frames have no file:line (only DWARF knows them).
"""
from __future__ import annotations

from typing import Any, Optional

from ..kernel.layout import Kernel
from ..target.btfdump import BtfTarget, open_btf_target
from . import commands
from .session import Bundle, Session

__all__ = ["batch", "bundle", "session"]


def session(dump: str) -> Session:
    """A Session over the dump at ``path``, read with its own BTF and kallsyms (opened at the first question)."""

    def facts(k: Kernel) -> dict[str, Any]:
        return {"dump": dump}  # no vmlinux, no debugger; the snapshot's debug_info says where types came from

    return Session(lambda: open_btf_target(dump), facts)


def batch(command: str, argv: list[str], dump: str, record: Optional[str] = None) -> tuple[str, int]:
    """(what kd-COMMAND prints, the exit status ``kdlgdb`` passes on: 1 for a cycle in kd-waitfor, else 0);
    KdlError (one line) when the dump cannot be read this way."""
    args = commands.parse(command, argv)
    kernel_session = session(dump)
    try:
        text, snap = commands.run_on(command, args, lambda lines: kernel_session.snapshot(record=record, source_lines=lines),
                                     kernel_session.kernel())
    finally:
        _close(kernel_session)
    status = commands.verdict_status(snap) if command == "kd-waitfor" and snap is not None else 0
    return text + "\n", status


def bundle(dump: str) -> Bundle:
    """The post-mortem bundle of the dump (snapshot, kernel log, facts), as ``kdlgdb report`` renders it."""
    kernel_session = session(dump)
    try:
        return kernel_session.bundle()
    finally:
        _close(kernel_session)


def _close(kernel_session: Session) -> None:
    target = kernel_session.opened_target()
    if isinstance(target, BtfTarget):
        target.dump.close()
