"""Real deadlocked-kernel samples for kdlgdb's tests: dumps and live guests.

Import it by putting this directory on ``sys.path`` (it is not a package)::

    sys.path.insert(0, str(Path(__file__).parent / "vmcore_samples"))  # from tests/
    import samples

    if not samples.kernel_available(samples.DEFAULT_KERNEL):
        pytest.fail(samples.missing_message())

    dump = samples.ensure_dump("kdl_abba", kaslr=True)   # builds on first use (~13 s)
    dump.path, dump.vmlinux, dump.truth["locks"]["sem1"]["address"]

    with samples.boot_live("kdl_mutex") as live:          # QEMU killed on exit
        run_gdb(live.vmlinux, f"target remote 127.0.0.1:{live.gdb_port}")

Scenarios (``SCENARIOS``) are the kernel modules under ``scenarios/``; each
has an ``expected.json`` with its wait-for facts (:func:`expected`). The scale
samples (``SCALE_SAMPLES``: ``kdl_scale_1k``, ``_5k``, ``_10k``) load the
``kdl_scale`` module with 1,000 to 10,000 threads and are built with KASLR only;
their truth adds ``cycles``, ``chains`` and ``counts`` (see ``build.py``). The dumps
are built by ``build.py`` (which this module loads by path, under the name
``kdlgdb_vmcore_build``) into ``${KDLGDB_CACHE:-~/.cache/kdlgdb}``.

A truth dict (``Dump.truth``, ``Live.truth``) holds what the guest reported:
``kernel``, ``vmlinux``, ``kaslr``, ``module``, ``locks`` (``{symbol:
{"address": "0xffff...", "type": "mutex|semaphore|rwsem"}}``), ``tasks``
(``{comm: pid}``), ``kernel_offset`` (hex string; give it to gdb as
``symbol-file -o``), ``text``, ``module_base``, ``module_size``, ``threads``
(``{comm: {pid, state, wchan, stack}}`` from /proc, where the kernel hides
scheduler and lock slow-path frames), ``hung_task_reported`` and
``hung_task_stacks`` (``{comm: frames}``, full reliable call traces printed by
the hung-task detector). Dump truths add ``vmcoreinfo_kernel_offset`` and
``osrelease`` from the dump's VMCOREINFO note.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


def _load_builder() -> Any:
    """Load build.py from this directory under a name that cannot clash with PyPA's ``build``."""
    name = "kdlgdb_vmcore_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("build.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


builder = _load_builder()

SCENARIOS: tuple[str, ...] = builder.SCENARIOS
SCALE_SAMPLES: tuple[str, ...] = tuple(builder.SCALE_SAMPLES)  # kdl_scale_1k, _5k, _10k
DEFAULT_KERNEL: str = builder.DEFAULT_KERNEL
KERNELS: tuple[str, ...] = builder.KERNELS
PHYS_SCENARIO: str = builder.PHYS_SCENARIO
KINDS: tuple[str, ...] = tuple(builder.KINDS)
CODEC_KINDS: tuple[str, ...] = tuple(builder.CODEC_KINDS)
BuildError = builder.BuildError


def expected(scenario: str, kernel: str = "") -> dict[str, Any]:
    """The scenario's ``expected.json``; for ``kernel`` with the shape the same code takes there: its
    ``"preempt_rt"`` keys on Debian's ``-rt-`` kernel, its ``"lockdep"`` keys on a kernel with lockdep."""
    return builder.expected(scenario, kernel)


for_kernel = builder.for_kernel
kernel_available = builder.kernel_available
lockdep = builder.lockdep
cache_root = builder.cache_root


def kernel_config(kernel: str) -> list[str]:
    """The lines of ``kernel``'s .config (Debian's /boot/config-*, or the built tree's)."""
    return builder.kernel_paths(kernel)["config"].read_text().splitlines()


def preempt_rt(kernel: str) -> bool:
    """Whether ``kernel`` was built with CONFIG_PREEMPT_RT (as its installed config says): the tests
    then expect its mutex and rw_semaphore slow paths, the analysis must find the same answers."""
    return "CONFIG_PREEMPT_RT=y" in kernel_config(kernel)



