"""The monitor's vocabulary: VM states, alert reasons, statuses and severities.

Defined once here because three sides speak it: the monitor (which decides),
its JSON API and CLI (which print it) and the dashboard.  The strings are the
ones the API returns and the issue's tools read (``bootwatch vm list --json``
``state``; ``bootwatch alert list --json`` ``reason``/``status``/``severity``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ALERT_TYPE_ATTESTATION_FAILED",
    "ALERT_TYPE_REVOKED_COMPONENT",
    "INTEGRITY_REASONS",
    "OPEN_STATUSES",
    "AlertReason",
    "AlertStatus",
    "DiffChange",
    "RecommendationCode",
    "SecurityType",
    "Severity",
    "Toggle",
    "VmState",
]


class VmState(StrEnum):
    """A monitored VM's boot-integrity state (see docs/monitor.md for each rule)."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    PLATFORM_ERROR = "platform_error"
    STALE = "stale"
    NOT_REPORTING = "not_reporting"
    NOT_MONITORED = "not_monitored"


class AlertReason(StrEnum):
    """Why an alert fired.  The first four are Azure's "Attestation failed" causes."""

    BASELINE_DEVIATION = "baseline_deviation"
    POLICY_DENIED = "policy_denied"
    EVIDENCE_REJECTED = "evidence_rejected"
    AGENT_UNRESPONSIVE = "agent_unresponsive"
    REVOKED_BOOT_COMPONENT = "revoked_boot_component"
    #: a verified quote no newer than one already seen: a replayed request, or a vTPM
    #: restored from a snapshot (bootwatch.monitor.freshness)
    QUOTE_REPLAYED = "quote_replayed"
    #: a permitted attestation whose token never came back in a verified report (token
    #: proof, when required): its quote may have been taken earlier or replayed
    ATTESTATION_UNPROVEN = "attestation_unproven"


#: reasons that say the boot itself is not trusted (the VM is ``unhealthy``)
INTEGRITY_REASONS: Final = frozenset(
    {
        AlertReason.BASELINE_DEVIATION,
        AlertReason.POLICY_DENIED,
        AlertReason.EVIDENCE_REJECTED,
        AlertReason.REVOKED_BOOT_COMPONENT,
        AlertReason.QUOTE_REPLAYED,
        AlertReason.ATTESTATION_UNPROVEN,
    }
)


class AlertStatus(StrEnum):
    """Defender's alert lifecycle: active -> in_progress -> resolved | dismissed."""

    ACTIVE = "active"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


OPEN_STATUSES: Final = frozenset({AlertStatus.ACTIVE, AlertStatus.IN_PROGRESS})


class Severity(StrEnum):
    """Defender's severities (Sentinel spells them capitalised)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFORMATIONAL = "informational"


class RecommendationCode(StrEnum):
    """Defender's assessment status codes, spelled as Defender spells them."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    NOT_APPLICABLE = "NotApplicable"


class DiffChange(StrEnum):
    """How an event of a boot differs from the baseline's."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


class SecurityType(StrEnum):
    """Azure's VM security types (``--security-type``)."""

    TRUSTED_LAUNCH = "trusted-launch"
    CONFIDENTIAL = "confidential"
    STANDARD = "standard"


class Toggle(StrEnum):
    """An inventory setting as the operator declared it (``--secure-boot``, ``--vtpm``)."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


#: our alert type names (Defender publishes none for this alert; docs/monitor.md)
ALERT_TYPE_ATTESTATION_FAILED: Final = "BOOTWATCH_VM_AttestationFailed"
ALERT_TYPE_REVOKED_COMPONENT: Final = "BOOTWATCH_VM_RevokedBootComponent"
