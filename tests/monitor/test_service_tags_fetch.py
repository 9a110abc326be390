"""How much of the service's answer a separate monitor reads for its egress advice.

``bootwatch monitor run --service-url URL`` reads the service's ``GET /servicetags`` once
at start.  It read the whole answer (``resp.content``) and only then compared its size with
the 1 MiB limit, so an endless answer held the start-up and grew the monitor's memory for
as long as it kept coming.  Now it is read as a stream (``bootwatch.httpread``) and
dropped at the limit, with a ConfigError naming the URL; a real document still decodes.
A real HTTP server on loopback sends the answers and counts what it got out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from bwwebhook import serve_http, stop_http

from bootwatch.errors import ConfigError
from bootwatch.monitor.egress import fetch_service_tags
from bootwatch.net.servicetag import build_document, encode_document, parse_prefix

FLOOD = 64 * 1024 * 1024
_CHUNK = b" " * (64 * 1024)


class _Service:
    def __init__(self, document: bytes) -> None:
        self.flood = False
        self.sent: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if not outer.flood:
                    self.send_header("Content-Length", str(len(document)))
                    self.end_headers()
                    self.wfile.write(document)
                    return
                self.end_headers()  # no Content-Length: nothing to refuse up front
                sent = 0
                try:
                    self.wfile.write(b'{"values": [')
                    while sent < FLOOD:
                        self.wfile.write(_CHUNK)
                        sent += len(_CHUNK)
                except OSError:
                    pass  # the monitor hung up
                finally:
                    outer.sent.append(sent)

            def log_message(self, *args: Any) -> None:
                pass

        self.http, self.url = serve_http(Handler, threaded=True)


@pytest.fixture
def document() -> bytes:
    doc = build_document("AzureAttestation", (parse_prefix("10.0.0.7/32", field="p"),), 1,
                         fqdns=("attest.example",), ports=(443,))
    return json.dumps(encode_document(doc)).encode()


@pytest.fixture
def service(document: bytes) -> Iterator[_Service]:
    s = _Service(document)
    yield s
    stop_http(s.http)


def test_a_real_document_is_read(service: _Service) -> None:
    doc = fetch_service_tags(service.url)
    assert [t.name for t in doc.values] == ["AzureAttestation"]
    assert doc.fqdns == ("attest.example",)


def test_an_endless_answer_is_cut_off_at_the_limit(service: _Service) -> None:
    service.flood = True
    with pytest.raises(ConfigError, match="larger than 1048576 bytes") as err:
        fetch_service_tags(service.url)
    assert f"{service.url}/servicetags" in str(err.value)
    # what left the server before the monitor hung up: the limit and the sockets' buffers
    deadline = time.monotonic() + 10
    while not service.sent and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.sent and service.sent[0] < 16 * 1024 * 1024, service.sent
