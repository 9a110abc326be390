"""The agent's health report (agent -> monitor, ``POST /api/v1/reports``).

Azure's guest attestation extension reports ``HealthStatus`` (Healthy /
Unhealthy / PlatformError), the attestation token, a status message, a
platform error message and the attestation URI (maa-protocol section 3).
bootwatch keeps those keys verbatim, so a report reads like the extension's,
and adds what the monitor needs to track a VM across boots and upgrades: the
VM id, the agent version, the boot counter, a report id (ingestion is
idempotent on it) and, for a platform error, the network hop that failed and
its target, so the monitor can recommend the exact egress rule.

The shape is shared by the agent (which builds it) and the monitor (which
decodes it); it is defined once, here.  Decoding is strict: every field is
checked for type and size and a bad one raises :class:`ProtocolError` naming
the field.  A decoded report is *claimed*, not verified: only the token, once
the monitor has verified it, can make a VM healthy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from bootwatch.errors import ProtocolError
from bootwatch.protocol.jsonread import read_json, text_problem

__all__ = [
    "MAX_REPORT_BYTES",
    "FailedHop",
    "HealthReport",
    "HealthStatus",
    "decode_health_report",
    "encode_health_report",
]

#: largest report body accepted (a token is ~2-4 KB; messages are bounded below)
MAX_REPORT_BYTES: Final = 64 * 1024
_MAX_TOKEN: Final = 32 * 1024
_MAX_TEXT: Final = 2048
_MAX_ID: Final = 128
_ID_RE: Final = re.compile(r"^[A-Za-z0-9._:@-]{1,128}\Z")


class HealthStatus(StrEnum):
    """Azure's ``HealthStatus`` values, spelled as the extension spells them."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    PLATFORM_ERROR = "PlatformError"


class FailedHop(StrEnum):
    """The network step that failed when the agent could not reach a service.

    The same names the agent's client and ``netcheck`` print, so an operator
    sees one vocabulary from the VM to the monitor's recommendation.
    """

    DNS = "dns"
    PROXY_CONNECT = "proxy_connect"
    TCP_CONNECT = "tcp_connect"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    TIMEOUT = "timeout"
    #: not a network hop: the TPM, the event log or the agent itself failed
    LOCAL = "local"


@dataclass(frozen=True)
class HealthReport:
    """One health report as the agent claims it.

    ``attestation_token`` is the compact JWS the service issued (after the
    agent unsealed it), or ``None``.  ``failed_hop`` and ``failed_target``
    are set only with :attr:`HealthStatus.PLATFORM_ERROR` when a network step
    failed.  ``time`` is the agent's clock (informational; the monitor stamps
    its own receive time).
    """

    report_id: str
    vm_id: str
    health_status: HealthStatus
    time: datetime
    agent_version: str
    boot_counter: int | None = None
    attestation_token: str | None = None
    attestation_status_message: str = ""
    platform_error_message: str = ""
    attestation_uri: str = ""
    failed_hop: FailedHop | None = None
    failed_target: str = ""


def encode_health_report(report: HealthReport) -> bytes:
    """The JSON body the agent posts (keys as Azure's extension names them)."""
    body: dict[str, Any] = {
        "ReportId": report.report_id,
        "VmId": report.vm_id,
        "HealthStatus": report.health_status.value,
        "Time": report.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "AgentVersion": report.agent_version,
        "BootCounter": report.boot_counter,
        "AttestationToken": report.attestation_token,
        "AttestationStatusMessage": report.attestation_status_message,
        "PlatformErrorMessage": report.platform_error_message,
        "AttestationUri": report.attestation_uri,
        "FailedHop": report.failed_hop.value if report.failed_hop else None,
        "FailedTarget": report.failed_target,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _text(obj: dict[str, Any], key: str, limit: int = _MAX_TEXT, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"health report: field '{key}' is required")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"health report: field '{key}' must be a string")
    if len(value) > limit:
        raise ProtocolError(f"health report: field '{key}' is longer than {limit} characters")
    problem = text_problem(value)
    if problem is not None:
        raise ProtocolError(f"health report: field '{key}' {problem}")
    return value


