"""Frozen filesystems (fs/super.c): the holder of a superblock's ``sb_writers`` is the freeze.

``freeze_super()`` (``fsfreeze --freeze``, the FIFREEZE ioctl, or the kernel: hibernation,
device-mapper snapshots) takes each level of ``sb->s_writers.rw_sem[]`` for writing and
keeps them until the thaw. No task holds them then: the writers blocked in
``sb_start_write``/``sb_start_pagefault``/``sb_start_intwrite`` (queued on the percpu
rw-semaphore in ``percpu_rwsem_wait``) wait for the thaw, and the chain's root is the freeze.

``struct sb_writers``: v6.1 ``int frozen``; since v6.6 ("fs: add FREEZE_HOLDER_*")
``unsigned short frozen`` with ``freeze_kcount`` (kernel freezes) and ``freeze_ucount``
(user space's). ``frozen`` is ``SB_UNFROZEN`` (0) up to ``SB_FREEZE_COMPLETE`` (4).
"""
from __future__ import annotations

from typing import Optional

from ..errors import CorruptError, ReadError
from ..model import Lock, Problem
from .functions import FREEZE_WAITERS
from .layout import Kernel
from .list import list_for_each
from .superblocks import SuperBlocks

__all__ = ["name_freezes", "FREEZE_LEVELS"]

# enum { SB_UNFROZEN, SB_FREEZE_WRITE, SB_FREEZE_PAGEFAULT, SB_FREEZE_FS, SB_FREEZE_COMPLETE }
FREEZE_LEVELS = {1: "SB_FREEZE_WRITE", 2: "SB_FREEZE_PAGEFAULT", 3: "SB_FREEZE_FS"}
FROZEN = {0: "unfrozen", 1: "freezing (writes)", 2: "freezing (page faults)", 3: "freezing (filesystem)",
          4: "frozen"}
MAX_MOUNTS = 10_000
MAX_DEPTH = 256


def name_freezes(k: Kernel, locks: dict[int, Lock], problems: list[Problem], superblocks: Optional[SuperBlocks] = None) -> None:
    """Give each percpu rw-semaphore waited on that is a frozen superblock's ``sb_writers`` level
    its name and the freeze as holder. Reads: the ``super_blocks`` list. Writes: ``label``,
    ``holder`` and ``details["freeze"]`` of those locks."""
    wanted = [lk for lk in locks.values() if lk.type == "percpu_rwsem" and not lk.owners and "waits_for" not in lk.details]
    if not wanted or not k.has_member("struct super_block", "s_writers.rw_sem"):
        return
    superblocks = superblocks or SuperBlocks(k)
    try:
        found = _superblocks_of(k, superblocks.all(), {lk.address for lk in wanted})
    except (ReadError, CorruptError) as e:
        problems.append(Problem("superblocks", "super_blocks", str(e)))
        return
    for lock in wanted:
        if lock.address not in found:
            continue
        sb, level = found[lock.address]
        try:
            _describe(k, superblocks, lock, sb, level)
        except (ReadError, CorruptError) as e:
            problems.append(Problem("superblock", f"{sb:#x}", str(e)))


def _superblocks_of(k: Kernel, superblocks: list[int], sems: set[int]) -> dict[int, tuple[int, int]]:
    """``{sem: (struct super_block *, freeze level)}`` for the semaphores that are some sb_writers level."""
    base = k.offset("struct super_block", "s_writers") + k.offset("struct sb_writers", "rw_sem")
    size = k.size("struct percpu_rw_semaphore")
    levels = k.member("struct sb_writers", "rw_sem")
    count = levels[1] // size if levels else 3
    found = {}
    for sb in superblocks:
        for sem in sems:
            index, rest = divmod(sem - sb - base, size)
            if rest == 0 and 0 <= index < count:
                found[sem] = (sb, index + 1)
    return found


def _describe(k: Kernel, superblocks: SuperBlocks, lock: Lock, sb: int, level: int) -> None:
    writers = sb + k.offset("struct super_block", "s_writers")
    frozen_at, frozen_size = k.member("struct sb_writers", "frozen") or (0, 4)
    frozen = int.from_bytes(k.read(writers + frozen_at, frozen_size), "little")
    fstype, device = superblocks.fs_and_device(sb)
    where = mount_point(k, sb)
    what = f"{fstype} {device}" + (f" on {where}" if where else "")
    lock.label = f"sb_writers of {what} ({FREEZE_LEVELS.get(level, level)})"
    freeze = {"superblock": f"{sb:#x}", "filesystem": fstype, "device": device, "mount_point": where,
              "level": FREEZE_LEVELS.get(level, str(level)), "frozen": FROZEN.get(frozen, str(frozen)),
              "waiters_in": FREEZE_WAITERS.get(level), "since": "not recorded by the kernel"}
    by = _frozen_by(k, writers)
    if by:
        freeze["frozen_by"] = by
    lock.details["freeze"] = freeze
    if frozen:
        thaw = f"fsfreeze --unfreeze {where}" if where else "fsfreeze --unfreeze MOUNTPOINT"
        lock.holder = f"the freeze of {what} ({FROZEN.get(frozen, frozen)}{', ' + by if by else ''}; thaw it with: {thaw})"


def _frozen_by(k: Kernel, writers: int) -> Optional[str]:
    """Who holds the freeze, where the kernel counts it (v6.6+ ``freeze_kcount``/``freeze_ucount``)."""
    s = "struct sb_writers"
    if not (k.has_member(s, "freeze_kcount") and k.has_member(s, "freeze_ucount")):
        return None
    kernel, user = k.u32(writers + k.offset(s, "freeze_kcount")), k.u32(writers + k.offset(s, "freeze_ucount"))
    by = [who for who, n in (("user space (FIFREEZE)", user), ("the kernel", kernel)) if n]
    return "by " + " and ".join(by) if by else None


def mount_point(k: Kernel, sb: int) -> Optional[str]:
    """The path of the first mount of ``sb`` (``sb->s_mounts``), up the mount tree; None if not mounted."""
    t = "struct mount"
    instance = k.offset(t, "mnt_instance")
    mounts = list(list_for_each(k, sb + k.offset("struct super_block", "s_mounts"), MAX_MOUNTS))
    if not mounts:
        return None
    mount = mounts[0] - instance
    parent_off, point_off = k.offset(t, "mnt_parent"), k.offset(t, "mnt_mountpoint")
    parts: list[str] = []
    for _ in range(MAX_DEPTH):
        parent = k.u64(mount + parent_off)
        if parent == mount:
            return "/" + "/".join(reversed(parts))
        parts += _dentry_names(k, k.u64(mount + point_off))
        mount = parent
    raise CorruptError(f"mount {mount:#x}: more than {MAX_DEPTH} parents")


def _dentry_names(k: Kernel, dentry: int) -> list[str]:
    """The names from ``dentry`` up to its filesystem's root, innermost first."""
    d_parent, d_name = k.offset("struct dentry", "d_parent"), k.offset("struct dentry", "d_name")
    name_ptr = k.offset("struct qstr", "name")
    names = []
    for _ in range(MAX_DEPTH):
        parent = k.u64(dentry + d_parent)
        if parent == dentry:
            return names
        names.append(k.string(k.u64(dentry + d_name + name_ptr), 256))
        dentry = parent
    raise CorruptError(f"dentry {dentry:#x}: more than {MAX_DEPTH} parents")
