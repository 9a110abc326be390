"""Per-VM recommendations with Defender's assessment keys (pure).

Each recommendation is evaluated from a VM's facts to Defender's status
shape ``{code: Healthy|Unhealthy|NotApplicable, cause, description}``.
Applicability mirrors the Azure Policy ``if`` blocks quoted in
monitoring-facts.md section 1, generalised beyond Windows where the check
makes sense for any OS (written down in docs/monitor.md):

* Secure Boot (``69ad830b-...``): Trusted Launch or confidential VMs.
* vTPM (``861bbc73-...``): Trusted Launch VMs only (as ``ASC_EnableVTPM_Audit``).
* Guest attestation agent installed and provisioned (Linux ``e94a7421-...``,
  Windows ``874b14bd-...``): TL/CVM VMs with Secure Boot and vTPM on.
* Guest attestation status healthy (``b7604066-...``, medium): monitored VMs.

bootwatch's own, for what Defender does not check: the measured dbx lacks
current revocations; the AIK certificate expires within 90 days; outbound
attestation traffic is blocked (the agent named a failed network hop).
Every Unhealthy result carries remediation text a person can follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bootwatch.protocol.health import FailedHop, HealthStatus
from bootwatch.protocol.monitor import RecommendationCode, SecurityType, Severity, Toggle, VmState

__all__ = [
    "AIK_RENEWAL_WINDOW",
    "CATALOGUE",
    "RecommendationDef",
    "RecommendationResult",
    "VmFacts",
    "evaluate_recommendations",
]

AIK_RENEWAL_WINDOW: Final = timedelta(days=90)
_NETWORK_HOPS: Final = frozenset(
    {FailedHop.DNS, FailedHop.PROXY_CONNECT, FailedHop.TCP_CONNECT, FailedHop.TLS,
     FailedHop.TIMEOUT}
)


@dataclass(frozen=True)
class RecommendationDef:
    key: str
    name: str
    severity: Severity
    #: Defender's assessment key when one exists (else None: a bootwatch recommendation)
    defender: bool


SECURE_BOOT = RecommendationDef(
    "69ad830b-d98c-b1cf-2158-9d69d38c7093",
    "Secure Boot should be enabled on supported virtual machines", Severity.LOW, True)
VTPM = RecommendationDef(
    "861bbc73-0a55-8d1d-efc6-e92d9e1176e0",
    "vTPM should be enabled on supported virtual machines", Severity.LOW, True)
AGENT_LINUX = RecommendationDef(
    "e94a7421-fc27-7a4d-e9ba-2ba01384cacd",
    "Guest Attestation extension should be installed on supported Linux virtual machines",
    Severity.LOW, True)
AGENT_WINDOWS = RecommendationDef(
    "874b14bd-b49e-495a-88c6-46acb89b0a33",
    "Guest Attestation extension should be installed on supported Windows virtual machines",
    Severity.LOW, True)
ATTESTATION_HEALTHY = RecommendationDef(
    "b7604066-ed76-45f9-a5c1-c97e4812dc55",
    "Virtual machines guest attestation status should be healthy", Severity.MEDIUM, True)
DBX_CURRENT = RecommendationDef(
    "bootwatch-dbx-current",
    "The Secure Boot forbidden-signature database (dbx) should hold the current revocations",
    Severity.MEDIUM, False)
AIK_RENEWAL = RecommendationDef(
    "bootwatch-aik-renewal",
    "The vTPM's attestation key certificate should be renewed before it expires",
    Severity.LOW, False)
EGRESS = RecommendationDef(
    "bootwatch-attestation-egress",
    "Allow outbound attestation traffic", Severity.MEDIUM, False)

CATALOGUE: Final = (SECURE_BOOT, VTPM, AGENT_LINUX, AGENT_WINDOWS, ATTESTATION_HEALTHY,
                    DBX_CURRENT, AIK_RENEWAL, EGRESS)


@dataclass(frozen=True)
class VmFacts:
    """What the monitor knows about one VM, as the recommendation rules read it."""

    enabled: bool
    state: VmState
    security_type: SecurityType
    secure_boot_setting: Toggle
    vtpm_setting: Toggle
    measured_secure_boot: bool | None
    is_windows: bool | None
    #: the last report's status; a platform error that a later attestation ended reads
    #: as HEALTHY (monitor.vmstate), as the state does
    last_report_status: HealthStatus | None
    last_failed_hop: FailedHop | None
    last_failed_target: str
    last_platform_error: str
    open_integrity_alerts: int
    dbx_missing: int | None
    dbx_current: int | None
    aik_not_after: datetime | None
    now: datetime
    #: remediation text with generated egress rules (from bootwatch.net), if available
    egress_rules_text: str = ""


@dataclass(frozen=True)
class RecommendationResult:
    definition: RecommendationDef
    code: RecommendationCode
    cause: str
    description: str
    remediation: str = ""


def _na(d: RecommendationDef, cause: str, description: str) -> RecommendationResult:
    return RecommendationResult(d, RecommendationCode.NOT_APPLICABLE, cause, description)


def _ok(d: RecommendationDef, description: str) -> RecommendationResult:
    return RecommendationResult(d, RecommendationCode.HEALTHY, "", description)


def _bad(d: RecommendationDef, cause: str, description: str, fix: str) -> RecommendationResult:
    return RecommendationResult(d, RecommendationCode.UNHEALTHY, cause, description, fix)


def _secure_boot(f: VmFacts) -> RecommendationResult:
    d = SECURE_BOOT
    if f.security_type is SecurityType.STANDARD:
        return _na(d, "NotSupported", "standard security type: no UEFI Secure Boot to enable")
    if f.secure_boot_setting is Toggle.OFF or f.measured_secure_boot is False:
        how = ("the VM's inventory says Secure Boot is off"
               if f.secure_boot_setting is Toggle.OFF
               else "the last verified boot measured the SecureBoot variable as 0")
        return _bad(
            d, "SecureBootDisabled", f"Secure Boot is off: {how}",
            "Turn Secure Boot on in the VM's security settings (Azure: Configuration > "
            "Security type > Enable secure boot; libvirt: <loader secure='yes'> with an "
            "enrolled OVMF_VARS), reboot, and check that the next attestation reports "
            "secureboot=true.  If Secure Boot is off by design, suppress this VM's "
            "policy_denied alerts with a suppression rule for its group.",
        )
    if f.measured_secure_boot is None and f.secure_boot_setting is Toggle.UNKNOWN:
        return _na(d, "NoData", "no verified boot and no inventory setting yet")
    return _ok(d, "Secure Boot is on")


def _vtpm(f: VmFacts) -> RecommendationResult:
    d = VTPM
    if f.security_type is not SecurityType.TRUSTED_LAUNCH:
        return _na(d, "NotSupported", "applies to Trusted Launch VMs only")
    if f.vtpm_setting is Toggle.OFF:
        return _bad(
            d, "VtpmDisabled", "the VM's inventory says its vTPM is off",
            "Enable the vTPM in the VM's security settings (Azure: Configuration > "
            "Enable vTPM; libvirt: <tpm model='tpm-crb'><backend type='emulator' "
            "version='2.0'/></tpm>), restart the VM, then enable monitoring again.",
        )
    return _ok(d, "the vTPM is on")


def _agent(f: VmFacts) -> RecommendationResult:
    d = AGENT_WINDOWS if f.is_windows else AGENT_LINUX
    if not f.enabled:
        return _na(d, "OffByPolicy", "monitoring is not enabled for this VM")
    if f.security_type is SecurityType.STANDARD or Toggle.OFF in (
        f.secure_boot_setting, f.vtpm_setting
    ):
        return _na(d, "NotSupported", "needs a Trusted Launch or confidential VM with "
                   "Secure Boot and vTPM on")
    # never reported: the state alone is not enough (``not_reporting`` is also the state
    # of a VM whose reports arrive but whose attestations do not reach this monitor)
    if f.state is VmState.NOT_REPORTING and f.last_report_status is None:
        return _bad(
            d, "NotInstalled", "monitoring is enabled but the agent has never reported",
            "Install and start the bootwatch agent in the VM (`bootwatch agent install`, "
            "then `systemctl enable --now bootwatch-agent`), pointing --url at the "
            "attestation service and --monitor-url at this monitor.",
        )
    if f.last_report_status is HealthStatus.PLATFORM_ERROR:
        msg = f.last_platform_error or "the agent reported a platform error"
        return _bad(
            d, "ProvisioningFailed", f"the agent is installed but cannot attest: {msg}",
            "Read the agent's status file (default /var/lib/bootwatch/status.json) and run "
            "`bootwatch agent netcheck URL` in the VM; it names the step that fails.",
        )
    return _ok(d, "the agent is installed and reporting")


def _healthy(f: VmFacts) -> RecommendationResult:
    d = ATTESTATION_HEALTHY
    if not f.enabled:
        return _na(d, "OffByPolicy", "monitoring is not enabled for this VM")
    if f.open_integrity_alerts:
        return _bad(
            d, "AttestationFailed",
            f"{f.open_integrity_alerts} open integrity alert(s): the boot is not trusted",
            "Open the VM's alerts (`bootwatch alert list --vm VM`): each names the PCRs "
            "and events that changed.  If the change is an approved update, approve the "
            "boot as a baseline (`bootwatch baseline approve VM`); otherwise treat the VM "
            "as compromised: isolate it and rebuild from a known-good image.",
        )
    if f.state in (VmState.STALE, VmState.NOT_REPORTING):
        return _bad(
            d, "NoRecentAttestation", f"the VM is {f.state.value}: no recent attestation",
            "Check that the VM is running and its agent is active "
            "(`systemctl status bootwatch-agent`).",
        )
    if f.state is VmState.PLATFORM_ERROR:
        return _bad(
            d, "PlatformError", "the agent could not attest (platform error)",
            "See the guest attestation agent recommendation for this VM.",
        )
    if f.state is VmState.UNHEALTHY:
        # unhealthy with no open integrity alert: a denial whose alert a suppression rule
        # kept quiet, or a deviating boot whose alert was dismissed.  Rules silence
        # alerts, not facts: this was Healthy, "permitted and matches a baseline"
        return _bad(
            d, "AttestationFailed",
            "the last attestation was not permitted or its boot matches no approved "
            "baseline (its alert is suppressed or dismissed)",
            "Read the VM's state reason (`bootwatch vm show VM`).  If the boot is off a "
            "baseline by design, approve it (`bootwatch baseline approve VM`); if the "
            "policy denies it by design (for example Secure Boot off), fix the setting "
            "the policy checks or accept this recommendation as Unhealthy.",
        )
    return _ok(d, "the last attestation was permitted and matches an approved baseline")


def _dbx(f: VmFacts) -> RecommendationResult:
    d = DBX_CURRENT
    if f.dbx_current is None:
        return _na(d, "NoReferenceData", "the attestation service has no DBX reference data")
    if f.dbx_missing is None:
        return _na(d, "NoData", "no verified boot with a measured dbx yet")
    if f.dbx_missing > 0:
        return _bad(
            d, "DbxOutdated",
            f"the measured dbx is behind the current revocation data by {f.dbx_missing} "
            f"of {f.dbx_current} entries",
            "Apply the current Secure Boot DBX update in the VM (Windows: the monthly "
            "cumulative update's dbx servicing; Linux: `fwupdmgr update` for the UEFI dbx "
            "device), reboot, and check that the next attestation reports 0 missing.",
        )
    return _ok(d, f"the measured dbx holds all {f.dbx_current} current revocations")


def _aik(f: VmFacts) -> RecommendationResult:
    d = AIK_RENEWAL
    if f.aik_not_after is None:
        return _na(d, "NoData", "no verified AIK certificate seen yet")
    left = f.aik_not_after - f.now
    if left <= AIK_RENEWAL_WINDOW:
        when = "has expired" if left.total_seconds() <= 0 else f"expires in {left.days} days"
        return _bad(
            d, "AikCertificateExpiring",
            f"the AIK certificate {when} ({f.aik_not_after:%Y-%m-%d})",
            "Renew the attestation key certificate: re-enrol the VM "
            "(`bootwatch agent enroll --url PROVIDER_URL`), or on Azure let the guest "
            "agent renew it through IMDS (it does so from 90 days before expiry).",
        )
    return _ok(d, f"the AIK certificate is valid until {f.aik_not_after:%Y-%m-%d}")


def _egress(f: VmFacts) -> RecommendationResult:
    d = EGRESS
    if not f.enabled:
        return _na(d, "OffByPolicy", "monitoring is not enabled for this VM")
    if (
        f.last_report_status is HealthStatus.PLATFORM_ERROR
        and f.last_failed_hop in _NETWORK_HOPS
    ):
        hop = f.last_failed_hop.value if f.last_failed_hop else "network"
        target = f" to {f.last_failed_target}" if f.last_failed_target else ""
        fix = (
            "Allow outbound TCP 443 from the VM to the attestation service: an egress "
            "rule for the service tag (AzureAttestation, or this service's tag from "
            "`bootwatch network service-tag`), a firewall rule, or a proxy exception. "
        )
        if f.egress_rules_text:
            fix += "Generated rules:\n" + f.egress_rules_text
        else:
            fix += "Generate them with `bootwatch network rules --format FORMAT --from URL`."
        return _bad(d, "EgressBlocked",
                    f"the agent's attestation traffic{target} failed at the {hop} step", fix)
    return _ok(d, "no blocked attestation traffic reported")


def evaluate_recommendations(f: VmFacts) -> tuple[RecommendationResult, ...]:
    """All recommendations for one VM, in catalogue order (one agent key per OS)."""
    return (_secure_boot(f), _vtpm(f), _agent(f), _healthy(f), _dbx(f), _aik(f), _egress(f))
