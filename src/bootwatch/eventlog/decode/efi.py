"""UEFI structures found in event data: UEFI_VARIABLE_DATA, EFI_SIGNATURE_LIST
(with X.509 certificates read by ``cryptography``), EFI_LOAD_OPTION, GPT data,
firmware blobs and handoff tables.

All functions are pure and raise :class:`EventDataError` with the byte offset
inside the event data when a structure is short or inconsistent.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509

from bootwatch.encoding import sha1_thumbprint
from bootwatch.eventlog.decode._util import EventDataError, Reader, guid_text, utf16_text
from bootwatch.eventlog.decode.devicepath import device_path_text
from bootwatch.x509read import DECODE_ERRORS

__all__ = [
    "CONFIG_TABLE_NAMES",
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "MICROSOFT_SVN_OWNER",
    "SHIM_LOCK_GUID",
    "ConfigTable",
    "FirmwareBlob",
    "GptData",
    "GptPartition",
    "LoadOption",
    "SignatureEntry",
    "SignatureKind",
    "SignatureList",
    "UefiVariable",
    "X509Info",
    "guid_from",
    "parse_boot_order",
    "parse_firmware_blob",
    "parse_gpt",
    "parse_handoff_tables",
    "parse_load_option",
    "parse_signature_lists",
    "parse_uefi_variable",
    "signature_entry",
    "x509_info",
    "x509_info_or_reason",
]

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
#: Owner GUID Microsoft uses for DBX SVN records (not image hashes).
MICROSOFT_SVN_OWNER = "9d132b6c-59d5-4388-ab1c-185cfcb2eb92"


class SignatureKind(enum.StrEnum):
    """EFI_SIGNATURE_LIST SignatureType, named."""

    X509 = "x509"
    SHA256 = "sha256"
    SHA1 = "sha1"
    SHA384 = "sha384"
    SHA512 = "sha512"
    RSA2048 = "rsa2048"
    X509_SHA256 = "x509_sha256"
    X509_SHA384 = "x509_sha384"
    X509_SHA512 = "x509_sha512"
    OTHER = "other"


_SIG_TYPES: dict[str, SignatureKind] = {
    "a5c059a1-94e4-4aa7-87b5-ab155c2bf072": SignatureKind.X509,
    "c1c41626-504c-4092-aca9-41f936934328": SignatureKind.SHA256,
    "826ca512-cf10-4ac9-b187-be01496631bd": SignatureKind.SHA1,
    "ff3e5307-9fd0-48c9-85f1-8ad56c701e01": SignatureKind.SHA384,
    "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a": SignatureKind.SHA512,
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": SignatureKind.RSA2048,
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": SignatureKind.X509_SHA256,
    "7076876e-80c2-4ee6-aad2-28b349a6865b": SignatureKind.X509_SHA384,
    "446dbf63-2502-4cda-bcfa-2465d2b0fe9d": SignatureKind.X509_SHA512,
}

_HASH_SIZES = {
    SignatureKind.SHA1: 20,
    SignatureKind.SHA256: 32,
    SignatureKind.SHA384: 48,
    SignatureKind.SHA512: 64,
}

CONFIG_TABLE_NAMES: dict[str, str] = {
    "8868e871-e4f1-11d3-bc22-0080c73c8881": "ACPI 2.0",
    "eb9d2d30-2d88-11d3-9a16-0090273fc14d": "ACPI 1.0",
    "eb9d2d31-2d88-11d3-9a16-0090273fc14d": "SMBIOS",
    "f2fd1544-9794-4a2c-992e-e5bbcf20e394": "SMBIOS3",
    "eb9d2d32-2d88-11d3-9a16-0090273fc14d": "SAL System Table",
    "eb9d2d2f-2d88-11d3-9a16-0090273fc14d": "MPS",
}


@dataclass(frozen=True, slots=True)
class X509Info:
    """What a person needs to recognise a certificate: names and thumbprints."""

    subject: str
    issuer: str
    serial: str
    sha1_thumbprint: str
    sha256_thumbprint: str

    @property
    def common_name(self) -> str:
        for part in self.subject.split(","):
            if part.startswith("CN="):
                return part[3:]
        return self.subject


@dataclass(frozen=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA: owner GUID and the signature (certificate or hash).

    For X.509 entries, ``certificate`` reads the DER on first use (and keeps it on
    this entry), so extracting boot state does not pay for certificates nobody looks
    at; ``error`` says why an X.509 entry could not be read (the DER bytes stay in
    ``data``).
    """

    kind: SignatureKind
    owner: str
    data: bytes

    @cached_property
    def _x509(self) -> X509Info | str:
        return x509_info_or_reason(self.data)

    @property
    def certificate(self) -> X509Info | None:
        if self.kind is not SignatureKind.X509:
            return None
        info = self._x509
        return info if isinstance(info, X509Info) else None

    @property
    def error(self) -> str | None:
        if self.kind is not SignatureKind.X509:
            return None
        info = self._x509
        return info if isinstance(info, str) else None

    @property
    def is_hash(self) -> bool:
        return self.kind in _HASH_SIZES

    @property
    def sha256_hex(self) -> str | None:
        """The SHA-256 value this entry revokes or allows, when it is a SHA-256 hash."""
        return self.data.hex() if self.kind is SignatureKind.SHA256 else None

    @property
    def is_svn_record(self) -> bool:
        """Microsoft DBX SVN record: a SHA-256 entry that is not an image hash."""
        return self.kind is SignatureKind.SHA256 and self.owner == MICROSOFT_SVN_OWNER


