"""Typed decoding of one event's data, by event type (TCG PC Client PFP).

:func:`decode_data` maps ``(event_type, pcr, data)`` to one frozen variant.
It never raises for bad data: a structure that does not match what its type
promises becomes :class:`Undecodable` with the reason and the byte offset
inside the event data; unknown types become :class:`RawEvent`.  Decoding is a
separate step from framing and replay, so they never pay for it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TypeAlias

from bootwatch.eventlog.decode import efi
from bootwatch.eventlog.decode._util import (
    EventDataError,
    Reader,
    ascii_text,
    guid_text,
    is_printable_text,
    looks_utf16,
    utf16_text,
)
from bootwatch.eventlog.decode.devicepath import device_path_text
from bootwatch.eventlog.decode.sipa import SipaRecord, is_known_sipa_type, parse_sipa
from bootwatch.eventlog.model import EventType

__all__ = [
    "IMAGE_TYPES",
    "VARIABLE_TYPES",
    "CompactHashEvent",
    "CrtmVersion",
    "DecodedEvent",
    "FirmwareBlobEvent",
    "GptEvent",
    "HandoffTablesEvent",
    "ImageLoadEvent",
    "IplEvent",
    "IplKind",
    "NoActionEvent",
    "PostCode",
    "RawEvent",
    "SeparatorEvent",
    "SeparatorKind",
    "SipaEvent",
    "Sp800155Event",
    "SpecIdHeader",
    "StartupLocality",
    "TaggedEvent",
    "TextEvent",
    "Undecodable",
    "VariableEvent",
    "decode_data",
]

# Event types come from the one definition, bootwatch.eventlog.model.EventType.

VARIABLE_TYPES = frozenset(
    {
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType.EV_EFI_VARIABLE_BOOT,
        EventType.EV_EFI_VARIABLE_BOOT2,
        EventType.EV_EFI_VARIABLE_AUTHORITY,
    }
)
IMAGE_TYPES = frozenset(
    {
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        EventType.EV_EFI_BOOT_SERVICES_DRIVER,
        EventType.EV_EFI_RUNTIME_SERVICES_DRIVER,
    }
)
_TEXT_TYPES = frozenset(
    {
        EventType.EV_ACTION,
        EventType.EV_EFI_ACTION,
        EventType.EV_S_CRTM_CONTENTS,
        EventType.EV_EFI_HCRTM_EVENT,
        EventType.EV_OMIT_BOOT_DEVICE_EVENTS,
    }
)
_SIGNATURE_DATABASES = frozenset(
    {
        "PK",
        "KEK",
        "db",
        "dbx",
        "dbt",
        "dbr",
        "MokList",
        "MokListX",
        "MokListTrusted",
        "MokListRT",
        "MokListXRT",
        "PKDefault",
        "KEKDefault",
        "dbDefault",
        "dbxDefault",
    }
)
_BOOT_OPTION = re.compile(r"^(Boot|Driver|SysPrep|PlatformRecovery)[0-9A-Fa-f]{4}\Z")


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True, slots=True)
class SpecIdHeader:
    """TCG_EfiSpecIDEvent (Spec ID Event03) or the TCG 1.2 Spec ID Event00 header."""

    signature: str
    platform_class: int
    spec_version: str
    errata: int
    uintn_size: int
    algorithms: tuple[tuple[int, int], ...]
    vendor_info: bytes


@dataclass(frozen=True, slots=True)
class StartupLocality:
    """EV_NO_ACTION "StartupLocality": the locality TPM2_Startup ran at (PCR0 start value)."""

    locality: int


@dataclass(frozen=True, slots=True)
class Sp800155Event:
    """NIST SP 800-155 platform identity (reference-manifest) event, Event/Event2/Event3."""

    signature: str
    platform_manufacturer_id: int
    reference_manifest_guid: str
    platform_manufacturer: str
    platform_model: str
    platform_version: str
    firmware_manufacturer: str
    firmware_manufacturer_id: int
    firmware_version: str
    rim_locator_type: int | None = None
    rim_locator: bytes = b""
    platform_cert_locator_type: int | None = None
    platform_cert_locator: bytes = b""


@dataclass(frozen=True, slots=True)
class NoActionEvent:
    """Any other EV_NO_ACTION: its leading signature (if text) and the raw data."""

    signature: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class CrtmVersion:
    """EV_S_CRTM_VERSION: a UTF-16 version string, or a GUID, or opaque bytes."""

    text: str | None
    guid: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class TextEvent:
    """An event whose data is a string (EV_EFI_ACTION, EV_ACTION, EV_EFI_HCRTM_EVENT, ...)."""

    text: str
    utf16: bool = False


@dataclass(frozen=True, slots=True)
class PostCode:
    """EV_POST_CODE: either a text label ("ACPI DATA", ...) or a firmware blob."""

    text: str | None
    blob: efi.FirmwareBlob | None


@dataclass(frozen=True, slots=True)
class FirmwareBlobEvent:
    blob: efi.FirmwareBlob


@dataclass(frozen=True, slots=True)
class HandoffTablesEvent:
    description: str | None
    tables: tuple[efi.ConfigTable, ...]


class SeparatorKind(enum.StrEnum):
    NORMAL = "normal"  # 0x00000000
    ERROR = "error"  # 0x00000001 (PFP) or 0xFFFFFFFF (older firmware)
    OTHER = "other"  # any other value, e.g. Windows' "WBCL"


@dataclass(frozen=True, slots=True)
class SeparatorEvent:
    kind: SeparatorKind
    value: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class VariableEvent:
    """EV_EFI_VARIABLE_*: the variable, plus its contents decoded where we know them.

    Exactly one of the content fields is set when the contents decode;
    ``contents_error`` says why they did not (the variable itself still did).
    """

    variable: efi.UefiVariable
    signature_lists: tuple[efi.SignatureList, ...] | None = None
    authority: efi.SignatureEntry | None = None
    boot_order: tuple[int, ...] | None = None
    load_option: efi.LoadOption | None = None
    value: int | None = None
    text: str | None = None
    contents_error: str | None = None

    @property
    def name(self) -> str:
        return self.variable.name

    @property
    def guid(self) -> str:
        return self.variable.guid

    @property
    def data(self) -> bytes:
        return self.variable.data


@dataclass(frozen=True, slots=True)
class ImageLoadEvent:
    """UEFI_IMAGE_LOAD_EVENT: where a PE image was loaded and from which device path."""

    location: int
    length: int
    link_time_address: int
    device_path: str | None
    device_path_error: str | None
    device_path_raw: bytes


@dataclass(frozen=True, slots=True)
class GptEvent:
    gpt: efi.GptData


class IplKind(enum.StrEnum):
    GRUB_COMMAND = "grub_cmd"
    KERNEL_CMDLINE = "kernel_cmdline"
    UTF16_TEXT = "utf16"  # systemd-boot: command line / loader strings in UTF-16
    TEXT = "text"  # file paths, shim variable names, anything else


@dataclass(frozen=True, slots=True)
class IplEvent:
    """EV_IPL string: GRUB command or kernel command line, systemd-boot UTF-16 text, ..."""

    kind: IplKind
    text: str
    utf16: bool


@dataclass(frozen=True, slots=True)
class TaggedEvent:
    """TCG_PCClientTaggedEvent (e.g. systemd's "Linux initrd" tag)."""

    tag_id: int
    data: bytes
    text: str | None


@dataclass(frozen=True, slots=True)
class SipaEvent:
    """Windows SIPA records (EV_EVENT_TAG in PCR 12-14, trust points in EV_NO_ACTION)."""

    records: tuple[SipaRecord, ...]


@dataclass(frozen=True, slots=True)
class CompactHashEvent:
    data: bytes


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An event type we do not decode: kept whole, with its leading text label if any."""

    event_type: int
    label: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Data that does not match what its event type promises; ``offset`` is into the data."""

    event_type: int
    reason: str
    offset: int
    data: bytes


DecodedEvent: TypeAlias = (
    SpecIdHeader
    | StartupLocality
    | Sp800155Event
    | NoActionEvent
    | CrtmVersion
    | TextEvent
    | PostCode
    | FirmwareBlobEvent
    | HandoffTablesEvent
    | SeparatorEvent
    | VariableEvent
    | ImageLoadEvent
    | GptEvent
    | IplEvent
    | TaggedEvent
    | SipaEvent
    | CompactHashEvent
    | RawEvent
    | Undecodable
)


# --------------------------------------------------------------------------- decoding


def decode_data(event_type: int, pcr: int, data: bytes) -> DecodedEvent:
    """Decode one event's data; never raises for malformed data (see :class:`Undecodable`)."""
    try:
        return _decode(event_type, pcr, data)
    except EventDataError as exc:
        return Undecodable(event_type, exc.reason, exc.data_offset, data)


def _decode(event_type: int, pcr: int, data: bytes) -> DecodedEvent:
    if event_type in VARIABLE_TYPES:
        return _variable(event_type, data)
    if event_type in IMAGE_TYPES:
        return _image(data)
    if event_type == EventType.EV_IPL:
        return _ipl(data)
    if event_type == EventType.EV_SEPARATOR:
        return _separator(data)
    if event_type == EventType.EV_NO_ACTION:
        return _no_action(data)
    if event_type in _TEXT_TYPES:
        return _text(data)
    if event_type == EventType.EV_S_CRTM_VERSION:
        return _crtm_version(data)
    if event_type in (EventType.EV_POST_CODE, EventType.EV_POST_CODE2):
        return _post_code(data)
    if event_type == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB:
        return FirmwareBlobEvent(efi.parse_firmware_blob(data, with_description=False))
    if event_type == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2:
        return FirmwareBlobEvent(efi.parse_firmware_blob(data, with_description=True))
    if event_type == EventType.EV_EFI_HANDOFF_TABLES:
        return HandoffTablesEvent(*efi.parse_handoff_tables(data, with_description=False))
    if event_type == EventType.EV_EFI_HANDOFF_TABLES2:
        return HandoffTablesEvent(*efi.parse_handoff_tables(data, with_description=True))
    if event_type in (EventType.EV_EFI_GPT_EVENT, EventType.EV_EFI_GPT_EVENT2):
        return GptEvent(efi.parse_gpt(data))
    if event_type == EventType.EV_EVENT_TAG:
        return _event_tag(data)
    if event_type == EventType.EV_COMPACT_HASH:
        return CompactHashEvent(data)
    return RawEvent(event_type, _label(data), data)


def _label(data: bytes) -> str | None:
    head = data.split(b"\0", 1)[0]
    if len(head) >= 2:
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            return None
        if is_printable_text(text):
            return text
    return None


def _text(data: bytes) -> TextEvent:
    if looks_utf16(data):
        return TextEvent(utf16_text(data), utf16=True)
    return TextEvent(ascii_text(data))


def _separator(data: bytes) -> SeparatorEvent:
    if len(data) != 4:
        return SeparatorEvent(SeparatorKind.OTHER, None, data)
    value = int.from_bytes(data, "little")
    if value == 0:
        kind = SeparatorKind.NORMAL
    elif value in (1, 0xFFFFFFFF):
        kind = SeparatorKind.ERROR
    else:
        kind = SeparatorKind.OTHER
    return SeparatorEvent(kind, value, data)


def _crtm_version(data: bytes) -> CrtmVersion:
    if data and not data.strip(b"\0"):
        return CrtmVersion("", None, data)
    if looks_utf16(data):
        text = utf16_text(data)
        if is_printable_text(text):
            return CrtmVersion(text, None, data)
    if len(data) == 16:
        return CrtmVersion(None, guid_text(data), data)
    return CrtmVersion(_label(data), None, data)


def _post_code(data: bytes) -> PostCode:
    label = _label(data)
    if label is not None and len(label) >= len(data.rstrip(b"\0")):
        return PostCode(label, None)
    if len(data) == 16:
        return PostCode(None, efi.parse_firmware_blob(data, with_description=False))
    raise EventDataError("EV_POST_CODE is neither a text label nor a 16-byte blob", 0)


def _no_action(data: bytes) -> DecodedEvent:
    sig = data[:16]
    if sig == b"Spec ID Event03\0":
        return _spec_id(data, agile=True)
    if sig.startswith(b"Spec ID Event0"):
        return _spec_id(data, agile=False)
    if sig == b"StartupLocality\0":
        if len(data) != 17:
            raise EventDataError(f"StartupLocality event is {len(data)} bytes, not 17", 16)
        return StartupLocality(data[16])
    if sig.startswith(b"SP800-155 Event"):
        return _sp800_155(data)
    if len(data) >= 8:
        first = int.from_bytes(data[:4], "little")
        if is_known_sipa_type(first):
            try:
                return SipaEvent(parse_sipa(data))
            except EventDataError:
                pass
    return NoActionEvent(_label(data), data)


def _spec_id(data: bytes, *, agile: bool) -> SpecIdHeader:
    if len(data) < 16:  # a signature cut short ("Spec ID Event0" without its suffix)
        raise EventDataError(f"Spec ID event is {len(data)} bytes, shorter than its "
                             "16-byte signature", len(data))
    signature = data[:16].rstrip(b"\0")
    if not signature.isascii():
        # "Spec ID Event0" and a non-ASCII 16th byte: decoding it raised UnicodeDecodeError
        # (found by fuzzing, scripts/fuzz eventlog)
        raise EventDataError("the Spec ID signature is not ASCII text", 0)
    r = Reader(data, pos=16)
    platform_class = r.u32("platformClass")
    minor, major = r.u8("specVersionMinor"), r.u8("specVersionMajor")
    errata, uintn = r.u8("specErrata"), r.u8("uintnSize")
    algs: list[tuple[int, int]] = []
    if agile:
        count = r.u32("numberOfAlgorithms")
        if count > r.remaining // 4:
            raise r.fail(f"numberOfAlgorithms {count} exceeds the event data")
        for _ in range(count):
            algs.append((r.u16("algorithmId"), r.u16("digestSize")))
    vendor_size = r.u8("vendorInfoSize")
    vendor = r.take(min(vendor_size, r.remaining), "vendorInfo")
    return SpecIdHeader(
        signature.decode("ascii"),
        platform_class,
        f"{major}.{minor}",
        errata,
        uintn,
        tuple(algs),
        vendor,
    )


def _sp800_155(data: bytes) -> Sp800155Event:
    r = Reader(data, pos=16)
    signature = data[:16].rstrip(b"\0").decode("ascii", "replace")

    def string(what: str) -> str:
        return ascii_text(r.take(r.u8(f"{what} size"), what))

    pm_id = r.u32("PlatformManufacturerId")
    guid = r.guid("ReferenceManifestGuid")
    pm, model, version = (
        string("PlatformManufacturerStr"),
        string("PlatformModel"),
        string("PlatformVersion"),
    )
    fw_m = string("FirmwareManufacturerStr")
    fw_id = r.u32("FirmwareManufacturerId")
    fw_v = string("FirmwareVersion")
    if signature != "SP800-155 Event3":
        return Sp800155Event(signature, pm_id, guid, pm, model, version, fw_m, fw_id, fw_v)
    rim_type = r.u32("RimLocatorType")
    rim = r.take(r.u32("RimLocatorSize"), "RimLocator")
    cert_type = r.u32("PlatformCertLocatorType")
    cert = r.take(r.u32("PlatformCertLocatorSize"), "PlatformCertLocator")
    return Sp800155Event(
        signature,
        pm_id,
        guid,
        pm,
        model,
        version,
        fw_m,
        fw_id,
        fw_v,
        rim_type,
        rim,
        cert_type,
        cert,
    )


def _variable(event_type: int, data: bytes) -> VariableEvent:
    var = efi.parse_uefi_variable(data)
    name, guid, value = var.name, var.guid, var.data
    base = var.data_offset
    try:
        if event_type == EventType.EV_EFI_VARIABLE_AUTHORITY:
            return _authority(var)
        if name in _SIGNATURE_DATABASES and value:
            return VariableEvent(var, signature_lists=efi.parse_signature_lists(value, base=base))
        if guid == efi.EFI_GLOBAL_VARIABLE:
            if name == "BootOrder":
                return VariableEvent(var, boot_order=efi.parse_boot_order(value))
            if _BOOT_OPTION.match(name):
                return VariableEvent(var, load_option=efi.parse_load_option(value, base=base))
        if len(value) == 1:
            return VariableEvent(var, value=value[0])
        if name.startswith("Sbat"):
            return VariableEvent(var, text=ascii_text(value))
    except EventDataError as exc:
        return VariableEvent(var, contents_error=str(exc))
    return VariableEvent(var)


def _authority(var: efi.UefiVariable) -> VariableEvent:
    value = var.data
    if var.name.startswith("Sbat"):
        return VariableEvent(var, text=ascii_text(value))
    if len(value) == 1:
        return VariableEvent(var, value=value[0])
    # A bare DER certificate (shim's "Shim" vendor cert) starts with the SEQUENCE tag
    # 0x30, but so does an EFI_SIGNATURE_DATA whose owner GUID's first byte is 0x30: the
    # reading whose DER length spans exactly its bytes wins, the tag alone decides last.
    owned = (_der_sequence_size(value) != len(value) and len(value) > 16
             and _der_sequence_size(value[16:]) == len(value) - 16)
    if value[:1] == b"\x30" and not owned:
        return VariableEvent(var, authority=efi.signature_entry(efi.SignatureKind.X509, "", value))
    if len(value) > 16:
        owner, body = guid_text(value[:16]), value[16:]
        if body[:1] == b"\x30":
            kind = efi.SignatureKind.X509
        elif len(body) == 32:
            kind = efi.SignatureKind.SHA256
        else:
            kind = efi.SignatureKind.OTHER
        return VariableEvent(var, authority=efi.signature_entry(kind, owner, body))
    return VariableEvent(var, contents_error="authority data is neither a certificate nor a hash")


def _der_sequence_size(value: bytes) -> int | None:
    """Total size a DER SEQUENCE at the start of ``value`` declares (tag, length, body),
    or None when ``value`` does not start with one (definite lengths of 1-4 bytes)."""
    if len(value) < 2 or value[0] != 0x30:
        return None
    first = value[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if not 1 <= n <= 4 or len(value) < 2 + n:
        return None
    return 2 + n + int.from_bytes(value[2 : 2 + n], "big")


def _image(data: bytes) -> ImageLoadEvent:
    r = Reader(data)
    location = r.u64("ImageLocationInMemory")
    length = r.u64("ImageLengthInMemory")
    link = r.u64("ImageLinkTimeAddress")
    path_len = r.u64("LengthOfDevicePath")
    if path_len > r.remaining:
        raise r.fail(f"LengthOfDevicePath {path_len} exceeds the {r.remaining} bytes left")
    raw = r.take(path_len, "DevicePath")
    try:
        text: str | None = device_path_text(raw, base=32)
        error = None
    except EventDataError as exc:
        text, error = None, str(exc)
    return ImageLoadEvent(location, length, link, text, error, raw)


_GRUB_CMD = ("grub_cmd: ", "grub_cmd ")
_KERNEL_CMDLINE = ("kernel_cmdline: ", "grub_kernel_cmdline ")


def _ipl(data: bytes) -> IplEvent:
    if looks_utf16(data):
        return IplEvent(IplKind.UTF16_TEXT, utf16_text(data), True)
    text = ascii_text(data)
    for prefix in _KERNEL_CMDLINE:
        if text.startswith(prefix):
            return IplEvent(IplKind.KERNEL_CMDLINE, text[len(prefix) :], False)
    for prefix in _GRUB_CMD:
        if text.startswith(prefix):
            return IplEvent(IplKind.GRUB_COMMAND, text[len(prefix) :], False)
    return IplEvent(IplKind.TEXT, text, False)


def _event_tag(data: bytes) -> DecodedEvent:
    if len(data) < 8:
        raise EventDataError(f"EV_EVENT_TAG of {len(data)} bytes has no tag header", 0)
    first = int.from_bytes(data[:4], "little")
    if is_known_sipa_type(first):
        return SipaEvent(parse_sipa(data))
    r = Reader(data)
    tag_id = r.u32("taggedEventID")
    size = r.u32("taggedEventDataSize")
    if size != r.remaining:
        raise EventDataError(f"taggedEventDataSize {size} but {r.remaining} bytes follow", 4)
    body = r.rest()
    return TaggedEvent(tag_id, body, _label(body))
