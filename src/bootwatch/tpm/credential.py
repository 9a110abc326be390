"""TPM2_MakeCredential in software: protect a secret so only one TPM's EK can release it,
and only for one named key (TPM 2.0 Part 1 §24 "Credential Protection", Part 3 §12.6).

Why in Python rather than shelling out to ``tpm2_makecredential``: the service runs it
for every enrolment, on untrusted EK public areas, and must not depend on a TPM or a
subprocess.  The construction, as the TPM checks it in TPM2_ActivateCredential:

* a random ``seed`` of the EK nameAlg's digest size, shared with the EK: for an RSA EK,
  RSA-OAEP (hash = nameAlg, label ``"IDENTITY\\0"``); for an ECC EK, one-pass ECDH with an
  ephemeral key and KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, ek.x);
* ``symKey = KDFa(nameAlg, seed, "STORAGE", name(AIK), "", EK symmetric key bits)``;
  ``encIdentity = AES-CFB(symKey, IV=0, TPM2B_DIGEST(credential))``;
* ``HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits)``;
  ``outerHMAC = HMAC(HMACkey, encIdentity || name(AIK))``;
* ``credentialBlob`` = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity) and
  ``secret`` = TPM2B_ENCRYPTED_SECRET(OAEP ciphertext, or the ephemeral TPMS_ECC_POINT).

Because the AIK's name is in both the HMAC and the symmetric key, the TPM refuses to
activate the credential for any key other than the one named; because only the EK can
recover the seed, only that TPM can.  Verified against swtpm's TPM2_ActivateCredential in
tests/tpm/test_credential.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB under "decrepit" (the TPM still uses it)
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from bootwatch.tpm.constants import TpmAlg
from bootwatch.tpm.errors import TpmValueError
from bootwatch.tpm.marshal import tpm2b, u32
from bootwatch.tpm.public import EccParms, EccPoint, RsaParms, TpmPublic

__all__ = [
    "IDENTITY_LABEL",
    "MAX_CREDENTIAL_BYTES",
    "MadeCredential",
    "kdfa",
    "kdfe",
    "make_credential",
]

#: Label of the seed's asymmetric protection (with its terminating zero octet).
IDENTITY_LABEL = b"IDENTITY\x00"
#: TPM2B_DIGEST bound: a credential is at most the largest digest a TPM supports.
MAX_CREDENTIAL_BYTES = 64

_HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    int(TpmAlg.SHA1): ("sha1", hashes.SHA1),
    int(TpmAlg.SHA256): ("sha256", hashes.SHA256),
    int(TpmAlg.SHA384): ("sha384", hashes.SHA384),
    int(TpmAlg.SHA512): ("sha512", hashes.SHA512),
}
_CURVE_BYTES = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}


@dataclass(frozen=True)
class MadeCredential:
    """TPM2_MakeCredential's two outputs, marshalled as the TPM takes them."""

    #: TPM2B_ID_OBJECT (size || TPM2B_DIGEST integrityHMAC || encIdentity)
    credential_blob: bytes
    #: TPM2B_ENCRYPTED_SECRET (size || OAEP ciphertext or TPMS_ECC_POINT)
    encrypted_secret: bytes


def _hash(alg: int) -> tuple[str, type[hashes.HashAlgorithm]]:
    try:
        return _HASHES[alg]
    except KeyError:
        raise TpmValueError(f"hash algorithm 0x{alg:04x} cannot protect a credential") from None


def _label(label: bytes) -> bytes:
    return label if label.endswith(b"\x00") else label + b"\x00"


def kdfa(alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2): SP 800-108 counter-mode HMAC, label zero-terminated."""
    name, _ = _hash(alg)
    out = bytearray()
    counter = 1
    fixed = _label(label) + context_u + context_v + u32(bits)
    while len(out) * 8 < bits:
        out += hmac.new(key, u32(counter) + fixed, name).digest()
        counter += 1
    return _truncate(bytes(out), bits)


def kdfe(alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3): SP 800-56A concatenation KDF, label zero-terminated."""
    name, _ = _hash(alg)
    out = bytearray()
    counter = 1
    while len(out) * 8 < bits:
        out += hashlib.new(name, u32(counter) + z + _label(label) + party_u + party_v).digest()
        counter += 1
    return _truncate(bytes(out), bits)


