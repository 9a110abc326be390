"""TPM signatures against bytes and keys bootwatch did not make (issue 17).

TPMT_SIGNATURE bytes come from tpm2-pytss or are written by hand (TPM 2.0 Part 2,
11.3.4); signatures are made with software keys (``cryptography``) in each scheme a TPM
uses (RSASSA, RSAPSS, ECDSA) and each is checked to verify, to fail when anything is
changed, and to fail with its own reason code and message.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPM2B_ECC_PARAMETER, TPM2B_PUBLIC_KEY_RSA, TPMT_SIGNATURE

from bootwatch.errors import TpmStructureError
from bootwatch.tpm.constants import ObjectAttributes, TpmAlg
from bootwatch.tpm.errors import SignatureError
from bootwatch.tpm.public import (
    EccParms,
    EccPoint,
    RsaParms,
    Scheme,
    SymDefObject,
    TpmPublic,
    marshal_tpmt_public,
    parse_tpmt_public,
)
from bootwatch.tpm.signature import (
    MAX_SIGNATURE_BYTES,
    TpmSignature,
    parse_tpmt_signature,
    signature_from_raw,
    verify_signature,
)

SIGN = int(ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.FIXED_TPM
           | ObjectAttributes.RESTRICTED)
MSG = b"\xffTCG\x80\x18 a quote"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
HASHES = {TpmAlg.SHA1: hashes.SHA1(), TpmAlg.SHA256: hashes.SHA256(),
          TpmAlg.SHA384: hashes.SHA384()}


def rsa_pub(scheme: Scheme, attrs: int = SIGN, bits: int = 2048,
            key: rsa.RSAPrivateKey = RSA_KEY) -> TpmPublic:
    n = key.public_key().public_numbers().n.to_bytes(bits // 8, "big")
    return parse_tpmt_public(marshal_tpmt_public(
        key_type=TpmAlg.RSA, name_alg=TpmAlg.SHA256, object_attributes=attrs, auth_policy=b"",
        parameters=RsaParms(SymDefObject(TpmAlg.NULL), scheme, bits, 0), unique=n))


def ec_pub(scheme: Scheme, attrs: int = SIGN) -> TpmPublic:
    nums = EC_KEY.public_key().public_numbers()
    return parse_tpmt_public(marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=attrs, auth_policy=b"",
        parameters=EccParms(SymDefObject(TpmAlg.NULL), scheme, 0x0003, Scheme(TpmAlg.NULL)),
        unique=EccPoint(nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big"))))


def rsassa(h: int = TpmAlg.SHA256, msg: bytes = MSG) -> bytes:
    return RSA_KEY.sign(msg, padding.PKCS1v15(), HASHES[h])


def rsapss(h: int = TpmAlg.SHA256) -> bytes:
    return RSA_KEY.sign(MSG, padding.PSS(mgf=padding.MGF1(HASHES[h]),
                                         salt_length=padding.PSS.DIGEST_LENGTH), HASHES[h])


def ecdsa(h: int = TpmAlg.SHA256) -> tuple[bytes, bytes]:
    r, s = utils.decode_dss_signature(EC_KEY.sign(MSG, ec.ECDSA(HASHES[h])))
    return r.to_bytes(32, "big"), s.to_bytes(32, "big")


def reason(key: TpmPublic, sig: TpmSignature, msg: bytes = MSG) -> tuple[str, str]:
    with pytest.raises(SignatureError) as info:
        verify_signature(key, msg, sig)
    return info.value.reason_code, str(info.value)


# --- TPMT_SIGNATURE --------------------------------------------------------------------------

def _pytss_rsa(alg: int, h: int, sig: bytes) -> bytes:
    s = TPMT_SIGNATURE(sigAlg=alg)
    body = s.signature.rsassa if alg == TPM2_ALG.RSASSA else s.signature.rsapss
    body.hash = h
    body.sig = TPM2B_PUBLIC_KEY_RSA(sig)
    return bytes(s.marshal())


def _pytss_ecdsa(h: int, r: bytes, s_: bytes) -> bytes:
    s = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA)
    s.signature.ecdsa.hash = h
    s.signature.ecdsa.signatureR = TPM2B_ECC_PARAMETER(r)
    s.signature.ecdsa.signatureS = TPM2B_ECC_PARAMETER(s_)
    return bytes(s.marshal())


def test_tpmt_signature_from_tpm2_pytss() -> None:
    raw = rsassa()
    data = _pytss_rsa(TPM2_ALG.RSASSA, TPM2_ALG.SHA256, raw)
    sig = parse_tpmt_signature(data)
    assert sig == TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=raw)
    assert sig.marshal() == data
    verify_signature(rsa_pub(Scheme(TpmAlg.RSASSA, TpmAlg.SHA256)), MSG, sig)
    pss = _pytss_rsa(TPM2_ALG.RSAPSS, TPM2_ALG.SHA384, b"\x01" * 256)
    assert parse_tpmt_signature(pss) == TpmSignature(TpmAlg.RSAPSS, TpmAlg.SHA384,
                                                     rsa=b"\x01" * 256)
    assert parse_tpmt_signature(pss).marshal() == pss
    r, s = ecdsa()
    data = _pytss_ecdsa(TPM2_ALG.SHA256, r, s)
    sig = parse_tpmt_signature(data)
    assert sig == TpmSignature(TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=r, ecdsa_s=s)
    assert sig.marshal() == data
    verify_signature(ec_pub(Scheme(TpmAlg.ECDSA, TpmAlg.SHA256)), MSG, sig)


def _perr(data: bytes) -> TpmStructureError:
    with pytest.raises(TpmStructureError) as info:
        parse_tpmt_signature(data)
    assert info.value.structure == "TPMT_SIGNATURE"
    return info.value


def test_tpmt_signature_errors() -> None:
    e = _perr(bytes.fromhex("0014000d") + b"\x00" * (MAX_SIGNATURE_BYTES - 3))
    assert (e.field, e.offset) == ("(whole)", 0)
    assert e.problem == f"{MAX_SIGNATURE_BYTES + 1} bytes exceeds the maximum 1024"
    assert parse_tpmt_signature(bytes.fromhex("0014000b0200") + bytes(0x200)).rsa == bytes(512)
    e = _perr(bytes.fromhex("0014000b0201") + bytes(0x201))
    assert (e.field, e.offset) == ("signature.sig.size", 4)
    e = _perr(bytes.fromhex("00140099") + bytes(4))
    assert (e.field, e.offset) == ("signature.hash", 2)
    assert e.problem.endswith("is not a supported hash")
    e = _perr(bytes.fromhex("0005000b0000"))  # HMAC
    assert (e.field, e.offset) == ("sigAlg", 0)
    assert e.problem.endswith("is not RSASSA, RSAPSS or ECDSA")
    e = _perr(bytes.fromhex("0018000b0080") + bytes(128) + bytes.fromhex("0081") + bytes(129))
    assert (e.field, e.offset) == ("signature.signatureS.size", 134)
    e = _perr(bytes.fromhex("0018000b0081") + bytes(129))
    assert (e.field, e.offset) == ("signature.signatureR.size", 4)
    e = _perr(bytes.fromhex("0014000b000101") + b"\x00")
    assert (e.field, e.offset) == ("(end)", 7)
    e = _perr(bytes.fromhex("0014"))
    assert (e.field, e.offset) == ("signature.hash", 2)
    e = _perr(b"\x00")
    assert (e.field, e.offset) == ("sigAlg", 0)


# --- raw signatures (AzureGuest) ---------------------------------------------------------------

def test_raw_signature_in_the_keys_scheme() -> None:
    raw = rsassa()
    assert signature_from_raw(raw, rsa_pub(Scheme(TpmAlg.NULL))) == TpmSignature(
        TpmAlg.RSASSA, TpmAlg.SHA256, rsa=raw)
    assert signature_from_raw(raw, rsa_pub(Scheme(TpmAlg.RSAPSS, TpmAlg.SHA384))) == (
        TpmSignature(TpmAlg.RSAPSS, TpmAlg.SHA384, rsa=raw))
    r, s = ecdsa()
    assert signature_from_raw(r + s, ec_pub(Scheme(TpmAlg.NULL))) == TpmSignature(
        TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=r, ecdsa_s=s)
    assert signature_from_raw(r + s, ec_pub(Scheme(TpmAlg.ECDSA, TpmAlg.SHA384))).hash_alg == (
        TpmAlg.SHA384)
    assert signature_from_raw(b"ab", ec_pub(Scheme(TpmAlg.NULL))) == TpmSignature(
        TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=b"a", ecdsa_s=b"b")


@pytest.mark.parametrize(
    ("raw", "key", "code", "message"),
    [
        (b"\x01" * (MAX_SIGNATURE_BYTES + 1), "rsa-null", "signature_malformed",
         "signature is 1025 bytes, over 1024"),
        (b"\x01" * 3, "ecc-null", "signature_malformed", "raw ECDSA signature must be r || s"),
        (b"", "ecc-null", "signature_malformed", "raw ECDSA signature must be r || s"),
        (b"\x01" * 4, "rsa-oaep", "key_not_signing",
         "key scheme TPM_ALG_OAEP is not a signing scheme"),
        (b"\x01" * 4, "ecc-ecdh", "key_not_signing", "key scheme TPM_ALG_ECDH is not ECDSA"),
    ],
)
def test_raw_signature_refusals(raw: bytes, key: str, code: str, message: str) -> None:
    keys = {"rsa-null": lambda: rsa_pub(Scheme(TpmAlg.NULL)),
            "ecc-null": lambda: ec_pub(Scheme(TpmAlg.NULL)),
            "rsa-oaep": lambda: rsa_pub(Scheme(TpmAlg.OAEP, TpmAlg.SHA256),
                                        attrs=int(ObjectAttributes.DECRYPT)),
            "ecc-ecdh": lambda: ec_pub(Scheme(TpmAlg.ECDH, TpmAlg.SHA256),
                                       attrs=int(ObjectAttributes.DECRYPT))}
    with pytest.raises(SignatureError) as info:
        signature_from_raw(raw, keys[key]())
    assert (info.value.reason_code, str(info.value)) == (code, message)


def test_max_size_raw_signature_is_read() -> None:
    raw = b"\x01" * MAX_SIGNATURE_BYTES
    assert signature_from_raw(raw, rsa_pub(Scheme(TpmAlg.NULL))).rsa == raw


# --- verification ---------------------------------------------------------------------------------

@pytest.mark.parametrize("h", [TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384])
def test_every_scheme_verifies_and_detects_a_change(h: int) -> None:
    for key, sig in (
        (rsa_pub(Scheme(TpmAlg.RSASSA, h)), TpmSignature(TpmAlg.RSASSA, h, rsa=rsassa(h))),
        (rsa_pub(Scheme(TpmAlg.RSAPSS, h)), TpmSignature(TpmAlg.RSAPSS, h, rsa=rsapss(h))),
        (ec_pub(Scheme(TpmAlg.ECDSA, h)), TpmSignature(TpmAlg.ECDSA, h, b"", *ecdsa(h))),
    ):
        verify_signature(key, MSG, sig)
        assert reason(key, sig, MSG + b"!") == (
            "signature_invalid", "the signature does not verify with this key")


def test_null_scheme_key_accepts_any_scheme_it_can_check() -> None:
    key = rsa_pub(Scheme(TpmAlg.NULL))
    verify_signature(key, MSG, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=rsassa()))
    verify_signature(key, MSG, TpmSignature(TpmAlg.RSAPSS, TpmAlg.SHA256, rsa=rsapss()))


def test_key_without_sign_attribute() -> None:
    key = rsa_pub(Scheme(TpmAlg.NULL), attrs=int(ObjectAttributes.DECRYPT))
    assert reason(key, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=rsassa())) == (
        "key_not_signing", "the signing key does not have the sign attribute")


def test_scheme_mismatch_names_both_schemes() -> None:
    key = rsa_pub(Scheme(TpmAlg.RSASSA, TpmAlg.SHA256))
    assert reason(key, TpmSignature(TpmAlg.RSAPSS, TpmAlg.SHA256, rsa=rsapss())) == (
        "scheme_mismatch", "signature is TPM_ALG_RSAPSS/TPM_ALG_SHA256 but the key is restricted "
        "to TPM_ALG_RSASSA/TPM_ALG_SHA256")
    assert reason(key, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA1, rsa=rsassa(TpmAlg.SHA1)))[0] == (
        "scheme_mismatch")


def test_signature_of_the_wrong_key_type() -> None:
    r, s = ecdsa()
    assert reason(rsa_pub(Scheme(TpmAlg.NULL)), TpmSignature(
        TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=r, ecdsa_s=s)) == (
        "scheme_mismatch", "ECDSA signature but the key is not ECC")
    assert reason(ec_pub(Scheme(TpmAlg.NULL)), TpmSignature(
        TpmAlg.RSASSA, TpmAlg.SHA256, rsa=rsassa())) == (
        "scheme_mismatch", "RSA signature but the key is not RSA")


def test_rsa_signature_length_must_match_the_key() -> None:
    key = rsa_pub(Scheme(TpmAlg.NULL))
    assert reason(key, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=rsassa()[1:])) == (
        "signature_malformed", "RSA signature is 255 bytes, the key is 2048 bits")
    assert reason(key, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=rsassa() + b"\x00"))[0] == (
        "signature_malformed")


def test_unknown_hash_and_scheme() -> None:
    key = rsa_pub(Scheme(TpmAlg.NULL))
    code, msg = reason(key, TpmSignature(TpmAlg.RSASSA, 0x0099, rsa=rsassa()))
    assert code == "signature_malformed" and msg.startswith("unsupported signature hash")
    code, msg = reason(key, TpmSignature(TpmAlg.HMAC, TpmAlg.SHA256, rsa=rsassa()))
    assert code == "signature_malformed" and msg.startswith("unsupported signature scheme")


def test_rsa_signature_value_beyond_the_modulus_is_malformed_or_invalid() -> None:
    key = rsa_pub(Scheme(TpmAlg.NULL))
    code, _ = reason(key, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=b"\xff" * 256))
    assert code in ("signature_invalid", "signature_malformed")


def test_ecdsa_signature_marshal_round_trip() -> None:
    r, s = ecdsa()
    sig = TpmSignature(TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=r, ecdsa_s=s)
    assert sig.marshal() == _pytss_ecdsa(TPM2_ALG.SHA256, r, s)
    rs = TpmSignature(TpmAlg.RSAPSS, TpmAlg.SHA256, rsa=b"\x05" * 3)
    assert rs.marshal() == _pytss_rsa(TPM2_ALG.RSAPSS, TPM2_ALG.SHA256, b"\x05" * 3)


def test_key_restricted_to_a_scheme_without_hash() -> None:
    key = rsa_pub(Scheme(TpmAlg.RSAES))  # sign attribute, but an encryption scheme
    assert reason(key, TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=rsassa())) == (
        "scheme_mismatch", "signature is TPM_ALG_RSASSA/TPM_ALG_SHA256 but the key is "
        "restricted to TPM_ALG_RSAES/0x0000")


def test_key_that_is_no_usable_public_key() -> None:
    nums = EC_KEY.public_key().public_numbers()
    off_curve = parse_tpmt_public(marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=SIGN, auth_policy=b"",
        parameters=EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL), 0x0003,
                            Scheme(TpmAlg.NULL)),
        unique=EccPoint(nums.x.to_bytes(32, "big"), bytes(31) + b"\x01")))
    r, s = ecdsa()
    code, msg = reason(off_curve, TpmSignature(TpmAlg.ECDSA, TpmAlg.SHA256, ecdsa_r=r, ecdsa_s=s))
    assert code == "key_malformed"
    assert msg.startswith("the signing key is no usable public key: TPMT_PUBLIC.unique.ecc")


def test_tpmt_signature_of_exactly_the_size_limit_is_read() -> None:
    e = _perr(bytes.fromhex("0014000b03fc") + bytes(1018))  # 1024 bytes: judged by its fields
    assert (e.field, e.offset) == ("signature.sig.size", 4)
