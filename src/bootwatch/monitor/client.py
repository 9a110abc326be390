"""A small client of the monitor's JSON API (used by the CLI and the demo).

Errors come back as :class:`~bootwatch.errors.ServiceError` (the monitor
answered with an error body: its code and message) or
:class:`~bootwatch.errors.TransportError` (it could not be reached), so the
CLI edge maps them to exit codes like every other command.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import httpx

from bootwatch.errors import ConfigError, ServiceError, TransportError
from bootwatch.tlsverify import tls_verify

__all__ = ["MonitorClient"]


def _clear_text_off_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


class MonitorClient:
    def __init__(self, url: str, *, token: str = "", ca: str = "",
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        if token and _clear_text_off_loopback(self.url):
            # found in review: the admin token went to any http:// address
            raise ConfigError(f"the monitor token would cross the network in clear text to "
                              f"{self.url}: use https:// (plain HTTP is for loopback only)")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                    verify=tls_verify(ca))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MonitorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._client.request(method, "/api/v1" + path, **kw)
        except httpx.HTTPError as exc:
            raise TransportError(f"monitor at {self.url} unreachable: {exc}",
                                 step="http") from exc
        if resp.status_code >= 400:
            code, message = "HTTP", resp.text[:500]
            try:
                err = resp.json().get("error", {})
                code, message = str(err.get("code", code)), str(err.get("message", message))
            except (ValueError, AttributeError):
                pass
            raise ServiceError(f"monitor: {message}", status=resp.status_code, error_code=code)
        try:
            return resp.json()
        except ValueError:  # a portal, a proxy's page, another service (a traceback before)
            kind = resp.headers.get("content-type", "no content type")[:60]
            raise ServiceError(f"monitor at {self.url} answered {resp.status_code} with a body "
                               f"that is not JSON ({kind}): is it the monitor?",
                               status=resp.status_code, error_code="NotJson") from None

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._request("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body or {})

    def post_report(self, body: bytes) -> Any:
        """An agent's encoded health report (``protocol.health``), as agents post it."""
        return self._request("POST", "/reports", content=body,
                             headers={"Content-Type": "application/json"})

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def all_baselines(self, vm: str | None = None) -> list[dict[str, Any]]:
        """Every baseline variant (of ``vm``, or all), following the pagination."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get("/baselines", vm=vm, limit=1000, cursor=cursor)
            out.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def all_vms(self, **filters: Any) -> list[dict[str, Any]]:
        """Every VM matching the filters (follows the pagination)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get("/vms", limit=1000, cursor=cursor, **filters)
            out.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out
