"""Token proof (``--require-token-proof``): a permitted attestation's token must come back
in a verified report, which only a VM still in the quoted boot can send.

The quote mark (test_quote_freshness.py) cannot catch quotes taken during a good boot and
never sent: sent later, each is newer than the mark.  But the token such an attestation
earns is sealed to an ephemeral key that only the quoted PCRs (and that boot's NULL seed)
unlock, so the VM cannot open it and its agent's report never carries it.  SQLite and
PostgreSQL, one event at a time and batched.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from bootwatch.monitor.core import CheckedReport, Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import HealthReport, HealthStatus
from bootwatch.protocol.outcome import OutcomeEvent, Verdict, decode_outcome, encode_outcome

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
VM = str(uuid.UUID(int=21)).upper()
GOOD = {0: "00" * 32, 4: "04" * 32}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _monitor(engine: Engine, proof: float = 60.0) -> tuple[Monitor, Clock]:
    clock = Clock()
    return Monitor(engine, MonitorSettings(stale_after_seconds=86400, token_proof_seconds=proof),
                   metrics=MonitorMetrics(), clock=clock), clock


def _ev(event_id: str, second: int, token: str, verdict: Verdict = Verdict.PERMIT
        ) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id, time=T0 + timedelta(seconds=second), provider="default",
        attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} {event_id}",
        policy_hash="h" * 43, vm_id=VM, pcrs=GOOD, events=(), reset_count=1,
        secure_boot=True, token_id=token)


def _report(m: Monitor, token_id: str, verified: bool = True) -> None:
    rep = HealthReport(str(uuid.uuid4()), VM, HealthStatus.HEALTHY, T0, "1.0",
                       boot_counter=1, attestation_token="x")
    m.store_reports([CheckedReport(rep, VM, verified, "" if verified else "no",
                                   "https://att.example", token_id if verified else "")])


def _vm(m: Monitor) -> Any:
    with m.read() as s:
        row = s.execute(select(VmRow.__table__).where(VmRow.vm_id == VM)).mappings().one()
        return dict(row)


def _open(m: Monitor) -> list[str]:
    with m.read() as s:
        return sorted(s.scalars(select(AlertRow.reason).where(
            AlertRow.vm_id == VM, AlertRow.status.in_(("active", "in_progress")))))


def test_the_token_id_crosses_the_wire() -> None:
    ev = _ev("w", 1, "ab" * 32)
    assert decode_outcome(encode_outcome(ev)).token_id == "ab" * 32
    deny = _ev("d", 1, "", Verdict.DENY)
    assert b'"token_id":null' in encode_outcome(deny)
    assert decode_outcome(encode_outcome(deny)).token_id == ""


def test_attestations_never_proven_are_an_alert_until_a_token_comes_back(
        engines: list[Engine]) -> None:
    m, clock = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 0, "tok-a")])
    clock.now = T0 + timedelta(seconds=20)
    m.ingest_outcomes([_ev("b", 20, "tok-b")])   # a stream of quotes nobody opens
    clock.now = T0 + timedelta(seconds=59)
    m.sweep()
    assert _open(m) == [] and _vm(m)["state"] == "healthy"   # within the window
    clock.now = T0 + timedelta(seconds=61)
    m.sweep()
    m.sweep()   # once: not counted again by every sweep
    assert _open(m) == ["attestation_unproven"] and _vm(m)["state"] == "unhealthy"
    with m.read() as s:
        alert = s.execute(select(AlertRow.__table__)).mappings().one()
    assert alert["count"] == 1 and alert["severity"] == "high"
    assert "for more than 60 s no verified report" in alert["description"]
    assert "2026-12-03T12:00:00" in alert["description"]     # since the first of them
    _report(m, "tok-a")                      # a report with an older token proves nothing
    assert _open(m) == ["attestation_unproven"]
    _report(m, "tok-b", verified=False)      # nor an unverified one
    assert _open(m) == ["attestation_unproven"]
    _report(m, "tok-b")
    assert _open(m) == [] and _vm(m)["state"] == "healthy" and _vm(m)["last_proven"]
    assert _vm(m)["unproven_since"] is None


def test_a_vm_silent_after_attesting_is_unresponsive_not_unproven(
        engines: list[Engine]) -> None:
    """An agent stopped (or a VM switched off) between its attestation and its report is
    not a stockpiled quote: found by a fleet run, whose stopped agent was counted as a
    false attestation_unproven (and its agent_unresponsive as missed)."""
    clock = Clock()
    m = Monitor(engines[0], MonitorSettings(stale_after_seconds=120, token_proof_seconds=30),
                metrics=MonitorMetrics(), clock=clock)
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 0, "tok-a")])
    clock.now = T0 + timedelta(seconds=100)
    m.sweep()
    assert _open(m) == []
    clock.now = T0 + timedelta(seconds=130)
    m.sweep()
    assert _open(m) == ["agent_unresponsive"]


def test_a_report_before_its_outcome_proves_it(engines: list[Engine]) -> None:
    """The agent reports as soon as it opened the token; the service's outcome event may
    reach the monitor later (the outbox relays it).  The second outcome repeats an
    approved boot of a VM in good standing: the batch fast path stores it
    (scripts/fuzz_monitor.py compares both paths with tokens and reports)."""
    m, clock = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 0, "tok-a")])
    _report(m, "tok-a")
    _report(m, "tok-b")
    m.ingest_outcomes([_ev("b", 10, "tok-b")])
    clock.now = T0 + timedelta(hours=1)
    m.sweep()
    assert _open(m) == [] and _vm(m)["last_proven"] and _vm(m)["last_token_id"] == "tok-b"


def test_a_newer_attestation_needs_its_own_proof(engines: list[Engine]) -> None:
    m, clock = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 0, "tok-a")])
    _report(m, "tok-a")
    clock.now = T0 + timedelta(seconds=10)
    m.ingest_outcomes([_ev("b", 10, "tok-b")])   # quotes sent by something that cannot
    assert not _vm(m)["last_proven"]              # open their answers
    clock.now = T0 + timedelta(seconds=40)
    m.ingest_outcomes([_ev("c", 40, "tok-c")])
    clock.now = T0 + timedelta(seconds=120)
    m.sweep()
    assert _open(m) == ["attestation_unproven"]
    clock.now = T0 + timedelta(seconds=130)
    m.ingest_outcomes([_ev("d", 130, "tok-d")])   # the agent's next attestation, proven
    _report(m, "tok-d")
    assert _open(m) == []


def test_not_required_by_default(engines: list[Engine]) -> None:
    m, clock = _monitor(engines[0], proof=0)
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 0, "tok-a")])
    clock.now = T0 + timedelta(seconds=10)
    m.ingest_outcomes([_ev("b", 10, "tok-b")])
    clock.now = T0 + timedelta(days=1)
    m.sweep()
    assert _open(m) == [] and _vm(m)["state"] == "healthy"


def test_denials_and_disabled_vms_need_no_proof(engines: list[Engine]) -> None:
    m, clock = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 0, "", Verdict.DENY)])
    clock.now = T0 + timedelta(hours=1)
    m.sweep()
    assert _open(m) == ["policy_denied"]
    m.disable(VM)
    m.ingest_outcomes([_ev("b", 10, "tok-b")])
    clock.now = T0 + timedelta(hours=1, seconds=10)
    m.ingest_outcomes([_ev("c", 20, "tok-c")])
    clock.now = T0 + timedelta(hours=2)
    m.sweep()
    assert _open(m) == []


def test_the_option_reaches_the_settings() -> None:
    from click.testing import CliRunner

    from bootwatch.cli.main import cli
    from bootwatch.cli.server import monitor_settings_from

    settings = monitor_settings_from({"stale_after": 900.0, "token_proof": 30.0})
    assert settings.token_proof_seconds == 30.0
    assert monitor_settings_from({"stale_after": 900.0}).token_proof_seconds == 0.0
    for command in (["server"], ["monitor", "run"]):
        res = CliRunner().invoke(cli, [*command, "--help"])
        assert res.exit_code == 0 and "--require-token-proof" in res.output
        res = CliRunner().invoke(cli, [*command, "--require-token-proof", "-1"])
        assert res.exit_code == 2 and "--require-token-proof" in res.output


def _unproven_stretch(m: Monitor, clock: Clock) -> None:
    m.ingest_outcomes([_ev("a", 0, "tok-a")])
    clock.now = T0 + timedelta(seconds=20)
    m.ingest_outcomes([_ev("b", 20, "tok-b")])
    clock.now = T0 + timedelta(seconds=61)


def test_a_dismissed_alert_does_not_reopen_for_the_same_stretch(engines: list[Engine]) -> None:
    """Found in review: a person's dismissal was undone by the next sweep (1-30 s)."""
    from bootwatch.protocol.monitor import AlertStatus

    m, clock = _monitor(engines[0])
    m.enable(VM)
    _unproven_stretch(m, clock)
    m.sweep()
    with m.read() as s:
        alert_id = s.scalars(select(AlertRow.id)).one()
    m.set_alert_status(alert_id, AlertStatus.DISMISSED, by="ops")
    for second in (70, 80, 200):
        clock.now = T0 + timedelta(seconds=second)
        m.sweep()
    assert _open(m) == []
    # proven, then unproven again: a new stretch, a new alert
    m.ingest_outcomes([_ev("c", 200, "tok-c")])
    _report(m, "tok-c")
    clock.now = T0 + timedelta(seconds=210)
    m.ingest_outcomes([_ev("d", 210, "tok-d")])
    clock.now = T0 + timedelta(seconds=230)
    m.ingest_outcomes([_ev("e", 230, "tok-e")])
    clock.now = T0 + timedelta(seconds=300)
    m.sweep()
    assert _open(m) == ["attestation_unproven"]


def test_a_suppressed_vm_is_taken_up_once_per_stretch(engines: list[Engine]) -> None:
    """Found in review: a suppressed VM never had an open alert, so every sweep read it
    again (and counted one more suppression); thousands of them could fill the sweep's
    batch and keep every other VM from being alerted."""
    from bootwatch.protocol.monitor import AlertReason

    m, clock = _monitor(engines[0])
    m.enable(VM)
    m.add_suppression(vm=VM, group=None, reason=AlertReason.ATTESTATION_UNPROVEN, note="3rd")
    _unproven_stretch(m, clock)
    for second in (61, 70, 80):
        clock.now = T0 + timedelta(seconds=second)
        m.sweep()
    assert _open(m) == []
    assert (b'bootwatch_monitor_alerts_suppressed_total{reason="attestation_unproven"} 1.0'
            in m.metrics.exposition())
