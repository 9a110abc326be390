"""Private helpers shared by the event-data decoders: a bounds-checked reader,
GUID text and string cleaning.

Every read goes through :class:`Reader`, which raises :class:`EventDataError`
(under :class:`~bootwatch.errors.EventLogError`) with the byte offset *inside
the event data*; the public decoders turn that into a typed ``Undecodable``
value, so a log that frames always still yields a boot state.
"""

from __future__ import annotations

import struct

from bootwatch.errors import EventLogError

__all__ = [
    "EventDataError",
    "Reader",
    "ascii_text",
    "guid_text",
    "is_printable_text",
    "looks_utf16",
    "utf16_text",
]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class EventDataError(EventLogError):
    """Event data that does not match the structure its event type promises."""

    code = "eventlog_event_data"

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason, offset=offset)
        self.data_offset = offset


class Reader:
    """Sequential little-endian reader over one event's data, bounds-checked."""

    __slots__ = ("base", "data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, base: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.base = base

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.end:
            raise EventDataError(
                f"{what}: needs {n} bytes, {self.end - self.pos} left", self.base + self.pos
            )
        p = self.pos
        self.pos = p + n
        return p

    def u8(self, what: str) -> int:
        return self.data[self._need(1, what)]

    def u16(self, what: str) -> int:
        return int(_U16.unpack_from(self.data, self._need(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack_from(self.data, self._need(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack_from(self.data, self._need(8, what))[0])

    def take(self, n: int, what: str) -> bytes:
        p = self._need(n, what)
        return self.data[p : p + n]

    def guid(self, what: str) -> str:
        return guid_text(self.take(16, what))

    def rest(self) -> bytes:
        p = self.pos
        self.pos = self.end
        return self.data[p : self.end]

    def fail(self, reason: str) -> EventDataError:
        return EventDataError(reason, self.base + self.pos)


def guid_text(raw: bytes) -> str:
    """EFI_GUID (mixed-endian, 16 bytes) as the canonical lower-case text form.

    Formatted directly (what ``str(uuid.UUID(bytes_le=raw))`` gives, in a quarter of
    its time): logs repeat a few GUIDs (owners of hundreds of dbx entries) many times.
    """
    if len(raw) != 16:
        raise ValueError(f"an EFI_GUID is 16 bytes, not {len(raw)}")
    return (f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-"
            f"{raw[8:10].hex()}-{raw[10:].hex()}")


def ascii_text(data: bytes) -> str:
    """Bytes of a C string as text: trailing NULs dropped, bytes outside ASCII escaped."""
    return data.rstrip(b"\0").decode("utf-8", "backslashreplace")


def looks_utf16(data: bytes) -> bool:
    """True when the bytes read as UTF-16LE text (mostly-zero high bytes).

    An odd length is allowed: the Arch Linux systemd-boot logs of the corpus
    measure a UTF-16 command line one byte short (event 24).
    """
    if len(data) < 2:
        return False
    high = data[1::2]
    return high.count(0) * 4 >= len(high) * 3 and data[0::2].count(0) < len(high)


def utf16_text(data: bytes) -> str:
    """UTF-16LE bytes as text, stopping at the first NUL character."""
    text = data[: len(data) & ~1].decode("utf-16-le", "replace")
    cut = text.find("\0")
    return text if cut < 0 else text[:cut]


def is_printable_text(text: str) -> bool:
    return bool(text) and all(ch.isprintable() or ch in "\n\r\t" for ch in text)
