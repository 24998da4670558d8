"""The kernel's own type and symbol tables, decoded from bytes built here: BTF (kdlgdb.target.btf) and kallsyms
(kdlgdb.target.kallsyms). The real dumps' tables are checked against gdb in test_btf_dumps.py."""
from __future__ import annotations

import struct

import pytest

from kdlgdb.errors import KdlError
from kdlgdb.target.btf import BTF_MAGIC, Btf, Kind
from kdlgdb.target.kallsyms import Kallsyms, decode_names, decode_offsets


# -- BTF -------------------------------------------------------------------------


class BtfBuilder:
    """BTF bytes, type by type (ids from ``first_id``; names into a string section from ``first_str``)."""

    def __init__(self, first_id: int = 1, first_str: int = 0) -> None:
        self.strings = b"\0"
        self.types = b""
        self.next_id = first_id
        self.first_str = first_str

    def name(self, text: str) -> int:
        if not text:
            return 0
        at = self.strings.find(b"\0" + text.encode() + b"\0")
        if at >= 0:
            return self.first_str + at + 1
        self.strings += text.encode() + b"\0"
        return self.first_str + len(self.strings) - len(text) - 1

    def add(self, kind: int, name: str, size_or_type: int, items: bytes = b"", vlen: int = 0,
            kind_flag: bool = False) -> int:
        info = (kind << 24) | vlen | (1 << 31 if kind_flag else 0)
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + items
        self.next_id += 1
        return self.next_id - 1

    def integer(self, name: str, size: int) -> int:
        return self.add(Kind.INT, name, size, struct.pack("<I", size * 8))

    def pointer(self, to: int) -> int:
        return self.add(Kind.PTR, "", to)

    def compound(self, kind: int, name: str, size: int, members: list[tuple[str, int, int, int]]) -> int:
        """members: (name, type, bit offset, bit-field size or 0)."""
        bitfields = any(bits for _, _, _, bits in members)
        items = b"".join(struct.pack("<III", self.name(n), t, (bits << 24 | at) if bitfields else at)
                         for n, t, at, bits in members)
        return self.add(kind, name, size, items, len(members), bitfields)

    def blob(self) -> bytes:
        header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return header + self.types + self.strings


@pytest.fixture(scope="module")
def kernel_btf() -> tuple[Btf, BtfBuilder]:
    b = BtfBuilder()
    int_t = b.integer("int", 4)
    ulong = b.integer("long unsigned int", 8)
    char = b.integer("char", 1)
    list_fwd = b.add(Kind.FWD, "list_head", 0)  # a declaration comes first: find() must skip it
    list_ptr = b.next_id + 1  # list_head's members point at itself (BTF refers to types before or after)
    list_head = b.compound(Kind.STRUCT, "list_head", 16, [("next", list_ptr, 0, 0), ("prev", list_ptr, 64, 0)])
    assert b.pointer(list_head) == list_ptr
    atomic = b.compound(Kind.STRUCT, "", 8, [("counter", ulong, 0, 0)])
    atomic_long = b.add(Kind.TYPEDEF, "atomic_long_t", atomic)
    mutex = b.compound(Kind.STRUCT, "mutex", 32, [("owner", atomic_long, 0, 0), ("wait_list", list_head, 128, 0)])
    waiter = b.compound(Kind.STRUCT, "mutex_waiter", 32, [("list", list_head, 0, 0)])
    waiter_ptr = b.pointer(waiter)
    const_char = b.add(Kind.CONST, "", char)
    comm = b.add(Kind.ARRAY, "", 0, struct.pack("<III", char, int_t, 16))
    proto = b.add(Kind.FUNC_PROTO, "", int_t, struct.pack("<II", 0, waiter_ptr), 1)
    thread = b.compound(Kind.STRUCT, "thread_struct", 16, [("ip", ulong, 0, 0), ("sp", ulong, 64, 0)])
    inner = b.compound(Kind.STRUCT, "", 16, [("blocked_on", waiter_ptr, 0, 0), ("name", b.pointer(const_char), 64, 0)])
    anon = b.compound(Kind.UNION, "", 16, [("raw", ulong, 0, 0), ("", inner, 0, 0)])
    flags = b.compound(Kind.STRUCT, "", 4, [("in_iowait", int_t, 0, 1), ("class_idx", int_t, 3, 13)])
    task = b.compound(Kind.STRUCT, "task_struct", 96, [
        ("__state", int_t, 0, 0), ("", anon, 64, 0), ("thread", thread, 192, 0), ("comm", comm, 320, 0),
        ("fn", b.pointer(proto), 448, 0), ("", flags, 512, 0), ("lock", mutex, 544, 0)])
    runqueues = b.add(Kind.VAR, "runqueues", mutex, struct.pack("<I", 1))
    b.add(Kind.DATASEC, ".data..percpu", 32, struct.pack("<III", runqueues, 0, 32), 1)
    assert (list_fwd, task) == (4, task)
    return Btf(b.blob(), "test BTF"), b


