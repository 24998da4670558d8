"""The kernel being read: KASLR offset, relocated symbols, member offsets.

Everything kernel-version dependent is detected here or in the module that
needs it, from the vmlinux's own types, once per ``Kernel``.
"""
from __future__ import annotations

import struct
from typing import Optional

from ..errors import KdlError, ReadError
from ..target.base import Target
from ..target.pagetable import START_KERNEL_MAP

__all__ = ["Kernel", "KERNEL_IMAGE_START", "le64", "le32"]

# x86_64 maps the kernel image in [__START_KERNEL_map, 0xffffffffc0000000) and
# KASLR slides it there in steps of CONFIG_PHYSICAL_ALIGN (2 MiB on Debian).
KERNEL_IMAGE_START = START_KERNEL_MAP
KERNEL_IMAGE_END = 0xFFFFFFFFC0000000
KASLR_ALIGN = 0x200000
KERNEL_SPACE = 0xFFFF800000000000
BANNER = b"Linux version "
DEFAULT_TEXT = 0xFFFFFFFF81000000
PAGE_SHIFT = 12
#: The most one read asks for: the largest thing read whole is the printk text ring (LOG_BUF_LEN_MAX is 2 GiB,
#: a kernel's default 128 KiB to 32 MiB); a larger size comes from a corrupt field.
MAX_READ = 256 << 20


