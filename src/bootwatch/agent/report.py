"""Deliver health reports to the monitor: ``POST {monitor_url}/api/v1/reports``.

The monitor answers 202 ``{"report_id", "stored"}`` (``stored: false`` is a
duplicate: the report id was seen, which is success for the agent), 400
``{"error": {"code", "message"}}`` naming the bad field (the agent must not
resend that body; 413 and 422 are read the same way), 429/503 with
``Retry-After`` (the daemon backs off).  Anything else, and every network
failure, is a :class:`~bootwatch.errors.TransportError` naming the hop: a 401,
403, 404 or 407 comes from a proxy or a wrong URL, not from the report, so the
report stays pending and goes once the path is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootwatch.agent.transport import TlsContexts, Transport
from bootwatch.errors import ServiceError, TransportError
from bootwatch.protocol.health import HealthReport, encode_health_report

__all__ = ["REPORTS_PATH", "Delivery", "MonitorClient"]

REPORTS_PATH = "/api/v1/reports"

#: the answers that refuse the report's body itself (it is never sent again)
BODY_REFUSED = frozenset({400, 413, 422})


@dataclass(frozen=True)
class Delivery:
    """The monitor took the report (``stored`` False: it already had this report id)."""

    report_id: str
    stored: bool


class MonitorClient:
    """One monitor, one connection pool."""

    def __init__(self, base_url: str, *, ca: Path | None = None, proxy: str | None = None,
                 timeout: float = 15.0, tls: TlsContexts | None = None) -> None:
        self._t = Transport(base_url, ca=ca, proxy=proxy, timeout=timeout, tls=tls)

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> MonitorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, report: HealthReport) -> Delivery:
        return self.send_body(encode_health_report(report))

    def send_body(self, body: bytes) -> Delivery:
        """POST an encoded report; ServiceError when the monitor refuses this body
        (:data:`BODY_REFUSED`), TransportError for every other failure."""
        resp = self._t.send("POST", REPORTS_PATH, content=body,
                            headers={"Content-Type": "application/json"})
        if resp.status_code == 202:
            try:
                obj = resp.json()
                return Delivery(str(obj["report_id"]), bool(obj["stored"]))
            except (ValueError, KeyError, TypeError):
                raise TransportError(
                    f"POST {self._t.url(REPORTS_PATH)} answered 202 without "
                    '{"report_id", "stored"}', step="protocol", target=self._t.origin,
                ) from None
        if resp.status_code in BODY_REFUSED:
            code, message = "", resp.text[:300]
            try:
                err = resp.json()["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                pass
            raise ServiceError(f"the monitor refused the report: {message}",
                               status=resp.status_code, error_code=code or "refused")
        raise self._t.status_error(resp)

