"""Names for locks that no symbol names: as a user would name them.

In order of preference (a symbol comes first and is not made here):

- a field of a heap object: the SLUB cache of the object the lock lies in (``kernel/slab.py``), and where
  the cache says the type, the member: ``i_rwsem of struct inode 0xffff… (ext2 ram0, ino 12,
  ext4_inode_cache)``, ``pi_lock of struct task_struct 0xffff… (kdl_a (93), task_struct)``; where it does not
  (``kmalloc-*``, a driver's own cache), the cache and the offset, no more: ``kmalloc-64 object 0xffff…+0x8``,
  and a module's pointer variable that points to the object, when one does (its kallsyms, in the dump:
  ``kmalloc-64 object 0xffff…+0x8 (pointed to by kdl_dev [kdl_exit])``);
- a per-CPU variable: ``runqueues+0x10 [per-cpu, CPU 1]``;
- a stack object: ``mutex on the stack of kdl_a (93), in kdl_a_fn's frame``.

An inode is found in any cache whose name says inode (``ext4_inode_cache``, ``shmem_inode_cache``,
``inode_cache``: the fs-specific inode embeds a ``struct inode``, whose type is the vmlinux's even when the
filesystem is a module): the lock's offset in ``struct inode`` gives where the inode would start, and it
counts only if that inode lies inside the object and its ``i_sb`` is a superblock on ``super_blocks``.
A superblock is found the same way (it is kmalloc'd): the object is one of ``super_blocks``.

Reads: the slab reader's (the cache list once, a ``struct page`` per page), the ``super_blocks`` list once,
and one read of each inode or superblock named; nothing for locks a symbol names.
"""
from __future__ import annotations

import bisect
from typing import Optional

from ..errors import CorruptError, ReadError
from ..model import Lock, Naming, Task
from .layout import Kernel, le64
from .slab import SlabObject, SlabReader
from .superblocks import SuperBlocks
from .symbols import Symbols

__all__ = ["name_locks", "Namer", "CACHE_TYPES", "LOCK_MEMBERS"]

POINTER_SPAN = 16 * 4096  # module pointer variables closer than this are read together

# Caches whose objects are one C type, starting at the object (the kernel's own kmem_cache_create names).
CACHE_TYPES = {
    "task_struct": "struct task_struct",
    "mm_struct": "struct mm_struct",
    "signal_cache": "struct signal_struct",
    "sighand_cache": "struct sighand_struct",
    "files_cache": "struct files_struct",
    "fs_cache": "struct fs_struct",
    "filp": "struct file",
    "dentry": "struct dentry",
    "anon_vma": "struct anon_vma",
    "vm_area_struct": "struct vm_area_struct",
    "mnt_cache": "struct mount",
    "bio-0": "struct bio",
}

# The locks of each type, tried in this order; a path absent from this kernel's type is skipped
# (mm_struct.mmap_sem became mmap_lock in v5.8, da1c55f1b272; signal_struct.exec_update_mutex became
# exec_update_lock in v5.11, f7cfd871ae0c; inode.i_mutex became i_rwsem in v4.7, 9902af79c01a).
LOCK_MEMBERS = {
    "struct inode": ("i_rwsem", "i_mutex", "i_lock", "i_data.i_mmap_rwsem", "i_data.invalidate_lock",
                     "i_data.private_lock", "i_data.i_pages.xa_lock", "i_flctx"),
    "struct super_block": ("s_umount", "s_vfs_rename_mutex", "s_sync_lock", "s_inode_list_lock",
                           "s_inode_wblist_lock", "s_dquot.dqio_sem", "s_dquot.dqonoff_mutex"),
    "struct task_struct": ("pi_lock", "alloc_lock"),
    "struct mm_struct": ("mmap_lock", "mmap_sem", "page_table_lock", "arg_lock"),
    "struct signal_struct": ("cred_guard_mutex", "exec_update_lock", "exec_update_mutex"),
    "struct sighand_struct": ("siglock",),
    "struct files_struct": ("file_lock",),
    "struct fs_struct": ("lock", "seq"),
    "struct file": ("f_pos_lock", "f_lock"),
    "struct dentry": ("d_lockref.lock", "d_lock"),
    "struct anon_vma": ("rwsem",),
    "struct vm_area_struct": ("vm_lock",),
    "struct mount": (),
    "struct bio": (),
}


