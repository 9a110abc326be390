"""Boot state extracted from a framed (unverified) log: Secure Boot, keys,
authorities, boot applications, boot order, kernel command line, shim state,
separators.

This reads what the log *claims*; it is only as trustworthy as the replay
that matched the log against quoted PCRs.  Anything odd becomes a
:class:`~bootwatch.eventlog.model.Finding`, never an exception: a log that
frames always yields a state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bootwatch.eventlog.decode import events as ev
from bootwatch.eventlog.decode.efi import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
    SignatureEntry,
    SignatureList,
)
from bootwatch.eventlog.model import EventType, Finding, UnverifiedEventLog, alg_name

__all__ = [
    "Authority",
    "BootApplication",
    "BootOption",
    "BootState",
    "SeparatorSeen",
    "ShimState",
    "boot_state_to_json",
    "extract_boot_state",
]

_EMPTY: Mapping[int, tuple[SeparatorSeen, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class BootApplication:
    """An EV_EFI_BOOT_SERVICES_APPLICATION: its Authenticode digests (the event digests)."""

    event: int
    pcr: int
    digests: Mapping[int, bytes]
    device_path: str | None
    location: int
    length: int


@dataclass(frozen=True, slots=True)
class Authority:
    """An EV_EFI_VARIABLE_AUTHORITY: the db/MokList/shim entry that verified an image."""

    event: int
    variable: str
    guid: str
    entry: SignatureEntry


@dataclass(frozen=True, slots=True)
class BootOption:
    number: int
    description: str
    device_path: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class SeparatorSeen:
    event: int
    kind: ev.SeparatorKind


@dataclass(frozen=True, slots=True)
class ShimState:
    """What shim measured: MOK variables (names in PCR14, values where logged), SBAT."""

    measured_variables: tuple[str, ...] = ()
    mok_sb_state: int | None = None
    mok_list_trusted: int | None = None
    sbat_level: str | None = None
    vendor_certificates: tuple[SignatureEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class BootState:
    """Boot facts the log claims.  ``None`` means "not measured in this log"."""

    secure_boot: bool | None
    pk: tuple[SignatureList, ...] | None
    kek: tuple[SignatureList, ...] | None
    db: tuple[SignatureList, ...] | None
    dbx: tuple[SignatureList, ...] | None
    authorities: tuple[Authority, ...]
    boot_applications: tuple[BootApplication, ...]
    boot_order: tuple[int, ...] | None
    boot_options: tuple[BootOption, ...]
    kernel_cmdline: str | None
    shim: ShimState
    separators: Mapping[int, tuple[SeparatorSeen, ...]] = field(default_factory=lambda: _EMPTY)
    findings: tuple[Finding, ...] = ()


_KEY_VARS = {
    ("PK", EFI_GLOBAL_VARIABLE): "pk",
    ("KEK", EFI_GLOBAL_VARIABLE): "kek",
    ("db", EFI_IMAGE_SECURITY_DATABASE): "db",
    ("dbx", EFI_IMAGE_SECURITY_DATABASE): "dbx",
}
_RELEVANT = ev.VARIABLE_TYPES | {
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
    EventType.EV_IPL,
    EventType.EV_SEPARATOR,
}


def extract_boot_state(log: UnverifiedEventLog) -> BootState:
    """Walk the log once and collect the boot state (decodes only the events it needs)."""
    findings: list[Finding] = []
    secure_boot: bool | None = None
    sb_seen = False
    keys: dict[str, tuple[SignatureList, ...]] = {}
    authorities: list[Authority] = []
    apps: list[BootApplication] = []
    boot_order: tuple[int, ...] | None = None
    options: list[BootOption] = []
    kernel_cmdline: str | None = None
    sdboot_cmdline: str | None = None
    separators: dict[int, list[SeparatorSeen]] = {}
    shim_vars: list[str] = []
    mok_sb: int | None = None
    mok_trusted: int | None = None
    sbat: str | None = None
    vendor: list[SignatureEntry] = []

    for e in log.events:
        et = e.event_type
        if et not in _RELEVANT:
            continue
        d = ev.decode_data(et, e.pcr, e.data)
        if isinstance(d, ev.Undecodable):
            findings.append(
                Finding(
                    "event_undecodable",
                    e.index,
                    f"{e.type_name} data does not decode: {d.reason} (data offset {d.offset})",
                )
            )
            continue
        if isinstance(d, ev.SeparatorEvent):
            separators.setdefault(e.pcr, []).append(SeparatorSeen(e.index, d.kind))
            if d.kind is ev.SeparatorKind.ERROR:
                findings.append(
                    Finding("error_separator", e.index, f"PCR{e.pcr} has an error separator")
                )
        elif isinstance(d, ev.ImageLoadEvent):
            apps.append(
                BootApplication(e.index, e.pcr, e.digests, d.device_path, d.location, d.length)
            )
        elif isinstance(d, ev.IplEvent):
            if d.kind is ev.IplKind.KERNEL_CMDLINE:
                kernel_cmdline = d.text.strip()
            elif d.kind is ev.IplKind.UTF16_TEXT and e.pcr in (8, 12):
                sdboot_cmdline = d.text.strip()
            elif e.pcr == 14 and d.kind is ev.IplKind.TEXT:
                shim_vars.append(d.text)
        elif isinstance(d, ev.VariableEvent):
            name, guid = d.name, d.guid
            if d.contents_error:
                findings.append(
                    Finding(
                        "variable_contents_undecodable",
                        e.index,
                        f"{name} contents do not decode: {d.contents_error}",
                    )
                )
            if et == EventType.EV_EFI_VARIABLE_AUTHORITY:
                if d.authority is not None:
                    if name.lower() == "shim":
                        vendor.append(d.authority)
                    authorities.append(Authority(e.index, name, guid, d.authority))
                elif name == "MokSBState":
                    mok_sb = d.value
                elif name == "MokListTrusted":
                    mok_trusted = d.value
                elif d.text is not None and name.startswith("Sbat"):
                    sbat = d.text
                continue
            if et == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
                if name == "SecureBoot" and guid == EFI_GLOBAL_VARIABLE:
                    value = _secure_boot(d, e.index, findings)
                    if sb_seen and value != secure_boot:
                        findings.append(
                            Finding(
                                "secureboot_conflict",
                                e.index,
                                "SecureBoot measured again with a different value; "
                                "reporting unknown",
                            )
                        )
                        value = None
                    secure_boot, sb_seen = value, True
                    continue
                slot = _KEY_VARS.get((name, guid))
                if slot is not None:
                    keys[slot] = d.signature_lists or ()
                    continue
                if guid == SHIM_LOCK_GUID and name == "MokSBState":
                    mok_sb = d.value
                    continue
            if et in (EventType.EV_EFI_VARIABLE_BOOT, EventType.EV_EFI_VARIABLE_BOOT2) and (
                guid == EFI_GLOBAL_VARIABLE
            ):
                if d.boot_order is not None:
                    boot_order = d.boot_order
                elif d.load_option is not None and name.startswith("Boot"):
                    lo = d.load_option
                    options.append(
                        BootOption(int(name[4:], 16), lo.description, lo.device_path, lo.active)
                    )

    if not sb_seen:
        findings.append(
            Finding(
                "secureboot_not_measured",
                None,
                "the log has no SecureBoot variable event: Secure Boot state unknown",
            )
        )
    if kernel_cmdline is None:
        kernel_cmdline = sdboot_cmdline
    for app in apps:
        if not app.digests:
            findings.append(Finding("boot_application_without_digest", app.event, "no digests"))
    return BootState(
        secure_boot=secure_boot,
        pk=keys.get("pk"),
        kek=keys.get("kek"),
        db=keys.get("db"),
        dbx=keys.get("dbx"),
        authorities=tuple(authorities),
        boot_applications=tuple(apps),
        boot_order=boot_order,
        boot_options=tuple(options),
        kernel_cmdline=kernel_cmdline,
        shim=ShimState(tuple(shim_vars), mok_sb, mok_trusted, sbat, tuple(vendor)),
        separators=MappingProxyType({k: tuple(v) for k, v in sorted(separators.items())}),
        findings=tuple(findings),
    )


def _secure_boot(d: ev.VariableEvent, index: int, findings: list[Finding]) -> bool | None:
    data = d.data
    if len(data) == 0:
        findings.append(
            Finding(
                "secureboot_empty",
                index,
                "the SecureBoot variable was measured with 0-length data: Secure Boot state "
                "unknown (go-tpm-tools rejects this: 'SecureBoot data len is 0, expected 1')",
            )
        )
        return None
    if len(data) != 1 or data[0] not in (0, 1):
        findings.append(
            Finding(
                "secureboot_invalid",
                index,
                f"the SecureBoot variable holds {data.hex()!r}, not 00 or 01: state unknown",
            )
        )
        return None
    return data[0] == 1


# --------------------------------------------------------------------------- JSON


def _entry_json(entry: SignatureEntry) -> dict[str, object]:
    out: dict[str, object] = {"type": str(entry.kind), "owner": entry.owner}
    if entry.certificate is not None:
        c = entry.certificate
        out.update(
            subject=c.subject,
            issuer=c.issuer,
            serial=c.serial,
            sha1_thumbprint=c.sha1_thumbprint,
            sha256_thumbprint=c.sha256_thumbprint,
        )
    elif entry.is_hash:
        out["hash"] = entry.data.hex()
        if entry.is_svn_record:
            out["svn_record"] = True
    else:
        out["data"] = entry.data.hex()
        if entry.error:
            out["error"] = entry.error
    return out


def _lists_json(lists: tuple[SignatureList, ...] | None) -> list[dict[str, object]] | None:
    if lists is None:
        return None
    return [_entry_json(e) for s in lists for e in s.entries]


def boot_state_to_json(state: BootState) -> dict[str, object]:
    """The JSON printed by ``bootwatch log state FILE --json`` (documented in
    docs/eventlog-state.md)."""
    return {
        "secure_boot": state.secure_boot,
        "pk": _lists_json(state.pk),
        "kek": _lists_json(state.kek),
        "db": _lists_json(state.db),
        "dbx": _lists_json(state.dbx),
        "authorities": [
            {"event": a.event, "variable": a.variable, "guid": a.guid, **_entry_json(a.entry)}
            for a in state.authorities
        ],
        "boot_applications": [
            {
                "event": a.event,
                "pcr": a.pcr,
                "digests": {alg_name(k): v.hex() for k, v in a.digests.items()},
                "device_path": a.device_path,
                "image_location": a.location,
                "image_length": a.length,
            }
            for a in state.boot_applications
        ],
        "boot_order": (
            None if state.boot_order is None else [f"Boot{n:04X}" for n in state.boot_order]
        ),
        "boot_options": [
            {
                "name": f"Boot{o.number:04X}",
                "description": o.description,
                "device_path": o.device_path,
                "active": o.active,
            }
            for o in state.boot_options
        ],
        "kernel_cmdline": state.kernel_cmdline,
        "shim": {
            "measured_variables": list(state.shim.measured_variables),
            "mok_sb_state": state.shim.mok_sb_state,
            "mok_list_trusted": state.shim.mok_list_trusted,
            "sbat_level": state.shim.sbat_level,
            "vendor_certificates": [_entry_json(e) for e in state.shim.vendor_certificates],
        },
        "separators": {
            str(pcr): [{"event": s.event, "kind": str(s.kind)} for s in seps]
            for pcr, seps in state.separators.items()
        },
        "findings": [
            {"code": f.code, "event": f.event, "message": f.message} for f in state.findings
        ],
    }
