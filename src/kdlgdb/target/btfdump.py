"""The dump alone: a target that needs no vmlinux and no gdb.

Memory comes from kdlgdb's own dump reader (:mod:`.dumpfile`: every format, the paging ELF
included), symbols from the kernel's kallsyms tables that VMCOREINFO points at (:mod:`.kallsyms`,
v6.0+), types from the kernel's own BTF between ``__start_BTF`` and ``__stop_BTF``
(:mod:`.btf`, CONFIG_DEBUG_INFO_BTF), and a module's type from its own split BTF
(CONFIG_DEBUG_INFO_BTF_MODULES, as ``btf_modules`` keeps it) when the vmlinux's has no type of that
name. What only DWARF knows is not here: source lines (``source_line`` is None), the
size of a data symbol BTF has no variable for (``symbol_size`` answers for per-CPU variables only).

Decoded once per kernel build and kept (:mod:`.debuginfocache`): decoding takes 0.15-0.25 s, loading
what was kept a few tens of milliseconds.
"""
from __future__ import annotations

from typing import Optional

from ..errors import KdlError, ReadError
from .base import Target, TargetKind
from .btf import Btf
from .cpustate import registers_from_notes
from .dumpfile import DumpFile, open_dump
from .kallsyms import Kallsyms, NoKallsyms, symbol_count
from .pagetable import START_KERNEL_MAP
from . import debuginfocache

__all__ = ["BtfTarget", "open_btf_target"]

MAX_BTF = 256 << 20
MAX_MODULES = 100_000


