"""The monitor's read queries, shared by its JSON API and its dashboard.

Both edges answer from these functions so the dashboard shows exactly what
``bootwatch vm list``, ``alert list`` and friends show: a page never runs a
query the API cannot answer.  Each returns the API's JSON shapes (from
:mod:`bootwatch.monitor.views`) and raises :class:`~bootwatch.errors.ProtocolError`
naming the bad parameter, or :class:`~bootwatch.monitor.core.NotFound`.

The VM list pages by keyset on ``(attention, vm_id)`` (an index), so the
first page and the thousandth cost the same at 100,000 VMs.
"""

from __future__ import annotations

import base64
from typing import Any, cast

from sqlalchemy import and_, func, or_, select, tuple_

from bootwatch.errors import ProtocolError
from bootwatch.monitor.core import Monitor, NotFound
from bootwatch.monitor.models import (
    AlertRow,
    BaselineRow,
    BootDocumentRow,
    BootRow,
    RecommendationRow,
    SuppressionRow,
    VmRow,
)
from bootwatch.monitor.views import (
    alert_json,
    baseline_json,
    boot_json,
    quote_mark_json,
    rec_json,
    token_proof_json,
    vm_json,
)
from bootwatch.protocol.monitor import OPEN_STATUSES, AlertReason, AlertStatus, VmState

__all__ = [
    "agent_versions",
    "check_limit",
    "get_alert",
    "get_boot",
    "list_alerts",
    "list_baselines",
    "list_recommendations",
    "list_suppressions",
    "list_vms",
    "recommendation_groups",
    "summary",
    "vm_detail",
]

_OPEN = [x.value for x in OPEN_STATUSES]
_MAX_CHAR = "\U0010ffff"


def check_limit(value: int) -> int:
    if not 1 <= value <= 1000:
        raise ProtocolError("query: 'limit' must be 1-1000")
    return value


#: the ``attention`` ranks a cursor may carry: a 32-bit database integer (a forged cursor
#: with a larger rank overflowed the database driver: a 500 instead of a 400)
_MAX_RANK = 2**31 - 1


def _cursor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    try:
        rank, vm_id = base64.urlsafe_b64decode(text.encode()).decode().split("|", 1)
        if not -_MAX_RANK <= int(rank) <= _MAX_RANK:
            raise ValueError(rank)
        return int(rank), vm_id
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("query: 'cursor' is not a cursor this monitor issued") from None


def summary(monitor: Monitor, *, recommendations: bool = True) -> dict[str, Any]:
    """VMs by state, open alerts by severity and (optionally) Unhealthy counts per
    recommendation."""
    with monitor.read() as s:
        states = {str(k): int(n) for k, n in s.execute(
            select(VmRow.state, func.count()).group_by(VmRow.state))}
        sev = {str(k): int(n) for k, n in s.execute(
            select(AlertRow.severity, func.count())
            .where(AlertRow.status.in_(_OPEN)).group_by(AlertRow.severity))}
        recs = [
            {"key": k, "name": name, "severity": severity, "unhealthy": int(n)}
            for k, name, severity, n in s.execute(
                select(RecommendationRow.key, RecommendationRow.name,
                       RecommendationRow.severity, func.count())
                .where(RecommendationRow.code == "Unhealthy")
                .group_by(RecommendationRow.key, RecommendationRow.name,
                          RecommendationRow.severity))
        ] if recommendations else []
    out: dict[str, Any] = {"vms": {st.value: states.get(st.value, 0) for st in VmState},
                           "open_alerts": sev}
    if recommendations:
        out["recommendations"] = recs
    return out


