"""Policy upload documents: the verified hash vector, the docs' JWS samples, signing round
trips with generated certificates, the Azure SDK's 'RSA256', tampering and trust."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from azure.security.attestation._models import AttestationToken, StoredAttestationPolicy
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bootwatch.errors import InputError, PolicyParsingError, PolicySignatureError
from bootwatch.policy import (
    PolicyDocumentError,
    UntrustedSignerError,
    parse_policy_document,
    policy_certificate_from_payload,
    policy_hash,
    policy_token_hash,
    sign_policy,
    sign_policy_certificate,
    unsigned_policy_jws,
    verify_signed_jws,
)

VECTOR_JWS = (
    "eyJhbGciOiJub25lIn0.eyJBdHRlc3RhdGlvblBvbGljeSI6ICJkbVZ5YzJsdmJqMHhMakE3SUdGMWRHaHZjbWw2"
    "WVhScGIyNXlkV3hsYzNzOVBpQndaWEp0YVhRb0tUdDlPeUJwYzNOMVlXNWpaWEoxYkdWemUzMDcifQ."
)
VECTOR_TEXT = "version=1.0; authorizationrules{=> permit();}; issuancerules{};"
VECTOR_HASH = "pyhI2FKMjRkvpvwS07hLclAyvsi5O4TrnzL5OPsIxzM"
TEXT = "version=1.0; authorizationrules { => permit(); }; issuancerules { };"


def _cert(
    name: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
    *,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def signer() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, _cert("policy signer", key)


def test_hash_vector_from_the_sdk_recording(pc) -> None:
    recording = (
        pc.dir.parent / "sdk-python-recordings" / "test_attestation.test_tpm_attestation.yaml"
    )
    assert VECTOR_JWS in recording.read_text()
    assert policy_token_hash(VECTOR_JWS) == VECTOR_HASH
    assert unsigned_policy_jws(VECTOR_TEXT) == VECTOR_JWS
    doc = parse_policy_document(VECTOR_JWS)
    assert (doc.text, doc.jws, doc.signer, doc.token_hash) == (
        VECTOR_TEXT,
        VECTOR_JWS,
        None,
        VECTOR_HASH,
    )


def test_policy_hash_definition() -> None:
    import hashlib

    inner = base64.urlsafe_b64encode(TEXT.encode()).rstrip(b"=")
    expected = base64.urlsafe_b64encode(hashlib.sha256(inner).digest()).rstrip(b"=").decode()
    assert policy_hash(TEXT) == expected
    assert len(policy_hash(TEXT)) == 43


def test_sdk_unsigned_token_is_identical(pc) -> None:
    """The installed Azure SDK builds the same unsigned JWS bytes (so the same hash)."""
    token = AttestationToken(body=StoredAttestationPolicy(TEXT))
    assert token.to_jwt_string() == unsigned_policy_jws(TEXT)


def test_doc_jws_samples(pc) -> None:
    unsigned = parse_policy_document(pc.read("policy-examples__sgx-default-unsigned.jws").strip())
    assert unsigned.text == pc.read("policy-examples__sgx-default-unsigned.decoded-policy.txt")
    signed = parse_policy_document(pc.read("policy-examples__sgx-default-signed.jws"))
    assert signed.text == pc.read("policy-examples__sgx-default-signed.decoded-policy.txt")
    assert signed.tolerances == ("plain-text-policy-claim",)
    assert signed.signer is not None
    assert signed.signer.subject.rfc4514_string() == "CN=MaaTestCert1"
    # trusted when its own certificate is the trusted signer, untrusted otherwise
    parse_policy_document(
        pc.read("policy-examples__sgx-default-signed.jws"),
        trusted_signers=[signed.signer],
        require_signed=True,
    )


def test_round_trip_and_trust(signer) -> None:
    key, cert = signer
    jws = sign_policy(TEXT, key, cert)
    header = json.loads(base64.urlsafe_b64decode(jws.split(".")[0] + "=="))
    assert header["alg"] == "RS256" and "x5c" in header
    doc = parse_policy_document(jws, trusted_signers=[cert], require_signed=True)
    assert (doc.text, doc.jws, doc.signer, doc.token_hash) == (
        TEXT,
        jws,
        cert,
        policy_token_hash(jws),
    )
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = _cert("someone else", other_key)
    with pytest.raises(UntrustedSignerError):
        parse_policy_document(jws, trusted_signers=[other])
    verified = verify_signed_jws(jws, [cert])
    assert verified.signer == cert and "AttestationPolicy" in verified.payload


def test_sdk_rsa256_signed_policy_is_accepted(signer) -> None:
    """The Azure SDK signs with header {"alg": "RSA256", "jwk": {"x5c": [...]}}."""
    key, cert = signer
    token = AttestationToken(
        body=StoredAttestationPolicy(TEXT),
        signing_key=key,
        signing_certificate=cert,
    )
    jws = token.to_jwt_string()
    assert json.loads(base64.urlsafe_b64decode(jws.split(".")[0] + "=="))["alg"] == "RSA256"
    doc = parse_policy_document(jws, trusted_signers=[cert], require_signed=True)
    assert doc.text == TEXT and doc.signer == cert and doc.tolerances == ("alg-RSA256",)


def test_tampered_signature_and_payload_rejected(signer) -> None:
    key, cert = signer
    jws = sign_policy(TEXT, key, cert)
    head, payload, sig = jws.split(".")
    bad_sig = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    with pytest.raises(PolicySignatureError, match="does not verify"):
        parse_policy_document(f"{head}.{payload}.{bad_sig}")
    other = unsigned_policy_jws("version=1.0; authorizationrules { => deny(); };").split(".")[1]
    with pytest.raises(PolicySignatureError):
        parse_policy_document(f"{head}.{other}.{sig}")


def test_chain_to_a_trusted_ca() -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("policy CA", ca_key, ca=True)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = _cert("leaf signer", leaf_key, ("policy CA", ca_key))
    jws = sign_policy(TEXT, leaf_key, leaf)
    assert parse_policy_document(jws, trusted_signers=[ca]).signer == leaf
    # a trusted certificate that is not a CA does not vouch for others
    not_ca = _cert("policy CA", ca_key)
    with pytest.raises(UntrustedSignerError):
        parse_policy_document(jws, trusted_signers=[not_ca])


def test_require_signed_and_bad_inputs(signer) -> None:
    with pytest.raises(PolicySignatureError, match="only signed"):
        parse_policy_document(TEXT, require_signed=True)
    with pytest.raises(PolicySignatureError, match="alg 'none'"):
        parse_policy_document(unsigned_policy_jws(TEXT), require_signed=True)
    with pytest.raises(PolicySignatureError, match="HS256"):
        parse_policy_document("eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
    with pytest.raises(PolicyDocumentError):
        parse_policy_document(b"\xff\xfe")
    with pytest.raises(PolicyDocumentError, match="AttestationPolicy"):
        parse_policy_document(
            "eyJhbGciOiJub25lIn0."
            + base64.urlsafe_b64encode(b'{"text": "x"}').rstrip(b"=").decode()
            + "."
        )
    with pytest.raises(PolicySignatureError, match="no trusted"):
        verify_signed_jws(sign_policy(TEXT, *signer), [])
    with pytest.raises(PolicySignatureError, match="RS256"):
        verify_signed_jws(unsigned_policy_jws(TEXT), [signer[1]])
    # all of them are BootwatchErrors the service maps to MAA codes
    assert issubclass(PolicyDocumentError, PolicyParsingError)
    assert issubclass(PolicyDocumentError, InputError)


def test_plain_text_and_reset(signer) -> None:
    doc = parse_policy_document(TEXT.encode())
    assert doc.text == TEXT and doc.jws is None and not doc.is_signed
    assert doc.token_hash == policy_token_hash(unsigned_policy_jws(TEXT))
    reset = parse_policy_document("eyJhbGciOiJub25lIn0..")
    assert reset.is_reset
    key, cert = signer
    signed_reset = AttestationToken(body=None, signing_key=key, signing_certificate=cert)
    assert parse_policy_document(signed_reset.to_jwt_string(), trusted_signers=[cert]).is_reset


def test_signer_management_body(signer) -> None:
    key, cert = signer
    new_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    new_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "new signer")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "new signer")]))
        .public_key(new_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(new_key, hashes.SHA256())
    )
    body = sign_policy_certificate(new_cert, key, cert)
    verified = verify_signed_jws(body, [cert])
    assert policy_certificate_from_payload(verified.payload) == new_cert
    with pytest.raises(UntrustedSignerError):
        verify_signed_jws(body, [new_cert])
