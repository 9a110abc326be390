"""Forged AzureGuest evidence: every forgery is rejected by its own check with its own reason.

Evidence is rebuilt from the real Trusted Launch request with software keys
(``cryptography``) standing in for the vTPM's AIK and ephemeral key, and our
own marshalling of TPMS_ATTEST / TPMT_PUBLIC.  The unmodified forgery passes
every check (a CA we create issues its AIK certificate); each case changes
one thing.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from bootwatch.attest.evidence import EvidenceVerification, verify_evidence
from bootwatch.errors import ProtocolError
from bootwatch.eventlog import parse_log
from bootwatch.protocol.azureguest import decode_request, encode_request
from bootwatch.tpm.aik import TrustAnchors
from bootwatch.tpm.attest import (
    CertifyInfo,
    ClockInfo,
    QuoteInfo,
    marshal_tpms_attest,
    parse_tpms_attest,
)
from bootwatch.tpm.constants import TPM_GENERATED_VALUE, ObjectAttributes, TpmAlg, TpmSt
from bootwatch.tpm.constants import digest as tpm_digest
from bootwatch.tpm.marshal import tpm2b
from bootwatch.tpm.pcr import PcrSelection, policy_pcr_digest
from bootwatch.tpm.public import RsaParms, Scheme, SymDefObject, marshal_tpmt_public

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
DERIVED = SHARED / "corpus/maa/azure-guest-vm-derived"
REAL = decode_request((DERIVED / "attestation-info.json").read_bytes())
REAL_QUOTE = parse_tpms_attest(REAL.tpm_info.pcr_quote)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

AIK_ATTRS = 0x00050472  # as Azure's AIK: fixedTPM|fixedParent|sDO|userWithAuth|noDA|restricted|sign
ENC_ATTRS = 0x00020432  # as Azure's ephemeral key: fixedTPM|fixedParent|sDO|noDA|decrypt


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


AIK = _rsa()
OTHER = _rsa()
ENC = _rsa()


def _tpmt_rsa(key: rsa.RSAPrivateKey, attrs: int, policy: bytes, scheme: Scheme) -> bytes:
    n = key.public_key().public_numbers().n.to_bytes(256, "big")
    return marshal_tpmt_public(
        key_type=TpmAlg.RSA, name_alg=TpmAlg.SHA256, object_attributes=attrs, auth_policy=policy,
        parameters=RsaParms(SymDefObject(TpmAlg.NULL), scheme, 2048, 0), unique=n)


def _name(tpmt: bytes) -> bytes:
    return TpmAlg.SHA256.to_bytes(2, "big") + tpm_digest(TpmAlg.SHA256, tpmt)


def _sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: tuple[str, rsa.RSAPrivateKey] | None, *,
          ca: bool, eku: bool = True, not_after: dt.datetime | None = None) -> x509.Certificate:
    iss_name, iss_key = issuer if issuer else (subject, key)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, iss_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
         .not_valid_after(not_after or dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), critical=True)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.3")]),
                                critical=False)
    return b.sign(iss_key, hashes.SHA256())


CA_KEY, ROGUE_KEY = _rsa(), _rsa()
CA = _cert("Test vTPM CA", CA_KEY, None, ca=True)
ROGUE_CA = _cert("Test vTPM CA", ROGUE_KEY, None, ca=True)  # same name, other key
ANCHORS = TrustAnchors((CA,))


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


AIK_CERT = _der(_cert("vm AIK", AIK, ("Test vTPM CA", CA_KEY), ca=False))
REAL_PCRS = dict(REAL.tpm_info.pcrs)
REAL_SEL = REAL_QUOTE.quote.pcr_selections  # type: ignore[union-attr]


def forge(
    *,
    pcrs: dict[int, bytes] | None = None,
    reported: dict[int, bytes] | None = None,
    selection: tuple[PcrSelection, ...] | None = None,
    log: bytes | None = None,
    quote_type: int = TpmSt.ATTEST_QUOTE,
    magic: int = TPM_GENERATED_VALUE,
    extra: bytes = b"",
    quote_bytes: bytes | None = None,
    quote_signer: rsa.RSAPrivateKey = AIK,
    aik_attrs: int = AIK_ATTRS,
    aik_pub: bytes | None = None,
    enc_attrs: int = ENC_ATTRS,
    enc_policy: bytes | None = None,
    enc_pub: bytes | None = None,
    certified_name: bytes | None = None,
    certify_bytes: bytes | None = None,
    certify_signer: rsa.RSAPrivateKey = AIK,
    aik_cert: bytes | None = AIK_CERT,
):  # type: ignore[no-untyped-def]
    """A consistent AzureGuest request from software keys, with one thing changed."""
    pcrs = dict(REAL_PCRS if pcrs is None else pcrs)
    sel = REAL_SEL if selection is None else selection
    values = b"".join(pcrs[p] for s in sel for p in s.pcrs)
    clock = REAL_QUOTE.clock_info
    fw = REAL_QUOTE.firmware_version
    signer = REAL_QUOTE.qualified_signer
    quote = quote_bytes if quote_bytes is not None else marshal_tpms_attest(
        magic=magic, attest_type=quote_type, qualified_signer=signer, extra_data=extra,
        clock_info=clock, firmware_version=fw,
        attested=QuoteInfo(sel, tpm_digest(TpmAlg.SHA256, values)))
    aik_tpmt = _tpmt_rsa(AIK, aik_attrs, b"", Scheme(TpmAlg.RSASSA, TpmAlg.SHA256))
    policy = enc_policy if enc_policy is not None else policy_pcr_digest(
        sel, {TpmAlg.SHA256: pcrs}, policy_hash_alg=TpmAlg.SHA256)
    enc_tpmt = _tpmt_rsa(ENC, enc_attrs, policy, Scheme(TpmAlg.NULL))
    certify = certify_bytes if certify_bytes is not None else marshal_tpms_attest(
        magic=TPM_GENERATED_VALUE, attest_type=TpmSt.ATTEST_CERTIFY, qualified_signer=signer,
        extra_data=b"", clock_info=ClockInfo(clock.clock + 85, clock.reset_count,
                                             clock.restart_count, clock.safe),
        firmware_version=fw,
        attested=CertifyInfo(certified_name or _name(enc_tpmt), _name(enc_tpmt)))
    rep = pcrs if reported is None else reported
    ti = replace(
        REAL.tpm_info,
        aik_cert=aik_cert,
        aik_pub=aik_pub if aik_pub is not None else tpm2b(aik_tpmt),
        pcr_quote=quote,
        pcr_signature=_sign(quote_signer, quote),
        enc_key_pub=enc_pub if enc_pub is not None else tpm2b(enc_tpmt),
        enc_key_certify_info=certify,
        enc_key_certify_info_signature=_sign(certify_signer, certify),
        pcr_set=tuple(sorted(rep)),
        pcrs=tuple(sorted(rep.items())),
    )
    req = replace(REAL, tpm_info=ti, tcg_logs=REAL.tcg_logs if log is None else log)
    # Every forgery goes over the wire once: what the service sees is what we test.
    return decode_request(encode_request(req))


def verify(req, **kw) -> EvidenceVerification:  # type: ignore[no-untyped-def]
    kw.setdefault("trust_anchors", ANCHORS)
    kw.setdefault("at", NOW)
    return verify_evidence(req, **kw)


def first_failure(v: EvidenceVerification) -> tuple[str, str]:
    """The first failed check (checks run in dependency order), skipping 'not checked' ones."""
    failed = [(c.name, c.reason_code) for c in v.checks
              if not c.passed and c.reason_code != "prerequisite_failed"]
    assert failed
    return failed[0]


def test_unmodified_forgery_passes_every_check() -> None:
    v = verify(forge())
    assert v.passed, v.failed
    assert v.verified_pcrs == REAL_PCRS
    assert v.verified_enc_key is not None and v.verified_aik_chain is not None
    assert v.verified_reset_count == 3 and v.verified_restart_count == 0


def _log_with_flipped_digest() -> bytes:
    log = parse_log(REAL.tcg_logs)
    ev = next(e for e in log.events if e.pcr == 7 and TpmAlg.SHA256 in e.digests)
    d = ev.digests[TpmAlg.SHA256]
    raw = REAL.tcg_logs
    at = raw.index(d, ev.offset)
    return raw[:at] + bytes([d[0] ^ 1]) + raw[at + 1:]


_ALT_PCRS = {**REAL_PCRS, 0: bytes(32)}
_WITH_23 = {**REAL_PCRS, 23: b"\x17" * 32}
_SEL_23 = (PcrSelection(TpmAlg.SHA256, (*REAL_SEL[0].pcrs, 23), 3),)
_OTHER_TPMT = _tpmt_rsa(OTHER, ENC_ATTRS, b"\x00" * 32, Scheme(TpmAlg.NULL))
_CERTIFY_AS_QUOTE = marshal_tpms_attest(
    magic=TPM_GENERATED_VALUE, attest_type=TpmSt.ATTEST_CERTIFY,
    qualified_signer=REAL_QUOTE.qualified_signer, extra_data=b"",
    clock_info=REAL_QUOTE.clock_info, firmware_version=REAL_QUOTE.firmware_version,
    attested=CertifyInfo(b"\x00\x0b" + bytes(32), b"\x00\x0b" + bytes(32)))
_POLICY_0_7 = policy_pcr_digest((PcrSelection(TpmAlg.SHA256, tuple(range(8))),),
                                {TpmAlg.SHA256: REAL_PCRS}, policy_hash_alg=TpmAlg.SHA256)


@pytest.mark.parametrize(
    ("kwargs", "verify_kw", "check", "code"),
    [
        ({"quote_signer": OTHER}, {}, "quote_signature", "signature_invalid"),
        ({"aik_attrs": AIK_ATTRS & ~ObjectAttributes.RESTRICTED}, {}, "quote_signature",
         "aik_not_restricted_signing"),
        ({"reported": _ALT_PCRS}, {}, "pcr_digest", "pcr_digest_mismatch"),
        ({"log": _log_with_flipped_digest()}, {}, "log_replay", "log_pcr_mismatch"),
        ({"log": REAL.tcg_logs[:100]}, {}, "log_replay", "log_malformed"),
        ({"pcrs": _WITH_23, "selection": _SEL_23}, {}, "log_replay", "log_pcr_not_covered"),
        ({"certified_name": _name(_OTHER_TPMT)}, {}, "enc_key_certified",
         "certify_name_mismatch"),
        ({"certify_signer": OTHER}, {}, "enc_key_certified", "certify_signature_invalid"),
        ({"enc_policy": b""}, {}, "enc_key_pcr_policy", "enc_key_no_policy"),
        ({"enc_policy": _POLICY_0_7}, {}, "enc_key_pcr_policy", "enc_key_policy_mismatch"),
        ({"enc_attrs": ENC_ATTRS | ObjectAttributes.SIGN_ENCRYPT}, {}, "enc_key_attributes",
         "enc_key_sign_allowed"),
        ({"enc_attrs": ENC_ATTRS | ObjectAttributes.USER_WITH_AUTH}, {}, "enc_key_attributes",
         "enc_key_attribute_forbidden"),
        ({"enc_attrs": ENC_ATTRS & ~ObjectAttributes.FIXED_TPM}, {}, "enc_key_attributes",
         "enc_key_attribute_missing"),
        ({"aik_cert": _der(_cert("vm AIK", OTHER, ("Test vTPM CA", CA_KEY), ca=False))}, {},
         "aik_certificate", "aik_cert_key_mismatch"),
        ({"aik_cert": _der(_cert("vm AIK", AIK, ("Test vTPM CA", ROGUE_KEY), ca=False))}, {},
         "aik_certificate", "aik_cert_untrusted"),
        ({"aik_cert": _der(_cert("vm AIK", AIK, ("Test vTPM CA", CA_KEY), ca=False,
                                 not_after=dt.datetime(2025, 10, 30, tzinfo=dt.UTC)))}, {},
         "aik_certificate", "aik_cert_expired"),
        ({}, {"at": dt.datetime(2024, 6, 1, tzinfo=dt.UTC)}, "aik_certificate",
         "aik_cert_not_yet_valid"),
        ({"aik_cert": _der(_cert("vm AIK", AIK, ("Test vTPM CA", CA_KEY), ca=False,
                                 eku=False))}, {"trust_anchors": TrustAnchors(())},
         "aik_certificate", "no_trust_anchors"),
        ({"aik_cert": None}, {}, "aik_certificate", "aik_cert_missing"),
        ({"aik_cert": b"\x30\x03\x02\x01\x01"}, {}, "aik_certificate", "aik_cert_malformed"),
        ({"extra": b"replayed-nonce"}, {}, "quote_nonce", "nonce_mismatch"),
        ({}, {"expected_nonce": b"fresh"}, "quote_nonce", "nonce_mismatch"),
        ({"magic": 0xFF544346}, {}, "quote_structure", "quote_bad_magic"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_forgery_rejected_with_its_reason(kwargs: dict, verify_kw: dict, check: str,
                                          code: str) -> None:
    v = verify(forge(**kwargs), **verify_kw)
    assert first_failure(v) == (check, code)
    assert not v.passed


def test_certify_passed_as_quote_is_a_structure_failure() -> None:
    # A genuine AIK signature over a certify: the signature holds, the structure does not.
    v = verify(forge(quote_bytes=_CERTIFY_AS_QUOTE))
    assert v.check("quote_signature").passed
    assert v.check("quote_structure").reason_code == "quote_wrong_type"
    assert v.verified_pcrs is None and v.verified_event_log is None
    assert v.verified_enc_key is None  # its policy can no longer be tied to verified PCRs
    assert v.check("enc_key_pcr_policy").reason_code == "prerequisite_failed"


def test_the_real_certify_signature_cannot_stand_in_for_the_quote() -> None:
    ti = replace(REAL.tpm_info, pcr_quote=REAL.tpm_info.enc_key_certify_info,
                 pcr_signature=REAL.tpm_info.enc_key_certify_info_signature)
    v = verify(replace(REAL, tpm_info=ti), at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert v.check("quote_signature").passed
    assert v.check("quote_structure").reason_code == "quote_wrong_type"


def test_truncated_quote() -> None:
    q = forge().tpm_info.pcr_quote
    v = verify(forge(quote_bytes=q[:-5]))
    assert first_failure(v) == ("quote_structure", "quote_malformed")
    assert "truncated" in v.check("quote_structure").reason
    assert "byte offset" in v.check("quote_structure").reason


def test_quote_with_trailing_bytes() -> None:
    q = forge().tpm_info.pcr_quote
    v = verify(forge(quote_bytes=q + b"\x00" * 7))
    assert v.check("quote_structure").reason_code == "quote_malformed"
    assert "trailing" in v.check("quote_structure").reason


def test_oversized_quote_refused_on_the_wire() -> None:
    req = forge()
    big = replace(req, tpm_info=replace(req.tpm_info, pcr_quote=b"\x00" * 5000))
    with pytest.raises(ProtocolError) as exc:
        decode_request(encode_request(big))
    assert exc.value.field == "AttestationInfo.TpmInfo.PcrQuote"


def test_truncated_aik_pub() -> None:
    good = forge().tpm_info.aik_pub
    v = verify(forge(aik_pub=good[:-10]))
    assert v.check("quote_signature").reason_code == "aik_pub_malformed"
    assert "TPM2B_PUBLIC" in v.check("quote_signature").reason
    assert v.check("enc_key_certified").reason_code == "prerequisite_failed"


def test_truncated_enc_key_and_certify() -> None:
    good = forge()
    v = verify(forge(enc_pub=good.tpm_info.enc_key_pub[:50]))
    assert {v.check(n).reason_code for n in ("enc_key_certified", "enc_key_attributes",
                                              "enc_key_pcr_policy")} == {"enc_key_malformed"}
    v = verify(forge(certify_bytes=good.tpm_info.enc_key_certify_info[:-3]))
    assert first_failure(v) == ("enc_key_certified", "certify_malformed")


def test_aik_pub_as_read_public_response() -> None:
    good = forge()
    pub = good.tpm_info.aik_pub
    tpmt = pub[2:]
    name = _name(tpmt)
    v = verify(forge(aik_pub=pub + tpm2b(name) + tpm2b(b"\x00\x0b" + bytes(32))))
    assert v.passed, v.failed
    v = verify(forge(aik_pub=pub + tpm2b(_name(_OTHER_TPMT)) + tpm2b(b"\x00\x0b" + bytes(32))))
    assert v.check("quote_signature").reason_code == "aik_pub_malformed"


def test_pcr_set_and_selection_mismatch() -> None:
    req = forge()
    ti = replace(req.tpm_info, pcr_set=req.tpm_info.pcr_set[:-1])
    v = verify(replace(req, tpm_info=ti))
    assert v.check("pcr_digest").reason_code == "pcr_set_mismatch"
    sha1 = (PcrSelection(TpmAlg.SHA1, REAL_SEL[0].pcrs, 3),)
    v = verify(forge(selection=sha1, enc_policy=bytes(32)))
    assert v.check("pcr_digest").reason_code == "pcr_selection_mismatch"


def test_reasons_are_distinct_per_forgery() -> None:
    codes = [c for *_, c in test_forgery_rejected_with_its_reason.pytestmark[0].args[1]]
    dupes = {c for c in codes if codes.count(c) > 1}
    assert dupes == {"nonce_mismatch"}  # the same forgery seen two ways


def test_json_wire_form_of_forgery_is_standard_base64() -> None:
    inner = base64.urlsafe_b64decode(json.loads(encode_request(forge()))["AttestationInfo"]
                                     + "==")
    assert b'"AttestationProtocolVersion" : "2.0"' in inner


def test_memoised_aik_results_still_decide_each_request() -> None:
    """The AIK public area, the AIK certificate and its verified signature link are
    memoised per exact bytes; every request is still judged on its own."""
    good = forge()
    assert verify(good).passed  # fills the memos
    # same AIK certificate and key: the validity time is checked on every call
    v = verify(good, at=dt.datetime(2024, 6, 1, tzinfo=dt.UTC))
    assert first_failure(v) == ("aik_certificate", "aik_cert_not_yet_valid")
    v = verify(good, at=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert first_failure(v) == ("aik_certificate", "aik_cert_expired")
    # an anchor with the issuer's name but another key: the link is verified anew
    v = verify(good, trust_anchors=TrustAnchors((ROGUE_CA,)))
    assert first_failure(v) == ("aik_certificate", "aik_cert_untrusted")
    # same (memoised) AikPub, quote signed by another key
    v = verify(forge(quote_signer=OTHER))
    assert first_failure(v) == ("quote_signature", "signature_invalid")
    assert verify(good).passed


# --- issue 9 item 6: digests of the banks the quote does not cover ---------------------

_DATA_BOUND = {"EV_EFI_VARIABLE_DRIVER_CONFIG", "EV_SEPARATOR", "EV_EFI_VARIABLE_AUTHORITY"}


def _log_with_flipped_bank_digest(alg: TpmAlg) -> tuple[bytes, int]:
    """The real log with one data-bound PCR 7 event's ``alg`` digest altered (one bit)."""
    from bootwatch.eventlog.model import event_type_name

    log = parse_log(REAL.tcg_logs)
    ev = next(e for e in log.events if e.pcr == 7 and alg in e.digests
              and event_type_name(e.event_type) in _DATA_BOUND)
    d = ev.digests[alg]
    raw = REAL.tcg_logs
    at = raw.index(d, ev.offset)
    return raw[:at] + bytes([d[-1] ^ 1]) + raw[at + 1:], ev.index


