"""Provisioning status and heartbeat in the Azure extension handler's file formats.

The status file is what the VM agent (waagent) reads from an extension and
shows as its instance view: a JSON list whose first element is::

    {"version": 1.0, "timestampUTC": "2026-12-02T22:00:00Z",
     "status": {"name": "GuestAttestation", "operation": "Enable",
                "status": "transitioning|success|error|warning", "code": 0,
                "formattedMessage": {"lang": "en-US", "message": "..."}}}

bootwatch uses ``transitioning`` before the first cycle, ``success`` for a
healthy cycle, ``warning`` for an unhealthy VM (the provider refused it: the
extension itself works), an AIK certificate near expiry, or a report the
monitor did not take, and ``error`` when the agent could not attest at all
(the message names the hop and the target, e.g. ``GuestAttestation
provisioning failed: TLS handshake with https://attest.example:443 failed:
certificate verify failed (unable to get local issuer certificate)``).

The heartbeat file (``[{"version": 1.0, "heartbeat": {"status": "ready",
"code": 0, "formattedMessage": ...}}]``) is rewritten on every cycle and
while the daemon waits, so a supervisor can tell a hung agent from an idle one.
Both files are replaced atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

__all__ = ["EXTENSION_NAME", "ProvisioningStatus", "StatusReport", "write_heartbeat",
           "write_status"]

EXTENSION_NAME: Final = "GuestAttestation"
_MAX_MESSAGE: Final = 2048


class ProvisioningStatus(StrEnum):
    TRANSITIONING = "transitioning"
    SUCCESS = "success"
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class StatusReport:
    status: ProvisioningStatus
    message: str
    code: int = 0
    operation: str = "Enable"


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(text: str) -> dict[str, str]:
    return {"lang": "en-US", "message": text[:_MAX_MESSAGE]}


def write_status(path: Path, report: StatusReport, *, now: datetime | None = None) -> None:
    body: list[dict[str, Any]] = [{
        "version": 1.0,
        "timestampUTC": _stamp(now),
        "status": {
            "name": EXTENSION_NAME,
            "operation": report.operation,
            "status": report.status.value,
            "code": report.code,
            "formattedMessage": _message(report.message),
        },
    }]
    _replace(path, body)


def write_heartbeat(path: Path, message: str, *, ready: bool = True,
                    now: datetime | None = None) -> None:
    body = [{
        "version": 1.0,
        "timestampUTC": _stamp(now),
        "heartbeat": {
            "status": "ready" if ready else "notready",
            "code": 0 if ready else 1,
            "formattedMessage": _message(message),
        },
    }]
    _replace(path, body)


def _replace(path: Path, body: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
