"""JSON shapes of the monitor's rows: what the API returns and the CLI prints.

The keys the issue names are exact (``vm list --json``: ``vm_id``, ``name``,
``state``, ``monitored``, ``open_alerts``, ``recommendations``; ``alert list
--json``: ``id``, ``vm_id``, ``reason``, ``severity``, ``status``, ``count``,
``diff``); alerts also carry Defender's field names where they fit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bootwatch.monitor.db import as_utc
from bootwatch.monitor.freshness import mark_of
from bootwatch.monitor.models import AlertRow, BaselineRow, BootRow, RecommendationRow, VmRow

__all__ = [
    "ALERT_SCHEMA",
    "BASELINE_SCHEMA",
    "BOOT_DETAIL_SCHEMA",
    "BOOT_SCHEMA",
    "REC_FULL_SCHEMA",
    "VM_DETAIL_SCHEMA",
    "VM_SCHEMA",
    "alert_json",
    "baseline_json",
    "boot_json",
    "items_schema",
    "obj_schema",
    "quote_mark_json",
    "rec_json",
    "token_proof_json",
    "vm_json",
]

# --- JSON Schemas of these shapes (the OpenAPI document's 200 answers) -----------------
# Kept beside the functions that make the shapes, so a change to one is seen in the other;
# schemathesis checks every answer against them (tests/monitor/test_openapi_monitor.py).

_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": ["string", "null"]}
_I: dict[str, Any] = {"type": "integer"}
_NI: dict[str, Any] = {"type": ["integer", "null"]}
_B: dict[str, Any] = {"type": "boolean"}
_TIME: dict[str, Any] = {"type": "string",
                         "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
_NTIME: dict[str, Any] = {"anyOf": [_TIME, {"type": "null"}]}


def obj_schema(properties: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """An object with these properties, all of them present unless ``required`` is False."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = sorted(properties)
    return out


