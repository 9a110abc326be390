"""bootwatch.tpm on the real Trusted Launch structures, software keys, and malformed bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from bootwatch.errors import TpmStructureError
from bootwatch.tpm import (
    ObjectAttributes,
    PcrSelection,
    TpmAlg,
    TpmSignature,
    parse_public_or_read_public,
    parse_tpm2b_public,
    parse_tpms_attest,
    parse_tpmt_public,
    parse_tpmt_signature,
    policy_pcr_digest,
    quote_pcr_digest,
    signature_from_raw,
    verify_signature,
)
from bootwatch.tpm.errors import SignatureError
from bootwatch.tpm.marshal import tpm2b
from bootwatch.tpm.pcr import parse_pcr_selections
from bootwatch.tpm.public import (
    EccParms,
    EccPoint,
    RsaParms,
    Scheme,
    SymDefObject,
    marshal_tpmt_public,
)

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
D = SHARED / "corpus/maa/azure-guest-vm-derived"
EXP = json.loads((D / "expected.json").read_text())
AIK = (D / "aik-pub.tpm2b").read_bytes()
ENC = (D / "enckey-pub.tpm2b").read_bytes()
QUOTE = (D / "pcr-quote.tpms_attest").read_bytes()
CERTIFY = (D / "enckey-certify-info.tpms_attest").read_bytes()


def test_real_aik_and_enc_key() -> None:
    aik = parse_tpm2b_public(AIK)
    e = EXP["aik_pub"]
    assert aik.name.hex() == e["name"]
    assert list(aik.attribute_names) == e["objectAttributes_names"]
    assert int(aik.object_attributes) == int(e["objectAttributes"], 16)
    assert aik.auth_policy.hex() == e["authPolicy"]
    assert isinstance(aik.parameters, RsaParms)
    assert (aik.parameters.scheme.scheme, aik.parameters.scheme.hash_alg) == (
        TpmAlg.RSASSA, TpmAlg.SHA256)
    assert aik.parameters.effective_exponent == 65537 and aik.parameters.exponent == 0
    enc = parse_tpm2b_public(ENC)
    assert enc.name.hex() == EXP["enckey_pub"]["name"]
    assert list(enc.attribute_names) == EXP["enckey_pub"]["objectAttributes_names"]
    assert enc.marshal() == ENC and parse_tpmt_public(ENC[2:]) == enc


def test_real_quote_and_certify() -> None:
    q = parse_tpms_attest(QUOTE)
    e = EXP["pcr_quote"]
    assert q.qualified_signer.hex() == e["qualifiedSigner"] and q.extra_data == b""
    assert (q.clock_info.clock, q.clock_info.reset_count, q.clock_info.restart_count,
            q.clock_info.safe) == (e["clock"], e["resetCount"], e["restartCount"], True)
    assert q.firmware_version == int(e["firmwareVersion"], 16)
    assert q.quote is not None and q.certify is None
    assert q.quote.pcr_selections == (PcrSelection(TpmAlg.SHA256, tuple(e["pcrSelect"][0]["pcrs"]),
                                                   3),)
    assert q.quote.pcr_digest.hex() == e["pcrDigest"]
    c = parse_tpms_attest(CERTIFY)
    assert c.certify is not None
    assert c.certify.name.hex() == EXP["enckey_certify_info"]["certified_name"]
    assert c.certify.qualified_name.hex() == EXP["enckey_certify_info"]["certified_qualifiedName"]


def test_real_digests_and_signatures() -> None:
    pcrs = {int(k): bytes.fromhex(v) for k, v in EXP["pcrs_sha256"].items()}
    sel = parse_tpms_attest(QUOTE).quote.pcr_selections  # type: ignore[union-attr]
    assert quote_pcr_digest(TpmAlg.SHA256, sel, {TpmAlg.SHA256: pcrs}).hex() == \
        EXP["pcr_quote"]["pcrDigest"]
    assert policy_pcr_digest(sel, {TpmAlg.SHA256: pcrs}, policy_hash_alg=TpmAlg.SHA256).hex() \
        == EXP["enckey_pub"]["authPolicy"]
    aik = parse_tpm2b_public(AIK)
    sig = signature_from_raw((D / "pcr-signature.bin").read_bytes(), aik)
    verify_signature(aik, QUOTE, sig)
    assert parse_tpmt_signature(sig.marshal()) == sig
    with pytest.raises(SignatureError) as exc:
        verify_signature(aik, CERTIFY, sig)
    assert exc.value.reason_code == "signature_invalid"
    with pytest.raises(SignatureError) as exc:
        verify_signature(parse_tpm2b_public(ENC), QUOTE, sig)
    assert exc.value.reason_code == "key_not_signing"


def test_read_public_response_form() -> None:
    aik = parse_tpm2b_public(AIK)
    rp = AIK + tpm2b(aik.name) + tpm2b(bytes.fromhex(EXP["pcr_quote"]["qualifiedSigner"]))
    assert parse_public_or_read_public(rp) == aik
    with pytest.raises(TpmStructureError) as exc:
        parse_public_or_read_public(AIK + tpm2b(b"\x00\x0b" + bytes(32)) + tpm2b(b""))
    assert exc.value.field == "name"


def _sign_attrs() -> int:
    return int(ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.FIXED_TPM
               | ObjectAttributes.RESTRICTED)


@pytest.mark.parametrize("curve_id,curve", [(0x0003, ec.SECP256R1()), (0x0004, ec.SECP384R1())])
def test_ecdsa_key_and_signature(curve_id: int, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    nums = key.public_key().public_numbers()
    size = (curve.key_size + 7) // 8
    tpmt = marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=_sign_attrs(),
        auth_policy=b"",
        parameters=EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.ECDSA, TpmAlg.SHA256),
                            curve_id, Scheme(TpmAlg.NULL)),
        unique=EccPoint(nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")))
    pub = parse_tpmt_public(tpmt)
    msg = b"\xffTCG quote"
    r, s = utils.decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    sig = TpmSignature(TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=r.to_bytes(size, "big"),
                       ecdsa_s=s.to_bytes(size, "big"))
    verify_signature(pub, msg, parse_tpmt_signature(sig.marshal()))
    verify_signature(pub, msg, signature_from_raw(sig.ecdsa_r + sig.ecdsa_s, pub))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(pub, msg + b"x", sig)
    wrong = TpmSignature(TpmAlg.ECDSA, TpmAlg.SHA384, ecdsa_r=sig.ecdsa_r, ecdsa_s=sig.ecdsa_s)
    with pytest.raises(SignatureError) as exc:
        verify_signature(pub, msg, wrong)
    assert exc.value.reason_code == "scheme_mismatch"


def test_rsapss_signature() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.public_key().public_numbers().n.to_bytes(256, "big")
    tpmt = marshal_tpmt_public(
        key_type=TpmAlg.RSA, name_alg=TpmAlg.SHA256, object_attributes=_sign_attrs(),
        auth_policy=b"", parameters=RsaParms(SymDefObject(TpmAlg.NULL),
                                             Scheme(TpmAlg.RSAPSS, TpmAlg.SHA256), 2048, 0),
        unique=n)
    pub = parse_tpmt_public(tpmt)
    msg = b"certify info"
    raw = key.sign(msg, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    verify_signature(pub, msg, signature_from_raw(raw, pub))
    with pytest.raises(SignatureError) as exc:
        verify_signature(pub, msg, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=raw))
    assert exc.value.reason_code == "scheme_mismatch"
    with pytest.raises(SignatureError) as exc:
        verify_signature(pub, msg, TpmSignature(TpmAlg.RSAPSS, TpmAlg.SHA256, rsa=raw[:-1]))
    assert exc.value.reason_code == "signature_malformed"


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 10, 40, 100, 300, 311])
def test_every_truncation_of_tpm2b_public_is_typed(cut: int) -> None:
    with pytest.raises(TpmStructureError) as exc:
        parse_tpm2b_public(AIK[:cut])
    assert exc.value.structure == "TPM2B_PUBLIC" and exc.value.offset <= cut


def test_every_truncation_of_tpms_attest_is_typed() -> None:
    for blob in (QUOTE, CERTIFY):
        for cut in range(len(blob)):
            with pytest.raises(TpmStructureError) as exc:
                parse_tpms_attest(blob[:cut])
            assert exc.value.structure == "TPMS_ATTEST"
            assert 0 <= exc.value.offset <= cut


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b + b"\x00", "(end)"),
        (lambda b: b[:4] + b"\x80\x14" + b[6:], "type"),
        (lambda b: b[:6] + b"\x01\x00" + b[8:], "qualifiedSigner.size"),
        (lambda b: b[:-34] + b"\x00\x05" + b[-32:], "attested.quote.pcrDigest"),
        (lambda b: b + b"\x00" * 3000, "(whole)"),
    ],
)
def test_malformed_quote_fields(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TpmStructureError) as exc:
        parse_tpms_attest(mutate(QUOTE))
    assert exc.value.field.startswith(field) or field in exc.value.field


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        (2, b"\x00\x25", "publicArea.type"),  # SYMCIPHER: not RSA/ECC
        (4, b"\x00\x99", "publicArea.nameAlg"),
        (6, b"\x80\x00\x00\x00", "publicArea.objectAttributes"),  # reserved bit
        (10, b"\x00\x10", "publicArea.authPolicy"),  # 16-byte digest for SHA-256
    ],
)
def test_malformed_public_fields(offset: int, value: bytes, field: str) -> None:
    blob = AIK[:offset] + value + AIK[offset + len(value):]
    with pytest.raises(TpmStructureError) as exc:
        parse_tpm2b_public(blob)
    assert exc.value.field.startswith(field)
    assert exc.value.offset == offset


def test_pcr_selection_limits() -> None:
    assert parse_pcr_selections(bytes.fromhex("00000001000b03ff7800")) == (
        PcrSelection(TpmAlg.SHA256, (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14), 3),)
    with pytest.raises(TpmStructureError, match="exceeds"):
        parse_pcr_selections(bytes.fromhex("00000100"))
    with pytest.raises(TpmStructureError, match="beyond PCR"):
        parse_pcr_selections(bytes.fromhex("00000001000b0400000001"))
    with pytest.raises(TpmStructureError, match="not a supported PCR bank"):
        parse_pcr_selections(bytes.fromhex("00000001009903ff0000"))