class Kernel:
    """A Target plus what we learnt about the kernel in it (``struct`` layouts, KASLR)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._members: dict[tuple[str, str], Optional[tuple[int, int]]] = {}
        self._sizes: dict[str, Optional[int]] = {}
        self._symbols: dict[str, Optional[int]] = {}
        self._kept: dict[int, list[tuple[int, bytes]]] = {}  # page number -> regions read whole
        self.vmcoreinfo = target.vmcoreinfo() or {}
        self.slide = self._find_slide()
        self.kaslr_offset = self._kaslr_offset()
        self.release = self._check_banner()

    # -- memory -------------------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        if not 0 <= size <= MAX_READ or not 0 <= address < 1 << 64:
            raise ReadError(address, size, f"not a read kdlgdb makes (at most {MAX_READ >> 20} MiB in the "
                                           "64-bit address space): a size or address from corrupt memory?")
        for start, data in self._kept.get(address >> PAGE_SHIFT, ()):
            if start <= address and address + size <= start + len(data):
                return data[address - start : address - start + size]
        return self.target.read(address, size)

    def keep(self, address: int, data: bytes) -> None:
        """Serve later reads inside [address, address + len(data)) from ``data``.

        For memory read whole and looked at again field by field: a task's stack holds the
        wait-list nodes and waiter structs of the locks it waits on. Over a gdbstub each
        read is a round trip; here it is a slice.
        """
        for page in range(address >> PAGE_SHIFT, ((address + len(data) - 1) >> PAGE_SHIFT) + 1):
            self._kept.setdefault(page, []).append((address, data))

    def forget_kept(self) -> None:
        """Read everything from the target again (a snapshot is done; a live kernel may run on)."""
        self._kept.clear()

    def u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

    def string(self, address: int, limit: int = 256) -> str:
        """A NUL-terminated string; reads in small pieces so a short one near a page end still reads."""
        out = b""
        while len(out) < limit:
            chunk = self.read(address + len(out), min(64, limit - len(out)))
            end = chunk.find(b"\0")
            if end >= 0:
                return (out + chunk[:end]).decode("utf-8", "replace")
            out += chunk
        return out.decode("utf-8", "replace")

    # -- symbols and types --------------------------------------------------
    def relocate(self, static: int) -> int:
        """Runtime address of a vmlinux address (per-cpu offsets are not relocated)."""
        return static + self.slide if static >= KERNEL_IMAGE_START else static

    def unrelocate(self, address: int) -> int:
        return address - self.slide if self.in_image(address) else address

    def in_image(self, address: int) -> bool:
        return KERNEL_IMAGE_START + self.slide <= address < KERNEL_IMAGE_END

    def symbol(self, name: str) -> Optional[int]:
        """Relocated address of a vmlinux symbol, or None."""
        if name not in self._symbols:
            static = self.target.symbol(name)
            self._symbols[name] = None if static is None else self.relocate(static)
        return self._symbols[name]

    def need_symbol(self, name: str) -> int:
        address = self.symbol(name)
        if address is None:
            raise KdlError(f"the vmlinux has no symbol '{name}': is it a Linux vmlinux with debug info?")
        return address

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        key = (type_name, path)
        if key not in self._members:
            self._members[key] = self.target.member(type_name, path)
        return self._members[key]

    def has_member(self, type_name: str, path: str) -> bool:
        return self.member(type_name, path) is not None

    def offset(self, type_name: str, path: str) -> int:
        found = self.member(type_name, path)
        if found is None:
            self.size(type_name)  # a missing type says "no debug info", not "wrong kernel"
            raise KdlError(f"this kernel's {type_name} has no member '{path}': kernel too old or too new for kdlgdb")
        return found[0]

    def size(self, type_name: str) -> int:
        if type_name not in self._sizes:
            self._sizes[type_name] = self.target.type_size(type_name)
        size = self._sizes[type_name]
        if size is None:
            raise KdlError(f"the vmlinux has no type '{type_name}': is it a vmlinux with debug info (the -dbg package)?")
        return size

    # -- KASLR and identity -------------------------------------------------
    def _find_slide(self) -> int:
        """How far the kernel in memory is from the target's symbols.

        The dump's VMCOREINFO KERNELOFFSET is tried first, then 0 (the user
        already loaded the symbols relocated, ``symbol-file VMLINUX -o OFF``),
        then every KASLR slot in turn (live targets) until linux_banner reads back.
        """
        static = self.target.symbol("linux_banner")
        if static is None:
            raise KdlError("the file given as vmlinux has no linux_banner: it is not a Linux vmlinux")
        first = [self._vmcoreinfo_hex("KERNELOFFSET")] if "KERNELOFFSET" in self.vmcoreinfo else []
        for offset in first + [0] + list(range(KASLR_ALIGN, KERNEL_IMAGE_END - static, KASLR_ALIGN)):
            try:
                if self.read(static + offset, len(BANNER)) == BANNER:
                    return offset
            except ReadError:
                continue
        raise KdlError("cannot find the kernel's banner in memory: the vmlinux does not match the kernel")

    def _kaslr_offset(self) -> int:
        """The kernel's KASLR offset (as VMCOREINFO's KERNELOFFSET counts it)."""
        if "KERNELOFFSET" in self.vmcoreinfo:
            return self._vmcoreinfo_hex("KERNELOFFSET")
        # Without VMCOREINFO: where _text is now against x86_64's default
        # __START_KERNEL (0xffffffff81000000 with Debian's PHYSICAL_START).
        return self.need_symbol("_text") - DEFAULT_TEXT

    def _vmcoreinfo_hex(self, key: str) -> int:
        """The hexadecimal number VMCOREINFO gives for ``key``; KdlError naming it when it is none."""
        text = self.vmcoreinfo[key]
        try:
            return int(text, 16)
        except ValueError:
            raise KdlError(f"the dump's VMCOREINFO {key} is not a hexadecimal number: {text[:40]!r}") from None

    def _check_banner(self) -> str:
        """The kernel release; KdlError when the vmlinux and the kernel in memory differ."""
        uts = self.need_symbol("init_uts_ns")
        recorded = self.vmcoreinfo.get("SYMBOL(init_uts_ns)")
        if recorded is not None and self._vmcoreinfo_hex("SYMBOL(init_uts_ns)") != uts:
            raise KdlError(
                f"the vmlinux does not match the dump (the dump is {self.vmcoreinfo.get('OSRELEASE', 'another kernel')}): "
                "its init_uts_ns is elsewhere"
            )
        try:
            release = self.string(uts + self.offset("struct uts_namespace", "name.release"), 65)
            banner = self.string(self.need_symbol("linux_banner"), 512)
        except ReadError as e:
            raise KdlError(f"cannot read the kernel's banner ({e}): wrong vmlinux, or not a kernel dump") from None
        expected = self.vmcoreinfo.get("OSRELEASE", release)
        if release != expected or not banner.startswith(BANNER.decode() + release + " "):
            raise KdlError(
                f"the vmlinux does not match the kernel (kernel is {expected}, "
                f"the vmlinux's symbols read back '{release[:40]}')"
            )
        return release


def le64(data: bytes, offset: int) -> int:
    """The little-endian u64 at ``offset`` of bytes already read."""
    return struct.unpack_from("<Q", data, offset)[0]


def le32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]