def items_schema(item: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    """``{"items": [item, ...]}`` (plus ``more`` properties), the list answers' shape."""
    return obj_schema({"items": {"type": "array", "items": item}, **more})


REC_SCHEMA = obj_schema({"key": _S, "name": _S, "severity": _S,
                         "status": obj_schema({"code": _S, "cause": _S})})
REC_FULL_SCHEMA = obj_schema({
    "key": _S, "name": _S, "severity": _S, "vm_id": _S, "remediation": _S,
    "status": obj_schema({"code": _S, "cause": _S, "description": _S,
                          "first_evaluated": _TIME, "status_changed": _TIME}),
})
VM_SCHEMA = obj_schema({
    "vm_id": _S, "name": _S, "group": _S, "provider": _S, "state": _S, "state_reason": _S,
    "state_since": _TIME, "monitored": _B, "security_type": _S, "secure_boot": _S,
    "vtpm": _S, "open_alerts": _I, "last_attestation": _NTIME, "last_verdict": _NS,
    "last_reason": _S, "last_report": _NTIME, "last_report_status": _NS,
    "last_report_verified": _B, "agent_version": _S, "boot_counter": _NI, "last_boot": _NI,
    "recommendations": {"type": "array", "items": REC_SCHEMA},
})
_BOOT_PROPS: dict[str, Any] = {
    "id": _I, "vm_id": _S, "first_seen": _TIME, "last_seen": _TIME, "verdict": _S,
    "reason": _S, "baseline": _NI, "reset_count": _NI, "agent_version": _S,
}
BOOT_SCHEMA = obj_schema(_BOOT_PROPS)
BOOT_DETAIL_SCHEMA = obj_schema({**_BOOT_PROPS, "pcr_bank": _S, "pcrs": {},
                                 "events": {"type": "array"}})
ALERT_SCHEMA = obj_schema({
    "id": _S, "vm_id": _S, "vm_name": _S, "reason": _S, "severity": _S, "status": _S,
    "count": _I, "title": _S, "description": _S, "boot": _NI, "diff": {},
    "last_seen": _TIME, "status_changed_by": _S, "alertType": _S, "alertDisplayName": _S,
    "startTimeUtc": _TIME, "endTimeUtc": _NTIME, "correlationKey": _S,
    "remediationSteps": {"type": "array"}, "extendedProperties": {"type": "object"},
    "compromisedEntity": _S,
})
BASELINE_SCHEMA = obj_schema({
    "id": _I, "vm_id": _NS, "group": _NS, "label": _S, "origin": _S, "source_boot": _NI,
    "pcrs": {}, "created_at": _TIME, "created_by": _S,
})
VM_DETAIL_SCHEMA = obj_schema({
    **VM_SCHEMA["properties"],
    "recommendations": {"type": "array", "items": REC_FULL_SCHEMA},
    "boots": {"type": "array", "items": BOOT_SCHEMA},
    #: more boots than the newest 50 listed exist (each at /boots/{id})
    "boots_truncated": {"type": "boolean"},
    "alerts": {"type": "array", "items": ALERT_SCHEMA},
    "baselines": {"type": "array", "items": BASELINE_SCHEMA},
    #: the newest verified quote seen (monitor/freshness.py), null before the first
    "quote_mark": {"anyOf": [obj_schema({"aik": _S, "reset_count": _I, "clock_ms": _I,
                                         "answered_at": _TIME}), {"type": "null"}]},
    #: token proof (docs/monitor.md): the latest attestation's token came back in a
    #: verified report; else since when permits have come without one
    "token_proof": obj_schema({"proven": _B, "unproven_since": _NTIME}),
})


def _t(value: datetime | None) -> str | None:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def rec_json(row: RecommendationRow, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": row.key, "name": row.name, "severity": row.severity,
        "status": {"code": row.code, "cause": row.cause},
    }
    if full:
        out["vm_id"] = row.vm_id
        out["status"].update({
            "description": row.description,
            "first_evaluated": _t(row.first_evaluated),
            "status_changed": _t(row.status_changed),
        })
        out["remediation"] = row.remediation
    return out


def quote_mark_json(vm: VmRow) -> dict[str, Any] | None:
    """The VM's quote mark (see monitor/freshness.py), or None before its first quote."""
    mark = mark_of(vm)
    if mark is None:
        return None
    return {"aik": mark.aik, "reset_count": mark.reset_count, "clock_ms": mark.clock,
            "answered_at": _t(mark.at)}


def token_proof_json(vm: VmRow) -> dict[str, Any]:
    """Whether the VM opened its latest attestation's token (see docs/monitor.md)."""
    return {"proven": bool(vm.last_proven), "unproven_since": _t(vm.unproven_since)}


def vm_json(vm: VmRow, recs: Sequence[RecommendationRow] = ()) -> dict[str, Any]:
    return {
        "vm_id": vm.vm_id,
        "name": vm.name,
        "group": vm.group_name,
        "provider": vm.provider,
        "state": vm.state,
        "state_reason": vm.state_reason,
        "state_since": _t(vm.state_since),
        "monitored": vm.enabled,
        "security_type": vm.security_type,
        "secure_boot": vm.secure_boot,
        "vtpm": vm.vtpm,
        "open_alerts": vm.open_alerts,
        "last_attestation": _t(vm.last_outcome_at),
        "last_verdict": vm.last_verdict,
        "last_reason": vm.last_reason,
        "last_report": _t(vm.last_report_at),
        "last_report_status": vm.last_report_status,
        "last_report_verified": vm.last_report_verified,
        "agent_version": vm.agent_version,
        "boot_counter": vm.boot_counter,
        "last_boot": vm.last_boot_id,
        "recommendations": [rec_json(r) for r in recs],
    }


def alert_json(alert: AlertRow, vm: VmRow | None = None) -> dict[str, Any]:
    diff = json.loads(alert.diff)
    extended = json.loads(alert.extended)
    return {
        "id": alert.id,
        "vm_id": alert.vm_id,
        "vm_name": vm.name if vm is not None else "",
        "reason": alert.reason,
        "severity": alert.severity,
        "status": alert.status,
        "count": alert.count,
        "title": alert.title,
        "description": alert.description,
        "boot": alert.boot_id,
        "diff": diff,
        "last_seen": _t(alert.last_seen),
        "status_changed_by": alert.status_changed_by,
        # Defender's alert fields (Microsoft.Security alerts, 2022-01-01)
        "alertType": alert.alert_type,
        "alertDisplayName": alert.title,
        "startTimeUtc": _t(alert.start_time),
        "endTimeUtc": _t(alert.end_time),
        "correlationKey": alert.correlation_key,
        "remediationSteps": json.loads(alert.remediation),
        "extendedProperties": {"reason": alert.reason, **extended},
        "compromisedEntity": (vm.name or vm.vm_id) if vm is not None else alert.vm_id,
    }


def boot_json(boot: BootRow, *, events: str | None = None) -> dict[str, Any]:
    """A boot; with its events document (JSON text), the full form (PCRs and events)."""
    out: dict[str, Any] = {
        "id": boot.id,
        "vm_id": boot.vm_id,
        "first_seen": _t(boot.first_seen),
        "last_seen": _t(boot.last_seen),
        "verdict": boot.verdict,
        "reason": boot.reason,
        "baseline": boot.baseline_id,
        "reset_count": boot.reset_count,
        "agent_version": boot.agent_version,
    }
    if events is not None:
        out["pcr_bank"] = boot.pcr_bank
        out["pcrs"] = json.loads(boot.pcrs)
        out["events"] = json.loads(events)
    return out


def baseline_json(base: BaselineRow) -> dict[str, Any]:
    return {
        "id": base.id,
        "vm_id": base.vm_id,
        "group": base.group_name,
        "label": base.label,
        "origin": base.origin,
        "source_boot": base.source_boot_id,
        "pcrs": json.loads(base.pcrs),
        "created_at": _t(base.created_at),
        "created_by": base.created_by,
    }
