"""The depth-limited JSON reader every untrusted JSON input goes through (issue 9 item 3)."""

from __future__ import annotations

import pytest

from bootwatch.errors import ProtocolError
from bootwatch.protocol.health import decode_health_report
from bootwatch.protocol.jsonread import (
    MAX_JSON_DEPTH,
    JsonDepthError,
    check_json_depth,
    json_depth_exceeds,
    read_json,
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_counted_in_containers() -> None:
    assert not json_depth_exceeds(1, 0) and not json_depth_exceeds("x", 0)
    assert json_depth_exceeds([], 0) and not json_depth_exceeds([], 1)
    assert not json_depth_exceeds({"a": [1, {"b": []}]}, 4)
    assert json_depth_exceeds({"a": [1, {"b": []}]}, 3)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 100_000])
def test_too_deep_names_the_limit_and_the_field(depth: int) -> None:
    with pytest.raises(JsonDepthError, match=r"data: JSON nested deeper than the limit of 64"):
        read_json(_nested(depth), field="data")
    with pytest.raises(JsonDepthError):
        read_json(_nested(depth).encode())
    if depth > 1000:  # the body: unbalanced, too deep long before it is invalid
        with pytest.raises(JsonDepthError, match="limit of 64"):
            read_json("[" * depth)


def test_at_the_limit_and_flat_bodies_parse() -> None:
    assert read_json(_nested(MAX_JSON_DEPTH)) is not None
    flat = "[" + ",".join(["[]"] * 1000) + "]"  # many openers, depth 2: walked, accepted
    assert len(read_json(flat)) == 1000
    check_json_depth(read_json(flat), limit=2)


def test_other_errors_name_line_and_column() -> None:
    with pytest.raises(ProtocolError, match=r"body: invalid JSON at line 2:1"):
        read_json('{"a": 1,\n}', field="body")
    with pytest.raises(ProtocolError, match="not UTF-8 at byte 1"):
        read_json(b'"\xff"')


def test_health_reports_use_the_limit() -> None:
    body = b'{"HealthStatus": ' + _nested(200).encode() + b"}"
    with pytest.raises(ProtocolError, match="limit of 64 levels"):
        decode_health_report(body)