def list_vms(monitor: Monitor, *, state: str | None = None, group: str | None = None,
             provider: str | None = None, q: str | None = None, limit: int = 100,
             cursor: str | None = None, recommendations: bool = True) -> dict[str, Any]:
    """One page of VMs, those needing attention first; ``next_cursor`` for the next.
    ``recommendations=False`` leaves each VM's recommendation list empty (the
    dashboard's overview does not show it)."""
    n = check_limit(limit)
    stmt = select(VmRow)
    if state:
        try:
            stmt = stmt.where(VmRow.state == VmState(state).value)
        except ValueError:
            raise ProtocolError(
                "query: 'state' must be one of " + ", ".join(s.value for s in VmState)
            ) from None
    if group is not None:
        stmt = stmt.where(VmRow.group_name == group)
    if provider is not None:
        stmt = stmt.where(VmRow.provider == provider)
    if q:
        if len(q) > 128:
            raise ProtocolError("query: 'q' is longer than 128 characters")
        # a prefix as a range, so the name index and the primary key answer it (LIKE
        # is case-insensitive in SQLite and would scan every VM): names match
        # case-sensitively, VM ids in any case (they are stored upper-case)
        stmt = stmt.where(or_(and_(VmRow.name >= q, VmRow.name < q + _MAX_CHAR),
                              and_(VmRow.vm_id >= q.upper(),
                                   VmRow.vm_id < q.upper() + _MAX_CHAR)))
    after = _cursor(cursor)
    if after is not None:
        rank, vm_id = after
        # a row-value comparison: the index seeks to the cursor instead of scanning
        stmt = stmt.where(tuple_(VmRow.attention, VmRow.vm_id) > tuple_(rank, vm_id))
    stmt = stmt.order_by(VmRow.attention, VmRow.vm_id).limit(n + 1)
    with monitor.read() as s:
        # plain result rows (attribute access by column name), not ORM entities: a
        # page has hundreds of recommendation rows and the identity map's bookkeeping
        # (and its expiry when the read session ends) would cost more than the query
        rows = [cast(VmRow, r) for r in s.execute(stmt.with_only_columns(
            *VmRow.__table__.columns)).all()]
        more = len(rows) > n
        rows = rows[:n]
        recs: dict[str, list[RecommendationRow]] = {}
        if rows and recommendations:
            for r in s.execute(select(*RecommendationRow.__table__.columns).where(
                    RecommendationRow.vm_id.in_([v.vm_id for v in rows]))).all():
                recs.setdefault(r.vm_id, []).append(cast(RecommendationRow, r))
        items = [vm_json(v, sorted(recs.get(v.vm_id, []), key=lambda r: r.key))
                 for v in rows]
        nxt = None
        if more and rows:
            last = rows[-1]
            nxt = base64.urlsafe_b64encode(f"{last.attention}|{last.vm_id}".encode()).decode()
    return {"items": items, "next_cursor": nxt}


def vm_detail(monitor: Monitor, ref: str) -> dict[str, Any]:
    """A VM with its recommendations, last 50 boots, last 50 alerts (and any older one
    still open, after them), and baseline variants."""
    with monitor.read() as s:
        vm = monitor.find_vm(s, ref)
        recs = s.scalars(select(RecommendationRow).where(
            RecommendationRow.vm_id == vm.vm_id).order_by(RecommendationRow.key)).all()
        out = vm_json(vm, recs)
        out["recommendations"] = [rec_json(r, full=True) for r in recs]
        out["quote_mark"] = quote_mark_json(vm)
        out["token_proof"] = token_proof_json(vm)
        boots = s.scalars(select(BootRow).where(BootRow.vm_id == vm.vm_id)
                          .order_by(BootRow.id.desc()).limit(51)).all()
        out["boots"] = [boot_json(b) for b in boots[:50]]
        # the newest 50 only: say so (found in an audit: older boots vanished unsaid);
        # each stays reachable at /boots/{id}
        out["boots_truncated"] = len(boots) > 50
        # the newest 50, and every open one (at most one per cause) however old: an
        # alert open since before 50 newer ones (a denial flapping while a deviation
        # stays open) fell out of the page, which then showed an unhealthy VM without it
        newest = list(s.scalars(select(AlertRow).where(AlertRow.vm_id == vm.vm_id)
                                .order_by(AlertRow.start_time.desc()).limit(50)).all())
        have = {a.id for a in newest}
        older_open = [a for a in s.scalars(select(AlertRow).where(
            AlertRow.vm_id == vm.vm_id, AlertRow.status.in_(_OPEN))
            .order_by(AlertRow.start_time.desc())).all() if a.id not in have]
        out["alerts"] = [alert_json(a, vm) for a in newest + older_open]
        cond = [BaselineRow.vm_id == vm.vm_id]
        if vm.group_name:
            cond.append(BaselineRow.group_name == vm.group_name)
        out["baselines"] = [baseline_json(b) for b in s.scalars(
            select(BaselineRow).where(or_(*cond)).order_by(BaselineRow.id)).all()]
        return out


