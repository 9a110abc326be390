"""Microsoft's Secure Boot revocation data (microsoft/secureboot_objects), read from bytes.

Two inputs are understood, and can be merged:

* ``dbx_info_msft_latest.json``: the catalogue: revoked image Authenticode
  SHA-256 hashes per architecture (with file names and CVEs), revoked CA
  certificates (by SHA-1 thumbprint), and SVN records.
* a signed DBX update payload (``DBXUpdate.bin``): EFI_TIME, then
  WIN_CERTIFICATE_UEFI_GUID, then EFI_SIGNATURE_LISTs.

SVN records (SHA-256 entries owned by Microsoft's SVN GUID, and the JSON
``svns``) are *not* image hashes: they are kept apart and never counted as
revocations.  This module does no I/O: the service layer reads the files
(their location is configuration) and passes the bytes in.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bootwatch.encoding import sha1_thumbprint
from bootwatch.errors import InputError
from bootwatch.eventlog.decode._util import EventDataError
from bootwatch.eventlog.decode.efi import SignatureKind, parse_signature_lists

__all__ = [
    "MAX_DBX_INPUT",
    "DbxCatalog",
    "DbxDataError",
    "RevokedCertificate",
    "RevokedImage",
    "load_dbx_json",
    "load_dbx_update",
    "merge_catalogs",
]

MAX_DBX_INPUT = 8 * 1024 * 1024


class DbxDataError(InputError):
    """Revocation data (DBX JSON or update payload) that cannot be read."""

    code = "dbx_data_invalid"


@dataclass(frozen=True, slots=True)
class RevokedImage:
    """A revoked boot image, by its PE Authenticode SHA-256 (lower-case hex)."""

    sha256: str
    architecture: str | None = None
    filename: str | None = None
    description: str | None = None
    signing_authority: str | None = None
    date_added: str | None = None


@dataclass(frozen=True, slots=True)
class RevokedCertificate:
    """A revoked signing certificate, by SHA-1 thumbprint (lower-case hex)."""

    sha1_thumbprint: str
    subject: str | None = None
    description: str | None = None
    date_added: str | None = None


@dataclass(frozen=True, slots=True)
class DbxCatalog:
    """The current revocations: images by hash, certificates, and the excluded SVN records."""

    images: Mapping[str, RevokedImage]
    certificates: tuple[RevokedCertificate, ...]
    svn_records: tuple[str, ...]
    #: architecture -> image hashes listed for it (one hash may be listed for several)
    architectures: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def image_hashes(self, architecture: str | None = None) -> frozenset[str]:
        """Revoked image hashes, optionally only those of one architecture ("x64", ...)."""
        if architecture is None:
            return frozenset(self.images)
        return self.architectures.get(architecture, frozenset())

    @property
    def certificate_thumbprints(self) -> frozenset[str]:
        return frozenset(c.sha1_thumbprint for c in self.certificates)


def _str(entry: Mapping[str, object], key: str) -> str | None:
    value = entry.get(key)
    return value if isinstance(value, str) and value else None


def _cn(value: str | None) -> str | None:
    if value and value.startswith("CN = "):
        return value[5:]
    return value


def load_dbx_json(data: bytes) -> DbxCatalog:
    """Read ``dbx_info_msft_latest.json`` (schema: PreSignedObjects/DBX/HashesJsonSchema.json)."""
    if len(data) > MAX_DBX_INPUT:
        raise DbxDataError(f"DBX JSON of {len(data)} bytes is over {MAX_DBX_INPUT}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DbxDataError(f"DBX JSON does not parse: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), dict):
        raise DbxDataError("DBX JSON has no 'images' object")
    images: dict[str, RevokedImage] = {}
    by_arch: dict[str, set[str]] = {}
    for arch, entries in doc["images"].items():
        if not isinstance(entries, list):
            raise DbxDataError(f"DBX JSON images.{arch} is not a list")
        for i, entry in enumerate(entries):
            digest = entry.get("authenticodeHash") if isinstance(entry, dict) else None
            if not isinstance(digest, str) or len(digest) != 64:
                raise DbxDataError(f"DBX JSON images.{arch}[{i}].authenticodeHash is not SHA-256")
            try:
                bytes.fromhex(digest)
            except ValueError:
                raise DbxDataError(
                    f"DBX JSON images.{arch}[{i}].authenticodeHash is not hex"
                ) from None
            by_arch.setdefault(str(arch), set()).add(digest.lower())
            images.setdefault(
                digest.lower(),
                RevokedImage(
                    digest.lower(),
                    str(arch),
                    _str(entry, "filename"),
                    _str(entry, "description"),
                    _cn(_str(entry, "signingAuthority")),
                    _str(entry, "dateOfAddition"),
                ),
            )
    certs = []
    for i, entry in enumerate(doc.get("certificates") or []):
        thumb = entry.get("thumbprint") if isinstance(entry, dict) else None
        if not isinstance(thumb, str) or len(thumb) != 40:
            raise DbxDataError(f"DBX JSON certificates[{i}].thumbprint is not a SHA-1 thumbprint")
        certs.append(
            RevokedCertificate(
                thumb.lower(),
                _cn(_str(entry, "subjectName")),
                _str(entry, "description"),
                _str(entry, "dateOfAddition"),
            )
        )
    svns = tuple(
        str(e.get("value", "")).lower() for e in doc.get("svns") or [] if isinstance(e, dict)
    )
    return DbxCatalog(MappingProxyType(images), tuple(certs), svns, _frozen_arches(by_arch))


def _frozen_arches(by_arch: Mapping[str, set[str]]) -> Mapping[str, frozenset[str]]:
    return MappingProxyType({k: frozenset(v) for k, v in by_arch.items()})


def load_dbx_update(data: bytes, *, architecture: str | None = "x64") -> DbxCatalog:
    """Read a signed DBX update payload (EFI_VARIABLE_AUTHENTICATION_2 + signature lists).

    The PKCS#7 signature is not checked here: the payload is trusted as
    configuration, like the JSON catalogue.
    """
    if len(data) > MAX_DBX_INPUT:
        raise DbxDataError(f"DBX update of {len(data)} bytes is over {MAX_DBX_INPUT}")
    if len(data) < 16 + 24:
        raise DbxDataError("DBX update is shorter than EFI_TIME + WIN_CERTIFICATE_UEFI_GUID")
    length, _revision, cert_type = struct.unpack_from("<IHH", data, 16)
    if cert_type != 0x0EF1 or length < 24 or 16 + length > len(data):
        raise DbxDataError(
            f"DBX update WIN_CERTIFICATE at byte offset 16 is not a UEFI GUID certificate "
            f"(type 0x{cert_type:04x}, length {length})"
        )
    start = 16 + length
    try:
        lists = parse_signature_lists(data[start:], base=start)
    except EventDataError as exc:
        raise DbxDataError(f"DBX update signature lists: {exc}") from None
    images: dict[str, RevokedImage] = {}
    certs: list[RevokedCertificate] = []
    svns: list[str] = []
    for sl in lists:
        for entry in sl.entries:
            if entry.is_svn_record:
                svns.append(entry.data.hex())
            elif entry.kind is SignatureKind.SHA256:
                images[entry.data.hex()] = RevokedImage(entry.data.hex(), architecture)
            elif entry.kind is SignatureKind.X509:
                info = entry.certificate
                certs.append(
                    RevokedCertificate(
                        sha1_thumbprint(entry.data),
                        info.common_name if info else None,
                    )
                )
    arches = {architecture: set(images)} if architecture else {}
    return DbxCatalog(MappingProxyType(images), tuple(certs), tuple(svns), _frozen_arches(arches))


def merge_catalogs(*catalogs: DbxCatalog) -> DbxCatalog:
    """Union of catalogues; for an image in several, the most descriptive entry wins."""
    images: dict[str, RevokedImage] = {}
    certs: dict[str, RevokedCertificate] = {}
    svns: list[str] = []
    arches: dict[str, set[str]] = {}
    for cat in catalogs:
        for arch, hashes in cat.architectures.items():
            arches.setdefault(arch, set()).update(hashes)
        for h, img in cat.images.items():
            if h not in images or (images[h].filename is None and img.filename is not None):
                images[h] = img
        for c in cat.certificates:
            if c.sha1_thumbprint not in certs or certs[c.sha1_thumbprint].description is None:
                certs[c.sha1_thumbprint] = c
        svns.extend(s for s in cat.svn_records if s not in svns)
    return DbxCatalog(
        MappingProxyType(images), tuple(certs.values()), tuple(svns), _frozen_arches(arches)
    )
