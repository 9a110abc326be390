"""From verified evidence to the typed facts the claim derivation needs.

This is the seam between the evidence layer (tpm + eventlog) and the claims:
it takes only what :func:`bootwatch.attest.evidence.verify_evidence` has
verified (the replayed log that explains the quoted PCRs, the certified
ephemeral key, the AIK certificate result) and turns it into
:class:`~bootwatch.attest.claims.MeasuredSecureBoot`,
:class:`~bootwatch.attest.claims.WindowsBootConfig`, the OS fields and the
policy-visible claims (the booleans plus the 1.2 JSON claims ``events`` and
``pcrs``).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.attest.caches import CertificateCache, VerifierCaches
from bootwatch.attest.claims import (
    AzureVmClaims,
    MeasuredSecureBoot,
    OsInfo,
    WindowsBootConfig,
)
from bootwatch.attest.evidence import SIPA_PCRS, EvidenceVerification
from bootwatch.encoding import b64url_encode, sha1_thumbprint
from bootwatch.errors import InputError
from bootwatch.eventlog.decode import VariableEvent, decode_event, events_claim
from bootwatch.eventlog.decode.efi import (
    SignatureEntry,
    SignatureKind,
    X509Info,
    x509_info_or_reason,
)
from bootwatch.eventlog.decode.sipa import AGGREGATION as SIPA_AGGREGATION
from bootwatch.eventlog.decode.sipa import SIPA_NAMES
from bootwatch.eventlog.model import EventType, HashAlg, UnverifiedEvent, UnverifiedEventLog
from bootwatch.policy import Claim
from bootwatch.protocol import token as t
from bootwatch.protocol.azureguest import AzureGuestRequest, UnverifiedAzureGuestRequest

__all__ = [
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "EV_EFI_BOOT_SERVICES_APPLICATION",
    "EV_EFI_VARIABLE_AUTHORITY",
    "EV_EFI_VARIABLE_DRIVER_CONFIG",
    "EV_EVENT_TAG",
    "SHA256",
    "BootFactsError",
    "VerifiedBoot",
    "client_payload_claim",
    "enc_key_jwk",
    "is_described_event",
    "measured_secure_boot",
    "os_info_of",
    "pcrs_claim",
    "pcrs_json",
    "policy_claims",
    "verified_boot",
    "vm_id_from_aik_certificate",
    "windows_boot_config",
]

_SIPA_FLAGS = {
    "BOOTDEBUGGING": "boot_debugging",
    "OSKERNELDEBUG": "kernel_debug",
    "HYPERVISOR_DEBUG": "hypervisor_debug",
    "TESTSIGNING": "test_signing",
    "FLIGHTSIGNING": "flight_signing",
}
EV_EVENT_TAG = 0x00000006


@dataclass(frozen=True)
class VerifiedBoot:
    """What the pipeline knows for certain about one boot, ready for claims."""

    secure_boot: MeasuredSecureBoot
    windows: WindowsBootConfig
    attested_pcrs: tuple[int, ...]
    pcr_values: Mapping[int, bytes]
    events: Mapping[str, Any] | None
    enc_key: rsa.RSAPublicKey
    protocol_version: str
    client_payload: Mapping[str, Any]
    vm_id: str | None


# --- pieces that need no other layer -----------------------------------------


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return b64url_encode(raw)


def enc_key_jwk(key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The ephemeral vTPM key as MAA puts it in ``x-ms-runtime.keys``."""
    numbers = key.public_numbers()
    return {
        "e": _b64url_uint(numbers.e),
        "key_ops": ["encrypt"],
        "kid": t.EPHEMERAL_KEY_KID,
        "kty": "RSA",
        "n": _b64url_uint(numbers.n),
    }


def client_payload_claim(payload: Mapping[str, str]) -> dict[str, str]:
    """``x-ms-runtime.client-payload``: each value standard base64 of its UTF-8 text,
    as MAA echoes it (the protocol layer hands us the decoded text)."""
    return {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in payload.items()}


