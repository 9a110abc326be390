"""The ASGI app: :func:`create_app` wires everything in one visible place.

Nothing happens at import time.  ``create_app(settings)`` opens the database
(running the Alembic migrations), loads the at-rest key, creates the shared
providers, and assembles routes, error handling and middleware.  The
attestation routes (``bootwatch.service.attestation``) are registered in
``create_app`` next to the other routers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bootwatch.errors import BootwatchError
from bootwatch.service import attestation
from bootwatch.service.auth import OidcVerifier
from bootwatch.service.errors import ApiError, maa_code_for
from bootwatch.service.logs import get_logger
from bootwatch.service.metrics import Metrics
from bootwatch.service.middleware import EdgeMiddleware
from bootwatch.service.providers import ProviderPrefixMiddleware
from bootwatch.service.records import purge_expired_evidence
from bootwatch.service.routes import maa_router, ops_router
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState

PURGE_INTERVAL_SECONDS = 3600.0


def maa_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"x-ms-error-code": code, **(headers or {})},
    )


def _install_error_handlers(app: FastAPI) -> None:
    log = get_logger()

    @app.exception_handler(BootwatchError)
    async def _bootwatch_error(request: Request, exc: BootwatchError) -> JSONResponse:
        status, code = maa_code_for(exc)
        if status >= 500:
            log.error("request failed", extra={"error": exc.code, "reason": str(exc)})
        headers = exc.headers if isinstance(exc, ApiError) else None
        return maa_error(status, code, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return maa_error(400, "InvalidParameter", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidOperation")
        return maa_error(
            exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
        )


def create_app(settings: Settings, *, state: ServiceState | None = None) -> FastAPI:
    """Build the service for ``settings`` (one call per worker process)."""
    state = state or ServiceState.open(settings)
    metrics = Metrics.create()
    state.records.metrics = metrics  # the record writer counts overflows and failures

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def purge_loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(purge_expired_evidence, state)
                except BootwatchError as exc:
                    get_logger().warning("evidence purge failed", extra={"reason": str(exc)})
                await asyncio.sleep(PURGE_INTERVAL_SECONDS)

        task = asyncio.create_task(purge_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            state.close()

    app = FastAPI(
        title="bootwatch attestation service",
        version=settings.service_version,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.bw = state
    app.state.bw_metrics = metrics
    app.state.bw_oidc = OidcVerifier(settings) if settings.oidc_issuer else None
    _install_error_handlers(app)
    # attestation routes first: FastAPI tries routes in order and nearly every request
    # is an attestation (their paths overlap no other route, so the order is free)
    app.include_router(attestation.router())
    app.include_router(ops_router())
    app.include_router(maa_router())
    # outermost last: prefix stripping, then the edge (limits, metrics, logs)
    app.add_middleware(EdgeMiddleware, settings=settings, metrics=metrics)
    app.add_middleware(ProviderPrefixMiddleware)
    return app
