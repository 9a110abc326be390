"""TPM2B_PUBLIC / TPMT_PUBLIC: keys as the TPM describes them, and their names.

The evidence check compares names (``nameAlg || H(TPMT_PUBLIC)``) and
attributes of keys the client sends; this module reads every field of the
public area for RSA and ECC keys, so a key can neither hide an attribute
nor smuggle trailing bytes past the name computation.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bootwatch.errors import TpmStructureError
from bootwatch.lru import BoundedLru
from bootwatch.tpm.constants import (
    DIGEST_SIZES,
    OBJECT_ATTRIBUTE_NAMES,
    OBJECT_ATTRIBUTES_RESERVED,
    ObjectAttributes,
    TpmAlg,
    TpmEccCurve,
    alg_name,
    digest,
    hash_for,
)
from bootwatch.tpm.marshal import Reader, tpm2b, u16, u32

__all__ = [
    "MAX_DIGEST_BYTES",
    "MAX_ECC_KEY_BYTES",
    "MAX_PUBLIC_BYTES",
    "MAX_RSA_KEY_BYTES",
    "EccParms",
    "EccPoint",
    "RsaParms",
    "Scheme",
    "SymDefObject",
    "TpmPublic",
    "marshal_tpmt_public",
    "parse_public_or_read_public",
    "parse_tpm2b_public",
    "parse_tpmt_public",
    "read_tpmt_public",
]

#: Largest RSA modulus / ECC coordinate / digest accepted (bytes).
MAX_RSA_KEY_BYTES = 512
MAX_ECC_KEY_BYTES = 128
MAX_DIGEST_BYTES = 64
#: Largest TPM2B_PUBLIC accepted (the TPM's own limit is well under this).
MAX_PUBLIC_BYTES = 1024

_CURVES: dict[int, ec.EllipticCurve] = {
    TpmEccCurve.NIST_P256: ec.SECP256R1(),
    TpmEccCurve.NIST_P384: ec.SECP384R1(),
    TpmEccCurve.NIST_P521: ec.SECP521R1(),
}

_STRUCT = "TPMT_PUBLIC"


@dataclass(frozen=True)
class SymDefObject:
    """TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key (NULL for others)."""

    algorithm: int
    key_bits: int | None = None
    mode: int | None = None


@dataclass(frozen=True)
class Scheme:
    """A signing/encryption/KDF scheme: algorithm and its hash (None for NULL/RSAES)."""

    scheme: int
    hash_alg: int | None = None
    count: int | None = None  # ECDAA only


@dataclass(frozen=True)
class RsaParms:
    """TPMS_RSA_PARMS."""

    symmetric: SymDefObject
    scheme: Scheme
    key_bits: int
    exponent: int  # as marshalled; 0 means 65537

    @property
    def effective_exponent(self) -> int:
        """The public exponent (0 in the structure stands for 65537)."""
        return self.exponent or 65537


@dataclass(frozen=True)
class EccParms:
    """TPMS_ECC_PARMS."""

    symmetric: SymDefObject
    scheme: Scheme
    curve_id: int
    kdf: Scheme


@dataclass(frozen=True)
class EccPoint:
    """TPMS_ECC_POINT."""

    x: bytes
    y: bytes


@dataclass(frozen=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC (RSA or ECC), with the exact bytes it was read from."""

    type: int
    name_alg: int
    object_attributes: ObjectAttributes
    auth_policy: bytes
    parameters: RsaParms | EccParms
    unique: bytes | EccPoint  # RSA modulus, or ECC point
    raw: bytes  # the marshalled TPMT_PUBLIC (no size prefix)

    @property
    def name(self) -> bytes:
        """The TPM name: nameAlg (UINT16) || H_nameAlg(TPMT_PUBLIC)."""
        return u16(self.name_alg) + digest(self.name_alg, self.raw)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """TCG names of the set TPMA_OBJECT bits, in bit order."""
        return tuple(n for bit, n in OBJECT_ATTRIBUTE_NAMES.items() if self.object_attributes & bit)

    def has(self, attribute: ObjectAttributes) -> bool:
        """Whether every bit of ``attribute`` is set."""
        return (self.object_attributes & attribute) == attribute

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as a :mod:`cryptography` public key (built once per instance: the
        quote, the certify and the AIK certificate all need the AIK's).

        Raises TpmStructureError (field ``unique``) when the numbers are no valid key,
        e.g. an ECC point that is not on its curve: parsing checks what it can cheaply,
        cryptography checks the rest here.
        """
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = self.__dict__.get("_key")
        if key is None:
            key = self._build_key()
            object.__setattr__(self, "_key", key)  # a cache, not a field: eq/hash ignore it
        return key

    def _build_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        if isinstance(self.parameters, RsaParms) and isinstance(self.unique, bytes):
            field = "unique.rsa"
            offset = len(self.raw) - len(self.unique) - 2
            try:
                return rsa.RSAPublicNumbers(
                    self.parameters.effective_exponent, int.from_bytes(self.unique, "big")
                ).public_key()
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise TpmStructureError(_STRUCT, field, max(offset, 0),
                                        f"not a usable RSA public key ({exc})") from None
        if isinstance(self.parameters, EccParms) and isinstance(self.unique, EccPoint):
            field = "unique.ecc"
            offset = len(self.raw) - len(self.unique.x) - len(self.unique.y) - 4
            curve = _CURVES.get(self.parameters.curve_id)
            if curve is None:
                raise TpmStructureError(_STRUCT, "parameters.eccDetail.curveID", 0,
                                        f"unsupported curve 0x{self.parameters.curve_id:04x}")
            try:
                return ec.EllipticCurvePublicNumbers(
                    int.from_bytes(self.unique.x, "big"), int.from_bytes(self.unique.y, "big"),
                    curve
                ).public_key()
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise TpmStructureError(_STRUCT, field, max(offset, 0),
                                        f"not a point on {curve.name} ({exc})") from None
        raise TpmStructureError(_STRUCT, "unique", 0,
                                "the unique field does not match the key type")

    def marshal(self) -> bytes:
        """The TPM2B_PUBLIC form (size-prefixed TPMT_PUBLIC)."""
        return tpm2b(self.raw)


def _hash_alg(r: Reader, field: str, *, computable: bool = False) -> int:
    """A hash algorithm id; ``computable``: bootwatch must be able to hash with it (nameAlg)."""
    off = r.offset
    alg = r.u16(field)
    if alg not in DIGEST_SIZES or (computable and hash_for(alg) is None):
        raise r.error(field, f"{alg_name(alg)} is not a supported hash algorithm", offset=off)
    return alg


def _sym_def(r: Reader, field: str) -> SymDefObject:
    alg = r.u16(f"{field}.algorithm")
    if alg == TpmAlg.NULL:
        return SymDefObject(alg)
    return SymDefObject(alg, r.u16(f"{field}.keyBits"), r.u16(f"{field}.mode"))


_HASHED_SCHEMES = {TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP, TpmAlg.ECDSA, TpmAlg.ECDH,
                   TpmAlg.SM2, TpmAlg.ECSCHNORR, TpmAlg.ECMQV, TpmAlg.ECDAA}
_KDF_SCHEMES = {TpmAlg.KDF1_SP800_56A, TpmAlg.KDF2, TpmAlg.KDF1_SP800_108, TpmAlg.NULL}


def _scheme(r: Reader, field: str, allowed: set[int]) -> Scheme:
    off = r.offset
    scheme = r.u16(f"{field}.scheme")
    if scheme == TpmAlg.NULL or scheme == TpmAlg.RSAES:
        if scheme not in allowed:
            raise r.error(f"{field}.scheme", f"{alg_name(scheme)} not allowed here", offset=off)
        return Scheme(scheme)
    if scheme not in allowed:
        raise r.error(f"{field}.scheme", f"{alg_name(scheme)} not allowed here", offset=off)
    h = _hash_alg(r, f"{field}.details.hashAlg")
    count = r.u16(f"{field}.details.count") if scheme == TpmAlg.ECDAA else None
    return Scheme(scheme, h, count)


def _check_digest(r: Reader, field: str, value: bytes, alg: int, off: int) -> None:
    if value and len(value) != DIGEST_SIZES[alg]:
        raise r.error(field, f"{len(value)} bytes, {alg_name(alg)} digests are "
                      f"{DIGEST_SIZES[alg]}", offset=off)


def read_tpmt_public(r: Reader) -> TpmPublic:
    """Read one TPMT_PUBLIC from ``r`` (RSA or ECC) and return it with its raw bytes."""
    start = r.offset
    type_off = r.offset
    key_type = r.u16("type")
    name_alg = _hash_alg(r, "nameAlg", computable=True)
    attr_off = r.offset
    attrs = r.u32("objectAttributes")
    if attrs & OBJECT_ATTRIBUTES_RESERVED:
        raise r.error("objectAttributes",
                      f"reserved bits set (0x{attrs & OBJECT_ATTRIBUTES_RESERVED:08x})",
                      offset=attr_off)
    pol_off = r.offset
    auth_policy = r.tpm2b("authPolicy", MAX_DIGEST_BYTES)
    _check_digest(r, "authPolicy", auth_policy, name_alg, pol_off)
    parameters: RsaParms | EccParms
    unique: bytes | EccPoint
    if key_type == TpmAlg.RSA:
        sym = _sym_def(r, "parameters.rsaDetail.symmetric")
        scheme = _scheme(r, "parameters.rsaDetail.scheme",
                         {TpmAlg.NULL, TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.RSAES, TpmAlg.OAEP})
        bits_off = r.offset
        key_bits = r.u16("parameters.rsaDetail.keyBits")
        if key_bits not in (1024, 2048, 3072, 4096):
            raise r.error("parameters.rsaDetail.keyBits", f"unsupported RSA size {key_bits}",
                          offset=bits_off)
        exp_off = r.offset
        exponent = r.u32("parameters.rsaDetail.exponent")
        if exponent and (exponent < 3 or exponent % 2 == 0):
            raise r.error("parameters.rsaDetail.exponent",
                          f"{exponent} is no RSA public exponent (0 for 65537, or odd and >= 3)",
                          offset=exp_off)
        parameters = RsaParms(sym, scheme, key_bits, exponent)
        mod_off = r.offset
        unique = r.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES)
        if len(unique) != key_bits // 8:
            raise r.error("unique.rsa", f"modulus is {len(unique)} bytes, keyBits says "
                          f"{key_bits // 8}", offset=mod_off)
        modulus = int.from_bytes(unique, "big")
        if modulus % 2 == 0 or modulus <= parameters.effective_exponent:
            raise r.error("unique.rsa", "no RSA modulus (it must be odd and larger than the "
                          "exponent)", offset=mod_off)
    elif key_type == TpmAlg.ECC:
        sym = _sym_def(r, "parameters.eccDetail.symmetric")
        scheme = _scheme(r, "parameters.eccDetail.scheme",
                         {TpmAlg.NULL, TpmAlg.ECDSA, TpmAlg.ECDH, TpmAlg.ECDAA, TpmAlg.SM2,
                          TpmAlg.ECSCHNORR, TpmAlg.ECMQV})
        curve_off = r.offset
        curve = r.u16("parameters.eccDetail.curveID")
        if curve not in _CURVES:
            raise r.error("parameters.eccDetail.curveID", f"unsupported curve 0x{curve:04x}",
                          offset=curve_off)
        kdf = _scheme(r, "parameters.eccDetail.kdf", set(_KDF_SCHEMES))
        parameters = EccParms(sym, scheme, curve, kdf)
        x = r.tpm2b("unique.ecc.x", MAX_ECC_KEY_BYTES)
        y = r.tpm2b("unique.ecc.y", MAX_ECC_KEY_BYTES)
        unique = EccPoint(x, y)
    else:
        raise r.error("type", f"{alg_name(key_type)}: only RSA and ECC keys are supported",
                      offset=type_off)
    raw = r.since(start)
    return TpmPublic(key_type, name_alg, ObjectAttributes(attrs), auth_policy, parameters,
                     unique, raw)


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a bare TPMT_PUBLIC (no size prefix); the whole buffer must be used."""
    if len(data) > MAX_PUBLIC_BYTES:
        raise TpmStructureError(_STRUCT, "(whole)", 0, f"{len(data)} bytes exceeds the maximum "
                                f"{MAX_PUBLIC_BYTES}")
    r = Reader(data, _STRUCT)
    pub = read_tpmt_public(r)
    r.expect_end()
    return pub


def _read_tpm2b_public(r: Reader) -> TpmPublic:
    size = r.u16("size")
    if size == 0:
        raise r.error("size", "empty TPM2B_PUBLIC", offset=0)
    body = r.take(size, "publicArea")
    inner = Reader(body, "TPM2B_PUBLIC.publicArea")
    try:
        pub = read_tpmt_public(inner)
        inner.expect_end()
    except TpmStructureError as exc:
        raise TpmStructureError("TPM2B_PUBLIC", f"publicArea.{exc.field}", exc.offset + 2,
                                exc.problem) from None
    return pub


def parse_tpm2b_public(data: bytes) -> TpmPublic:
    """Parse a TPM2B_PUBLIC (UINT16 size, then a TPMT_PUBLIC of exactly that size)."""
    if len(data) > MAX_PUBLIC_BYTES:
        raise TpmStructureError("TPM2B_PUBLIC", "(whole)", 0,
                                f"{len(data)} bytes exceeds the maximum {MAX_PUBLIC_BYTES}")
    r = Reader(data, "TPM2B_PUBLIC")
    pub = _read_tpm2b_public(r)
    r.expect_end()
    return pub


def parse_public_or_read_public(
    data: bytes, cache: BoundedLru[bytes, TpmPublic] | None = None
) -> TpmPublic:
    """Parse a key as clients send ``AikPub``: a TPM2B_PUBLIC, or a TPM2_ReadPublic response.

    The ReadPublic form is TPM2B_PUBLIC, then TPM2B_NAME name and TPM2B_NAME
    qualifiedName.  Its name must equal the name computed from the public
    area (a mismatch means the buffer was spliced together).  ``cache`` (owned
    by the caller, keyed by the exact bytes): a VM sends the same AIK on every
    attestation and the result is immutable; errors are never kept.
    """
    data = bytes(data)
    if cache is None:
        return _parse_public_or_read_public(data)
    return cache.get_or_compute(data, lambda: _parse_public_or_read_public(data))


def _parse_public_or_read_public(data: bytes) -> TpmPublic:
    if len(data) > MAX_PUBLIC_BYTES:
        raise TpmStructureError("TPM2B_PUBLIC", "(whole)", 0,
                                f"{len(data)} bytes exceeds the maximum {MAX_PUBLIC_BYTES}")
    r = Reader(data, "TPM2B_PUBLIC")
    pub = _read_tpm2b_public(r)
    if r.remaining == 0:
        return pub
    r.structure = "TPM2_ReadPublic response"
    name_off = r.offset
    name = r.tpm2b("name", 2 + MAX_DIGEST_BYTES)
    r.tpm2b("qualifiedName", 2 + MAX_DIGEST_BYTES)
    r.expect_end()
    if name != pub.name:
        raise r.error("name", "does not match the name computed from the public area",
                      offset=name_off)
    return pub


def marshal_tpmt_public(
    *,
    key_type: int,
    name_alg: int,
    object_attributes: int,
    auth_policy: bytes,
    parameters: RsaParms | EccParms,
    unique: bytes | EccPoint,
) -> bytes:
    """Marshal a TPMT_PUBLIC (used to build test evidence and by the agent's checks)."""
    out = u16(key_type) + u16(name_alg) + u32(object_attributes) + tpm2b(auth_policy)

    def sym(s: SymDefObject) -> bytes:
        if s.algorithm == TpmAlg.NULL:
            return u16(s.algorithm)
        return u16(s.algorithm) + u16(s.key_bits or 0) + u16(s.mode or 0)

    def sch(s: Scheme) -> bytes:
        b = u16(s.scheme)
        if s.hash_alg is not None:
            b += u16(s.hash_alg)
        if s.count is not None:
            b += u16(s.count)
        return b

    if isinstance(parameters, RsaParms):
        assert isinstance(unique, bytes)
        out += sym(parameters.symmetric) + sch(parameters.scheme)
        out += u16(parameters.key_bits) + u32(parameters.exponent) + tpm2b(unique)
    else:
        assert isinstance(unique, EccPoint)
        out += sym(parameters.symmetric) + sch(parameters.scheme) + u16(parameters.curve_id)
        out += sch(parameters.kdf) + tpm2b(unique.x) + tpm2b(unique.y)
    return out
