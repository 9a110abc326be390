"""The monitor alone as an ASGI app: ``create_monitor_app(container)``.

Serves the JSON API under ``/api/v1`` with its OpenAPI document at
``/api/v1/openapi.json``, the dashboard under ``/ui``, ``/metrics``, ``/healthz``
and ``/readyz``.  The embedded server (``bootwatch.embedded``) mounts the same routers
into the service instead, whose own ``/healthz`` and ``/readyz`` then answer.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bootwatch.errors import BootwatchError, StorageError
from bootwatch.monitor.api import (
    ERROR_RESPONSES,
    complete_openapi,
    extra_routers,
    monitor_router,
    problem,
)
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.ui import ui_router
from bootwatch.service.collector import settle_collector
from bootwatch.service.db import Database
from bootwatch.service.logs import get_logger

__all__ = ["create_monitor_app"]

#: /readyz's answers in the OpenAPI document: 200 ``{"status": "ready"}``, or the 503 error
#: body (with Retry-After) every route answers while the database is away
_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the database answers", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"status": {"const": "ready"}},
        "required": ["status"]}}}},
    503: ERROR_RESPONSES[503],
}


class _MonitorApp(FastAPI):
    """FastAPI with the monitor's own error answers in its OpenAPI document."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = complete_openapi(FastAPI.openapi(self))
        return self.openapi_schema


def create_monitor_app(container: MonitorContainer) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container.start()
        collector = settle_collector()  # what start-up made stays: see service/collector.py
        try:
            yield
        finally:
            collector.release()
            container.stop()

    app = _MonitorApp(title="bootwatch monitor", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json", lifespan=lifespan)
    app.include_router(monitor_router(container))
    app.include_router(ui_router(container))
    for extra in extra_routers(container):
        app.include_router(extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem(400, "InvalidParameter", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidOperation")
        return problem(exc.status_code, code, f"{request.method} {request.url.path}: "
                       f"{exc.detail}")

    @app.exception_handler(BootwatchError)
    async def _bw(request: Request, exc: BootwatchError) -> JSONResponse:
        return problem(400, "InvalidParameter", str(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex
        get_logger().error("monitor bug", extra={"incident": incident,
                                                 "reason": f"{exc.__class__.__name__}: {exc}"})
        return problem(500, "InternalError", f"internal error (incident {incident}); the "
                       "monitor's log has the details")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(container.metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    database = Database(container.engine)

    @app.get("/readyz", responses=_READY_RESPONSES)
    def readyz() -> JSONResponse:
        """Ready while the database answers, as the service's ``/readyz`` (what ``bootwatch
        service wait`` and load balancers poll); live (``/healthz``) is not enough for them."""
        try:
            database.ping()
        except StorageError as exc:
            return problem(503, "ServiceUnavailable", f"the monitor is not ready: {exc}")
        return JSONResponse({"status": "ready"})

    return app
