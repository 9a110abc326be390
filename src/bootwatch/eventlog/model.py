"""Typed values of the event-log engine: the contract other packages code against.

Parsing (:mod:`.framing`) only frames records; nothing here is verified.  The
names say so: :class:`UnverifiedEvent` and :class:`UnverifiedEventLog` hold what
the log *claims*.  Replaying (:mod:`.replay`) and comparing with PCR values from
a quote (:mod:`.verify`) are separate steps, as in go-eventlog and go-attestation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "DEFAULT_LENIENCIES",
    "DEFAULT_LIMITS",
    "HASHLIB_NAMES",
    "KNOWN_DIGEST_SIZES",
    "PCR_INDEX_NONE",
    "DigestAlgorithm",
    "EventType",
    "Extend",
    "Finding",
    "HashAlg",
    "Leniency",
    "Limits",
    "LogFormat",
    "PcrResult",
    "PcrStatus",
    "PcrVerification",
    "Replay",
    "SpecIdEvent",
    "UnverifiedEvent",
    "UnverifiedEventLog",
    "alg_from_name",
    "alg_name",
    "event_type_name",
]


class HashAlg(enum.IntEnum):
    """TPM_ALG_ID of the digest algorithms a TCG log may carry (TCG Algorithm Registry)."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    SM3_256 = 0x0012


#: Digest sizes of the algorithms bootwatch knows, by TPM_ALG_ID.
KNOWN_DIGEST_SIZES: Mapping[int, int] = {
    HashAlg.SHA1: 20,
    HashAlg.SHA256: 32,
    HashAlg.SHA384: 48,
    HashAlg.SHA512: 64,
    HashAlg.SM3_256: 32,
}

#: hashlib names of the known algorithms (SM3 needs an OpenSSL that provides it).
HASHLIB_NAMES: Mapping[int, str] = {
    HashAlg.SHA1: "sha1",
    HashAlg.SHA256: "sha256",
    HashAlg.SHA384: "sha384",
    HashAlg.SHA512: "sha512",
    HashAlg.SM3_256: "sm3",
}


def alg_name(alg_id: int) -> str:
    """Lowercase name of a TPM_ALG_ID ("sha256"), or "alg_0x...." when unknown."""
    try:
        return HashAlg(alg_id).name.lower()
    except ValueError:
        return f"alg_0x{alg_id:04x}"


def alg_from_name(name: str) -> int:
    """Inverse of :func:`alg_name`; raises ValueError on a name it does not know."""
    lowered = name.strip().lower().replace("-", "").replace("_", "")
    for alg in HashAlg:
        if alg.name.lower().replace("_", "") == lowered:
            return int(alg)
    if lowered == "sm3":
        return int(HashAlg.SM3_256)
    if lowered.startswith("alg0x"):
        return int(lowered[5:], 16)
    raise ValueError(f"unknown digest algorithm name {name!r}")


@dataclass(frozen=True, slots=True)
class DigestAlgorithm:
    """One digest algorithm of a log: its TPM_ALG_ID and the digest size the log declares."""

    alg_id: int
    size: int

    @property
    def name(self) -> str:
        return alg_name(self.alg_id)


class LogFormat(enum.StrEnum):
    """Record format of a log.

    ``tcg1`` is the SHA-1 format (TCG_PCR_EVENT records only), ``tcg2`` the
    crypto-agile format (Spec ID Event03 header then TCG_PCR_EVENT2), ``ccel``
    a confidential-computing event log (Intel TDX CCEL): TCG2 records whose
    indices are measurement-register (MR) indices, not PCRs.
    """

    TCG1 = "tcg1"
    TCG2 = "tcg2"
    CCEL = "ccel"


