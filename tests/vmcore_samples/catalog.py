"""What the sample builder makes: kernels, scenarios, samples and dump forms.

Kept apart from ``build.py`` because it is not part of a dump's cache key:
adding a kernel or a scenario here must not invalidate the dumps already built
for the others. What one sample's dumps depend on (its :class:`Sample`, the
kernel, the scenario's files, ``build.py`` and ``formats.py``) is in the key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# Debian's kernels (setup.sh installs them): Debian 12's 6.1 and its 6.12 backport, cloud flavour,
# and the 6.12 PREEMPT_RT flavour. A kernel here is named by its release (``uname -r``).
DEFAULT_KERNEL = "6.1.0-56-cloud-amd64"
DEBIAN_KERNELS = (DEFAULT_KERNEL, "6.12.117+deb12-cloud-amd64", "6.12.117+deb12-rt-amd64")


@dataclass(frozen=True)
class BuiltKernel:
    """A kernel the sample builder compiles itself (``kernelbuild.py``) from a Debian source package:
    ``make tinyconfig`` plus ``config``. Named by ``name`` (not its release, which follows the source
    package's version: ``kernelbuild.release``)."""

    name: str
    source_package: str  # installs /usr/src/<source_package>.tar.xz
    localversion: str  # CONFIG_LOCALVERSION: the release is <upstream version><localversion>
    config: tuple[str, ...]  # lines merged over tinyconfig; each must hold in the final .config
    default: bool = False  # among KERNELS without KDLGDB_KERNELS (a build of ~5-10 min on 2 cores)


# What a sample guest needs of a kernel (tinyconfig has none of it): an x86_64 SMP kernel that prints on
# the 8250 serial console, boots a busybox initramfs (/init is a script), loads modules, has /proc (with
# sysctl), /sys and devtmpfs, ACPI with PCI (QEMU's fw_cfg device is found through ACPI, whose tables do not
# load without PCI: ACPICA's default PCI_Config handler exists only with CONFIG_PCI, AE_BAD_PARAMETER otherwise)
# and qemu_fw_cfg as a module
# (the guest's /init loads it; it gives QEMU's -device vmcoreinfo the VMCOREINFO note, which exists with
# CRASH_CORE, selected by KEXEC), KASLR like Debian's, DWARF 5, ORC, SLUB, and the hung-task detector. It keeps
# tinyconfig's -Os (CC_OPTIMIZE_FOR_SIZE), as the kernel of issue 18 did: its frames differ from Debian's -O2
# builds (an -Os __schedule leaves a stale return address amid the scheduler's frames), and kdlgdb must find
# the waits all the same.
GUEST_CONFIG = (
    "CONFIG_64BIT=y", "CONFIG_SMP=y", "CONFIG_PRINTK=y", "CONFIG_PRINTK_TIME=y", "CONFIG_BUG=y",
    "CONFIG_MULTIUSER=y", "CONFIG_FUTEX=y", "CONFIG_POSIX_TIMERS=y", "CONFIG_EPOLL=y", "CONFIG_SIGNALFD=y",
    "CONFIG_TIMERFD=y", "CONFIG_EVENTFD=y", "CONFIG_SHMEM=y", "CONFIG_TMPFS=y", "CONFIG_BLK_DEV_INITRD=y",
    "CONFIG_BINFMT_ELF=y", "CONFIG_BINFMT_SCRIPT=y", "CONFIG_PROC_FS=y", "CONFIG_PROC_SYSCTL=y",
    "CONFIG_SYSFS=y", "CONFIG_DEVTMPFS=y", "CONFIG_TTY=y", "CONFIG_SERIAL_8250=y",
    "CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_PCI=y", "CONFIG_ACPI=y", "CONFIG_MODULES=y", "CONFIG_FW_CFG_SYSFS=m",
    "CONFIG_KEXEC=y", "CONFIG_CRASH_DUMP=y", "CONFIG_CRASH_CORE=y", "CONFIG_RELOCATABLE=y",
    "CONFIG_RANDOMIZE_BASE=y", "CONFIG_RANDOMIZE_MEMORY=y", "CONFIG_VMAP_STACK=y", "CONFIG_SLUB=y",
    "CONFIG_KERNEL_GZIP=y", "CONFIG_CC_OPTIMIZE_FOR_SIZE=y", "CONFIG_UNWINDER_ORC=y",
    "CONFIG_RT_MUTEXES=y", "CONFIG_KALLSYMS=y", "CONFIG_KALLSYMS_ALL=y", "CONFIG_DEBUG_KERNEL=y",
    "CONFIG_DEBUG_INFO_DWARF5=y", "CONFIG_DETECT_HUNG_TASK=y", "CONFIG_MAGIC_SYSRQ=y", "CONFIG_STACKTRACE=y",
)
# The kernel people build to chase deadlocks: lockdep (PROVE_LOCKING: held_locks, lock classes, its
# reports), DEBUG_LOCK_ALLOC, DEBUG_MUTEXES (struct mutex grows, task->blocked_on on 6.1), DEBUG_SPINLOCK
# (raw_spinlock_t carries owner and a lockdep_map), DEBUG_RWSEMS, DEBUG_ATOMIC_SLEEP.
LOCKDEP_KERNEL = BuiltKernel(
    name="6.1-lockdep",
    source_package="linux-source-6.1",
    localversion="-kdl-lockdep",
    config=GUEST_CONFIG + (
        "CONFIG_PROVE_LOCKING=y", "CONFIG_DEBUG_LOCK_ALLOC=y", "CONFIG_DEBUG_MUTEXES=y",
        "CONFIG_DEBUG_SPINLOCK=y", "CONFIG_DEBUG_RWSEMS=y", "CONFIG_DEBUG_ATOMIC_SLEEP=y", "CONFIG_LOCKDEP=y",
        # kdl_freeze's guest: a RAM disk with ext2 (through ext4, as Debian builds it), frozen with fsfreeze.
        # Built in rather than modules: this tree installs no modules.dep (build.guest_modules skips what
        # modules.builtin lists).
        "CONFIG_BLOCK=y", "CONFIG_BLK_DEV=y", "CONFIG_BLK_DEV_RAM=y", "CONFIG_BLK_DEV_RAM_SIZE=16384",
        "CONFIG_EXT4_FS=y", "CONFIG_EXT4_USE_FOR_EXT2=y",
    ),
    # In every default run (issue 18 asks for every scenario on it); CI ran the whole of .ci/run in 788 s with
    # the three Debian kernels, which leaves room for a fourth.
    default=True,
)
BUILT_KERNELS = {k.name: k for k in (LOCKDEP_KERNEL,)}


def lockdep(kernel: str) -> bool:
    """Whether ``kernel`` has lockdep (CONFIG_PROVE_LOCKING; none of Debian's has): the tests then expect
    its held_locks as owners (certain where the other kernels infer) and its reports in the log."""
    return kernel in BUILT_KERNELS and "CONFIG_PROVE_LOCKING=y" in BUILT_KERNELS[kernel].config


def selected_kernels() -> tuple[str, ...]:
    """The kernels the real-kernel tests run on and set-up prepares: ``$KDLGDB_KERNELS`` (names separated
    by spaces: Debian releases or BUILT_KERNELS names) when set, else Debian's and the built kernels whose
    ``default`` is set."""
    chosen = os.environ.get("KDLGDB_KERNELS", "").split()
    if chosen:
        return tuple(dict.fromkeys(chosen))
    return DEBIAN_KERNELS + tuple(name for name, k in BUILT_KERNELS.items() if k.default)


# Every kernel the real-kernel tests run on.
KERNELS = selected_kernels()

# The scenario modules under scenarios/ that the tests use (each is also a sample of its own name).
SCENARIOS = ("kdl_abba", "kdl_mutex", "kdl_rwsem", "kdl_control", "kdl_rtmutex", "kdl_chain", "kdl_spin", "kdl_irq",
             "kdl_flush", "kdl_pcpu", "kdl_freeze", "kdl_exit", "kdl_rtdeadlk", "kdl_spinjob", "kdl_inode")

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
    # Real kernel locks in heap objects (an inode's i_rwsem, a kmalloc'd driver struct's mutex): named by object.
    "kdl_inode": Sample("kdl_inode", kinds=ANALYSIS_KINDS),
}
DEFAULT_SAMPLES = SCENARIOS + ("kdl_scale_1k",)


def sample(name: str) -> Sample:
    """The sample called ``name``: a scale sample, a scenario's own, or a scenario run as it is."""
    return SCALE_SAMPLES.get(name) or SCENARIO_SAMPLES.get(name) or Sample(name)
