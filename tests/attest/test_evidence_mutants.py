"""Forged evidence aimed at the checks mutation testing found unguarded (issue 17).

Builds on the forged-evidence suite's ``forge`` (software AIK and ephemeral key over
the real Trusted Launch request): each case changes one thing a security reviewer
worries about and checks that the right check fails *and* that nothing resting on it
is exposed as verified.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest
import test_evidence_forged as forged  # tests/attest is on sys.path (conftest)
from cryptography.hazmat.primitives.asymmetric import ec

from bootwatch.attest.caches import VerifierCaches
from bootwatch.eventlog import EventType, parse_log
from bootwatch.lru import BoundedLru
from bootwatch.tpm.attest import CertifyInfo, ClockInfo, marshal_tpms_attest
from bootwatch.tpm.constants import ObjectAttributes, TpmAlg, TpmEccCurve, TpmSt
from bootwatch.tpm.marshal import tpm2b
from bootwatch.tpm.pcr import PcrSelection
from bootwatch.tpm.public import (
    EccParms,
    EccPoint,
    Scheme,
    SymDefObject,
    marshal_tpmt_public,
    parse_tpm2b_public,
)

forge, verify, first_failure = forged.forge, forged.verify, forged.first_failure
SHARED_LOGS = forged.SHARED / "corpus" / "eventlogs"
REAL, REAL_QUOTE = forged.REAL, forged.REAL_QUOTE

VERIFIED_FROM_QUOTE = ("verified_pcrs", "verified_pcr_selection", "verified_clock",
                       "verified_firmware_version", "verified_reset_count",
                       "verified_restart_count", "verified_event_log", "verified_replay")


def _certify(magic: int, name: bytes) -> bytes:
    clock = REAL_QUOTE.clock_info
    return marshal_tpms_attest(
        magic=magic, attest_type=TpmSt.ATTEST_CERTIFY, qualified_signer=REAL_QUOTE.qualified_signer,
        extra_data=b"", clock_info=ClockInfo(clock.clock + 85, clock.reset_count,
                                             clock.restart_count, clock.safe),
        firmware_version=REAL_QUOTE.firmware_version, attested=CertifyInfo(name, name))


def _enc_name() -> bytes:
    return parse_tpm2b_public(forge().tpm_info.enc_key_pub).name


@pytest.mark.parametrize("magic", [0xFF544346, 0x00000000, 0x474354FF])
def test_certify_without_tpm_generated_magic_is_refused(magic: int) -> None:
    # Signed by the genuine AIK, naming the genuine key: only the magic is wrong. A TPM
    # never signs outside data that starts with TPM_GENERATED_VALUE with a restricted key.
    v = verify(forge(certify_bytes=_certify(magic, _enc_name())))
    assert first_failure(v) == ("enc_key_certified", "certify_bad_magic")
    assert f"0x{magic:08x}" in v.check("enc_key_certified").reason
    assert v.verified_enc_key is None and not v.passed
    # the same structure with the right magic passes: the magic alone decided
    assert verify(forge(certify_bytes=_certify(0xFF544347, _enc_name()))).passed


def test_quote_as_certify_is_the_wrong_type() -> None:
    v = verify(forge(certify_bytes=forge().tpm_info.pcr_quote))
    assert first_failure(v) == ("enc_key_certified", "certify_wrong_type")
    assert v.verified_enc_key is None


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"quote_signer": forged.OTHER}, "quote_signature"),
        ({"magic": 0xFF544346}, "quote_structure"),
        ({"extra": b"stale"}, "quote_nonce"),
        ({"reported": {**forged.REAL_PCRS, 0: bytes(32)}}, "pcr_digest"),
    ],
    ids=["signature", "structure", "nonce", "pcr-digest"],
)
def test_failed_quote_exposes_no_verified_value(kwargs: dict, check: str) -> None:
    v = verify(forge(**kwargs))
    assert not v.check(check).passed
    for attr in VERIFIED_FROM_QUOTE:
        assert getattr(v, attr) is None, attr
    # the key rests on the signature and the PCR digest, not on the (empty) nonce
    assert (v.verified_enc_key is None) is (check != "quote_nonce")
    # the unverified values are still there for the report
    assert v.unverified_reported_pcrs


def test_passing_quote_exposes_the_verified_values() -> None:
    v = verify(forge())
    assert v.verified_clock == REAL_QUOTE.clock_info
    assert v.verified_firmware_version == REAL_QUOTE.firmware_version
    assert v.verified_pcr_selection == forged.REAL_SEL
    assert v.verified_reset_count == REAL_QUOTE.clock_info.reset_count
    assert v.verified_restart_count == REAL_QUOTE.clock_info.restart_count
    assert v.verified_event_log is not None and v.verified_replay is not None
    assert v.verified_aik_pub is not None


def test_log_failure_keeps_quote_values_but_not_the_log() -> None:
    v = verify(forge(log=REAL.tcg_logs[:100]))
    assert v.verified_pcrs is not None and v.verified_clock is not None
    assert v.verified_event_log is None and v.verified_replay is None


def _tamper_event_data(pcr: int, nth: int) -> tuple[bytes, int]:
    raw = REAL.tcg_logs
    tags = [e for e in parse_log(raw).events
            if e.pcr == pcr and e.event_type == int(EventType.EV_EVENT_TAG)]
    ev = tags[nth]
    at = raw.index(ev.data, ev.offset) + len(ev.data) - 1
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:], ev.index


@pytest.mark.parametrize("pcr", [12, 13, 14])
@pytest.mark.parametrize("nth", [0, 1])
def test_rewritten_sipa_record_in_each_sipa_pcr_is_caught(pcr: int, nth: int) -> None:
    # The digests (hence the quoted PCRs) are untouched; only the SIPA data the claims
    # read is rewritten.
    log, index = _tamper_event_data(pcr, nth)
    v = verify(forge(log=log))
    assert first_failure(v) == ("log_replay", "log_data_digest_mismatch")
    reason = v.check("log_replay").reason
    assert reason.startswith(f"event {index} in PCR {pcr}: EV_EVENT_TAG")
    assert v.verified_event_log is None and v.verified_replay is None
    assert v.verified_pcrs is not None  # the quote itself is fine


def test_rewritten_sipa_record_in_an_unquoted_pcr_is_not_this_requests_concern() -> None:
    log, _ = _tamper_event_data(14, 0)
    pcrs = {p: v for p, v in forged.REAL_PCRS.items() if p != 14}
    sel = (replace(forged.REAL_SEL[0], pcrs=tuple(p for p in forged.REAL_SEL[0].pcrs if p != 14)),)
    v = verify(forge(log=log, pcrs=pcrs, selection=sel))
    assert v.check("log_replay").passed, v.check("log_replay").reason


def test_certify_by_an_aik_that_is_not_a_restricted_signing_key() -> None:
    # Both structures are validly signed by this key; a non-restricted key could have
    # signed any bytes, so the certify must not count either.
    for attrs in (forged.AIK_ATTRS & ~ObjectAttributes.RESTRICTED,
                  forged.AIK_ATTRS & ~ObjectAttributes.SIGN_ENCRYPT,
                  forged.AIK_ATTRS & ~ObjectAttributes.FIXED_TPM):
        v = verify(forge(aik_attrs=attrs))
        assert v.check("quote_signature").reason_code == "aik_not_restricted_signing"
        c = v.check("enc_key_certified")
        assert (c.passed, c.reason_code) == (False, "prerequisite_failed")
        assert "restricted signing key" in c.reason
        assert v.verified_enc_key is None and v.verified_aik_pub is None


def _ecc_enc_pub() -> bytes:
    nums = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=forged.ENC_ATTRS,
        auth_policy=bytes(32),
        parameters=EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL),
                            TpmEccCurve.NIST_P256, Scheme(TpmAlg.NULL)),
        unique=EccPoint(nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big")))


def test_non_rsa_enc_key_is_refused_even_when_certified() -> None:
    tpmt = _ecc_enc_pub()
    v = verify(forge(enc_pub=tpm2b(tpmt), certified_name=forged._name(tpmt)))
    assert v.check("enc_key_certified").passed
    c = v.check("enc_key_attributes")
    assert (c.passed, c.reason_code) == (False, "enc_key_not_rsa")
    assert c.reason == "EncKeyPub is TPM_ALG_ECC, the sealed response needs RSA"
    assert v.verified_enc_key is None


def test_log_cache_stays_within_its_bound() -> None:
    caches = VerifierCaches(logs=BoundedLru(2))
    good = forge()
    for pad in range(4):  # zero padding: the same log, four distinct byte strings
        req = replace(good, tcg_logs=REAL.tcg_logs + bytes(pad))
        assert verify(req, caches=caches).check("log_replay").passed
        assert len(caches.logs) == min(pad + 1, 2)
    # the most recent ones are kept, the oldest dropped
    kept = caches.logs.ordered_keys()
    assert kept == [hashlib.sha256(REAL.tcg_logs + bytes(p)).digest() for p in (2, 3)]
    # a log that does not frame is never kept
    assert not verify(replace(good, tcg_logs=REAL.tcg_logs[:100]),
                      caches=caches).check("log_replay").passed
    assert caches.logs.ordered_keys() == kept


def _record(pcr: int, etype: int, data: bytes, sha256: bytes) -> bytes:
    # a TCG_PCR_EVENT2 carrying only the SHA-256 digest (the bank AzureGuest quotes)
    return (struct.pack("<III", pcr, etype, 1) + struct.pack("<H", 0x000B) + sha256
            + struct.pack("<I", len(data)) + data)


def test_harmless_replay_findings_do_not_unbind_the_log() -> None:
    # an EV_NO_ACTION with a non-zero digest is reported by the replay but extends nothing
    log = REAL.tcg_logs + _record(0, 3, b"note", b"\x01" * 32)
    v = verify(forge(log=log))
    assert v.check("log_replay").passed, v.check("log_replay").reason
    assert v.verified_replay is not None
    assert "no_action_digest_not_zero" in {f.code for f in v.verified_replay.findings}


def test_only_tag_events_in_sipa_pcrs_must_hash_their_data() -> None:
    # an EV_IPL in PCR 13 measures something other than its data (legitimately): only
    # EV_EVENT_TAG records carry the SIPA data the claims read
    digest = hashlib.sha256(b"the measured thing").digest()
    log = REAL.tcg_logs + _record(13, 0x0D, b"a description", digest)
    pcrs = {**forged.REAL_PCRS,
            13: hashlib.sha256(forged.REAL_PCRS[13] + digest).digest()}
    v = verify(forge(log=log, pcrs=pcrs))
    assert v.passed, v.failed
    # the same record as an EV_EVENT_TAG is unbound SIPA data
    log = REAL.tcg_logs + _record(13, 0x06, b"a description", digest)
    v = verify(forge(log=log, pcrs=pcrs))
    assert first_failure(v) == ("log_replay", "log_data_digest_mismatch")


def test_sipa_failure_reason_in_full() -> None:
    log, index = _tamper_event_data(13, 0)
    v = verify(forge(log=log))
    assert v.check("log_replay").reason == (
        f"event {index} in PCR 13: EV_EVENT_TAG: the sha256 digest is not the hash of the SIPA "
        "record data; the event data is not what was measured, so it cannot be trusted")


def test_unknown_check_name() -> None:
    with pytest.raises(KeyError) as info:
        verify(forge()).check("no_such_check")
    assert info.value.args == ("no_such_check",)


_SHA1_SEL = (PcrSelection(TpmAlg.SHA1, forged.REAL_SEL[0].pcrs, 3),)

#: every check's reason, as a person reads it, for one forgery each (issue 17)
REASONS = [
    ('aik-not-restricted', dict(aik_attrs=forged.AIK_ATTRS & ~ObjectAttributes.RESTRICTED), {}, [
        ('quote_signature', 'aik_not_restricted_signing',
         'AikPub is not a restricted signing key of the TPM (lacks restricted); its '
         'signature would not prove the TPM produced the quote'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'prerequisite_failed',
         'not checked: AikPub is not a usable restricted signing key'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('certify-as-quote', dict(quote_bytes=forged._CERTIFY_AS_QUOTE), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'quote_wrong_type',
         'PcrQuote is attestation type 0x8017, not a quote (TPM_ST_ATTEST_QUOTE 0x8018)'),
        ('quote_nonce', 'prerequisite_failed',
         'not checked: the quote cannot be used'),
        ('pcr_digest', 'prerequisite_failed',
         'not checked: the quote cannot be used'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'prerequisite_failed',
         'not checked: the quoted PCR values are not verified'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('stale-nonce', dict(extra=b"stale"), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'nonce_mismatch',
         'quote qualifying data is 7374616c65, expected (empty): the quote is not fresh '
         'for this request'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('fresh-expected', {}, {'expected_nonce': b'fresh'}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'nonce_mismatch',
         'quote qualifying data is (empty), expected 6672657368: the quote is not fresh '
         'for this request'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('bad-magic', dict(magic=0xFF544346), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'quote_bad_magic',
         'PcrQuote magic is 0xff544346, not TPM_GENERATED_VALUE 0xff544347: not produced '
         'by a TPM'),
        ('quote_nonce', 'prerequisite_failed',
         'not checked: the quote cannot be used'),
        ('pcr_digest', 'prerequisite_failed',
         'not checked: the quote cannot be used'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'prerequisite_failed',
         'not checked: the quoted PCR values are not verified'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('sha1-selection', dict(selection=_SHA1_SEL, enc_policy=bytes(32)), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'pcr_selection_mismatch',
         'the quote selects TPM_ALG_SHA1 [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14], the '
         'request reports TPM_ALG_SHA256 [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14]'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'prerequisite_failed',
         'not checked: the quoted PCR values are not verified'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('reported-differs', dict(reported={**forged.REAL_PCRS, 0: bytes(32)}), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'pcr_digest_mismatch',
         'the digest of the reported PCR values '
         '(7a9f40c9a1190626042b944e53e01a4fb332cf904833ed9fd0e12a1208c1d898) is not the '
         'quoted pcrDigest '
         '(aff9584cf88efa29c08cf1b349002435656dbd8c3f7913206e6ae61f78b4acc9): the reported'
         ' PCRs are not the quoted ones'),
        ('log_replay', 'log_pcr_mismatch',
         'the log replays to other values than reported: PCR 0: replayed value differs; no'
         ' single event explains it'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'prerequisite_failed',
         'not checked: the quoted PCR values are not verified'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('genuine', {}, {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
]


@pytest.mark.parametrize(("case", "kwargs", "verify_kw", "expected"), REASONS,
                         ids=[c[0] for c in REASONS])
def test_every_reason_in_full(case: str, kwargs: dict, verify_kw: dict,
                              expected: list[tuple[str, str, str]]) -> None:
    v = verify(forge(**kwargs), **verify_kw)
    assert [(c.name, c.reason_code, c.reason) for c in v.checks] == expected


def _retamper(raw: bytes, pcr: int, nth: int) -> bytes:
    tags = [e for e in parse_log(raw).events
            if e.pcr == pcr and e.event_type == int(EventType.EV_EVENT_TAG)]
    ev = tags[nth]
    at = raw.index(ev.data, ev.offset) + len(ev.data) - 1
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:]


_TWO_BANKS = (PcrSelection(TpmAlg.SHA1, (0,), 3),
              PcrSelection(TpmAlg.SHA256, forged.REAL_SEL[0].pcrs, 3))
_QUOTE_BYTES = forge().tpm_info.pcr_quote
_TWO_SIPA_REWRITTEN = _tamper_event_data(12, 0)[0]
_TWO_SIPA_REWRITTEN = _retamper(_TWO_SIPA_REWRITTEN, 13, 1)

REASONS_2 = [
    ('flipped-digest', dict(log=forged._log_with_flipped_digest()), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'log_pcr_mismatch',
         'the log replays to other values than reported: PCR 7: event 3: '
         'EV_EFI_VARIABLE_DRIVER_CONFIG: the sha256 digest is not the hash of the event '
         'data (first suspect event 3)'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('log-cut', dict(log=REAL.tcg_logs[:100]), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'log_malformed',
         'TcgLogs cannot be read: sha384 digest runs past the end of the log (at event 1, '
         'byte offset 85)'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('pcr23-not-covered', dict(pcrs=forged._WITH_23, selection=forged._SEL_23), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 23] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'log_pcr_not_covered',
         'the log does not explain PCR 23 (never extended in the log, yet not at its reset'
         ' value)'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('two-sipa-rewritten', dict(log=_TWO_SIPA_REWRITTEN), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'log_data_digest_mismatch',
         'event 22 in PCR 12: EV_EVENT_TAG: the sha256 digest is not the hash of the SIPA '
         'record data; the event data is not what was measured, so it cannot be trusted (1'
         ' more such events)'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('selects-nothing',
     dict(selection=(PcrSelection(TpmAlg.SHA256, (), 3),), enc_policy=bytes(32)), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'pcr_selection_mismatch',
         'the quote selects nothing, the request reports TPM_ALG_SHA256 [0, 1, 2, 3, 4, 5,'
         ' 6, 7, 11, 12, 13, 14]'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'prerequisite_failed',
         'not checked: the quoted PCR values are not verified'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('two-banks', dict(selection=_TWO_BANKS, enc_policy=bytes(32)), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'pcr_selection_mismatch',
         'the quote selects TPM_ALG_SHA1 [0]; TPM_ALG_SHA256 [0, 1, 2, 3, 4, 5, 6, 7, 11, '
         '12, 13, 14], the request reports TPM_ALG_SHA256 [0, 1, 2, 3, 4, 5, 6, 7, 11, 12,'
         ' 13, 14]'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'prerequisite_failed',
         'not checked: the quoted PCR values are not verified'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('quote-as-certify', dict(certify_bytes=_QUOTE_BYTES), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'certify_wrong_type',
         'EncKeyCertifyInfo is attestation type 0x8018, not a certify '
         '(TPM_ST_ATTEST_CERTIFY 0x8017)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('enc-may-sign', dict(enc_attrs=forged.ENC_ATTRS | ObjectAttributes.SIGN_ENCRYPT), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'enc_key_sign_allowed',
         'EncKeyPub may sign (sign attribute set); it must be decrypt-only'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('enc-user-with-auth', dict(enc_attrs=forged.ENC_ATTRS | ObjectAttributes.USER_WITH_AUTH), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'enc_key_attribute_forbidden',
         'EncKeyPub has userWithAuth: userWithAuth would allow use without the PCR policy,'
         ' restricted forbids RSA_Decrypt'),
        ('enc_key_pcr_policy', 'ok',
         'EncKeyPub authPolicy is PolicyPCR over the attested PCR values'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
    ('enc-no-policy', dict(enc_policy=b""), {}, [
        ('quote_signature', 'ok',
         'PcrQuote is signed by AikPub (TPM_ALG_RSASSA/TPM_ALG_SHA256)'),
        ('quote_structure', 'ok',
         'PcrQuote is a TPM-generated TPMS_ATTEST of type quote'),
        ('quote_nonce', 'ok',
         'quote qualifying data equals the expected nonce (empty)'),
        ('pcr_digest', 'ok',
         'reported PCRs [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14] hash to the quoted '
         'pcrDigest'),
        ('log_replay', 'ok',
         'the TPM_ALG_SHA256 replay of the log (34 events) equals every reported PCR'),
        ('enc_key_certified', 'ok',
         'the AIK certified EncKeyPub (certified name equals its name)'),
        ('enc_key_attributes', 'ok',
         'EncKeyPub attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt'),
        ('enc_key_pcr_policy', 'enc_key_no_policy',
         'EncKeyPub has no authPolicy: it is not bound to the attested PCRs'),
        ('aik_certificate', 'ok',
         'AIK certificate chains to a trust anchor: CN=vm AIK <- CN=Test vTPM CA'),
    ]),
]


@pytest.mark.parametrize(("case", "kwargs", "verify_kw", "expected"), REASONS_2,
                         ids=[c[0] for c in REASONS_2])
def test_every_reason_in_full_for_log_and_key_forgeries(
        case: str, kwargs: dict, verify_kw: dict, expected: list[tuple[str, str, str]]) -> None:
    v = verify(forge(**kwargs), **verify_kw)
    assert [(c.name, c.reason_code, c.reason) for c in v.checks] == expected


def test_verified_values_rest_on_every_check_they_need() -> None:
    for kwargs in ({"enc_attrs": forged.ENC_ATTRS | ObjectAttributes.SIGN_ENCRYPT},
                   {"enc_policy": forged._POLICY_0_7},
                   {"certify_signer": forged.OTHER}):
        v = verify(forge(**kwargs))
        assert v.verified_enc_key is None, kwargs
        assert v.verified_pcrs is not None  # the quote itself is fine
    v = verify(forge())
    assert v.verified_enc_key is not None
    assert v.pcr_verification is not None and not v.pcr_verification.mismatched
    assert v.workarounds == ()


def test_replayed_values_when_the_log_cannot_be_read_or_lacks_the_bank() -> None:
    v = verify(forge(log=REAL.tcg_logs[:100]))
    assert v.unverified_replayed_pcrs is None and v.pcr_verification is None
    sha1_log = (SHARED_LOGS / "go-tpm-tools" / "debian-10.bin").read_bytes()
    v = verify(forge(log=sha1_log))
    # a SHA-1-only log explains no SHA-256 PCR
    assert v.check("log_replay").reason_code == "log_pcr_not_covered"
    assert v.unverified_replayed_pcrs == {}


def test_memoised_replay_is_read_only_and_holds_the_reported_bank() -> None:
    v = verify(forge(), caches=VerifierCaches())
    rep = v.verified_replay
    assert rep is not None and set(rep.pcrs) == {0x000B} and set(rep.initial) <= {0x000B}
    with pytest.raises(TypeError):
        rep.initial[0x000B] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        rep.pcrs[0x000B] = {}  # type: ignore[index]


def test_unreadable_aik_pub_skips_the_certificate_check() -> None:
    v = verify(forge(aik_pub=forge().tpm_info.aik_pub[:-10]))
    c = v.check("aik_certificate")
    assert (c.passed, c.reason_code, c.reason) == (False, "prerequisite_failed",
                                                   "not checked: AikPub cannot be read")