def test_types_by_name_size_and_members(kernel_btf: tuple[Btf, BtfBuilder]) -> None:
    btf, _ = kernel_btf
    task = btf.find("struct task_struct")
    assert task is not None and btf.size(task) == 96
    assert btf.find("struct list_head") != 4 and btf.size(btf.find("struct list_head") or 0) == 16  # not the FWD
    assert btf.size(btf.find("atomic_long_t") or 0) == 8
    assert btf.find("struct nothing") is None and btf.find("union task_struct") is None
    assert btf.member(task, "thread.sp")[:2] == (192 + 64, 0)
    assert btf.member(task, "lock.wait_list.prev")[:2] == (544 + 128 + 64, 0)
    assert btf.member(task, "thread.nothing") is None and btf.member(task, "nothing") is None


def test_members_of_anonymous_structs_and_unions(kernel_btf: tuple[Btf, BtfBuilder]) -> None:
    """``task->blocked_on`` inside ``union { ...; struct { blocked_on; name; }; }``, as C and gdb see it."""
    btf, _ = kernel_btf
    task = btf.find("struct task_struct") or 0
    bits, bitsize, member_type = btf.member(task, "blocked_on")
    assert (bits, bitsize, btf.size(member_type)) == (64, 0, 8)
    assert btf.member(task, "name")[0] == 128 and btf.member(task, "raw")[0] == 64


def test_bit_fields(kernel_btf: tuple[Btf, BtfBuilder]) -> None:
    btf, _ = kernel_btf
    task = btf.find("struct task_struct") or 0
    assert btf.member(task, "in_iowait")[:2] == (512, 1)
    assert btf.member(task, "class_idx")[:2] == (515, 13)


def test_types_spelled_as_gdb_spells_them(kernel_btf: tuple[Btf, BtfBuilder]) -> None:
    btf, _ = kernel_btf
    task = btf.find("struct task_struct") or 0

    def spelled(path: str) -> str:
        return btf.spell(btf.member(task, path)[2])

    assert spelled("blocked_on") == "struct mutex_waiter *"
    assert spelled("name") == "const char *"
    assert spelled("comm") == "char [16]"
    assert spelled("lock") == "struct mutex"
    assert spelled("lock.owner") == "atomic_long_t"
    assert spelled("fn") == "int (*)(struct mutex_waiter *)"


def test_per_cpu_variables(kernel_btf: tuple[Btf, BtfBuilder]) -> None:
    btf, _ = kernel_btf
    assert btf.variable("runqueues") == 32 and btf.variable("init_stack") is None


def test_split_btf_of_a_module(kernel_btf: tuple[Btf, BtfBuilder]) -> None:
    """A module's BTF numbers its types and strings on from the vmlinux's and refers to the vmlinux's types."""
    base, built = kernel_btf
    m = BtfBuilder(first_id=base.next_id, first_str=len(built.strings))
    mutex = base.find("struct mutex") or 0
    dev = m.compound(Kind.STRUCT, "kdl_dev", 40, [("lock", mutex, 0, 0), ("count", 1, 256, 0)])
    module = Btf(m.blob(), "kdl_mutex's BTF", base=base)
    assert module.find("struct kdl_dev") == dev
    assert module.size(dev) == 40 and module.member(dev, "lock.wait_list")[0] == 128
    assert module.spell(module.member(dev, "lock")[2]) == "struct mutex"
    assert module.find("struct task_struct") == base.find("struct task_struct")


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"\xeb\x9f" + b[2:], "not BTF"),
    (lambda b: b[:2] + b"\x02" + b[3:], "version 2"),
    (lambda b: b[:40], "describes more than"),
    (lambda b: b[:10], "too short"),
])
def test_damaged_btf_is_one_line(kernel_btf: tuple[Btf, BtfBuilder], damage, message: str) -> None:
    _, built = kernel_btf
    with pytest.raises(KdlError, match=message):
        Btf(damage(built.blob()), "test BTF")


