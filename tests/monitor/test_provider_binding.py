"""A monitored VM is bound to one attestation provider (SQLite and PostgreSQL).

The service binds a VM id to one vTPM per provider only, so a second provider (a
custom one with a lenient policy, say) can hold another vTPM enrolled under the same VM
id.  Before this binding the monitor applied every provider's outcomes and accepted any
trusted issuer's token for the VM: that other vTPM's permitted attestation resolved the
VM's open alert and made it healthy, its denial raised a false alert, and a report
carrying its token counted as verified.  Each test below stored such a wrong fact
before the fix.  The tokens are real RS256 JWTs verified through a real OpenID issuer
on loopback (``tests/support/bwissuer.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bwissuer import Issuer
from sqlalchemy import Engine, select

from bootwatch.monitor.core import Monitor, MonitorError
from bootwatch.monitor.db import as_utc
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, OutcomeRow, ReportRow, VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.tokens import TokenVerifier
from bootwatch.protocol.health import HealthReport, HealthStatus
from bootwatch.protocol.outcome import (
    OutcomeEvent,
    Verdict,
    decode_outcome,
    encode_outcome,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
VM = str(uuid.UUID(int=7)).upper()
IMAGE = {0: "00" * 32, 4: "04" * 32}
OTHER_IMAGE = {0: "00" * 32, 4: "44" * 32}


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    i = Issuer(providers=("strict", "lax"))
    yield i
    i.close()


def _monitor(engine: Engine, tokens: TokenVerifier | None = None) -> Monitor:
    return Monitor(engine, MonitorSettings(stale_after_seconds=3600),
                   metrics=MonitorMetrics(), tokens=tokens, clock=Clock())


def _outcome(event_id: str, second: int, provider: str, verdict: Verdict = Verdict.PERMIT,
             pcrs: dict[int, str] = IMAGE, issuer: str = "") -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id, time=T0 + timedelta(seconds=second), provider=provider,
        attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} by {provider}",
        policy_hash="h" * 43, vm_id=VM, pcrs=pcrs, events=(), reset_count=1,
        secure_boot=True, issuer=issuer or f"https://att.example/providers/{provider}")


class _Vm:
    """The VM's row, read (the session that read it is gone)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _vm(m: Monitor) -> Any:
    with m.read() as s:
        row = s.execute(select(VmRow.__table__).where(VmRow.vm_id == VM)).mappings().one()
        return _Vm(dict(row))


def _open(m: Monitor) -> list[str]:
    with m.read() as s:
        return sorted(s.scalars(select(AlertRow.reason).where(
            AlertRow.vm_id == VM, AlertRow.status.in_(("active", "in_progress")))))


def test_another_providers_outcomes_are_history_only(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_outcome("s1", 1, "strict")])          # binds the VM to strict
    m.ingest_outcomes([_outcome("s2", 2, "strict", Verdict.DENY)])
    assert _open(m) == ["policy_denied"] and _vm(m).state == "unhealthy"
    # another provider's vTPM under the same VM id: its permit resolves nothing ...
    m.ingest_outcomes([_outcome("l1", 3, "lax")])
    vm = _vm(m)
    assert _open(m) == ["policy_denied"] and vm.state == "unhealthy"
    assert (vm.provider, vm.last_reason) == ("strict", "deny by strict")
    # ... its denial or a deviating boot raises nothing ...
    m2 = _monitor(engines[1])
    m2.enable(VM)
    m2.ingest_outcomes([_outcome("s1", 1, "strict")])
    m2.ingest_outcomes([_outcome("l1", 2, "lax", Verdict.DENY),
                        _outcome("l2", 3, "lax", pcrs=OTHER_IMAGE),
                        _outcome("l3", 4, "lax", Verdict.EVIDENCE_REJECTED, pcrs={})])
    assert _open(m2) == [] and _vm(m2).state == "healthy"
    # ... and each is kept in the VM's history with its provider, and counted
    with m2.read() as s:
        rows = s.execute(select(OutcomeRow.event_id, OutcomeRow.provider, OutcomeRow.boot_id)
                         .where(OutcomeRow.vm_id == VM).order_by(OutcomeRow.event_id)).all()
    assert [(e, p) for e, p, _ in rows] == [("l1", "lax"), ("l2", "lax"), ("l3", "lax"),
                                            ("s1", "strict")]
    assert [b is None for _, _, b in rows] == [True, True, True, False]
    assert (b'bootwatch_monitor_outcomes_foreign_provider_total{provider="lax"} 3.0'
            in m2.metrics.exposition())


