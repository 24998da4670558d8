"""Evidence that a task holds a lock the kernel does not record an owner for.

Semaphores and read-held rw_semaphores keep no owner. Two kinds of evidence,
both marked *inferred*:

* code: a frame on the task's stack is a function that, before the call the
  task is now inside, calls an acquire function (``down``, ``down_read``, ...)
  with the lock's address as its first argument, and no matching release.
  This is what a kernel engineer does by reading the caller's code; it finds
  locks that are static variables, whose address is an immediate operand.
* stack: the lock's address is stored in a live slot of the task's stack.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from ..errors import ReadError
from ..model import Frame
from .layout import Kernel
from .symbols import Symbols
from .functions import ACQUIRE, RELEASE, SCHEDULER, SLOW_PATH_KIND, base_name

__all__ = ["Acquisition", "CodeReader", "first_argument", "may_write_rdi"]

MAX_FUNCTION = 64 * 1024
REACH_LIMIT = 2048  # bytes of a tail-calling function searched for the lock functions it reaches


@dataclass
class Acquisition:
    lock: int
    function: str  # the acquire function called, e.g. "down"
    call_site: int  # address of the call instruction
    frame: Frame  # the frame whose function made the call

    def describe(self) -> str:
        """``kdl_a_fn+0x27 [kdl_abba] called down() on it at 0xffffffffc04f300c``."""
        return f"{self.frame.describe()} called {self.function}() on it at {self.call_site:#x}"


class CodeReader:
    """Finds the acquire calls a function made before a given return address."""

    def __init__(self, k: Kernel, symbols: Symbols) -> None:
        self.k = k
        self.symbols = symbols
        self._targets: dict[int, str] = {}
        self._held: dict[int, list[tuple[int, str, int]]] = {}  # return address -> (lock, function, call site)

    def held_by_frames(self, frames: list[Frame]) -> list[Acquisition]:
        """Locks acquired (and not released) by the callers on a stack, innermost first.

        The call a frame is inside right now (ending at its return address) has
        not returned, so the lock it takes is not counted as held.
        """
        out: list[Acquisition] = []
        for frame in frames:
            name = base_name(frame.symbol)
            if frame.symbol is None or name in SCHEDULER or name in SLOW_PATH_KIND:
                continue
            out.extend(self.held_in(frame))
        return out

    def held_in(self, frame: Frame) -> list[Acquisition]:
        """Locks the function of ``frame`` acquired before its return address, without a release.

        A return address at a function's first byte (``kdl_hold+0x0``) can be the one of a call that ends the
        function before it: a call to a function that never returns, after which gcc (-Os) emits nothing, as
        in kdl_scale's ``kdl_hold_sem_XX`` on 6.1-lockdep. (Or a stored function pointer: kthread's threadfn.)
        That function's code is read too, and what it took is credited to it.
        """
        if frame.pc not in self._held:
            found = self._acquired_before(frame.pc, frame.offset)
            if frame.offset == 0 and not found:
                symbol, offset, _ = self.symbols.lookup(frame.pc - 1)
                if symbol is not None:
                    found = self._acquired_before(frame.pc, offset + 1)
            self._held[frame.pc] = found
        owner = frame
        if frame.offset == 0 and self._held[frame.pc]:  # what the function before took: say so
            symbol, offset, module = self.symbols.lookup(frame.pc - 1)
            owner = Frame(frame.pc, symbol, offset + 1, module, frame.sp)
        return [Acquisition(lock, function, site, owner) for lock, function, site in self._held[frame.pc]]

    def _acquired_before(self, pc: int, offset: int) -> list[tuple[int, str, int]]:
        """(lock, acquire function, call site) of each acquire call in [pc - offset, pc) not released there."""
        start = pc - offset
        if not 0 < offset <= MAX_FUNCTION:
            return []
        try:
            code = self.k.read(start, offset)
        except ReadError:
            return []
        held: dict[int, tuple[int, str, int]] = {}
        for pos in range(len(code) - 4):
            if code[pos] != 0xE8:
                continue
            site = start + pos
            if site + 5 == pc:
                continue  # the call this task is inside right now has not returned: not held
            target = site + 5 + struct.unpack_from("<i", code, pos + 1)[0]
            fn = self.function_at(target)
            if fn not in ACQUIRE and fn not in RELEASE:
                continue
            lock = first_argument(code, pos, start)
            if lock is None:
                continue
            if fn in ACQUIRE:
                held[lock] = (lock, fn, site)
            else:
                held.pop(lock, None)
        return list(held.values())

    def argument_of_call(self, frame: Frame) -> Optional[int]:
        """The constant first argument of the call ``frame`` is inside now (ending at its return address),
        when its function loads one into %rdi just before (see :func:`first_argument`), else None."""
        if not 5 <= frame.offset <= MAX_FUNCTION:
            return None
        start = frame.pc - frame.offset
        try:
            code = self.k.read(start, frame.offset)
        except ReadError:
            return None
        return first_argument(code, len(code) - 5, start) if code[-5] == 0xE8 else None

    def callee(self, pc: int) -> Optional[int]:
        """The address that the ``call rel32`` ending at return address ``pc`` calls, else None."""
        try:
            code = self.k.read(pc - 5, 5)
        except ReadError:
            return None
        return pc + struct.unpack_from("<i", code, 1)[0] if code[0] == 0xE8 else None

    def call_target(self, pc: int) -> str:
        """Name of the function that the call ending at return address ``pc`` calls, else "" (for a
        caller whose callee tail-called on, so that the callee's own frame is not on the stack)."""
        target = self.callee(pc)
        return self.function_at(target) if target is not None else ""

    def reached(self, function: int, names: set[str], limit: int = REACH_LIMIT) -> set[str]:
        """Which of ``names`` the function starting at ``function`` calls or jumps to (``call``/``jmp
        rel32``): for a callee that tail-called a lock function, the lock functions it can reach."""
        own = self.symbols.lookup(function)
        if own[0] is None or own[1] != 0:
            return set()
        code = b""
        while len(code) < limit:  # page by page: a module's text may end at any page
            at = function + len(code)
            try:
                code += self.k.read(at, min(limit - len(code), 4096 - (at & 0xFFF)))
            except ReadError:
                break
        found: set[str] = set()
        for pos in range(len(code) - 4):
            if code[pos] not in (0xE8, 0xE9):
                continue
            name = self.function_at(function + pos + 5 + struct.unpack_from("<i", code, pos + 1)[0])
            if name in names and name not in found and self.symbols.lookup(function + pos)[0] == own[0]:
                found.add(name)  # an instruction of this function, not of the next one
        return found

    def function_at(self, address: int) -> str:
        """Name of the function that starts exactly at ``address``, else ""."""
        if address not in self._targets:
            name = ""
            if self.symbols.is_text(address):
                sym, offset, _ = self.symbols.lookup(address)
                if sym is not None and offset == 0:
                    name = base_name(sym)
            self._targets[address] = name
        return self._targets[address]


def first_argument(code: bytes, call: int, start: int) -> Optional[int]:
    """The constant loaded into %rdi shortly before the call at ``code[call]``, if any.

    Recognises ``mov $imm32, %rdi`` (48 c7 c7, sign-extended: kernel and module
    addresses fit) and ``lea disp32(%rip), %rdi`` (48 8d 3d) within 24 bytes, the one
    nearest the call. None when something between it and the call may write %rdi
    (:func:`may_write_rdi`): then the constant was an earlier call's argument (a printk
    format), or was replaced.
    """
    for end in range(call, max(call - 24, 6), -1):
        op = code[end - 7 : end - 4]
        if op not in (b"\x48\xc7\xc7", b"\x48\x8d\x3d"):
            continue
        if may_write_rdi(code[end:call]):
            return None
        if op == b"\x48\xc7\xc7":
            return struct.unpack_from("<i", code, end - 4)[0] & 0xFFFFFFFFFFFFFFFF
        return start + end + struct.unpack_from("<i", code, end - 4)[0]
    return None


def may_write_rdi(code: bytes) -> bool:
    """Whether some instruction in ``code`` (a few bytes, not decoded) may write %rdi/%edi or call out.

    Without an instruction decoder this looks for the byte patterns at every offset, so an immediate or a
    displacement that contains one also counts: the answer errs towards "may", and the caller towards
    not knowing the argument. The patterns: a call (``e8``), ``mov $imm32, %edi`` (``bf``), ``xor`` of
    %edi (``31 ff``, ``33 ff``), and ``mov``/``lea`` with %rdi or %edi as destination
    (``[REX] 89 /r`` with r/m = 7 in a register form, ``[REX] 8b /r`` and ``[REX] 8d /r`` with reg = 7).
    """
    for i, byte in enumerate(code):
        if byte in (0xE8, 0xBF):
            return True
        if byte in (0x31, 0x33) and code[i + 1 : i + 2] == b"\xff":
            return True
        rex = i > 0 and 0x40 <= code[i - 1] <= 0x4F
        modrm = code[i + 1] if i + 1 < len(code) else None
        if modrm is None:
            continue
        if byte == 0x89 and modrm & 0xC7 == 0xC7 and not (rex and code[i - 1] & 1):  # REX.B: %r15, not %rdi
            return True
        if byte in (0x8B, 0x8D) and (modrm >> 3) & 7 == 7 and not (rex and code[i - 1] & 4):  # REX.R: %r15
            return True
    return False
