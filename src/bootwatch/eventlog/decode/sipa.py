"""Windows SIPA records (the data of Windows' EV_EVENT_TAG events in PCRs 12-14
and of its EV_NO_ACTION "trust point" events), after ``wbcl.h`` of the Windows SDK.

A SIPA record is ``UINT32 type, UINT32 size, BYTE data[size]``; a type with the
aggregation bit (0x40000000) holds a further sequence of records.  Values are
typed by what the record is known to hold: flags as ``bool``, counters and
policies as ``int``, paths and names as UTF-16 text, anything else as bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeAlias

from bootwatch.encoding import b64url_encode
from bootwatch.eventlog.decode._util import EventDataError

__all__ = [
    "AGGREGATION",
    "NONMEASURED",
    "SIPA_NAMES",
    "SipaRecord",
    "SipaValue",
    "is_known_sipa_type",
    "parse_sipa",
    "sipa_name",
    "sipa_records_json",
]

AGGREGATION = 0x40000000
NONMEASURED = 0x80000000
_MAX_DEPTH = 8

SIPA_NAMES: dict[int, str] = {
    0x40010001: "TRUSTBOUNDARY",
    0x40010002: "ELAM_AGGREGATION",
    0x40010003: "LOADEDMODULE_AGGREGATION",
    0xC0010004: "TRUSTPOINT_AGGREGATION",
    0x40010005: "KSR_AGGREGATION",
    0x40010006: "KSR_SIGNED_MEASUREMENT_AGGREGATION",
    0x00020001: "INFORMATION",
    0x00020002: "BOOTCOUNTER",
    0x00020003: "TRANSFER_CONTROL",
    0x00020004: "APPLICATION_RETURN",
    0x00020005: "BITLOCKER_UNLOCK",
    0x00020006: "EVENTCOUNTER",
    0x00020007: "COUNTERID",
    0x00020008: "MORBIT_NOT_CANCELABLE",
    0x00020009: "APPLICATION_SVN",
    0x0002000A: "SVN_CHAIN_STATUS",
    0x0002000B: "MORBIT_API_STATUS",
    0x00030001: "ERROR_FIRMWAREFAILURE",
    0x80030002: "ERROR_TPMFAILURE",
    0x00030003: "ERROR_INTERNALFAILURE",
    0x80030004: "ERROR_KSRFAILURE",
    0x00040001: "BOOTDEBUGGING",
    0x00040002: "BOOT_REVOCATION_LIST",
    0x00050001: "OSKERNELDEBUG",
    0x00050002: "CODEINTEGRITY",
    0x00050003: "TESTSIGNING",
    0x00050004: "DATAEXECUTIONPREVENTION",
    0x00050005: "SAFEMODE",
    0x00050006: "WINPE",
    0x00050007: "PHYSICALADDRESSEXTENSION",
    0x00050008: "OSDEVICE",
    0x00050009: "SYSTEMROOT",
    0x0005000A: "HYPERVISOR_LAUNCH_TYPE",
    0x0005000B: "HYPERVISOR_PATH",
    0x0005000C: "HYPERVISOR_IOMMU_POLICY",
    0x0005000D: "HYPERVISOR_DEBUG",
    0x0005000E: "DRIVER_LOAD_POLICY",
    0x0005000F: "SI_POLICY",
    0x00050010: "HYPERVISOR_MMIO_NX_POLICY",
    0x00050011: "HYPERVISOR_MSR_FILTER_POLICY",
    0x00050012: "VSM_LAUNCH_TYPE",
    0x00050013: "OS_REVOCATION_LIST",
    0x00050014: "SMT_STATUS",
    0x00050020: "VSM_IDK_INFO",
    0x00050021: "FLIGHTSIGNING",
    0x00050022: "PAGEFILE_ENCRYPTION_ENABLED",
    0x00050023: "VSM_IDKS_INFO",
    0x00050024: "HIBERNATION_DISABLED",
    0x00050025: "DUMPS_DISABLED",
    0x00050026: "DUMP_ENCRYPTION_ENABLED",
    0x00050027: "DUMP_ENCRYPTION_KEY_DIGEST",
    0x00050028: "LSAISO_CONFIG",
    0x00050029: "SBCP_INFO",
    0x00050030: "HYPERVISOR_BOOT_DMA_PROTECTION",
    0x00060001: "NOAUTHORITY",
    0x00060002: "AUTHORITYPUBKEY",
    0x00070001: "FILEPATH",
    0x00070002: "IMAGESIZE",
    0x00070003: "HASHALGORITHMID",
    0x00070004: "AUTHENTICODEHASH",
    0x00070005: "AUTHORITYISSUER",
    0x00070006: "AUTHORITYSERIAL",
    0x00070007: "IMAGEBASE",
    0x00070008: "AUTHORITYPUBLISHER",
    0x00070009: "AUTHORITYSHA1THUMBPRINT",
    0x0007000A: "IMAGEVALIDATED",
    0x0007000B: "MODULE_SVN",
    0x80080001: "QUOTE",
    0x80080002: "QUOTESIGNATURE",
    0x80080003: "AIKID",
    0x80080004: "AIKPUBDIGEST",
    0x00090001: "ELAM_KEYNAME",
    0x00090002: "ELAM_CONFIGURATION",
    0x00090003: "ELAM_POLICY",
    0x00090004: "ELAM_MEASURED",
    0x000A0001: "VBS_VSM_REQUIRED",
    0x000A0002: "VBS_SECUREBOOT_REQUIRED",
    0x000A0003: "VBS_IOMMU_REQUIRED",
    0x000A0004: "VBS_MMIO_NX_REQUIRED",
    0x000A0005: "VBS_MSR_FILTERING_REQUIRED",
    0x000A0006: "VBS_MANDATORY_ENFORCEMENT",
    0x000A0007: "VBS_HVCI_POLICY",
    0x000A0008: "VBS_MICROSOFT_BOOT_CHAIN_REQUIRED",
    0x000A0009: "VBS_DUMP_USES_AMEROOT",
    0x000A000A: "VBS_VSM_NOSECRETS_ENFORCED",
    0x000B0001: "KSR_SIGNATURE",
    0x000C0001: "DRTM_STATE_AUTH",
    0x000C0002: "DRTM_SMM_LEVEL",
    0x000C0003: "DRTM_AMD_SMM_HASH",
    0x000C0004: "DRTM_AMD_SMM_SIGNER_KEY",
}

_BOOLEANS = frozenset(
    {
        "BOOTDEBUGGING",
        "OSKERNELDEBUG",
        "CODEINTEGRITY",
        "TESTSIGNING",
        "SAFEMODE",
        "WINPE",
        "PHYSICALADDRESSEXTENSION",
        "HYPERVISOR_DEBUG",
        "IMAGEVALIDATED",
        "FLIGHTSIGNING",
        "PAGEFILE_ENCRYPTION_ENABLED",
        "HIBERNATION_DISABLED",
        "DUMPS_DISABLED",
        "DUMP_ENCRYPTION_ENABLED",
        "HYPERVISOR_BOOT_DMA_PROTECTION",
        "MORBIT_NOT_CANCELABLE",
        "VBS_VSM_REQUIRED",
        "VBS_SECUREBOOT_REQUIRED",
        "VBS_IOMMU_REQUIRED",
        "VBS_MMIO_NX_REQUIRED",
        "VBS_MSR_FILTERING_REQUIRED",
        "VBS_MANDATORY_ENFORCEMENT",
        "VBS_MICROSOFT_BOOT_CHAIN_REQUIRED",
        "VBS_DUMP_USES_AMEROOT",
        "VBS_VSM_NOSECRETS_ENFORCED",
        "ELAM_MEASURED",
        "NOAUTHORITY",
    }
)
_STRINGS = frozenset(
    {
        "FILEPATH",
        "AUTHORITYISSUER",
        "AUTHORITYPUBLISHER",
        "SYSTEMROOT",
        "HYPERVISOR_PATH",
        "ELAM_KEYNAME",
        "AIKID",
    }
)
#: Members that MAA's events claim shows as arrays even when there is one.
_ALWAYS_LIST = frozenset({"LOADEDMODULE_AGGREGATION", "SI_POLICY", "ELAM_AGGREGATION"})
#: Members whose raw bytes MAA's events claim shows under "RawData".
_RAW_DATA = frozenset({"SI_POLICY", "BOOT_REVOCATION_LIST", "OS_REVOCATION_LIST", "SBCP_INFO"})


@dataclass(frozen=True, slots=True)
class SipaRecord:
    """One SIPA record; ``value`` is a tuple of records for aggregations."""

    type_id: int
    name: str
    value: SipaValue

    @property
    def children(self) -> tuple[SipaRecord, ...]:
        return self.value if isinstance(self.value, tuple) else ()


SipaValue: TypeAlias = bool | int | str | bytes | tuple[SipaRecord, ...]


def sipa_name(type_id: int) -> str:
    return SIPA_NAMES.get(type_id, f"0x{type_id:08X}")


def is_known_sipa_type(type_id: int) -> bool:
    return type_id in SIPA_NAMES


def parse_sipa(data: bytes, *, base: int = 0, depth: int = 0) -> tuple[SipaRecord, ...]:
    """Parse a sequence of SIPA records that must fill ``data`` exactly."""
    if depth > _MAX_DEPTH:
        raise EventDataError("SIPA aggregations nested too deeply", base)
    records: list[SipaRecord] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise EventDataError("SIPA record header truncated", base + pos)
        type_id, size = struct.unpack_from("<II", data, pos)
        if size > end - pos - 8:
            raise EventDataError(f"SIPA record size {size} exceeds the data", base + pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        name = sipa_name(type_id)
        value: SipaValue
        if type_id & AGGREGATION:
            value = parse_sipa(body, base=base + pos + 8, depth=depth + 1)
        else:
            value = _value(name, body)
        records.append(SipaRecord(type_id, name, value))
        pos += 8 + size
    return tuple(records)


def _value(name: str, body: bytes) -> bool | int | str | bytes:
    if name in _BOOLEANS and len(body) == 1:
        return body[0] != 0
    if name in _STRINGS and len(body) % 2 == 0:
        return body.decode("utf-16-le", "replace").rstrip("\0")
    if name not in _RAW_DATA and len(body) in (1, 2, 4, 8):
        return int.from_bytes(body, "little")
    return body



def _json_value(record: SipaRecord) -> object:
    v = record.value
    if isinstance(v, tuple):
        return sipa_records_json(v)
    if isinstance(v, bytes):
        return {"RawData": b64url_encode(v)}
    if record.name == "VBS_HVCI_POLICY" and isinstance(v, int) and not isinstance(v, bool):
        return {"Value": v, "String": str(v)}
    return v


def sipa_records_json(records: tuple[SipaRecord, ...]) -> dict[str, object]:
    """Records as MAA's events claim shows them: ``{"EVENT_<NAME>": value, ...}``.

    Repeated members become arrays; aggregations become nested objects.
    """
    grouped: dict[str, list[object]] = {}
    always: set[str] = set()
    for rec in records:
        key = f"EVENT_{rec.name}"
        grouped.setdefault(key, []).append(_json_value(rec))
        if rec.name in _ALWAYS_LIST:
            always.add(key)
    return {k: (v if k in always or len(v) > 1 else v[0]) for k, v in grouped.items()}
