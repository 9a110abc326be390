"""Loopback HTTP servers for tests: a plain handler server, and a webhook receiver that
checks each delivery's signature (the monitor's ``X-Bootwatch-Signature``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any


def serve_http(handler: type[BaseHTTPRequestHandler], *,
               threaded: bool = False) -> tuple[HTTPServer, str]:
    """``handler`` served on 127.0.0.1 (a free port) from a daemon thread: (server, base
    URL).  ``threaded``: one thread per request (a handler that may block)."""
    server = (ThreadingHTTPServer if threaded else HTTPServer)(("127.0.0.1", 0), handler)
    if threaded:
        server.daemon_threads = True  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def stop_http(server: HTTPServer) -> None:
    server.shutdown()
    server.server_close()


class WebhookReceiver:
    """Records each delivery whose signature checks (with ``_delivery_header``: its
    ``X-Bootwatch-Delivery``) and answers ``status``; a bad signature is counted and
    answered 400."""

    def __init__(self, secret: str, status: int = 204) -> None:
        self.secret = secret
        self.status = status
        self.deliveries: list[dict[str, Any]] = []
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(outer.secret.encode(), body,
                                            hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, self.headers.get("X-Bootwatch-Signature", "")):
                    outer.bad_signatures += 1
                    self.send_response(400)
                else:
                    doc = json.loads(body)
                    doc["_delivery_header"] = self.headers.get("X-Bootwatch-Delivery")
                    doc["_received_at"] = time.monotonic()
                    outer.deliveries.append(doc)
                    self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http, base = serve_http(Handler)
        self.url = f"{base}/hook"

    def close(self) -> None:
        stop_http(self.http)

    def wait_for(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.deliveries:
                if d["event"] == event:
                    return d
            time.sleep(0.1)
        raise AssertionError(f"no {event} webhook; got {[d['event'] for d in self.deliveries]}")
