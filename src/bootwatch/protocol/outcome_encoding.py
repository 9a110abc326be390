"""How an outcome event too large for the transport crosses it compressed.

Why: an outcome event may be up to ``MAX_OUTCOME_BYTES`` (2 MiB: a boot with
thousands of measured events), and a NATS server refuses a message over its
``max_payload`` (1 MiB by default).  Such an event was dropped by name (its
attestation record stayed) rather than held back.  Event JSON compresses about
5-10x, so the service's JetStream sink compresses just those events with zlib and
says so in a message header; the monitor's ingester inflates them, never past
``MAX_OUTCOME_BYTES``, before the usual decoding and checks.  Small events go as
they are: compression costs CPU on both sides and gains nothing under the limit.
"""

from __future__ import annotations

import zlib
from typing import Final

from bootwatch.errors import ProtocolError
from bootwatch.protocol.outcome import MAX_OUTCOME_BYTES

__all__ = ["ENCODING_HEADER", "ZLIB", "deflate_outcome", "inflate_outcome"]

#: the message header naming the body's encoding (absent: the event's JSON as it is)
ENCODING_HEADER: Final = "Bootwatch-Encoding"
#: the only encoding there is: a zlib stream (RFC 1950) of the event's JSON
ZLIB: Final = "zlib"


def deflate_outcome(body: bytes) -> bytes:
    """The event's encoding as a zlib stream."""
    return zlib.compress(body, 6)


def inflate_outcome(data: bytes, encoding: str) -> bytes:
    """The event's encoding back from a body in ``encoding``; :class:`ProtocolError` for
    an unknown encoding, a damaged or truncated stream, bytes after its end, or more than
    ``MAX_OUTCOME_BYTES`` once inflated (checked while inflating: a small body that would
    inflate to gigabytes never does)."""
    if encoding != ZLIB:
        raise ProtocolError(f"outcome event: {ENCODING_HEADER} {encoding[:40]!r} is not "
                            f"an encoding this monitor reads (only {ZLIB!r})")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_OUTCOME_BYTES + 1)
    except zlib.error as exc:
        raise ProtocolError(f"outcome event: the zlib body is damaged ({exc})") from None
    if len(out) > MAX_OUTCOME_BYTES or inflater.unconsumed_tail:
        raise ProtocolError(f"outcome event: inflates to more than {MAX_OUTCOME_BYTES} bytes")
    if not inflater.eof:
        raise ProtocolError("outcome event: the zlib body ends before its stream does")
    if inflater.unused_data:
        raise ProtocolError(f"outcome event: {len(inflater.unused_data)} bytes after the "
                            "end of the zlib stream")
    return out