def vm_id_from_aik_certificate(cert: x509.Certificate | None) -> str | None:
    """The VM id GUID from a *validated* AIK certificate's subject CN, upper-case.

    Azure's vTPM CA puts ``<hex>.TrustedVM.Azure.Microsoft`` there (no GUID),
    the bootwatch lab CA the VM id when it has one; anything that is not a
    GUID yields no ``x-ms-azurevm-vmid`` claim.
    """
    if cert is None:
        return None
    for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
        try:
            return str(uuid.UUID(value.strip())).upper()
        except ValueError:
            continue
    return None


_SIPA_IDS = {name: type_id for type_id, name in SIPA_NAMES.items()}
#: aggregations that cannot hold boot-configuration flags: not descended into
_SIPA_SKIP = frozenset({_SIPA_IDS["LOADEDMODULE_AGGREGATION"]})
_SIPA_FLAG_IDS = {_SIPA_IDS[name]: flag for name, flag in _SIPA_FLAGS.items()}
_SIPA_HVCI = _SIPA_IDS["VBS_HVCI_POLICY"]
_SIPA_ELAM = frozenset(i for n, i in _SIPA_IDS.items() if n.startswith("ELAM"))
_SIPA_MAX_DEPTH = 8


@dataclass
class _SipaScan:
    flags: dict[str, bool]
    hvci: int = 0
    elam: bool = False


def _scan_sipa(data: bytes, scan: _SipaScan, depth: int = 0) -> bool:
    """Collect the flags from SIPA records (type, size, body); False if malformed.

    A focused walk over the records the claims need: loaded-module lists (most
    of a Windows log) are skipped rather than decoded, which keeps this a small
    fraction of the cost of the full SIPA decode the ``events`` claim needs.
    """
    if depth > _SIPA_MAX_DEPTH:
        return False
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            return False
        type_id, size = struct.unpack_from("<II", data, pos)
        if size > end - pos - 8:
            return False
        body = data[pos + 8 : pos + 8 + size]
        pos += 8 + size
        if type_id in _SIPA_ELAM:
            scan.elam = True
        if type_id & SIPA_AGGREGATION:
            if type_id not in _SIPA_SKIP and not _scan_sipa(body, scan, depth + 1):
                return False
            continue
        flag = _SIPA_FLAG_IDS.get(type_id)
        if flag is not None:
            scan.flags[flag] = scan.flags.get(flag, False) or any(body)
        elif type_id == _SIPA_HVCI and len(body) in (1, 2, 4, 8):
            scan.hvci = int.from_bytes(body, "little")
    return True


def windows_boot_config(log: UnverifiedEventLog, attested: Iterable[int]) -> WindowsBootConfig:
    """SIPA flags from the Windows EV_EVENT_TAG events in PCR 12-14 of ``log``.

    An EV_EVENT_TAG in those PCRs whose SIPA records do not frame counts as
    present and not attested, so the aggregate "disabled" claims fail closed.  Whether
    the quote covers all three PCRs, and the first record of another type in them, are
    kept for the claims (``claims._windows_decisions``): types are not measured.
    """
    attested_set = frozenset(attested)
    quoted_all = frozenset(SIPA_PCRS) <= attested_set
    scan = _SipaScan(flags={})
    pcrs: set[int] = set()
    malformed = False
    foreign: int | None = None
    for event in log.events:
        if event.pcr not in SIPA_PCRS:
            continue
        if event.event_type != EV_EVENT_TAG:
            if foreign is None and event.event_type != EV_NO_ACTION and not (
                    event.event_type == EV_SEPARATOR and _harmless(event)):
                foreign = event.index
            continue
        pcrs.add(event.pcr)
        if not _scan_sipa(event.data, scan):
            malformed = True
    if not pcrs:
        return WindowsBootConfig(quoted_all=quoted_all, foreign_event=foreign)
    return WindowsBootConfig(
        present=True,
        quoted_all=quoted_all,
        foreign_event=foreign,
        attested=pcrs <= attested_set and not malformed,
        elam=scan.elam,
        hvci_policy=scan.hvci,
        **scan.flags,
    )