@dataclass(frozen=True, slots=True)
class SignatureList:
    """One EFI_SIGNATURE_LIST."""

    signature_type: str
    kind: SignatureKind
    header: bytes
    entries: tuple[SignatureEntry, ...]


@dataclass(frozen=True, slots=True)
class LoadOption:
    """EFI_LOAD_OPTION (the data of a Boot#### variable)."""

    attributes: int
    description: str
    device_path: str | None
    device_path_error: str | None
    optional_data: bytes

    @property
    def active(self) -> bool:
        return bool(self.attributes & 0x1)


@dataclass(frozen=True, slots=True)
class UefiVariable:
    """UEFI_VARIABLE_DATA: which variable, and the bytes measured."""

    guid: str
    name: str
    data: bytes
    data_offset: int


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2): where a firmware volume was, and its size."""

    base: int
    length: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigTable:
    guid: str
    name: str | None
    address: int


@dataclass(frozen=True, slots=True)
class GptPartition:
    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True, slots=True)
class GptData:
    """UEFI_GPT_DATA: the GPT header's disk GUID and the partitions measured."""

    disk_guid: str
    partitions: tuple[GptPartition, ...]


def x509_info_or_reason(der: bytes) -> X509Info | str:
    """:func:`x509_info`, or why the certificate does not parse (a value a caller's
    cache can keep: rendering a certificate's names costs about 75 us)."""
    try:
        return x509_info(der)
    except EventDataError as exc:
        return exc.reason


def x509_info(der: bytes) -> X509Info:
    """Read subject, issuer, serial and thumbprints of a DER certificate."""
    try:
        # Real firmware certificates break RFC 5280 in small ways (negative serials,
        # 3-letter country codes); cryptography warns about them, we read them anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
            subject = cert.subject.rfc4514_string()
            issuer = cert.issuer.rfc4514_string()
            serial = f"{cert.serial_number:x}"
    except (*DECODE_ERRORS, x509.InvalidVersion) as exc:
        # cryptography raises more than ValueError (both found by fuzzing, scripts/fuzz
        # eventlog): InvalidVersion loading a version other than v1/v3, and TypeError
        # reading a malformed name attribute lazily (a BitString under another OID);
        # every one of them is "does not parse"
        raise EventDataError(f"X.509 certificate does not parse: {exc}", 0) from None
    return X509Info(
        subject=subject,
        issuer=issuer,
        serial=serial,
        sha1_thumbprint=sha1_thumbprint(der),
        sha256_thumbprint=hashlib.sha256(der).hexdigest(),
    )


def signature_entry(kind: SignatureKind, owner: str, data: bytes) -> SignatureEntry:
    """Build one entry (X.509 contents are read lazily, see :class:`SignatureEntry`)."""
    return SignatureEntry(kind, owner, data)


def parse_signature_lists(data: bytes, *, base: int = 0) -> tuple[SignatureList, ...]:
    """Parse a concatenation of EFI_SIGNATURE_LIST (the data of PK/KEK/db/dbx/MokList)."""
    lists: list[SignatureList] = []
    owners: dict[bytes, str] = {}  # this call's: bounded by the data
    r = Reader(data, base=base)
    while r.remaining:
        start = r.pos
        sig_type = r.guid("EFI_SIGNATURE_LIST.SignatureType")
        list_size = r.u32("EFI_SIGNATURE_LIST.SignatureListSize")
        header_size = r.u32("EFI_SIGNATURE_LIST.SignatureHeaderSize")
        sig_size = r.u32("EFI_SIGNATURE_LIST.SignatureSize")
        body = list_size - 28 - header_size
        if list_size < 28 or body < 0 or start + list_size > r.end:
            raise EventDataError(
                f"EFI_SIGNATURE_LIST size {list_size} does not fit the data", base + start
            )
        if sig_size < 16 or body % sig_size:
            raise EventDataError(
                f"EFI_SIGNATURE_LIST SignatureSize {sig_size} does not divide {body} bytes",
                base + start + 24,
            )
        kind = _SIG_TYPES.get(sig_type, SignatureKind.OTHER)
        header = r.take(header_size, "EFI_SIGNATURE_LIST.SignatureHeader")
        p = r.pos
        r.pos = start + list_size
        entries = []
        for q in range(p, p + body, sig_size):
            raw_owner = data[q : q + 16]
            owner = owners.get(raw_owner)
            if owner is None:  # a dbx repeats one owner hundreds of times: format it once
                owner = owners[raw_owner] = guid_text(raw_owner)
            value = data[q + 16 : q + sig_size]
            entries.append(SignatureEntry(kind, owner, value))
        lists.append(SignatureList(sig_type, kind, header, tuple(entries)))
    return tuple(lists)


