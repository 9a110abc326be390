"""The real Trusted Launch request (shared/corpus/maa/azure-guest-vm-derived) verifies.

Every check passes, aik_certificate included, with the built-in
``azure-trusted-launch`` anchors (its issuer 'Global Virtual TPM CA - 01' is pinned
there); without anchors only aik_certificate fails.  The leaf expired on
2025-10-30, so the time is pinned inside its validity.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootwatch.attest.evidence import Check, verify_evidence
from bootwatch.protocol.azureguest import decode_request
from bootwatch.tpm.aik import RevokedAikCertificates, TrustAnchors
from bootwatch.tpm.builtin_anchors import (
    AZURE_TRUSTED_LAUNCH,
    anchor_expiry_notes,
    builtin_anchors,
)

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
DERIVED = SHARED / "corpus/maa/azure-guest-vm-derived"
EXPECTED = json.loads((DERIVED / "expected.json").read_text())
REQUEST = decode_request((DERIVED / "attestation-info.json").read_bytes())
IN_VALIDITY = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_every_check_passes_with_the_builtin_azure_anchors() -> None:
    anchors = builtin_anchors(AZURE_TRUSTED_LAUNCH)
    v = verify_evidence(REQUEST, trust_anchors=anchors, at=IN_VALIDITY)
    assert v.passed and not v.failed
    assert v.verified_aik_chain is not None
    assert [s.split(",")[0] for s in v.verified_aik_chain.subjects] == [
        "CN=3098098a126b.TrustedVM.Azure.Microsoft", "CN=Global Virtual TPM CA - 01",
        "CN=Azure Virtual TPM Root Certificate Authority 2023"]


def test_a_revoked_azure_aik_certificate_is_refused() -> None:
    leaf = x509.load_der_x509_certificate((DERIVED / "aik-cert.der").read_bytes())
    revoked = RevokedAikCertificates({(leaf.issuer.public_bytes(), leaf.serial_number):
                                      "key compromise"})
    v = verify_evidence(REQUEST, trust_anchors=builtin_anchors(), at=IN_VALIDITY,
                        revoked_aik=revoked)
    c = v.check("aik_certificate")
    assert (c.passed, c.reason_code) == (False, "aik_cert_revoked")
    assert "key compromise" in c.reason


def _at(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


def test_intermediate_expiry_is_noted_ahead_and_after() -> None:
    """Without its successor in the set, CA - 01's end is said ahead and after."""
    ca = SHARED / "corpus/maa/azure-vtpm-ca"
    anchors = TrustAnchors.from_pem([(ca / "azure-virtual-tpm-root-ca-2023.pem").read_bytes(),
                                     (ca / "global-virtual-tpm-ca-01.pem").read_bytes()])
    assert anchor_expiry_notes(anchors, IN_VALIDITY) == ()
    ahead = anchor_expiry_notes(anchors, _at(2025, 9, 1))
    assert len(ahead) == 1 and "Global Virtual TPM CA - 01 expires on 2025-11-03" in ahead[0]
    after = anchor_expiry_notes(anchors, _at(2025, 12, 1))
    assert len(after) == 1 and "CA - 01 expired on 2025-11-03" in after[0]


def test_a_superseded_intermediate_is_not_warned_about() -> None:
    """Found in review: every start warned that CA - 01 had expired and asked for its
    successor, which the built-in set holds (CA - 03, valid to 2027-04-24).  Only an
    intermediate without a valid successor is said, and then all that lack one."""
    anchors = builtin_anchors()
    assert anchor_expiry_notes(anchors, _at(2025, 9, 1)) == ()
    assert anchor_expiry_notes(anchors, _at(2026, 12, 3)) == ()
    ahead = anchor_expiry_notes(anchors, _at(2027, 2, 15))
    assert len(ahead) == 1 and "Global Virtual TPM CA - 03 expires on 2027-04-24" in ahead[0]
    after = anchor_expiry_notes(anchors, _at(2027, 5, 1))
    assert sorted(n.split(" expired")[0] for n in after) == [
        "trust anchor CN=Global Virtual TPM CA - 01", "trust anchor CN=Global Virtual TPM CA - 03"]


def test_every_check_but_aik_certificate_passes_without_anchors() -> None:
    v = verify_evidence(REQUEST, trust_anchors=None, at=IN_VALIDITY)
    assert [c.name for c in v.checks] == [c.value for c in Check]
    assert [c.name for c in v.failed] == ["aik_certificate"]
    assert v.check("aik_certificate").reason_code == "no_trust_anchors"
    for c in v.checks[:-1]:
        assert c.reason_code == "ok" and c.reason


