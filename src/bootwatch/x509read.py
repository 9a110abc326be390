"""Reading every lazily decoded part of an X.509 certificate up front.

cryptography parses a certificate's outer structure at load time but its names,
extensions and public key only when first asked, and then raises UnsupportedAlgorithm,
ValueError or errors that are not ValueErrors (DuplicateExtension,
UnsupportedGeneralNameType, and a KeyError for a name attribute whose ASN.1 tag is no
string type in cryptography 48).  Reading them all where a certificate enters
bootwatch turns a hostile certificate into one typed error there, instead of a library
error wherever a field is first used.

Shared by ``tpm`` (AIK certificates, trust anchors) and ``policy`` (policy signer
certificates), which may not import each other; each maps :class:`CertificateFieldError`
to its own typed error.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from bootwatch.errors import InputError

__all__ = [
    "DECODE_ERRORS",
    "CertificateFieldError",
    "read_all_fields",
]

#: What cryptography raises while decoding the lazily read parts of a certificate.
DECODE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class CertificateFieldError(InputError):
    """A part of a certificate (``part``) that cannot be decoded.

    ``unsupported`` is true when the part is well formed but uses an algorithm
    cryptography does not support (e.g. an unknown public-key OID).
    """

    code = "certificate_field_invalid"

    def __init__(self, part: str, cause: Exception, *, unsupported: bool) -> None:
        what = "algorithm is not supported" if unsupported else "cannot be decoded"
        super().__init__(f"the certificate's {part} {what} ({type(cause).__name__}: {cause})")
        self.part = part
        self.cause = cause
        self.unsupported = unsupported


def read_all_fields(cert: x509.Certificate) -> None:
    """Decode the subject, issuer, extensions and public key of ``cert`` now."""
    part = "subject or issuer name"
    try:
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        part = "extensions"
        for _ in cert.extensions:
            pass
        part = "public key"
        cert.public_key()
    except UnsupportedAlgorithm as exc:
        raise CertificateFieldError(part, exc, unsupported=True) from None
    except DECODE_ERRORS as exc:
        raise CertificateFieldError(part, exc, unsupported=False) from None
