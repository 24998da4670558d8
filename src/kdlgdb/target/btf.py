"""BTF, the kernel's own compact type information, parsed from its bytes.

A kernel built with CONFIG_DEBUG_INFO_BTF carries the types of every compilation unit, deduplicated,
in its ``.BTF`` section (between ``__start_BTF`` and ``__stop_BTF``); each module with
CONFIG_DEBUG_INFO_BTF_MODULES carries the types it adds as *split* BTF over the vmlinux's
(``struct module``'s ``btf_data``). The format (``include/uapi/linux/btf.h``):

- a header: ``u16 magic 0xeb9f; u8 version; u8 flags; u32 hdr_len; u32 type_off, type_len,
  str_off, str_len`` (offsets counted from the end of the header);
- the type section: type 1, 2, ... in order (0 is ``void``), each ``u32 name_off; u32 info`` (kind in
  bits 24-28, ``vlen`` in bits 0-15, ``kind_flag`` bit 31) ``; u32 size_or_type``, then what its kind
  adds: members ``{name_off, type, offset}`` of a struct or union (offset in bits; with kind_flag,
  the bit-field size in its top 8 bits), ``{type, index_type, nelems}`` of an array, and so on;
- the string section: NUL-terminated names, ``name_off`` into it. Split BTF numbers its types and
  strings on from the end of its base's.

Only what a debugger's type questions need is decoded: a type by name, its size, a member's offset,
bit-field and type (through anonymous structs and unions), and a type's C spelling as gdb prints it.
"""
from __future__ import annotations

import array
import struct
from typing import Iterator, Optional

from ..errors import KdlError

__all__ = ["Btf", "BTF_MAGIC", "Kind", "parse_header"]

BTF_MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")
TYPE = struct.Struct("<III")
MEMBER = struct.Struct("<IIi")  # name_off, type, offset (ARRAY: type, index_type, nelems; DATASEC: type, offset, size)


class Kind:
    """BTF_KIND_* numbers."""

    INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
    FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)


# Bytes each kind adds after its 12-byte header: fixed, and per vlen item.
_EXTRA = {Kind.INT: 4, Kind.ARRAY: 12, Kind.VAR: 4, Kind.DECL_TAG: 4}
_PER_ITEM = {Kind.STRUCT: 12, Kind.UNION: 12, Kind.ENUM: 8, Kind.FUNC_PROTO: 8, Kind.DATASEC: 12, Kind.ENUM64: 12}
# Kinds whose size_or_type is a type (modifiers and the like), skipped to reach what they qualify.
_QUALIFIERS = {Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}
_TAGS = {Kind.STRUCT: "struct", Kind.UNION: "union", Kind.ENUM: "enum", Kind.ENUM64: "enum"}
_MAX_DEPTH = 64  # typedef chains, nested anonymous members


def parse_header(data: bytes, what: str) -> tuple[int, int, int, int, int]:
    """(hdr_len, type_off, type_len, str_off, str_len) of BTF ``data``; KdlError naming ``what`` when it is none."""
    if len(data) < HEADER.size:
        raise KdlError(f"{what} is too short for a BTF header ({len(data)} bytes)")
    magic, version, _, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise KdlError(f"{what} is not BTF (magic {magic:#x}, not {BTF_MAGIC:#x})")
    if version != 1:
        raise KdlError(f"{what} is BTF version {version}; kdlgdb reads version 1")
    if hdr_len < HEADER.size or hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
        raise KdlError(f"{what}: its BTF header describes more than its {len(data)} bytes")
    return hdr_len, type_off, type_len, str_off, str_len


