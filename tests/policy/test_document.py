"""Policy upload documents: the verified hash vector, the docs' JWS samples, signing round
trips with generated certificates, the Azure SDK's 'RSA256', tampering and trust."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json

import pytest
from azure.security.attestation._models import AttestationToken, StoredAttestationPolicy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootwatch.errors import BootwatchError, InputError, PolicyParsingError, PolicySignatureError
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


# --- hostile signer certificates and headers ------------------------------------------------
# cryptography reads a certificate's names, extensions and key lazily and raises ValueError,
# KeyError or UnsupportedAlgorithm then; x5c entries are decoded when read, so every such
# certificate is a typed error naming the entry (HTTP 400 in the service, one line in the CLI).

#: SubjectPublicKeyInfo.algorithm of an RSA key: SEQUENCE { rsaEncryption, NULL }.
_RSA_SPKI_ALG = bytes.fromhex("300d06092a864886f70d0101010500")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _bad_oid(der: bytes) -> bytes:
    out = bytearray(der)
    out[out.index(_RSA_SPKI_ALG) + 7] = 0x10  # rsaEncryption -> 1.2.840.16.15245.1.1.1
    return bytes(out)


def _bad_name(der: bytes) -> bytes:
    out = bytearray(der)
    out[out.rindex(bytes.fromhex("0603550403")) + 5] = 0x09  # subject CN: string -> REAL
    return bytes(out)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws(header: object, payload: bytes = b"{}", sig: str = "c2ln") -> str:
    return f"{_b64u(json.dumps(header).encode())}.{_b64u(payload)}.{sig}"


def _resign(jws: str, header: dict[str, object]) -> str:
    """The same signed JWS with a different header (signature kept: it no longer matches)."""
    _, payload, sig = jws.split(".")
    return f"{_b64u(json.dumps(header).encode())}.{payload}.{sig}"


@pytest.mark.parametrize("where", ["x5c", "jwk"])
def test_an_x5c_certificate_with_an_unknown_key_oid_is_a_signature_error(signer, where) -> None:
    key, cert = signer
    entry = base64.b64encode(_bad_oid(_der(cert))).decode()
    header = ({"alg": "RS256", "x5c": [entry]} if where == "x5c"
              else {"alg": "RS256", "jwk": {"kty": "RSA", "x5c": [entry]}})
    jws = _resign(sign_policy(TEXT, key, cert), header)
    prefix = "header.x5c[0]" if where == "x5c" else "header.jwk.x5c[0]"
    for call in (lambda: parse_policy_document(jws),
                 lambda: parse_policy_document(jws, trusted_signers=[cert]),
                 lambda: verify_signed_jws(jws, [cert])):
        with pytest.raises(PolicySignatureError, match=r"1\.2\.840\.16\.15245\.1\.1\.1") as info:
            call()
        assert str(info.value).startswith(prefix)
        assert "public key algorithm is not supported" in str(info.value)


def test_an_x5c_certificate_with_undecodable_parts_is_a_document_error(signer) -> None:
    key, cert = signer
    jws = sign_policy(TEXT, key, cert)
    der = _der(cert)
    bad_key = bytearray(der)
    modulus = bad_key.index(b"\x02\x82\x01\x01\x00", bad_key.index(_RSA_SPKI_ALG)) + 4
    bad_key[modulus : modulus + 2] = b"\xff\xf4"  # a negative modulus
    with_ski = x509.load_pem_x509_certificate(
        x509.CertificateBuilder()
        .subject_name(cert.subject).issuer_name(cert.issuer).public_key(cert.public_key())
        .serial_number(7).not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(cert.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    duplicate = bytearray(_der(with_ski))
    duplicate[duplicate.index(bytes.fromhex("0603551d0e")) + 4] = 0x13  # SKI -> a 2nd BC
    version = bytearray(der)
    version[version.index(bytes.fromhex("a003020102")) + 4] = 0x4C  # v3 -> 76
    for bad, part in ((_bad_name(der), "subject or issuer name"), (bytes(bad_key), "public key"),
                      (bytes(duplicate), "extensions .*DuplicateExtension"),
                      (bytes(version), "not a base64 DER X.509 certificate .*76")):
        header = {"alg": "RS256", "x5c": [base64.b64encode(bad).decode()]}
        with pytest.raises(PolicyDocumentError, match=f"header.x5c\\[0\\]: .*{part}"):
            parse_policy_document(_resign(jws, header))
        with pytest.raises(PolicyDocumentError):
            verify_signed_jws(_resign(jws, header), [cert])
    # a bad intermediate is refused as well, not only the leaf
    header = {"alg": "RS256", "x5c": [base64.b64encode(der).decode(),
                                      base64.b64encode(_bad_oid(der)).decode()]}
    with pytest.raises(PolicySignatureError, match=r"header\.x5c\[1\]"):
        verify_signed_jws(_resign(jws, header), [cert])


def test_a_signer_body_whose_certificate_has_an_unknown_key_oid_is_refused(signer) -> None:
    payload = {"policyCertificate": {"kty": "RSA", "x5c": [
        base64.b64encode(_bad_oid(_der(signer[1]))).decode()]}}
    with pytest.raises(PolicySignatureError, match=r"policyCertificate\.x5c\[0\]"):
        policy_certificate_from_payload(payload)


def test_an_unusable_trusted_certificate_means_untrusted_not_a_crash(signer) -> None:
    key = signer[0]
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("policy CA", ca_key, ca=True)
    leaf = _cert("leaf signer", key, ("policy CA", ca_key))
    jws = sign_policy(TEXT, key, leaf)
    unusable_ca = x509.load_der_x509_certificate(_bad_oid(_der(ca)))  # its key is read lazily
    with pytest.raises(UntrustedSignerError):
        parse_policy_document(jws, trusted_signers=[unusable_ca])
    with pytest.raises(UntrustedSignerError):
        verify_signed_jws(jws, [unusable_ca])


@pytest.mark.parametrize(("header", "error", "match"), [
    ({"alg": "RS256", "x5c": "MIIB"}, PolicyDocumentError, r"x5c: expected a list.*not str"),
    ({"alg": "RS256", "x5c": {"0": "MIIB"}}, PolicyDocumentError, "not dict"),
    ({"alg": "RS256", "x5c": [7]}, PolicyDocumentError, r"x5c\[0\]: expected a base64"),
    ({"alg": "RS256", "x5c": ["not base64!"]}, PolicyDocumentError, "not a base64 DER"),
    ({"alg": "RS256", "x5c": [base64.b64encode(b"\x30\x03\x02\x01\x01").decode()]},
     PolicyDocumentError, "not a base64 DER"),
    ({"alg": "RS256", "x5c": []}, PolicySignatureError, "chain is missing"),
    ({"alg": "RS256", "jwk": "x"}, PolicySignatureError, "without a signer certificate"),
    ({"alg": "RS256", "kid": 5}, PolicyDocumentError, "Key ID"),
    ({"alg": ["RS256"]}, PolicySignatureError, "is not accepted"),
    ([1, 2], PolicyDocumentError, "must be a json object"),
])
def test_wrongly_typed_headers_are_typed_errors(signer, header, error, match) -> None:
    jws = _jws(header)
    with pytest.raises(error, match=match):
        parse_policy_document(jws)
    with pytest.raises(error):
        verify_signed_jws(jws, [signer[1]])


def test_a_deeply_nested_header_is_a_document_error(signer) -> None:
    deep = _b64u(b'{"alg":"RS256","x5c":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    for call in (lambda: parse_policy_document(f"{deep}.e30.c2ln"),
                 lambda: verify_signed_jws(f"{deep}.e30.c2ln", [signer[1]])):
        with pytest.raises(PolicyDocumentError, match="JWS header"):
            call()


def _x5c_entries(der: bytes) -> st.SearchStrategy[object]:
    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        out = bytearray(der)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return base64.b64encode(bytes(out[: draw(st.integers(1, len(out)))])).decode()

    b64 = base64.b64encode
    special = st.sampled_from([b64(der).decode(), b64(_bad_oid(der)).decode(),
                               b64(_bad_name(der)).decode()])
    junk = st.one_of(st.binary(max_size=64).map(lambda b: b64(b).decode()),
                     st.text(max_size=16), st.integers(), st.none(), st.booleans())
    kind = st.integers(0, 4)  # explicit weights: hypothesis favours one_of's first arms
    return kind.flatmap(lambda k: mutated() if k < 2 else special if k < 4 else junk)


@given(data=st.data())
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_headers_raise_only_bootwatch_errors(signer, data) -> None:
    key, cert = signer
    signed = sign_policy(TEXT, key, cert)
    entries = _x5c_entries(_der(cert))
    if data.draw(st.integers(0, 3), label="shape"):  # mostly a chain, sometimes a lone value
        x5c = data.draw(st.lists(entries, min_size=1, max_size=3), label="x5c")
    else:
        x5c = data.draw(entries, label="x5c")
    alg = data.draw(st.sampled_from(["RS256", "RSA256", "RS256", "none", "HS256", 5]),
                    label="alg")
    header: dict[str, object] = {"alg": alg}
    if data.draw(st.booleans(), label="in jwk"):
        header["jwk"] = {"kty": "RSA", "x5c": x5c}
    else:
        header["x5c"] = x5c
    head = _b64u(json.dumps(header).encode())
    _, payload, sig = signed.split(".")
    if data.draw(st.booleans(), label="garbage payload"):
        payload = _b64u(data.draw(st.binary(max_size=64), label="payload"))
    jws = f"{head}.{payload}.{sig}"
    for call in (lambda: parse_policy_document(jws),
                 lambda: parse_policy_document(jws, trusted_signers=[cert]),
                 lambda: parse_policy_document(jws, require_signed=True),
                 lambda: verify_signed_jws(jws, [cert])):
        with contextlib.suppress(BootwatchError):
            call()