def _truncate(data: bytes, bits: int) -> bytes:
    n = (bits + 7) // 8
    cut = bytearray(data[:n])
    if bits % 8:
        cut[0] &= (1 << (bits % 8)) - 1
    return bytes(cut)


def _seed_rsa(ek: TpmPublic, key: rsa.RSAPublicKey, digest_size: int) -> tuple[bytes, bytes]:
    _, hash_cls = _hash(ek.name_alg)
    seed = os.urandom(digest_size)
    try:
        encrypted = key.encrypt(seed, padding.OAEP(mgf=padding.MGF1(hash_cls()),
                                                   algorithm=hash_cls(), label=IDENTITY_LABEL))
    except ValueError as exc:  # a key too small for OAEP with its name algorithm
        raise TpmValueError(f"the {key.key_size}-bit RSA EK cannot carry an OAEP seed of "
                            f"its name algorithm ({exc})") from None
    return seed, encrypted


def _seed_ecc(ek: TpmPublic, key: ec.EllipticCurvePublicKey, digest_size: int
              ) -> tuple[bytes, bytes]:
    size = _CURVE_BYTES.get(key.curve.name)
    if size is None:  # pragma: no cover - public.py only builds the curves listed
        raise TpmValueError(f"curve {key.curve.name} cannot protect a credential")
    ephemeral = ec.generate_private_key(key.curve)
    z = ephemeral.exchange(ec.ECDH(), key).rjust(size, b"\x00")
    nums = ephemeral.public_key().public_numbers()
    ex, ey = nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")
    assert isinstance(ek.unique, EccPoint)
    seed = kdfe(ek.name_alg, z, b"IDENTITY", ex, ek.unique.x, digest_size * 8)
    return seed, tpm2b(ex) + tpm2b(ey)


def make_credential(ek: TpmPublic, object_name: bytes, credential: bytes) -> MadeCredential:
    """Protect ``credential`` for the TPM holding ``ek`` and the key named ``object_name``.

    ``ek`` must be a restricted decryption key with an AES-CFB symmetric definition (the
    TCG EK templates); anything else is a TpmValueError naming what is wrong.
    """
    if not 1 <= len(credential) <= MAX_CREDENTIAL_BYTES:
        raise TpmValueError(f"a credential is 1..{MAX_CREDENTIAL_BYTES} bytes, "
                            f"not {len(credential)}")
    params = ek.parameters
    sym = params.symmetric
    if sym.algorithm != TpmAlg.AES or sym.mode != TpmAlg.CFB or not sym.key_bits:
        raise TpmValueError("the EK's symmetric definition is not AES-CFB: it is not a "
                            "storage (EK) key that can activate a credential")
    if sym.key_bits not in (128, 192, 256):
        # AES has no other key size: cryptography raised a plain ValueError (a 500)
        raise TpmValueError(f"the EK's symmetric definition is AES-{sym.key_bits}: AES keys "
                            "are 128, 192 or 256 bits")
    _, hash_cls = _hash(ek.name_alg)
    digest_size = hash_cls().digest_size
    key = ek.public_key()
    if isinstance(params, RsaParms) and isinstance(key, rsa.RSAPublicKey):
        seed, secret = _seed_rsa(ek, key, digest_size)
    elif isinstance(params, EccParms) and isinstance(key, ec.EllipticCurvePublicKey):
        seed, secret = _seed_ecc(ek, key, digest_size)
    else:  # pragma: no cover - TpmPublic pairs parameters and key types
        raise TpmValueError("the EK is neither RSA nor ECC")
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", object_name, b"", sym.key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(credential)) + encryptor.finalize()
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    name, _ = _hash(ek.name_alg)
    outer = hmac.new(hmac_key, enc_identity + object_name, name).digest()
    return MadeCredential(credential_blob=tpm2b(tpm2b(outer) + enc_identity),
                          encrypted_secret=tpm2b(secret))


