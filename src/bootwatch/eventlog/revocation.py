"""Revocation check of a boot: were revoked components loaded, and does the
measured dbx hold the current revocations?

Inputs are a :class:`~bootwatch.eventlog.state.BootState` (what the log claims)
and a :class:`~bootwatch.eventlog.dbx.DbxCatalog` (Microsoft's current list).
Two facts come out, each also as a finding with a message a person can act on:

* "revoked boot component loaded": a boot application whose Authenticode
  SHA-256 (its event digest) is a revoked image hash, or a verifying authority
  (EV_EFI_VARIABLE_AUTHORITY) that is a revoked certificate or image hash;
* "measured dbx lacks N of the M current revocations": SVN records are not
  image hashes and are excluded from both N and M.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bootwatch.encoding import sha1_thumbprint
from bootwatch.eventlog.dbx import DbxCatalog
from bootwatch.eventlog.decode.efi import SignatureKind
from bootwatch.eventlog.model import Finding, HashAlg
from bootwatch.eventlog.state import BootState

__all__ = [
    "RevocationReport",
    "RevokedComponent",
    "RevokedKind",
    "check_revocation",
    "revocation_to_json",
]


class RevokedKind(enum.StrEnum):
    IMAGE = "image"
    AUTHORITY_CERTIFICATE = "authority_certificate"
    AUTHORITY_HASH = "authority_hash"


@dataclass(frozen=True, slots=True)
class RevokedComponent:
    """One loaded component (or verifying authority) that the catalogue revokes."""

    event: int
    kind: RevokedKind
    identifier: str  # SHA-256 of the image, or SHA-1 thumbprint of the certificate
    name: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class RevocationReport:
    """Outcome of :func:`check_revocation`."""

    revoked_loaded: tuple[RevokedComponent, ...]
    dbx_measured: bool
    #: M: current revocations considered (image hashes of the architecture + certificates)
    current_revocations: int
    #: the revocations absent from the measured dbx (hex hashes / thumbprints); N = len
    missing_revocations: tuple[str, ...]
    #: the part of ``missing_revocations`` that are image hashes of the architecture
    missing_image_hashes: tuple[str, ...]
    #: the part that are revoked certificates (SHA-1 thumbprints).  Kept apart because
    #: Microsoft ships some certificate revocations (PCA 2011, CVE-2023-24932) as an
    #: optional update that many healthy fleets have not applied yet.
    missing_certificates: tuple[str, ...]
    #: SVN records in the catalogue, excluded from the comparison
    svn_records_excluded: int
    #: boot applications that could not be checked (no SHA-256 digest in a SHA-1 log)
    unchecked_applications: tuple[int, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.revoked_loaded and self.dbx_measured and not self.missing_revocations


def check_revocation(
    state: BootState, catalog: DbxCatalog, *, architecture: str = "x64"
) -> RevocationReport:
    """Compare the boot state with the catalogue (see the module docstring)."""
    images = catalog.images
    thumbs = {c.sha1_thumbprint: c for c in catalog.certificates}
    revoked: list[RevokedComponent] = []
    unchecked: list[int] = []
    findings: list[Finding] = []

    for app in state.boot_applications:
        digest = app.digests.get(HashAlg.SHA256)
        if digest is None:
            unchecked.append(app.event)
            continue
        img = images.get(digest.hex())
        if img is not None:
            revoked.append(
                RevokedComponent(
                    app.event, RevokedKind.IMAGE, img.sha256, img.filename, img.description
                )
            )
    for auth in state.authorities:
        entry = auth.entry
        if entry.kind is SignatureKind.X509:
            thumb = sha1_thumbprint(entry.data)
            cert = thumbs.get(thumb)
            if cert is not None:
                revoked.append(
                    RevokedComponent(
                        auth.event,
                        RevokedKind.AUTHORITY_CERTIFICATE,
                        thumb,
                        cert.subject,
                        cert.description,
                    )
                )
        elif entry.kind is SignatureKind.SHA256:
            img = images.get(entry.data.hex())
            if img is not None:
                revoked.append(
                    RevokedComponent(
                        auth.event,
                        RevokedKind.AUTHORITY_HASH,
                        img.sha256,
                        img.filename,
                        img.description,
                    )
                )
    for r in revoked:
        what = r.name or r.identifier
        findings.append(
            Finding(
                "revoked_component_loaded",
                r.event,
                f"revoked boot component loaded: {r.kind} {what} ({r.identifier})"
                + (f": {r.reason}" if r.reason else ""),
            )
        )
    if unchecked:
        findings.append(
            Finding(
                "revocation_unchecked",
                unchecked[0],
                f"{len(unchecked)} boot application(s) have no SHA-256 digest (SHA-1 log): "
                "they cannot be compared with the DBX image hashes",
            )
        )

    wanted_images = catalog.image_hashes(architecture)
    current = len(wanted_images) + len(thumbs)
    missing_images: tuple[str, ...] = ()
    missing_certs: tuple[str, ...] = ()
    measured = state.dbx is not None
    if not measured:
        findings.append(
            Finding(
                "dbx_not_measured",
                None,
                "the log does not measure dbx: whether the current revocations are applied "
                "is unknown",
            )
        )
    else:
        have_hashes: set[str] = set()
        have_thumbs: set[str] = set()
        for sl in state.dbx or ():
            for e in sl.entries:
                if e.kind is SignatureKind.SHA256 and not e.is_svn_record:
                    have_hashes.add(e.data.hex())
                elif e.kind is SignatureKind.X509:
                    have_thumbs.add(sha1_thumbprint(e.data))
        missing_images = tuple(sorted(wanted_images - have_hashes))
        missing_certs = tuple(sorted(set(thumbs) - have_thumbs))
        if missing_images or missing_certs:
            cert_names = ", ".join(
                f"{thumbs[t].subject or t} ({t})" for t in missing_certs
            )
            detail = (
                f"{len(missing_images)} of {len(wanted_images)} {architecture} image hashes"
                f" and {len(missing_certs)} of {len(thumbs)} certificates"
                + (f" [{cert_names}]" if cert_names else "")
            )
            findings.append(
                Finding(
                    "dbx_outdated",
                    None,
                    f"measured dbx lacks {len(missing_images) + len(missing_certs)} of the "
                    f"{current} current revocations ({detail}; "
                    f"{len(catalog.svn_records)} SVN records excluded: they are not image "
                    "hashes); apply Microsoft's current DBX update to the VM's firmware",
                )
            )
    return RevocationReport(
        revoked_loaded=tuple(revoked),
        dbx_measured=measured,
        current_revocations=current,
        missing_revocations=missing_images + missing_certs,
        missing_image_hashes=missing_images,
        missing_certificates=missing_certs,
        svn_records_excluded=len(catalog.svn_records),
        unchecked_applications=tuple(unchecked),
        findings=tuple(findings),
    )


def revocation_to_json(report: RevocationReport) -> dict[str, object]:
    """The report as printed by ``bootwatch log state --dbx`` (key ``revocation``)."""
    return {
        "ok": report.ok,
        "revoked_loaded": [
            {
                "event": r.event,
                "kind": str(r.kind),
                "identifier": r.identifier,
                "name": r.name,
                "reason": r.reason,
            }
            for r in report.revoked_loaded
        ],
        "dbx_measured": report.dbx_measured,
        "current_revocations": report.current_revocations,
        "missing_revocations": len(report.missing_revocations),
        "missing_image_hashes": len(report.missing_image_hashes),
        "missing_certificates": list(report.missing_certificates),
        "svn_records_excluded": report.svn_records_excluded,
        "unchecked_applications": list(report.unchecked_applications),
        "findings": [
            {"code": f.code, "event": f.event, "message": f.message} for f in report.findings
        ],
    }