def parse_uefi_variable(data: bytes) -> UefiVariable:
    """UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength, VariableDataLength, name, data."""
    r = Reader(data)
    guid = r.guid("UEFI_VARIABLE_DATA.VariableName")
    name_len = r.u64("UEFI_VARIABLE_DATA.UnicodeNameLength")
    data_len = r.u64("UEFI_VARIABLE_DATA.VariableDataLength")
    if name_len > r.remaining // 2:
        raise r.fail(f"UnicodeNameLength {name_len} exceeds the event data")
    name = r.take(2 * name_len, "UEFI_VARIABLE_DATA.UnicodeName").decode("utf-16-le", "replace")
    data_offset = r.pos
    if data_len > r.remaining:
        raise r.fail(f"VariableDataLength {data_len} exceeds the {r.remaining} bytes left")
    value = r.take(data_len, "UEFI_VARIABLE_DATA.VariableData")
    return UefiVariable(guid, name.rstrip("\0"), value, data_offset)


def parse_load_option(data: bytes, *, base: int = 0) -> LoadOption:
    """EFI_LOAD_OPTION: attributes, description, device path list, optional data."""
    r = Reader(data, base=base)
    attributes = r.u32("EFI_LOAD_OPTION.Attributes")
    path_len = r.u16("EFI_LOAD_OPTION.FilePathListLength")
    desc_start = r.pos
    end = desc_start
    while True:
        if end + 2 > len(data):
            raise EventDataError("EFI_LOAD_OPTION.Description is not NUL-terminated", base + end)
        if data[end] == 0 and data[end + 1] == 0:
            break
        end += 2
    description = utf16_text(data[desc_start:end])
    r.pos = end + 2
    path_bytes = r.take(path_len, "EFI_LOAD_OPTION.FilePathList")
    text: str | None
    error: str | None = None
    try:
        text = device_path_text(path_bytes, base=base + end + 2)
    except EventDataError as exc:
        text, error = None, str(exc)
    return LoadOption(attributes, description, text, error, r.rest())


def parse_boot_order(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise EventDataError(f"BootOrder has odd length {len(data)}", 0)
    return tuple(struct.unpack(f"<{len(data) // 2}H", data))


def parse_firmware_blob(data: bytes, *, with_description: bool) -> FirmwareBlob:
    r = Reader(data)
    desc = None
    if with_description:
        n = r.u8("UEFI_PLATFORM_FIRMWARE_BLOB2.BlobDescriptionSize")
        desc = r.take(n, "BlobDescription").rstrip(b"\0").decode("utf-8", "replace")
    base = r.u64("BlobBase")
    length = r.u64("BlobLength")
    if r.remaining:
        raise r.fail(f"{r.remaining} unexpected bytes after the firmware blob")
    return FirmwareBlob(base, length, desc)


def parse_handoff_tables(
    data: bytes, *, with_description: bool
) -> tuple[str | None, tuple[ConfigTable, ...]]:
    r = Reader(data)
    desc = None
    if with_description:
        n = r.u8("UEFI_HANDOFF_TABLE_POINTERS2.TableDescriptionSize")
        desc = r.take(n, "TableDescription").rstrip(b"\0").decode("utf-8", "replace")
    count = r.u64("NumberOfTables")
    if count > r.remaining // 24:
        raise r.fail(f"NumberOfTables {count} exceeds the event data")
    tables = []
    for _ in range(count):
        guid = r.guid("VendorGuid")
        tables.append(ConfigTable(guid, CONFIG_TABLE_NAMES.get(guid), r.u64("VendorTable")))
    return desc, tuple(tables)


def parse_gpt(data: bytes) -> GptData:
    r = Reader(data)
    if r.take(8, "GPT header signature") != b"EFI PART":
        raise EventDataError("GPT header signature is not 'EFI PART'", 0)
    r.take(4 + 4 + 4 + 4 + 8 * 4, "GPT header fields")
    disk_guid = r.guid("DiskGUID")
    r.u64("PartitionEntryLBA")
    r.u32("NumberOfPartitionEntries")
    entry_size = r.u32("SizeOfPartitionEntry")
    r.u32("PartitionEntryArrayCRC32")
    count = r.u64("NumberOfPartitions")
    if entry_size < 128:
        raise EventDataError(f"SizeOfPartitionEntry {entry_size} is below 128", 84)
    if count > r.remaining // entry_size:
        raise r.fail(f"NumberOfPartitions {count} exceeds the event data")
    parts = []
    for _ in range(count):
        e = Reader(r.take(entry_size, "partition entry"), base=r.pos - entry_size)
        type_guid = e.guid("PartitionTypeGUID")
        unique = e.guid("UniquePartitionGUID")
        first, last, attrs = e.u64("StartingLBA"), e.u64("EndingLBA"), e.u64("Attributes")
        name = utf16_text(e.take(72, "PartitionName"))
        parts.append(GptPartition(type_guid, unique, first, last, attrs, name))
    return GptData(disk_guid, tuple(parts))


def guid_from(raw: bytes) -> str:
    """Public alias for GUID text (lower case), for callers outside decode."""
    return guid_text(raw)
