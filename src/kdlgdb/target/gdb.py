"""The gdb target: the only module of layer 1 that imports ``gdb``.

Reads go through ``Inferior.read_memory`` in one call per request, so a whole
task_struct or stack costs one round trip over a gdbstub; ``reads`` and
``bytes_read`` count them. An ELF vmcore gdb has loaded is read from the file
directly (``ElfMemory``): gdb's own core reads slow down with the number of
segments, one per vmapped stack. Type layouts come from gdb's Python type API
(``gdb.lookup_type``), never from ``ptype`` output, which is slow on a 600 MB
vmlinux.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Optional

import gdb  # type: ignore[import-not-found]
import gdb.unwinder  # type: ignore[import-not-found]

from ..errors import KdlError, ReadError
from .base import Target, TargetKind
from .cpustate import registers_from_notes
from .dumpfile import DumpFile, open_dump
from .elfmemory import ElfMemory
from .vmcore import ElfDump, open_elf_dump

__all__ = ["GdbTarget", "core_file_path", "FrameId", "unwind_info", "thread_origin", "is_origin", "past_origin"]

# Registers read from each vCPU of a gdbstub (QEMU names the GS bases gs_base and k_gs_base).
_LIVE_REGISTERS = ("rip", "rsp", "rbp", "rdi", "gs_base")
_LIVE_OPTIONAL = {"kernel_gs_base": "k_gs_base"}
# The registers a caller's frame gets back from its callees (x86-64 SysV callee-saved), and its stack pointer.
_CALLEE_SAVED = ("rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")
_MASK = (1 << 64) - 1
_INFO_SYMBOL = re.compile(r"^(\S+)(?: \+ (\d+))? in section (\S+)")


def core_file_path() -> Optional[str]:
    """Path of the core file gdb has loaded, or None."""
    text = gdb.execute("info target", to_string=True)
    m = re.search(r"Local core dump file:\s*`(.+?)'", text)
    return m.group(1) if m else None


class GdbTarget(Target):
    """The kernel that gdb is looking at: a core file, a ``target remote`` connection, or a
    dump kdlgdb reads itself (``memory``, from ``kd-open``) with gdb giving only symbols and types.

    A core file that gdb loads but cannot read right (physical addresses only: gdb would
    read the vmlinux's own static data) is read by kdlgdb instead, without being asked.
    """

    def __init__(self, memory: Optional[DumpFile] = None) -> None:
        if not gdb.objfiles():
            raise KdlError("no vmlinux loaded: start gdb with the vmlinux that matches the kernel")
        self._memory = memory
        self._dump: Optional[ElfDump] = None
        self._elf_memory: Optional[ElfMemory] = None  # gdb's core file, read from the file by kdlgdb
        self.reads = 0  # read requests, and the bytes they asked for
        self.bytes_read = 0
        if memory is not None:
            self.kind = TargetKind.DUMP
            self._where = memory.path
        else:
            self._attach_gdb()
        self._types: dict[str, Optional[gdb.Type]] = {}
        self._symbolized: dict[int, Optional[tuple[str, int]]] = {}
        self._lines: dict[int, Optional[tuple[str, int]]] = {}

    def _attach_gdb(self) -> None:
        inferior = gdb.selected_inferior()
        if inferior.pid == 0 and inferior.connection is None:
            raise KdlError("no kernel to read: load a dump (gdb VMLINUX VMCORE, or kd-open VMCORE) "
                           "or `target remote HOST:PORT`")
        self._inferior = inferior
        conn = inferior.connection
        self.kind = TargetKind.DUMP if conn is not None and conn.type == "core" else TargetKind.LIVE
        self._where = conn.details if conn is not None and conn.details else ""
        if self.kind is TargetKind.DUMP:
            path = core_file_path()
            if path:
                self._where = path
                self._dump = open_elf_dump(path)
                if not self._dump.has_virtual_addresses:
                    self._memory = open_dump(path)
                else:
                    self._elf_memory = ElfMemory(self._dump)

    @property
    def dump(self) -> Optional[ElfDump]:
        """The ELF headers of the core file gdb reads (None for other dumps and live targets)."""
        return self._dump if self._memory is None else None

    @property
    def dump_path(self) -> Optional[str]:
        """The dump file being read, whoever reads it (None live)."""
        return self._where if self.kind is TargetKind.DUMP and self._where else None

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        self.bytes_read += size
        if self._memory is not None:
            return self._memory.read(address, size)
        if self._elf_memory is not None:
            return self._elf_memory.read(address, size)
        try:
            return bytes(self._inferior.read_memory(address, size))
        except gdb.MemoryError as e:
            raise ReadError(address, size, "not in dump" if self.kind is TargetKind.DUMP else str(e)) from None
        except gdb.error as e:
            # A dropped gdbstub connection lands here ("Remote connection closed").
            raise KdlError(f"the debugger stopped answering: {e}") from None

    def symbol(self, name: str) -> Optional[int]:
        sym = self._lookup_symbol(name)
        if sym is not None:
            return int(sym.value().address)
        try:  # linker symbols without debug info (minimal symbols)
            return int(gdb.parse_and_eval(f"(unsigned long)&{name}"))
        except gdb.error:
            return None

    def symbol_size(self, name: str) -> Optional[int]:
        sym = self._lookup_symbol(name)
        return sym.type.sizeof if sym is not None else None

    def type_size(self, type_name: str) -> Optional[int]:
        t = self._type(type_name)
        return t.sizeof if t is not None else None

    def member(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        found = self._field(type_name, path)
        return (found[1] // 8, found[0].type.sizeof) if found is not None else None

    def member_type(self, type_name: str, path: str) -> Optional[str]:
        found = self._field(type_name, path)
        return _c_spelling(found[0].type) if found is not None else None

    def member_bits(self, type_name: str, path: str) -> Optional[tuple[int, int]]:
        found = self._field(type_name, path)
        return (found[1], found[0].bitsize) if found is not None else None

    def _field(self, type_name: str, path: str):
        """(gdb.Field, bit offset from the start of ``type_name``) of a dotted member path, or None."""
        t = self._type(type_name)
        bits = 0
        field = None
        for part in path.split("."):
            if t is None:
                return None
            found = _find_field(t, part)
            if found is None:
                return None
            field, at = found
            bits += at
            t = field.type.strip_typedefs()
        return (field, bits) if field is not None else None

    def symbolize(self, address: int) -> Optional[tuple[str, int]]:
        if address not in self._symbolized:
            text = gdb.execute(f"info symbol {address:#x}", to_string=True)
            m = _INFO_SYMBOL.match(text)
            self._symbolized[address] = (m.group(1), int(m.group(2) or 0)) if m else None
        return self._symbolized[address]

    def source_line(self, address: int) -> Optional[tuple[str, int]]:
        # A return address follows its call: the call's own line is the one of the byte before it.
        if address not in self._lines:
            try:
                sal = gdb.find_pc_line(address - 1)
            except gdb.error:
                sal = None
            found = None
            if sal is not None and sal.symtab is not None and sal.line > 0:
                found = (sal.symtab.filename, sal.line)
            self._lines[address] = found
        return self._lines[address]

    def vmcoreinfo(self) -> Optional[dict[str, str]]:
        if self._memory is not None:
            return self._memory.vmcoreinfo()
        return self._dump.vmcoreinfo() if self._dump is not None else None

    @property
    def where(self) -> str:
        """The dump's path, or the gdbstub's address (``localhost:1234``)."""
        return self._where

    @property
    def dump_kind(self) -> str:
        """What the dump is, as its headers tell: ``"kdump-compressed vmcore, dump level 31"``."""
        if self._memory is not None:
            return self._memory.kind
        return self._dump.kind if self._dump is not None else "core file"

    def cpu_registers(self) -> Optional[list[dict[str, int]]]:
        """A dump's per-CPU notes; live, the registers of each gdb thread (QEMU: one per vCPU)."""
        if self._memory is not None:
            return registers_from_notes(self._memory.notes)
        if self._dump is not None:
            return registers_from_notes(self._dump.notes)
        if self.kind is not TargetKind.LIVE:
            return None
        return _thread_registers(self._inferior)

    def frame_variables(self, pcs: Sequence[int], registers: Mapping[str, int],
                        names: Sequence[str]) -> Optional[dict[str, Optional[int]]]:
        """gdb's own frames, one at a time: the frame at ``pcs[i]`` gets the registers gdb's call-frame
        information gave its callee's caller (one frame at a time, so the vmlinux's symbols need no KASLR
        relocation: every pc handed to gdb is static). The last frame's variables are read as ``info locals``
        would."""
        if not pcs:
            return None
        unwinder = _chain_unwinder()
        others = [u for u in _all_unwinders() if u is not unwinder and u.enabled]
        for other in others:  # kd-task's, while it shows a task
            other.enabled = False
        try:
            unwinder.registers = None  # the dump thread's own frame, as gdb alone unwinds it: once for the chain
            gdb.invalidate_cached_frames()
            unwinder.origin = thread_origin()
            regs = {name: registers[name] for name in _CALLEE_SAVED if name in registers}
            for i, pc in enumerate(pcs):
                frame = unwinder.innermost(dict(regs, rip=pc))
                if frame is None or frame.pc() != pc:
                    return None
                if i == len(pcs) - 1:
                    return _read_variables(frame, names)
                while frame.type() == gdb.INLINE_FRAME:
                    frame = frame.older()
                caller = frame.older()
                if caller is None:
                    return None
                regs = {name: int(caller.read_register(name)) & _MASK for name in _CALLEE_SAVED}
            return None
        except (gdb.error, RuntimeError):
            return None
        finally:
            unwinder.registers = None
            for other in others:
                other.enabled = True
            gdb.invalidate_cached_frames()

    def describe(self) -> str:
        if self.kind is TargetKind.LIVE:
            return f"live gdbstub {self._where}"
        if self._memory is not None:
            return self._memory.describe()
        return f"{self.dump_kind} {self._where}"

    def _lookup_symbol(self, name: str):
        try:
            return gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
        except gdb.error:
            return None

    def _type(self, type_name: str):
        if type_name not in self._types:
            found = self._type_of_namesake(type_name)
            if found is None:
                try:
                    found = gdb.lookup_type(type_name).strip_typedefs()
                except gdb.error:
                    found = None
            self._types[type_name] = found
        return self._types[type_name]

    def _type_of_namesake(self, type_name: str):
        """``struct NAME`` from the variable called NAME when that is its type, else None.

        gdb 13 takes about 7 s to find ``struct pcpu_hot`` by name in Debian's 6.12 vmlinux (the
        header that declares it is in nearly every compilation unit); the per-cpu variable
        ``pcpu_hot`` has the same type at once.
        """
        if not type_name.startswith("struct "):
            return None
        tag = type_name[len("struct "):]
        try:
            sym = gdb.lookup_global_symbol(tag)  # not lookup_static_symbol: slow for a name that is none
        except gdb.error:
            return None
        if sym is None or not sym.is_variable:
            return None
        t = sym.type.strip_typedefs()
        return t if t.code == gdb.TYPE_CODE_STRUCT and t.tag == tag else None


class FrameId:
    """What ``PendingFrame.create_unwind_info`` takes as a frame id (gdb 13 has no class for it)."""

    def __init__(self, sp: gdb.Value, pc: gdb.Value) -> None:
        self.sp = sp
        self.pc = pc


def unwind_info(pending, sp: gdb.Value, caller: Mapping[str, int]):  # noqa: ANN001, ANN201 - gdb.PendingFrame, gdb.UnwindInfo
    """The unwind info of ``pending`` (its id: ``sp`` and its pc) that gives its caller the registers ``caller``."""
    info = pending.create_unwind_info(FrameId(sp, pending.read_register("rip")))
    ulong = gdb.lookup_type("unsigned long")
    for name, value in caller.items():
        info.add_saved_register(name, gdb.Value(value).cast(ulong))
    return info


def thread_origin() -> tuple[int, int]:
    """(pc, sp) of the dump thread's own innermost frame: gdb's #0, and the calls inlined there, which share them
    (a Python unwinder is never asked about level 0 when #0 is an inline frame, so it knows that frame by these)."""
    newest = gdb.newest_frame()
    return int(newest.read_register("rip")), int(newest.read_register("rsp"))


def is_origin(frame, origin: Optional[tuple[int, int]]) -> bool:  # noqa: ANN001 - gdb.Frame
    """Whether ``frame`` is the dump thread's own frame (or one inlined there): :func:`thread_origin`."""
    return frame.level() == 0 or (int(frame.pc()), int(frame.read_register("rsp"))) == origin


def past_origin(origin: Optional[tuple[int, int]]) -> tuple[Optional[object], int]:
    """The first frame after the dump thread's own ones, and its number."""
    frame, number = gdb.newest_frame(), 0
    while frame is not None and is_origin(frame, origin):
        frame, number = frame.older(), number + 1
    return frame, number


class _ChainUnwinder(gdb.unwinder.Unwinder):
    """While :meth:`innermost` sets ``registers``: the caller of gdb's frame #0 is a frame with those registers
    (and the calls inlined at its pc); gdb's DWARF unwinder unwinds that one frame, and its caller (a pc gdb
    may know only relocated) ends the chain here instead of in gdb's prologue guesses."""

    def __init__(self) -> None:
        super().__init__("kdlgdb frame variables")
        self.registers: Optional[dict[str, int]] = None
        # (pc, sp) of the dump thread's own innermost frame: gdb's #0, or when the thread stopped in inlined code
        # the real frame those inline frames share pc and sp with (the Python unwinder never sees level 0 then).
        self.origin: Optional[tuple[int, int]] = None

    def innermost(self, registers: dict[str, int]):  # -> gdb.Frame
        """The frame with ``registers``: the caller of the dump thread's own (``origin``, set by the caller)."""
        self.registers = registers
        gdb.invalidate_cached_frames()
        return past_origin(self.origin)[0]

    def __call__(self, pending):  # noqa: ANN001 - gdb.PendingFrame
        if self.registers is None:
            return None
        if (int(pending.read_register("rip")), int(pending.read_register("rsp"))) == self.origin:
            # An id below the chain's frames: frame #0 is a CPU's, maybe on a stack above the task's, and gdb
            # stops at a caller it finds inner to its callee.
            sp, caller = gdb.Value(self.registers["rsp"] - 64).cast(gdb.lookup_type("unsigned long")), self.registers
        elif int(pending.read_register("rip")) != self.registers["rip"]:  # the caller: the chain's next step
            sp, caller = pending.read_register("rsp"), {"rip": 0, "rsp": 0}
        else:
            return None
        return unwind_info(pending, sp, caller)


@functools.lru_cache(maxsize=None)
def _chain_unwinder() -> _ChainUnwinder:
    """The one chain unwinder, registered for every program space the first time it is needed."""
    unwinder = _ChainUnwinder()
    gdb.unwinder.register_unwinder(None, unwinder, replace=True)
    return unwinder


def _all_unwinders() -> list:
    return list(gdb.frame_unwinders) + list(gdb.current_progspace().frame_unwinders) + [
        u for objfile in gdb.objfiles() for u in objfile.frame_unwinders]


def _read_variables(frame, names: Sequence[str]) -> dict[str, Optional[int]]:  # noqa: ANN001 - gdb.Frame
    """Each of ``names`` that ``frame`` or the calls inlined at its pc have: its value (None: optimised out)."""
    found: dict[str, Optional[int]] = {}
    pc = frame.pc()
    while frame is not None and frame.pc() == pc:
        try:
            block = frame.block()
        except RuntimeError:
            block = None
        while block is not None:
            for symbol in block:
                if symbol.name in names and found.get(symbol.name) is None and (symbol.is_argument or symbol.is_variable):
                    found[symbol.name] = _integer(frame, symbol, block)  # an inlined call's may be optimised out
            if block.function is not None:
                break
            block = block.superblock
        if frame.type() != gdb.INLINE_FRAME:
            break
        frame = frame.older()
    return found


def _integer(frame, symbol, block) -> Optional[int]:  # noqa: ANN001
    """A pointer or integer variable's value, another variable's address; None when gdb has neither."""
    try:
        value = frame.read_var(symbol, block)
        if value.is_optimized_out:
            return None
        if value.type.strip_typedefs().code in (gdb.TYPE_CODE_PTR, gdb.TYPE_CODE_INT):
            return int(value) & _MASK
        return int(value.address) & _MASK if value.address is not None else None
    except (gdb.error, RuntimeError):
        return None  # a location gdb cannot evaluate here (DW_OP_entry_value of a caller it cannot unwind)


def _thread_registers(inferior) -> Optional[list[dict[str, int]]]:
    """The registers of every thread of ``inferior``, by thread number; the selected thread is restored."""
    try:
        threads = sorted(inferior.threads(), key=lambda t: t.num)
    except gdb.error:
        return None
    if not threads:
        return None
    selected = gdb.selected_thread()
    out: list[dict[str, int]] = []
    try:
        for thread in threads:
            thread.switch()
            frame = gdb.newest_frame()
            regs: dict[str, int] = {}
            for name in _LIVE_REGISTERS:
                try:
                    regs[name] = int(frame.read_register(name)) & 0xFFFFFFFFFFFFFFFF
                except (gdb.error, ValueError):
                    pass
            for name, gdb_name in _LIVE_OPTIONAL.items():
                try:
                    regs[name] = int(frame.read_register(gdb_name)) & 0xFFFFFFFFFFFFFFFF
                except (gdb.error, ValueError):
                    pass
            if "rip" in regs and "rsp" in regs:
                out.append(regs)
    except gdb.error as e:
        raise KdlError(f"cannot read the CPUs' registers: {e}") from None
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
    return out or None


def _c_spelling(t) -> str:
    """``t`` as C spells it, whatever gdb's current language (with the frame in assembler code gdb prints
    ``mutex_waiter *``): ``struct mutex_waiter *``."""
    if t.code == gdb.TYPE_CODE_PTR:
        return _c_spelling(t.target()) + " *"
    keyword = {gdb.TYPE_CODE_STRUCT: "struct", gdb.TYPE_CODE_UNION: "union", gdb.TYPE_CODE_ENUM: "enum"}.get(t.code)
    if keyword and (t.tag or t.name):
        return f"{keyword} {t.tag or t.name}"
    return str(t.name or t)


def _find_field(t, name: str):
    """(field, bit offset) of ``name`` in ``t``, looking inside anonymous structs and unions."""
    for f in t.fields():
        if f.name == name:
            return f, f.bitpos
        if f.name is None:
            inner = _find_field(f.type.strip_typedefs(), name)
            if inner is not None:
                return inner[0], f.bitpos + inner[1]
    return None
