"""Outcome decoding with remembered events arrays (``BootEventTable``): a body carrying an
array the table remembers is decoded without parsing it, and the result is always the one
the general route gives (the same event, or the same error), whatever the body holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootwatch.errors import ProtocolError
from bootwatch.protocol.outcome import (
    BootEvent,
    BootEventTable,
    OutcomeEvent,
    Verdict,
    decode_outcome,
    encode_outcome,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _events(n: int = 30, tag: str = "a") -> tuple[BootEvent, ...]:
    return tuple(
        BootEvent(i, i % 10, "EV_EFI_BOOT_SERVICES_APPLICATION", f"{i:02x}" * 32,
                  rf"\EFI\{tag}\component-{i}.efi with a long enough description \u2026")
        for i in range(n))


def _outcome(event_id: str = "e1", events: tuple[BootEvent, ...] | None = None,
             **kw: Any) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id, time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab", 7: "cd"}, events=_events() if events is None else events,
        claims=(("x-ms-azurevm-is-windows", False),), **{"reset_count": 3, **kw})


def _general(body: bytes) -> OutcomeEvent | str:
    try:
        return decode_outcome(body)
    except ProtocolError as exc:
        return f"error: {exc}"


def _with(table: BootEventTable, body: bytes) -> OutcomeEvent | str:
    try:
        return decode_outcome(body, shared=table)
    except ProtocolError as exc:
        return f"error: {exc}"


def _warm() -> BootEventTable:
    table = BootEventTable()
    decode_outcome(encode_outcome(_outcome("warm")), shared=table)
    return table


def test_a_remembered_array_is_shared_and_decodes_as_the_general_route() -> None:
    table = _warm()
    assert len(table._arrays) == 1
    first = decode_outcome(encode_outcome(_outcome("e1")), shared=table)
    second = decode_outcome(encode_outcome(_outcome("e2", reset_count=4)), shared=table)
    assert first == _general(encode_outcome(_outcome("e1")))
    assert second == _general(encode_outcome(_outcome("e2", reset_count=4)))
    assert first.events is second.events  # the remembered decoding, not a parse
    other = encode_outcome(_outcome("e3", events=_events(tag="b")))
    assert decode_outcome(other, shared=table) == _general(other)
    assert len(table._arrays) == 2


def _body_with(members: list[tuple[str, str]]) -> bytes:
    """An encoded event's members, in this order, some replaced by raw JSON text."""
    obj = json.loads(encode_outcome(_outcome("e9")))
    raw = dict(members)
    parts = [f"{json.dumps(k)}:{raw.get(k, json.dumps(v, separators=(',', ':')))}"
             for k, v in obj.items() if k not in raw]
    parts += [f"{json.dumps(k)}:{v}" for k, v in members if k not in obj or k in raw]
    return ("{" + ",".join(parts) + "}").encode()


def _array_text() -> str:
    body = encode_outcome(_outcome("x")).decode()
    start = body.index('"events":[') + len('"events":')
    end = body.index("}]", start) + 2
    return body[start:end]


@pytest.mark.parametrize("case", [
    # a second events member after the remembered one: the last one wins in JSON
    "duplicate_after",
    # the same, its name spelled with an escape
    "duplicate_escaped",
    # the remembered array nested in a claim under a key ending in "events", before the
    # top-level member (the first '"events":[' of the body is not the top-level one)
    "nested_first",
    # the stand-in's spelling elsewhere in the body
    "stand_in_elsewhere",
    # the remembered array followed by text that makes the body invalid
    "invalid_after",
    # the remembered array where a different member is expected
    "in_reason",
])
def test_no_body_gets_the_remembered_events_unless_they_are_its_events(case: str) -> None:
    table = _warm()
    arr = _array_text()
    bodies = {
        "duplicate_after": _body_with([("events", arr), ("claims", "[]"), ("events", "[]")]),
        "duplicate_escaped": _body_with([("events", arr), ("\u0065vents", "[]")]).replace(
            b'"events":[]', b'"\\u0065vents":[]'),
        "nested_first": _body_with([("claims", '[["k",{"x\\"events":' + arr + "}]]"),
                                    ("events", "[]")]),
        "stand_in_elsewhere": _body_with([("claims", '[["k",-0e-0]]'), ("events", arr)]),
        "invalid_after": _body_with([("events", arr), ("claims", "[]")]).replace(
            arr.encode() + b",", arr.encode() + b";"),
        "in_reason": _body_with([("reason", arr), ("events", "[]")]),
    }
    body = bodies[case]
    want = _general(body)
    got = _with(table, body)
    assert got == want
    if isinstance(want, OutcomeEvent) and case != "stand_in_elsewhere":
        assert want.events != _outcome().events  # the bodies' own events, not the array


def test_an_array_with_a_nul_or_a_closing_mark_in_a_string_is_decoded_in_full() -> None:
    """An escaped NUL in a component is refused as before (it is never remembered); a
    ``}]`` inside a component ends the span early: that array is not remembered and
    every body carrying it is decoded in full, correctly."""
    table = BootEventTable()
    nul = list(_events())
    nul[3] = BootEvent(3, 3, "EV_X", "ab", "bad\x00name" + "x" * 40)
    body = json.dumps(json.loads(encode_outcome(_outcome(events=tuple(nul))))).encode()
    assert b"\\u0000" in body
    for _ in range(2):
        assert _with(table, body) == _general(body)
        assert isinstance(_general(body), str) and "NUL" in str(_general(body))
    assert not table._arrays
    closing = list(_events())
    closing[2] = BootEvent(2, 2, "EV_X", "ab", "grub: if [ x ]; then {}] fi" + "y" * 40)
    body = encode_outcome(_outcome(events=tuple(closing)))
    for _ in range(2):
        assert _with(table, body) == _general(body)
    assert not table._arrays


def test_the_remembered_arrays_are_bounded() -> None:
    table = BootEventTable(array_chars=12_000)
    for tag in "abcdef":
        decode_outcome(encode_outcome(_outcome(events=_events(tag=tag))), shared=table)
        assert sum(len(k) for k in table._arrays) <= 12_000
    assert 1 <= len(table._arrays) < 6


_SIGNIFICANT = st.text(alphabet='{}[]",:\\-0e1 aE.u', min_size=0, max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_edit_of_a_body_decodes_as_the_general_route(data: st.DataObject) -> None:
    """Random edits (JSON's marks, escapes and the stand-in's characters) anywhere in a
    body carrying a remembered array: the table's answer is the general route's."""
    table = _warm()
    body = encode_outcome(_outcome("e5")).decode()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        cut = data.draw(st.integers(0, 8))
        body = body[:at] + data.draw(_SIGNIFICANT) + body[at + cut:]
    raw = body.encode()
    assert _with(table, raw) == _general(raw)
