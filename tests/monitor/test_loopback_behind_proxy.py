"""Open reads on loopback, when a reverse proxy may sit in front of the monitor.

``bootwatch monitor run`` (and ``bootwatch server``) run under uvicorn with its proxy
headers on: a peer it trusts as a proxy (127.0.0.1 and ::1 by default, anything with
``FORWARDED_ALLOW_IPS=*``) has its ``X-Forwarded-For`` taken as the client.  A proxy on
the monitor's host that passes a client's own ``X-Forwarded-For: 127.0.0.1`` on (HAProxy's
``option forwardfor if-none`` adds one only when there is none) therefore made that remote
client 127.0.0.1, and a proxy that names its client in ``Forwarded`` (HAProxy's ``option
forwarded``) or ``X-Real-IP`` (a common nginx set-up), headers uvicorn does not read, left
every remote client looking like the proxy's 127.0.0.1.  Both got the fleet's reads with no
token.  A request carrying any of these headers came through a proxy, so it is not a local
tool talking to the monitor directly: it needs a token.

Real uvicorn serving the real monitor app on loopback (``bwservers.serve_monitor``); the
client plays the proxy by sending what such a proxy sends.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from bwservers import serve_monitor

ADMIN = "loopback-proxy-admin-token-0123456789"
PROXY_HEADERS = (
    {"X-Forwarded-For": "127.0.0.1"},  # a client's own header, passed on unchanged
    {"X-Forwarded-For": "::1"},
    {"Forwarded": "for=198.51.100.7;proto=https"},  # RFC 7239: uvicorn does not read it
    {"X-Real-IP": "198.51.100.7"},  # nginx's usual header: uvicorn does not read it
)


def test_a_forwarded_request_gets_no_open_reads(tmp_path: Path) -> None:
    with serve_monitor(tmp_path, ADMIN) as (url, _), httpx.Client(base_url=url,
                                                                  timeout=10) as client:
        # a local tool talking to the monitor directly reads without a token
        assert client.get("/api/v1/summary").status_code == 200
        for headers in PROXY_HEADERS:
            r = client.get("/api/v1/summary", headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert "proxy" in r.json()["error"]["message"], r.text
            # a token still reads through a proxy
            r = client.get("/api/v1/summary",
                           headers={**headers, "Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200, (headers, r.text)
