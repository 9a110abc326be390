"""TPM 2.0 constants used when reading and checking structures.

Values are from the TCG TPM 2.0 Library, Part 2 (Structures).  Only the
algorithms and tags bootwatch meets in Trusted Launch evidence are named;
anything else is refused with a typed error rather than guessed at.
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes

from bootwatch.tpm.errors import TpmValueError

__all__ = [
    "DIGEST_SIZES",
    "MAX_PCR_INDEX",
    "OBJECT_ATTRIBUTES_RESERVED",
    "OBJECT_ATTRIBUTE_NAMES",
    "TPM_CC_POLICY_PCR",
    "TPM_GENERATED_VALUE",
    "ObjectAttributes",
    "TpmAlg",
    "TpmEccCurve",
    "TpmSt",
    "alg_name",
    "digest",
    "hash_for",
]

#: TPMS_ATTEST.magic, TPM_GENERATED_VALUE: the TPM produced this structure itself.
TPM_GENERATED_VALUE = 0xFF544347

#: TPM_CC_PolicyPCR, used in the PolicyPCR policy-digest update.
TPM_CC_POLICY_PCR = 0x0000017F

#: Highest PCR index bootwatch accepts (24 PCRs on a PC-client TPM).
MAX_PCR_INDEX = 23


class TpmAlg(enum.IntEnum):
    """TPM_ALG_ID values bootwatch understands."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class TpmSt(enum.IntEnum):
    """TPM_ST structure tags of TPMS_ATTEST."""

    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A
    ATTEST_NV_DIGEST = 0x801C


class TpmEccCurve(enum.IntEnum):
    """TPM_ECC_CURVE identifiers."""

    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


class ObjectAttributes(enum.IntFlag):
    """TPMA_OBJECT bits (Part 2, 8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19


#: Bits of TPMA_OBJECT that Part 2 reserves (must be zero).
OBJECT_ATTRIBUTES_RESERVED = 0xFFF0F309

#: Human names of TPMA_OBJECT bits, as the TCG spells them.
OBJECT_ATTRIBUTE_NAMES: dict[ObjectAttributes, str] = {
    ObjectAttributes.FIXED_TPM: "fixedTPM",
    ObjectAttributes.ST_CLEAR: "stClear",
    ObjectAttributes.FIXED_PARENT: "fixedParent",
    ObjectAttributes.SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    ObjectAttributes.USER_WITH_AUTH: "userWithAuth",
    ObjectAttributes.ADMIN_WITH_POLICY: "adminWithPolicy",
    ObjectAttributes.NO_DA: "noDA",
    ObjectAttributes.ENCRYPTED_DUPLICATION: "encryptedDuplication",
    ObjectAttributes.RESTRICTED: "restricted",
    ObjectAttributes.DECRYPT: "decrypt",
    ObjectAttributes.SIGN_ENCRYPT: "sign",
    ObjectAttributes.X509_SIGN: "x509sign",
}

#: Digest sizes of the hash algorithms a TPM bank or name may use.
DIGEST_SIZES: dict[int, int] = {
    TpmAlg.SHA1: 20,
    TpmAlg.SHA256: 32,
    TpmAlg.SHA384: 48,
    TpmAlg.SHA512: 64,
    TpmAlg.SM3_256: 32,
}

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    TpmAlg.SHA1: hashes.SHA1,
    TpmAlg.SHA256: hashes.SHA256,
    TpmAlg.SHA384: hashes.SHA384,
    TpmAlg.SHA512: hashes.SHA512,
}


def alg_name(alg: int) -> str:
    """``TPM_ALG_SHA256``-style name of an algorithm id, or its hex value."""
    try:
        return f"TPM_ALG_{TpmAlg(alg).name}"
    except ValueError:
        return f"0x{alg:04x}"


def hash_for(alg: int) -> hashes.HashAlgorithm | None:
    """The cryptography hash object for a TPM hash algorithm id, or None."""
    cls = _HASHES.get(alg)
    return cls() if cls is not None else None


def digest(alg: int, data: bytes) -> bytes:
    """Hash ``data`` with the TPM hash algorithm ``alg``.

    Raises TpmValueError when bootwatch cannot compute ``alg`` (e.g. SM3_256, which a
    PCR bank may use but cryptography is not asked to provide).
    """
    h = hash_for(alg)
    if h is None:
        raise TpmValueError(f"hash algorithm {alg_name(alg)} is not supported (SHA-1, "
                            "SHA-256, SHA-384 and SHA-512 are)")
    ctx = hashes.Hash(h)
    ctx.update(data)
    return ctx.finalize()
