"""TPMT_PUBLIC / TPM2B_PUBLIC against tpm2-pytss and hand-written bytes (issue 17).

Keys are marshalled by tpm2-pytss (the TSS's own TPMT_PUBLIC) and their names computed
by it, so bootwatch's parser, name computation and test-evidence marshaller are pinned
against an independent implementation; every refusal names its field and byte offset.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC

from bootwatch.errors import TpmStructureError
from bootwatch.lru import BoundedLru
from bootwatch.tpm.constants import ObjectAttributes, TpmAlg
from bootwatch.tpm.marshal import tpm2b
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

SIGN = TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.RESTRICTED
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
N = RSA_KEY.public_key().public_numbers().n.to_bytes(256, "big")
EC_KEY = ec.generate_private_key(ec.SECP384R1())
EX = EC_KEY.public_key().public_numbers().x.to_bytes(48, "big")
EY = EC_KEY.public_key().public_numbers().y.to_bytes(48, "big")


def pytss(spec: str, attrs: int = SIGN, rsa_n: bytes = N, policy: bytes = b"") -> TPMT_PUBLIC:
    p = TPMT_PUBLIC.parse(spec, objectAttributes=attrs)
    if spec.startswith("rsa"):
        p.unique.rsa = rsa_n
    else:
        p.unique.ecc.x = EX
        p.unique.ecc.y = EY
    if policy:
        p.authPolicy = policy
    return p


def name_of(p: TPMT_PUBLIC) -> bytes:
    return bytes(p.get_name().marshal())[2:]


@pytest.mark.parametrize(
    "spec",
    ["rsa2048:rsassa-sha256:null", "rsa2048:rsapss-sha384:null", "rsa2048:null:aes128cfb",
     "rsa2048:oaep-sha256:null", "rsa2048:rsaes:null", "rsa2048:null:null"],
)
def test_rsa_keys_from_tpm2_pytss(spec: str) -> None:
    p = pytss(spec)
    raw = bytes(p.marshal())
    k = parse_tpmt_public(raw)
    assert k.type == TpmAlg.RSA and k.name == name_of(p) and k.raw == raw
    assert isinstance(k.parameters, RsaParms) and k.parameters.key_bits == 2048
    assert k.unique == N and k.object_attributes == int(SIGN)
    assert k.public_key().public_numbers() == RSA_KEY.public_key().public_numbers()
    again = marshal_tpmt_public(key_type=k.type, name_alg=k.name_alg,
                                object_attributes=int(k.object_attributes),
                                auth_policy=k.auth_policy, parameters=k.parameters,
                                unique=k.unique)
    assert again == raw
    assert parse_tpm2b_public(tpm2b(raw)) == k and k.marshal() == tpm2b(raw)


def test_scheme_and_symmetric_details() -> None:
    k = parse_tpmt_public(bytes(pytss("rsa2048:rsapss-sha384:null").marshal()))
    assert k.parameters.scheme == Scheme(TpmAlg.RSAPSS, TpmAlg.SHA384)
    k = parse_tpmt_public(bytes(pytss("rsa2048:null:aes128cfb",
                                      TPMA_OBJECT.DECRYPT | TPMA_OBJECT.RESTRICTED).marshal()))
    assert k.parameters.symmetric == SymDefObject(TpmAlg.AES, 128, TpmAlg.CFB)
    assert k.parameters.scheme == Scheme(TpmAlg.NULL)
    k = parse_tpmt_public(bytes(pytss("rsa2048:rsaes:null").marshal()))
    assert k.parameters.scheme == Scheme(TpmAlg.RSAES)


def test_ecc_key_from_tpm2_pytss() -> None:
    p = pytss("ecc384:ecdsa-sha384:null")
    raw = bytes(p.marshal())
    k = parse_tpmt_public(raw)
    assert isinstance(k.parameters, EccParms) and k.parameters.curve_id == 0x0004
    assert k.parameters.scheme == Scheme(TpmAlg.ECDSA, TpmAlg.SHA384)
    assert k.parameters.kdf == Scheme(TpmAlg.NULL)
    assert k.unique == EccPoint(EX, EY) and k.name == name_of(p)
    assert k.public_key().public_numbers() == EC_KEY.public_key().public_numbers()
    assert marshal_tpmt_public(key_type=k.type, name_alg=k.name_alg,
                               object_attributes=int(k.object_attributes), auth_policy=b"",
                               parameters=k.parameters, unique=k.unique) == raw


def test_ecdaa_scheme_carries_a_count() -> None:
    raw = marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=int(SIGN),
        auth_policy=b"", parameters=EccParms(SymDefObject(TpmAlg.NULL),
                                             Scheme(TpmAlg.ECDAA, TpmAlg.SHA256, 7), 0x0004,
                                             Scheme(TpmAlg.KDF2, TpmAlg.SHA256)),
        unique=EccPoint(EX, EY))
    k = parse_tpmt_public(raw)
    assert k.parameters.scheme == Scheme(TpmAlg.ECDAA, TpmAlg.SHA256, 7)
    assert isinstance(k.parameters, EccParms)
    assert k.parameters.kdf == Scheme(TpmAlg.KDF2, TpmAlg.SHA256)


def test_auth_policy_of_the_name_algs_size() -> None:
    p = pytss("rsa2048:null:aes128cfb", TPMA_OBJECT.DECRYPT, policy=b"\x07" * 32)
    assert parse_tpmt_public(bytes(p.marshal())).auth_policy == b"\x07" * 32
    raw = bytes(pytss("rsa2048:null:aes128cfb", TPMA_OBJECT.DECRYPT,
                      policy=b"\x07" * 20).marshal())
    e = _err(raw)
    assert (e.field, e.offset) == ("authPolicy", 8)
    assert e.problem == "20 bytes, TPM_ALG_SHA256 digests are 32"


def test_attribute_names_and_has() -> None:
    k = parse_tpmt_public(bytes(pytss("rsa2048:rsassa-sha256:null").marshal()))
    assert k.attribute_names == ("fixedTPM", "restricted", "sign")
    assert k.has(ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED)
    assert not k.has(ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.DECRYPT)


# --- refusals ------------------------------------------------------------------------------------

def _err(data: bytes, fn=parse_tpmt_public) -> TpmStructureError:  # type: ignore[no-untyped-def]
    with pytest.raises(TpmStructureError) as info:
        fn(data)
    if fn is parse_tpmt_public:
        assert info.value.structure == "TPMT_PUBLIC"
    elif fn is parse_tpm2b_public:
        assert info.value.structure == "TPM2B_PUBLIC"
    return info.value


def _rsa_raw(bits: int = 2048, exponent: int = 0, n: bytes = N, attrs: int = int(SIGN)) -> bytes:
    return (struct.pack(">HHI", TpmAlg.RSA, TpmAlg.SHA256, attrs) + tpm2b(b"")
            + struct.pack(">HHHHI", TpmAlg.NULL, TpmAlg.RSASSA, TpmAlg.SHA256, bits, exponent)
            + tpm2b(n))


def test_rsa_parameter_refusals() -> None:
    assert parse_tpmt_public(_rsa_raw(exponent=65537)).parameters.exponent == 65537
    assert parse_tpmt_public(_rsa_raw(exponent=3, n=N)).parameters.exponent == 3
    e = _err(_rsa_raw(bits=2047))
    assert (e.field, e.offset) == ("parameters.rsaDetail.keyBits", 16)
    assert e.problem == "unsupported RSA size 2047"
    for exp in (1, 2, 65536):
        e = _err(_rsa_raw(exponent=exp))
        assert (e.field, e.offset) == ("parameters.rsaDetail.exponent", 18)
        assert e.problem == f"{exp} is no RSA public exponent (0 for 65537, or odd and >= 3)"
    e = _err(_rsa_raw(n=N[:-1]))
    assert (e.field, e.offset) == ("unique.rsa", 22)
    assert e.problem == "modulus is 255 bytes, keyBits says 256"
    e = _err(_rsa_raw(n=N[:-1] + b"\x02"))
    assert (e.field, e.offset) == ("unique.rsa", 22)
    assert e.problem.startswith("no RSA modulus")
    e = _err(_rsa_raw(n=bytes(255) + b"\x03", exponent=3))
    assert e.problem.startswith("no RSA modulus")
    assert parse_tpmt_public(_rsa_raw(n=bytes(255) + b"\x05", exponent=3)).unique[-1] == 5
    for bits in (1024, 3072, 4096):
        n = b"\xc1" * (bits // 8 - 1) + b"\x01"
        assert parse_tpmt_public(_rsa_raw(bits=bits, n=n)).parameters.key_bits == bits


def test_header_refusals() -> None:
    raw = _rsa_raw()
    e = _err(struct.pack(">H", TpmAlg.KEYEDHASH) + raw[2:])
    assert (e.field, e.offset) == ("type", 0)
    assert e.problem == "TPM_ALG_KEYEDHASH: only RSA and ECC keys are supported"
    e = _err(raw[:2] + struct.pack(">H", 0x0099) + raw[4:])
    assert (e.field, e.offset) == ("nameAlg", 2)
    assert e.problem == "0x0099 is not a supported hash algorithm"
    e = _err(raw[:2] + struct.pack(">H", TpmAlg.SM3_256) + raw[4:])
    assert (e.field, e.offset) == ("nameAlg", 2)
    e = _err(_rsa_raw(attrs=int(SIGN) | 0x1))
    assert (e.field, e.offset) == ("objectAttributes", 4)
    assert e.problem == "reserved bits set (0x00000001)"
    e = _err(raw + b"\x00")
    assert (e.field, e.offset) == ("(end)", len(raw))


def test_scheme_refusals() -> None:
    raw = _rsa_raw()
    e = _err(raw[:12] + struct.pack(">H", TpmAlg.ECDSA) + raw[14:])
    assert (e.field, e.offset) == ("parameters.rsaDetail.scheme.scheme", 12)
    assert e.problem == "TPM_ALG_ECDSA not allowed here"
    e = _err(raw[:14] + struct.pack(">H", 0x0099) + raw[16:])
    assert (e.field, e.offset) == ("parameters.rsaDetail.scheme.details.hashAlg", 14)
    ecc = bytes(pytss("ecc384:ecdsa-sha384:null").marshal())
    # kdf: RSAES is never a KDF
    at = 18  # type, nameAlg, attrs, authPolicy(2), sym(2), scheme(4), curve(2)
    assert ecc[at - 2:at] == b"\x00\x04"
    e = _err(ecc[:at] + struct.pack(">H", TpmAlg.RSAES) + ecc[at + 2:])
    assert (e.field, e.offset) == ("parameters.eccDetail.kdf.scheme", at)
    assert e.problem == "TPM_ALG_RSAES not allowed here"
    e = _err(ecc[:at - 2] + b"\x00\x99" + ecc[at:])
    assert (e.field, e.offset) == ("parameters.eccDetail.curveID", at - 2)
    assert e.problem == "unsupported curve 0x0099"
    # a NULL scheme carries no hash: the same key with the scheme's 4 bytes as 2 parses
    k = parse_tpmt_public(ecc[:12] + struct.pack(">H", TpmAlg.NULL) + ecc[16:])
    assert k.parameters.scheme == Scheme(TpmAlg.NULL)


def test_public_key_refusals() -> None:
    bad = marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=int(SIGN),
        auth_policy=b"", parameters=EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL),
                                             0x0004, Scheme(TpmAlg.NULL)),
        unique=EccPoint(EX, bytes(47) + b"\x01"))
    k = parse_tpmt_public(bad)
    with pytest.raises(TpmStructureError) as info:
        k.public_key()
    assert info.value.field == "unique.ecc" and info.value.offset == len(bad) - 100
    assert info.value.problem.startswith("not a point on secp384r1")


def test_tpm2b_public_wrapping() -> None:
    raw = _rsa_raw()
    e = _err(b"\x00\x00", parse_tpm2b_public)
    assert (e.structure, e.field, e.offset) == ("TPM2B_PUBLIC", "size", 0)
    assert e.problem == "empty TPM2B_PUBLIC"
    bad = raw[:16] + struct.pack(">H", 2047) + raw[18:]
    e = _err(tpm2b(bad), parse_tpm2b_public)
    assert (e.structure, e.field, e.offset) == (
        "TPM2B_PUBLIC", "publicArea.parameters.rsaDetail.keyBits", 18)
    e = _err(tpm2b(raw + b"\x00"), parse_tpm2b_public)
    assert (e.field, e.offset) == ("publicArea.(end)", len(raw) + 2)
    e = _err(tpm2b(raw) + b"\x00", parse_tpm2b_public)
    assert (e.structure, e.field, e.offset) == ("TPM2B_PUBLIC", "(end)", len(raw) + 2)
    e = _err(tpm2b(raw)[:-1], parse_tpm2b_public)
    assert (e.field, e.offset) == ("publicArea", 2)


@pytest.mark.parametrize("fn", [parse_tpmt_public, parse_tpm2b_public,
                                parse_public_or_read_public])
def test_whole_size_limit(fn) -> None:  # type: ignore[no-untyped-def]
    e = _err(b"\x01" * 1025, fn)
    assert (e.structure, e.field, e.offset) == (
        "TPMT_PUBLIC" if fn is parse_tpmt_public else "TPM2B_PUBLIC", "(whole)", 0)
    assert e.problem == "1025 bytes exceeds the maximum 1024"
    # 1024 bytes are within the limit: refused for what they hold, not for their size
    assert _err(b"\x01" * 1024, fn).field != "(whole)"


def test_read_public_form_and_cache() -> None:
    p = pytss("rsa2048:rsassa-sha256:null")
    pub = tpm2b(bytes(p.marshal()))
    name = name_of(p)
    k = parse_public_or_read_public(pub + tpm2b(name) + tpm2b(b"\x00\x0b" + bytes(32)))
    assert k.name == name
    other = b"\x00\x0b" + bytes(32)
    e = _err(pub + tpm2b(other) + tpm2b(other), parse_public_or_read_public)
    assert (e.structure, e.field, e.offset) == ("TPM2_ReadPublic response", "name", len(pub))
    assert e.problem == "does not match the name computed from the public area"
    e = _err(pub + tpm2b(name) + tpm2b(other) + b"\x00", parse_public_or_read_public)
    assert e.field == "(end)"
    e = _err(pub + tpm2b(b"\x00" * 67), parse_public_or_read_public)
    assert (e.field, e.offset) == ("name.size", len(pub))
    cache: BoundedLru[bytes, TpmPublic] = BoundedLru(2)
    forms = [pub, pub + tpm2b(name) + tpm2b(b""), pub + tpm2b(name) + tpm2b(b"\x00")]
    for i, data in enumerate(forms):
        assert parse_public_or_read_public(data, cache) == k
        assert len(cache) == min(i + 1, 2)
    assert cache.ordered_keys() == forms[1:]  # the caller's cache, bounded, oldest out
    assert parse_public_or_read_public(forms[1], cache) is parse_public_or_read_public(
        forms[1], cache)
    # without a cache nothing is kept between calls (the module holds no state)
    assert parse_public_or_read_public(forms[1]) is not parse_public_or_read_public(forms[1])
    # an error is never kept
    bad = pub + tpm2b(other) + tpm2b(other)
    _err(bad, lambda d: parse_public_or_read_public(d, cache))
    assert bad not in cache.ordered_keys()


def _direct(parameters, unique, raw: bytes = b"") -> TpmPublic:  # type: ignore[no-untyped-def]
    return TpmPublic(TpmAlg.RSA if isinstance(parameters, RsaParms) else TpmAlg.ECC,
                     TpmAlg.SHA256, ObjectAttributes(int(SIGN)), b"", parameters, unique, raw)


def test_public_key_of_numbers_built_directly() -> None:
    # TpmPublic is a plain dataclass: what the parser would refuse can still be built,
    # and public_key() must then refuse it with a typed error, not a ValueError.
    rsa_params = RsaParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL), 2048, 0)
    even = bytes(255) + b"\x04"  # n = 4: no RSA modulus
    raw = marshal_tpmt_public(key_type=TpmAlg.RSA, name_alg=TpmAlg.SHA256,
                              object_attributes=int(SIGN), auth_policy=b"",
                              parameters=rsa_params, unique=even)
    with pytest.raises(TpmStructureError) as info:
        _direct(rsa_params, even, raw).public_key()
    e = info.value
    assert (e.structure, e.field, e.offset) == ("TPMT_PUBLIC", "unique.rsa", len(raw) - 258)
    assert e.problem.startswith("not a usable RSA public key (")
    with pytest.raises(TpmStructureError) as info:
        _direct(rsa_params, even, b"").public_key()
    assert info.value.offset == 0  # never negative
    ecc_params = EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL), 0x0099,
                          Scheme(TpmAlg.NULL))
    with pytest.raises(TpmStructureError) as info:
        _direct(ecc_params, EccPoint(EX, EY)).public_key()
    assert (info.value.structure, info.value.field, info.value.offset, info.value.problem) == (
        "TPMT_PUBLIC", "parameters.eccDetail.curveID", 0, "unsupported curve 0x0099")
    with pytest.raises(TpmStructureError) as info:
        _direct(rsa_params, EccPoint(EX, EY)).public_key()
    assert (info.value.field, info.value.problem) == (
        "unique", "the unique field does not match the key type")


def test_symmetric_definition_without_sizes_marshals_zeros() -> None:
    raw = marshal_tpmt_public(
        key_type=TpmAlg.RSA, name_alg=TpmAlg.SHA256, object_attributes=int(TPMA_OBJECT.DECRYPT),
        auth_policy=b"", parameters=RsaParms(SymDefObject(TpmAlg.AES), Scheme(TpmAlg.NULL),
                                             2048, 0), unique=N)
    assert raw[10:16] == struct.pack(">HHH", TpmAlg.AES, 0, 0)


def _layout(fields: list[tuple[str, int]]) -> list[str]:
    """The field each byte belongs to, from a hand-written (field, size) layout."""
    return [name for name, size in fields for _ in range(size)]


RSA_AES_FIELDS = [
    ("type", 2), ("nameAlg", 2), ("objectAttributes", 4), ("authPolicy.size", 2),
    ("authPolicy", 32), ("parameters.rsaDetail.symmetric.algorithm", 2),
    ("parameters.rsaDetail.symmetric.keyBits", 2), ("parameters.rsaDetail.symmetric.mode", 2),
    ("parameters.rsaDetail.scheme.scheme", 2), ("parameters.rsaDetail.keyBits", 2),
    ("parameters.rsaDetail.exponent", 4), ("unique.rsa.size", 2), ("unique.rsa", 256)]
ECC_FIELDS = [
    ("type", 2), ("nameAlg", 2), ("objectAttributes", 4), ("authPolicy.size", 2),
    ("parameters.eccDetail.symmetric.algorithm", 2),
    ("parameters.eccDetail.scheme.scheme", 2),
    ("parameters.eccDetail.scheme.details.hashAlg", 2),
    ("parameters.eccDetail.scheme.details.count", 2),
    ("parameters.eccDetail.curveID", 2), ("parameters.eccDetail.kdf.scheme", 2),
    ("parameters.eccDetail.kdf.details.hashAlg", 2),
    ("unique.ecc.x.size", 2), ("unique.ecc.x", 48), ("unique.ecc.y.size", 2),
    ("unique.ecc.y", 48)]


def _rsa_aes() -> bytes:
    return bytes(pytss("rsa2048:null:aes128cfb", TPMA_OBJECT.DECRYPT,
                       policy=b"\x07" * 32).marshal())


def _ecc_ecdaa() -> bytes:
    return marshal_tpmt_public(
        key_type=TpmAlg.ECC, name_alg=TpmAlg.SHA256, object_attributes=int(SIGN),
        auth_policy=b"", parameters=EccParms(SymDefObject(TpmAlg.NULL),
                                             Scheme(TpmAlg.ECDAA, TpmAlg.SHA256, 7), 0x0004,
                                             Scheme(TpmAlg.KDF2, TpmAlg.SHA256)),
        unique=EccPoint(EX, EY))


@pytest.mark.parametrize(("raw", "fields"), [(_rsa_aes(), RSA_AES_FIELDS),
                                             (_ecc_ecdaa(), ECC_FIELDS)], ids=["rsa", "ecc"])
def test_every_truncation_names_its_field(raw: bytes, fields: list[tuple[str, int]]) -> None:
    owner = _layout(fields)
    assert len(owner) == len(raw)
    starts = {name: sum(s for _, s in fields[:i]) for i, (name, _) in enumerate(fields)}
    for cut in range(len(raw)):
        e = _err(raw[:cut])
        assert (e.field, e.offset) == (owner[cut], starts[owner[cut]]), cut
        if cut == 0:
            continue  # an empty TPM2B_PUBLIC is refused for its size (see below)
        # the same inside a TPM2B_PUBLIC whose size covers only what is there
        w = _err(tpm2b(raw[:cut]), parse_tpm2b_public)
        assert (w.field, w.offset) == (f"publicArea.{owner[cut]}", starts[owner[cut]] + 2), cut
        assert w.problem == e.problem


def test_tpm2b_public_size_field() -> None:
    e = _err(b"\x01", parse_tpm2b_public)
    assert (e.structure, e.field, e.offset) == ("TPM2B_PUBLIC", "size", 0)


def test_public_key_is_built_once() -> None:
    k = parse_tpmt_public(_rsa_aes())
    assert k.public_key() is k.public_key()
    e = parse_tpmt_public(_ecc_ecdaa())
    assert e.public_key() is e.public_key()


def test_read_public_qualified_name() -> None:
    p = pytss("rsa2048:rsassa-sha256:null")
    pub = tpm2b(bytes(p.marshal())) + tpm2b(name_of(p))
    assert parse_public_or_read_public(pub + tpm2b(b"\x00\x0d" + bytes(64))).name == name_of(p)
    e = _err(pub + tpm2b(b"\x00\x0d" + bytes(65)), parse_public_or_read_public)
    assert (e.structure, e.field, e.offset) == (
        "TPM2_ReadPublic response", "qualifiedName.size", len(pub))
    e = _err(pub + b"\x00\x05\x00", parse_public_or_read_public)
    assert (e.field, e.offset) == ("qualifiedName", len(pub) + 2)


def test_offsets_of_keys_built_directly_are_never_negative() -> None:
    ecc_params = EccParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL), 0x0004,
                          Scheme(TpmAlg.NULL))
    with pytest.raises(TpmStructureError) as info:
        _direct(ecc_params, EccPoint(EX, bytes(47) + b"\x01"), b"").public_key()
    assert (info.value.field, info.value.offset) == ("unique.ecc", 0)
    rsa_params = RsaParms(SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.NULL), 2048, 0)
    with pytest.raises(TpmStructureError) as info:
        _direct(rsa_params, EccPoint(EX, EY)).public_key()
    assert (info.value.structure, info.value.offset) == ("TPMT_PUBLIC", 0)


def test_modulus_refusal_in_full() -> None:
    e = _err(_rsa_raw(n=N[:-1] + b"\x02"))
    assert e.problem == "no RSA modulus (it must be odd and larger than the exponent)"
    w = _err(tpm2b(_rsa_raw(n=N[:-1] + b"\x02")), parse_tpm2b_public)
    assert w.problem == e.problem
