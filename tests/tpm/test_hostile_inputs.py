"""bootwatch.tpm on hostile input raises only BootwatchErrors, with a reason that says where.

cryptography decodes certificates lazily and checks key numbers only when a key is built,
raising ValueError, KeyError or UnsupportedAlgorithm; the helpers of pcr, constants and
marshal used to raise KeyError/ValueError/struct.error. Each of those paths is pinned here,
and random or mutated bytes go through every parser under hypothesis.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from bootwatch.errors import BootwatchError, InputError, TpmStructureError
from bootwatch.tpm.aik import TrustAnchors, load_aik_certificate, verify_aik_certificate
from bootwatch.tpm.attest import parse_tpms_attest
from bootwatch.tpm.constants import ObjectAttributes, TpmAlg, TpmEccCurve, digest
from bootwatch.tpm.errors import AikCertificateError, SignatureError, TpmValueError
from bootwatch.tpm.marshal import tpm2b, u16, u32, u64
from bootwatch.tpm.pcr import (
    PcrSelection,
    parse_pcr_selections,
    policy_pcr_digest,
    quote_pcr_digest,
    values_in_selection_order,
)
from bootwatch.tpm.public import (
    EccParms,
    EccPoint,
    RsaParms,
    Scheme,
    SymDefObject,
    TpmPublic,
    marshal_tpmt_public,
    parse_public_or_read_public,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from bootwatch.tpm.signature import (
    parse_tpmt_signature,
    signature_from_raw,
    verify_signature,
)

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
D = SHARED / "corpus/maa/azure-guest-vm-derived"
AIK = (D / "aik-pub.tpm2b").read_bytes()
AIK_CERT = (D / "aik-cert.der").read_bytes()
QUOTE = (D / "pcr-quote.tpms_attest").read_bytes()
QUOTE_SIG = (D / "pcr-signature.bin").read_bytes()
IN_VALIDITY = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SIGN = int(ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.FIXED_TPM
           | ObjectAttributes.FIXED_PARENT | ObjectAttributes.SENSITIVE_DATA_ORIGIN
           | ObjectAttributes.USER_WITH_AUTH)
#: SubjectPublicKeyInfo.algorithm of an RSA key: SEQUENCE { rsaEncryption, NULL }.
RSA_SPKI_ALG = bytes.fromhex("300d06092a864886f70d0101010500")


def _bad_oid_cert() -> bytes:
    der = bytearray(AIK_CERT)
    der[der.index(RSA_SPKI_ALG) + 7] = 0x10  # rsaEncryption -> 1.2.840.16.15245.1.1.1
    return bytes(der)


def _off_curve_key() -> TpmPublic:
    raw = marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=SIGN, auth_policy=b"",
        parameters=EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.ECDSA, TpmAlg.SHA256),
                            TpmEccCurve.NIST_P256, Scheme(TpmAlg.NULL)),
        unique=EccPoint(b"\x01" * 32, b"\x02" * 32))
    return parse_tpmt_public(raw)  # parsing does not do curve arithmetic


def _rsa_public(*, exponent: int = 0, modulus: bytes = b"\xc5" * 255 + b"\x01",
                name_alg: int = TpmAlg.SHA256) -> bytes:
    return marshal_tpmt_public(
        key_type=TpmAlg.RSA, name_alg=name_alg, object_attributes=SIGN, auth_policy=b"",
        parameters=RsaParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.RSASSA, TpmAlg.SHA256),
                            2048, exponent),
        unique=modulus)


# --- pcr, constants, marshal: typed errors from the public helpers ------------------------

SHA256_SEL = (PcrSelection(TpmAlg.SHA256, (0, 7)),)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: values_in_selection_order(SHA256_SEL, {TpmAlg.SHA256: {0: bytes(32)}}),
     "no TPM_ALG_SHA256 value for PCR 7"),
    (lambda: values_in_selection_order(SHA256_SEL, {}), "no TPM_ALG_SHA256 value for PCR 0"),
    (lambda: values_in_selection_order(SHA256_SEL, {TpmAlg.SHA256: {0: b"", 7: bytes(32)}}),
     "PCR 0 value is 0 bytes"),
    (lambda: values_in_selection_order((PcrSelection(0x99, (0,)),), {0x99: {0: b""}}),
     "0x0099 is not a supported PCR bank"),
    (lambda: quote_pcr_digest(TpmAlg.SM3_256, SHA256_SEL,
                              {TpmAlg.SHA256: {0: bytes(32), 7: bytes(32)}}),
     "TPM_ALG_SM3_256 is not supported"),
    (lambda: policy_pcr_digest(SHA256_SEL, {TpmAlg.SHA256: {0: bytes(32), 7: bytes(32)}},
                               policy_hash_alg=0x99), "0x0099 is not a supported policy hash"),
    (lambda: policy_pcr_digest(SHA256_SEL, {TpmAlg.SHA256: {0: bytes(32), 7: bytes(32)}},
                               policy_hash_alg=TpmAlg.SHA256, previous=b"\x00"),
     "previous policy digest is 1 bytes"),
    (lambda: PcrSelection(TpmAlg.SHA256, (24,)).marshal(), "PCR 24 does not fit"),
    (lambda: PcrSelection(TpmAlg.SHA256, (), size_of_select=9).marshal(), "sizeofSelect 9"),
    (lambda: digest(TpmAlg.SM3_256, b""), "TPM_ALG_SM3_256 is not supported"),
    (lambda: u16(0x10000), "does not fit a UINT16"),
    (lambda: u32(-1), "does not fit a UINT32"),
    (lambda: u64(1 << 64), "does not fit a UINT64"),
    (lambda: tpm2b(bytes(0x10000)), "65536 bytes, over 65535"),
])
def test_helpers_raise_tpm_value_error(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TpmValueError, match=match) as info:
        call()
    # in the tree, and still a ValueError for callers written against the old contract
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


# --- public: key numbers checked at parse time, the rest when the key is built ------------


@pytest.mark.parametrize(("raw", "field", "problem"), [
    (_rsa_public(exponent=2), "parameters.rsaDetail.exponent", "2 is no RSA public exponent"),
    (_rsa_public(exponent=1), "parameters.rsaDetail.exponent", "1 is no RSA public exponent"),
    (_rsa_public(modulus=b"\xc4" * 256), "unique.rsa", "no RSA modulus"),
    (_rsa_public(modulus=bytes(255) + b"\x03"), "unique.rsa", "no RSA modulus"),
    (_rsa_public(name_alg=TpmAlg.SM3_256), "nameAlg", "TPM_ALG_SM3_256 is not a supported"),
], ids=["even-exponent", "exponent-1", "even-modulus", "modulus-3", "sm3-name-alg"])
def test_impossible_rsa_keys_are_refused_when_parsed(raw: bytes, field: str,
                                                     problem: str) -> None:
    with pytest.raises(TpmStructureError, match=problem) as info:
        parse_tpmt_public(raw)
    assert info.value.field == field
    # the same bytes as AikPub (TPM2B form) name the field inside publicArea
    with pytest.raises(TpmStructureError) as info2:
        parse_public_or_read_public(tpm2b(raw))
    assert info2.value.field == f"publicArea.{field}"
    assert info2.value.offset == info.value.offset + 2


def test_an_ecc_point_off_its_curve_is_a_typed_error_where_the_key_is_used() -> None:
    key = _off_curve_key()
    with pytest.raises(TpmStructureError, match="not a point on secp256r1") as info:
        key.public_key()
    assert info.value.field == "unique.ecc"
    sig = signature_from_raw(b"\x01" * 64, key)
    with pytest.raises(SignatureError) as sig_info:
        verify_signature(key, b"message", sig)
    assert sig_info.value.reason_code == "key_malformed"


def test_a_key_whose_unique_does_not_match_its_type_is_a_typed_error() -> None:
    real = parse_tpm2b_public(AIK)
    spliced = TpmPublic(real.type, real.name_alg, real.object_attributes, real.auth_policy,
                        real.parameters, EccPoint(b"", b""), real.raw)
    with pytest.raises(TpmStructureError, match="does not match the key type"):
        spliced.public_key()


# --- aik: certificates decoded at load time -------------------------------------------------


def test_an_aik_certificate_with_an_unknown_key_oid_is_malformed() -> None:
    with pytest.raises(AikCertificateError, match=r"1\.2\.840\.16\.15245\.1\.1\.1") as info:
        load_aik_certificate(_bad_oid_cert())
    assert info.value.reason_code == "aik_cert_malformed"
    assert "does not support" in str(info.value)


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n".encode()


def _mutated(pattern: str, delta: int, value: int) -> bytes:
    der = bytearray(AIK_CERT)
    der[der.index(bytes.fromhex(pattern)) + delta] = value
    return bytes(der)


@pytest.mark.parametrize(("der", "says"), [
    (_bad_oid_cert(), "does not support"),
    # the exception cryptography raises inside differs by version (KeyError in 48,
    # ValueError in 50): only the typed refusal matters
    (_mutated("0603550403", 5, 0x09), "name cannot be decoded"),  # CN tag -> REAL
    (_mutated("0603551d25", 4, 0x0F), "DuplicateExtension"),  # EKU OID -> keyUsage
    (_mutated("a003020102", 4, 0x4C), "76 is not a valid X509 version"),
], ids=["key-oid", "name-tag", "duplicate-extension", "invalid-version"])
def test_an_unreadable_trust_anchor_or_aik_certificate_is_refused_when_loaded(
    der: bytes, says: str
) -> None:
    with pytest.raises(AikCertificateError, match=says) as info:
        TrustAnchors.from_pem([_pem(der)])
    assert info.value.reason_code == "trust_anchor_malformed"
    with pytest.raises(AikCertificateError, match=says) as info:
        load_aik_certificate(der)
    assert info.value.reason_code == "aik_cert_malformed"


def test_an_unusable_aik_pub_fails_the_certificate_binding_with_a_reason() -> None:
    with pytest.raises(AikCertificateError) as info:
        verify_aik_certificate(AIK_CERT, _off_curve_key(), TrustAnchors(()), at=IN_VALIDITY)
    assert info.value.reason_code == "aik_pub_malformed"
    assert "unique.ecc" in str(info.value)


# --- every parser, random and mutated bytes -------------------------------------------------

PARSERS = (parse_tpm2b_public, parse_public_or_read_public, parse_tpmt_public,
           parse_tpms_attest, parse_tpmt_signature, parse_pcr_selections)


def _mutations(base: bytes) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        b = bytearray(base)
        for _ in range(draw(st.integers(1, 6))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b[: draw(st.integers(0, len(b)))])
    return mutate()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.one_of(st.binary(max_size=600), _mutations(AIK), _mutations(QUOTE)))
def test_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(TpmStructureError):
            parse(data)  # type: ignore[operator]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(aik=_mutations(AIK), cert=st.one_of(_mutations(AIK_CERT), st.just(AIK_CERT)))
def test_a_mutated_aik_and_certificate_raise_only_bootwatch_errors(aik: bytes,
                                                                   cert: bytes) -> None:
    try:
        key = parse_public_or_read_public(aik)
    except TpmStructureError:
        return
    with contextlib.suppress(BootwatchError):
        verify_signature(key, QUOTE, signature_from_raw(QUOTE_SIG, key))
    anchors = TrustAnchors((x509.load_der_x509_certificate(AIK_CERT),))
    with pytest.raises(BootwatchError):  # the real leaf is never its own issuer
        verify_aik_certificate(cert, key, anchors, at=IN_VALIDITY)
