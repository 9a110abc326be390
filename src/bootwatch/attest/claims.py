"""The ``azurevm`` claim set (maa-protocol section 3) from verified boot facts.

MAA does not document how it computes ``x-ms-azurevm-dbvalidated``,
``-dbxvalidated`` and ``-default-securebootkeysvalidated``; these are our
definitions (docs/attestation.md explains them):

* ``default-securebootkeysvalidated``: the measured PK, KEK and db certificates
  all belong to one configured :class:`SecureBootTemplate` (the platform's
  known-good key set), and db holds no bare hashes unless the template allows
  them.
* ``dbvalidated``: db was measured, decodes, is non-empty, every db
  certificate is one some template allows, and every authority that verified
  a boot image (EV_EFI_VARIABLE_AUTHORITY) is a certificate of the measured db.
* ``dbxvalidated``: dbx was measured, decodes and is non-empty, and no boot
  application measured in PCR 4 is revoked, neither by the measured dbx nor by
  the configured DBX reference data (Microsoft's published list); an authority
  the measured dbx revokes fails it too.

The facts come in already verified: the caller only passes values derived
from PCRs the quote covered (``attested_pcrs``); a fact from an unattested PCR
counts as unknown, and unknown never makes a "validated"/"disabled" claim true.
Every boolean carries a human reason (:class:`ClaimDecision`) so a deny can be
explained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bootwatch.errors import InputError
from bootwatch.eventlog.dbx import DbxDataError, load_dbx_json
from bootwatch.protocol import token as t

__all__ = [
    "AZURE_TRUSTED_LAUNCH",
    "DEFAULT_TEMPLATES",
    "GOOGLE_COS_V10",
    "JSON",
    "MS_HYPERV_FIRMWARE_PK",
    "MS_KEK_2K_CA_2023",
    "MS_KEK_CA_2011",
    "MS_OPTION_ROM_UEFI_CA_2023",
    "MS_UEFI_CA_2011",
    "MS_UEFI_CA_2023",
    "MS_WINDOWS_PCA_2011",
    "MS_WINDOWS_UEFI_CA_2023",
    "WINDOWS_BOOT_AUTHORITIES",
    "AzureVmClaims",
    "ClaimDecision",
    "DbxReference",
    "MeasuredSecureBoot",
    "OsInfo",
    "SecureBootTemplate",
    "WindowsBootConfig",
    "db_validated",
    "dbx_reference_from_json",
    "dbx_validated",
    "derive_azurevm_claims",
    "match_template",
    "template_to_json",
    "templates_from_json",
]

JSON = Any

# --- configuration ----------------------------------------------------------


@dataclass(frozen=True)
class SecureBootTemplate:
    """A known-good UEFI Secure Boot key set: SHA-1 thumbprints (lower-case hex) of DER certs.

    A measured key set matches when PK is exactly one certificate in ``pk``,
    every KEK certificate is in ``kek`` (at least one), and every db
    certificate is in ``db`` (at least one).
    """

    name: str
    description: str
    pk: frozenset[str]
    kek: frozenset[str]
    db: frozenset[str]
    allow_db_hashes: bool = False


@dataclass(frozen=True)
class DbxReference:
    """Revocation data beyond the VM's own dbx (e.g. Microsoft's published DBX).

    ``revoked_images`` are Authenticode SHA-256 digests of revoked boot images.
    ``revoked_cert_thumbprints`` (SHA-1 hex) are enforced only when
    ``enforce_certificates`` is set: Microsoft ships its one certificate
    revocation (Windows Production PCA 2011, CVE-2023-24932) as an optional
    update that makes PCA-2011-signed boot managers unbootable, so the default
    does not enforce it (leniency named here and in docs/attestation.md).
    """

    source: str
    revoked_images: frozenset[bytes] = frozenset()
    revoked_cert_thumbprints: frozenset[str] = frozenset()
    enforce_certificates: bool = False


# SHA-1 thumbprints of certificates seen in the measured PCR 7 variables of the
# real Azure Trusted Launch log (shared/corpus/maa/azure-guest-vm-derived) and
# of Microsoft's well-known 2011 UEFI CAs (the same thumbprints occur in the
# go-tpm-tools corpus logs).
#: CN=Microsoft Hyper-V Firmware PK
MS_HYPERV_FIRMWARE_PK = "8058e8cc51749652804bbd6f39aed713d119c64b"
#: CN=Microsoft Corporation KEK CA 2011
MS_KEK_CA_2011 = "31590bfd89c9d74ed087dfac66334b3931254b30"
#: CN=Microsoft Windows Production PCA 2011
MS_WINDOWS_PCA_2011 = "580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d"
#: CN=Microsoft Corporation UEFI CA 2011
MS_UEFI_CA_2011 = "46def63b5ce61cf8ba0de2e6639c1019d0ed14f3"
# Microsoft's 2023 Secure Boot certificates, which replace the 2011 ones as those expire
# (from June 2026): SHA-1 of the DER files in microsoft/secureboot_objects
# PreSignedObjects/{KEK,DB}/Certificates/ at 06fe58a (tests/data/secureboot-2023).  Windows
# adds them to KEK and db through its monthly updates, and Azure Trusted Launch and
# Confidential VMs created after April 2024 start with them (Microsoft KB5085395,
# KB5103014): a template without them denied every such VM.
#: CN=Microsoft Corporation KEK 2K CA 2023
MS_KEK_2K_CA_2023 = "459ab6fb5e284d272d5e3e6abc8ed663829d632b"
#: CN=Windows UEFI CA 2023 (signs the Windows Boot Manager in place of the PCA 2011)
MS_WINDOWS_UEFI_CA_2023 = "45a0fa32604773c82433c3b7d59e7466b3ac0c67"
#: CN=Microsoft UEFI CA 2023 (third-party boot applications: shim)
MS_UEFI_CA_2023 = "b5eeb4a6706048073f0ed296e7f580a790b59eaa"
#: CN=Microsoft Option ROM UEFI CA 2023 (third-party option ROMs)
MS_OPTION_ROM_UEFI_CA_2023 = "3fb39e2b8bd183bf9e4594e72183ca60afcd4277"
#: the certificates that sign Windows Boot Managers: one of them verifying a boot in the
#: quoted PCR 7 makes the boot Windows whatever the request says
WINDOWS_BOOT_AUTHORITIES = frozenset({MS_WINDOWS_PCA_2011, MS_WINDOWS_UEFI_CA_2023})

AZURE_TRUSTED_LAUNCH = SecureBootTemplate(
    name="azure-trusted-launch",
    description=(
        "Azure Trusted Launch / Hyper-V Gen2 default keys: PK 'Microsoft Hyper-V Firmware PK', "
        "KEK 'Microsoft Corporation KEK CA 2011', db 'Microsoft Windows Production PCA 2011' "
        "(Windows template) plus 'Microsoft Corporation UEFI CA 2011' (Microsoft UEFI CA "
        "template used by Linux images), and their 2023 successors (KEK 'Microsoft "
        "Corporation KEK 2K CA 2023', db 'Windows UEFI CA 2023', 'Microsoft UEFI CA 2023', "
        "'Microsoft Option ROM UEFI CA 2023')"
    ),
    pk=frozenset({MS_HYPERV_FIRMWARE_PK}),
    kek=frozenset({MS_KEK_CA_2011, MS_KEK_2K_CA_2023}),
    db=frozenset({MS_WINDOWS_PCA_2011, MS_UEFI_CA_2011, MS_WINDOWS_UEFI_CA_2023,
                  MS_UEFI_CA_2023, MS_OPTION_ROM_UEFI_CA_2023}),
)

#: Google Container-Optimized OS v10 UEFI keys, as measured in the go-tpm-tools corpus logs
#: cos-85/93/101-amd-sev.bin (GCE Shielded VM).  Not a default: an example of a
#: second known-good key set an operator can enable (the demo does).
GOOGLE_COS_V10 = SecureBootTemplate(
    name="google-cos-v10",
    description=(
        "Google Container-Optimized OS v10 keys: PK 'UEFI Platform Key v10', KEK 'UEFI Key "
        "Exchange Key v10', db 'UEFI DB Key v10' (OU=Container Optimized OS, O=Google LLC.)"
    ),
    pk=frozenset({"99cf3ea36a6aba439a32cd7b77e3f2dbf923f0a1"}),
    kek=frozenset({"677df2fff2c2a6aa94c45957ccca8d6623fb512b"}),
    db=frozenset({"3c405606fbf1e2bf97c240225b812c0acdc60d37"}),
)


def template_to_json(tpl: SecureBootTemplate) -> dict[str, Any]:
    """The JSON object :func:`templates_from_json` reads."""
    return {
        "name": tpl.name,
        "description": tpl.description,
        "pk": sorted(tpl.pk),
        "kek": sorted(tpl.kek),
        "db": sorted(tpl.db),
        "allow_db_hashes": tpl.allow_db_hashes,
    }


#: What a provider uses unless configured otherwise.
DEFAULT_TEMPLATES: tuple[SecureBootTemplate, ...] = (AZURE_TRUSTED_LAUNCH,)


# --- inputs (verified facts) --------------------------------------------------


@dataclass(frozen=True)
class MeasuredSecureBoot:
    """The UEFI Secure Boot state measured in PCR 7 (and boot images in PCR 4).

    ``None`` for a variable means it was not measured; ``decoded=False`` means a
    measured variable did not decode (fail closed: nothing validates).
    """

    secure_boot: bool | None
    pk: tuple[str, ...] | None
    kek: tuple[str, ...] | None
    db_certs: tuple[str, ...] | None
    db_hashes: tuple[bytes, ...] = ()
    dbx_hashes: frozenset[bytes] | None = None
    dbx_certs: frozenset[str] = frozenset()
    authorities: tuple[str, ...] = ()
    boot_apps: tuple[bytes, ...] = ()
    decoded: bool = True
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class WindowsBootConfig:
    """Windows SIPA boot-configuration flags from EV_EVENT_TAG events (PCR 12-14).

    ``present``: the log has SIPA events at all (a Windows boot); ``attested``:
    all of their PCRs were covered by the verified quote.  ``quoted_all``: the quote
    covers every SIPA PCR (12, 13 and 14), so an absence of SIPA events is attested
    too; ``foreign_event``: the index of the first record extended into a SIPA PCR
    whose type is neither EV_EVENT_TAG nor EV_SEPARATOR (None: none), which on a
    Windows boot could be a SIPA record retyped to hide it (event types are not
    measured).
    """

    present: bool = False
    attested: bool = False
    quoted_all: bool = False
    foreign_event: int | None = None
    boot_debugging: bool = False
    kernel_debug: bool = False
    hypervisor_debug: bool = False
    test_signing: bool = False
    flight_signing: bool = False
    elam: bool = False
    hvci_policy: int = 0


@dataclass(frozen=True)
class OsInfo:
    """OS fields as the request carried them (decoded from base64, unverified by nature)."""

    os_type: str
    distro: str
    version_major: int
    version_minor: int
    build: str


# --- outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class ClaimDecision:
    """Why a boolean claim has its value: the claim, the value and a sentence."""

    claim: str
    value: bool
    reason: str


@dataclass(frozen=True)
class AzureVmClaims:
    """The ``azurevm`` claims, as JSON values keyed by claim name, with their reasons."""

    claims: Mapping[str, JSON]
    decisions: tuple[ClaimDecision, ...] = field(default=())
    template: str | None = None

    def decision(self, claim: str) -> ClaimDecision | None:
        return next((d for d in self.decisions if d.claim == claim), None)


# --- derivation -------------------------------------------------------------


def match_template(
    sb: MeasuredSecureBoot, templates: Sequence[SecureBootTemplate]
) -> tuple[SecureBootTemplate | None, str]:
    """The first template the measured PK/KEK/db match, or None with why not."""
    if not sb.decoded:
        return None, "a Secure Boot variable did not decode: " + "; ".join(sb.problems)
    if sb.pk is None or sb.kek is None or sb.db_certs is None:
        missing = [n for n, v in (("PK", sb.pk), ("KEK", sb.kek), ("db", sb.db_certs)) if v is None]
        return None, f"{', '.join(missing)} not measured in PCR 7"
    if not templates:
        return None, "no Secure Boot key template configured"
    reasons = []
    for tpl in templates:
        why = _template_mismatch(sb, tpl)
        if why is None:
            return tpl, f"PK, KEK and db match template '{tpl.name}'"
        reasons.append(f"{tpl.name}: {why}")
    return None, "no template matches (" + "; ".join(reasons) + ")"


def _template_mismatch(sb: MeasuredSecureBoot, tpl: SecureBootTemplate) -> str | None:
    assert sb.pk is not None and sb.kek is not None and sb.db_certs is not None
    if len(sb.pk) != 1 or sb.pk[0] not in tpl.pk:
        return f"PK {_short(sb.pk)} is not the template's"
    if not sb.kek or any(k not in tpl.kek for k in sb.kek):
        return f"KEK {_short(sb.kek)} not all in the template"
    if not sb.db_certs or any(c not in tpl.db for c in sb.db_certs):
        return f"db {_short(sb.db_certs)} not all in the template"
    if sb.db_hashes and not tpl.allow_db_hashes:
        return f"db holds {len(sb.db_hashes)} image hashes the template does not allow"
    return None


def _short(thumbs: Sequence[str]) -> str:
    return "[" + ", ".join(x[:12] for x in thumbs) + "]" if thumbs else "[]"


def db_validated(sb: MeasuredSecureBoot, templates: Sequence[SecureBootTemplate]) -> ClaimDecision:
    """``x-ms-azurevm-dbvalidated`` (definition in the module docstring)."""
    claim = t.DB_VALIDATED
    if not sb.decoded:
        return ClaimDecision(claim, False, "a Secure Boot variable did not decode")
    if not sb.db_certs:
        return ClaimDecision(claim, False, "db not measured or holds no certificate")
    allowed = frozenset().union(*(tpl.db for tpl in templates)) if templates else frozenset()
    unknown = [c for c in sb.db_certs if c not in allowed]
    if unknown:
        return ClaimDecision(
            claim, False, f"db holds certificates no template allows: {_short(unknown)}"
        )
    if sb.db_hashes and not any(tpl.allow_db_hashes for tpl in templates):
        return ClaimDecision(claim, False, f"db holds {len(sb.db_hashes)} bare image hashes")
    stray = [a for a in sb.authorities if a not in sb.db_certs]
    if stray:
        return ClaimDecision(
            claim, False, f"boot images verified by authorities not in db: {_short(stray)}"
        )
    return ClaimDecision(claim, True, f"db holds only known-good certificates ({len(sb.db_certs)})")


def dbx_validated(sb: MeasuredSecureBoot, reference: DbxReference | None) -> ClaimDecision:
    """``x-ms-azurevm-dbxvalidated`` (definition in the module docstring)."""
    claim = t.DBX_VALIDATED
    if not sb.decoded:
        return ClaimDecision(claim, False, "a Secure Boot variable did not decode")
    if sb.dbx_hashes is None:
        return ClaimDecision(claim, False, "dbx not measured in PCR 7")
    if not sb.dbx_hashes and not sb.dbx_certs:
        return ClaimDecision(claim, False, "dbx is empty (no revocations installed)")
    revoked_local = [a for a in sb.boot_apps if a in sb.dbx_hashes]
    if revoked_local:
        return ClaimDecision(
            claim, False, f"boot image {revoked_local[0].hex()[:16]}... is revoked by the VM's dbx"
        )
    if reference is not None:
        revoked = [a for a in sb.boot_apps if a in reference.revoked_images]
        if revoked:
            return ClaimDecision(
                claim,
                False,
                f"boot image {revoked[0].hex()[:16]}... is revoked by {reference.source}",
            )
        if reference.enforce_certificates:
            bad = [a for a in sb.authorities if a in reference.revoked_cert_thumbprints]
            if bad:
                return ClaimDecision(
                    claim, False, f"authority {bad[0][:12]} is revoked by {reference.source}"
                )
    bad_auth = [a for a in sb.authorities if a in sb.dbx_certs]
    if bad_auth:
        return ClaimDecision(
            claim, False, f"authority {bad_auth[0][:12]} is revoked by the VM's dbx"
        )
    src = (
        f" or {reference.source}"
        if reference is not None
        else " (no DBX reference data configured: only the VM's own dbx was checked; "
        "configure Microsoft's dbx_info_msft_latest.json with --dbx-data)"
    )
    return ClaimDecision(
        claim,
        True,
        f"dbx holds {len(sb.dbx_hashes)} hashes; none of {len(sb.boot_apps)} boot images "
        f"revoked by it{src}",
    )


def derive_azurevm_claims(
    *,
    secure_boot: MeasuredSecureBoot,
    windows: WindowsBootConfig,
    templates: Sequence[SecureBootTemplate],
    dbx_reference: DbxReference | None,
    os_info: OsInfo,
    attested_pcrs: Sequence[int],
    protocol_version: str,
    enc_key_jwk: Mapping[str, JSON],
    client_payload: Mapping[str, JSON],
    vm_id: str | None = None,
) -> AzureVmClaims:
    """All ``secureboot`` / ``x-ms-azurevm-*`` / ``x-ms-runtime`` claims of one attestation.

    ``secure_boot`` must come from PCR 7/4 events of a replay that matched the
    quote; when PCR 7 is not attested the Secure Boot claims are all false.
    """
    pcrs = sorted(set(attested_pcrs))
    decisions: list[ClaimDecision] = []
    sb = secure_boot
    if 7 not in pcrs:
        sb = MeasuredSecureBoot(None, None, None, None, decoded=False,
                                problems=("PCR 7 is not covered by the quote",))
    if sb.secure_boot is True:
        decisions.append(ClaimDecision(t.SECUREBOOT, True, "SecureBoot variable measured as 1"))
    elif sb.secure_boot is False:
        decisions.append(ClaimDecision(t.SECUREBOOT, False, "SecureBoot variable measured as 0"))
    else:
        why = "; ".join(sb.problems) or "SecureBoot variable not measured in PCR 7"
        decisions.append(ClaimDecision(t.SECUREBOOT, False, why))
    tpl, why = match_template(sb, templates)
    decisions.append(ClaimDecision(t.DEFAULT_KEYS_VALIDATED, tpl is not None, why))
    decisions.append(db_validated(sb, templates))
    if 4 in pcrs:
        decisions.append(dbx_validated(sb, dbx_reference))
    else:
        decisions.append(ClaimDecision(
            t.DBX_VALIDATED, False, "PCR 4 (boot applications) is not covered by the quote"
        ))
    # a Windows boot by the request's word or by measurement: a Windows boot CA (the
    # Production PCA 2011 or the Windows UEFI CA 2023) verified the boot (quoted PCR 7);
    # the OS type alone is unsigned, and a Windows boot that said "Linux" and left PCR
    # 12-14 out read as "no debugger" (found in review)
    measured_windows = 7 in attested_pcrs and not WINDOWS_BOOT_AUTHORITIES.isdisjoint(
        secure_boot.authorities)
    decisions.extend(_windows_decisions(
        windows, is_windows=os_info.os_type.lower() == "windows" or measured_windows))

    claims: dict[str, JSON] = {d.claim: d.value for d in decisions}
    claims[t.PROTOCOL_VER] = protocol_version
    claims[t.ATTESTED_PCRS] = pcrs
    claims[t.ELAM_ENABLED] = windows.elam and windows.attested
    claims[t.HVCI_POLICY] = windows.hvci_policy if windows.attested else 0
    claims[t.IS_WINDOWS] = os_info.os_type.lower() == "windows"
    claims[t.OSTYPE] = os_info.os_type
    claims[t.OSDISTRO] = os_info.distro
    claims[t.OSVERSION_MAJOR] = os_info.version_major
    claims[t.OSVERSION_MINOR] = os_info.version_minor
    claims[t.OSBUILD] = os_info.build
    if vm_id is not None:
        claims[t.VMID] = vm_id
    claims[t.RUNTIME] = {
        "keys": [dict(enc_key_jwk)],
        "client-payload": dict(client_payload),
    }
    return AzureVmClaims(
        claims=claims, decisions=tuple(decisions), template=tpl.name if tpl else None
    )


def _windows_decisions(w: WindowsBootConfig, *, is_windows: bool) -> list[ClaimDecision]:
    """Debug and signing flags; for a non-Windows boot they are simply off.

    A Windows boot (the request says so, or the log has SIPA events) gets "disabled"
    claims only from SIPA PCRs the quote covers, all three, holding nothing but SIPA
    records and separators: a client that leaves PCR 12-14 out of its quote can drop
    their records from the log, and one that retypes a SIPA record (EV_EVENT_TAG to
    EV_IPL: the type is not measured) hides it, so either read as "no debugger, no
    test signing".  Neither is possible to tell apart from a real absence, so both
    count as unknown.  A boot the Windows Production PCA verified (quoted PCR 7) is
    Windows whatever the request says; any other boot that claims another OS and leaves
    PCR 12-14 out of its quote is read as that OS."""
    out: list[ClaimDecision] = []
    flag_claims = (t.BOOTDEBUG_ENABLED, t.KERNELDEBUG_ENABLED, t.HYPERVISORDEBUG_ENABLED,
                   t.TESTSIGNING_ENABLED, t.FLIGHTSIGNING_ENABLED)
    if (is_windows or w.present) and (not w.quoted_all or w.foreign_event is not None):
        src = ("a Windows boot whose quote does not cover PCR 12, 13 and 14: its "
               "boot-configuration (SIPA) flags are unknown" if not w.quoted_all else
               f"a Windows boot with a record of another type than EV_EVENT_TAG in PCR "
               f"12-14 (event {w.foreign_event}): its boot-configuration (SIPA) flags are "
               "unknown")
        out.extend(ClaimDecision(claim, False, src) for claim in flag_claims)
        out.append(ClaimDecision(t.DEBUGGERS_DISABLED, False, src))
        out.append(ClaimDecision(t.SIGNING_DISABLED, False, src))
        return out
    if not w.present:
        src = "no Windows boot-configuration (SIPA) events in the log"
        for claim in (t.BOOTDEBUG_ENABLED, t.KERNELDEBUG_ENABLED, t.HYPERVISORDEBUG_ENABLED,
                      t.TESTSIGNING_ENABLED, t.FLIGHTSIGNING_ENABLED):
            out.append(ClaimDecision(claim, False, src))
        out.append(ClaimDecision(t.DEBUGGERS_DISABLED, True, src + ": no debugger enabled"))
        out.append(ClaimDecision(t.SIGNING_DISABLED, True, src + ": no test/flight signing"))
        return out
    if not w.attested:
        src = "Windows SIPA events sit in PCRs the quote does not cover (unknown)"
        for claim in (t.BOOTDEBUG_ENABLED, t.KERNELDEBUG_ENABLED, t.HYPERVISORDEBUG_ENABLED,
                      t.TESTSIGNING_ENABLED, t.FLIGHTSIGNING_ENABLED):
            out.append(ClaimDecision(claim, False, src))
        out.append(ClaimDecision(t.DEBUGGERS_DISABLED, False, src))
        out.append(ClaimDecision(t.SIGNING_DISABLED, False, src))
        return out
    flags = (
        (t.BOOTDEBUG_ENABLED, w.boot_debugging, "boot debugging"),
        (t.KERNELDEBUG_ENABLED, w.kernel_debug, "kernel debugging"),
        (t.HYPERVISORDEBUG_ENABLED, w.hypervisor_debug, "hypervisor debugging"),
        (t.TESTSIGNING_ENABLED, w.test_signing, "test signing"),
        (t.FLIGHTSIGNING_ENABLED, w.flight_signing, "flight signing"),
    )
    for claim, value, label in flags:
        out.append(ClaimDecision(claim, value, f"SIPA {label} {'on' if value else 'off'}"))
    debug_on = [label for claim, value, label in flags[:3] if value]
    sign_on = [label for claim, value, label in flags[3:] if value]
    out.append(ClaimDecision(
        t.DEBUGGERS_DISABLED, not debug_on,
        "enabled: " + ", ".join(debug_on) if debug_on else "no debugger enabled (SIPA)"))
    out.append(ClaimDecision(
        t.SIGNING_DISABLED, not sign_on,
        "enabled: " + ", ".join(sign_on) if sign_on else "test and flight signing off (SIPA)"))
    return out


# --- configuration readers (bytes in; the service reads the files) -----------


def dbx_reference_from_json(data: bytes, *, source: str, arch: str = "x64") -> DbxReference:
    """Read Microsoft's ``dbx_info_msft_latest.json`` (secureboot_objects) for one architecture.

    The file is read by :func:`bootwatch.eventlog.dbx.load_dbx_json` (the one reader of
    that format); this keeps the ``images[arch][*].authenticodeHash`` digests (what UEFI
    measures for a boot application) and the certificate thumbprints.
    """
    try:
        catalog = load_dbx_json(data)
    except DbxDataError as exc:
        raise InputError(f"{source}: {exc}") from None
    if arch not in catalog.architectures:
        raise InputError(f"{source}: images.{arch}: missing or not a list")
    return DbxReference(
        source=source,
        revoked_images=frozenset(bytes.fromhex(h) for h in catalog.image_hashes(arch)),
        revoked_cert_thumbprints=catalog.certificate_thumbprints,
    )


def templates_from_json(data: bytes) -> tuple[SecureBootTemplate, ...]:
    """Read ``[{"name", "description", "pk": [...], "kek": [...], "db": [...],
    "allow_db_hashes"?}]`` (SHA-1 thumbprints, hex)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"secure boot templates: not JSON ({exc})") from None
    if not isinstance(doc, list):
        raise InputError("secure boot templates: expected a JSON list")
    out = []
    for i, item in enumerate(doc):
        where = f"secure boot templates[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InputError(f"{where}: expected an object with a 'name'")
        sets: dict[str, frozenset[str]] = {}
        for key in ("pk", "kek", "db"):
            values = item.get(key)
            if not isinstance(values, list) or not all(
                isinstance(v, str) and len(v) == 40 for v in values
            ):
                raise InputError(f"{where}.{key}: expected a list of SHA-1 hex thumbprints")
            sets[key] = frozenset(v.lower() for v in values)
        allow = item.get("allow_db_hashes", False)
        if not isinstance(allow, bool):
            raise InputError(f"{where}.allow_db_hashes: expected a boolean")
        out.append(SecureBootTemplate(
            name=item["name"], description=str(item.get("description", "")),
            pk=sets["pk"], kek=sets["kek"], db=sets["db"], allow_db_hashes=allow,
        ))
    return tuple(out)
