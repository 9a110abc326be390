"""A VM's state from its facts (pure): the rules, in the order they apply.

1. not enabled -> ``not_monitored`` (recorded, never alerted on);
2. never heard from (no attestation, no report) -> ``not_reporting``;
3. the last attestation was denied or its evidence rejected -> ``unhealthy``;
4. an open integrity alert (baseline deviation, revoked component) -> ``unhealthy``;
5. nothing heard within the stale window -> ``stale``;
6. the agent's last report is a platform error newer than the last attestation,
   or there is no attestation yet -> ``platform_error``;
7. otherwise the last attestation was permitted and matches an approved
   baseline -> ``healthy``.

Suppression rules silence alerts, not facts: a suppressed denial still makes
the VM ``unhealthy`` (with the rule named in the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bootwatch.protocol.monitor import VmState
from bootwatch.protocol.outcome import Verdict

__all__ = ["ATTENTION", "StateFacts", "compute_state", "platform_error_current"]

#: sort order "needs attention first"
ATTENTION = {
    VmState.UNHEALTHY: 0,
    VmState.STALE: 1,
    VmState.PLATFORM_ERROR: 2,
    VmState.NOT_REPORTING: 3,
    VmState.HEALTHY: 4,
    VmState.NOT_MONITORED: 5,
}


@dataclass(frozen=True)
class StateFacts:
    enabled: bool
    last_outcome_at: datetime | None
    last_verdict: Verdict | None
    last_reason: str
    last_boot_matched: bool
    open_integrity_alerts: tuple[str, ...]
    last_alive_at: datetime | None
    last_report_at: datetime | None
    last_report_platform_error: bool
    last_platform_error: str
    now: datetime
    stale_after: timedelta


def platform_error_current(f: StateFacts) -> bool:
    """Whether the last report's platform error still stands: no attestation reached
    the service after it.  The state and the recommendations it makes Unhealthy (agent,
    egress) read it through this one rule."""
    return f.last_report_platform_error and (
        f.last_outcome_at is None
        or (f.last_report_at is not None and f.last_report_at >= f.last_outcome_at))


def compute_state(f: StateFacts) -> tuple[VmState, str]:
    """The state and a reason a person can act on."""
    if not f.enabled:
        return VmState.NOT_MONITORED, "monitoring is not enabled for this VM"
    if f.last_outcome_at is None and f.last_alive_at is None:
        return VmState.NOT_REPORTING, "enabled, but no attestation or report has arrived"
    if f.last_verdict is not None and f.last_verdict is not Verdict.PERMIT:
        return VmState.UNHEALTHY, f"last attestation {f.last_verdict.value}: {f.last_reason}"
    if f.open_integrity_alerts:
        return VmState.UNHEALTHY, "open alert: " + ", ".join(f.open_integrity_alerts)
    alive = f.last_alive_at or f.last_outcome_at
    if alive is not None and f.now - alive > f.stale_after:
        secs = int((f.now - alive).total_seconds())
        return VmState.STALE, (
            f"no attestation or report for {secs} s (stale after "
            f"{int(f.stale_after.total_seconds())} s)"
        )
    if platform_error_current(f):
        return VmState.PLATFORM_ERROR, f"the agent cannot attest: {f.last_platform_error}"
    if f.last_outcome_at is None:
        return VmState.NOT_REPORTING, "reports arrive, but no attestation has been seen"
    if not f.last_boot_matched:
        return VmState.UNHEALTHY, "the last boot matches no approved baseline"
    return VmState.HEALTHY, "last attestation permitted; the boot matches an approved baseline"
