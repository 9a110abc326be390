"""What the service encodes, a separate monitor always decodes.

An audit found the service permitted a boot measuring 4,200 events into its quoted PCRs,
encoded all of them, and a standalone monitor refused the outcome (at most 4,096 events):
the relay dropped it as poison and the VM stayed healthy on its old boot.  The pipeline
now refuses such boots (tests/monitor/test_outcome_event_limit.py, end to end), and
``encode_outcome`` keeps every outcome within the decoder's limits whatever it is given:
long texts clipped and marked, oversized events left out with the reason saying so.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bootwatch.protocol.outcome import (
    MAX_OUTCOME_BYTES,
    MAX_OUTCOME_EVENTS,
    MAX_OUTCOME_TEXT,
    BootEvent,
    OutcomeEvent,
    RevokedItem,
    Verdict,
    decode_outcome,
    encode_outcome,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _events(n: int, component: str = "grub_cmd: echo") -> tuple[BootEvent, ...]:
    return tuple(BootEvent(i, 9, "EV_IPL", f"{i % 256:02x}" * 32, component) for i in range(n))


def _outcome(**kw: object) -> OutcomeEvent:
    base: dict[str, object] = {
        "event_id": "e1", "time": NOW, "provider": "shared", "attestation_type": "AzureGuest",
        "verdict": Verdict.PERMIT, "reason": "", "policy_hash": "h", "vm_id": "VM-1",
        "pcrs": {9: "ab" * 32}, "events": _events(10),
        "claims": (("x-ms-azurevm-is-windows", False),)}
    base.update(kw)
    return OutcomeEvent(**base)  # type: ignore[arg-type]


def test_an_outcome_within_the_limits_is_encoded_as_it_is() -> None:
    event = _outcome()
    assert decode_outcome(encode_outcome(event)) == event


def test_more_events_than_the_decoder_takes_are_left_out_and_said() -> None:
    revoked = (RevokedItem(3, r"\EFI\bad.efi", "cd" * 32, "revoked by DBX"),)
    event = _outcome(events=_events(MAX_OUTCOME_EVENTS + 1), revoked=revoked)
    got = decode_outcome(encode_outcome(event))
    assert got.events == () and got.claims == ()
    assert got.revoked == revoked  # a revoked component still raises its alert
    assert got.pcrs == event.pcrs and got.verdict is Verdict.PERMIT
    assert f"{MAX_OUTCOME_EVENTS + 1} events" in got.reason and "left out" in got.reason


def test_an_outcome_over_the_byte_limit_is_left_without_its_events() -> None:
    long = "x" * 600  # within the event count, over the size: 4,000 x ~700 bytes
    event = _outcome(events=_events(MAX_OUTCOME_EVENTS - 96, component=long))
    got = decode_outcome(encode_outcome(event))
    assert got.events == () and "bytes encoded" in got.reason
    assert len(encode_outcome(event)) <= MAX_OUTCOME_BYTES


def test_long_reason_and_rule_are_clipped_and_marked() -> None:
    event = _outcome(verdict=Verdict.DENY, reason="r" * 10_000, deciding_rule="c" * 9_000)
    got = decode_outcome(encode_outcome(event))
    assert len(got.reason) == MAX_OUTCOME_TEXT and got.reason.endswith("…")
    assert got.deciding_rule is not None and got.deciding_rule.endswith("…")
    assert len(got.deciding_rule) == MAX_OUTCOME_TEXT
    assert got.events == event.events  # nothing else changed