def test_the_fast_path_leaves_another_providers_repeat_to_the_binding(
        engines: list[Engine]) -> None:
    """A permitted repeat of an approved boot takes the batch fast path; one from another
    provider must not, even in the same batch as the bound provider's."""
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_outcome("s1", 1, "strict")])
    m.ingest_outcomes([_outcome("s2", 2, "strict"), _outcome("l1", 3, "lax")])
    vm = _vm(m)
    assert (vm.provider, vm.last_reason, as_utc(vm.last_outcome_at)) == (
        "strict", "permit by strict", T0 + timedelta(seconds=2))


def test_enabling_with_a_provider_binds_and_rebinds(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    m.enable(VM, provider="lax")               # bound before any outcome
    m.ingest_outcomes([_outcome("s1", 1, "strict", Verdict.DENY)])
    assert _open(m) == [] and _vm(m).state == "not_reporting"
    m.ingest_outcomes([_outcome("l1", 2, "lax", Verdict.DENY)])
    assert _open(m) == ["policy_denied"]
    m.enable(VM, provider="strict")            # the VM moved: strict's outcomes count now
    assert (_vm(m).provider, _vm(m).issuer) == ("strict", "")
    m.ingest_outcomes([_outcome("s2", 3, "strict")])
    assert _open(m) == [] and _vm(m).state == "healthy"
    with pytest.raises(MonitorError, match="not a provider name"):
        m.enable(VM, provider="Bad/Name")


def test_a_report_counts_only_with_a_token_of_the_vms_provider(
        engines: list[Engine], issuer: Issuer) -> None:
    m = _monitor(engines[0], TokenVerifier((issuer.url,)))
    m.enable(VM)

    def report(rid: str, provider: str) -> tuple[bool, str]:
        token = issuer.token(VM, f"{issuer.url}/providers/{provider}")
        r = m.ingest_report(HealthReport(rid, VM, HealthStatus.HEALTHY, T0, "1.0",
                                         boot_counter=1, attestation_token=token))
        return r.verified, r.why_unverified

    # known from reports only (no outcome has named its issuer): the trusted issuers decide
    assert report("r0", "lax") == (True, "")
    m.ingest_outcomes([_outcome("s1", 1, "strict", issuer=f"{issuer.url}/providers/strict")])
    assert report("r1", "strict") == (True, "")
    ok, why = report("r2", "lax")
    assert not ok and "bound to provider 'strict'" in why and "--provider" in why
    with m.read() as s:
        stored = dict(s.execute(select(ReportRow.report_id, ReportRow.verified)).all())
        assert stored == {"r0": True, "r1": True, "r2": False}
        assert s.scalar(select(ReportRow.why_unverified).where(ReportRow.report_id == "r2")) \
            == why
    assert not _vm(m).last_report_verified


def test_the_issuer_crosses_the_wire() -> None:
    ev = _outcome("w1", 1, "strict", issuer="https://att.example:8443/providers/strict")
    assert decode_outcome(encode_outcome(ev)).issuer == ev.issuer
    legacy = encode_outcome(ev).replace(b',"issuer":"https://att.example:8443/providers/'
                                        b'strict"', b"")
    assert b"issuer" not in legacy and decode_outcome(legacy).issuer == ""


def test_a_claimed_vm_id_binds_nothing_and_shows_no_life(engines: list[Engine]) -> None:
    """Found in review: an evidence_rejected outcome names its VM only by the claim of
    an unvalidated certificate, yet it bound an unbound VM to its provider (so the real
    provider's outcomes became history only), and kept the VM alive."""
    m = _monitor(engines[0])
    m.enable(VM)
    claimed = OutcomeEvent(
        event_id="c1", time=T0 + timedelta(seconds=1), provider="lax",
        attestation_type="AzureGuest", verdict=Verdict.EVIDENCE_REJECTED,
        reason="evidence check 'log_replay' failed", policy_hash="h" * 43,
        failed_check="log_replay", claimed_vm_id=VM)
    m.ingest_outcomes([claimed])
    vm = _vm(m)
    assert (vm.provider, vm.last_alive_at) == ("", None)
    assert _open(m) == ["evidence_rejected"]  # still attributed: the alert is raised
    m.ingest_outcomes([_outcome("s1", 2, "strict")])
    assert _vm(m).provider == "strict"  # the first verified outcome binds
