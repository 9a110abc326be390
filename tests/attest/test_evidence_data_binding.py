"""Event data must be bound to its measured digest before any fact is read from it.

Built from the real Azure Trusted Launch request: the reported and quoted PCRs stay
genuine, only bytes of event *data* change, so every check but ``log_replay`` (and the
expired-chain ``aik_certificate``) still passes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

from bootwatch.attest.evidence import verify_evidence
from bootwatch.eventlog import EventType, parse_log
from bootwatch.protocol.azureguest import decode_request
from bootwatch.tpm.aik import TrustAnchors

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
REQUEST = decode_request(
    (SHARED / "corpus/maa/azure-guest-vm-derived/attestation-info.json").read_bytes()
)
AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _verify(log: bytes) -> dict[str, tuple[bool, str, str]]:
    v = verify_evidence(dataclasses.replace(REQUEST, tcg_logs=log),
                        trust_anchors=TrustAnchors(()), at=AT)
    return {c.name: (c.passed, c.reason_code, c.reason) for c in v.checks}


def _flip_data_byte(event_type: int, pcr: int) -> tuple[bytes, int]:
    """Flip the last data byte of the first event of that type in that PCR."""
    log = parse_log(REQUEST.tcg_logs)
    event = next(e for e in log.events if e.event_type == event_type and e.pcr == pcr)
    raw = bytearray(REQUEST.tcg_logs)
    end = REQUEST.tcg_logs.index(event.data, event.offset) + len(event.data)
    raw[end - 1] ^= 0x01
    return bytes(raw), event.index


def test_genuine_log_passes() -> None:
    checks = _verify(REQUEST.tcg_logs)
    assert checks["log_replay"][0], checks["log_replay"]


def test_rewritten_secureboot_variable_is_refused() -> None:
    log, index = _flip_data_byte(int(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG), 7)
    checks = _verify(log)
    passed, code, reason = checks["log_replay"]
    assert not passed
    assert code == "log_data_digest_mismatch"
    assert f"event {index} in PCR 7" in reason
    # the PCRs themselves are untouched: the quote still matches them
    assert checks["pcr_digest"][0] and checks["quote_signature"][0]


def test_rewritten_sipa_record_is_refused() -> None:
    log, index = _flip_data_byte(int(EventType.EV_EVENT_TAG), 12)
    passed, code, reason = _verify(log)["log_replay"]
    assert not passed
    assert code == "log_data_digest_mismatch"
    assert f"event {index} in PCR 12" in reason
    assert "SIPA" in reason


def test_events_claim_keeps_only_the_given_pcrs() -> None:
    from bootwatch.eventlog.decode import events_claim

    log = parse_log(REQUEST.tcg_logs)
    every = events_claim(log)["Events"]
    boot_only = events_claim(log, pcrs=range(8))["Events"]
    assert isinstance(every, list) and isinstance(boot_only, list)
    assert {e["PcrIndex"] for e in boot_only} == set(range(8))
    assert len(boot_only) == sum(1 for e in log.events if e.pcr < 8) < len(every)
