"""The monitor's JSON API under ``/api/v1`` (a FastAPI router).

Authentication: every write needs ``Authorization: Bearer <admin token>``;
reads need an admin or reader token, except from a loopback client when
``open_reads_on_loopback`` is set (the default); a request a proxy forwarded (it
carries ``X-Forwarded-For``, ``Forwarded`` or ``X-Real-IP``) is never a loopback
client, whatever address it claims (see ``_loopback``).  ``POST /api/v1/reports`` is
open to agents: what an unauthenticated report can change is limited by the
monitor (it can record a platform error, never clear an alert).  Errors are
``{"error": {"code", "message"}}`` bodies with a status that says whose fault
it is (400 bad input naming the field, 401/403, 404, 409).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from bootwatch.errors import BootwatchError, InputError, ProtocolError
from bootwatch.monitor import queries
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.core import Monitor, MonitorError, NotFound
from bootwatch.monitor.poison import ingest_isolating
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.views import (
    ALERT_SCHEMA,
    BASELINE_SCHEMA,
    BOOT_DETAIL_SCHEMA,
    REC_FULL_SCHEMA,
    VM_DETAIL_SCHEMA,
    VM_SCHEMA,
    items_schema,
    obj_schema,
)
from bootwatch.protocol.errorbody import ERROR_BODY_SCHEMA
from bootwatch.protocol.health import decode_health_report
from bootwatch.protocol.monitor import (
    AlertReason,
    AlertStatus,
    SecurityType,
    Toggle,
)
from bootwatch.protocol.outcome import MAX_OUTCOME_BYTES, outcome_from_json
from bootwatch.service.logs import get_logger

__all__ = [
    "API_PREFIX",
    "ERROR_RESPONSES",
    "Principal",
    "admin_dependency",
    "complete_openapi",
    "extra_routers",
    "monitor_router",
    "token_principal",
]

API_PREFIX = "/api/v1"
_MAX_ADMIN_BODY = 256 * 1024
_MAX_BATCH = 1000
T = TypeVar("T")

# --- the OpenAPI description of what FastAPI cannot see ---------------------------
# Errors are {"error": {"code", "message"}} with x-ms-error-code (never FastAPI's 422), and
# the POST routes read their bodies themselves; without these, the document would promise
# 200/422 only and no bodies, and a client generated from it would be wrong (schemathesis
# against the document found both: tests/monitor/test_openapi_monitor.py).



def _error_doc(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {"x-ms-error-code": {"description": "the error code of the body",
                                                   "schema": {"type": "string"}}}
    if retry_after:
        headers["Retry-After"] = {"description": "seconds to wait before sending again",
                                  "schema": {"type": "integer"}}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": ERROR_BODY_SCHEMA}},
    }


#: statuses every /api/v1 operation may answer with an error body
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_doc("bad input (InvalidParameter) or an operation the state refuses "
                    "(InvalidOperation); the message names the field"),
    401: _error_doc("no bearer token, or one this monitor does not know"),
    403: _error_doc("a read-only token on a write"),
    404: _error_doc("no such VM, boot, alert, baseline or suppression"),
    409: _error_doc("the change was already made"),
    503: _error_doc("the monitor cannot answer now (its database is away or behind, or it "
                    "is stopping); send again after Retry-After seconds", retry_after=True),
}


def _json_body(properties: dict[str, Any], *, required: tuple[str, ...] = (),
               body_required: bool = True, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"requestBody": {"required": body_required, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


def _str_prop(limit: int = 128) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit}


def _enum_prop(cls: type[Any]) -> dict[str, Any]:
    return {"type": "string", "enum": [m.value for m in cls]}


#: ids of boots, baselines and suppressions are 32-bit database integers: a larger number
#: is refused as input (a 400 naming it) before the database refuses it (a 503)
MAX_ROW_ID = 2**31 - 1

_ENABLE_BODY = _json_body(
    {"name": _str_prop(), "group": _str_prop(), "security_type": _enum_prop(SecurityType),
     "secure_boot": _enum_prop(Toggle), "vtpm": _enum_prop(Toggle),
     "provider": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"}},
    body_required=False, description="inventory settings to record (all optional)")
_OUTCOMES_BODY = _json_body(
    {"events": {"type": "array", "maxItems": _MAX_BATCH, "items": {"type": "object"}}},
    description="one outcome event (protocol/outcome.py), or {\"events\": [...]}")
_REPORT_BODY = _json_body({}, description="an agent health report (protocol/health.py)")
_APPROVE_BODY = _json_body(
    {"vm": _str_prop(), "boot": {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID},
     "group": {"type": "boolean"},
     "label": _str_prop()}, required=("vm",))
_SUPPRESSION_BODY = _json_body(
    {"vm": _str_prop(), "group": _str_prop(), "reason": _enum_prop(AlertReason),
     "note": _str_prop(2000)})
#: the dry run's look-back: a century bounds it far from datetime's range (a larger
#: ``since_seconds`` underflowed the cut-off time: a 500 schemathesis found)
MAX_SINCE_SECONDS = 100 * 365 * 86400
_DRY_RUN_BODY = _json_body(
    {"policy": _str_prop(200_000),
     "since_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_SINCE_SECONDS}},
    required=("policy",))


#: no text in the database holds NUL (PostgreSQL cannot): refused with the other bad input
NO_NUL = r"^[^\x00]*$"
_MAX_TEXT = 128


def _id_path(what: str) -> Any:
    return PathParam(ge=1, le=MAX_ROW_ID, description=f"the {what}'s id")


def _text_query(limit: int = _MAX_TEXT) -> Any:
    return Query(default=None, max_length=limit, pattern=NO_NUL)


def _ref_path(what: str) -> Any:
    return PathParam(max_length=_MAX_TEXT, pattern=NO_NUL, description=what)


def _ok(schema: dict[str, Any], description: str = "the answer",
        status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": description,
                     "content": {"application/json": {"schema": schema}}}}


_INT: dict[str, Any] = {"type": "integer"}
_STR: dict[str, Any] = {"type": "string"}
_NSTR: dict[str, Any] = {"type": ["string", "null"]}
_COUNTS: dict[str, Any] = {"type": "object", "additionalProperties": _INT}
_SUMMARY = obj_schema({"vms": _COUNTS, "open_alerts": _COUNTS,
                       "recommendations": {"type": "array"}}, required=False)
_VMS = items_schema(VM_SCHEMA, next_cursor=_NSTR)
_ALERTS = items_schema(ALERT_SCHEMA, next_offset={"type": ["integer", "null"]})
_RECS = items_schema({**REC_FULL_SCHEMA, "properties": {**REC_FULL_SCHEMA["properties"],
                                                        "vm_name": _STR}})
_GROUPS = items_schema(obj_schema({"key": _STR, "name": _STR, "severity": _STR,
                                   "Healthy": _INT, "Unhealthy": _INT,
                                   "NotApplicable": _INT}))
_AGENTS = obj_schema({"versions": {"type": "array", "items": obj_schema(
    {"version": _STR, "vms": _INT, "monitored": _INT})}})
_SUPPRESSIONS = items_schema(obj_schema({"id": _INT, "vm_id": _NSTR, "group": _NSTR,
                                         "reason": _NSTR, "note": _STR, "created_by": _STR}))
_STORED = obj_schema({"stored": {"type": "array", "items": {"type": "boolean"}},
                      "refused": {"type": "array", "items": _STR}})
_REPORTED = obj_schema({"report_id": _STR, "stored": {"type": "boolean"},
                        "verified": {"type": "boolean"}, "why_unverified": _STR})
_DRY_RUN = obj_schema({"boots": {"type": "array", "items": {"type": "object"}},
                       "would_deny": _INT, "vms_denied": {"type": "array", "items": _STR}})


def complete_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """The monitor's document without FastAPI's validation answers: a request FastAPI
    cannot validate is a 400 ``InvalidParameter`` here (monitor/app.py), never a 422."""
    for methods in doc.get("paths", {}).values():
        for op in methods.values():
            if isinstance(op, dict):
                op.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if "components" in doc and not schemas:
        doc["components"].pop("schemas", None)
        if not doc["components"]:
            doc.pop("components")
    return doc


class Principal(str):
    """Who made a request, as stored in ``changed_by`` fields (never the token)."""


#: Retry-After (seconds) of a 503: the database is away or behind, or the monitor is
#: stopping.  Agents and the service's HTTP sink wait this long before sending again
#: (tests/scale/test_durability.py stops the monitor's PostgreSQL under report load).
RETRY_AFTER_UNAVAILABLE = 5


def problem(status: int, code: str, message: str) -> JSONResponse:
    headers = {"x-ms-error-code": code}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def _error_response(exc: BootwatchError) -> JSONResponse:
    if isinstance(exc, NotFound):
        return problem(404, "NotFound", str(exc))
    if isinstance(exc, MonitorError):
        return problem(409 if "already" in str(exc) else 400, "InvalidOperation", str(exc))
    if isinstance(exc, InputError):
        return problem(400, "InvalidParameter", str(exc))
    # the details (a database error's SQL and parameters among them) go to the log only
    incident = uuid.uuid4().hex
    get_logger().error("monitor unavailable", extra={
        "incident": incident, "reason": f"{exc.__class__.__name__}: {exc}"})
    return problem(503, "ServiceUnavailable", f"the monitor cannot answer now ({exc.code}, "
                   f"incident {incident}); the monitor's log has the details")


#: headers by which a reverse proxy names the client it forwards for
_PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _forwarded(request: Request) -> bool:
    """Whether the request says it came through a proxy."""
    return any(name in request.headers for name in _PROXY_HEADERS)


def _loopback(request: Request) -> bool:
    """Whether the client is this host itself: a loopback peer no proxy forwarded for.

    Why the proxy headers count: uvicorn (proxy headers on, its default) takes the
    ``X-Forwarded-For`` of a peer it trusts as a proxy (127.0.0.1 by default, any peer
    with ``FORWARDED_ALLOW_IPS=*``) as the client, so a proxy on this host passing a
    remote client's own ``X-Forwarded-For: 127.0.0.1`` on made that client 127.0.0.1; and
    a proxy naming its client in ``Forwarded`` or ``X-Real-IP`` (which uvicorn ignores)
    left every remote client looking like the proxy's 127.0.0.1.  Open reads are for
    local tools talking to the monitor directly; a forwarded request needs a token.  A
    client address that is no IP (only a header can make one) is not loopback either.
    """
    if _forwarded(request):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _match(token: str, tokens: tuple[str, ...]) -> int | None:
    found = None
    for i, candidate in enumerate(tokens):
        if hmac.compare_digest(token.encode(), candidate.encode()):
            found = i
    return found


def token_principal(settings: MonitorSettings, token: str) -> tuple[Principal, bool] | None:
    """Who a bearer token is and whether it may write (admin), or None when it is no
    token of this monitor; constant-time over every configured token."""
    i = _match(token, settings.admin_tokens)
    if i is not None:
        return Principal(f"admin-token-{i + 1}"), True
    j = _match(token, settings.reader_tokens)
    if j is not None:
        return Principal(f"reader-token-{j + 1}"), False
    return None


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


async def _body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"body: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("body: must be a JSON object")
    return obj


def _opt_str(obj: dict[str, Any], key: str, limit: int = 128) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"body: field '{key}' must be a string of at most {limit} characters")
    if "\x00" in value:
        raise ProtocolError(f"body: field '{key}' must not contain NUL characters")
    return value


def _enum(cls: type[Any], obj: dict[str, Any], key: str) -> Any:
    value = _opt_str(obj, key, 32)
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ProtocolError(f"body: field '{key}' must be one of {allowed}") from None


def admin_dependency(settings: Any) -> Callable[[Request], Principal]:
    """A raising FastAPI dependency for routers built elsewhere (agent releases): the
    same admin-token rule as this router's writes."""
    from fastapi import HTTPException

    def dep(request: Request) -> Principal:
        token = _bearer(request)
        i = _match(token, settings.admin_tokens) if token else None
        if i is None:
            raise HTTPException(status_code=401 if not token else 403,
                                detail="an admin bearer token is required")
        return Principal(f"admin-token-{i + 1}")

    return dep


