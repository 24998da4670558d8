"""Names of locks no symbol names (kernel/slab.py, kernel/naming.py), on hand-made memory.

A lock in a heap object is named by the object's SLUB cache and, where the cache says the type, the
member (an inode's i_rwsem with its filesystem and inode number); a kmalloc'd object by its cache and
offset, and the module variable that points to it; a per-CPU variable by its symbol and CPU; a lock on
a task's stack by the task and the frame.
"""
from __future__ import annotations

import struct
from typing import Optional

import pytest

from kdlgdb.errors import CorruptError, ReadError
from kdlgdb.kernel.naming import Namer, name_locks
from kdlgdb.kernel.slab import SlabReader
from kdlgdb.kernel.superblocks import SuperBlocks
from kdlgdb.model import Frame, Lock, Naming, Snapshot, Task
from kdlgdb.render.json import lock_json
from kdlgdb.analysis.graph import WaitForGraph

DIRECT, VMALLOC, VMEMMAP = 0xFFFF888000000000, 0xFFFFC90000000000, 0xFFFFEA0000000000
BASES = 0xFFFFFFFF82000000  # page_offset_base, vmalloc_base, vmemmap_base, slab_caches, super_blocks, ...
SLAB_CACHES, SUPER_BLOCKS = BASES + 0x100, BASES + 0x200
PAGE = 64  # sizeof(struct page)

TYPES = {
    "struct page": (PAGE, {"compound_head": (8, 8), "slab_cache": (24, 8)}),
    "struct slab": (PAGE, {"slab_cache": (8, 8)}),
    "struct kmem_cache": (8408, {"size": (24, 4), "object_size": (28, 4), "red_left_pad": (88, 4), "name": (96, 8),
                                 "list": (104, 16)}),
    "struct inode": (600, {"i_sb": (40, 8), "i_ino": (64, 8), "i_lock": (136, 4), "i_rwsem": (160, 40)}),
    "struct super_block": (1500, {"s_list": (0, 16), "s_type": (40, 8), "s_id": (1000, 32), "s_umount": (120, 40)}),
    "struct file_system_type": (64, {"name": (0, 8)}),
    "struct task_struct": (9000, {"pi_lock": (2000, 4), "alloc_lock": (3000, 4)}),
}