def get_boot(monitor: Monitor, boot_id: int) -> dict[str, Any]:
    with monitor.read() as s:
        boot = s.get(BootRow, boot_id)
        doc = s.get(BootDocumentRow, boot_id)
        if boot is None or doc is None:
            raise NotFound(f"no boot {boot_id}")
        return boot_json(boot, events=doc.events)


def list_alerts(monitor: Monitor, *, status: str | None = None, vm: str | None = None,
                reason: str | None = None, severity: str | None = None, limit: int = 100,
                offset: int = 0) -> dict[str, Any]:
    """Alerts, newest first; ``status`` ``open`` means active or in progress, ``all``
    (or none) every status."""
    n = check_limit(limit)
    if not 0 <= offset <= 10_000_000:
        raise ProtocolError("query: 'offset' out of range")
    stmt = select(AlertRow, VmRow).join(VmRow, VmRow.vm_id == AlertRow.vm_id, isouter=True)
    if status in (None, "", "all"):
        pass
    elif status == "open":
        stmt = stmt.where(AlertRow.status.in_(_OPEN))
    else:
        try:
            stmt = stmt.where(AlertRow.status == AlertStatus(status).value)
        except ValueError:
            raise ProtocolError("query: 'status' must be all, open or one of "
                                + ", ".join(x.value for x in AlertStatus)) from None
    if reason:
        try:
            stmt = stmt.where(AlertRow.reason == AlertReason(reason).value)
        except ValueError:
            raise ProtocolError("query: 'reason' must be one of "
                                + ", ".join(x.value for x in AlertReason)) from None
    if severity:
        stmt = stmt.where(AlertRow.severity == severity)
    with monitor.read() as s:
        if vm:
            stmt = stmt.where(AlertRow.vm_id == monitor.find_vm(s, vm).vm_id)
        rows = s.execute(stmt.order_by(AlertRow.start_time.desc(), AlertRow.id)
                         .offset(offset).limit(n + 1)).all()
        # the page says whether more follow (it did not: 150 open alerts read as 100;
        # found in an audit); offsets shift when alerts change between pages
        more = len(rows) > n
        return {"items": [alert_json(a, v) for a, v in rows[:n]],
                "next_offset": offset + n if more else None}