def extra_routers(container: MonitorContainer) -> tuple[APIRouter, ...]:
    """Routers beside the core API: agent releases, when release keys are configured."""
    if container.releases is None:
        return ()
    from bootwatch.monitor.releases import releases_router

    return (releases_router(container.releases, container.monitor,
                            admin_dependency(container.settings)),)


def monitor_router(container: MonitorContainer) -> APIRouter:
    """The ``/api/v1`` routes over ``container`` (no module-level state)."""
    settings = container.settings
    monitor: Monitor = container.monitor
    router = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)

    def reader(request: Request) -> Principal:
        token = _bearer(request)
        if token:
            i = _match(token, settings.admin_tokens)
            if i is not None:
                return Principal(f"admin-token-{i + 1}")
            j = _match(token, settings.reader_tokens)
            if j is not None:
                return Principal(f"reader-token-{j + 1}")
            raise _Denied(401, "the bearer token is not valid for this monitor")
        if settings.open_reads_on_loopback and _loopback(request):
            return Principal("loopback")
        if settings.open_reads_on_loopback and _forwarded(request):
            raise _Denied(401, "reads need a bearer token (Authorization: Bearer ...): "
                          "this request came through a proxy (X-Forwarded-For, Forwarded "
                          "or X-Real-IP), and only a loopback client talking to the "
                          "monitor directly reads without one")
        raise _Denied(401, "reads need a bearer token (Authorization: Bearer ...)")

    def admin(request: Request) -> Principal:
        token = _bearer(request)
        if not token:
            raise _Denied(401, "writes need an admin bearer token (Authorization: Bearer ...)")
        i = _match(token, settings.admin_tokens)
        if i is None:
            if _match(token, settings.reader_tokens) is not None:
                raise _Denied(403, "this token is read-only")
            raise _Denied(401, "the bearer token is not valid for this monitor")
        return Principal(f"admin-token-{i + 1}")

    def guard(dep: Callable[[Request], Principal]) -> Callable[[Request], Principal | Response]:
        def run(request: Request) -> Principal | Response:
            try:
                return dep(request)
            except _Denied as exc:
                return problem(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden",
                               exc.message)
        return run

    Reader = Depends(guard(reader))  # noqa: N806 - FastAPI dependency objects
    Admin = Depends(guard(admin))  # noqa: N806
    VM_REF = _ref_path("a VM id (any case) or its unique name")  # noqa: N806
    ALERT_ID = _ref_path("an alert id")  # noqa: N806

    def call(who: Principal | Response, fn: Callable[[], T]) -> Response:
        """The answer of ``fn`` as JSON; its result is built of JSON types already, so it
        is rendered as it is (FastAPI's ``jsonable_encoder`` walked every value of a
        100-VM page again: about a third of the request's time)."""
        if isinstance(who, Response):
            return who
        try:
            result = fn()
        except BootwatchError as exc:
            return _error_response(exc)
        return result if isinstance(result, Response) else JSONResponse(result)

    # --- fleet ----------------------------------------------------------------

    @router.get("/summary", responses=_ok(_SUMMARY))
    def summary(who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.summary(monitor))

    @router.get("/vms", responses=_ok(_VMS))
    def list_vms(
        state: str | None = _text_query(), group: str | None = _text_query(),
        provider: str | None = _text_query(), q: str | None = _text_query(),
        limit: int = 100, cursor: str | None = _text_query(512),
        who: Principal | Response = Reader,
    ) -> Any:
        return call(who, lambda: queries.list_vms(monitor, state=state, group=group,
                                            provider=provider, q=q, limit=limit,
                                            cursor=cursor))

    @router.get("/vms/{ref}", responses=_ok(VM_DETAIL_SCHEMA))
    def get_vm(ref: str = VM_REF, who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.vm_detail(monitor, ref))

    @router.post("/vms/{ref}/enable", openapi_extra=_ENABLE_BODY,
                 responses=_ok(VM_DETAIL_SCHEMA))
    async def enable(request: Request, ref: str = VM_REF,
                     who: Principal | Response = Admin) -> Any:
        if isinstance(who, Response):
            return who
        try:
            body = _json_object(await _body(request, _MAX_ADMIN_BODY))
            vm_id = monitor.enable(
                ref, name=_opt_str(body, "name"), group=_opt_str(body, "group"),
                security_type=_enum(SecurityType, body, "security_type"),
                secure_boot=_enum(Toggle, body, "secure_boot"),
                vtpm=_enum(Toggle, body, "vtpm"), provider=_opt_str(body, "provider"),
                by=who,
            )
        except BootwatchError as exc:
            return _error_response(exc)
        return get_vm(vm_id, who)

    @router.post("/vms/{ref}/disable", responses=_ok(VM_DETAIL_SCHEMA))
    def disable(ref: str = VM_REF, who: Principal | Response = Admin) -> Any:
        def run() -> Any:
            return get_vm(monitor.disable(ref, by=str(who)), who)
        return call(who, run)

    @router.post("/vms/{ref}/accept-vtpm-rollback", responses=_ok(VM_DETAIL_SCHEMA))
    def accept_vtpm_rollback(ref: str = VM_REF, who: Principal | Response = Admin) -> Any:
        def run() -> Any:
            return get_vm(monitor.accept_vtpm_rollback(ref, by=str(who)), who)
        return call(who, run)

    @router.get("/vms/{ref}/diff", responses=_ok({"type": "object"}))
    def vm_diff(ref: str = VM_REF,
                boot: int | None = Query(default=None, ge=1, le=MAX_ROW_ID),
                against: int | None = Query(default=None, ge=1, le=MAX_ROW_ID),
                who: Principal | Response = Reader) -> Any:
        return call(who, lambda: monitor.diff(ref, boot_id=boot, against=against))

    @router.get("/boots/{boot_id}", responses=_ok(BOOT_DETAIL_SCHEMA))
    def get_boot(boot_id: int = _id_path("boot"), who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.get_boot(monitor, boot_id))

    # --- ingestion ------------------------------------------------------------

    @router.post("/outcomes", status_code=202, openapi_extra=_OUTCOMES_BODY,
                 responses=_ok(_STORED, "stored: one flag per event", 202))
    async def post_outcomes(request: Request, who: Principal | Response = Admin) -> Any:
        if isinstance(who, Response):
            return who
        try:
            raw = await _body(request, MAX_OUTCOME_BYTES * 4)
            obj = _json_object(raw)
            items = obj.get("events") if "events" in obj else [obj]
            if not isinstance(items, list) or len(items) > _MAX_BATCH:
                raise ProtocolError(f"body: 'events' must be a list of at most {_MAX_BATCH}")
            events = []
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ProtocolError(f"body: events[{i}] must be an object")
                try:
                    events.append(outcome_from_json(item))
                except ProtocolError as exc:
                    raise ProtocolError(f"events[{i}]: {exc}") from None
            # an event the database refuses for good is left out (and logged) rather than
            # failing the request, which the service's HTTP sink would retry for ever
            stored, refused_ids = ingest_isolating(monitor, events)
        except BootwatchError as exc:
            return _error_response(exc)
        container.webhooks.kick()
        return JSONResponse({"stored": stored, "refused": refused_ids}, status_code=202)

    @router.post("/reports", status_code=202, openapi_extra=_REPORT_BODY,
                 responses=_ok(_REPORTED, "the report was read", 202))
    async def post_report(request: Request) -> Any:
        try:
            from bootwatch.protocol.health import MAX_REPORT_BYTES

            report = decode_health_report(await _body(request, MAX_REPORT_BYTES))
            from starlette.concurrency import run_in_threadpool

            # token verification may fetch the issuer's JWKS: never on the event loop
            checked = await run_in_threadpool(monitor.check_report, report)
            # stored in a group commit with the reports arriving meanwhile; answered once
            # committed (monitor/reports.py)
            result = await asyncio.wrap_future(container.reports.submit(checked))
        except BootwatchError as exc:
            return _error_response(exc)
        container.webhooks.kick()
        return JSONResponse({"report_id": result.report_id, "stored": result.stored,
                             "verified": result.verified,
                             "why_unverified": result.why_unverified}, status_code=202)

    # --- alerts -------------------------------------------------------------

    @router.get("/alerts", responses=_ok(_ALERTS))
    def list_alerts(
        status: str | None = _text_query(), vm: str | None = _text_query(),
        reason: str | None = _text_query(), severity: str | None = _text_query(),
        limit: int = 100, offset: int = 0, who: Principal | Response = Reader,
    ) -> Any:
        return call(who, lambda: queries.list_alerts(monitor, status=status, vm=vm, reason=reason,
                                               severity=severity, limit=limit, offset=offset))

    @router.get("/alerts/{alert_id}", responses=_ok(ALERT_SCHEMA))
    def get_alert(alert_id: str = ALERT_ID, who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.get_alert(monitor, alert_id))

    def _transition(alert_id: str, status: AlertStatus, who: Principal | Response) -> Any:
        def run() -> Any:
            monitor.set_alert_status(alert_id, status, by=str(who))
            container.webhooks.kick()
            return get_alert(alert_id, who)
        return call(who, run)

    @router.post("/alerts/{alert_id}/ack", responses=_ok(ALERT_SCHEMA))
    def ack(alert_id: str = ALERT_ID, who: Principal | Response = Admin) -> Any:
        return _transition(alert_id, AlertStatus.IN_PROGRESS, who)

    @router.post("/alerts/{alert_id}/resolve", responses=_ok(ALERT_SCHEMA))
    def resolve(alert_id: str = ALERT_ID, who: Principal | Response = Admin) -> Any:
        return _transition(alert_id, AlertStatus.RESOLVED, who)

    @router.post("/alerts/{alert_id}/dismiss", responses=_ok(ALERT_SCHEMA))
    def dismiss(alert_id: str = ALERT_ID, who: Principal | Response = Admin) -> Any:
        return _transition(alert_id, AlertStatus.DISMISSED, who)

    # --- recommendations, baselines, suppressions, dry run ----------------------

    @router.get("/recommendations", responses=_ok(_RECS))
    def list_recommendations(vm: str | None = _text_query(), key: str | None = _text_query(),
                             code: str | None = _text_query(), limit: int = 1000,
                             after: str | None = _text_query(),
                             after_key: str | None = _text_query(),
                             who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.list_recommendations(monitor, vm=vm, key=key, code=code,
                                                        limit=limit, after=after,
                                                        after_key=after_key))

    @router.get("/recommendations/groups", responses=_ok(_GROUPS))
    def recommendation_groups(who: Principal | Response = Reader) -> Any:
        return call(who, lambda: {"items": queries.recommendation_groups(monitor)})

    @router.get("/agents", responses=_ok(_AGENTS))
    def agents(who: Principal | Response = Reader) -> Any:
        return call(who, lambda: {"versions": queries.agent_versions(monitor)})

    @router.get("/baselines", responses=_ok(items_schema(BASELINE_SCHEMA,
                                                        next_cursor=_NSTR)))
    def list_baselines(vm: str | None = _text_query(), limit: int = 1000,
                       cursor: str | None = _text_query(32),
                       who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.list_baselines(
            monitor, vm, limit=queries.check_limit(limit), cursor=cursor))

    @router.post("/baselines/approve", openapi_extra=_APPROVE_BODY,
                 responses=_ok(obj_schema({"baseline": _INT})))
    async def approve(request: Request, who: Principal | Response = Admin) -> Any:
        if isinstance(who, Response):
            return who
        try:
            body = _json_object(await _body(request, _MAX_ADMIN_BODY))
            ref = _opt_str(body, "vm")
            if not ref:
                raise ProtocolError("body: field 'vm' is required")
            boot = body.get("boot")
            # bounded like every other row id (MAX_ROW_ID): a boot past 64 bits overflowed
            # SQLite's driver (a 500), past 32 bits PostgreSQL's column (a 503)
            if boot is not None and (not isinstance(boot, int) or isinstance(boot, bool)
                                     or not 1 <= boot <= MAX_ROW_ID):
                raise ProtocolError(f"body: field 'boot' must be an integer in 1..{MAX_ROW_ID}")
            group = body.get("group", False)
            if not isinstance(group, bool):
                raise ProtocolError("body: field 'group' must be true or false")
            base_id = monitor.approve(ref, boot_id=boot, group=group,
                                      label=_opt_str(body, "label") or "", by=who)
        except BootwatchError as exc:
            return _error_response(exc)
        container.webhooks.kick()
        return {"baseline": base_id}

    @router.delete("/baselines/{baseline_id}", responses=_ok(obj_schema({"removed": _INT})))
    def remove_baseline(baseline_id: int = _id_path("baseline"),
                        who: Principal | Response = Admin) -> Any:
        def run() -> dict[str, Any]:
            monitor.remove_baseline(baseline_id)
            return {"removed": baseline_id}
        return call(who, run)

    @router.get("/suppressions", responses=_ok(_SUPPRESSIONS))
    def list_suppressions(who: Principal | Response = Reader) -> Any:
        return call(who, lambda: queries.list_suppressions(monitor))

    @router.post("/suppressions", openapi_extra=_SUPPRESSION_BODY,
                 responses=_ok(obj_schema({"id": _INT})))
    async def add_suppression(request: Request, who: Principal | Response = Admin) -> Any:
        if isinstance(who, Response):
            return who
        try:
            body = _json_object(await _body(request, _MAX_ADMIN_BODY))
            rule = monitor.add_suppression(
                vm=_opt_str(body, "vm"), group=_opt_str(body, "group"),
                reason=_enum(AlertReason, body, "reason"),
                note=_opt_str(body, "note", 2000) or "", by=who)
        except BootwatchError as exc:
            return _error_response(exc)
        return {"id": rule}

    @router.delete("/suppressions/{rule_id}", responses=_ok(obj_schema({"removed": _INT})))
    def remove_suppression(rule_id: int = _id_path("suppression rule"),
                           who: Principal | Response = Admin) -> Any:
        def run() -> dict[str, Any]:
            monitor.remove_suppression(rule_id)
            return {"removed": rule_id}
        return call(who, run)

    @router.post("/dry-run", openapi_extra=_DRY_RUN_BODY, responses=_ok(_DRY_RUN))
    async def dry_run(request: Request, who: Principal | Response = Admin) -> Any:
        if isinstance(who, Response):
            return who
        try:
            body = _json_object(await _body(request, _MAX_ADMIN_BODY))
            policy = _opt_str(body, "policy", 200_000)
            if not policy:
                raise ProtocolError("body: field 'policy' (the policy text) is required")
            since = body.get("since_seconds", 30 * 86400)
            if (not isinstance(since, int) or isinstance(since, bool)
                    or not 0 < since <= MAX_SINCE_SECONDS):
                raise ProtocolError("body: field 'since_seconds' must be an integer in "
                                    f"1..{MAX_SINCE_SECONDS}")
            from starlette.concurrency import run_in_threadpool

            rows = await run_in_threadpool(monitor.dry_run, policy, timedelta(seconds=since))
        except BootwatchError as exc:
            return _error_response(exc)
        denied = [r for r in rows if r["would"] == "deny"]
        return {"boots": rows, "would_deny": len(denied),
                "vms_denied": sorted({r["vm_id"] for r in denied})}

    return router
