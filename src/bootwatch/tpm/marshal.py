"""A bounds-checked big-endian reader for TPM 2.0 structures.

Every read names the structure and field it is for, so a short or
malformed buffer becomes a :class:`~bootwatch.errors.TpmStructureError`
that says exactly where the problem is (never an IndexError or a silent
truncation).
"""

from __future__ import annotations

import struct

from bootwatch.errors import TpmStructureError
from bootwatch.tpm.errors import TpmValueError

__all__ = [
    "Reader",
    "tpm2b",
    "u16",
    "u32",
    "u64",
]


class Reader:
    """Sequential reader over one structure's bytes; offsets are from its start."""

    __slots__ = ("_data", "_pos", "structure")

    def __init__(self, data: bytes, structure: str, *, start: int = 0) -> None:
        self._data = bytes(data)
        self._pos = start
        self.structure = structure

    @property
    def offset(self) -> int:
        """Current byte offset into the buffer."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes not yet read."""
        return len(self._data) - self._pos

    def error(self, field: str, problem: str, *, offset: int | None = None) -> TpmStructureError:
        """A typed error for ``field`` at ``offset`` (default: the current offset)."""
        return TpmStructureError(self.structure, field, self._pos if offset is None else offset,
                                 problem)

    def take(self, n: int, field: str) -> bytes:
        """Read exactly ``n`` bytes for ``field``."""
        if n < 0 or n > self.remaining:
            raise self.error(field, f"needs {n} bytes, only {self.remaining} left (truncated)")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def since(self, start: int) -> bytes:
        """The bytes from ``start`` up to the current offset (a structure's raw form)."""
        return self._data[start : self._pos]

    def u8(self, field: str) -> int:
        """Read a UINT8."""
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        """Read a big-endian UINT16."""
        return int(struct.unpack(">H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        """Read a big-endian UINT32."""
        return int(struct.unpack(">I", self.take(4, field))[0])

    def u64(self, field: str) -> int:
        """Read a big-endian UINT64."""
        return int(struct.unpack(">Q", self.take(8, field))[0])

    def tpm2b(self, field: str, max_size: int) -> bytes:
        """Read a TPM2B (UINT16 size, then that many bytes), refusing sizes over ``max_size``."""
        start = self._pos
        size = self.u16(f"{field}.size")
        if size > max_size:
            raise self.error(f"{field}.size", f"size {size} exceeds the maximum {max_size}",
                             offset=start)
        return self.take(size, field)

    def expect_end(self, field: str = "(end)") -> None:
        """Refuse trailing bytes after the structure."""
        if self.remaining:
            raise self.error(field, f"{self.remaining} unexpected trailing bytes")


def _pack(fmt: str, what: str, value: int) -> bytes:
    try:
        return struct.pack(fmt, value)
    except struct.error:
        raise TpmValueError(f"{value!r} does not fit a {what}") from None


def u16(value: int) -> bytes:
    """Marshal a UINT16 (TpmValueError if ``value`` does not fit)."""
    return _pack(">H", "UINT16", value)


def u32(value: int) -> bytes:
    """Marshal a UINT32 (TpmValueError if ``value`` does not fit)."""
    return _pack(">I", "UINT32", value)


def u64(value: int) -> bytes:
    """Marshal a UINT64 (TpmValueError if ``value`` does not fit)."""
    return _pack(">Q", "UINT64", value)


def tpm2b(data: bytes) -> bytes:
    """Marshal a TPM2B (size-prefixed byte string; TpmValueError over 65535 bytes)."""
    if len(data) > 0xFFFF:
        raise TpmValueError(f"TPM2B payload is {len(data)} bytes, over 65535")
    return u16(len(data)) + bytes(data)