class BtfTarget(Target):
    """A vmcore read with its own BTF and kallsyms. ``KdlError`` (one line) when the dump has neither."""

    kind = TargetKind.DUMP
    debug_info = "btf"

    def __init__(self, dump: DumpFile) -> None:
        self.dump = dump
        info = dump.vmcoreinfo()
        try:
            self.kaslr_offset = int(info.get("KERNELOFFSET", "0"), 16)
        except ValueError:
            raise KdlError(f"the dump's VMCOREINFO KERNELOFFSET is not a hexadecimal number: "
                           f"{info['KERNELOFFSET'][:40]!r}") from None
        self.build_id = info.get("BUILD-ID")
        self._kept = debuginfocache.load(self.build_id)
        try:
            count = symbol_count(dump.read, info)
            if self._kept is not None and len(self._kept.typed) == count:
                self.kallsyms = Kallsyms(self._kept.typed, self._kept.addresses)
            else:
                self._kept = None
                self.kallsyms = Kallsyms.from_memory(dump.read, info, self.kaslr_offset)
        except ReadError as e:
            raise KdlError(f"cannot read the kernel's kallsyms tables ({e}): kdlgdb needs the vmlinux of this dump "
                           "(give it, or install its debug symbols)") from None
        except NoKallsyms as e:
            raise KdlError(f"{e}: kdlgdb needs the vmlinux of this dump (give it, or install its debug "
                           "symbols)") from None
        self._btf: Optional[Btf] = None
        self._modules: Optional[list[Btf]] = None

    # -- memory and the dump ---------------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        return self.dump.read(address, size)

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        return self.dump.vmcoreinfo()

    def cpu_registers(self) -> Optional[list[dict[str, int]]]:
        return registers_from_notes(self.dump.notes)

    def describe(self) -> str:
        return self.dump.describe()

    # -- symbols -----------------------------------------------------------------------
    def symbol(self, name: str) -> Optional[int]:
        return self.kallsyms.address(name)

    def symbol_size(self, name: str) -> Optional[int]:
        """The size of a per-CPU variable's type (the variables vmlinux BTF describes); None for any other
        symbol (kallsyms has no sizes, and the distance to the next symbol includes padding)."""
        return self.btf.variable(name)

    def symbolize(self, address: int) -> Optional[tuple[str, int]]:
        return self.kallsyms.lookup(address)

    def source_line(self, address: int) -> Optional[tuple[str, int]]:
        return None  # only DWARF knows

    # -- types -------------------------------------------------------------------------
    @property
    def btf(self) -> Btf:
        """The vmlinux's BTF, read the first time a type is asked for."""
        if self._btf is None:
            start, stop = self.symbol("__start_BTF"), self.symbol("__stop_BTF")
            if start is None or stop is None or not 0 < stop - start <= MAX_BTF:
                raise KdlError("this kernel carries no BTF (no __start_BTF in its kallsyms: built without "
                               "CONFIG_DEBUG_INFO_BTF): kdlgdb needs its vmlinux (give it, or install its debug "
                               "symbols)")
            if self._kept is not None and len(self._kept.btf) == stop - start:
                self._btf = Btf(self._kept.btf, "the kernel's BTF", index=self._kept.btf_index)
                return self._btf
            try:
                data = self.read(self._runtime(start), stop - start)
            except ReadError as e:
                raise KdlError(f"the kernel's BTF is not in the dump ({e}): kdlgdb needs its vmlinux") from None
            try:
                self._btf = Btf(data, "the kernel's BTF")
            except KdlError as e:
                raise KdlError(f"{e}: kdlgdb needs the vmlinux of this dump") from None
            debuginfocache.save(self.build_id, debuginfocache.DebugInfo(
                self.kallsyms.typed, self.kallsyms.static_addresses, data, self._btf.index))
        return self._btf

    def _find(self, type_name: str) -> Optional[tuple[Btf, int]]:
        """(the BTF that has it, its id) of a type: the vmlinux's, else a module's."""
        found = self.btf.find(type_name)
        if found is not None:
            return self.btf, found
        for module in self._module_btfs():
            found = module.find(type_name)
            if found is not None and found >= module.first_id:
                return module, found
        return None

    def type_size(self, type_name: str) -> Optional[int]:
        found = self._find(type_name)
        return found[0].size(found[1]) if found is not None else None

    def _member(self, type_name: str, path: str):
        found = self._find(type_name)
        if found is None:
            return None
        btf, type_id = found
        member = btf.member(type_id, path)
        return (btf, *member) if member is not None else None

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        found = self._member(type_name, path)
        if found is None:
            return None
        btf, bits, _, member_type = found
        return bits // 8, btf.size(member_type) or 0

    def member_type(self, type_name: str, path: str) -> Optional[str]:
        found = self._member(type_name, path)
        return found[0].spell(found[3]) if found is not None else None

    def member_bits(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        found = self._member(type_name, path)
        return (found[1], found[2]) if found is not None else None

    # -- modules' BTF ------------------------------------------------------------------
    def _module_btfs(self) -> list[Btf]:
        """Each loaded module's split BTF, read once (none before a type is missing from the vmlinux's)."""
        if self._modules is None:
            self._modules = []
            try:
                self._read_module_btfs(self._modules)
            except (ReadError, KdlError):
                pass  # a module list that cannot be walked: the types are the vmlinux's only
        return self._modules

    def _read_module_btfs(self, out: list[Btf]) -> None:
        """Each module's BTF as the BPF subsystem keeps it: ``btf_modules``, a list of ``struct btf_module``
        whose ``btf`` is a ``struct btf`` with the module's raw BTF in ``data``/``data_size`` (the module's own
        copy, ``struct module``'s ``btf_data``, is freed once the module is loaded: ``btf_data_size`` stays, the
        pointer is NULL)."""
        base = self.btf
        head = self.symbol("btf_modules")
        holder, btf_t = base.find("struct btf_module"), base.find("struct btf")
        if head is None or holder is None or btf_t is None:
            return  # CONFIG_DEBUG_INFO_BTF_MODULES is off
        found = [base.member(holder, m) for m in ("list", "btf")]
        found += [base.member(btf_t, m) for m in ("data", "data_size", "name")]
        offsets = [f[0] // 8 for f in found if f is not None]
        if len(offsets) != len(found):
            return
        list_off, btf_off, data_off, size_off, name_off = offsets
        head = self._runtime(head)
        node = self._pointer(head)
        for _ in range(MAX_MODULES):
            if node == head or not node:
                return
            btf = self._pointer(node - list_off + btf_off)
            if btf:
                data, size = self._pointer(btf + data_off), int.from_bytes(self.read(btf + size_off, 4), "little")
                name = self.read(btf + name_off, 56).split(b"\0")[0].decode("ascii", "replace")
                if data and 0 < size <= MAX_BTF:
                    try:
                        out.append(Btf(self.read(data, size), f"module {name}'s BTF", base=base))
                    except (ReadError, KdlError):
                        pass  # that module's types only
            node = self._pointer(node)

    def _pointer(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def _runtime(self, static: int) -> int:
        return static + self.kaslr_offset if static >= START_KERNEL_MAP else static


def open_btf_target(path: str) -> BtfTarget:
    """A BtfTarget over the dump at ``path``; KdlError (one line, saying to give the vmlinux) when it has no
    kallsyms in VMCOREINFO or no BTF."""
    dump = open_dump(path)
    try:
        target = BtfTarget(dump)
        target.btf  # noqa: B018 (fail now, on one line, rather than at the first type)
    except BaseException:
        dump.close()
        raise
    return target