def _ident(obj: dict[str, Any], key: str) -> str:
    value = _text(obj, key, _MAX_ID, required=True)
    if not _ID_RE.fullmatch(value):
        raise ProtocolError(
            f"health report: field '{key}' must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
        )
    return value


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"health report: {name} is not valid JSON")


def decode_health_report(body: bytes) -> HealthReport:
    """Decode and check a report body; :class:`ProtocolError` names the bad field."""
    if len(body) > MAX_REPORT_BYTES:
        raise ProtocolError(f"health report: body is larger than {MAX_REPORT_BYTES} bytes")
    try:
        # the shared depth-limited reader: 64 levels at most, errors name line:column
        obj = read_json(body, parse_constant=_reject_constant)
    except ProtocolError as exc:
        raise ProtocolError(f"health report: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("health report: the body must be a JSON object")
    status_text = _text(obj, "HealthStatus", 32, required=True)
    try:
        status = HealthStatus(status_text)
    except ValueError:
        raise ProtocolError(
            "health report: field 'HealthStatus' must be one of "
            + ", ".join(s.value for s in HealthStatus)
        ) from None
    time_text = _text(obj, "Time", 40, required=True)
    try:
        when = datetime.fromisoformat(time_text.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError("health report: field 'Time' is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ProtocolError("health report: field 'Time' must carry a time zone (e.g. Z)")
    try:
        # kept in UTC, as encoded: an offset time at the edge of the calendar
        # (9999-12-31T23:59:59-01:00) has no UTC value and failed later, untyped
        when = when.astimezone(UTC)
    except OverflowError:
        raise ProtocolError("health report: field 'Time' is out of range in UTC") from None
    boot = obj.get("BootCounter")
    if boot is not None and (
        not isinstance(boot, int) or isinstance(boot, bool) or not 0 <= boot < 2**31
    ):
        # a TPM resetCount, kept in a 32-bit integer column by the monitor
        raise ProtocolError("health report: field 'BootCounter' must be an integer in "
                            f"0..{2**31 - 1}")
    token = obj.get("AttestationToken")
    if token is not None:
        token = _text(obj, "AttestationToken", _MAX_TOKEN)
        if token.count(".") != 2:
            raise ProtocolError("health report: field 'AttestationToken' is not a compact JWS")
    hop_text = obj.get("FailedHop")
    hop: FailedHop | None = None
    if hop_text is not None:
        if not isinstance(hop_text, str):
            raise ProtocolError("health report: field 'FailedHop' must be a string")
        try:
            hop = FailedHop(hop_text)
        except ValueError:
            raise ProtocolError(
                "health report: field 'FailedHop' must be one of "
                + ", ".join(h.value for h in FailedHop)
            ) from None
    if hop is not None and status is not HealthStatus.PLATFORM_ERROR:
        raise ProtocolError("health report: field 'FailedHop' is only for a PlatformError")
    failed_target = _text(obj, "FailedTarget", 512)
    if failed_target and hop is None:
        # the target names the failed network step: without one the monitor would keep
        # (and recommend egress for) a target no step failed on
        raise ProtocolError("health report: field 'FailedTarget' is only for a PlatformError "
                            "with a 'FailedHop'")
    if status is HealthStatus.HEALTHY and not token:
        raise ProtocolError("health report: a Healthy report must carry 'AttestationToken'")
    return HealthReport(
        report_id=_ident(obj, "ReportId"),
        vm_id=_ident(obj, "VmId"),
        health_status=status,
        time=when,
        agent_version=_text(obj, "AgentVersion", 64, required=True),
        boot_counter=boot,
        attestation_token=token or None,
        attestation_status_message=_text(obj, "AttestationStatusMessage"),
        platform_error_message=_text(obj, "PlatformErrorMessage"),
        attestation_uri=_text(obj, "AttestationUri"),
        failed_hop=hop,
        failed_target=failed_target,
    )