def name_locks(k: Kernel, locks: list[Lock], tasks: dict[int, Task], thread_size: int,
               symbols: Optional[Symbols] = None, per_cpu: Optional[list[int]] = None,
               superblocks: Optional[SuperBlocks] = None) -> None:
    """Set ``naming`` of every lock that has no symbol (``name()`` prefers a ``label`` of its kind to it)."""
    wanted = [lk for lk in locks if lk.symbol is None]
    if not wanted:
        return
    namer = Namer(k, tasks, thread_size, symbols, per_cpu, superblocks)
    for lock in wanted:
        try:
            lock.naming = namer.name(lock.address, lock.type)
        except (ReadError, CorruptError):
            lock.naming = None  # unreadable: the address stays its name
    # A lock named after another one ("readers of percpu_rwsem 0x…", kernel/percpu_rwsem.py) takes that one's name.
    by_address = {lk.address: lk for lk in locks}
    for lock in wanted:
        other = lock.details.get("semaphore") if lock.label else None
        if not isinstance(other, str) or f"percpu_rwsem {other}" not in (lock.label or ""):
            continue
        sem = by_address.get(int(other, 16))
        try:
            naming = sem.naming if sem is not None else namer.name(int(other, 16), "percpu_rwsem")
        except (ReadError, CorruptError):
            naming = None
        if naming is not None:
            lock.label = (lock.label or "").replace(f"percpu_rwsem {other}", naming.text)


