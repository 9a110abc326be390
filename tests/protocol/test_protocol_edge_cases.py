"""Edge cases of the shared wire shapes (review fixes), each failing on the code before.

The sealed envelope's JSON is read with the shared depth-limited reader; the upgrade rule
treats a PEP 440 epoch bump as at least a major; a manifest's ``format`` and
``published_at`` are exactly what the signature covers; a health report's time survives
the monitor's conversion to UTC.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bootwatch.errors import ProtocolError
from bootwatch.protocol.envelope import decode_token_response
from bootwatch.protocol.health import decode_health_report, encode_health_report
from bootwatch.protocol.jsonread import JsonDepthError
from bootwatch.protocol.release import (
    RefusalReason,
    ReleaseManifest,
    check_upgrade,
    decode_signed_release,
    key_id,
    sign_release,
    verify_release,
)

KEY = ed25519.Ed25519PrivateKey.generate()


def _manifest(version: str = "0.2.0") -> ReleaseManifest:
    return ReleaseManifest(
        version=version, wheel=f"bootwatch-{version}-py3-none-any.whl", size=10,
        sha256=hashlib.sha256(b"w").hexdigest(),
        published_at=datetime(2026, 12, 1, 12, 0, tzinfo=UTC), key_id=key_id(KEY.public_key()),
    )


def _signed_with(**changes: object) -> bytes:
    body = json.loads(sign_release(_manifest(), KEY))
    body["manifest"].update(changes)
    return json.dumps(body).encode()


# --- envelope ------------------------------------------------------------------------


@pytest.mark.parametrize("outer", [True, False], ids=["body", "token"])
def test_a_deeply_nested_token_response_is_a_protocol_error(outer: bool) -> None:
    deep = b"[" * 100_000
    body = deep if outer else json.dumps(
        {"token": base64.urlsafe_b64encode(deep).decode().rstrip("=")}).encode()
    with pytest.raises(JsonDepthError) as err:
        decode_token_response(body)
    assert err.value.field == ("body" if outer else "token")


# --- the upgrade rule ----------------------------------------------------------------


def test_an_epoch_bump_is_not_a_minor_upgrade() -> None:
    verdict = check_upgrade("1.0.0", _manifest("1!1.0.1"))
    assert verdict.reason is RefusalReason.MAJOR
    assert check_upgrade("1.0.0", _manifest("1!1.0.1"), allow_major=True).allowed


# --- manifest strictness -------------------------------------------------------------


def test_a_float_manifest_format_is_refused() -> None:
    with pytest.raises(ProtocolError) as err:
        decode_signed_release(_signed_with(format=1.0))
    assert err.value.field == "manifest.format"


def test_an_unsigned_fraction_of_published_at_is_refused() -> None:
    # the signature covers whole seconds only: a fraction would be acted on unsigned
    body = _signed_with(published_at="2026-12-01T12:00:00.999999Z")
    with pytest.raises(ProtocolError) as err:
        verify_release(decode_signed_release(body), (KEY.public_key(),))
    assert err.value.field == "manifest.published_at"


# --- health reports ------------------------------------------------------------------


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_report_time_outside_the_utc_range_is_a_protocol_error(when: str) -> None:
    body = {"ReportId": "r1", "VmId": "vm1", "HealthStatus": "Unhealthy", "Time": when,
            "AgentVersion": "0.1.0"}
    try:
        report = decode_health_report(json.dumps(body).encode())
    except ProtocolError as exc:
        assert "'Time'" in str(exc)
    else:
        # a decoded report must re-encode (the round trip the monitor relies on)
        encode_health_report(report)


@pytest.mark.parametrize("status", ["Healthy", "Unhealthy", "PlatformError"])
def test_a_failed_target_comes_only_with_a_failed_hop(status: str) -> None:
    # HealthReport: failed_target is set only with a PlatformError whose network step failed
    body = {"ReportId": "r1", "VmId": "vm1", "HealthStatus": status,
            "Time": "2026-12-01T12:00:00Z", "AgentVersion": "0.1.0",
            "AttestationToken": "a.b.c" if status == "Healthy" else None,
            "FailedTarget": "https://attest.example:443"}
    with pytest.raises(ProtocolError, match="'FailedTarget'"):
        decode_health_report(json.dumps(body).encode())
    body.update(HealthStatus="PlatformError", AttestationToken=None, FailedHop="tls")
    assert decode_health_report(json.dumps(body).encode()).failed_target.endswith(":443")


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_published_at_outside_the_utc_range_names_the_field(when: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_signed_release(_signed_with(published_at=when))
    assert err.value.field == "manifest.published_at"