def release(kernel: str) -> str:
    """``uname -r`` of ``kernel``: the release kdlgdb reports and the dumps' OSRELEASE (a kernel of ours is
    named apart from its release, which follows the source package's version)."""
    builder.ensure_kernel(kernel)
    return builder.kernel_release(kernel)


def missing_message(kernel: str = DEFAULT_KERNEL) -> str:
    """Why real-kernel samples cannot be made here ('' when they can)."""
    missing = builder.missing_kernel_parts(kernel) + builder.missing_tools()
    if not missing:
        return ""
    return f"real-kernel samples for {kernel} need:\n  " + "\n  ".join(missing)


@dataclass(frozen=True)
class Dump:
    """One dump file and what is known about it."""

    path: Path  # the ELF core file
    vmlinux: Path  # matching vmlinux with DWARF
    truth: dict[str, Any]  # see the module docstring
    kernel: str
    kind: str = "elf"  # a key of KINDS: "elf" (paging), "phys", "kdump-flat", "kdump", "kdump-filtered", ...
    console_log: Path | None = None

    @property
    def kaslr(self) -> bool:
        return bool(self.truth["kaslr"])

    @property
    def kernel_offset(self) -> int:
        return int(self.truth["kernel_offset"], 16)


def ensure_dump(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL, kind: str = "elf") -> Dump:
    """The dump of ``scenario`` (building it if the cache lacks it) in the form ``kind``.

    Every kind of one variant is the same instant of the same boot, with the same
    truth: "elf" (QEMU's paging ELF), "phys" (physical-only ELF), "kdump-flat"
    (QEMU's flattened kdump-zlib), "kdump" (its makedumpfile -R form), "kdump-filtered"
    (makedumpfile -c -d 31, or as :func:`filter_level` says); for ``PHYS_SCENARIO`` also "kdump-lzo",
    "kdump-snappy", "kdump-zstd".
    """
    kinds = builder.variant_kinds(scenario)
    if kind not in kinds:
        raise ValueError(f"{scenario} dumps come as {', '.join(kinds)}, not {kind!r}")
    files = builder.ensure(scenario, kaslr, kernel)
    return Dump(
        path=files[kind],
        vmlinux=builder.kernel_paths(kernel)["vmlinux"],
        truth=builder.load_truth(scenario, kaslr, kernel),
        kernel=kernel,
        kind=kind,
        console_log=files["console"],
    )


def filter_level(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL) -> int:
    """The ``-d`` level the builder filtered this variant's dumps with (``builder.filter_level``)."""
    return builder.filter_level(builder.vmcoreinfo(ensure_dump(scenario, kaslr, kernel).path))


@dataclass
class Live:
    """A running, deadlocked guest (valid inside :func:`boot_live` only)."""

    gdb_port: int  # gdbstub, listening on 127.0.0.1
    truth: dict[str, Any]
    vmlinux: Path
    console_log: Path  # removed when the context ends
    kernel: str
    guest: Any  # build.Guest: .qmp(command, **args), .console()

    @property
    def kernel_offset(self) -> int:
        return int(self.truth["kernel_offset"], 16)


@contextlib.contextmanager
def boot_live(scenario: str, kaslr: bool = True, kernel: str = DEFAULT_KERNEL) -> Iterator[Live]:
    """Boot ``scenario`` in QEMU, wait until its threads are blocked, yield a :class:`Live`.

    QEMU is stopped when the ``with`` block ends, whatever happened in it. With ``kaslr``, a boot where KASLR
    happened to pick offset 0 (about one in 500) is booted again, as the sample builder does for its dumps
    (``builder.KASLR_ATTEMPTS``): a KASLR guest is really relocated.
    """
    with contextlib.ExitStack() as stack:
        for attempt in range(1, builder.KASLR_ATTEMPTS + 1):
            guest, truth = stack.enter_context(builder.boot(scenario, kaslr, kernel))
            if not (kaslr and int(truth["kernel_offset"], 16) == 0 and attempt < builder.KASLR_ATTEMPTS):
                break
            stack.close()  # QEMU of that boot stops; boot again
        yield Live(gdb_port=guest.gdb_port, truth=truth, vmlinux=builder.kernel_paths(kernel)["vmlinux"],
                   console_log=guest.console_log, kernel=kernel, guest=guest)
