"""uvicorn's HTTP protocol, answering unparseable requests with an MAA error body.

A request the HTTP parser itself rejects (a negative or non-numeric
``Content-Length``, a body longer than its ``Content-Length`` on a kept-alive
connection, whose surplus bytes then do not parse as the next request, a broken
request line or header) never reaches the ASGI app: uvicorn answers it from the
protocol with ``400`` and the plain text "Invalid HTTP request received.".
Every answer of this service must carry ``{"error": {"code", "message"}}`` and
``x-ms-error-code``, so these protocol classes override exactly that one method,
``send_400_response``, of uvicorn's two HTTP/1.1 implementations (httptools,
the default with ``uvicorn[standard]``, and h11) and write the MAA body instead.
Everything else about them is uvicorn's.

``server.uvicorn_config`` and the multi-worker start pass :data:`HTTP_PROTOCOL`
(an import string, so worker processes can load it too).
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: the MAA error code of a request the HTTP parser refuses
MALFORMED_CODE = "InvalidParameter"

#: seconds a stopping server (SIGTERM) waits for requests in flight before it closes
#: their connections and stops anyway.  Why: uvicorn waits for ever by default, and a
#: client that sent half a request and went silent (its host gone, a network cut) held
#: ``service run`` and ``monitor run`` until the supervisor's SIGKILL.  An answered
#: request is durable before it is answered, so one cut here is retried by its client.
GRACEFUL_SHUTDOWN_SECONDS = 5


def malformed_response(reason: str) -> bytes:
    """The whole HTTP/1.1 400 answer (status line, headers, MAA body) for ``reason``."""
    message = (
        f"malformed HTTP request ({reason.rstrip('.')}): check the request line, the "
        "headers and that Content-Length is a non-negative number equal to the body's "
        "length; the connection is closed"
    )
    body = json.dumps({"error": {"code": MALFORMED_CODE, "message": message}}).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "content-type: application/json; charset=utf-8\r\n"
        f"x-ms-error-code: {MALFORMED_CODE}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii")
    return head + body


def _write_and_close(protocol: Any, msg: str) -> None:
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return
    transport.write(malformed_response(msg))
    transport.close()


class MaaH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; parser errors answered with an MAA error body."""

    def send_400_response(self, msg: str) -> None:
        _write_and_close(self, msg)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HTTP_PROTOCOL = "bootwatch.service.httpproto:MaaH11Protocol"
else:

    class MaaHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol; parser errors answered with an MAA error body."""

        def send_400_response(self, msg: str) -> None:
            _write_and_close(self, msg)

    #: the protocol class the service runs under (uvicorn ``http=`` import string)
    HTTP_PROTOCOL = "bootwatch.service.httpproto:MaaHttpToolsProtocol"


__all__ = ["GRACEFUL_SHUTDOWN_SECONDS", "HTTP_PROTOCOL", "MALFORMED_CODE", "MaaH11Protocol",
           "malformed_response"]