def pcrs_json(pcr_values: Mapping[int, bytes]) -> dict[str, Any]:
    """The 1.2 ``pcrs`` claim: SHA-256 digests as lower-case hex (our documented choice)."""
    return {
        "PCRs": [
            {"Index": i, "Digests": {"SHA256": pcr_values[i].hex()}} for i in sorted(pcr_values)
        ]
    }


def pcrs_claim(boot: VerifiedBoot) -> dict[str, Any]:
    return pcrs_json(boot.pcr_values)


def policy_claims(
    azurevm: AzureVmClaims, *, events: Mapping[str, Any] | None, pcrs: Mapping[str, Any]
) -> list[Claim]:
    """Incoming claims for an AzureGuest policy (issuer AttestationService).

    ``events`` is None when the policy does not read it (it is costly to build).
    """
    out: list[Claim] = []
    for name, value in azurevm.claims.items():
        if name == t.RUNTIME:
            continue
        out.append(Claim.service(name, value))
    if events is not None:
        # not read-only: MAA's "issue all incoming claims" sample issues it (only pcrs is
        # documented read-only, maa-protocol 2.3)
        out.append(Claim.service("events", dict(events)))
    out.append(Claim.service("pcrs", dict(pcrs), read_only=True))
    return out


def os_info_of(request: AzureGuestRequest | UnverifiedAzureGuestRequest) -> OsInfo:
    """OS fields of a decoded request (the protocol layer already base64-decoded them)."""
    return OsInfo(
        os_type=str(request.os_type),
        distro=str(request.os_distro),
        version_major=int(request.os_version_major),
        version_minor=int(request.os_version_minor),
        build=str(request.os_build),
    )


EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
_SB_VARIABLES = {
    "SecureBoot": EFI_GLOBAL_VARIABLE,
    "PK": EFI_GLOBAL_VARIABLE,
    "KEK": EFI_GLOBAL_VARIABLE,
    "db": EFI_IMAGE_SECURITY_DATABASE,
    "dbx": EFI_IMAGE_SECURITY_DATABASE,
}
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_EFI_ACTION = 0x80000007
#: types whose digest the replay checks against their data (eventlog.replay), so their
#: data is what was measured; skipped as harmless only with the data those types carry
_PCR4_BOUND = frozenset({EV_SEPARATOR, EV_EFI_ACTION})
_PCR7_BOUND = frozenset({EV_SEPARATOR, EV_EFI_ACTION})
#: what a separator measures: 0, or 0xFFFFFFFF / 1 for an error (PFP), and "WBCL" in
#: Windows' PCR 12-14 (the Azure Trusted Launch log)
_SEPARATOR_DATA = frozenset({b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x01\0\0\0", b"WBCL"})


def _harmless(event: Any) -> bool:
    """A separator or action that is one: the replay binds their data to the digest, so
    a SIPA record or a db authority (also measured as the hash of its data) retyped to
    EV_SEPARATOR or EV_EFI_ACTION passed it, and was skipped (found in review).  A
    separator carries a separator value, an action printable ASCII text."""
    if event.event_type == EV_SEPARATOR:
        return bytes(event.data) in _SEPARATOR_DATA
    if event.event_type == EV_EFI_ACTION:
        data = bytes(event.data)
        return bool(data) and all(0x20 <= b < 0x7F for b in data)
    return False
SHA256 = 0x000B


def measured_secure_boot(
    log: UnverifiedEventLog, certificates: CertificateCache | None = None
) -> MeasuredSecureBoot:
    """Secure Boot state from PCR 7 variable events and PCR 4 boot images of ``log``.

    Call only with a log whose replay matched the quoted PCRs.  Event types are not
    measured, so none is trusted to hide a measurement: every PCR 4 digest but a
    separator's or an action's is a boot image for the revocation checks, and in PCR 7
    an event of another type than a variable, authority, separator or action, or a
    second measurement of a Secure Boot variable, makes the state undecoded.  A
    variable with the wrong vendor GUID is not the Secure Boot variable and is
    ignored; contents that do not decode make the whole state undecoded (fail closed).
    ``certificates``: the caller's cache of parsed certificates by DER (a fleet's logs
    carry the same db/KEK/PK certificates; None parses each).
    """
    def read(entry: SignatureEntry) -> X509Info | str:
        if certificates is None:
            return x509_info_or_reason(entry.data)
        return certificates.get_or_compute(entry.data, lambda: x509_info_or_reason(entry.data))

    seen: dict[str, VariableEvent] = {}
    authorities: list[str] = []
    boot_apps: list[bytes] = []
    problems: list[str] = []
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue  # never extended
        if event.pcr == 4:
            # every PCR 4 measurement but the two whose data the replay binds to their
            # digest: an event's type is not measured, so a boot application retyped as
            # a driver (or anything else) is still checked against the revocations
            digest = event.digests.get(SHA256)
            if not (event.event_type in _PCR4_BOUND and _harmless(event)) and digest is not None:
                boot_apps.append(bytes(digest))
            continue
        if event.pcr != 7:
            continue
        if event.event_type in _PCR7_BOUND:
            if not _harmless(event):
                kind = "separator" if event.event_type == EV_SEPARATOR else "action"
                problems.append(f"event {event.index}: a {kind} in PCR 7 whose data is not "
                                f"a {kind}'s, so what it measured cannot be judged")
            continue
        if event.event_type not in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_AUTHORITY):
            # the type is not measured: a db authority retyped as EV_IPL hid the
            # certificate that verified the boot.  Firmware logs nothing else here
            problems.append(f"event {event.index}: type 0x{event.event_type:08X} in PCR 7 is "
                            "not a Secure Boot variable or authority event, so what it "
                            "measured cannot be judged")
            continue
        decoded = decode_event(event)
        if not isinstance(decoded, VariableEvent):
            problems.append(f"event {event.index}: variable event does not decode")
            continue
        if event.event_type == EV_EFI_VARIABLE_AUTHORITY:
            # only UEFI db authorities: shim logs its own (vendor/MOK) ones here too
            if decoded.name != "db" or decoded.guid.lower() != EFI_IMAGE_SECURITY_DATABASE:
                continue
            entry = decoded.authority
            info = read(entry) if entry is not None and entry.kind is SignatureKind.X509 else None
            if isinstance(info, X509Info):
                authorities.append(info.sha1_thumbprint.lower())
            elif entry is not None and entry.data:
                authorities.append(sha1_thumbprint(entry.data))
            continue
        want = _SB_VARIABLES.get(decoded.name)
        if want is None or decoded.guid.lower() != want:
            continue
        if decoded.name in seen:
            # firmware measures each once (every corpus log does); a second one is an
            # authority retyped as configuration (both bind their data), or a log that
            # says two things: which one the boot used cannot be told
            problems.append(f"{decoded.name} (event {event.index}): measured a second time")
            continue
        if decoded.contents_error is not None:
            problems.append(f"{decoded.name} (event {event.index}): {decoded.contents_error}")
        seen[decoded.name] = decoded

    def certs(name: str) -> tuple[str, ...] | None:
        var = seen.get(name)
        if var is None:
            return None
        if var.signature_lists is None:
            return () if not var.data else None
        out = []
        for sl in var.signature_lists:
            for entry in sl.entries:
                info = read(entry) if entry.kind is SignatureKind.X509 else None
                if isinstance(info, X509Info):
                    out.append(info.sha1_thumbprint.lower())
                elif not entry.is_hash:
                    why = info if isinstance(info, str) else entry.error
                    problems.append(f"{name}: an X.509 entry does not parse ({why})")
        return tuple(out)

    def hashes(name: str) -> tuple[bytes, ...]:
        var = seen.get(name)
        if var is None or var.signature_lists is None:
            return ()
        return tuple(
            e.data for sl in var.signature_lists for e in sl.entries
            if e.is_hash and not e.is_svn_record
        )

    sb_var = seen.get("SecureBoot")
    secure_boot: bool | None = None
    if sb_var is not None:
        secure_boot = sb_var.data == b"\x01"
    dbx_var = seen.get("dbx")
    return MeasuredSecureBoot(
        secure_boot=secure_boot,
        pk=certs("PK"),
        kek=certs("KEK"),
        db_certs=certs("db"),
        db_hashes=hashes("db"),
        dbx_hashes=frozenset(hashes("dbx")) if dbx_var is not None else None,
        dbx_certs=frozenset(certs("dbx") or ()),
        authorities=tuple(dict.fromkeys(authorities)),
        boot_apps=tuple(boot_apps),
        decoded=not problems,
        problems=tuple(problems),
    )


class BootFactsError(InputError):
    """Verified evidence whose boot facts cannot be derived (names what is missing)."""

    code = "boot_facts_invalid"


def _boot_state(
    log: UnverifiedEventLog, log_digest: bytes, attested: tuple[int, ...],
    caches: VerifierCaches | None,
) -> tuple[MeasuredSecureBoot, WindowsBootConfig]:
    """The log's Secure Boot state and Windows boot configuration (a pure function of
    the log and the attested PCRs, so kept per (log digest, PCRs) in ``caches``)."""
    def compute() -> tuple[MeasuredSecureBoot, WindowsBootConfig]:
        return (measured_secure_boot(log, caches.certificates if caches else None),
                windows_boot_config(log, attested))

    if caches is None:
        return compute()
    return caches.boot_facts.get_or_compute((log_digest, attested), compute)


def verified_boot(
    evidence: EvidenceVerification,
    request: AzureGuestRequest | UnverifiedAzureGuestRequest,
    *,
    with_events: bool = True,
    caches: VerifierCaches | None = None,
) -> VerifiedBoot:
    """The boot facts of evidence that passed verification (``caches``: the verifier's).

    Reads only ``verified_*`` fields; a missing one means the caller skipped
    a failed check, which is a bug on its side, so it raises.
    """
    log = evidence.verified_event_log
    pcrs = evidence.verified_pcrs
    enc = evidence.verified_enc_key
    if log is None or pcrs is None or enc is None:
        raise BootFactsError("evidence is not verified (log, PCRs or ephemeral key missing)")
    key = enc.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise BootFactsError("EncKeyPub: the ephemeral key is not RSA (MAA wraps with RSAES)")
    attested = tuple(sorted(pcrs))
    # the 1.2 ``events`` claim is costly to build; only policies that read it get it.
    # Only the quoted PCRs' events: nothing vouches for the others.
    events = events_claim(log, pcrs=attested) if with_events else None
    chain = evidence.verified_aik_chain
    # the digest evidence verification took of these very bytes (recomputed if absent)
    digest = evidence.event_log_sha256 or hashlib.sha256(bytes(request.tcg_logs)).digest()
    secure_boot, windows = _boot_state(log, digest, attested, caches)
    return VerifiedBoot(
        secure_boot=secure_boot,
        windows=windows,
        attested_pcrs=attested,
        pcr_values=dict(pcrs),
        events=events,
        enc_key=key,
        protocol_version=str(request.protocol_version),
        client_payload=client_payload_claim(request.client_payload),
        vm_id=vm_id_from_aik_certificate(chain.leaf if chain is not None else None),
    )


def is_described_event(ev: UnverifiedEvent, pcrs: frozenset[int]) -> bool:
    """Whether an event of a verified log is one the outcome event carries to the monitor
    (bootwatch.attest.outcome.describe_events): a measured event (not EV_NO_ACTION) of a
    quoted PCR with a SHA-256 digest.  One predicate for the builder and for the
    pipeline's limit on how many there may be."""
    return bool(ev.pcr in pcrs and ev.event_type != EventType.EV_NO_ACTION
                and HashAlg.SHA256 in ev.digests)
