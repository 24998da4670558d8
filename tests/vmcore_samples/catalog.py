"""What the sample builder makes: kernels, scenarios, samples and dump forms.

Kept apart from ``build.py`` because it is not part of a dump's cache key:
adding a kernel or a scenario here must not invalidate the dumps already built
for the others. What one sample's dumps depend on (its :class:`Sample`, the
kernel, the scenario's files, ``build.py`` and ``formats.py``) is in the key.
"""
from __future__ import annotations

from dataclasses import dataclass

# Every kernel the real-kernel tests run on (setup.sh installs them): Debian 12's 6.1
# and its 6.12 backport, cloud flavour, and the 6.12 PREEMPT_RT flavour.
DEFAULT_KERNEL = "6.1.0-56-cloud-amd64"
KERNELS = (DEFAULT_KERNEL, "6.12.117+deb12-cloud-amd64", "6.12.117+deb12-rt-amd64")

# The scenario modules under scenarios/ that the tests use (each is also a sample of its own name).
SCENARIOS = ("kdl_abba", "kdl_mutex", "kdl_rwsem", "kdl_control", "kdl_rtmutex", "kdl_chain", "kdl_spin", "kdl_irq",
             "kdl_flush", "kdl_pcpu", "kdl_freeze", "kdl_exit", "kdl_rtdeadlk", "kdl_spinjob")

# Dump forms: kind -> file name suffix. "elf" is QEMU's paging ELF (gdb reads it
# directly); the others need kdlgdb's own reader (or crash).
KINDS = {
    "elf": ".elf",  # dump-guest-memory paging=true
    "phys": "-phys.elf",  # dump-guest-memory paging=false: physical addresses only
    "kdump-flat": ".kdump-flat",  # dump-guest-memory format=kdump-zlib (flattened)
    "kdump": ".kdump",  # makedumpfile -R of the flattened file
    "kdump-filtered": "-filtered.kdump",  # makedumpfile -c -d 31 (see build.filter_level) of the physical ELF
}
CODEC_KINDS = {  # PHYS_SCENARIO only
    "kdump-lzo": "-lzo.kdump",  # makedumpfile -l -d 31
    "kdump-snappy": "-snappy.kdump",  # pages of kdump-filtered re-compressed (no Debian tool writes snappy)
    "kdump-zstd": "-zstd.kdump",  # ... or zstd
}
ALL_KINDS = {**KINDS, **CODEC_KINDS}
PHYS_SCENARIO = "kdl_abba"  # the scenario whose dumps also come in every page compression
# The forms of scenarios that test analysis rather than formats: gdb's paging ELF and a kdump
# (QEMU's flattened one and makedumpfile's normal form of it) carry the same per-CPU notes.
ANALYSIS_KINDS = ("elf", "kdump-flat", "kdump")

GUEST_MEMORY = "256M"
BOOT_TIMEOUT = 240.0  # boot + module + all threads blocked, under TCG


@dataclass(frozen=True)
class Sample:
    """What one boot runs: a scenario's module, loaded with ``args``, in a guest with ``memory``."""

    scenario: str  # the folder under scenarios/, and the module's name
    args: str = ""  # insmod arguments
    memory: str = GUEST_MEMORY
    kaslr: tuple[bool, ...] = (False, True)  # the variants built by default
    boot_timeout: float = BOOT_TIMEOUT
    kinds: tuple[str, ...] = tuple(KINDS)  # the dump forms made of each boot (keys of ALL_KINDS)


# kdl_scale's kthreads take ~30 KiB each (16 KiB vmapped stack, task_struct, page tables).
# The scale samples measure the analysis, not the formats: paging ELF only.
SCALE_SAMPLES = {
    "kdl_scale_1k": Sample("kdl_scale", "n=1000", "384M", (True,), kinds=("elf",)),
    "kdl_scale_5k": Sample("kdl_scale", "n=5000", "640M", (True,), boot_timeout=600.0, kinds=("elf",)),
    "kdl_scale_10k": Sample("kdl_scale", "n=10000", "1024M", (True,), boot_timeout=600.0, kinds=("elf",)),
}
# Scenarios whose sample differs from the default.
SCENARIO_SAMPLES = {
    PHYS_SCENARIO: Sample(PHYS_SCENARIO, kinds=tuple(ALL_KINDS)),
    "kdl_rtmutex": Sample("kdl_rtmutex", kinds=ANALYSIS_KINDS),
    "kdl_chain": Sample("kdl_chain", kinds=ANALYSIS_KINDS),
    # CPUs spinning on spinlocks: the per-CPU register notes of the ELF and kdump forms.
    "kdl_spin": Sample("kdl_spin", kinds=ANALYSIS_KINDS),
    "kdl_irq": Sample("kdl_irq", kinds=ANALYSIS_KINDS),
    # Waits that are not locks (work items, percpu rw-semaphores, frozen filesystems).
    "kdl_flush": Sample("kdl_flush", kinds=ANALYSIS_KINDS),
    "kdl_pcpu": Sample("kdl_pcpu", kinds=ANALYSIS_KINDS),
    "kdl_freeze": Sample("kdl_freeze", kinds=ANALYSIS_KINDS),
    # Owners that cannot be: one that exited (its task_struct slot perhaps reused), a recursive mutex_lock.
    "kdl_exit": Sample("kdl_exit", kinds=ANALYSIS_KINDS),
    "kdl_rtdeadlk": Sample("kdl_rtdeadlk", kinds=ANALYSIS_KINDS),
    "kdl_spinjob": Sample("kdl_spinjob", kinds=ANALYSIS_KINDS),  # spinlock holders through pointers: CPU notes
}
DEFAULT_SAMPLES = SCENARIOS + ("kdl_scale_1k",)


def sample(name: str) -> Sample:
    """The sample called ``name``: a scale sample, a scenario's own, or a scenario run as it is."""
    return SCALE_SAMPLES.get(name) or SCENARIO_SAMPLES.get(name) or Sample(name)
