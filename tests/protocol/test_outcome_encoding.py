"""Compressed outcome events (``protocol.outcome_encoding``): the round trip, and every
way a body can be wrong refused with a ProtocolError that says how, without inflating
more than the outcome limit."""

from __future__ import annotations

import os
import zlib

import pytest

from bootwatch.errors import ProtocolError
from bootwatch.protocol.outcome import MAX_OUTCOME_BYTES
from bootwatch.protocol.outcome_encoding import ZLIB, deflate_outcome, inflate_outcome


def test_round_trip_and_compression() -> None:
    body = b'{"schema": 1, "claims": [' + b'["c", "yyyy"], ' * 50_000 + b"]}"
    packed = deflate_outcome(body)
    assert len(packed) * 20 < len(body)
    assert inflate_outcome(packed, ZLIB) == body
    assert inflate_outcome(deflate_outcome(b""), ZLIB) == b""


@pytest.mark.parametrize(("data", "encoding", "words"), [
    (deflate_outcome(b"{}"), "gzip", "'gzip' is not an encoding"),
    (b"not zlib at all", ZLIB, "damaged"),
    (deflate_outcome(b"{}" * 1000)[:-6], ZLIB, "ends before its stream"),
    (deflate_outcome(b"{}") + b"tail", ZLIB, "4 bytes after the end"),
])
def test_bad_bodies_are_named(data: bytes, encoding: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        inflate_outcome(data, encoding)


def test_a_bomb_is_refused_at_the_limit() -> None:
    # 64 MiB of zeros compress to about 64 KB; inflating stops one byte past the limit
    bomb = zlib.compress(bytes(64 * 1024 * 1024), 9)
    assert len(bomb) < 100_000
    with pytest.raises(ProtocolError, match=f"more than {MAX_OUTCOME_BYTES} bytes"):
        inflate_outcome(bomb, ZLIB)
    # exactly the limit is fine
    edge = deflate_outcome(os.urandom(16) + bytes(MAX_OUTCOME_BYTES - 16))
    assert len(inflate_outcome(edge, ZLIB)) == MAX_OUTCOME_BYTES