class Memory:
    """A target and kernel in one: bytes at addresses, and the types above (``struct slab`` optional)."""

    def __init__(self, with_slab_type: bool = True) -> None:
        self.mem: dict[int, int] = {}
        self.types = dict(TYPES) if with_slab_type else {t: v for t, v in TYPES.items() if t != "struct slab"}
        self.symbols = {"page_offset_base": BASES, "vmalloc_base": BASES + 8, "vmemmap_base": BASES + 16,
                        "slab_caches": SLAB_CACHES, "super_blocks": SUPER_BLOCKS}
        self.per_cpu_symbols: dict[int, str] = {}
        self.target = self
        self.reads = 0
        for name, value in (("page_offset_base", DIRECT), ("vmalloc_base", VMALLOC), ("vmemmap_base", VMEMMAP)):
            self.put64(self.symbols[name], value)
        self.put64(SLAB_CACHES, SLAB_CACHES)
        self.put64(SLAB_CACHES + 8, SLAB_CACHES)
        self.put64(SUPER_BLOCKS, SUPER_BLOCKS)
        self.put64(SUPER_BLOCKS + 8, SUPER_BLOCKS)
        self.symbols.update({"nr_cpu_ids": BASES + 0x300, "__per_cpu_offset": BASES + 0x310})
        self.put(BASES + 0x300, struct.pack("<I", 1))  # one CPU; its per-CPU area is not where the tests look
        self.put64(BASES + 0x310, 0xFFFF88800F000000)

    # -- writing ------------------------------------------------------------
    def put(self, address: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.mem[address + i] = b

    def put64(self, address: int, value: int) -> None:
        self.put(address, struct.pack("<Q", value))

    def link(self, head: int, node: int) -> None:
        """list_add_tail(node, head)."""
        last = struct.unpack("<Q", self.read(head + 8, 8))[0]
        self.put64(node, head)
        self.put64(node + 8, last)
        self.put64(last, node)
        self.put64(head + 8, node)

    def cache(self, address: int, name: str, size: int, object_size: int) -> None:
        self.put(address, bytes(128))
        self.put(address + 0x1000, name.encode() + b"\0")
        self.put64(address + 96, address + 0x1000)
        self.put(address + 24, struct.pack("<II", size, object_size))
        self.put(address + 88, struct.pack("<I", 0))
        self.link(SLAB_CACHES, address + 104)

    def slab(self, first_page: int, pages: int, cache: int) -> None:
        """A slab of ``pages`` pages at direct-map address ``first_page`` whose head records ``cache``."""
        head = VMEMMAP + (first_page - DIRECT) // 4096 * PAGE
        cache_off = self.types["struct slab"][1]["slab_cache"][0] if "struct slab" in self.types else 24
        self.put(head, bytes(PAGE))
        self.put64(head + cache_off, cache)
        for i in range(1, pages):
            self.put(head + i * PAGE, bytes(PAGE))
            self.put64(head + i * PAGE + 8, head | 1)

    def superblock(self, sb: int, fstype: str, device: str) -> None:
        self.put(sb, bytes(48))
        self.put(sb + 0x800, fstype.encode() + b"\0")
        self.put64(sb + 0x900, sb + 0x800)  # struct file_system_type: name first
        self.put64(sb + 40, sb + 0x900)
        self.put(sb + 1000, device.encode() + b"\0")
        self.link(SUPER_BLOCKS, sb)

    # -- the Kernel and Target the code asks ---------------------------------
    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        try:
            return bytes(self.mem[address + i] for i in range(size))
        except KeyError:
            raise ReadError(address, size) from None

    def u64(self, address: int) -> int:
        return struct.unpack("<Q", self.read(address, 8))[0]

    def u32(self, address: int) -> int:
        return struct.unpack("<I", self.read(address, 4))[0]

    def need_symbol(self, name: str) -> int:
        found = self.symbol(name)
        assert found is not None, name
        return found

    def string(self, address: int, limit: int = 256) -> str:
        out = b""
        while len(out) < limit and self.mem.get(address + len(out), 0):
            out += bytes([self.mem[address + len(out)]])
        return out.decode()

    def symbol(self, name: str) -> Optional[int]:
        return {"__per_cpu_start": 0, "__per_cpu_end": 0x40000}.get(name, self.symbols.get(name))

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        return self.types.get(type_name, (0, {}))[1].get(path)

    def has_member(self, type_name: str, path: str) -> bool:
        return self.member(type_name, path) is not None

    def offset(self, type_name: str, path: str) -> int:
        found = self.member(type_name, path)
        assert found is not None, (type_name, path)
        return found[0]

    def type_size(self, type_name: str) -> Optional[int]:
        return self.types[type_name][0] if type_name in self.types else None

    def symbolize(self, address: int) -> Optional[tuple[str, int]]:
        for start, name in sorted(self.per_cpu_symbols.items(), reverse=True):
            if start <= address:
                return name, address - start
        return None


KMALLOC_64, EXT4_INODES, TASKS = 0xFFFF888001000000, 0xFFFF888001010000, 0xFFFF888001020000
OBJECTS = 0xFFFF888002000000  # a slab of kmalloc-64 (order 1: two pages)
INODES = 0xFFFF888002100000  # a slab of ext4_inode_cache (order 3)
SB = 0xFFFF888003000000


def heap() -> Memory:
    m = Memory()
    m.cache(KMALLOC_64, "kmalloc-64", 64, 64)
    m.cache(EXT4_INODES, "ext4_inode_cache", 1184, 1176)
    m.slab(OBJECTS, 2, KMALLOC_64)
    m.slab(INODES, 8, EXT4_INODES)
    m.superblock(SB, "ext2", "ram0")
    return m


def namer(m: Memory, tasks: Optional[dict[int, Task]] = None) -> Namer:
    return Namer(m, tasks or {}, 16384)  # type: ignore[arg-type]


def test_a_kmalloc_object_by_cache_and_offset() -> None:
    m = heap()
    lock = OBJECTS + 4096 + 3 * 64 + 8  # the second page (a tail page) of the slab, object 67, +0x8
    found = SlabReader(m).find(lock)  # type: ignore[arg-type]
    assert found is not None and (found.cache.name, found.object, found.offset) == ("kmalloc-64", lock - 8, 8)
    naming = namer(m).name(lock, "mutex")
    assert naming == Naming("heap", f"kmalloc-64 object {lock - 8:#x}+0x8", object=lock - 8, offset=8, cache="kmalloc-64")


def test_before_struct_slab_the_cache_is_struct_page_slab_cache() -> None:
    """Before v5.17 ("mm: Split slab into its own type") there is no struct slab: page.slab_cache is read."""
    m = Memory(with_slab_type=False)
    m.cache(KMALLOC_64, "kmalloc-64", 64, 64)
    m.slab(OBJECTS, 1, KMALLOC_64)
    found = SlabReader(m).find(OBJECTS + 64)  # type: ignore[arg-type]
    assert found is not None and (found.cache.name, found.object, found.offset) == ("kmalloc-64", OBJECTS + 64, 0)


def test_no_name_is_guessed_for_what_is_not_a_slab() -> None:
    m = heap()
    m.put(VMEMMAP + (0xFFFF888004000000 - DIRECT) // 4096 * PAGE, bytes(PAGE))  # a page, not a slab's
    m.put64(VMEMMAP + (0xFFFF888004000000 - DIRECT) // 4096 * PAGE + 8, 0xFFFF888005000000)  # lru.next, no cache
    slabs = SlabReader(m)  # type: ignore[arg-type]
    assert slabs.find(0xFFFF888004000010) is None  # its "slab_cache" is on no cache list
    assert slabs.find(0xFFFFC90000001000) is None  # vmalloc space: no struct page to read here
    assert slabs.find(0xFFFF888006000000) is None  # no struct page readable
    assert namer(m).name(0xFFFF888004000010, "mutex") is None


def test_an_inodes_lock_by_member_filesystem_and_inode_number() -> None:
    m = heap()
    inode = INODES + 2 * 1184 + 0x100  # the struct inode inside the third ext4_inode_info
    m.put(inode, bytes(600))
    m.put64(inode + 40, SB)
    m.put64(inode + 64, 12)
    naming = namer(m).name(inode + 160, "rwsem")
    assert naming is not None
    assert naming.text == f"i_rwsem of struct inode {inode:#x} (ext2 ram0, ino 12, ext4_inode_cache)"
    assert (naming.type, naming.member, naming.container, naming.cache) == ("struct inode", "i_rwsem", inode, "ext4_inode_cache")
    assert naming.details == {"ino": 12, "superblock": f"{SB:#x}", "filesystem": "ext2 ram0"}
    # An "inode" whose i_sb is no superblock is not one: the cache and offset only.
    m.put64(inode + 40, 0xFFFF888009999000)
    other = namer(m).name(inode + 160, "rwsem")
    assert other is not None and other.text == f"ext4_inode_cache object {INODES + 2 * 1184:#x}+{0x100 + 160:#x}"


def test_a_kmalloced_superblock_and_a_task_struct() -> None:
    m = heap()
    m.cache(0xFFFF888001030000, "kmalloc-2k", 2048, 2048)
    m.slab(SB, 8, 0xFFFF888001030000)
    naming = namer(m).name(SB + 120, "rwsem")
    assert naming is not None and naming.text == f"s_umount of struct super_block {SB:#x} (ext2 ram0, kmalloc-2k)"
    m.cache(TASKS, "task_struct", 9024, 9000)
    m.slab(0xFFFF888007000000, 8, TASKS)
    task = Task(0xFFFF888007000000, 93, 93, "kdl_a", "D", 0)
    named = namer(m, {task.address: task}).name(task.address + 2000, "spinlock")
    assert named is not None and named.text == f"pi_lock of struct task_struct {task.address:#x} (\"kdl_a\" (pid 93), task_struct)"


def test_per_cpu_variables_and_stack_objects() -> None:
    m = heap()
    m.put(BASES + 0x300, struct.pack("<I", 2))
    m.put64(BASES + 0x310, 0xFFFF88800F000000)
    m.put64(BASES + 0x318, 0xFFFF88800F200000)
    m.per_cpu_symbols = {0x1F000: "runqueues", 0x30000: "kdl_pcpu_lock"}
    naming = namer(m).name(0xFFFF88800F200000 + 0x1F010, "spinlock")
    assert naming is not None and (naming.kind, naming.text, naming.cpu) == ("percpu", "runqueues+0x10 [per-cpu, CPU 1]", 1)
    stack = 0xFFFFC90000400000
    task = Task(0xFFFF888007000000, 93, 93, "kdl_a", "D", 0, stack_base=stack,
                frames=[Frame(0xFFFFFFFF81000000, "schedule", 0x5A, sp=stack + 0x3E00),
                        Frame(0xFFFFFFFFC0000010, "kdl_a_fn", 0x10, "kdl_x", sp=stack + 0x3F00)])
    on_stack = namer(m, {task.address: task}).name(stack + 0x3E80, "mutex")
    assert on_stack is not None and on_stack.text == "mutex on the stack of \"kdl_a\" (pid 93), in schedule's frame"
    assert namer(m, {task.address: task}).name(stack + 0x3F10, "mutex").symbol == "kdl_a_fn"  # type: ignore[union-attr]


class ModuleSymbols:
    """A Symbols with one module holding one pointer variable."""

    def __init__(self, variable: int, module: str) -> None:
        from kdlgdb.kernel.symbols import Module

        self.modules = [Module(module, 0, [(variable & ~0xFFF, (variable & ~0xFFF) + 0x2000)], (0, 1), 0)]
        self.variable = variable

    def module_symbols(self, module) -> list[tuple[int, int, str]]:
        return [(self.variable - 8, 4, "kdl_count"), (self.variable, 8, "kdl_dev")]


def test_the_module_variable_that_points_to_a_kmalloc_object() -> None:
    m = heap()
    variable = 0xFFFFFFFFC0202000
    m.put(variable - 8, bytes(8))
    m.put64(variable, OBJECTS + 128)
    lock = Lock(OBJECTS + 128 + 8, "mutex")
    name_locks(m, [lock], {}, 16384, ModuleSymbols(variable, "kdl_exit"))  # type: ignore[arg-type]
    assert lock.name() == f"kmalloc-64 object {OBJECTS + 128:#x}+0x8 (pointed to by kdl_dev [kdl_exit])"
    assert lock.naming is not None and lock.naming.details == {"pointer": "kdl_dev [kdl_exit]"}


def test_a_lock_named_after_another_takes_its_name_and_json_keeps_the_address() -> None:
    m = heap()
    sem = OBJECTS + 0x28
    readers = Lock(OBJECTS + 0x60, "percpu_rwsem_readers", label=f"readers of percpu_rwsem {sem:#x}",
                   details={"semaphore": f"{sem:#x}"})
    lock = Lock(sem, "percpu_rwsem")
    name_locks(m, [lock, readers], {}, 16384)  # type: ignore[arg-type]
    assert readers.name() == f"readers of kmalloc-64 object {OBJECTS:#x}+0x28"
    snap = Snapshot(locks=[lock, readers])
    doc = lock_json(lock, WaitForGraph(snap), {})
    assert doc["address"] == f"{sem:#x}" and doc["name"] == f"kmalloc-64 object {OBJECTS:#x}+0x28"
    assert doc["naming"] == {"kind": "heap", "text": doc["name"], "object": f"{OBJECTS:#x}", "offset": 0x28,
                             "cache": "kmalloc-64", "details": {}}
    again = Snapshot.from_dict(snap.to_dict())
    assert again.locks[0].naming == lock.naming and again.locks[0].name() == lock.name()


def test_the_cache_list_is_read_once_and_pages_are_kept() -> None:
    m = heap()
    n = namer(m)
    n.name(OBJECTS + 8, "mutex")
    before = m.reads
    for i in range(1, 30):
        n.name(OBJECTS + 64 * i + 8, "mutex")  # the same slab page: no read at all
    assert m.reads == before


def test_the_superblock_list_is_walked_once_for_every_stage_that_asks() -> None:
    """The freeze stage and the naming stage share one walk of ``super_blocks`` (kernel/superblocks.py)."""
    m = heap()
    m.superblock(SB + 0x4000, "proc", "proc")
    sbs = SuperBlocks(m)  # type: ignore[arg-type]
    assert sbs.all() == [SB, SB + 0x4000] and sbs.fs_and_device(SB) == ("ext2", "ram0")
    before = m.reads
    assert sbs.all() == [SB, SB + 0x4000] and Namer(m, {}, 16384, superblocks=sbs).superblocks() == {SB, SB + 0x4000}  # type: ignore[arg-type]
    assert m.reads == before
    # A list that cannot be walked: the error each time it is asked for; naming goes on without it.
    broken = heap()
    broken.put64(SB + 8, 0xDEAD000000000000)  # the first superblock's s_list.prev: the list is cut
    sbs = SuperBlocks(broken)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises((ReadError, CorruptError)):
            sbs.all()
    assert sbs.readable() == set()
