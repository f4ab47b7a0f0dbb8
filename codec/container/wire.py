"""Wire helpers: LEB128 varints, zigzag, and a bounds-checked cursor (the container's, and the
video sections' too).

Every read checks the remaining byte count *before* slicing, and raises
:class:`NcfError` with the offset and the name of the field being read.
"""
from __future__ import annotations

import struct

from .errors import NcfError

MAX_VARINT_BYTES = 10  # enough for an unsigned 64-bit value
U64_MAX = (1 << 64) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")


def encode_uvarint(value: int) -> bytes:
    """Unsigned LEB128, minimal length; ``value`` must be in [0, 2**64 - 1]."""
    if value < 0 or value > U64_MAX:
        raise ValueError(f"varint value {value} outside [0, 2**64-1]")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag_encode(value: int) -> int:
    if value < I64_MIN or value > I64_MAX:
        raise ValueError(f"signed value {value} outside the 64-bit range")
    return (value << 1) if value >= 0 else ((-value) << 1) - 1


def zigzag_decode(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def encode_svarint(value: int) -> bytes:
    """A signed value as the LEB128 varint of its zigzag code."""
    return encode_uvarint(zigzag_encode(value))


def pack_u16(v: int) -> bytes:
    return _U16.pack(v)


def pack_u32(v: int) -> bytes:
    return _U32.pack(v)


def pack_f32(v: float) -> bytes:
    return _F32.pack(v)


class Cursor:
    """A read position over a byte buffer; all reads are bounds-checked."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: memoryview, pos: int = 0, end: int | None = None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise NcfError(
                f"truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.remaining} remain")

    def take(self, n: int, what: str) -> memoryview:
        self.need(n, what)
        view = self.buf[self.pos:self.pos + n]
        self.pos += n
        return view

    def u8(self, what: str) -> int:
        self.need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self, what: str) -> int:
        return _U16.unpack(self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def f32(self, what: str) -> float:
        return _F32.unpack(self.take(4, what))[0]

    def uvarint(self, what: str) -> int:
        start = self.pos
        value = 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= self.end:
                raise NcfError(f"truncated: varint {what} at offset {start} runs past the end")
            byte = self.buf[self.pos]
            self.pos += 1
            if i == MAX_VARINT_BYTES - 1 and byte > 0x01:
                raise NcfError(f"varint {what} at offset {start} exceeds 64 bits")
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise NcfError(f"varint {what} at offset {start} is not minimally encoded")
                return value
        raise NcfError(f"varint {what} at offset {start} is longer than {MAX_VARINT_BYTES} bytes")