def test_verified_values_match_the_corpus_expectations() -> None:
    v = verify_evidence(REQUEST, trust_anchors=None, at=IN_VALIDITY)
    assert v.verified_pcrs is not None
    assert {str(k): d.hex() for k, d in v.verified_pcrs.items()} == EXPECTED["pcrs_sha256"]
    assert v.unverified_replayed_pcrs == v.verified_pcrs
    q = EXPECTED["pcr_quote"]
    assert v.verified_clock is not None
    assert (v.verified_clock.clock, v.verified_reset_count, v.verified_restart_count) == (
        q["clock"], q["resetCount"], q["restartCount"])
    assert v.verified_firmware_version == int(q["firmwareVersion"], 16)
    assert v.verified_enc_key is not None
    assert v.verified_enc_key.name.hex() == EXPECTED["enckey_pub"]["name"]
    assert v.verified_aik_pub is not None
    assert v.verified_aik_pub.name.hex() == EXPECTED["aik_pub"]["name"]
    assert v.verified_event_log is not None and v.verified_replay is not None
    assert len(v.verified_event_log.events) == EXPECTED["tcg_log"]["records_including_header"]
    assert v.verified_aik_chain is None


def test_untrusted_issuer_with_an_unrelated_anchor() -> None:
    # The leaf itself as an "anchor" is not its issuer: the chain cannot be built.
    leaf = x509.load_der_x509_certificate((DERIVED / "aik-cert.der").read_bytes())
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    v = verify_evidence(REQUEST, trust_anchors=TrustAnchors.from_pem([pem]), at=IN_VALIDITY)
    c = v.check("aik_certificate")
    assert (c.passed, c.reason_code) == (False, "aik_cert_untrusted")
    assert "Global Virtual TPM CA - 01" in c.reason


def test_expired_leaf_after_2025_10_30() -> None:
    v = verify_evidence(REQUEST, trust_anchors=None, at=dt.datetime(2025, 11, 1, tzinfo=dt.UTC))
    c = v.check("aik_certificate")
    assert c.reason_code == "aik_cert_expired" and "2025-10-30" in c.reason
    assert [x.name for x in v.failed] == ["aik_certificate"]


def test_nonce_is_empty_for_azure_guest() -> None:
    v = verify_evidence(REQUEST, trust_anchors=None, at=IN_VALIDITY, expected_nonce=b"\x01")
    assert v.check("quote_nonce").reason_code == "nonce_mismatch"
    assert v.verified_pcrs is None and v.verified_event_log is None


def test_a_log_seen_before_is_reused_but_still_compared_with_each_quote() -> None:
    import hashlib
    from dataclasses import replace

    from bootwatch.attest.caches import VerifierCaches

    caches = VerifierCaches()
    first = verify_evidence(REQUEST, trust_anchors=None, at=IN_VALIDITY, caches=caches)
    again = verify_evidence(REQUEST, trust_anchors=None, at=IN_VALIDITY, caches=caches)
    assert again.verified_event_log is first.verified_event_log  # kept per log digest
    assert caches.logs.ordered_keys() == [first.event_log_sha256]
    # without the caller's caches nothing is kept (the module holds no state)
    fresh = verify_evidence(REQUEST, trust_anchors=None, at=IN_VALIDITY)
    assert fresh.verified_event_log is not first.verified_event_log
    assert fresh.checks == first.checks
    assert first.event_log_sha256 == hashlib.sha256(REQUEST.tcg_logs).digest()
    assert again.checks == first.checks
    # the memoised replay is shared: read-only
    assert first.verified_replay is not None
    bank = first.verified_replay.pcrs[0x000B]
    with pytest.raises(TypeError):
        bank[0] = b"x"  # type: ignore[index]
    # same (memoised) log, other reported PCR 0: the comparison runs again and fails
    pcrs = tuple((i, bytes(32) if i == 0 else d) for i, d in REQUEST.tpm_info.pcrs)
    forged = replace(REQUEST, tpm_info=replace(REQUEST.tpm_info, pcrs=pcrs))
    v = verify_evidence(forged, trust_anchors=None, at=IN_VALIDITY)
    assert v.check("pcr_digest").reason_code == "pcr_digest_mismatch"
    assert v.check("log_replay").reason_code == "log_pcr_mismatch"
    assert "PCR 0" in v.check("log_replay").reason
    # a log that does not frame is never memoised: the same error every time
    broken = replace(REQUEST, tcg_logs=REQUEST.tcg_logs[:100])
    for _ in range(2):
        assert verify_evidence(broken, trust_anchors=None,
                               at=IN_VALIDITY).check("log_replay").reason_code == "log_malformed"
