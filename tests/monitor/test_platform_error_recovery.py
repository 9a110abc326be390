"""A platform error followed by an attestation: the recommendations it made Unhealthy
recover with the state.

The VM state already counted a platform error only while no later attestation
reached the service (health.compute_state).  The agent ("installed and
provisioned") and egress recommendations read the last report alone, so after a
one-shot ``bootwatch agent attest`` that went through (or an attestation whose
cycle's report is still on its way) they kept saying the agent cannot attest and
its traffic is blocked, beside a healthy VM.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from bootwatch.monitor import queries
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

AGENT = "e94a7421-fc27-7a4d-e9ba-2ba01384cacd"
EGRESS = "bootwatch-attestation-egress"


def _recs(monitor: Monitor, vm: str) -> dict[str, tuple[str, str]]:
    detail = queries.vm_detail(monitor, vm)
    return {r["key"]: (r["status"]["code"], r["status"]["cause"])
            for r in detail["recommendations"]}


def test_an_attestation_after_a_platform_error_ends_its_recommendations(
        engines: list[Engine]) -> None:
    now = [datetime(2026, 12, 1, 12, 0, tzinfo=UTC)]
    monitor = Monitor(engines[0], MonitorSettings(stale_after_seconds=3600),
                      metrics=MonitorMetrics(), clock=lambda: now[0])
    vm = str(uuid.uuid4()).upper()
    monitor.enable(vm, name="recovering")
    monitor.ingest_report(HealthReport(
        report_id=uuid.uuid4().hex, vm_id=vm, health_status=HealthStatus.PLATFORM_ERROR,
        time=now[0], agent_version="0.1.0",
        platform_error_message="TCP connect to https://att.example:443 failed",
        failed_hop=FailedHop.TCP_CONNECT, failed_target="https://att.example:443"))
    recs = _recs(monitor, vm)
    assert recs[AGENT] == ("Unhealthy", "ProvisioningFailed")
    assert recs[EGRESS] == ("Unhealthy", "EgressBlocked")

    now[0] += timedelta(minutes=5)
    monitor.ingest_outcomes([OutcomeEvent(
        event_id=uuid.uuid4().hex, time=now[0], provider="p", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h" * 43, vm_id=vm,
        pcrs={0: "ab" * 32, 7: "cd" * 32}, reset_count=1, secure_boot=True)])
    assert queries.vm_detail(monitor, vm)["state"] == "healthy"
    recs = _recs(monitor, vm)
    assert recs[AGENT][0] == "Healthy" and recs[EGRESS][0] == "Healthy"
