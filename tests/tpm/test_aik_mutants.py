"""AIK certificate validation at each rule's edge (issue 17).

Certificates are built here with ``cryptography`` (a root, an intermediate, leaves with
and without each extension) and the AIK public area is marshalled by tpm2-pytss, so each
rule of bootwatch.tpm.aik is tried on both sides of its line: validity to the second,
keyUsage and EKU present or absent, issuers that are not CAs or may not sign.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC

from bootwatch.lru import BoundedLru
from bootwatch.tpm import aik as aikmod
from bootwatch.tpm.aik import (
    MAX_CERT_BYTES,
    TrustAnchors,
    load_aik_certificate,
    verify_aik_certificate,
)
from bootwatch.tpm.errors import AikCertificateError
from bootwatch.tpm.public import parse_tpmt_public

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
AIK_PRIV = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CA_PRIV = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_PRIV = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _aik_pub(key: rsa.RSAPrivateKey = AIK_PRIV):  # type: ignore[no-untyped-def]
    p = TPMT_PUBLIC.parse("rsa2048:rsassa-sha256:null",
                          objectAttributes=TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED
                          | TPMA_OBJECT.FIXEDTPM)
    p.unique.rsa = key.public_key().public_numbers().n.to_bytes(256, "big")
    return parse_tpmt_public(bytes(p.marshal()))


AIK = _aik_pub()


def cert(subject: str, key: rsa.RSAPrivateKey, issuer: tuple[str, rsa.RSAPrivateKey] | None, *,
         ca: bool | None, ku: x509.KeyUsage | None = None, eku: list[x509.ObjectIdentifier] | None
         = None, start: dt.datetime = START, end: dt.datetime = END) -> x509.Certificate:
    iss_name, iss_key = issuer if issuer else (subject, key)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, iss_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(iss_key, hashes.SHA256())


def ku(*, sign: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(sign, False, False, False, False, cert_sign, cert_sign, False, False)


AIK_EKU = x509.ObjectIdentifier("2.23.133.8.3")
CA = cert("Root CA", CA_PRIV, None, ca=True, ku=ku(cert_sign=True))
ANCHORS = TrustAnchors((CA,))


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def leaf(**kw) -> bytes:  # type: ignore[no-untyped-def]
    kw.setdefault("ca", False)
    kw.setdefault("ku", ku(sign=True))
    kw.setdefault("eku", [AIK_EKU])
    return der(cert("vm AIK", kw.pop("key", AIK_PRIV), kw.pop("issuer", ("Root CA", CA_PRIV)),
                    **kw))


def refusal(data: bytes | None, anchors: TrustAnchors = ANCHORS, at: dt.datetime = AT,
            pub=AIK) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(AikCertificateError) as info:
        verify_aik_certificate(data, pub, anchors, at=at)
    return info.value.reason_code, str(info.value)


def test_valid_chain_and_subjects() -> None:
    chain = verify_aik_certificate(leaf(), AIK, ANCHORS, at=AT)
    assert chain.chain == (CA,) and chain.subjects == ("CN=vm AIK", "CN=Root CA")
    # no keyUsage, no EKU, no basicConstraints on the leaf: nothing to refuse
    verify_aik_certificate(leaf(ku=None, eku=None, ca=None), AIK, ANCHORS, at=AT)
    # an EKU listing the AIK purpose among others
    verify_aik_certificate(leaf(eku=[x509.ObjectIdentifier("1.3.6.1.5.5.7.3.2"), AIK_EKU]),
                           AIK, ANCHORS, at=AT)
    # PEM is accepted too, and a naive time is UTC
    pem = x509.load_der_x509_certificate(leaf()).public_bytes(serialization.Encoding.PEM)
    verify_aik_certificate(pem, AIK, ANCHORS, at=AT.replace(tzinfo=None))


def test_validity_to_the_second() -> None:
    data = leaf()
    verify_aik_certificate(data, AIK, ANCHORS, at=START)
    verify_aik_certificate(data, AIK, ANCHORS, at=END)
    code, msg = refusal(data, at=START - dt.timedelta(seconds=1))
    assert code == "aik_cert_not_yet_valid"
    assert msg == ("AIK certificate CN=vm AIK is valid only from 2025-01-01T00:00:00+00:00, "
                   "checked at 2024-12-31T23:59:59+00:00")
    code, msg = refusal(data, at=END + dt.timedelta(seconds=1))
    assert code == "aik_cert_expired"
    assert msg == ("AIK certificate CN=vm AIK expired on 2030-01-01T00:00:00+00:00, checked at "
                   "2030-01-01T00:00:01+00:00")
    # naive times are UTC, not local time
    code, _ = refusal(data, at=(END + dt.timedelta(seconds=1)).replace(tzinfo=None))
    assert code == "aik_cert_expired"


def test_issuer_validity() -> None:
    old_ca = cert("Root CA", CA_PRIV, None, ca=True, ku=ku(cert_sign=True),
                  end=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    code, msg = refusal(leaf(), TrustAnchors((old_ca,)))
    assert code == "aik_cert_expired" and msg.startswith("issuer certificate CN=Root CA expired")


def test_leaf_key_usage_and_eku() -> None:
    assert refusal(leaf(ku=ku(sign=False, cert_sign=True))) == (
        "aik_cert_key_usage", "the AIK certificate's keyUsage lacks digitalSignature")
    assert refusal(leaf(eku=[x509.ObjectIdentifier("1.3.6.1.5.5.7.3.2")])) == (
        "aik_cert_eku",
        "the AIK certificate's extendedKeyUsage lacks the TCG AIK purpose 2.23.133.8.3")


def test_issuer_must_be_a_ca_that_may_sign_certificates() -> None:
    not_ca = cert("Root CA", CA_PRIV, None, ca=False, ku=ku(cert_sign=True))
    assert refusal(leaf(), TrustAnchors((not_ca,))) == (
        "aik_cert_untrusted", "CN=Root CA is not a CA")
    no_sign = cert("Root CA", CA_PRIV, None, ca=True, ku=ku(sign=True))
    assert refusal(leaf(), TrustAnchors((no_sign,))) == (
        "aik_cert_untrusted", "CN=Root CA may not sign certificates (keyUsage)")
    bare = cert("Root CA", CA_PRIV, None, ca=None)  # neither extension: accepted
    assert verify_aik_certificate(leaf(), AIK, TrustAnchors((bare,)), at=AT).chain == (bare,)


def test_untrusted_and_missing() -> None:
    rogue = cert("Root CA", OTHER_PRIV, None, ca=True, ku=ku(cert_sign=True))
    assert refusal(leaf(), TrustAnchors((rogue,))) == (
        "aik_cert_untrusted", "no trust anchor issued CN=vm AIK (issuer CN=Root CA)")
    other_name = cert("Other CA", CA_PRIV, None, ca=True, ku=ku(cert_sign=True))
    assert refusal(leaf(), TrustAnchors((other_name,)))[0] == "aik_cert_untrusted"
    # the right anchor found after a wrong one
    assert verify_aik_certificate(leaf(), AIK, TrustAnchors((rogue, other_name, CA)),
                                  at=AT).chain == (CA,)
    assert refusal(leaf(), TrustAnchors(())) == (
        "no_trust_anchors", "no trust anchors configured: pass --trust-anchors (PEM)")
    assert refusal(None) == ("aik_cert_missing", "the request carries no AIK certificate")
    assert refusal(b"") == ("aik_cert_missing", "the request carries no AIK certificate")


def test_certificate_key_must_be_the_aik() -> None:
    assert refusal(leaf(key=OTHER_PRIV)) == (
        "aik_cert_key_mismatch", "the AIK certificate's key is not the key in AikPub")
    assert refusal(leaf(), pub=_aik_pub(OTHER_PRIV))[0] == "aik_cert_key_mismatch"


def test_certificate_size_limit() -> None:
    code, msg = refusal(b"\x30" * (MAX_CERT_BYTES + 1))
    assert (code, msg) == ("aik_cert_malformed",
                           f"certificate is {MAX_CERT_BYTES + 1} bytes, over {MAX_CERT_BYTES}")
    with pytest.raises(AikCertificateError) as info:
        load_aik_certificate(b"\x30\x03\x02\x01\x01")
    assert info.value.reason_code == "aik_cert_malformed"
    assert str(info.value).startswith("AIK certificate cannot be parsed: ")


def test_trust_anchors_from_pem() -> None:
    pem = CA.public_bytes(serialization.Encoding.PEM)
    other = cert("Other CA", OTHER_PRIV, None, ca=True).public_bytes(serialization.Encoding.PEM)
    anchors = TrustAnchors.from_pem([pem + other, b"not a certificate", pem])
    assert [c.subject.rfc4514_string() for c in anchors.certificates] == [
        "CN=Root CA", "CN=Other CA", "CN=Root CA"]
    with pytest.raises(AikCertificateError) as info:
        TrustAnchors.from_pem([b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
    assert info.value.reason_code == "trust_anchor_malformed"
    assert str(info.value).startswith("a trust-anchor PEM cannot be read: ")


def test_verified_link_cache_is_bounded() -> None:
    cache = aikmod.AikCache(links=BoundedLru(2))
    leaves = [leaf() for _ in range(3)]  # fresh serials: three distinct links
    for i, data in enumerate(leaves):
        verify_aik_certificate(data, AIK, ANCHORS, at=AT, cache=cache)
        assert len(cache.links) == min(i + 1, 2)
    kept = [c for c, _ in cache.links.ordered_keys()]
    assert kept == leaves[1:]
    # a kept link still has its validity checked: a time outside the leaf's is refused
    with pytest.raises(AikCertificateError):
        verify_aik_certificate(leaves[2], AIK, ANCHORS, at=AT.replace(year=1990), cache=cache)
    # a failed link is never remembered
    rogue = cert("Root CA", OTHER_PRIV, None, ca=True, ku=ku(cert_sign=True))
    with pytest.raises(AikCertificateError):
        verify_aik_certificate(leaves[0], AIK, TrustAnchors((rogue,)), at=AT, cache=cache)
    assert [c for c, _ in cache.links.ordered_keys()] == leaves[1:]
    # the parsed certificates are the cache's too, and the module keeps none
    assert aikmod.load_aik_certificate(leaves[2], cache) is aikmod.load_aik_certificate(
        leaves[2], cache)
    assert aikmod.load_aik_certificate(leaves[2]) is not aikmod.load_aik_certificate(leaves[2])


def _ca_with_undecodable_extension() -> x509.Certificate:
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root CA")]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root CA")]))
         .public_key(CA_PRIV.public_key()).serial_number(0xABCDEF)
         .not_valid_before(START).not_valid_after(END)
         .add_extension(x509.UnrecognizedExtension(x509.oid.ExtensionOID.KEY_USAGE,
                                                   b"\x04\x02garbage"), critical=True))
    return b.sign(CA_PRIV, hashes.SHA256())


def test_undecodable_anchor_extensions() -> None:
    bad = _ca_with_undecodable_extension()
    with pytest.raises(AikCertificateError) as info:
        TrustAnchors.from_pem([bad.public_bytes(serialization.Encoding.PEM)])
    assert info.value.reason_code == "trust_anchor_malformed"
    assert str(info.value).startswith("a trust-anchor certificate's extensions cannot be decoded")
    # an anchor that skipped from_pem (built directly) is refused when its extensions are read
    code, msg = refusal(leaf(), TrustAnchors((bad,)))
    assert code == "aik_cert_malformed"
    assert msg.startswith("extensions of abcdef cannot be decoded: ")


def test_certificate_of_exactly_the_size_limit_is_parsed() -> None:
    with pytest.raises(AikCertificateError) as info:
        load_aik_certificate(b"\x30" * MAX_CERT_BYTES)
    assert str(info.value).startswith("AIK certificate cannot be parsed: ")
