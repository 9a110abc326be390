"""The ASGI app: :func:`create_app` wires everything in one visible place.

Nothing happens at import time.  ``create_app(settings)`` builds the service's
container (``service/state.py: bootstrap``: migrations, at-rest key, stores, the
record writer and event relay, shared providers) unless it is given one, and
assembles routes, error handling and middleware.  The
attestation routes (``bootwatch.service.attestation``) are registered in
``create_app`` next to the other routers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bootwatch.errors import BootwatchError
from bootwatch.service import attestation, enroll
from bootwatch.service.collector import settle_collector
from bootwatch.service.events import sink_from_settings
from bootwatch.service.hosts import AllowedHosts, ProviderPrefixMiddleware
from bootwatch.service.logs import get_logger
from bootwatch.service.middleware import (
    EdgeMiddleware,
    bootwatch_error_response,
    internal_error_response,
    maa_error,
)
from bootwatch.service.openapi import complete_schema
from bootwatch.service.records import purge_expired_evidence
from bootwatch.service.routes import maa_router, ops_router
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState, bootstrap

__all__ = [
    "PURGE_INTERVAL_SECONDS",
    "AppExtensions",
    "ServiceApp",
    "create_app",
]

PURGE_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class AppExtensions:
    """What a composition root adds to the service without the service knowing it:
    the embedded server (``bootwatch.embedded``) passes the monitor's routers and its
    start/stop hooks here (its sink and metrics go into the container it builds)."""

    routers: tuple[APIRouter, ...] = ()
    on_startup: tuple[Callable[[], None], ...] = ()
    on_shutdown: tuple[Callable[[], None], ...] = ()
    mounts: tuple[tuple[str, ASGIApp], ...] = ()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BootwatchError)
    async def _bootwatch_error(request: Request, exc: BootwatchError) -> Response:
        return bootwatch_error_response(exc)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        return internal_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return maa_error(400, "InvalidParameter", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidOperation")
        return maa_error(  # keeps Starlette's headers (Allow on a 405)
            exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}",
            dict(exc.headers or {}),
        )


class ServiceApp(FastAPI):
    """FastAPI behind the service's own front: provider prefix, the edge (limits,
    metrics, logs) and the ``POST /attest/AzureGuest`` fast path.

    Nearly every request is an attestation; it is answered by a small ASGI handler
    (:class:`~bootwatch.service.attestation.AzureGuestFastPath`) without FastAPI's
    routing, dependency solving and exception-middleware layers, which cost ~0.2 ms
    of a ~2 ms attestation.  Everything else goes through FastAPI as before, behind
    the same prefix and edge middleware (one instance each: one rate limiter).
    """

    front: ASGIApp | None = None

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document plus the fast path, provider prefixes and MAA errors
        (built once, on the first GET /openapi.json)."""
        if self.openapi_schema is None:
            self.openapi_schema = complete_schema(FastAPI.openapi(self))
        return self.openapi_schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if self.front is None:
            await self._fastapi(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self, scope, receive, send)


def create_app(
    settings: Settings,
    *,
    state: ServiceState | None = None,
    extensions: AppExtensions | None = None,
) -> FastAPI:
    """Build the service for ``settings`` (one call per worker process)."""
    ext = extensions or AppExtensions()
    AllowedHosts.parse(settings.allowed_hosts)  # a malformed --allowed-host stops start-up
    if state is None:
        # the container: migrations, shared providers, the sink --events names (the
        # embedded server builds its own container around its monitor's sink)
        state = bootstrap(settings, sink=sink_from_settings(settings))
    container = state

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def purge_loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(purge_expired_evidence, container.db)
                except BootwatchError as exc:
                    get_logger().warning("evidence purge failed", extra={"reason": str(exc)})
                await asyncio.sleep(PURGE_INTERVAL_SECONDS)

        for start in ext.on_startup:
            start()
        container.start()
        collector = settle_collector()  # what start-up made stays: see service/collector.py
        task = asyncio.create_task(purge_loop())
        try:
            yield
        finally:
            collector.release()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            container.drain()  # every answered record committed, its event handed over
            for stop in ext.on_shutdown:
                stop()
            container.close()

    app = ServiceApp(
        title="bootwatch attestation service",
        version=settings.service_version,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.bw = container  # read only through service/deps.py
    _install_error_handlers(app)
    app.include_router(attestation.router())
    app.include_router(enroll.router())
    app.include_router(ops_router())
    app.include_router(maa_router())
    for extra in ext.routers:
        app.include_router(extra)
    for path, sub in ext.mounts:
        app.mount(path, sub)
    # outermost first: prefix stripping, the edge (limits, metrics, logs), then the
    # AzureGuest fast path in front of FastAPI
    app.front = ProviderPrefixMiddleware(
        EdgeMiddleware(
            attestation.AzureGuestFastPath(app._fastapi), settings=settings,
            metrics=container.metrics,
        )
    )
    return app