def test_an_unknown_kind_is_one_line() -> None:
    b = BtfBuilder()
    b.add(31, "weird", 0)
    with pytest.raises(KdlError, match="unknown kind 31"):
        Btf(b.blob(), "test BTF")


# -- kallsyms ----------------------------------------------------------------------


KASLR = 0x2D000000
RELATIVE_BASE = 0xFFFFFFFF81000000 + KASLR  # _text at runtime
TABLES = {"kallsyms_num_syms": 0xFFFFFFFF82000000, "kallsyms_relative_base": 0xFFFFFFFF82000010,
          "kallsyms_token_table": 0xFFFFFFFF82001000, "kallsyms_token_index": 0xFFFFFFFF82002000,
          "kallsyms_names": 0xFFFFFFFF82003000, "kallsyms_offsets": 0xFFFFFFFF82100000}


def kallsyms_tables(symbols: list[tuple[str, int]],
                    absolute_percpu: bool = True) -> tuple[dict[int, bytes], dict[str, str]]:
    """(memory at runtime addresses, VMCOREINFO) of a kernel whose kallsyms hold ``symbols`` ((typed name, static
    address), in address order). Tokens: 0 to 127 the ASCII characters, 128 "mutex", 129 "_lock", the rest "?"."""
    tokens = [bytes([i]) for i in range(128)] + [b"mutex", b"_lock"] + [b"?"] * 126
    table = b"".join(t + b"\0" for t in tokens)
    index = [sum(len(t) + 1 for t in tokens[:i]) for i in range(256)]
    names = b""
    offsets = []
    for typed, static in symbols:
        encoded = typed.encode().replace(b"mutex", b"\x80").replace(b"_lock", b"\x81")
        length = len(encoded)
        names += (bytes([length]) if length < 128 else bytes([0x80 | (length & 0x7F), length >> 7])) + encoded
        runtime = static + KASLR if static >= 0xFFFFFFFF80000000 else static
        if absolute_percpu:
            offsets.append(runtime if static < 0xFFFFFFFF80000000 else RELATIVE_BASE - 1 - runtime)
        else:
            offsets.append(runtime - RELATIVE_BASE)
    memory = {
        TABLES["kallsyms_num_syms"]: struct.pack("<I", len(symbols)),
        TABLES["kallsyms_relative_base"]: struct.pack("<Q", RELATIVE_BASE),
        TABLES["kallsyms_token_table"]: table + bytes(256),
        TABLES["kallsyms_token_index"]: struct.pack("<256H", *index),
        TABLES["kallsyms_names"]: names,
        TABLES["kallsyms_offsets"]: struct.pack(f"<{len(offsets)}i", *offsets),
    }
    info = {f"SYMBOL({key})": f"{address:x}" for key, address in TABLES.items()}
    return memory, {**info, "KERNELOFFSET": f"{KASLR:x}"}


def reader(memory: dict[int, bytes]):
    """Reads of the tables' memory (zeros after each table, up to the next)."""

    def read(address: int, size: int) -> bytes:
        start = max((a for a in memory if a <= address), default=None)
        assert start is not None, f"read of {address:#x}"
        data = memory[start]
        return (data + bytes(address + size - start))[address - start : address - start + size]

    return read


SYMBOLS = [
    ("A__per_cpu_start", 0), ("Arunqueues", 0x31980),
    ("T_text", 0xFFFFFFFF81000000), ("T_stext", 0xFFFFFFFF81000000),
    ("t__mutex_lock.constprop.0", 0xFFFFFFFF81A130A0), ("Tmutex_lock", 0xFFFFFFFF81A13500),
    ("Tentry_SYSCALL_64", 0xFFFFFFFF81C00080), ("Tentry_SYSCALL_64_after_hwframe", 0xFFFFFFFF81C000B8),
    ("d" + "x" * 200, 0xFFFFFFFF82040000),  # a "big" symbol: two length bytes (v6.1)
    ("Dlinux_banner", 0xFFFFFFFF8211FFE0), ("dstatic_twin", 0xFFFFFFFF82120000), ("dstatic_twin", 0xFFFFFFFF82120040),
]


