"""A bug below the edge (any exception outside the BootwatchError tree) is still answered
with an MAA error body and an incident id that the JSON log line carries too."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from bootwatch.service.app import create_app
from bootwatch.service.settings import Settings
from bootwatch.service.state import bootstrap


def test_unexpected_exception_is_an_maa_500(
    tmp_path: Any, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, insecure_http=True, rate_limit_per_second=0)
    app = create_app(settings, state=bootstrap(settings))

    async def boom() -> None:
        raise RuntimeError("secret-looking detail 0123")

    # the real app and its edge; only this route is the test's own (the "bug")
    app.add_api_route("/boom", boom, methods=["GET"])
    with caplog.at_level(logging.ERROR), h.ThreadServer(app) as server:
        r = httpx.get(f"http://127.0.0.1:{server.port}/boom", timeout=10)
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "InternalError"
    assert r.headers["x-ms-error-code"] == "InternalError"
    assert "secret-looking" not in r.text
    incident = err["message"].split("incident ")[1].split(")")[0]
    logged = [rec for rec in caplog.records if getattr(rec, "incident", None) == incident]
    assert logged and logged[0].error == "RuntimeError"
    assert "secret-looking" not in logged[0].getMessage()
