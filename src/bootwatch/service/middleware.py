"""The edge of every request: service-version header, body-size limit, rate
limit, request metrics and one JSON log line.

A pure ASGI middleware (no per-request task switching) so it stays cheap at
thousands of requests per second.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bootwatch.errors import BootwatchError
from bootwatch.service.errors import ApiError, maa_code_for
from bootwatch.service.logs import get_logger
from bootwatch.service.ratelimit import TokenBuckets, retry_after_header

if TYPE_CHECKING:
    from bootwatch.service.metrics import Metrics
    from bootwatch.service.settings import Settings

__all__ = [
    "SCOPE_LOG",
    "STORAGE_RETRY_AFTER",
    "UNLIMITED_PATHS",
    "EdgeMiddleware",
    "PayloadTooLarge",
    "bootwatch_error_response",
    "error_body",
    "internal_error_response",
    "maa_error",
]

#: scope key under which a handler leaves extra fields for the request's log line
SCOPE_LOG = "bootwatch.log"
#: never rate limited (probes and scrapers must get through under load)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def error_body(code: str, message: str) -> bytes:
    """The one MAA error body, ``{"error": {"code", "message"}}`` (every error answer,
    from the edge middleware or a handler, is rendered here)."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def maa_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An MAA error answer: :func:`error_body` and ``x-ms-error-code``."""
    return Response(
        error_body(code, message),
        status_code=status,
        media_type="application/json",
        headers={"x-ms-error-code": code, **(headers or {})},
    )


#: Retry-After (seconds) of a 503 answered because the database is away
STORAGE_RETRY_AFTER = 5


def bootwatch_error_response(exc: BootwatchError) -> Response:
    """The answer to a library error (FastAPI's exception handler and the attestation
    fast path both use this one translation); server-side failures are logged.

    A server-side library error (a database error above all) is answered with an
    incident id, its text going to the log only: that text is the database's error with
    the SQL, and the client has no use for the service's internals.  An ``ApiError``'s
    message is written for the client and is answered as it is."""
    status, code = maa_code_for(exc)
    message = str(exc)
    if status >= 500:
        incident = uuid.uuid4().hex[:16]
        get_logger().error("request failed", extra={
            "incident": incident, "error": exc.code, "reason": message})
        if not isinstance(exc, ApiError):
            message = (f"the service cannot answer now ({exc.code}, incident {incident}); "
                       "the service log has the details")
    headers = exc.headers if isinstance(exc, ApiError) else None
    if status == 503 and not headers:  # the database is away: say when to come back
        headers = {"Retry-After": str(STORAGE_RETRY_AFTER)}
    return maa_error(status, code, message, headers)


def internal_error_response(exc: Exception) -> Response:
    """The MAA answer to a bug (an exception outside the BootwatchError tree).

    Logs an incident id with the exception's type only (its text may carry request
    data) and answers 500 ``InternalError`` naming the same id.
    """
    incident = uuid.uuid4().hex[:16]
    get_logger().error(
        "unhandled error", extra={"incident": incident, "error": type(exc).__name__}
    )
    return maa_error(
        500, "InternalError",
        f"internal error (incident {incident}); the service log has the details",
    )


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "PayloadTooLarge", f"request body exceeds the limit of {limit} bytes")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.buckets = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.version = settings.service_version.encode()
        self.log = get_logger()

    async def _reject(
        self, send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]]
    ) -> None:
        body = error_body(code, message)
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-ms-error-code", code.encode()),
            (b"x-ms-maa-service-version", self.version),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        client = (scope.get("client") or ("unknown", 0))[0]
        path: str = scope["path"]
        status_holder: dict[str, Any] = {"status": 500}
        limit = self.settings.max_body_bytes

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["started"] = True
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-ms-maa-service-version", self.version))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self.buckets.enabled and path not in UNLIMITED_PATHS:
                wait = self.buckets.take(client)
                if wait > 0:
                    status_holder["status"] = 429
                    await self._reject(
                        send,
                        429,
                        "TooManyRequests",
                        f"rate limit of {self.settings.rate_limit_per_second:g} requests/s "
                        f"(burst {self.settings.rate_limit_burst}) exceeded for {client}",
                        [(b"retry-after", retry_after_header(wait).encode())],
                    )
                    return
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                status_holder["status"] = 413
                await self._reject(
                    send,
                    413,
                    "PayloadTooLarge",
                    f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                    [(b"connection", b"close")],
                )
                return
            received = 0

            async def receive_wrapper() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise PayloadTooLarge(limit)
                return message

            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            # The last line of defence: a bug below must still answer with an MAA error
            # body (not a bare 500).  FastAPI's own handler (internal_error_response)
            # has already answered and logged what reached it; it re-raises, as
            # Starlette's ServerErrorMiddleware does, and that is swallowed here.
            if status_holder.get("started"):
                if status_holder["status"] == 500:
                    return
                raise
            status_holder["status"] = 500
            await internal_error_response(exc)(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - start
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"
            status = status_holder["status"]
            self.metrics.request(scope["method"], route, status).inc()
            self.metrics.latency_of(route).observe(elapsed)
            if self.log.isEnabledFor(logging.INFO):
                extra = {
                    "method": scope["method"],
                    "path": scope.get("bootwatch.prefix", "") + path,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": client,
                    "provider": scope.get("bootwatch.provider"),
                }
                handler_fields = scope.get(SCOPE_LOG)
                if handler_fields:
                    extra.update(handler_fields)
                self.log.info("request", extra=extra)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
