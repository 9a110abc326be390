"""A VM's state and recommendations from its stored columns (pure).

One function for every path that changes a VM (the general ingestion, reports,
the sweep, operator actions and the batch fast path, ``monitor/fastpath.py``):
the fast path decides that an event changes nothing but a VM's last-seen
columns by evaluating exactly what the general path would, so the two cannot
drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bootwatch.errors import ConfigError, InputError
from bootwatch.monitor.db import as_utc
from bootwatch.monitor.health import StateFacts, compute_state, platform_error_current
from bootwatch.monitor.models import VmRow
from bootwatch.monitor.recommendations import (
    RecommendationResult,
    VmFacts,
    evaluate_recommendations,
)
from bootwatch.protocol.health import FailedHop, HealthStatus
from bootwatch.protocol.monitor import SecurityType, Toggle, VmState
from bootwatch.protocol.outcome import Verdict

__all__ = ["Evaluations", "VmEvaluation", "evaluate_vm", "recommendations_digest"]

#: recommendation results and their digest by the facts they were evaluated from; one
#: per transaction (VMs with the same facts, a healthy fleet's, share one evaluation)
Evaluations = dict[VmFacts, tuple[tuple[RecommendationResult, ...], str]]


@dataclass(frozen=True)
class VmEvaluation:
    state: VmState
    reason: str
    results: tuple[RecommendationResult, ...]
    #: what the VM's recommendation rows hold after a refresh with ``results``
    digest: str


def recommendations_digest(results: Sequence[RecommendationResult]) -> str:
    """What a VM's recommendation rows hold after a refresh with these results."""
    return hashlib.sha256("\x1e".join(
        f"{r.definition.key}\x1f{r.code.value}\x1f{r.cause}\x1f{r.description}\x1f"
        f"{r.remediation}" for r in results).encode()).hexdigest()


def evaluate_vm(vm: VmRow, *, integrity: tuple[str, ...], last_boot_matched: bool,
                now: datetime, stale_after: timedelta,
                egress_text: Callable[[FailedHop, str], str] | None,
                evaluated: Evaluations) -> VmEvaluation:
    """The state, its reason and the recommendations of ``vm`` as its columns stand;
    ``integrity``: the reasons of its open integrity alerts."""
    facts = StateFacts(
        enabled=vm.enabled,
        last_outcome_at=as_utc(vm.last_outcome_at) if vm.last_outcome_at else None,
        last_verdict=Verdict(vm.last_verdict) if vm.last_verdict else None,
        last_reason=vm.last_reason,
        last_boot_matched=last_boot_matched,
        open_integrity_alerts=integrity,
        last_alive_at=as_utc(vm.last_alive_at) if vm.last_alive_at else None,
        last_report_at=as_utc(vm.last_report_at) if vm.last_report_at else None,
        last_report_platform_error=vm.last_report_status == HealthStatus.PLATFORM_ERROR,
        last_platform_error=vm.last_report_message,
        now=now,
        stale_after=stale_after,
    )
    state, reason = compute_state(facts)
    hop = FailedHop(vm.last_failed_hop) if vm.last_failed_hop else None
    egress = ""
    if hop is not None and egress_text is not None:
        try:
            egress = egress_text(hop, vm.last_failed_target)
        except (ConfigError, InputError) as exc:
            egress = f"(no rules generated: {exc})"
    report_status = HealthStatus(vm.last_report_status) if vm.last_report_status else None
    if report_status is HealthStatus.PLATFORM_ERROR and not platform_error_current(facts):
        # an attestation reached the service after the agent reported it could not (a
        # one-shot `agent attest`, or the report of that cycle still on its way): the
        # agent and egress recommendations it made Unhealthy are over with it
        report_status = HealthStatus.HEALTHY
    rec_facts = VmFacts(
        enabled=vm.enabled, state=state, security_type=SecurityType(vm.security_type),
        secure_boot_setting=Toggle(vm.secure_boot), vtpm_setting=Toggle(vm.vtpm),
        measured_secure_boot=vm.measured_secure_boot, is_windows=vm.is_windows,
        last_report_status=report_status,
        last_failed_hop=hop, last_failed_target=vm.last_failed_target,
        last_platform_error=vm.last_report_message, open_integrity_alerts=len(integrity),
        dbx_missing=vm.dbx_missing, dbx_current=vm.dbx_current,
        aik_not_after=as_utc(vm.aik_not_after) if vm.aik_not_after else None,
        now=now, egress_rules_text=egress,
    )
    known = evaluated.get(rec_facts)
    if known is None:
        results = evaluate_recommendations(rec_facts)
        known = evaluated[rec_facts] = (results, recommendations_digest(results))
    return VmEvaluation(state, reason, known[0], known[1])