class EventType(enum.IntEnum):
    """Event types of the TCG PC Client Platform Firmware Profile (PFP) and EFI."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_POST_CODE2 = 0x00000013
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_GPT_EVENT2 = 0x8000000D
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
    EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4


_EVENT_TYPE_NAMES: Mapping[int, str] = {int(t): t.name for t in EventType}


def event_type_name(event_type: int) -> str:
    """ "EV_..." for a known event type, "0x%08x" for an unknown one (kept, never dropped)."""
    name = _EVENT_TYPE_NAMES.get(event_type)
    return name if name is not None else f"0x{event_type:08x}"


#: PCR index of events that extend no PCR (Windows logs EV_NO_ACTION records this way).
PCR_INDEX_NONE = 0xFFFFFFFF


class UnverifiedEvent(NamedTuple):
    """One framed record, exactly as the log claims it (immutable, no per-instance dict).

    A NamedTuple rather than a frozen dataclass: it is built once per record on
    the framing path, where a frozen dataclass's ``__init__`` costs 2-3x more
    (see ``benchmarks/eventlog.py``).

    ``index`` counts records from 0 (the Spec ID header of a crypto-agile log is
    record 0); ``offset`` is the byte offset of the record in the log; ``pcr`` is
    the PCR index (the MR index in a CCEL log); ``digests`` maps TPM_ALG_ID to the
    digest the record claims was extended; ``data`` is the raw event data.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the record index
    offset: int
    pcr: int
    event_type: int
    digests: Mapping[int, bytes]
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """The parsed TCG_EfiSpecIDEventStruct ("Spec ID Event03") of a crypto-agile log."""

    signature: bytes
    platform_class: int
    spec_version_minor: int
    spec_version_major: int
    spec_errata: int
    uintn_size: int
    algorithms: tuple[DigestAlgorithm, ...]
    vendor_info: bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits so a hostile log cannot exhaust memory or time."""

    max_log_size: int = 16 * 1024 * 1024
    max_event_data_size: int = 4 * 1024 * 1024
    max_event_count: int = 100_000
    max_digest_count: int = 16


DEFAULT_LIMITS = Limits()


class Leniency(enum.StrEnum):
    """Named departures from the strict format that the framer accepts on request.

    Each names the log or client that needs it (house rule 3).
    """

    #: tpm2-tools ``test/integration/fixtures/specid-vendordata.bin``: the Spec ID
    #: event's eventSize (37) excludes its vendorInfo bytes; tpm2_eventlog reads
    #: them anyway following vendorInfoSize.
    SPECID_VENDORINFO_OUTSIDE_EVENT = "specid_vendorinfo_outside_event"


#: Leniencies the framer applies unless told otherwise (each is reported when used).
DEFAULT_LENIENCIES: frozenset[Leniency] = frozenset({Leniency.SPECID_VENDORINFO_OUTSIDE_EVENT})


@dataclass(frozen=True, slots=True)
class UnverifiedEventLog:
    """A framed log: records and header, not yet replayed or checked against anything."""

    format: LogFormat
    algorithms: tuple[DigestAlgorithm, ...]
    events: tuple[UnverifiedEvent, ...]
    spec_id: SpecIdEvent | None
    padding: bytes
    #: leniencies that were needed to frame this log (empty for a well-formed log)
    leniencies: tuple[Leniency, ...] = ()
    #: total size of the log in bytes
    size: int = 0

    @property
    def index_name(self) -> str:
        """ "MR" for CCEL logs (measurement registers), else "PCR"."""
        return "MR" if self.format is LogFormat.CCEL else "PCR"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something noteworthy (not fatal) found while replaying or verifying a log."""

    code: str
    event: int | None
    message: str


class Extend(NamedTuple):
    """One PCR extend the log implies, in log order (what a TPM saw, if the log is honest)."""

    event_index: int
    pcr: int
    digests: Mapping[int, bytes]


@dataclass(frozen=True, slots=True)
class Replay:
    """Result of replaying a log: per-bank PCR values and what looked wrong."""

    #: alg_id -> pcr -> value, for the PCRs the log extends or initialises
    pcrs: Mapping[int, Mapping[int, bytes]]
    findings: tuple[Finding, ...]
    extends: tuple[Extend, ...]
    startup_locality: int | None
    hcrtm: bool
    #: initial values used (alg_id -> pcr -> value) for the PCRs in ``pcrs``
    initial: Mapping[int, Mapping[int, bytes]] = field(default_factory=dict)


class PcrStatus(enum.StrEnum):
    """Outcome of comparing one PCR of a replay with an expected value."""

    MATCHED = "matched"
    MISMATCHED = "mismatched"
    NOT_COVERED = "not_covered"


@dataclass(frozen=True, slots=True)
class PcrResult:
    """One PCR of one bank compared with its expected value."""

    alg_id: int
    pcr: int
    status: PcrStatus
    expected: bytes
    replayed: bytes | None
    #: record index of the first event that could explain a mismatch, when it can be told
    suspect_event: int | None = None
    #: name of the workaround that made the PCR match (see :mod:`.workarounds`)
    workaround: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PcrVerification:
    """Every expected PCR value compared with the replayed log."""

    results: tuple[PcrResult, ...]
    workarounds_applied: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when no PCR the log covers mismatches (NOT_COVERED is not a failure)."""
        return all(r.status is not PcrStatus.MISMATCHED for r in self.results)

    @property
    def mismatched(self) -> tuple[PcrResult, ...]:
        return tuple(r for r in self.results if r.status is PcrStatus.MISMATCHED)
