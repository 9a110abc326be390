"""TPM signatures: the raw RSASSA bytes AzureGuest carries, TPMT_SIGNATURE, and verification.

AzureGuest's ``PcrSignature`` / ``EncKeyCertifyInfoSignature`` are only the
signature bytes; the scheme comes from the signing key (the AIK signs with
its own scheme; a NULL scheme means the client asked for RSASSA/SHA-256).
Verification refuses a key that may not sign and a signature whose scheme
differs from the one the key is restricted to.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from bootwatch.errors import TpmStructureError
from bootwatch.tpm.constants import DIGEST_SIZES, ObjectAttributes, TpmAlg, alg_name, hash_for
from bootwatch.tpm.errors import SignatureError
from bootwatch.tpm.marshal import Reader, tpm2b, u16
from bootwatch.tpm.public import EccParms, RsaParms, TpmPublic

__all__ = [
    "MAX_SIGNATURE_BYTES",
    "TpmSignature",
    "parse_tpmt_signature",
    "signature_from_raw",
    "verify_signature",
]

MAX_SIGNATURE_BYTES = 1024


@dataclass(frozen=True)
class TpmSignature:
    """A signature with its scheme: RSA bytes, or ECDSA (r, s)."""

    sig_alg: int
    hash_alg: int
    rsa: bytes = b""
    ecdsa_r: bytes = b""
    ecdsa_s: bytes = b""

    def marshal(self) -> bytes:
        """TPMT_SIGNATURE bytes."""
        head = u16(self.sig_alg) + u16(self.hash_alg)
        if self.sig_alg in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
            return head + tpm2b(self.rsa)
        return head + tpm2b(self.ecdsa_r) + tpm2b(self.ecdsa_s)


def parse_tpmt_signature(data: bytes) -> TpmSignature:
    """Parse a TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    r = Reader(data, "TPMT_SIGNATURE")
    if len(data) > MAX_SIGNATURE_BYTES:
        raise r.error("(whole)", f"{len(data)} bytes exceeds the maximum {MAX_SIGNATURE_BYTES}")
    alg = r.u16("sigAlg")
    h_off = r.offset
    h = r.u16("signature.hash")
    if h not in DIGEST_SIZES:
        raise r.error("signature.hash", f"{alg_name(h)} is not a supported hash", offset=h_off)
    if alg in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
        sig = TpmSignature(alg, h, rsa=r.tpm2b("signature.sig", 512))
    elif alg == TpmAlg.ECDSA:
        sig = TpmSignature(alg, h, ecdsa_r=r.tpm2b("signature.signatureR", 128),
                           ecdsa_s=r.tpm2b("signature.signatureS", 128))
    else:
        raise r.error("sigAlg", f"{alg_name(alg)} is not RSASSA, RSAPSS or ECDSA", offset=0)
    r.expect_end()
    return sig


def signature_from_raw(raw: bytes, key: TpmPublic) -> TpmSignature:
    """Interpret raw signature bytes (as AzureGuest sends them) in the key's scheme.

    A key with a NULL scheme is taken as RSASSA/SHA-256 (RSA) or ECDSA/SHA-256
    (ECC; raw = r || s), which is what Microsoft's clients request.
    """
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise SignatureError("signature_malformed",
                             f"signature is {len(raw)} bytes, over {MAX_SIGNATURE_BYTES}")
    scheme = key.parameters.scheme
    if isinstance(key.parameters, RsaParms):
        if scheme.scheme == TpmAlg.NULL:
            return TpmSignature(TpmAlg.RSASSA, TpmAlg.SHA256, rsa=raw)
        if scheme.scheme not in (TpmAlg.RSASSA, TpmAlg.RSAPSS) or scheme.hash_alg is None:
            raise SignatureError("key_not_signing",
                                 f"key scheme {alg_name(scheme.scheme)} is not a signing scheme")
        return TpmSignature(scheme.scheme, scheme.hash_alg, rsa=raw)
    if scheme.scheme not in (TpmAlg.NULL, TpmAlg.ECDSA):
        raise SignatureError("key_not_signing",
                             f"key scheme {alg_name(scheme.scheme)} is not ECDSA")
    if len(raw) % 2 or not raw:
        raise SignatureError("signature_malformed", "raw ECDSA signature must be r || s")
    half = len(raw) // 2
    return TpmSignature(TpmAlg.ECDSA, scheme.hash_alg or TpmAlg.SHA256, ecdsa_r=raw[:half],
                        ecdsa_s=raw[half:])


def verify_signature(key: TpmPublic, message: bytes, signature: TpmSignature) -> None:
    """Verify ``signature`` over ``message`` with ``key``; raise SignatureError if not.

    Reason codes: ``key_not_signing``, ``key_malformed``, ``scheme_mismatch``,
    ``signature_malformed``, ``signature_invalid``.
    """
    if not key.has(ObjectAttributes.SIGN_ENCRYPT):
        raise SignatureError("key_not_signing", "the signing key does not have the sign attribute")
    scheme = key.parameters.scheme
    if scheme.scheme != TpmAlg.NULL and (
        scheme.scheme != signature.sig_alg or scheme.hash_alg != signature.hash_alg
    ):
        raise SignatureError(
            "scheme_mismatch",
            f"signature is {alg_name(signature.sig_alg)}/{alg_name(signature.hash_alg)} but the "
            f"key is restricted to {alg_name(scheme.scheme)}/{alg_name(scheme.hash_alg or 0)}",
        )
    h = hash_for(signature.hash_alg)
    if h is None:
        raise SignatureError("signature_malformed",
                             f"unsupported signature hash {alg_name(signature.hash_alg)}")
    try:
        pub = key.public_key()
    except TpmStructureError as exc:
        raise SignatureError("key_malformed", f"the signing key is no usable public key: {exc}"
                             ) from None
    try:
        if signature.sig_alg in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
            if not isinstance(pub, rsa.RSAPublicKey) or not isinstance(key.parameters, RsaParms):
                raise SignatureError("scheme_mismatch", "RSA signature but the key is not RSA")
            if len(signature.rsa) != key.parameters.key_bits // 8:
                raise SignatureError("signature_malformed",
                                     f"RSA signature is {len(signature.rsa)} bytes, the key is "
                                     f"{key.parameters.key_bits} bits")
            pad: padding.AsymmetricPadding
            if signature.sig_alg == TpmAlg.RSASSA:
                pad = padding.PKCS1v15()
            else:
                pad = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
            pub.verify(signature.rsa, message, pad, h)
        elif signature.sig_alg == TpmAlg.ECDSA:
            if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(
                key.parameters, EccParms
            ):
                raise SignatureError("scheme_mismatch", "ECDSA signature but the key is not ECC")
            der = utils.encode_dss_signature(int.from_bytes(signature.ecdsa_r, "big"),
                                             int.from_bytes(signature.ecdsa_s, "big"))
            pub.verify(der, message, ec.ECDSA(h))
        else:
            raise SignatureError("signature_malformed",
                                 f"unsupported signature scheme {alg_name(signature.sig_alg)}")
    except InvalidSignature:
        raise SignatureError("signature_invalid",
                             "the signature does not verify with this key") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SignatureError("signature_malformed",
                             f"{alg_name(signature.sig_alg)}/{alg_name(signature.hash_alg)} "
                             f"signature cannot be checked with this key ({exc})") from None
