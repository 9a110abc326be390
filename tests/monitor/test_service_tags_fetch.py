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
from collections.abc import Iterator

import pytest
from bwissuer import FloodingServer

from bootwatch.errors import ConfigError
from bootwatch.monitor.egress import fetch_service_tags
from bootwatch.net.servicetag import build_document, encode_document, parse_prefix


@pytest.fixture
def document() -> bytes:
    doc = build_document("AzureAttestation", (parse_prefix("10.0.0.7/32", field="p"),), 1,
                         fqdns=("attest.example",), ports=(443,))
    return json.dumps(encode_document(doc)).encode()


@pytest.fixture
def service(document: bytes) -> Iterator[FloodingServer]:
    s = FloodingServer(document, opening=b'{"values": [')
    yield s
    s.close()


def test_a_real_document_is_read(service: FloodingServer) -> None:
    doc = fetch_service_tags(service.url)
    assert [t.name for t in doc.values] == ["AzureAttestation"]
    assert doc.fqdns == ("attest.example",)


def test_an_endless_answer_is_cut_off_at_the_limit(service: FloodingServer) -> None:
    service.flood = True
    with pytest.raises(ConfigError, match="larger than 1048576 bytes") as err:
        fetch_service_tags(service.url)
    assert f"{service.url}/servicetags" in str(err.value)
    # what left the server before the monitor hung up: the limit and the sockets' buffers
    assert service.done.wait(10), "the server never finished its answer"
    assert service.sent[0] < 16 * 1024 * 1024, service.sent
