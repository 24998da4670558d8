"""LZO1X decompression in plain Python: kdump pages that ``makedumpfile -l`` compressed, where the Python that
reads them has no ``python-lzo`` (the ``kdlgdb`` command's own Python, reading a dump without gdb).

An LZO1X stream is a sequence of instructions, each a copy of earlier output (a *match*: length and distance
back) followed by 0-3 literal bytes, or a run of literals; what a small opcode means depends on how many
literals the previous instruction copied (its *state*: 0, 1-3, or 4 for a run of 4 or more). By opcode:

- first byte 18-255: a run of ``byte - 17`` literals;
- 0-15, state 0: a run of ``3 + L`` literals (L 0: 18 plus 255 per following zero byte plus the next byte);
- 0-15, state 1-3: copy 2 bytes from ``(next << 2) + D + 1`` back; state 4: 3 bytes from ``... + 2049`` back;
- 16-31: copy ``2 + L`` (3 bits, extended as above) from ``16384 + (H << 14) + (le16 >> 2)`` back, the end of
  the stream when that distance is 16384;
- 32-63: copy ``2 + L`` (5 bits, extended) from ``(le16 >> 2) + 1`` back;
- 64-127: copy ``3 + L`` (1 bit) and 128-255: ``5 + L`` (2 bits), from ``(next << 3) + D + 1`` back (D 3 bits);

each match then copies ``S`` literals (its opcode's or le16's low two bits), the next state.
"""
from __future__ import annotations

__all__ = ["lzo1x_decompress", "LzoError"]


class LzoError(ValueError):
    """A stream that is not LZO1X, or that decompresses to more than it may."""


def lzo1x_decompress(src: bytes, limit: int) -> bytes:
    """The bytes the LZO1X stream ``src`` holds; LzoError when it is corrupt or holds more than ``limit`` bytes."""
    out = bytearray()
    n = len(src)
    ip = 0
    state = 0

    def byte() -> int:
        nonlocal ip
        if ip >= n:
            raise LzoError("the stream ends inside an instruction")
        ip += 1
        return src[ip - 1]

    def extended(length: int, base: int) -> int:
        """``length`` of an opcode, or when it is 0 ``base`` plus its run of zero bytes (255 each) and the next."""
        if length:
            return length
        total = base
        while (b := byte()) == 0:
            total += 255
        return total + b

    def literals(count: int) -> None:
        nonlocal ip
        if ip + count > n:
            raise LzoError("the stream ends inside a run of literals")
        out.extend(src[ip : ip + count])
        ip += count

    if n and src[0] > 17:
        count = byte() - 17
        literals(count)
        state = count if count < 4 else 4
    while True:
        t = byte()
        if t < 16:
            if state == 0:
                literals(extended(t, 15) + 3)
                state = 4
                continue
            far = 2049 if state == 4 else 1
            length = 3 if state == 4 else 2
            distance = (byte() << 2) + ((t >> 2) & 3) + far
            follow = t & 3
        elif t < 64:
            length = extended(t & (7 if t < 32 else 31), 7 if t < 32 else 31) + 2
            le16 = byte() | (byte() << 8)
            follow = le16 & 3
            if t < 32:
                distance = 16384 + ((t & 8) << 11) + (le16 >> 2)
                if distance == 16384:
                    break  # the end of the stream
            else:
                distance = (le16 >> 2) + 1
        else:
            length = (3 + ((t >> 5) & 1)) if t < 128 else (5 + ((t >> 5) & 3))
            distance = (byte() << 3) + ((t >> 2) & 7) + 1
            follow = t & 3
        start = len(out) - distance
        if start < 0:
            raise LzoError(f"a match {distance} bytes back, with {len(out)} bytes out")
        if len(out) + length > limit:
            raise LzoError(f"more than {limit} bytes")
        if distance >= length:
            out += out[start : start + length]
        else:  # overlapping: a run of the last `distance` bytes
            for i in range(length):
                out.append(out[start + i])
        literals(follow)
        state = follow
        if len(out) > limit:
            raise LzoError(f"more than {limit} bytes")
    if len(out) > limit:
        raise LzoError(f"more than {limit} bytes")
    return bytes(out)