@pytest.mark.parametrize("alg", [TpmAlg.SHA1, TpmAlg.SHA384], ids=["sha1", "sha384"])
def test_forged_digest_in_an_unquoted_bank_is_refused(alg: TpmAlg) -> None:
    """Only SHA-256 is quoted and replayed, yet a data-bound event whose SHA-1 or SHA-384
    digest is not the hash of its data fails log_replay, as ``bootwatch log replay``
    reports it (digest_mismatch): no bank the log carries disagrees with the data."""
    log, index = _log_with_flipped_bank_digest(alg)
    v = verify(forge(log=log))
    assert first_failure(v) == ("log_replay", "log_data_digest_mismatch")
    reason = v.check("log_replay").reason
    assert f"event {index} in PCR 7" in reason and alg.name.lower() in reason
    assert v.verified_event_log is None and v.verified_replay is None


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_pcr_set_order_does_not_matter(order: str) -> None:
    """Decision (docs/attestation.md): PcrSet and PCRs are sets.  The quote's PCR
    selection is a bitmap, so their order carries no information; a reordered request
    verifies exactly as the ascending one, and everything derived from it is ascending.
    Duplicates, which would be ambiguous, are refused by the decoder."""
    req = forge()
    pcr_set = tuple(reversed(req.tpm_info.pcr_set))
    pcrs = tuple(reversed(req.tpm_info.pcrs))
    if order == "shuffled":
        pcr_set = pcr_set[1::2] + pcr_set[::2]
        pcrs = pcrs[::2] + pcrs[1::2]
    odd = replace(req, tpm_info=replace(req.tpm_info, pcr_set=pcr_set, pcrs=pcrs))
    wire = decode_request(encode_request(odd))
    assert wire.tpm_info.pcr_set == pcr_set  # the decoder keeps what was sent
    a, b = verify(req), verify(wire)
    assert a.passed and b.passed
    assert b.checks == a.checks
    assert list(b.verified_pcrs or {}) == sorted(REAL_PCRS)
    assert b.verified_pcrs == a.verified_pcrs
    dup = replace(req.tpm_info, pcr_set=(*req.tpm_info.pcr_set, req.tpm_info.pcr_set[0]))
    with pytest.raises(ProtocolError, match="listed twice"):
        decode_request(encode_request(replace(req, tpm_info=dup)))