class Namer:
    """Names for addresses of one snapshot; reads are kept for its life."""

    def __init__(self, k: Kernel, tasks: dict[int, Task], thread_size: int, symbols: Optional[Symbols] = None,
                 per_cpu: Optional[list[int]] = None, superblocks: Optional[SuperBlocks] = None) -> None:
        self.k = k
        self.symbols = symbols
        self._pointers: Optional[dict[int, str]] = None
        self.tasks = tasks
        self.thread_size = thread_size
        self.slabs = SlabReader(k)
        self._per_cpu = per_cpu
        self._stacks = sorted((t.stack_base, a) for a, t in tasks.items() if t.stack_base)
        self._superblocks = superblocks or SuperBlocks(k)
        self._readable: Optional[set[int]] = None

    def name(self, address: int, lock_type: str) -> Optional[Naming]:
        return self.per_cpu(address) or self.stack(address, lock_type) or self.heap(address)

    # -- per-CPU variables --------------------------------------------------
    def per_cpu(self, address: int) -> Optional[Naming]:
        k = self.k
        start, end = k.symbol("__per_cpu_start"), k.symbol("__per_cpu_end")
        if start is None or end is None or end <= start:
            return None
        if self._per_cpu is None:
            from .tasks import per_cpu_offsets  # the one read of nr_cpu_ids and __per_cpu_offset

            try:
                self._per_cpu = per_cpu_offsets(k)
            except ReadError:
                self._per_cpu = []
        for cpu, offset in enumerate(self._per_cpu):
            static = address - offset
            if start <= static < end:
                found = k.target.symbolize(static)
                if found is None:
                    return None
                symbol = found[0] if found[1] == 0 else f"{found[0]}+{found[1]:#x}"
                return Naming("percpu", f"{symbol} [per-cpu, CPU {cpu}]", offset=found[1], cpu=cpu, symbol=symbol)
        return None

    # -- kernel stacks ------------------------------------------------------
    def stack(self, address: int, lock_type: str) -> Optional[Naming]:
        i = bisect.bisect_right(self._stacks, (address, 1 << 64)) - 1
        if i < 0 or address >= self._stacks[i][0] + self.thread_size:
            return None
        task = self.tasks[self._stacks[i][1]]
        # The frame whose locals hold it: the function of the innermost return address below it.
        below = [f for f in task.frames if f.sp and f.sp < address]
        function = max(below, key=lambda f: f.sp).symbol if below else None
        where = f", in {function}'s frame" if function else ""
        return Naming("stack", f"{lock_type} on the stack of {task.name()}{where}", object=task.address,
                      offset=address - task.stack_base, symbol=function)

    # -- the heap -----------------------------------------------------------
    def heap(self, address: int) -> Optional[Naming]:
        found = self.slabs.find(address)
        if found is None:
            return None
        cache = found.cache.name
        named = self._inode(address, found) if "inode" in cache else None
        if named is None and cache in CACHE_TYPES:
            named = self._typed(address, found, CACHE_TYPES[cache], found.object)
        if named is None and cache.startswith("kmalloc-") and found.object in self.superblocks():
            named = self._typed(address, found, "struct super_block", found.object)
        if named is not None:
            return named
        at = f"+{found.offset:#x}" if found.offset else ""
        pointer = self.module_pointers().get(found.object)
        details = {"pointer": pointer} if pointer else {}
        return Naming("heap", f"{cache} object {found.object:#x}{at}" + (f" (pointed to by {pointer})" if pointer else ""),
                      object=found.object, offset=found.offset, cache=cache, details=details)

    def module_pointers(self) -> dict[int, str]:
        """``{value: "variable [module]"}`` of every 8-byte variable of every module (its kallsyms), read once:
        the module's own pointer to an object it allocated."""
        if self._pointers is not None:
            return self._pointers
        self._pointers = {}
        if self.symbols is None:
            return self._pointers
        for module in self.symbols.modules:
            variables = sorted((v, name) for v, size, name in self.symbols.module_symbols(module)
                               if size == 8 and not module.text[0] <= v < module.text[1])
            while variables:
                group = [v for v in variables if v[0] < variables[0][0] + POINTER_SPAN]
                variables = variables[len(group):]
                start = group[0][0]
                try:
                    data = self.k.read(start, group[-1][0] + 8 - start)
                except ReadError:
                    continue
                for value, name in group:
                    self._pointers.setdefault(le64(data, value - start), f"{name} [{module.name}]")
        return self._pointers

    def _typed(self, address: int, found: SlabObject, type_name: str, start: int,
               detail: Optional[tuple[str, dict]] = None) -> Optional[Naming]:
        """``member of type start (detail, cache)`` for the member of ``type_name`` at ``address``."""
        k = self.k
        size = k.target.type_size(type_name)
        if not size or not start <= address < start + size:
            return None
        member = self._member(type_name, address - start)
        extra, details = detail if detail is not None else self._describe(type_name, start)
        inside = f"({extra}, {found.cache.name})" if extra else f"({found.cache.name})"
        if member is not None:
            text = f"{member} of {type_name} {start:#x} {inside}"
        else:
            text = f"{type_name} {start:#x}+{address - start:#x} {inside}"
        return Naming("heap", text, object=found.object, offset=found.offset, cache=found.cache.name, type=type_name,
                      member=member, container=start, details=details)

    def _member(self, type_name: str, offset: int) -> Optional[str]:
        for path in LOCK_MEMBERS.get(type_name, ()):
            at = self.k.member(type_name, path)
            if at is not None and at[0] == offset:
                return path
        return None

    def _describe(self, type_name: str, start: int) -> tuple[str, dict]:
        """What identifies an object of a known type, and the same as JSON details."""
        if type_name == "struct task_struct" and start in self.tasks:
            task = self.tasks[start]
            return task.name(), {"pid": task.pid, "comm": task.comm}
        if type_name == "struct super_block":
            name = self._sb_name(start)
            return name, {"superblock": f"{start:#x}", "filesystem": name}
        return "", {}

    def _inode(self, address: int, found: SlabObject) -> Optional[Naming]:
        """The lock as a member of the ``struct inode`` embedded in an inode cache's object."""
        k = self.k
        t = "struct inode"
        size = k.target.type_size(t)
        sb_off, ino_off = k.member(t, "i_sb"), k.member(t, "i_ino")
        if not size or sb_off is None or ino_off is None:
            return None
        end = found.object + found.cache.object_size
        for path in LOCK_MEMBERS[t]:
            at = k.member(t, path)
            if at is None:
                continue
            inode = address - at[0]
            if not (found.object <= inode and inode + size <= end and at[0] <= address - inode < at[0] + max(at[1], 1)):
                continue
            data = k.read(inode, max(sb_off[0], ino_off[0]) + 8)
            sb = le64(data, sb_off[0])
            if sb not in self.superblocks():
                continue
            ino = le64(data, ino_off[0])
            fs = self._sb_name(sb)
            details = {"ino": ino, "superblock": f"{sb:#x}", "filesystem": fs}
            return self._typed(address, found, t, inode, (f"{fs}, ino {ino}" if fs else f"ino {ino}", details))
        return None

    # -- superblocks --------------------------------------------------------
    def superblocks(self) -> set[int]:
        """Every ``struct super_block`` on ``super_blocks`` (none when the list cannot be walked)."""
        if self._readable is None:
            self._readable = self._superblocks.readable()
        return self._readable

    def _sb_name(self, sb: int) -> str:
        """``ext2 ram0``: the filesystem type and the device (``s_id``) of a superblock; '' if unreadable."""
        try:
            fstype, device = self._superblocks.fs_and_device(sb)
        except ReadError:
            return ""
        return f"{fstype} {device}" if device and device != fstype else fstype
