"""Batch ingestion (Monitor.ingest_outcomes on plain records, monitor/records.py, and
its fast path, monitor/fastpath.py) on SQLite and PostgreSQL: a batch stores exactly
what the same events stored one call at a time do (states, boots, baselines, alerts
and their diffs, recommendations), duplicates are acknowledged once, a VM whose OS
claim flips inside one batch keeps one agent recommendation, and the record set writes
deferred columns it changed.

The fast path's cases are at its edges: repeats and reboots into an approved image
(fast), a group's variant, a VM with a fast event then a denial in the same batch, a
late delivery, an OS claim that changes the recommendations, a platform error reported
after the last attestation, an open alert, a VM not enabled, duplicates; each call of
the one-at-a-time side decides on its own which path its event takes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bwdeploy import EVENTLOGS
from sqlalchemy import Engine, select, text

from bootwatch.attest.outcome import describe_events
from bootwatch.errors import StorageError
from bootwatch.eventlog.framing import parse_log
from bootwatch.monitor.core import Monitor, _events_json, _pcrs_json, events_from_json
from bootwatch.monitor.db import make_engine, run_migrations
from bootwatch.monitor.fastpath import FastPath, FastPlan
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, BaselineRow, OutcomeRow, RecommendationRow, VmRow
from bootwatch.monitor.rawsql import raw_insert
from bootwatch.monitor.recommendations import AGENT_LINUX, AGENT_WINDOWS
from bootwatch.monitor.records import RowSet
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, RevokedItem, Verdict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
COS = EVENTLOGS / "go-tpm-tools" / "cos-101-amd-sev.bin"


def _monitor(engine: Engine) -> Monitor:
    return Monitor(engine, MonitorSettings(stale_after_seconds=600), metrics=MonitorMetrics(),
                   clock=lambda: T0 + timedelta(minutes=5))


def _images() -> list[tuple[dict[int, str], tuple[BootEvent, ...]]]:
    events = describe_events(parse_log(COS.read_bytes()), frozenset(range(10)))
    base = {p: f"{p:02x}" * 32 for p in range(10)}
    new_loader = tuple(BootEvent(e.index, e.pcr, e.type, "cd" * 32, e.component + "-v2")
                       if e.pcr == 4 else e for e in events)
    return [(base, events), ({**base, 4: "ab" * 32}, new_loader)]


def _stream(vms: list[str]) -> list[OutcomeEvent]:
    (pa, ea), (pb, eb) = _images()
    out: list[OutcomeEvent] = []

    def add(vm: str, minute: float, verdict: Verdict = Verdict.PERMIT, *, image: int = 0,
            reset: int = 1, windows: bool = False, **kw: Any) -> None:
        pcrs, events = ((pa, ea), (pb, eb))[image]
        verified = verdict is not Verdict.EVIDENCE_REJECTED
        out.append(OutcomeEvent(
            event_id=uuid.uuid4().hex, time=T0 + timedelta(minutes=minute), provider="p",
            attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} {minute}",
            policy_hash="h" * 43, vm_id=vm if verified else None,
            claimed_vm_id=None if verified else vm, pcrs=pcrs if verified else {},
            events=events if verified else (), reset_count=reset, secure_boot=True,
            claims=(("x-ms-azurevm-is-windows", windows),), **kw))

    a, b, c, d, unknown = vms
    add(a, 1)                                   # learns the baseline
    add(a, 2)                                   # the same boot again
    add(a, 3, reset=2)                          # a reboot of the same image
    add(b, 1)
    add(b, 2, Verdict.DENY, deciding_rule="r1")  # policy_denied opened
    add(b, 3)                                   # ... and resolved
    add(b, 4, image=1, reset=2)                 # baseline_deviation with a diff
    add(b, 5, image=1, reset=2)                 # the same deviating boot: count 2
    add(c, 1, revoked=(RevokedItem(3, "shim", "aa" * 32, "CVE-2023-40547"),))
    add(c, 2, Verdict.EVIDENCE_REJECTED, failed_check="quote")
    add(c, 0.5)                                 # delivered late: history only
    add(d, 1, windows=False)
    add(d, 2, windows=True)                     # the OS claim flips in one batch
    add(unknown.lower(), 1)                     # not enabled: recorded, never alerted
    out.append(out[1])                          # a duplicate inside the batch
    return out


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    skip = {"monitor_alerts": {"id"}, "monitor_webhook_deliveries": {"id", "body"}}
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in ("monitor_vms", "monitor_boots", "monitor_boot_documents",
                      "monitor_outcomes", "monitor_baselines", "monitor_alerts",
                      "monitor_recommendations"):
            cols = [r[0] for r in conn.execute(text(f"SELECT * FROM {table}")).cursor.description
                    if r[0] not in skip.get(table, set())]
            rows = conn.execute(text(f"SELECT {', '.join(cols)} FROM {table}")).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def test_a_batch_stores_what_the_events_one_at_a_time_store(engines: list[Engine]) -> None:
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(5)]
    batch, single = _monitor(engines[0]), _monitor(engines[1])
    for m in (batch, single):
        for vm in vms[:4]:
            m.enable(vm)
    events = _stream(vms)
    stored = batch.ingest_outcomes(events)
    one_by_one = [single.ingest_outcomes([e])[0] for e in events]
    assert stored == one_by_one == [True] * (len(events) - 1) + [False]
    assert batch.ingest_outcomes(events) == [False] * len(events)  # idempotent by event id
    got, want = _dump(engines[0]), _dump(engines[1])
    assert got == want
    # and what they store is what the rules say
    with engines[0].connect() as conn:
        states = {r.vm_id: r.state for r in conn.execute(select(VmRow.vm_id, VmRow.state))}
        alerts = {(a.vm_id, a.reason): a for a in conn.execute(select(AlertRow)).all()}
    assert states[vms[0]] == "healthy"
    assert states[vms[4]] == "not_monitored"
    dev = alerts[(vms[1], "baseline_deviation")]
    assert dev.status == "active" and dev.count == 2 and '"pcr":4' in dev.diff
    assert alerts[(vms[1], "policy_denied")].status == "resolved"
    assert alerts[(vms[2], "revoked_boot_component")].status == "active"
    assert alerts[(vms[2], "evidence_rejected")].status == "active"
    assert not any(vm == vms[4] for vm, _ in alerts)


def test_an_os_flip_inside_a_batch_keeps_one_agent_recommendation(
        engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(5)]
    m.enable(vms[3])
    events = [e for e in _stream(vms) if e.subject_vm_id == vms[3]]
    assert m.ingest_outcomes(events) == [True, True]
    with m.read() as s:
        keys = set(s.scalars(select(RecommendationRow.key)
                             .where(RecommendationRow.vm_id == vms[3])))
    assert AGENT_WINDOWS.key in keys and AGENT_LINUX.key not in keys
    assert len(keys) == 7


def test_records_write_deferred_columns_they_change(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    run_migrations(engine)
    m = _monitor(engine)
    with m.write_tx() as session:
        rows = RowSet()
        rows.new(BaselineRow, {"id": 1, "vm_id": "V", "origin": "learned", "pcrs": "{}",
                               "events": "[1]", "created_at": T0})
        for key in ("a", "b", "c"):
            rows.new(RecommendationRow, {"vm_id": "V", "key": key, "name": "n",
                                         "severity": "low", "code": "Healthy", "cause": "",
                                         "description": "d", "remediation": "",
                                         "first_evaluated": T0, "status_changed": T0})
        gone = rows.new(RecommendationRow, {"vm_id": "V", "key": "z", "name": "n",
                                            "severity": "low", "code": "Healthy", "cause": "",
                                            "description": "d", "remediation": "",
                                            "first_evaluated": T0, "status_changed": T0})
        rows.delete(RecommendationRow, gone)  # created and dropped: never stored
        rows.flush(session)
    later = T0 + timedelta(days=1)
    with m.write_tx() as session:
        rows = RowSet()
        (base,) = rows.load(session, BaselineRow, BaselineRow.id == 1,
                            defer=("events", "label"))
        assert "events" not in vars(base)
        assert base.events == "[1]"  # read on first access
        base.events = "[2]"          # read, then written
        base.label = "x"             # written without being read
        recs = {r.key: r for r in rows.load(session, RecommendationRow,
                                            defer=("status_changed",))}
        recs["a"].code = "Unhealthy"
        recs["a"].status_changed = later
        rows.delete(RecommendationRow, recs["b"])
        rows.new(RecommendationRow, {"vm_id": "V", "key": "b", "name": "n2",
                                     "severity": "low", "code": "Healthy", "cause": "",
                                     "description": "again", "remediation": "",
                                     "first_evaluated": later, "status_changed": later})
        rows.flush(session)
    with engine.connect() as conn:
        assert conn.execute(select(BaselineRow.events, BaselineRow.label)).one() == ("[2]",
                                                                                     "x")
        got = {r.key: r for r in conn.execute(select(RecommendationRow)).all()}
    assert sorted(got) == ["a", "b", "c"]
    assert got["a"].code == "Unhealthy" and got["a"].status_changed.day == later.day
    assert got["b"].description == "again" and got["c"].status_changed.day == T0.day
    engine.dispose()


def test_pcrs_json_is_what_json_dumps_writes() -> None:
    for pcrs in ({}, {0: "ab" * 32}, {10: "00", 2: "ff", 23: "", 7: "\u00e9\""}):
        want = json.dumps({str(k): v for k, v in sorted(pcrs.items())}, separators=(",", ":"))
        assert _pcrs_json(pcrs) == want


def test_events_json_is_what_json_dumps_writes() -> None:
    (_, events), (_, changed) = _images()
    odd = (BootEvent(0, 7, "EV_EFI_VARIABLE_AUTHORITY", "00" * 32, 'quote " \\ \u00e9 \u2603'),)
    for evs in (events, changed, odd, ()):
        want = json.dumps([{"index": e.index, "pcr": e.pcr, "type": e.type,
                            "digest": e.digest, "component": e.component} for e in evs],
                          separators=(",", ":"))
        assert _events_json(evs) == want
        assert events_from_json(_events_json(evs)) == evs


def _setup(m: Monitor, vms: list[str]) -> None:
    """VMs enabled (one in a group with a group variant), first boots learned."""
    (pa, ea), (pb, _) = _images()
    for i, vm in enumerate(vms[:-1]):
        m.enable(vm, group="g" if i == 6 else None)
    first = [OutcomeEvent(event_id=f"first-{i}", time=T0, provider="p",
                          attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="ok",
                          policy_hash="h" * 43, vm_id=vm, pcrs=pa, events=ea, reset_count=1,
                          secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))
             for i, vm in enumerate(vms[:-1])]
    m.ingest_outcomes(first)
    # VM 7 is in group g, and g approves image b: VM 7 rebooting into b is fast
    m.ingest_outcomes([OutcomeEvent(
        event_id="g-b", time=T0 + timedelta(seconds=1), provider="p",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="ok",
        policy_hash="h" * 43, vm_id=vms[6], pcrs=pb, events=_images()[1][1], reset_count=9,
        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))])
    m.approve(vms[6], group=True, label="image b")
    m.ingest_outcomes([OutcomeEvent(
        event_id="back-a", time=T0 + timedelta(seconds=2), provider="p",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="ok",
        policy_hash="h" * 43, vm_id=vms[6], pcrs=pa, events=ea, reset_count=10,
        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))])
    # VM 5 has an open alert (a denial)
    m.ingest_outcomes([OutcomeEvent(
        event_id="deny-5", time=T0 + timedelta(seconds=3), provider="p",
        attestation_type="AzureGuest", verdict=Verdict.DENY, reason="no",
        policy_hash="h" * 43, vm_id=vms[5], pcrs=pa, events=ea, reset_count=1,
        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))])
    # VM 4's agent reports a platform error after its last attestation
    m.ingest_report(HealthReport("r-4", vms[4], HealthStatus.PLATFORM_ERROR,
                                 T0 + timedelta(seconds=4), "1.0",
                                 platform_error_message="TLS handshake failed",
                                 failed_hop=FailedHop.TLS, failed_target="https://x:443"))


def _batch(vms: list[str]) -> list[OutcomeEvent]:
    (pa, ea), (pb, eb) = _images()
    out: list[OutcomeEvent] = []

    def add(vm: str, minute: float, verdict: Verdict = Verdict.PERMIT, *, image: int = 0,
            reset: int = 1, windows: bool = False, **kw: Any) -> None:
        pcrs, events = ((pa, ea), (pb, eb))[image]
        out.append(OutcomeEvent(
            event_id=uuid.uuid4().hex, time=T0 + timedelta(minutes=minute), provider="p",
            attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} {minute}",
            policy_hash="h" * 43, vm_id=vm, pcrs=pcrs, events=events, reset_count=reset,
            secure_boot=True, claims=(("x-ms-azurevm-is-windows", windows),), **kw))

    v = vms
    add(v[0], 1)                        # a repeat: fast
    add(v[0], 2)                        # and again in the same batch: fast
    add(v[1], 1, reset=2)               # a reboot into the approved image: fast, new boot
    add(v[1], 2, reset=2)               # ... then that new boot again: fast
    add(v[2], 1)                        # fast ...
    add(v[2], 2, Verdict.DENY, deciding_rule="r")  # ... then a denial: the VM goes general
    add(v[3], 1, windows=True)          # the OS flips: recommendations change (general)
    add(v[4], 1)                        # platform error reported before: state from the rules
    add(v[5], 1)                        # an open alert: general (it resolves)
    add(v[6], 1, image=1, reset=11)     # group variant matches: fast
    add(v[7], 1, image=1, reset=2)      # no variant matches image b for VM 8: deviation
    add(v[8], 1, revoked=(RevokedItem(3, "shim", "aa" * 32, "CVE"),))  # revoked: general
    add(v[9], 1)                        # fast ...
    add(v[9], 0.5)                      # ... then a late delivery: general, history only
    add(v[10], 1)                       # not enabled: general
    add(v[0], 3, image=1, reset=5)      # VM 1 deviates after two fast events: general
    out.append(out[4])                  # a duplicate inside the batch
    return out


def test_a_batch_on_the_fast_path_stores_what_one_at_a_time_stores(
        engines: list[Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(11)]
    batch, single = _monitor(engines[0]), _monitor(engines[1])
    for m in (batch, single):
        _setup(m, vms)
    events = _batch(vms)
    fast: list[str] = []
    real_write = FastPath.write

    def spy(self: FastPath, session: Any, plan: FastPlan, evs: Any, now: Any,
            **kw: Any) -> None:
        fast.extend(e.event_id for e in evs if plan.takes(e))
        real_write(self, session, plan, evs, now, **kw)

    monkeypatch.setattr(FastPath, "write", spy)
    stored = batch.ingest_outcomes(events)
    in_batch = list(fast)
    one_by_one = [single.ingest_outcomes([e])[0] for e in events]
    assert stored == one_by_one == [True] * (len(events) - 1) + [False]
    assert _dump(engines[0]) == _dump(engines[1])
    # the batch took the fast path where the module says it does, and only there
    by_id = {e.event_id: i for i, e in enumerate(events)}
    assert sorted(by_id[e] for e in in_batch) == [2, 3, 7, 9]
    assert batch.ingest_outcomes(events) == [False] * len(events)


def test_the_fast_path_keeps_a_vm_healthy(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(11)]
    _setup(m, vms)
    m.ingest_outcomes(_batch(vms)[:4])
    with m.read() as s:
        vm = m.find_vm(s, vms[1])
        assert vm.state == "healthy" and vm.open_alerts == 0
        assert vm.last_reason == "permit 2"


def test_a_failed_raw_write_is_a_storage_error(tmp_path: Path) -> None:
    """The fast path's writes (monitor/rawsql.py) fail like any other statement: the
    transaction rolls back and the caller gets a StorageError (an ingester retries it)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    run_migrations(engine)
    m = _monitor(engine)
    cols = ("event_id", "vm_id", "time", "received_at", "provider", "verdict", "reason")
    write = raw_insert(OutcomeRow.__table__, cols, engine.dialect)
    row = ("e1", "V", T0, T0, "p", "permit", "r")
    with pytest.raises(StorageError, match="IntegrityError"), m.write_tx() as session:
        write.executemany(session, [row, row])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM monitor_outcomes")).scalar() == 0
    engine.dispose()


def test_a_sqlite_write_transaction_holds_the_write_lock_before_it_reads(
    tmp_path: Path,
) -> None:
    """Two monitor processes may share one SQLite file (``bootwatch server --events nats://``
    and a ``monitor run --events`` beside it): a batch must hold the database's write lock
    from its first read, or the other process could write between this one's reads and
    its writes (PostgreSQL has the advisory lock for the same purpose)."""
    import sqlite3

    path = tmp_path / "lock.db"
    engine = make_engine(f"sqlite:///{path}")
    run_migrations(engine)
    m = _monitor(engine)
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        with m.write_tx() as session:
            session.execute(select(VmRow.vm_id)).all()  # a batch starts by reading
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()
