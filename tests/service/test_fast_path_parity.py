"""One code path (issue 10, item 3): ``POST /attest/AzureGuest`` is answered by a small ASGI
handler in front of FastAPI; this test mounts the very same handler function as an
ordinary FastAPI route and proves that both answer every error case alike (status, MAA
error code, message, the headers that matter), through the same prefix and edge
middleware, on the real app from ``create_app``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import Response

from bootwatch.service.app import create_app
from bootwatch.service.attestation import REQUEST_ID_HEADER, attest_azureguest
from bootwatch.service.settings import Settings

GENERAL = "/attest/AzureGuestThroughFastAPI"
Q = "?api-version=2020-10-01"


def _general_router() -> APIRouter:
    r = APIRouter()

    @r.post(GENERAL)
    async def general(request: Request) -> Response:
        status, payload, request_id = await attest_azureguest(request)
        return Response(payload, status_code=status, media_type="application/json",
                        headers={REQUEST_ID_HEADER: request_id})

    return r


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("empty api-version", "POST", {"query": "?api-version="}, b"{}"),
    ("unknown provider", "POST", {"prefix": "/providers/ghost"}, b"{}"),
    ("not JSON", "POST", {}, b"\xff\xfe not json"),
    ("empty body", "POST", {}, b""),
    ("JSON but not a request", "POST", {}, b'{"draft": 1}'),
    ("a request without evidence", "POST", {}, b'{"AttestationInfo": "e30"}'),
    ("too large", "POST", {}, b"x" * 5000),
    ("wrong method", "GET", {}, b""),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fast_path_and_fastapi_route_answer_alike(case: Any, tmp_path: Path) -> None:
    _, method, where, body = case
    settings = Settings(data_dir=tmp_path, insecure_http=True, rate_limit_per_second=0,
                        max_body_bytes=1000)
    app = create_app(settings)
    app.include_router(_general_router())

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8443") as client:
            out = []
            for path in ("/attest/AzureGuest", GENERAL):
                url = where.get("prefix", "") + path + where.get("query", Q)
                out.append(await client.request(method, url, content=body))
            return out

    try:
        fast, general = asyncio.run(both())
    finally:
        app.state.bw.close()
    assert fast.status_code == general.status_code, (fast.text, general.text)
    assert fast.status_code >= 400
    f, g = fast.json()["error"], general.json()["error"]
    assert f["code"] == g["code"]
    assert f["message"].replace(GENERAL, "/attest/AzureGuest") == g["message"].replace(
        GENERAL, "/attest/AzureGuest")
    for header in ("x-ms-error-code", "allow", "retry-after", "content-type"):
        assert fast.headers.get(header) == general.headers.get(header), header
    # a recorded verdict names its record on both paths (each its own id)
    assert (REQUEST_ID_HEADER in fast.headers) == (REQUEST_ID_HEADER in general.headers)