@pytest.mark.parametrize("absolute_percpu", [True, False], ids=["absolute-percpu", "relative"])
def test_kallsyms_names_and_static_addresses(absolute_percpu: bool) -> None:
    symbols = SYMBOLS if absolute_percpu else [s for s in SYMBOLS if s[1] >= 0xFFFFFFFF80000000]
    memory, info = kallsyms_tables(symbols, absolute_percpu)
    k = Kallsyms.from_memory(reader(memory), info, KASLR)
    assert k.count == len(symbols)
    for typed, static in symbols[:-1]:
        assert k.address(typed[1:]) == static, typed
    assert k.address("static_twin") == 0xFFFFFFFF82120000  # the first of namesakes, as kallsyms_lookup_name()
    assert k.address("x" * 200) == 0xFFFFFFFF82040000
    assert k.address("nothing") is None
    assert k.type_of("mutex_lock") == "T" and k.type_of("__mutex_lock.constprop.0") == "t"
    if absolute_percpu:
        assert k.address("runqueues") == 0x31980 and k.lookup(0x31990) == ("runqueues", 0x10)


@pytest.mark.parametrize("order", ["address", "other"])
def test_kallsyms_lookup_by_address(order: str) -> None:
    """Looked up by address whatever order the tables list the symbols in (scripts/kallsyms sorts them)."""
    symbols = SYMBOLS if order == "address" else SYMBOLS[4:] + SYMBOLS[:4]
    memory, info = kallsyms_tables(symbols)
    k = Kallsyms.from_memory(reader(memory), info, KASLR)
    assert k.type_of("__mutex_lock.constprop.0") == "t" and k.type_of("linux_banner") == "D"
    assert k.lookup(0xFFFFFFFF81000010) == ("_text", 0x10)  # the first of aliases, as %pS
    assert k.lookup(0xFFFFFFFF81A1343D) == ("__mutex_lock.constprop.0", 0x39D)
    assert k.lookup(0xFFFFFFFF81C00126) == ("entry_SYSCALL_64_after_hwframe", 0x6E)
    assert k.next_address(0xFFFFFFFF81A130A0) == 0xFFFFFFFF81A13500
    assert k.lookup(0xFFFFFFFF80000000) == ("runqueues", 0xFFFFFFFF80000000 - 0x31980)


def test_decoders_on_their_own() -> None:
    tokens = [b"a", b"bc", b"d"] + [b"?"] * 253
    assert decode_names(bytes([2, 0, 1, 1, 2, 3, 2, 1, 0]), tokens, 3) == ["abc", "d", "dbca"]
    with pytest.raises(KdlError, match="ends after 1 of its 2 symbols"):
        decode_names(bytes([1, 0]), tokens, 2)
    with pytest.raises(KdlError, match="ends inside its last symbol"):
        decode_names(bytes([5, 0]), tokens, 1)
    base = 0xFFFFFFFF81000000
    assert decode_offsets(struct.pack("<3i", 0x100, -1, -0x11), base, 3) == [0x100, base, base + 0x10]
    assert decode_offsets(struct.pack("<2i", 0, 0x10), base, 2) == [base, base + 0x10]


def test_kallsyms_missing_from_vmcoreinfo_is_one_line() -> None:
    memory, info = kallsyms_tables(SYMBOLS)
    del info["SYMBOL(kallsyms_token_table)"]
    with pytest.raises(KdlError, match=r"no SYMBOL\(kallsyms_token_table\) \(kernels before 6.0"):
        Kallsyms.from_memory(reader(memory), info, KASLR)


def test_a_damaged_symbol_count_is_one_line() -> None:
    memory, info = kallsyms_tables(SYMBOLS)
    memory[TABLES["kallsyms_num_syms"]] = struct.pack("<I", 0)
    with pytest.raises(KdlError, match="kallsyms_num_syms is 0"):
        Kallsyms.from_memory(reader(memory), info, KASLR)


def test_thread_size_without_init_stack() -> None:
    """BTF has no size for init_stack: THREAD_SIZE is struct irq_stack's (the same order on x86_64, KASAN's
    doubling included), and 16 KiB only when the debug info knows neither."""
    from types import SimpleNamespace

    from kdlgdb.kernel.stack import StackReader

    def reader(init_stack, irq_stack):  # type: ignore[no-untyped-def]
        target = SimpleNamespace(symbol_size=lambda name: init_stack if name == "init_stack" else None,
                                 type_size=lambda name: irq_stack if name == "struct irq_stack" else None)
        return StackReader(SimpleNamespace(target=target), None).thread_size  # type: ignore[arg-type]

    assert reader(16384, 32768) == 16384  # the vmlinux's DWARF sizes init_stack: that decides
    assert reader(None, 32768) == 32768  # a KASAN kernel read with its BTF
    assert reader(None, None) == 16384
