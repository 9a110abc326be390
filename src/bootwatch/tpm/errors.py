"""Finer errors of bootwatch.tpm, each below a class in :mod:`bootwatch.errors`.

A verification failure carries a stable ``reason_code`` (used in the
evidence-check results and in JSON) and a sentence a person can act on.
"""

from __future__ import annotations

from bootwatch.errors import InputError, TpmStructureError, VerificationError

__all__ = [
    "AikCertificateError",
    "SignatureError",
    "TpmStructureError",
    "TpmValueError",
    "TpmVerificationError",
]


class TpmValueError(InputError, ValueError):
    """A value handed to a tpm function that it cannot use: a missing or wrongly sized PCR
    value, a hash algorithm bootwatch cannot compute, a number too large to marshal.

    Also a :class:`ValueError`, so callers written against the earlier plain
    ``ValueError``/``KeyError`` keep catching it; new code should catch this class.
    """

    code = "tpm_value_invalid"


class TpmVerificationError(VerificationError):
    """A TPM structure that was read but does not verify."""

    code = "tpm_verification_failed"

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class SignatureError(TpmVerificationError):
    """A TPM signature that is malformed, of the wrong scheme, or does not verify."""

    code = "tpm_signature_invalid"


class AikCertificateError(TpmVerificationError):
    """An AIK certificate that cannot be validated against the trust anchors."""

    code = "aik_certificate_invalid"
