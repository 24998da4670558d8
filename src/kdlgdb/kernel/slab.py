"""SLUB: the slab cache and the object an address of the direct map lies in (``mm/slub.c``, ``mm/slab.h``).

An address of the kernel's direct map has a ``struct page`` in the vmemmap array (``virt_to_page``); a
page of a slab of order > 0 is a tail page whose ``compound_head`` (bit 0 set) points at the head page, and
the head page of a slab records its cache in ``slab_cache``. The cache gives the object size, so the
object an address lies in is ``slab base + index * size`` (after the left red zone of a debug cache).

Reads: the ``slab_caches`` list once per :class:`SlabReader` (the start of each ``struct kmem_cache``, up to
its ``list`` node), then one ``struct page`` per page looked up (and its head page), each kept for the
reader's life: a snapshot. A cache pointer that is not on the list is no slab: nothing is guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import CorruptError, ReadError
from .layout import Kernel, le32, le64
from .list import list_for_each_entry_read

__all__ = ["SlabCache", "SlabObject", "SlabReader"]

PAGE_SHIFT = 12
MAX_CACHES = 10_000
# x86_64's region bases without CONFIG_RANDOMIZE_MEMORY (Documentation/arch/x86/x86_64/mm.rst, 4-level paging);
# with it (Debian's kernels) the variables page_offset_base, vmalloc_base and vmemmap_base hold them.
DIRECT_MAP = 0xFFFF888000000000
VMALLOC = 0xFFFFC90000000000
VMEMMAP = 0xFFFFEA0000000000


@dataclass(frozen=True)
class SlabCache:
    """A ``struct kmem_cache``."""

    address: int
    name: str  # "ext4_inode_cache", "kmalloc-128", "task_struct"
    size: int  # kmem_cache.size: the stride of objects in a slab (object, metadata, padding)
    object_size: int  # kmem_cache.object_size: what the caller asked for
    red_left_pad: int = 0  # the left red zone of a SLAB_RED_ZONE cache: objects start this far into their stride


@dataclass(frozen=True)
class SlabObject:
    """Where an address lies in a slab: ``address == object + offset``."""

    cache: SlabCache
    object: int  # the object's start
    offset: int  # from the object's start


class SlabReader:
    """``find(address)``: the slab object a direct-map address lies in, or None. Kept for one snapshot."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self._layout: Optional[tuple[int, int, int]] = None  # sizeof(struct page), compound_head, slab_cache offsets
        self._caches: Optional[dict[int, tuple[int, int, int, int]]] = None  # address -> (name ptr, size, object_size, pad)
        self._named: dict[int, SlabCache] = {}
        self._pages: dict[int, bytes] = {}
        self.direct_map = self.vmalloc = self.vmemmap = 0

    # -- the kernel's layout ------------------------------------------------
    def _detect(self) -> bool:
        k = self.k
        if self._layout is not None:
            return self._layout[0] > 0
        self._layout = (0, 0, 0)  # until detected: no slab lookups
        try:
            self.direct_map = self._base("page_offset_base", DIRECT_MAP)
            self.vmalloc = self._base("vmalloc_base", VMALLOC)
            self.vmemmap = self._base("vmemmap_base", VMEMMAP)
        except ReadError:
            return False
        page_size = k.target.type_size("struct page")
        head = k.member("struct page", "compound_head")
        # v5.17 (d122019bf061, "mm: Split slab into its own type") gave slabs a struct slab of their own that
        # overlays struct page; before it the cache was struct page's own slab_cache.
        cache = k.member("struct slab", "slab_cache") if k.target.type_size("struct slab") else None
        cache = cache or k.member("struct page", "slab_cache")
        if not page_size or head is None or cache is None or not k.has_member("struct kmem_cache", "list"):
            return False
        self._layout = (page_size, head[0], cache[0])
        return True

    def _base(self, name: str, default: int) -> int:
        address = self.k.symbol(name)
        return self.k.u64(address) if address is not None else default

    def _cache_list(self) -> dict[int, tuple[int, int, int, int]]:
        """Every ``struct kmem_cache`` on ``slab_caches``: address -> (name pointer, size, object_size, red_left_pad)."""
        if self._caches is not None:
            return self._caches
        k = self.k
        self._caches = {}
        head = k.symbol("slab_caches")
        if head is None:
            return self._caches
        t = "struct kmem_cache"
        list_off, name_off = k.offset(t, "list"), k.offset(t, "name")
        size_off, object_off = k.offset(t, "size"), k.offset(t, "object_size")
        pad = k.member(t, "red_left_pad")
        span = max(list_off + 16, name_off + 8, pad[0] + 4 if pad else 0)
        try:  # one read a cache: its list node comes with its fields
            for cache, data in list_for_each_entry_read(k, head, list_off, span, "slab_caches", MAX_CACHES):
                assert data is not None
                self._caches[cache] = (le64(data, name_off), le32(data, size_off), le32(data, object_off),
                                       le32(data, pad[0]) if pad else 0)
        except (ReadError, CorruptError):
            pass  # a broken list: the caches read so far still name their objects
        return self._caches

    def _page(self, page: int) -> bytes:
        if page not in self._pages:
            self._pages[page] = self.k.read(page, self._layout[0] if self._layout else 64)
        return self._pages[page]

    def cache(self, address: int) -> Optional[SlabCache]:
        """The ``struct kmem_cache`` at ``address`` if it is on ``slab_caches``, else None."""
        if address in self._named:
            return self._named[address]
        found = self._cache_list().get(address)
        if found is None:
            return None
        name_ptr, size, object_size, pad = found
        try:
            name = self.k.string(name_ptr, 64)
        except ReadError:
            name = f"kmem_cache {address:#x}"
        self._named[address] = SlabCache(address, name, size, object_size, pad)
        return self._named[address]

    # -- lookups ------------------------------------------------------------
    def in_direct_map(self, address: int) -> bool:
        return self._detect() and self.direct_map <= address < self.vmalloc

    def find(self, address: int) -> Optional[SlabObject]:
        """The slab object ``address`` lies in, or None (not the direct map, not a slab page, unreadable)."""
        if not self.in_direct_map(address):
            return None
        assert self._layout is not None
        page_size, head_off, cache_off = self._layout
        page = self.vmemmap + ((address - self.direct_map) >> PAGE_SHIFT) * page_size
        try:
            data = self._page(page)
            head = le64(data, head_off)
            if head & 1:  # a tail page of a compound page: compound_head is the head page, bit 0 set
                page = head - 1
                data = self._page(page)
            cache = self.cache(le64(data, cache_off))
        except ReadError:
            return None
        if cache is None or cache.size <= 0:
            return None
        base = self.direct_map + (((page - self.vmemmap) // page_size) << PAGE_SHIFT) + cache.red_left_pad
        if address < base:
            return None
        start = base + (address - base) // cache.size * cache.size
        return SlabObject(cache, start, address - start)
