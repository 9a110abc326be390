"""The monitor's domain logic: ingest outcomes and reports, keep state, alerts,
baselines and recommendations, and answer the operator's actions.

One :class:`Monitor` per process, built by :func:`bootwatch.monitor.container.bootstrap`.
Every change happens in one database transaction per call (a batch of outcome
events is one transaction), serialised by the instance's write lock so the
SQLite default never sees two writers from one process.  The webhook outbox
rows are written in the same transaction as the alert change they announce,
so a delivery is never lost once the change is stored.

Ingestion is idempotent: an outcome event id or a report id seen before is
acknowledged and ignored.  Only verified facts move a VM towards healthy: an
attestation outcome (sent by the service, authenticated by an admin token or
in-process) or a report whose token the monitor verified.  A report without a
verified token can record a platform error; it never resolves an alert.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bootwatch.errors import InputError, PolicyError, StorageError
from bootwatch.monitor.db import as_utc, utcnow
from bootwatch.monitor.diff import DiffEntry, diff_boot, differing_pcrs, matches
from bootwatch.monitor.fastpath import FastPath
from bootwatch.monitor.freshness import (
    QuoteMark,
    Stale,
    advance,
    may_have_crossed,
    note_report_token,
    note_token,
    set_mark,
)
from bootwatch.monitor.health import ATTENTION
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import (
    AlertRow,
    BaselineRow,
    BootDocumentRow,
    BootRow,
    OutcomeRow,
    RecommendationRow,
    ReportRow,
    SuppressionRow,
    VmRow,
    WebhookDeliveryRow,
)
from bootwatch.monitor.recommendations import (
    RecommendationResult,
)
from bootwatch.monitor.records import RowSet
from bootwatch.monitor.releases.planner import AgentView
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.tokens import TokenCheck, TokenVerifier
from bootwatch.monitor.vmstate import Evaluations, evaluate_vm
from bootwatch.protocol import token as t
from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus
from bootwatch.protocol.monitor import (
    ALERT_TYPE_ATTESTATION_FAILED,
    ALERT_TYPE_REVOKED_COMPONENT,
    INTEGRITY_REASONS,
    OPEN_STATUSES,
    AlertReason,
    AlertStatus,
    SecurityType,
    Severity,
    Toggle,
    VmState,
)
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, Verdict
from bootwatch.service.logs import get_logger

__all__ = [
    "CheckedReport",
    "Monitor",
    "MonitorError",
    "NotFound",
    "ReportResult",
    "events_from_json",
    "normalise_vm_id",
]


class MonitorError(InputError):
    """A request the monitor refuses (bad reference, bad transition); names why."""

    code = "monitor_refused"


class NotFound(MonitorError):
    """A VM, alert, boot or baseline that does not exist."""

    code = "not_found"


_OPEN = tuple(s.value for s in OPEN_STATUSES)
#: a provider's name, as the service accepts one (service/providers.py validate_name)
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

_TITLES = {
    AlertReason.BASELINE_DEVIATION: "Attestation failed: the boot deviates from its baseline",
    AlertReason.POLICY_DENIED: "Attestation failed: the attestation policy denied the boot",
    AlertReason.EVIDENCE_REJECTED: "Attestation failed: the evidence did not verify",
    AlertReason.AGENT_UNRESPONSIVE: "Attestation failed: the guest agent is not responding",
    AlertReason.REVOKED_BOOT_COMPONENT: "A revoked boot component was loaded",
    AlertReason.QUOTE_REPLAYED: "Attestation replayed: a quote no newer than one already seen",
    AlertReason.ATTESTATION_UNPROVEN: "Attestation unproven: the VM did not open its token",
}

_REMEDIATION = {
    AlertReason.BASELINE_DEVIATION: [
        "Read the diff: each entry names the PCR, the event, the component and its old "
        "and new digest.",
        "If the change is a planned update (new bootloader, kernel, firmware or Secure "
        "Boot variables), approve the boot: `bootwatch baseline approve VM`.",
        "If it is not planned, treat the VM as compromised: isolate it, keep its disk for "
        "forensics and rebuild it from a known-good image.",
    ],
    AlertReason.POLICY_DENIED: [
        "The reason names the policy rule that denied and the claims that made it deny.",
        "Fix the VM's configuration (for example turn Secure Boot on) and reboot, or, if "
        "the configuration is intended, add a suppression rule for the VM or its group.",
    ],
    AlertReason.EVIDENCE_REJECTED: [
        "The quote, the attestation key's certificate chain or the event-log replay did not "
        "verify, so the evidence may not come from this VM's vTPM.",
        "Check the failing check named in the reason; if the vTPM or its certificates were "
        "not changed on purpose, treat the VM as compromised.",
    ],
    AlertReason.AGENT_UNRESPONSIVE: [
        "Check that the VM is running and the bootwatch agent is active "
        "(`systemctl status bootwatch-agent`; its status file names the failing step).",
        "Run `bootwatch agent netcheck URL` in the VM to find a blocked network hop.",
    ],
    AlertReason.REVOKED_BOOT_COMPONENT: [
        "A boot application whose hash is in the current DBX revocation data was loaded: "
        "it has a known Secure Boot bypass.",
        "Update the boot chain (shim, bootloader, boot manager) to a fixed version and "
        "apply the current DBX update, then reboot.",
    ],
    AlertReason.QUOTE_REPLAYED: [
        "The attestation service answered a quote from this VM's vTPM that is not newer "
        "than one it answered before, so the VM's current boot is unknown: the last "
        "attestation was replayed (by software in the VM or on the network path), or the "
        "vTPM was restored from a snapshot, cleared or replaced.",
        "If the vTPM was restored, cleared or replaced on purpose, accept it: "
        "`bootwatch vm accept-vtpm-rollback VM` (the restored vTPM's quote becomes the "
        "VM's mark).",
        "Otherwise treat the VM as compromised: isolate it, keep its disk for forensics and "
        "rebuild it from a known-good image.",
    ],
    AlertReason.ATTESTATION_UNPROVEN: [
        "The bootwatch agent sends the token of every attestation back in its health "
        "report; none came for the VM's latest attestation. Check the agent "
        "(`systemctl status bootwatch-agent`, its status file) and its route to the "
        "monitor (`bootwatch agent netcheck URL`): a report that cannot get through "
        "looks the same.",
        "If the agent is running and reports, the attestation came from something that "
        "could not open its answer (a quote taken earlier, or replayed): treat the VM as "
        "compromised. The alert resolves when a verified report carries the token of the "
        "VM's latest attestation.",
    ],
}


def _iso(when: datetime) -> str:
    return as_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _accepted_mark(alerts: Sequence[AlertRow]) -> QuoteMark | None:
    """The quote an open ``quote_replayed`` alert names as replayed (the latest one, as
    its repeats update it), for :meth:`Monitor.accept_vtpm_rollback`; None if none."""
    for alert in alerts:
        if alert.reason != AlertReason.QUOTE_REPLAYED.value:
            continue
        try:
            ext = json.loads(alert.extended)
            return QuoteMark(str(ext["replayedAik"]), int(ext["replayedResetCount"]),
                             int(ext["replayedClockMs"]),
                             datetime.fromisoformat(ext["replayedAt"].replace("Z", "+00:00")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
    return None


def normalise_vm_id(value: str) -> str:
    """VM ids are compared case-insensitively: GUIDs upper-case, as tokens carry them."""
    try:
        return str(uuid.UUID(value.strip())).upper()
    except ValueError:
        return value.strip()


def events_from_json(text: str) -> tuple[BootEvent, ...]:
    return tuple(
        BootEvent(int(e["index"]), int(e["pcr"]), str(e["type"]), str(e["digest"]),
                  str(e["component"]))
        for e in json.loads(text)
    )


def _events_json(events: Sequence[BootEvent]) -> str:
    """The events as ``json.dumps`` writes them (compact, ASCII), built directly: a new
    boot's 50-200 events cost a third of the time (tests/monitor/test_ingest_batch.py
    checks the two agree)."""
    q = encode_basestring_ascii
    return "[" + ",".join(
        f'{{"index":{int.__repr__(e.index)},"pcr":{int.__repr__(e.pcr)},"type":{q(e.type)},'
        f'"digest":{q(e.digest)},"component":{q(e.component)}}}'
        for e in events
    ) + "]"


#: ``json.dumps(..., separators=(",", ":"))`` without building an encoder per call
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _pcrs_json(pcrs: dict[int, str]) -> str:
    """``json.dumps`` of the PCRs by index (compact, ASCII), built directly (a batch
    computes one per event for its boot key; tests/monitor/test_ingest_batch.py checks
    the two agree)."""
    q = encode_basestring_ascii
    return "{" + ",".join(f'"{int.__repr__(k)}":{q(v)}' for k, v in sorted(pcrs.items())) + "}"


def _claims_json(claims: Sequence[tuple[str, Any]]) -> str:
    return _COMPACT.encode([[k, v] for k, v in claims])


def _boot_key(ev: OutcomeEvent) -> str:
    """A boot: its quoted PCR values, bank and TPM reset count."""
    return hashlib.sha256(
        (_pcrs_json(dict(ev.pcrs)) + f"|{ev.pcr_bank}|{ev.reset_count}").encode()
    ).hexdigest()


def pcrs_from_json(text: str) -> dict[int, str]:
    return {int(k): str(v) for k, v in json.loads(text).items()}


@dataclass
class _Ctx:
    """Rows one transaction has loaded, kept in ``session.info`` so a batch of outcome
    events costs a handful of queries, not a dozen per event.  Every write path keeps
    it current (new alerts appended, closed ones removed, new baselines added)."""

    vms: dict[str, VmRow] = field(default_factory=dict)
    alerts: dict[str, list[AlertRow]] = field(default_factory=dict)
    recs: dict[str, dict[str, RecommendationRow]] = field(default_factory=dict)
    variants_vm: dict[str, list[BaselineRow]] = field(default_factory=dict)
    variants_group: dict[str, list[BaselineRow]] = field(default_factory=dict)
    boots: dict[tuple[str, str], BootRow] = field(default_factory=dict)
    boots_by_id: dict[int, BootRow] = field(default_factory=dict)
    #: the events document of boots created in this transaction, by boot id
    boot_events: dict[int, str] = field(default_factory=dict)
    #: boot keys looked up in the database already (absent: a new boot)
    boot_keys_loaded: bool = False
    #: set for a batch of outcome events: rows are plain records, loaded and written
    #: with Core statements (see bootwatch.monitor.records); None: ORM entities
    rows: RowSet | None = None
    #: parsed PCR documents by their JSON text (baselines and boots compared per event)
    parsed_pcrs: dict[str, dict[int, str]] = field(default_factory=dict)
    #: recommendation results and their digest by the facts they were evaluated from
    evaluated: Evaluations = field(default_factory=dict)
    #: a batch's recommendation results per VM whose results changed, in order
    pending_recs: dict[str, list[tuple[Sequence[RecommendationResult], datetime]]] = field(
        default_factory=dict)
    #: next ids for new boots and baselines, allocated here so a batch needs no flush
    #: per new row (ingestion is serialised: one writer lock per process, and an
    #: advisory lock per transaction on PostgreSQL)
    next_ids: dict[str, int] = field(default_factory=dict)
    suppressions: list[SuppressionRow] | None = None


def _next_id(session: Session, table: type[BootRow] | type[BaselineRow]) -> int:
    ctx = _ctx(session)
    name = table.__tablename__
    if name not in ctx.next_ids:
        current = session.scalar(select(func.max(table.id)))
        ctx.next_ids[name] = (current or 0) + 1
    value = ctx.next_ids[name]
    ctx.next_ids[name] = value + 1
    return value


def _ctx(session: Session) -> _Ctx:
    ctx = session.info.get("bootwatch")
    if ctx is None:
        ctx = session.info["bootwatch"] = _Ctx()
    return ctx


_Row = TypeVar("_Row", AlertRow, BaselineRow, BootDocumentRow, BootRow, OutcomeRow,
               RecommendationRow, ReportRow, SuppressionRow, VmRow, WebhookDeliveryRow)


def _new_row(session: Session, cls: type[_Row], **values: Any) -> _Row:
    """A new row: a record written at the end of a batch, else an ORM entity added."""
    rows = _ctx(session).rows
    if rows is not None:
        return rows.new(cls, values)
    obj = cls(**values)
    session.add(obj)
    return obj


def _delete_row(session: Session, cls: type[_Row], obj: _Row) -> None:
    rows = _ctx(session).rows
    if rows is not None:
        rows.delete(cls, obj)
    elif obj in session.new:
        session.expunge(obj)  # added in this transaction: never stored
    else:
        session.delete(obj)


#: columns a batch rarely reads (documents used only to diff a deviating boot or learn
#: a baseline): a batch's records read them when first used
_DEFERRED: dict[str, tuple[str, ...]] = {
    BaselineRow.__tablename__: ("events", "label", "origin", "source_boot_id", "created_at",
                                "created_by"),
    # what a refresh never reads (it writes status_changed when the code changes)
    RecommendationRow.__tablename__: ("name", "severity", "first_evaluated", "status_changed"),
}


def _fetch(session: Session, cls: type[_Row], *where: ColumnElement[bool],
           order_by: Sequence[Any] = ()) -> list[_Row]:
    rows = _ctx(session).rows
    if rows is not None:
        return rows.load(session, cls, *where, order_by=order_by,
                         defer=_DEFERRED.get(cls.__tablename__, ()))
    return list(session.scalars(select(cls).where(*where).order_by(*order_by)))


def _boot_events(session: Session, boot_id: int) -> str:
    """A boot's events document (JSON): made in this transaction, else read."""
    made = _ctx(session).boot_events.get(boot_id)
    if made is not None:
        return made
    return str(session.connection().execute(
        select(BootDocumentRow.events).where(BootDocumentRow.boot_id == boot_id)).scalar_one())