class Btf:
    """The types of one BTF blob (split over ``base`` for a module's).

    Types are indexed once: where each starts in the type section, and which types bear each name
    (by the name's offset in the string section, which BTF's deduplicated strings make unique).
    """

    def __init__(self, data: bytes, what: str = "BTF", base: Optional["Btf"] = None,
                 index: Optional[tuple[bytes, bytes]] = None) -> None:
        """``index``: :attr:`index` of the same bytes, kept from an earlier parse (a cache), instead of indexing
        again."""
        hdr_len, type_off, type_len, str_off, str_len = parse_header(data, what)
        self.what = what
        self.base = base
        self.types = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self.strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.first_id: int = base.next_id if base is not None else 1
        self.first_str: int = base.next_str if base is not None else 0
        self._starts = array.array("I")  # where each type starts in the type section
        self._names = array.array("I")  # each type's name_off
        if index is not None:
            self._starts.frombytes(index[0])
            self._names.frombytes(index[1])
        else:
            self._index()
        self.next_id: int = self.first_id + len(self._starts)
        self.next_str: int = self.first_str + len(self.strings)
        self._by_name: dict[str, Optional[int]] = {}

    def _index(self) -> None:
        types, starts, names = self.types, self._starts, self._names
        unpack = TYPE.unpack_from
        pos, end = 0, len(types)
        type_id = self.first_id
        while pos < end:
            if pos + 12 > end:
                raise KdlError(f"{self.what}: type {type_id} is cut off at the end of the type section")
            name_off, info, _ = unpack(types, pos)
            kind = (info >> 24) & 0x1F
            starts.append(pos)
            names.append(name_off)
            pos += 12 + _EXTRA.get(kind, 0) + (info & 0xFFFF) * _PER_ITEM.get(kind, 0)
            if not 1 <= kind <= Kind.ENUM64:
                raise KdlError(f"{self.what}: type {type_id} has unknown kind {kind}")
            type_id += 1
        if pos != end:
            raise KdlError(f"{self.what}: the last type runs past the type section")

    @property
    def index(self) -> tuple[bytes, bytes]:
        """Where each type starts in the type section and its name's offset, as bytes (what a cache keeps)."""
        return self._starts.tobytes(), self._names.tobytes()

    # -- raw access -------------------------------------------------------------
    def _owner(self, type_id: int) -> "Btf":
        btf: Btf = self
        while type_id < btf.first_id:
            assert btf.base is not None
            btf = btf.base
        if type_id >= btf.next_id:
            raise KdlError(f"{self.what}: no type {type_id} (the last is {btf.next_id - 1})")
        return btf

    def header(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, name_off, size_or_type) of a type (not of ``void``, 0)."""
        btf = self._owner(type_id)
        name_off, info, size_or_type = TYPE.unpack_from(btf.types, btf._starts[type_id - btf.first_id])
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, name_off, size_or_type

    def items(self, type_id: int) -> list[tuple[int, int, int]]:
        """The 12-byte items after a struct, union, array or datasec header (members, the array, its vars)."""
        btf = self._owner(type_id)
        kind, vlen, _, _, _ = self.header(type_id)
        count = 1 if kind == Kind.ARRAY else vlen
        start = btf._starts[type_id - btf.first_id] + 12
        return [MEMBER.unpack_from(btf.types, start + 12 * i) for i in range(count)]

    def string(self, offset: int) -> str:
        btf: Btf = self
        while offset < btf.first_str:
            assert btf.base is not None
            btf = btf.base
        at = offset - btf.first_str
        end = btf.strings.find(b"\0", at)
        return btf.strings[at : end if end >= 0 else None].decode("ascii", "replace")

    def name(self, type_id: int) -> str:
        return self.string(self.header(type_id)[3]) if type_id else ""

    def _ids_named(self, name: str) -> Iterator[int]:
        """Every type called ``name`` (its base's first, for split BTF), found as they are asked for."""
        if self.base is not None:
            yield from self.base._ids_named(name)
        key = b"\0" + name.encode() + b"\0"
        at = self.strings.find(key)
        if at < 0 and not self.strings.startswith(key[1:]):  # (split BTF's strings need not start with "")
            return
        name_off = self.first_str + at + 1
        names, i = self._names, -1
        while True:
            try:
                i = names.index(name_off, i + 1)
            except ValueError:
                return
            yield self.first_id + i

    # -- questions ----------------------------------------------------------------
    def find(self, type_name: str) -> Optional[int]:
        """The type ``"struct mutex"``, ``"union x"``, ``"enum y"`` or a typedef or base type by name, or None.

        A struct's declaration (FWD) is not the struct: of namesakes, the first complete one."""
        if type_name not in self._by_name:
            keyword, _, tag = type_name.partition(" ")
            kinds: tuple[int, ...]
            if keyword in ("struct", "union", "enum") and tag and " " not in tag:
                kinds = {"struct": (Kind.STRUCT,), "union": (Kind.UNION,), "enum": (Kind.ENUM, Kind.ENUM64)}[keyword]
                name = tag
            else:
                kinds = (Kind.TYPEDEF, Kind.INT, Kind.FLOAT)
                name = type_name
            found = None
            for type_id in self._ids_named(name):
                if self.header(type_id)[0] in kinds:
                    found = type_id
                    break
            self._by_name[type_name] = found
        return self._by_name[type_name]

    def resolve(self, type_id: int) -> int:
        """``type_id`` with its typedefs and qualifiers (const, volatile, ...) taken off."""
        for _ in range(_MAX_DEPTH):
            if not type_id:
                return 0
            kind, _, _, _, inner = self.header(type_id)
            if kind not in _QUALIFIERS:
                return type_id
            type_id = inner
        raise KdlError(f"{self.what}: a typedef chain longer than {_MAX_DEPTH} at type {type_id}")

    def size(self, type_id: int, depth: int = 0) -> Optional[int]:
        """``sizeof`` the type, or None (void, a function, a declaration)."""
        if depth > _MAX_DEPTH:
            raise KdlError(f"{self.what}: arrays nested deeper than {_MAX_DEPTH} at type {type_id}")
        type_id = self.resolve(type_id)
        if not type_id:
            return None
        kind, _, _, _, size = self.header(type_id)
        if kind == Kind.PTR:
            return 8
        if kind == Kind.ARRAY:
            elem, _, count = self.items(type_id)[0]
            each = self.size(elem, depth + 1)
            return None if each is None else each * count
        if kind in (Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT, Kind.DATASEC):
            return size
        return None

    def member(self, type_id: int, path: str) -> Optional[tuple[int, int, int]]:
        """(bit offset from the start of the type, bit-field size or 0, member type) of a dotted member
        path (``"thread.sp"``), each step looked for inside anonymous structs and unions too; or None."""
        bits = 0
        member_type = type_id
        for part in path.split("."):
            found = self._member(self.resolve(member_type), part, 0)
            if found is None:
                return None
            at, bitsize, member_type = found
            bits += at
        return bits, bitsize, member_type

    def _member(self, type_id: int, name: str, depth: int) -> Optional[tuple[int, int, int]]:
        if not type_id or depth > _MAX_DEPTH:
            return None
        kind, _, kind_flag, _, _ = self.header(type_id)
        if kind not in (Kind.STRUCT, Kind.UNION):
            return None
        anonymous = []
        for name_off, member_type, offset in self.items(type_id):
            at, bitsize = (offset & 0xFFFFFF, (offset >> 24) & 0xFF) if kind_flag else (offset, 0)
            if not name_off:
                anonymous.append((at, member_type))
            elif self.string(name_off) == name:
                return at, bitsize, member_type
        for at, member_type in anonymous:
            inner = self._member(self.resolve(member_type), name, depth + 1)
            if inner is not None:
                return at + inner[0], inner[1], inner[2]
        return None

    def spell(self, type_id: int, depth: int = 0) -> str:
        """The type as gdb spells it in C: ``struct mutex_waiter *``, ``atomic_long_t``, ``unsigned int``,
        ``char [16]``, ``const char *``."""
        if not type_id:
            return "void"
        if depth > _MAX_DEPTH:
            return "?"
        kind, _, _, name_off, inner = self.header(type_id)
        name = self.string(name_off) if name_off else ""
        if kind == Kind.PTR:
            if inner and self.header(inner)[0] == Kind.FUNC_PROTO:
                return self._prototype(inner, "(*)", depth + 1)
            return self.spell(inner, depth + 1) + " *"
        if kind in _TAGS or kind == Kind.FWD:
            keyword = _TAGS.get(kind) or ("union" if self.header(type_id)[2] else "struct")
            return f"{keyword} {name}" if name else f"{keyword} {{...}}"
        if kind == Kind.CONST:
            return f"const {self.spell(inner, depth + 1)}"
        if kind == Kind.VOLATILE:
            return f"volatile {self.spell(inner, depth + 1)}"
        if kind in (Kind.RESTRICT, Kind.TYPE_TAG):
            return self.spell(inner, depth + 1)
        if kind == Kind.ARRAY:
            elem, _, count = self.items(type_id)[0]
            return f"{self.spell(elem, depth + 1)} [{count}]"
        if kind == Kind.FUNC_PROTO:
            return self._prototype(type_id, "", depth)
        return name

    def _prototype(self, type_id: int, pointer: str, depth: int) -> str:
        """``int (*)(struct file *, void *)``: a function type, through a pointer when ``pointer`` is ``(*)``."""
        btf = self._owner(type_id)
        _, vlen, _, _, returns = self.header(type_id)
        start = btf._starts[type_id - btf.first_id] + 12
        params = [struct.unpack_from("<II", btf.types, start + 8 * i)[1] for i in range(vlen)]
        spelled = [self.spell(t, depth + 1) if t else "..." for t in params]
        return f"{self.spell(returns, depth + 1)} {pointer}({', '.join(spelled) or 'void'})".replace("  ", " ")

    def variable(self, name: str) -> Optional[int]:
        """The size of the variable ``name`` in a DATASEC (vmlinux BTF has its per-CPU variables), or None."""
        for type_id in self._ids_named(name):
            kind, _, _, _, var_type = self.header(type_id)
            if kind == Kind.VAR:
                return self.size(var_type)
        return None
