"""Building X.509 extensions without cryptography's nine positional KeyUsage flags.

``x509.KeyUsage`` takes nine booleans, all required; spelled out at every certificate
bootwatch issues (lab CA, EK and AIK certificates, provider signing keys, the development
TLS CA) they hid which usage each certificate has.  :func:`key_usage` names only the
usages that are on.
"""

from __future__ import annotations

from cryptography import x509

__all__ = [
    "KEY_USAGE_FLAGS",
    "key_usage",
]

#: The KeyUsage flags, in the order cryptography's constructor takes them.
KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage(*enabled: str) -> x509.KeyUsage:
    """A KeyUsage with exactly the named flags set, e.g. ``key_usage("digital_signature")``."""
    unknown = set(enabled) - set(KEY_USAGE_FLAGS)
    if unknown:
        raise ValueError(f"unknown key usage flags: {sorted(unknown)}")
    return x509.KeyUsage(**{flag: flag in enabled for flag in KEY_USAGE_FLAGS})
