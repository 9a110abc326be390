"""Named built-in trust-anchor sets shipped with the package (public CA certificates).

Why built in: Azure Trusted Launch vTPMs carry AIK certificates issued by Microsoft's
"Global Virtual TPM CA - NN" intermediates under the "Azure Virtual TPM Root Certificate
Authority 2023"; the leaf has no Authority Information Access, so a verifier can only
build the chain if it already holds the intermediates.  Shipping them (they are public
data, see ``anchors/azure-trusted-launch/README.md`` for the sources) makes the real
Trusted Launch evidence verify without configuration.

Loading is strict: every file must have the SHA-256 fingerprint listed here (a changed
file is a packaging error, not a new anchor) and every intermediate must be signed by a
root of the same set, so the pinned intermediates are exactly the ones the root issued.
Validity *times* are not checked at load: an expired intermediate stays in the set and is
reported as expired by the chain check, naming it, which is more useful than silently
dropping it; :func:`anchor_expiry_notes` warns ahead of expiry.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from bootwatch.errors import ConfigError
from bootwatch.tpm.aik import TrustAnchors

__all__ = [
    "AZURE_TRUSTED_LAUNCH",
    "BUILTIN_SETS",
    "EXPIRY_WARNING",
    "anchor_expiry_notes",
    "builtin_anchors",
]

#: Name of the Azure Trusted Launch vTPM AIK CA set.
AZURE_TRUSTED_LAUNCH = "azure-trusted-launch"

#: set name -> {file name: SHA-256 fingerprint of the DER certificate (hex)}
BUILTIN_SETS: dict[str, dict[str, str]] = {
    AZURE_TRUSTED_LAUNCH: {
        "azure-virtual-tpm-root-ca-2023.pem":
            "e6c596b17f8ffefba5c300f714cfb1260c6028704ecf7becc4ab5018efb00e95",
        "global-virtual-tpm-ca-01.pem":
            "a2daccd149cd2eadb82045d3cd24336699a0b2d4e50237a76448d107896cf8c7",
        "global-virtual-tpm-ca-03.pem":
            "fd7c92dabce4dcec9feaa30f8b087ada0598413189182152b881f5564064a29c",
    },
}

#: How long ahead of an anchor's expiry :func:`anchor_expiry_notes` warns.
EXPIRY_WARNING = timedelta(days=90)


def _load_set(name: str) -> tuple[x509.Certificate, ...]:
    try:
        files = BUILTIN_SETS[name]
    except KeyError:
        raise ConfigError(
            f"no built-in anchor set {name!r} (known: {', '.join(sorted(BUILTIN_SETS))})"
        ) from None
    folder = resources.files("bootwatch.tpm.anchors").joinpath(name)
    certs: list[x509.Certificate] = []
    for file_name, want in files.items():
        try:
            pem = folder.joinpath(file_name).read_bytes()
            cert = x509.load_pem_x509_certificate(pem)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"built-in anchor {name}/{file_name} cannot be read: {exc}") from None
        got = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        if got != want:
            raise ConfigError(f"built-in anchor {name}/{file_name} has SHA-256 {got}, "
                              f"expected {want}: the installed package is damaged")
        certs.append(cert)
    roots = [c for c in certs if c.subject == c.issuer]
    for cert in certs:
        if cert in roots:
            continue
        if not any(_signed_by(cert, r) for r in roots):
            raise ConfigError(f"built-in anchor {cert.subject.rfc4514_string()} in {name} is "
                              "not signed by a root of the same set")
    return tuple(certs)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def builtin_anchors(*names: str) -> TrustAnchors:
    """The certificates of the named built-in sets (default: every set)."""
    chosen = names or tuple(BUILTIN_SETS)
    certs: list[x509.Certificate] = []
    for name in chosen:
        certs.extend(_load_set(name))
    return TrustAnchors(tuple(certs))


def anchor_expiry_notes(
    anchors: TrustAnchors, at: datetime, *, ahead: timedelta = EXPIRY_WARNING
) -> tuple[str, ...]:
    """One sentence per anchor that has expired at ``at`` or expires within ``ahead``,
    unless the set already holds its successor.

    An expired intermediate makes every AIK certificate it issued fail
    ``aik_cert_expired``; saying so before it happens gives the operator time to add
    the successor (``--trust-anchors``).  A successor is another CA certificate of the
    same issuer, valid at ``at``, that outlives it (Azure's "Global Virtual TPM CA - 03"
    for CA - 01): then there is nothing to add, and a warning at every start would
    only teach operators to ignore the one that matters.  The superseded certificate
    stays in the set, so that an AIK certificate it issued is refused as expired, naming
    it, rather than as untrusted.
    """
    notes: list[str] = []
    for cert in anchors.certificates:
        end = cert.not_valid_after_utc
        subject = cert.subject.rfc4514_string()
        if end - at <= ahead and _successor(anchors, cert, at) is not None:
            continue
        if end < at:
            notes.append(f"trust anchor {subject} expired on {end.date().isoformat()}: AIK "
                         "certificates it issued no longer verify; add its successor with "
                         "--trust-anchors")
        elif end - at <= ahead:
            notes.append(f"trust anchor {subject} expires on {end.date().isoformat()} "
                         f"(in {(end - at).days} days): add its successor with --trust-anchors")
    return tuple(notes)


def _successor(anchors: TrustAnchors, cert: x509.Certificate,
               at: datetime) -> x509.Certificate | None:
    """Another CA certificate of ``cert``'s issuer (not self-signed), valid at ``at``,
    that outlives ``cert``: the CA that issues what ``cert`` issued before."""
    if cert.issuer == cert.subject:
        return None
    end = cert.not_valid_after_utc
    for other in anchors.certificates:
        if (other is cert or other.subject == cert.subject or other.issuer != cert.issuer
                or other.issuer == other.subject or not _is_ca(other)):
            continue
        if other.not_valid_before_utc <= at <= other.not_valid_after_utc \
                and other.not_valid_after_utc > end:
            return other
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(ext.value.ca)
