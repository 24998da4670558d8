"""kd-info: the facts about a kernel and its dump that open every bug report.

Release and machine from ``init_uts_ns``, CPUs and uptime from the per-CPU
runqueues, the KASLR offset, how the dump was made, the crash time (VMCOREINFO
CRASHTIME, written by a kernel that crashed into kdump), the panic message from
the kernel log, whether the kernel is PREEMPT_RT, and which lock data sources
this kernel's types offer.
"""
from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ..errors import KdlError, ReadError
from ..model import Problem
from ..target.base import DEBUG_INFO
from .collect import LOCK_SOURCES, crash_time, lock_sources
from .layout import Kernel
from .printk import kernel_log, panic_message
from .rtmutex import preempt_rt
from .tasks import per_cpu_runqueues

__all__ = ["SystemInfo", "system_info"]


@dataclass
class SystemInfo:
    release: str
    version: str  # uname -v: build number and date
    machine: str
    cpus: Optional[int]  # CPUs whose runqueue could be read
    uptime_ns: Optional[int]
    kaslr_offset: int
    dump: str  # what is read, and by whom
    crash_time: Optional[int]  # seconds since the epoch
    panic: Optional[str]
    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    preempt_rt: bool = False  # mutex, rw_semaphore and spinlock_t are built on rt_mutex
    debug_info: str = "dwarf"  # where types and symbols come from (target.base.DEBUG_INFO)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) rows, in the order a bug report wants them."""
        uptime = "unknown" if self.uptime_ns is None else f"{self.uptime_ns / 1e9:.1f} s"
        crashed = "none recorded (no CRASHTIME: not a kdump of a crash)" if self.crash_time is None else \
            datetime.datetime.fromtimestamp(self.crash_time, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return [
            ("release", self.release),
            ("version", self.version),
            ("machine", self.machine),
            ("cpus", "unknown" if self.cpus is None else str(self.cpus)),
            ("uptime", uptime),
            ("kaslr offset", f"{self.kaslr_offset:#x}"),
            ("dump", self.dump),
            ("types", DEBUG_INFO.get(self.debug_info, self.debug_info)),
            ("crash time", crashed),
            ("panic", self.panic or "none in the kernel log"),
            ("PREEMPT_RT", "yes (struct mutex is built on rt_mutex: mutex, rw_semaphore, spinlock_t and rwlock_t "
                           "sleep on an rt_mutex_base)" if self.preempt_rt else "no"),
            ("lock data", ", ".join(self.sources)),
            ("not offered", ", ".join(label for label, _, _ in LOCK_SOURCES if label not in self.sources)),
        ] + [("skipped", p) for p in self.problems]


def _uts(k: Kernel, member: str) -> str:
    return k.string(k.need_symbol("init_uts_ns") + k.offset("struct uts_namespace", f"name.{member}"), 65)


def system_info(k: Kernel) -> SystemInfo:
    problems: list[Problem] = []
    try:
        runqueues = per_cpu_runqueues(k)
    except ReadError as e:
        problems.append(Problem("runqueues", "runqueues", str(e)))
        runqueues = []
    try:
        panic = panic_message(kernel_log(k, problems))
    except KdlError as e:
        problems.append(Problem("log", "printk ring buffer", str(e)))
        panic = None
    return SystemInfo(
        release=k.release,
        version=_uts(k, "version"),
        machine=_uts(k, "machine"),
        cpus=len(runqueues) or None,
        uptime_ns=max(rq.clock for rq in runqueues) if runqueues else None,
        kaslr_offset=k.kaslr_offset,
        dump=k.target.describe(),
        crash_time=crash_time(k.vmcoreinfo),
        panic=panic,
        sources=lock_sources(k),
        problems=[str(p) for p in problems],
        preempt_rt=preempt_rt(k),
        debug_info=k.target.debug_info,
    )
