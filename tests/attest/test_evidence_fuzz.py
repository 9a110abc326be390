"""Hostile TpmInfo fields never make verify_evidence raise anything but a BootwatchError.

Starting from the real Trusted Launch request (shared/corpus/maa/azure-guest-vm-derived),
each TpmInfo field is truncated, has bytes overwritten, gets a TPM-ish 16-bit value spliced
in, or is replaced by random bytes; the request goes through the wire encoding and
``decode_request`` as a client's would. ``verify_evidence`` must then return a result (a
failed check says why) or raise a BootwatchError: an exception outside the tree would be an
HTTP 500 in the service and a traceback in the CLI. The review's concrete cases (an AIK
certificate with an unknown key OID or an undecodable key, an AikPub with an even RSA
exponent) are pinned as explicit tests with the reason code they must produce.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import attest_corpus  # tests/attest/conftest.py puts this folder on sys.path
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootwatch.attest.evidence import EvidenceVerification, verify_evidence
from bootwatch.errors import BootwatchError
from bootwatch.protocol.azureguest import AzureGuestRequest, decode_request, encode_request
from bootwatch.tpm.aik import TrustAnchors
from bootwatch.tpm.marshal import u32
from bootwatch.tpm.public import parse_public_or_read_public

REAL = decode_request(attest_corpus.azure_request_body())
IN_VALIDITY = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
#: The leaf itself as an anchor: not its issuer, but it makes the chain walk compare
#: names and try signatures on every mutated certificate.
LEAF_ANCHOR = TrustAnchors.from_pem([
    x509.load_der_x509_certificate(REAL.tpm_info.aik_cert or b"").public_bytes(
        serialization.Encoding.PEM)
])
FIELDS = ("aik_cert", "aik_pub", "pcr_quote", "pcr_signature", "enc_key_pub",
          "enc_key_certify_info", "enc_key_certify_info_signature")
#: 16-bit values that mean something in TPM structures (sizes, algorithm ids, tags).
SPLICES = (b"\xff\xff", b"\x00\x00", b"\x00\x01", b"\x00\x0b", b"\x00\x10", b"\x00\x12",
           b"\x00\x23", b"\x80\x18", b"\x80\x17", b"\x01\x00")


def _with(field: str, value: bytes) -> AzureGuestRequest:
    req = replace(REAL, tpm_info=replace(REAL.tpm_info, **{field: value}))
    return decode_request(encode_request(req))


def _verify(request: AzureGuestRequest, anchors: TrustAnchors | None) -> EvidenceVerification:
    return verify_evidence(request, trust_anchors=anchors, at=IN_VALIDITY)


@st.composite
def mutated_field(draw: st.DrawFn) -> tuple[str, bytes]:
    field = draw(st.sampled_from(FIELDS))
    value = bytearray(getattr(REAL.tpm_info, field) or b"")
    op = draw(st.sampled_from(("truncate", "overwrite", "splice", "replace")))
    if op == "replace" or not value:
        return field, draw(st.binary(max_size=400))
    if op == "truncate":
        return field, bytes(value[: draw(st.integers(0, len(value) - 1))])
    if op == "overwrite":
        for _ in range(draw(st.integers(1, 4))):
            value[draw(st.integers(0, len(value) - 1))] = draw(st.integers(0, 255))
        return field, bytes(value)
    at = draw(st.integers(0, len(value) - 1))
    value[at : at + 2] = draw(st.sampled_from(SPLICES))
    return field, bytes(value)


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated=mutated_field(), anchored=st.booleans())
def test_a_mutated_tpm_info_field_never_escapes_the_error_tree(
    mutated: tuple[str, bytes], anchored: bool
) -> None:
    field, value = mutated
    try:
        request = _with(field, value)
    except BootwatchError:
        return  # refused on the wire already (e.g. an empty required field)
    try:
        result = _verify(request, LEAF_ANCHOR if anchored else None)
    except BootwatchError:
        return
    assert isinstance(result, EvidenceVerification)
    if value != getattr(REAL.tpm_info, field):
        # the real leaf is not trusted, so nothing can pass every check; and whatever
        # changed, the failed checks say why
        assert not result.passed
        assert all(c.reason for c in result.failed)


# --- the review's concrete cases --------------------------------------------------------

#: SubjectPublicKeyInfo.algorithm of an RSA key: SEQUENCE { rsaEncryption, NULL }.
_RSA_SPKI_ALG = bytes.fromhex("300d06092a864886f70d0101010500")


def _aik_cert() -> bytearray:
    return bytearray(REAL.tpm_info.aik_cert or b"")


def test_aik_certificate_with_an_unknown_key_oid_fails_the_check() -> None:
    cert = _aik_cert()
    at = cert.index(_RSA_SPKI_ALG)
    cert[at + 7] = 0x10  # 1.2.840.113549.1.1.1 -> 1.2.840.16.15245.1.1.1
    for anchors in (None, LEAF_ANCHOR):
        check = _verify(_with("aik_cert", bytes(cert)), anchors).check("aik_certificate")
        assert (check.passed, check.reason_code) == (False, "aik_cert_malformed")
        assert "not support" in check.reason and "1.2.840.16.15245.1.1.1" in check.reason


def test_aik_certificate_with_an_undecodable_key_fails_the_check() -> None:
    cert = _aik_cert()
    modulus = cert.index(b"\x02\x82\x01\x01\x00", cert.index(_RSA_SPKI_ALG)) + 4
    cert[modulus : modulus + 2] = b"\xff\xf4"  # a negative modulus: no RSAPublicKey
    check = _verify(_with("aik_cert", bytes(cert)), LEAF_ANCHOR).check("aik_certificate")
    assert (check.passed, check.reason_code) == (False, "aik_cert_malformed")
    assert "public key cannot be decoded" in check.reason


def _subject_cn_not_a_string(cert: bytearray) -> None:
    # cryptography raises KeyError (not ValueError) for a name attribute whose ASN.1 tag
    # is no string type; found by the fuzz test above
    cert[cert.rindex(bytes.fromhex("0603550403")) + 5] = 0x09  # subject CN -> REAL


def _duplicate_extension(cert: bytearray) -> None:
    # extendedKeyUsage's OID -> keyUsage: cryptography raises DuplicateExtension
    cert[cert.index(bytes.fromhex("0603551d25")) + 4] = 0x0F


def _version_76(cert: bytearray) -> None:
    # [0] EXPLICIT version 2 (v3) -> 76: cryptography raises InvalidVersion at load time
    cert[cert.index(bytes.fromhex("a003020102")) + 4] = 0x4C


@pytest.mark.parametrize(("mutate", "says"), [
    (_subject_cn_not_a_string, "name cannot be decoded"),
    (_duplicate_extension, "extensions cannot be decoded: DuplicateExtension"),
    (_version_76, "cannot be parsed: 76 is not a valid X509 version"),
], ids=["name-tag", "duplicate-extension", "invalid-version"])
def test_aik_certificate_that_cryptography_raises_non_value_errors_for(mutate, says) -> None:  # type: ignore[no-untyped-def]
    cert = _aik_cert()
    mutate(cert)
    for anchors in (None, LEAF_ANCHOR):
        check = _verify(_with("aik_cert", bytes(cert)), anchors).check("aik_certificate")
        assert (check.passed, check.reason_code) == (False, "aik_cert_malformed")
        assert says in check.reason


@pytest.mark.parametrize("exponent", [1, 2, 4, 65536])
def test_aik_pub_with_an_impossible_rsa_exponent_fails_the_quote_check(exponent: int) -> None:
    aik_pub = bytearray(REAL.tpm_info.aik_pub)
    pub = parse_public_or_read_public(bytes(aik_pub))
    assert isinstance(pub.unique, bytes)
    # TPM2B_PUBLIC size, then TPMT_PUBLIC ... exponent (UINT32), unique (TPM2B)
    at = 2 + len(pub.raw) - len(pub.unique) - 2 - 4
    assert aik_pub[at : at + 4] == u32(pub.parameters.exponent)  # type: ignore[union-attr]
    aik_pub[at : at + 4] = u32(exponent)
    result = _verify(_with("aik_pub", bytes(aik_pub)), LEAF_ANCHOR)
    check = result.check("quote_signature")
    assert (check.passed, check.reason_code) == (False, "aik_pub_malformed")
    assert "parameters.rsaDetail.exponent" in check.reason
    assert f"{exponent} is no RSA public exponent" in check.reason
    assert result.check("aik_certificate").reason_code == "prerequisite_failed"