def _parsed(session: Session, text: str) -> dict[int, str]:
    """A stored PCR document, parsed once per transaction (callers do not change it)."""
    cache = _ctx(session).parsed_pcrs
    value = cache.get(text)
    if value is None:
        value = cache[text] = pcrs_from_json(text)
    return value


@dataclass(frozen=True)
class CheckedReport:
    """A report whose token was checked: ``verified`` only when it verified for
    ``vm_id`` (the report's VM id, normalised); ``why`` says why not."""

    report: HealthReport
    vm_id: str
    verified: bool
    why: str
    #: the verified token's issuer (``iss``); empty when not verified
    issuer: str = ""
    #: the verified token's ``jti`` (token proof); empty when not verified
    token_id: str = ""
    #: when the verified token was issued (its ``iat``); None when not verified
    token_issued_at: datetime | None = None


@dataclass(frozen=True)
class ReportResult:
    report_id: str
    stored: bool
    verified: bool
    why_unverified: str


class Monitor:
    """See the module docstring.  Thread-safe; one per process."""

    def __init__(
        self,
        engine: Engine,
        settings: MonitorSettings,
        *,
        metrics: MonitorMetrics,
        tokens: TokenVerifier | None = None,
        egress_text: Callable[[FailedHop, str], str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.tokens = tokens
        self.egress_text = egress_text
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write = threading.Lock()
        self.stale_after = timedelta(seconds=settings.stale_after_seconds)
        self.token_proof = (timedelta(seconds=settings.token_proof_seconds)
                            if settings.token_proof_seconds > 0 else None)
        self._fast = FastPath(stale_after=self.stale_after, egress_text=egress_text)

    # --- transactions -------------------------------------------------------

    @contextmanager
    def write_tx(self) -> Iterator[Session]:
        with self._write:
            session = self._sessions()
            try:
                if self.engine.dialect.name == "postgresql":
                    # one monitor writer at a time per database: ids are allocated in
                    # the transaction (see _next_id)
                    session.execute(text("SELECT pg_advisory_xact_lock(7355610)"))
                elif self.engine.dialect.name == "sqlite":
                    # the same on SQLite: take the database's write lock before the
                    # batch reads anything (pysqlite begins a transaction only at the
                    # first write, so two monitor processes on one file would each read,
                    # then the later write would be based on stale reads); an UPDATE that
                    # matches no row still opens the write transaction
                    session.execute(text("UPDATE monitor_vms SET vm_id = vm_id WHERE 0"))
                yield session
                session.commit()
            except SQLAlchemyError as exc:
                session.rollback()
                raise StorageError(f"monitor database error: {exc.__class__.__name__}: "
                                   f"{exc}") from exc
            except OverflowError as exc:  # pysqlite: an integer no SQLite column holds
                session.rollback()
                raise StorageError(f"monitor database error: a value out of range: "
                                   f"{exc}") from exc
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (no write lock: SQLite WAL readers do not block)."""
        session = self._sessions()
        try:
            yield session
        except SQLAlchemyError as exc:
            raise StorageError(f"monitor database error: {exc.__class__.__name__}") from exc
        finally:
            session.rollback()
            session.close()

    # --- VMs ----------------------------------------------------------------

    def _new_vm(self, session: Session, vm_id: str, now: datetime) -> VmRow:
        vm = _new_row(
            session, VmRow, vm_id=vm_id, name="", group_name="", provider="",
            security_type=SecurityType.TRUSTED_LAUNCH.value,
            secure_boot=Toggle.UNKNOWN.value, vtpm=Toggle.UNKNOWN.value, enabled=False,
            state=VmState.NOT_MONITORED.value, attention=ATTENTION[VmState.NOT_MONITORED],
            state_reason="monitoring is not enabled for this VM", state_since=now,
            created_at=now, last_reason="", last_report_verified=False,
            last_report_message="", last_failed_target="", agent_version="", open_alerts=0,
        )
        ctx = _ctx(session)
        ctx.vms[vm_id] = vm
        ctx.alerts.setdefault(vm_id, [])
        ctx.recs.setdefault(vm_id, {})
        ctx.variants_vm.setdefault(vm_id, [])
        return vm

    def find_vm(self, session: Session, ref: str) -> VmRow:
        """A VM by id (any case) or by its unique name; NotFound names what was looked for."""
        vm = session.get(VmRow, normalise_vm_id(ref))
        if vm is not None:
            return vm
        rows = session.scalars(select(VmRow).where(VmRow.name == ref).limit(2)).all()
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise MonitorError(f"VM name {ref!r} is not unique: use the VM id")
        raise NotFound(f"no VM with id or name {ref!r}")

    def enable(
        self,
        ref: str,
        *,
        name: str | None = None,
        group: str | None = None,
        security_type: SecurityType | None = None,
        secure_boot: Toggle | None = None,
        vtpm: Toggle | None = None,
        provider: str | None = None,
        by: str = "",
    ) -> str:
        """Enable monitoring; an unknown reference must be a VM id (a GUID).

        ``provider`` binds the VM to that provider (see :meth:`_bound`): given, it
        replaces any binding, and the provider's issuer is learned from its next
        outcome; absent, the VM stays bound as it is (or is bound by its first outcome)."""
        now = self.clock()
        with self.write_tx() as session:
            try:
                vm = self.find_vm(session, ref)
            except NotFound:
                vm_id = normalise_vm_id(ref)
                try:
                    uuid.UUID(vm_id)
                except ValueError:
                    raise NotFound(
                        f"no VM named {ref!r}; enable an unknown VM by its VM id (a GUID) "
                        "with --name to name it"
                    ) from None
                vm = self._new_vm(session, vm_id, now)
            if name is not None:
                clash = session.scalars(
                    select(VmRow).where(VmRow.name == name, VmRow.vm_id != vm.vm_id).limit(1)
                ).first()
                if name and clash is not None:
                    raise MonitorError(f"the name {name!r} is taken by VM {clash.vm_id}")
                vm.name = name
            if group is not None:
                vm.group_name = group
            if security_type is not None:
                vm.security_type = security_type.value
            if secure_boot is not None:
                vm.secure_boot = secure_boot.value
            if vtpm is not None:
                vm.vtpm = vtpm.value
            if provider is not None and provider != vm.provider:
                if not _PROVIDER_NAME.fullmatch(provider):
                    raise MonitorError(f"provider {provider!r} is not a provider name "
                                       "(1-64 lower-case letters, digits and '-')")
                vm.provider = provider
                vm.issuer = ""
                set_mark(vm, None)  # another provider's vTPM: its quotes start a new mark
            if not vm.enabled:
                vm.enabled = True
                vm.enabled_at = now
                self._learn_on_enable(session, vm, now, by)
            self._refresh(session, vm, now)
            return vm.vm_id

    def _learn_on_enable(self, session: Session, vm: VmRow, now: datetime, by: str) -> None:
        """Trust on first use: a VM enabled after it attested takes its latest permitted
        boot as baseline (when it has none), like GCP's first-boot baseline.

        The VM's last boot is then matched against its variants, as an outcome would
        be: a boot attested while monitoring was off was never matched (the alert rules
        did not run), so a VM re-enabled after rebooting into an approved image would
        otherwise stay unhealthy until it attests again."""
        if not self._variants(session, vm):
            boot = session.scalars(
                select(BootRow).where(BootRow.vm_id == vm.vm_id, BootRow.verdict == "permit")
                .order_by(BootRow.last_seen.desc()).limit(1)
            ).first()
            if boot is not None:
                base = self._add_baseline(session, vm, boot, "learned",
                                          by or "trust-on-first-use", now)
                boot.baseline_id = base.id
        last = session.get(BootRow, vm.last_boot_id) if vm.last_boot_id is not None else None
        if last is not None:
            pcrs = pcrs_from_json(last.pcrs)
            match = next((v for v in self._variants(session, vm)
                          if matches(pcrs_from_json(v.pcrs), pcrs)), None)
            last.baseline_id = match.id if match else None

    def disable(self, ref: str, *, by: str = "") -> str:
        now = self.clock()
        with self.write_tx() as session:
            vm = self.find_vm(session, ref)
            vm.enabled = False
            for alert in self._open_alerts(session, vm.vm_id):
                self._set_status(session, alert, AlertStatus.RESOLVED, now,
                                 by or "monitoring disabled")
            self._refresh(session, vm, now)
            return vm.vm_id

    def accept_vtpm_rollback(self, ref: str, *, by: str = "") -> str:
        """An operator's word that the VM's vTPM was restored, cleared or replaced on
        purpose: its quote mark becomes the newest quote the open ``quote_replayed``
        alert names (the restored vTPM's), or is forgotten when there is none (the next
        verified quote sets it), and the alert resolves.  Not simply forgotten: the next
        outcome would then set it whatever its age, and a replay of the old good boot
        would pass (found in review).  Only a person can tell a restored vTPM from a
        replayed attestation (monitor/freshness.py)."""
        now = self.clock()
        with self.write_tx() as session:
            vm = self.find_vm(session, ref)
            set_mark(vm, _accepted_mark(self._open_alerts(session, vm.vm_id)))
            self._resolve(session, vm, (AlertReason.QUOTE_REPLAYED,), now,
                          f"vTPM rollback accepted by {by or 'operator'}")
            self._refresh(session, vm, now)
            return vm.vm_id

    # --- outcomes -----------------------------------------------------------

    def ingest_outcomes(self, events: Sequence[OutcomeEvent]) -> list[bool]:
        """Store a batch in one transaction; True for each event stored, False for a
        duplicate (already ingested).

        The batch works on plain records (bootwatch.monitor.records): it loads every
        row its events may touch in a few queries, applies the events in order with
        the same code as every other write path, and writes the changed rows with
        one statement per table and set of changed columns."""
        if not events:
            return []
        now = self.clock()
        stored: list[bool] = []
        with self.write_tx() as session, session.no_autoflush:
            ctx = _ctx(session)
            ctx.rows = RowSet()
            ids = [e.event_id for e in events]
            seen = set(session.scalars(select(OutcomeRow.event_id)
                                       .where(OutcomeRow.event_id.in_(ids))).all())
            fresh: list[OutcomeEvent] = []
            for e in events:
                new = e.event_id not in seen
                stored.append(new)
                if new:
                    seen.add(e.event_id)
                    fresh.append(e)
            keys = {id(e): _boot_key(e) for e in fresh if e.pcrs}
            subjects = {id(e): normalise_vm_id(e.subject_vm_id or "") for e in fresh}
            plan = self._fast.plan(session, fresh, subjects, keys, now, ctx.evaluated)
            slow = [e for e in fresh if not plan.takes(e)]
            self._preload(session, {subjects[id(e)] for e in slow} - {""},
                          boot_keys={keys[id(e)] for e in slow if id(e) in keys})
            foreign: list[OutcomeEvent] = []
            for ev in fresh:
                boot = plan.boots.get(id(ev))
                if boot is None:
                    if not self._apply_outcome(session, ev, now, subjects[id(ev)],
                                               keys.get(id(ev))):
                        foreign.append(ev)
                elif boot.id is None:  # a new boot: its id in event order, as in general
                    boot.id = _next_id(session, BootRow)
            self._apply_pending_recommendations(session)
            ctx.rows.flush(session)
            self._fast.write(session, plan, fresh, now, events_json=lambda e: _events_json(
                e.events), claims_json=lambda e: _claims_json(e.claims),
                pcrs_json=lambda e: _pcrs_json(dict(e.pcrs)))
        for ev, ok in zip(events, stored, strict=True):
            self.metrics.outcome(ev.verdict.value, duplicate=not ok)
        for ev in foreign:
            self.metrics.foreign_outcome(ev.provider)
            get_logger().warning("outcome of a VM from a provider it is not bound to: kept as "
                         "history only", extra={"event_id": ev.event_id,
                                                "vm_id": ev.subject_vm_id or "",
                                                "provider": ev.provider})
        return stored

    def _preload(self, session: Session, vm_ids: set[str],
                 boot_keys: set[str] | None = None) -> None:
        """Load every row the events of these VMs may touch, in at most seven queries
        (the context holds them)."""
        if not vm_ids:
            return
        ctx = _ctx(session)
        ids = sorted(vm_ids)
        vms = _fetch(session, VmRow, VmRow.vm_id.in_(ids))
        for vm in vms:
            ctx.vms[vm.vm_id] = vm
        groups = sorted({v.group_name for v in vms if v.group_name})
        for vm_id in ids:
            ctx.alerts.setdefault(vm_id, [])
            ctx.variants_vm.setdefault(vm_id, [])
        for group in groups:
            ctx.variants_group.setdefault(group, [])
        for alert in _fetch(session, AlertRow, AlertRow.vm_id.in_(ids),
                            AlertRow.status.in_(_OPEN)):
            ctx.alerts[alert.vm_id].append(alert)
        # recommendations: not loaded here; the rows of the VMs whose results differ
        # from the digest of the stored ones (most do not) are, when the batch ends
        cond = [BaselineRow.vm_id.in_(ids)]
        if groups:
            cond.append(BaselineRow.group_name.in_(groups))
        for base in _fetch(session, BaselineRow, or_(*cond), order_by=(BaselineRow.id,)):
            if base.vm_id is not None:
                ctx.variants_vm[base.vm_id].append(base)
            elif base.group_name is not None:
                ctx.variants_group[base.group_name].append(base)
        last = [v.last_boot_id for v in vms if v.last_boot_id is not None]
        cond_b: list[ColumnElement[bool]] = [BootRow.id.in_(last)]
        if boot_keys:
            cond_b.append(and_(BootRow.vm_id.in_(ids), BootRow.boot_key.in_(sorted(boot_keys))))
        for boot in _fetch(session, BootRow, or_(*cond_b)):
            ctx.boots[(boot.vm_id, boot.boot_key)] = boot
            ctx.boots_by_id[boot.id] = boot
        if boot_keys is not None:
            ctx.boot_keys_loaded = True
        if ctx.suppressions is None:
            ctx.suppressions = _fetch(session, SuppressionRow)

    def _apply_outcome(self, session: Session, ev: OutcomeEvent, now: datetime, vm_id: str,
                       boot_key: str | None) -> bool:
        """Apply one event; False when it came from a provider the VM is not bound to
        (stored as history only: see :meth:`_bound`)."""
        row = _new_row(
            session, OutcomeRow, event_id=ev.event_id, vm_id=vm_id, time=ev.time,
            received_at=now, provider=ev.provider, verdict=ev.verdict.value,
            reason=ev.reason[:4000], failed_check=ev.failed_check,
        )
        if not vm_id:
            return True  # nothing to attribute it to (an undecodable request): history only
        ctx = _ctx(session)
        vm = ctx.vms.get(vm_id)
        if vm is None and ctx.rows is None:
            vm = session.get(VmRow, vm_id)
        created = vm is None
        if vm is None:
            vm = self._new_vm(session, vm_id, now)
        if not self._bound(vm, ev):
            return False
        if ev.verdict is not Verdict.EVIDENCE_REJECTED and not (ev.pcrs and ev.vm_id):
            # a permit or deny without a verified boot (no PCRs, or a claimed id only):
            # history only.  It reached the alert rules' assertion and failed the whole
            # batch (the JetStream ingester redelivered it for ever; found in review)
            if created:
                # ... but a VM it made gets its recommendations as every new VM does
                # (found by scripts/fuzz_monitor.py: it had none until something else)
                self._refresh(session, vm, now)
            return True
        stale = advance(vm, ev)
        crossed_newer = False
        if stale is not None and self._crossed_in_flight(session, vm, ev, stale, boot_key):
            # two attestations of the applied boot crossed in flight (docs/monitor.md,
            # "Quote freshness"): no alert; the one with the newer quote is applied (the
            # answer an agent that retried after a timeout received), the other is history
            get_logger().info("two attestations of one boot crossed in flight: the newer "
                              "quote applied, the older kept as history",
                              extra={"event_id": ev.event_id, "vm_id": vm_id})
            if not stale.late:
                return True
            # applied only when the outcome it supersedes is still the VM's latest (not
            # when a newer, unjudged one, such as a rejection, came since)
            crossed_newer = (vm.last_outcome_at is not None
                             and as_utc(vm.last_outcome_at) == stale.replayed.at)
            stale = None
        if stale is not None and vm.enabled:
            self._raise_replayed(session, vm, ev, stale, now)
        if stale is not None and not stale.late:
            # this outcome replays (or the vTPM rolled back): history only, and said
            self._refresh(session, vm, now)
            return True
        boot: BootRow | None = None
        if ev.verdict is not Verdict.EVIDENCE_REJECTED:
            boot = self._boot(session, vm_id, ev, boot_key or _boot_key(ev))
            row.boot_id = boot.id
        latest = (vm.last_outcome_at is None or ev.time >= as_utc(vm.last_outcome_at)
                  or crossed_newer)
        if not latest:  # an older event delivered late: history only
            if stale is not None:  # ... that shows the applied one replayed (alert raised)
                self._refresh(session, vm, now)
            return True
        if crossed_newer and vm.last_outcome_at is not None:
            # the newer quote's outcome is applied, but the VM's latest answer time
            # does not go back (the fast path and later events compare against it)
            vm.last_outcome_at = max(as_utc(vm.last_outcome_at), ev.time)
        else:
            vm.last_outcome_at = ev.time
        vm.last_verdict = ev.verdict.value
        vm.last_reason = ev.reason[:4000]
        note_token(vm, ev, now)
        if ev.vm_id:  # a claimed id (evidence that did not verify) says nothing of liveness
            vm.last_alive_at = now
        if ev.issuer:
            vm.issuer = ev.issuer[:512]
        if boot is not None:
            vm.last_boot_id = boot.id
            vm.measured_secure_boot = ev.secure_boot
            windows = dict(ev.claims).get(t.IS_WINDOWS)
            vm.is_windows = windows if isinstance(windows, bool) else vm.is_windows
            vm.dbx_missing = ev.dbx_missing
            vm.dbx_current = ev.dbx_current
            if ev.aik_not_after is not None:
                vm.aik_not_after = ev.aik_not_after
        if vm.enabled:
            self._alerts_for_outcome(session, vm, ev, boot, now)
        self._refresh(session, vm, now)
        return True

    def _crossed_in_flight(self, session: Session, vm: VmRow, ev: OutcomeEvent, stale: Stale,
                           boot_key: str | None) -> bool:
        """Is ``stale`` two attestations of the VM's applied boot that crossed in flight?

        :func:`bootwatch.monitor.freshness.may_have_crossed` checks the quotes (same AIK
        and resetCount, close clocks and answers); here, that ``ev`` quotes the same
        PCR values as the boot the VM's latest outcome applied (its boot key: PCR
        values, bank and resetCount).  Either way round (``ev`` the older quote answered
        second, or the newer one answered first) the two outcomes show one state."""
        if not may_have_crossed(stale) or vm.last_boot_id is None:
            return False
        # ... and say what this one says of the boot
        if (ev.verdict is not Verdict.PERMIT
                or ev.revoked or any(a.reason == AlertReason.REVOKED_BOOT_COMPONENT.value
                                     for a in self._open_alerts(session, vm.vm_id))):
            return False
        key = boot_key or _boot_key(ev)
        ctx = _ctx(session)
        boot = ctx.boots.get((vm.vm_id, key))
        if boot is None and not ctx.boot_keys_loaded:
            boot = session.scalars(select(BootRow).where(
                BootRow.vm_id == vm.vm_id, BootRow.boot_key == key)).first()
        return (boot is not None and boot.id == vm.last_boot_id
                and boot.verdict == ev.verdict.value and boot.policy_hash == ev.policy_hash)

    @staticmethod
    def _bound(vm: VmRow, ev: OutcomeEvent) -> bool:
        """Is ``ev`` from the provider ``vm`` is bound to?  An unbound VM is bound here.

        Why: the service binds a VM id to one vTPM per provider only, so another
        provider (a custom one with a lenient policy, say) can hold a different vTPM
        enrolled under the same VM id.  Were its outcomes applied, that vTPM could make
        the VM healthy, resolve its alerts or raise false ones.  A VM is bound by
        ``vm enable --provider`` or, failing that, by its first outcome (trust on
        first use, as its first baseline is); outcomes of any other provider stay in
        the VM's outcome history, are counted and logged, and change nothing else."""
        if not vm.provider:
            if ev.vm_id:  # only verified evidence binds: a claimed id is the request's word
                vm.provider = ev.provider
            return True
        return vm.provider == ev.provider

    def _boot(self, session: Session, vm_id: str, ev: OutcomeEvent, key: str) -> BootRow:
        ctx = _ctx(session)
        boot = ctx.boots.get((vm_id, key))
        if boot is None and not ctx.boot_keys_loaded:
            boot = session.scalars(
                select(BootRow).where(BootRow.vm_id == vm_id, BootRow.boot_key == key)
            ).first()
        if boot is None:
            boot = _new_row(
                session, BootRow, id=_next_id(session, BootRow), vm_id=vm_id, boot_key=key,
                reset_count=ev.reset_count, pcr_bank=ev.pcr_bank,
                pcrs=_pcrs_json(dict(ev.pcrs)),
                verdict=ev.verdict.value, reason=ev.reason[:4000], policy_hash=ev.policy_hash,
                first_seen=ev.time, last_seen=ev.time,
            )
            events = ctx.boot_events[boot.id] = _events_json(ev.events)
            _new_row(session, BootDocumentRow, boot_id=boot.id, events=events,
                     claims=_claims_json(ev.claims))
        else:
            if ev.time >= as_utc(boot.last_seen):
                # the boot's verdict is its latest attestation's: an older event
                # delivered late is history only (a late denial must not turn a
                # permitted boot into a denied one, which dry runs and TOFU read)
                boot.verdict = ev.verdict.value
                boot.reason = ev.reason[:4000]
                boot.policy_hash = ev.policy_hash
            boot.last_seen = max(as_utc(boot.last_seen), ev.time)
        ctx.boots[(vm_id, key)] = boot
        ctx.boots_by_id[boot.id] = boot
        return boot

    def _alerts_for_outcome(
        self, session: Session, vm: VmRow, ev: OutcomeEvent, boot: BootRow | None,
        now: datetime,
    ) -> None:
        if ev.vm_id:  # verified evidence only: a claimed id does not show the VM alive
            self._resolve(session, vm, (AlertReason.AGENT_UNRESPONSIVE,), now,
                          "the VM attested again")
        if vm.last_proven:
            self._resolve(session, vm, (AlertReason.ATTESTATION_UNPROVEN,), now,
                          "a verified report carried the token of the VM's latest attestation")
        if ev.verdict is Verdict.EVIDENCE_REJECTED:
            self._raise(
                session, vm, AlertReason.EVIDENCE_REJECTED, Severity.MEDIUM, now,
                description=(
                    f"The attestation service rejected this VM's evidence: {ev.reason}. "
                    "The quote may not come from this VM's vTPM (interception or "
                    "tampering), or its event log was altered."
                ),
                extended={"failedCheck": ev.failed_check or "", "provider": ev.provider,
                          "claimedVmId": ev.claimed_vm_id or ""},
                diff=(), boot_id=None,
            )
            return
        assert boot is not None  # a verified outcome always has a boot
        variants = self._variants(session, vm)
        if not variants and ev.verdict is Verdict.PERMIT:
            variants = [self._add_baseline(session, vm, boot, "learned",
                                           "trust-on-first-use", now)]
        boot_pcrs = _parsed(session, boot.pcrs)
        match = next((v for v in variants if matches(_parsed(session, v.pcrs), boot_pcrs)),
                     None)
        boot.baseline_id = match.id if match else None
        diff: tuple[DiffEntry, ...] = ()
        closest: BaselineRow | None = None
        if match is None and variants:
            closest = min(
                reversed(variants),
                key=lambda v: len(differing_pcrs(_parsed(session, v.pcrs), boot_pcrs)),
            )
            diff = diff_boot(_parsed(session, closest.pcrs), events_from_json(closest.events),
                             boot_pcrs, events_from_json(_boot_events(session, boot.id)))
        if ev.verdict is Verdict.DENY:
            self._raise(
                session, vm, AlertReason.POLICY_DENIED, Severity.MEDIUM, now,
                description=f"The attestation policy denied this VM's boot: {ev.reason}",
                extended={"decidingRule": ev.deciding_rule or "", "policyHash": ev.policy_hash,
                          "provider": ev.provider},
                diff=diff, boot_id=boot.id,
            )
        else:
            self._resolve(session, vm, (AlertReason.POLICY_DENIED, AlertReason.EVIDENCE_REJECTED),
                          now, "the attestation policy permitted the VM's boot")
            if match is not None:
                self._resolve(session, vm, (AlertReason.BASELINE_DEVIATION,), now,
                              f"the boot matches baseline variant {match.id}")
            else:
                pcrs = sorted({d.pcr for d in diff})
                self._raise(
                    session, vm, AlertReason.BASELINE_DEVIATION, Severity.MEDIUM, now,
                    description=(
                        f"The boot deviates from its trusted baseline in PCR "
                        f"{', '.join(map(str, pcrs))}: {len(diff)} event(s) added, removed "
                        f"or changed against baseline variant "
                        f"{closest.id if closest else '?'}."
                    ),
                    extended={"pcrs": ",".join(map(str, pcrs)),
                              "baselineVariant": str(closest.id if closest else ""),
                              "bootId": str(boot.id)},
                    diff=diff, boot_id=boot.id,
                )
        if ev.revoked:
            names = "; ".join(f"event {r.event}: {r.component} ({r.reason})" for r in ev.revoked)
            self._raise(
                session, vm, AlertReason.REVOKED_BOOT_COMPONENT, Severity.HIGH, now,
                description=f"The boot loaded {len(ev.revoked)} revoked component(s): {names}",
                extended={"components": names}, diff=(), boot_id=boot.id,
            )
        else:
            self._resolve(session, vm, (AlertReason.REVOKED_BOOT_COMPONENT,), now,
                          "the boot loads no revoked component")

    def _raise_replayed(self, session: Session, vm: VmRow, ev: OutcomeEvent,
                        stale: Stale, now: datetime) -> None:
        old, new = stale.replayed, stale.newer
        if stale.late:
            what = (f"The outcome answered at {_iso(old.at)} ({old.describe()}) was applied as "
                    f"this VM's latest, but an outcome answered before it, at {_iso(new.at)}, "
                    f"carries a newer quote ({new.describe()}), delivered late: the first "
                    "was a replayed attestation (or two attestations crossed in flight). "
                    "The VM's current boot is unknown until its next attestation.")
        else:
            what = (f"The attestation service answered a quote from this VM's vTPM at "
                    f"{_iso(old.at)} ({old.describe()}) that is not newer than the quote it "
                    f"answered at {_iso(new.at)} ({new.describe()})"
                    f"{' from another AIK' if old.aik != new.aik else ''}: the attestation "
                    "was replayed, or the vTPM was restored from a snapshot, cleared or "
                    "replaced. The replayed outcome changes nothing else; the VM's current "
                    "boot is unknown until a newer quote arrives.")
        extended = {"provider": ev.provider, "eventId": ev.event_id,
                    "replayedResetCount": str(old.reset_count),
                    "replayedClockMs": str(old.clock), "replayedAt": _iso(old.at),
                    "newerResetCount": str(new.reset_count), "newerClockMs": str(new.clock),
                    "newerAt": _iso(new.at)}
        if not stale.late:
            # what ``accept_vtpm_rollback`` sets the mark to: the restored vTPM's quote
            extended["replayedAik"] = old.aik
        self._raise(session, vm, AlertReason.QUOTE_REPLAYED, Severity.HIGH, now,
                    description=what, extended=extended, diff=(), boot_id=None)

    # --- reports ------------------------------------------------------------

    def ingest_report(self, report: HealthReport) -> ReportResult:
        """Check a report's token, then store it alone (the API batches concurrent
        reports through :class:`bootwatch.monitor.reports.ReportWriter` instead)."""
        return self.store_reports([self.check_report(report)])[0]

    def check_report(self, report: HealthReport) -> CheckedReport:
        """Verify a report's token, outside any transaction (it may fetch the issuer's
        keys): a report without a verified token is stored as unverified."""
        vm_id = normalise_vm_id(report.vm_id)
        check = TokenCheck(False, "the report carries no attestation token")
        if report.attestation_token:
            if self.tokens is None:
                check = TokenCheck(False, "this monitor has no trusted token issuers configured")
            else:
                check = self.tokens.check(report.attestation_token, vm_id)
        issued = (datetime.fromtimestamp(check.verified_iat, UTC)
                  if check.verified_iat is not None else None)
        return CheckedReport(report, vm_id, check.verified, "" if check.verified else check.why,
                             check.verified_issuer, check.verified_jti, issued)

    def store_reports(self, reports: Sequence[CheckedReport]) -> list[ReportResult]:
        """Store checked reports in one transaction, in order; a report id seen before
        (stored, or earlier in the batch) is acknowledged and not stored again.

        Why one transaction for many: a report's own work is a few column changes, but
        each transaction reads the VM and what its state depends on and commits: through
        the ORM, one report at a time, that was about 2 ms of CPU, ten times an outcome
        event.  Like an outcome batch, the reports work on plain records
        (bootwatch.monitor.records), loaded for all their VMs in a few queries and written
        at the end."""
        if not reports:
            return []
        now = self.clock()
        results: list[ReportResult] = []
        with self.write_tx() as session, session.no_autoflush:
            ctx = _ctx(session)
            ctx.rows = RowSet()
            seen = set(session.connection().execute(
                select(ReportRow.report_id).where(
                    ReportRow.report_id.in_(sorted({c.report.report_id for c in reports})))
            ).scalars())
            self._preload(session, {c.vm_id for c in reports if c.report.report_id not in seen})
            for c in reports:
                report = c.report
                if report.report_id in seen:
                    results.append(ReportResult(report.report_id, False, c.verified, c.why))
                    continue
                seen.add(report.report_id)
                verified, why = self._apply_report(session, c, now)
                results.append(ReportResult(report.report_id, True, verified, why))
            self._apply_pending_recommendations(session)
            ctx.rows.flush(session)
        for c, r in zip(reports, results, strict=True):
            self.metrics.report(c.report.health_status.value, r.verified, duplicate=not r.stored)
        return results

    @staticmethod
    def _report_trust(vm: VmRow, c: CheckedReport) -> tuple[bool, str]:
        """A verified token counts for a VM only when its provider issued it.

        Why: any trusted issuer's token for the VM id verifies, and another provider of
        the service may hold a vTPM enrolled under the same VM id (see :meth:`_bound`).
        Once an outcome of the VM's own provider has told the monitor its issuer, a token
        of any other issuer is an unverified report.  Before that (a VM known from
        reports only, as with tokens of Azure's own MAA) the trusted issuers decide."""
        if not c.verified or not vm.issuer:
            return c.verified, c.why
        if c.issuer.rstrip("/") == vm.issuer.rstrip("/"):
            return True, ""
        return False, (f"the token was issued by {c.issuer}, but this VM is bound to provider "
                       f"{vm.provider!r}, whose tokens {vm.issuer} issues (if the VM moved, "
                       f"rebind it: bootwatch vm enable {vm.vm_id} --provider NAME)")

    def _apply_report(self, session: Session, c: CheckedReport,
                      now: datetime) -> tuple[bool, str]:
        """Store one report; returns whether it counted as verified, and why not."""
        report = c.report
        vm = _ctx(session).vms.get(c.vm_id) or self._new_vm(session, c.vm_id, now)
        verified, why = self._report_trust(vm, c)
        if (verified and c.token_issued_at is not None
                and c.token_issued_at < now - self.stale_after):
            # a token stays valid for hours (8 by default) and stays on the VM: sent again
            # after a reboot into another boot, it would keep the VM alive and its last
            # outcome proven (found in review).  It proves the VM was in that boot when
            # the token was issued; liveness needs one issued within the stale window
            verified, why = False, (
                f"the token was issued at {_iso(c.token_issued_at)}, more than the stale "
                f"window ({self.stale_after.total_seconds():g} s) ago: it shows this VM's "
                "boot then, not now; the agent's next attestation brings a fresh one")
        _new_row(
            session, ReportRow,
            report_id=report.report_id, vm_id=c.vm_id, received_at=now,
            status=report.health_status.value, verified=verified, why_unverified=why,
            message=(report.attestation_status_message or report.platform_error_message)[
                :4000],
            failed_hop=report.failed_hop.value if report.failed_hop else None,
            agent_version=report.agent_version, boot_counter=report.boot_counter,
        )
        if (not verified and report.health_status is not HealthStatus.PLATFORM_ERROR
                and vm.last_report_status == HealthStatus.PLATFORM_ERROR.value
                and vm.last_report_at is not None
                and (vm.last_outcome_at is None
                     or as_utc(vm.last_report_at) >= as_utc(vm.last_outcome_at))):
            # a platform error the VM's state rests on ends with an attestation or a
            # verified report only: an unauthenticated "Healthy" taking its place as the
            # last report would turn platform_error (whose report kept the VM alive) into
            # healthy.  The report stays in the history; the VM keeps the error.
            if not vm.agent_version:
                vm.agent_version = report.agent_version[:64]
            self._refresh(session, vm, now)
            return verified, why
        vm.last_report_at = now
        vm.last_report_status = report.health_status.value
        vm.last_report_verified = verified
        vm.last_report_message = (
            report.platform_error_message or report.attestation_status_message
        )[:4000]
        vm.last_failed_hop = report.failed_hop.value if report.failed_hop else None
        vm.last_failed_target = report.failed_target[:512]
        if verified or report.health_status is HealthStatus.PLATFORM_ERROR:
            vm.last_alive_at = now
        if verified:
            vm.agent_version = report.agent_version[:64]
            vm.boot_counter = report.boot_counter
            if c.token_id:
                note_report_token(vm, c.token_id)
            if vm.enabled:
                self._resolve(session, vm, (AlertReason.AGENT_UNRESPONSIVE,), now,
                              "the agent sent a verified report")
                if vm.last_proven:
                    self._resolve(session, vm, (AlertReason.ATTESTATION_UNPROVEN,), now,
                                  "a verified report carried the token of the VM's latest "
                                  "attestation")
        elif not vm.agent_version:
            vm.agent_version = report.agent_version[:64]
        self._refresh(session, vm, now)
        return verified, why

    # --- the stale sweep ----------------------------------------------------

    def sweep(self, limit: int = 5000) -> int:
        """Re-evaluate enabled VMs that fell silent, at most ``limit`` a run; open
        ``agent_unresponsive``.  Returns how many VMs changed state.

        Each silence is evaluated once (``silence_checked_at``), oldest first: time alone
        changes a silent VM's state once, when it crosses the window; a VM it leaves
        unhealthy (unhealthy outranks stale) changes again only through an event or an
        operator's action, which recompute its state.  The sweep used to take every such
        VM on every run, 5,000 in no order, so past 5,000 of them no other VM ever went
        stale (found in an audit)."""
        now = self.clock()
        cutoff = now - self.stale_after
        changed = 0
        with self.write_tx() as session:
            rows = session.scalars(
                select(VmRow).where(
                    VmRow.enabled.is_(True),
                    VmRow.state != VmState.STALE.value,
                    VmRow.last_alive_at.is_not(None),
                    VmRow.last_alive_at < cutoff,
                    # any other life sign than the one evaluated, even an earlier one
                    # (the monitor's clock stepped back past the window)
                    or_(VmRow.silence_checked_at.is_(None),
                        VmRow.silence_checked_at != VmRow.last_alive_at),
                ).order_by(VmRow.last_alive_at, VmRow.vm_id).limit(limit)
            ).all()
            for vm in rows:
                before = vm.state
                self._refresh(session, vm, now)  # opens agent_unresponsive when stale
                # the life sign whose silence this was, not the sweeper's clock: another
                # process's clock, or a step back, put a later life sign before a
                # clock-stamped check, and that VM was never swept again (found in review)
                vm.silence_checked_at = vm.last_alive_at
                if vm.state != before:
                    changed += 1
            if self.token_proof is not None:
                changed += self._sweep_unproven(session, now)
        return changed

    def _sweep_unproven(self, session: Session, now: datetime) -> int:
        """Open ``attestation_unproven`` for enabled VMs whose permits have come without a
        proof for longer than the token-proof window, and that showed life after the
        first of them (a later attestation or report: a VM that went silent right after
        attesting, its agent stopped or the VM off, is ``agent_unresponsive`` instead)."""
        assert self.token_proof is not None
        rows = session.scalars(select(VmRow).where(
            VmRow.enabled.is_(True), VmRow.unproven_since.is_not(None),
            VmRow.unproven_alerted_at.is_(None),
            VmRow.unproven_since < now - self.token_proof,
            VmRow.last_alive_at > VmRow.unproven_since)
            .order_by(VmRow.unproven_since).limit(5000)).all()
        changed = 0
        for vm in rows:
            before = vm.state
            vm.unproven_alerted_at = now  # once per stretch (raised, or suppressed)
            since = as_utc(vm.unproven_since) if vm.unproven_since else now
            self._raise(
                session, vm, AlertReason.ATTESTATION_UNPROVEN, Severity.HIGH, now,
                description=(
                    f"Since {_iso(since)} the service has permitted this VM's attestations, "
                    f"and for more than {self.token_proof.total_seconds():g} s no verified "
                    "report from it carried back the token of its latest one, though the VM "
                    "kept attesting or reporting. Each token is sealed to a key only the "
                    "quoted boot's PCRs unlock, so a VM still in that boot can open it; one "
                    "that cannot may be sending quotes taken earlier (or replayed) from "
                    "another boot. The VM's current boot is unknown."
                ),
                extended={"tokenId": vm.last_token_id or "", "unprovenSince": _iso(since)},
                diff=(), boot_id=vm.last_boot_id,
            )
            self._refresh(session, vm, now)
            if vm.state != before:
                changed += 1
        return changed

    def _raise_unresponsive(self, session: Session, vm: VmRow, now: datetime) -> None:
        """Open (or count again) ``agent_unresponsive``: called by :meth:`_refresh` when the
        VM becomes stale, whichever path noticed it (the sweep, a report, an operator)."""
        alive = as_utc(vm.last_alive_at) if vm.last_alive_at else now
        self._raise(
            session, vm, AlertReason.AGENT_UNRESPONSIVE, Severity.MEDIUM, now,
            description=(
                f"No attestation or verified report from this VM since "
                f"{alive:%Y-%m-%d %H:%M:%S} UTC (stale after "
                f"{int(self.stale_after.total_seconds())} s): the guest agent is "
                "not responding."
            ),
            extended={"lastSeen": alive.isoformat()}, diff=(), boot_id=None,
        )

    # --- baselines ------------------------------------------------------------

    def _variants(self, session: Session, vm: VmRow) -> list[BaselineRow]:
        ctx = _ctx(session)
        if vm.vm_id not in ctx.variants_vm:
            ctx.variants_vm[vm.vm_id] = _fetch(session, BaselineRow,
                                               BaselineRow.vm_id == vm.vm_id,
                                               order_by=(BaselineRow.id,))
        out = list(ctx.variants_vm[vm.vm_id])
        if vm.group_name:
            if vm.group_name not in ctx.variants_group:
                ctx.variants_group[vm.group_name] = _fetch(
                    session, BaselineRow, BaselineRow.group_name == vm.group_name,
                    order_by=(BaselineRow.id,))
            out.extend(ctx.variants_group[vm.group_name])
        return sorted(out, key=lambda b: b.id)

    def _add_baseline(self, session: Session, vm: VmRow, boot: BootRow, origin: str,
                      by: str, now: datetime, *, group: bool = False,
                      label: str = "") -> BaselineRow:
        base = _new_row(
            session, BaselineRow, id=_next_id(session, BaselineRow),
            vm_id=None if group else vm.vm_id,
            group_name=vm.group_name if group else None,
            label=label or f"boot {boot.id}", origin=origin, pcrs=boot.pcrs,
            events=_boot_events(session, boot.id), source_boot_id=boot.id, created_at=now,
            created_by=by,
        )
        ctx = _ctx(session)
        if group:
            ctx.variants_group.setdefault(vm.group_name, []).append(base)
        else:
            ctx.variants_vm.setdefault(vm.vm_id, []).append(base)
        return base

    def _add_baseline_loaded(self, session: Session, vm: VmRow, boot: BootRow, origin: str,
                             by: str, now: datetime, *, group: bool = False,
                             label: str = "") -> BaselineRow:
        """:meth:`_add_baseline` after loading the VM's variants: appended to a list never
        loaded, the new variant became the VM's whole set, and approving a boot other than
        the current one made a healthy VM unhealthy (found in review)."""
        self._variants(session, vm)
        return self._add_baseline(session, vm, boot, origin, by, now, group=group, label=label)

    def approve(self, ref: str, *, boot_id: int | None = None, group: bool = False,
                label: str = "", by: str = "") -> int:
        """Add a boot (default: the VM's latest verified boot) as an approved variant;
        resolves the deviation alert when that boot is the VM's current one."""
        now = self.clock()
        with self.write_tx() as session:
            vm = self.find_vm(session, ref)
            if group and not vm.group_name:
                raise MonitorError(f"VM {vm.vm_id} has no group; approve it for the VM")
            boot = self._boot_of(session, vm, boot_id)
            if boot.verdict == Verdict.EVIDENCE_REJECTED.value:
                raise MonitorError(f"boot {boot.id} did not verify; it cannot be a baseline")
            base = self._add_baseline_loaded(session, vm, boot, "approved", by, now,
                                             group=group, label=label)
            boot.baseline_id = base.id
            if vm.last_boot_id == boot.id:
                self._resolve(session, vm, (AlertReason.BASELINE_DEVIATION,), now,
                              f"boot {boot.id} approved as baseline variant {base.id}"
                              + (f" by {by}" if by else ""))
            self._refresh(session, vm, now)
            return base.id

    def remove_baseline(self, baseline_id: int) -> None:
        now = self.clock()
        with self.write_tx() as session:
            base = session.get(BaselineRow, baseline_id)
            if base is None:
                raise NotFound(f"no baseline variant {baseline_id}")
            session.delete(base)
            session.flush()
            vms = {v.vm_id: v for v in (
                session.scalars(select(VmRow).where(VmRow.vm_id == base.vm_id)).all()
                if base.vm_id else
                session.scalars(select(VmRow).where(VmRow.group_name == base.group_name))
                .all())}
            # every boot that names the variant, also of a VM that left its group since:
            # a dangling id could name a later variant of the same id (ids are max + 1)
            # and make an unapproved boot healthy (found in review)
            for vm_id in session.scalars(select(BootRow.vm_id).where(
                    BootRow.baseline_id == baseline_id).distinct()):
                if vm_id not in vms:
                    other = session.get(VmRow, vm_id)
                    if other is not None:
                        vms[vm_id] = other
            for vm in vms.values():
                # the boots that pointed at the variant take the first remaining one they
                # match (as an outcome would): a boot that also matches another variant
                # (the group's, say) is still on an approved baseline
                variants = self._variants(session, vm)
                for boot in session.scalars(select(BootRow).where(
                        BootRow.vm_id == vm.vm_id, BootRow.baseline_id == baseline_id)):
                    boot_pcrs = pcrs_from_json(boot.pcrs)
                    match = next((v for v in variants
                                  if matches(pcrs_from_json(v.pcrs), boot_pcrs)), None)
                    boot.baseline_id = match.id if match else None
                self._refresh(session, vm, now)

    def _boot_of(self, session: Session, vm: VmRow, boot_id: int | None) -> BootRow:
        if boot_id is None:
            boot_id = vm.last_boot_id
            if boot_id is None:
                raise NotFound(f"VM {vm.vm_id} has no verified boot yet")
        boot = session.get(BootRow, boot_id)
        if boot is None or boot.vm_id != vm.vm_id:
            raise NotFound(f"VM {vm.vm_id} has no boot {boot_id}")
        return boot

    def diff(self, ref: str, *, boot_id: int | None = None,
             against: int | None = None) -> dict[str, Any]:
        """The event-level diff of a boot against its closest baseline variant, or
        against another boot of the VM."""
        with self.read() as session:
            vm = self.find_vm(session, ref)
            boot = self._boot_of(session, vm, boot_id)
            pcrs = pcrs_from_json(boot.pcrs)
            if against is not None:
                other = self._boot_of(session, vm, against)
                ref_pcrs, ref_events, what = (pcrs_from_json(other.pcrs),
                                              _boot_events(session, other.id),
                                              f"boot {other.id}")
            else:
                variants = self._variants(session, vm)
                if not variants:
                    raise NotFound(f"VM {vm.vm_id} has no baseline")
                best = min(reversed(variants),
                           key=lambda v: len(differing_pcrs(pcrs_from_json(v.pcrs), pcrs)))
                ref_pcrs, ref_events, what = (pcrs_from_json(best.pcrs), best.events,
                                              f"baseline variant {best.id}")
            entries = diff_boot(ref_pcrs, events_from_json(ref_events), pcrs,
                                events_from_json(_boot_events(session, boot.id)))
            return {"vm_id": vm.vm_id, "boot": boot.id, "against": what,
                    "diff": [e.to_json() for e in entries]}

    # --- alerts -------------------------------------------------------------

    def _open_alerts(self, session: Session, vm_id: str) -> list[AlertRow]:
        ctx = _ctx(session)
        if vm_id not in ctx.alerts:
            ctx.alerts[vm_id] = _fetch(session, AlertRow, AlertRow.vm_id == vm_id,
                                       AlertRow.status.in_(_OPEN))
        return list(ctx.alerts[vm_id])

    def _suppressed(self, session: Session, vm: VmRow, reason: AlertReason) -> bool:
        ctx = _ctx(session)
        if ctx.suppressions is None:
            ctx.suppressions = _fetch(session, SuppressionRow)
        return any(
            (r.vm_id == vm.vm_id or (vm.group_name and r.group_name == vm.group_name))
            and (r.reason is None or r.reason == reason.value)
            for r in ctx.suppressions
        )

    def _raise(self, session: Session, vm: VmRow, reason: AlertReason, severity: Severity,
               now: datetime, *, description: str, extended: dict[str, str],
               diff: Sequence[DiffEntry], boot_id: int | None) -> None:
        if self._suppressed(session, vm, reason):
            self.metrics.suppressed(reason.value)
            return
        key = f"{vm.vm_id}:{reason.value}"
        diff_text = json.dumps([d.to_json() for d in diff], separators=(",", ":"))
        alert = next((a for a in self._open_alerts(session, vm.vm_id)
                      if a.correlation_key == key), None)
        if alert is not None:
            alert.count += 1
            alert.last_seen = now
            changed = alert.boot_id != boot_id or alert.description != description
            alert.description = description
            alert.diff = diff_text
            alert.boot_id = boot_id
            alert.extended = json.dumps(extended)
            if changed:
                self._notify(session, "alert.updated", alert, vm, now)
            return
        alert = _new_row(
            session, AlertRow, id=str(uuid.uuid4()), vm_id=vm.vm_id,
            alert_type=(ALERT_TYPE_REVOKED_COMPONENT
                        if reason is AlertReason.REVOKED_BOOT_COMPONENT
                        else ALERT_TYPE_ATTESTATION_FAILED),
            reason=reason.value, severity=severity.value, status=AlertStatus.ACTIVE.value,
            correlation_key=key, count=1, title=_TITLES[reason], description=description,
            remediation=json.dumps(_REMEDIATION[reason]), extended=json.dumps(extended),
            diff=diff_text, boot_id=boot_id, start_time=now, last_seen=now,
            status_changed_by="",
        )
        _ctx(session).alerts.setdefault(vm.vm_id, []).append(alert)
        self.metrics.alert_opened(reason.value, severity.value)
        self._notify(session, "alert.opened", alert, vm, now)

    def _resolve(self, session: Session, vm: VmRow, reasons: Sequence[AlertReason],
                 now: datetime, why: str) -> None:
        open_rows = self._open_alerts(session, vm.vm_id)
        if not open_rows:
            return
        keys = {f"{vm.vm_id}:{r.value}" for r in reasons}
        for alert in open_rows:
            if alert.correlation_key in keys:
                self._set_status(session, alert, AlertStatus.RESOLVED, now, why)

    def _set_status(self, session: Session, alert: AlertRow, status: AlertStatus,
                    now: datetime, by: str) -> None:
        alert.status = status.value
        alert.status_changed_by = by[:128]
        if status in (AlertStatus.RESOLVED, AlertStatus.DISMISSED):
            alert.end_time = now
            open_list = _ctx(session).alerts.get(alert.vm_id)
            if open_list is not None and alert in open_list:
                open_list.remove(alert)
        vm = _ctx(session).vms.get(alert.vm_id)
        if vm is None:
            vm = session.get(VmRow, alert.vm_id)
        self._notify(session, f"alert.{status.value}", alert, vm, now)

    def set_alert_status(self, alert_id: str, status: AlertStatus, *, by: str = "") -> None:
        """An operator's action: acknowledge (in_progress), resolve or dismiss."""
        now = self.clock()
        with self.write_tx() as session:
            alert = session.get(AlertRow, alert_id)
            if alert is None:
                raise NotFound(f"no alert {alert_id}")
            if alert.status not in _OPEN:
                raise MonitorError(f"alert {alert_id} is {alert.status} already; it cannot "
                                   f"become {status.value}")
            if status is AlertStatus.ACTIVE:
                raise MonitorError("an alert cannot be set back to active")
            self._set_status(session, alert, status, now, by or "operator")
            vm = session.get(VmRow, alert.vm_id)
            if vm is not None:
                self._refresh(session, vm, now)

    # --- suppressions -------------------------------------------------------

    def add_suppression(self, *, vm: str | None, group: str | None,
                        reason: AlertReason | None, note: str, by: str = "") -> int:
        if bool(vm) == bool(group):
            raise MonitorError("a suppression rule names either a VM or a group")
        now = self.clock()
        with self.write_tx() as session:
            vm_id = self.find_vm(session, vm).vm_id if vm else None
            rule = SuppressionRow(vm_id=vm_id, group_name=group or None,
                                  reason=reason.value if reason else None, note=note[:2000],
                                  created_at=now, created_by=by)
            session.add(rule)
            session.flush()
            # alerts the rule covers that are open now are dismissed
            rows = (self._open_alerts(session, vm_id) if vm_id else list(session.scalars(
                select(AlertRow).join(VmRow, VmRow.vm_id == AlertRow.vm_id).where(
                    VmRow.group_name == group, AlertRow.status.in_(_OPEN)))))
            for alert in rows:
                if reason is None or alert.reason == reason.value:
                    self._set_status(session, alert, AlertStatus.DISMISSED, now,
                                     f"suppression rule {rule.id}")
                    owner = session.get(VmRow, alert.vm_id)
                    if owner is not None:
                        self._refresh(session, owner, now)
            return rule.id

    def remove_suppression(self, rule_id: int) -> None:
        with self.write_tx() as session:
            rule = session.get(SuppressionRow, rule_id)
            if rule is None:
                raise NotFound(f"no suppression rule {rule_id}")
            session.delete(rule)

    # --- state and recommendations --------------------------------------------

    def _refresh(self, session: Session, vm: VmRow, now: datetime) -> None:
        open_rows = self._open_alerts(session, vm.vm_id)
        integrity = tuple(sorted({a.reason for a in open_rows
                                  if AlertReason(a.reason) in INTEGRITY_REASONS}))
        last_boot_matched = False
        if vm.last_boot_id is not None:
            boot = _ctx(session).boots_by_id.get(vm.last_boot_id)
            if boot is None:
                found = _fetch(session, BootRow, BootRow.id == vm.last_boot_id)
                boot = found[0] if found else None
            variant_ids = {b.id for b in self._variants(session, vm)}
            last_boot_matched = bool(boot and boot.baseline_id in variant_ids)
        ctx = _ctx(session)
        ev = evaluate_vm(vm, integrity=integrity, last_boot_matched=last_boot_matched, now=now,
                         stale_after=self.stale_after, egress_text=self.egress_text,
                         evaluated=ctx.evaluated)
        state, results, digest = ev.state, ev.results, ev.digest
        if state is VmState.STALE and vm.state != VmState.STALE.value:
            # whichever path finds the VM silent opens the alert, not only the sweep: the
            # sweep looks only at VMs not stale yet, so a VM that an unverified report or
            # an operator's action moved to stale first would never get one
            self._raise_unresponsive(session, vm, now)
            open_rows = self._open_alerts(session, vm.vm_id)
        if state.value != vm.state:
            vm.state = state.value
            vm.state_since = now
        vm.attention = ATTENTION[state]
        vm.state_reason = ev.reason
        vm.open_alerts = len(open_rows)
        if vm.recommendations_digest == digest and vm.vm_id not in ctx.recs:
            return  # the stored rows hold these results (only this method writes them)
        vm.recommendations_digest = digest
        if ctx.rows is not None:
            # a batch: the rows of every VM whose results changed are read in one query
            # when the batch ends and these results applied then, in order
            ctx.pending_recs.setdefault(vm.vm_id, []).append((results, now))
            return
        if vm.vm_id not in ctx.recs:
            ctx.recs[vm.vm_id] = {r.key: r for r in _fetch(
                session, RecommendationRow, RecommendationRow.vm_id == vm.vm_id)}
        self._store_recommendations(session, vm.vm_id, results, now)

    def _apply_pending_recommendations(self, session: Session) -> None:
        ctx = _ctx(session)
        if not ctx.pending_recs:
            return
        need = sorted(v for v in ctx.pending_recs if v not in ctx.recs)
        for vm_id in need:
            ctx.recs[vm_id] = {}
        for k in range(0, len(need), 500):
            for rec in _fetch(session, RecommendationRow,
                              RecommendationRow.vm_id.in_(need[k:k + 500])):
                ctx.recs[rec.vm_id][rec.key] = rec
        for vm_id, steps in ctx.pending_recs.items():
            for results, now in steps:
                self._store_recommendations(session, vm_id, results, now)
        ctx.pending_recs.clear()

    def _store_recommendations(self, session: Session, vm_id: str,
                               results: Sequence[RecommendationResult], now: datetime) -> None:
        """Make the VM's recommendation rows hold ``results`` (a code change is dated)."""
        existing = _ctx(session).recs[vm_id]
        for res in results:
            d = res.definition
            row = existing.get(d.key)
            if row is None:
                row = _new_row(
                    session, RecommendationRow, vm_id=vm_id, key=d.key, name=d.name,
                    severity=d.severity.value,
                    code=res.code.value, cause=res.cause, description=res.description,
                    remediation=res.remediation, first_evaluated=now, status_changed=now)
                existing[d.key] = row
                continue
            if row.code != res.code.value:
                row.code = res.code.value
                row.status_changed = now
            if row.cause != res.cause:
                row.cause = res.cause
            if row.description != res.description:
                row.description = res.description
            if row.remediation != res.remediation:
                row.remediation = res.remediation
        # the OS-specific agent recommendation that no longer applies is dropped
        keys = {r.definition.key for r in results}
        for key in [k for k in existing if k not in keys]:
            _delete_row(session, RecommendationRow, existing.pop(key))

    # --- webhooks -------------------------------------------------------------

    def _notify(self, session: Session, kind: str, alert: AlertRow, vm: VmRow | None,
                now: datetime) -> None:
        if not self.settings.webhooks:
            return
        from bootwatch.monitor.views import alert_json

        for url in self.settings.webhooks:
            delivery = str(uuid.uuid4())
            body = json.dumps({
                "delivery_id": delivery,
                "event": kind,
                "time": now.isoformat(),
                "alert": alert_json(alert, vm),
            }, separators=(",", ":"))
            _new_row(session, WebhookDeliveryRow, id=delivery, url=url, body=body,
                     created_at=now, attempts=0, next_attempt_at=now, last_error="")

    # --- dry run ------------------------------------------------------------

    def dry_run(self, policy_text: str, since: timedelta) -> list[dict[str, Any]]:
        """Which stored boots (seen within ``since``) a candidate AzureGuest policy
        would deny, evaluated over the claims the service recorded for each boot."""
        from bootwatch.policy.claims import Claim
        from bootwatch.policy.compiler import compile_policy
        from bootwatch.policy.evaluator import evaluate

        try:
            policy = compile_policy(policy_text)
        except PolicyError as exc:
            raise MonitorError(f"policy: {exc}") from exc
        cutoff = self.clock() - since
        out: list[dict[str, Any]] = []
        with self.read() as session:
            rows = session.execute(
                select(BootRow, VmRow.name, BootDocumentRow.claims)
                .join(VmRow, VmRow.vm_id == BootRow.vm_id)
                .join(BootDocumentRow, BootDocumentRow.boot_id == BootRow.id)
                .where(BootRow.last_seen >= cutoff).order_by(BootRow.vm_id, BootRow.id)
            ).all()
            for boot, name, claims_text in rows:
                pairs = json.loads(claims_text)
                if not pairs:
                    continue
                claims = [Claim.service(k, v, read_only=(k == "pcrs")) for k, v in pairs]
                try:
                    result = evaluate(policy, claims)
                    would, why = ("permit" if result.permitted else "deny",
                                  result.deciding_rule or "")
                except PolicyError as exc:
                    would, why = "deny", f"evaluation failed: {exc}"
                out.append({
                    "vm_id": boot.vm_id, "name": name, "boot": boot.id,
                    "last_seen": as_utc(boot.last_seen).isoformat(),
                    "verdict": boot.verdict, "would": would, "deciding_rule": why,
                    "changes": boot.verdict != would,
                })
        return out

    # --- small reads used by the API --------------------------------------------

    def agents(self) -> list[AgentView]:
        """Every VM's agent as the release rollout sees it (the ``FleetView`` protocol)."""
        with self.read() as session:
            rows = session.execute(select(
                VmRow.vm_id, VmRow.enabled, VmRow.agent_version, VmRow.state,
                VmRow.last_report_at)).all()
        return [
            AgentView(vm_id=v, enabled=bool(e), agent_version=a or None,
                      healthy=None if s in (VmState.NOT_REPORTING.value,
                                            VmState.NOT_MONITORED.value)
                      else s == VmState.HEALTHY.value,
                      last_report_at=as_utc(t) if t else None)
            for v, e, a, s, t in rows
        ]