def get_alert(monitor: Monitor, alert_id: str) -> dict[str, Any]:
    with monitor.read() as s:
        alert = s.get(AlertRow, alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return alert_json(alert, s.get(VmRow, alert.vm_id))


def list_recommendations(monitor: Monitor, *, vm: str | None = None, key: str | None = None,
                         code: str | None = None, limit: int = 1000,
                         after: str | None = None,
                         after_key: str | None = None) -> dict[str, Any]:
    """Per-VM recommendation rows (with the VM's name), ordered by VM id and key; ``after``
    (a VM id) continues with the next VM, and with ``after_key`` (the key of a page's last
    row) with that VM's next row.  A VM has several rows, so ``after`` alone skipped the
    rest of a VM whose rows a page boundary split; it is exact only with ``key`` given."""
    stmt = select(RecommendationRow, VmRow.name).join(
        VmRow, VmRow.vm_id == RecommendationRow.vm_id, isouter=True)
    if key:
        stmt = stmt.where(RecommendationRow.key == key)
    if code:
        stmt = stmt.where(RecommendationRow.code == code)
    if after and after_key:
        stmt = stmt.where(tuple_(RecommendationRow.vm_id, RecommendationRow.key)
                          > tuple_(after, after_key))
    elif after:
        stmt = stmt.where(RecommendationRow.vm_id > after)
    elif after_key:
        raise ProtocolError("query: 'after_key' needs 'after' (the VM id of the same row)")
    with monitor.read() as s:
        if vm:
            stmt = stmt.where(RecommendationRow.vm_id == monitor.find_vm(s, vm).vm_id)
        rows = s.execute(stmt.order_by(RecommendationRow.vm_id, RecommendationRow.key)
                         .limit(check_limit(limit))).all()
        return {"items": [{**rec_json(r, full=True), "vm_name": name or ""}
                          for r, name in rows]}


def recommendation_groups(monitor: Monitor, *, key: str | None = None) -> list[dict[str, Any]]:
    """Each recommendation (or the one ``key``) across the fleet with how many VMs are
    in each status, most Unhealthy first."""
    groups: dict[str, dict[str, Any]] = {}
    stmt = select(RecommendationRow.key, RecommendationRow.name, RecommendationRow.severity,
                  RecommendationRow.code, func.count())
    if key:
        stmt = stmt.where(RecommendationRow.key == key)
    with monitor.read() as s:
        for k, name, severity, code, n in s.execute(
                stmt.group_by(RecommendationRow.key, RecommendationRow.name,
                          RecommendationRow.severity, RecommendationRow.code)):
            g = groups.setdefault(k, {"key": k, "name": name, "severity": severity,
                                      "Healthy": 0, "Unhealthy": 0, "NotApplicable": 0})
            g[str(code)] = g.get(str(code), 0) + int(n)
    return sorted(groups.values(), key=lambda g: (-g["Unhealthy"], g["name"]))


def agent_versions(monitor: Monitor) -> list[dict[str, Any]]:
    """Agent versions across the fleet (as the VMs last reported them), most VMs first."""
    with monitor.read() as s:
        rows = s.execute(select(VmRow.agent_version, VmRow.enabled, func.count())
                         .group_by(VmRow.agent_version, VmRow.enabled)).all()
    out: dict[str, dict[str, Any]] = {}
    for version, enabled, n in rows:
        v = out.setdefault(str(version), {"version": str(version), "vms": 0, "monitored": 0})
        v["vms"] += int(n)
        if enabled:
            v["monitored"] += int(n)
    return sorted(out.values(), key=lambda v: (-v["vms"], v["version"]))


def list_baselines(monitor: Monitor, vm: str | None = None, *, limit: int = 1000,
                   cursor: str | None = None) -> dict[str, Any]:
    """One page of baseline variants in id order; ``next_cursor`` for the next (None on
    the last).  The list used to stop at 1,000 with no cursor: a fleet has about one
    learned baseline per VM, so most were never listed (found in an audit)."""
    after = 0
    if cursor:
        if not cursor.isascii() or not cursor.isdigit() or int(cursor) > 2**31 - 1:
            raise ProtocolError("query: 'cursor' is not a cursor this monitor issued")
        after = int(cursor)
    with monitor.read() as s:
        stmt = select(BaselineRow).where(BaselineRow.id > after)
        if vm:
            v = monitor.find_vm(s, vm)
            cond = [BaselineRow.vm_id == v.vm_id]
            if v.group_name:
                cond.append(BaselineRow.group_name == v.group_name)
            stmt = stmt.where(or_(*cond))
        rows = s.scalars(stmt.order_by(BaselineRow.id).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [baseline_json(b) for b in rows],
                "next_cursor": str(rows[-1].id) if more else None}


def list_suppressions(monitor: Monitor) -> dict[str, Any]:
    with monitor.read() as s:
        rows = s.scalars(select(SuppressionRow).order_by(SuppressionRow.id)).all()
        return {"items": [
            {"id": r.id, "vm_id": r.vm_id, "group": r.group_name, "reason": r.reason,
             "note": r.note, "created_by": r.created_by} for r in rows]}
