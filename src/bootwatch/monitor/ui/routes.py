"""The dashboard's routes under ``/ui``: server-rendered pages over the monitor.

Every page reads through :mod:`bootwatch.monitor.queries` (the JSON API's own
queries; the Agents page's releases through ``release_listing``, which answers
``GET /api/v1/agent/releases``) and every action calls the same
:class:`~bootwatch.monitor.core.Monitor` method as the API (``enable``,
``disable``, ``approve``, ``set_alert_status``, ``add_suppression``,
``remove_suppression``, ``accept_vtpm_rollback``), so the dashboard can do
nothing the CLI cannot.

Security, in one place: sign-in with the monitor's admin tokens (full) or
reader tokens (read-only) gives an opaque server-side session
(:mod:`.sessions`); its cookie is ``HttpOnly``, ``SameSite=Strict`` and
``Secure`` when the request came over HTTPS.  Every form carries the
session's CSRF token and a post without it is refused with 403.  Templates
are autoescaped (VM names and event descriptions come from VMs and are
hostile) and every page is sent with a Content-Security-Policy that allows
only this package's own script and style.  Pages work without JavaScript.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool

from bootwatch.errors import BootwatchError, InputError, ProtocolError
from bootwatch.monitor import queries
from bootwatch.monitor.api import MAX_ROW_ID, token_principal
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.core import NotFound
from bootwatch.monitor.releases.planner import RolloutPolicy
from bootwatch.monitor.releases.router import release_listing
from bootwatch.monitor.ui.sessions import LoginNonces, SessionStore, UiSession
from bootwatch.protocol.monitor import AlertReason, AlertStatus, Severity, VmState

__all__ = ["SESSION_COOKIE", "UI_PREFIX", "ui_router"]

UI_PREFIX = "/ui"
SESSION_COOKIE = "bw_session"
LOGIN_COOKIE = "bw_login"
_MAX_FORM = 16 * 1024
_PAGE = 50
_STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8",
           "icon.svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: colours of the state chart (WCAG AA against white for the text beside them)
_STATE_COLOURS = {
    VmState.UNHEALTHY: "#b3261e", VmState.STALE: "#8a5300", VmState.PLATFORM_ERROR: "#6b4fa0",
    VmState.NOT_REPORTING: "#5f6368", VmState.HEALTHY: "#1e7d32",
    VmState.NOT_MONITORED: "#9aa0a6",
}
_ACTIONS = {"ack": AlertStatus.IN_PROGRESS, "resolve": AlertStatus.RESOLVED,
            "dismiss": AlertStatus.DISMISSED}


class _Stop(Exception):
    """Ends a request early with a finished response (redirect, 403 page)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _href(path: str, **params: Any) -> str:
    """A dashboard URL; path segments are already quoted, params are encoded."""
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return UI_PREFIX + path + ("?" + urllib.parse.urlencode(clean) if clean else "")


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _short(value: str | None, n: int = 16) -> str:
    return "" if not value else (value if len(value) <= n else value[:n] + "\u2026")


def _time(value: str | None) -> str:
    return "" if not value else value.replace("T", " ").replace("Z", " UTC")


def _arg(request: Request, name: str, limit: int = 128) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise ProtocolError(f"query: '{name}' is longer than {limit} characters")
    return value


def _int_arg(request: Request, name: str) -> int | None:
    value = _arg(request, name, 20)
    if value is None:
        return None
    try:
        return _row_id(int(value), f"query: '{name}'", low=0)
    except ValueError:
        raise ProtocolError(f"query: '{name}' must be an integer") from None


def _row_id(value: int, what: str, *, low: int = 1) -> int:
    """``value`` when it fits the database's 32-bit ids (the API's MAX_ROW_ID): a number
    past 64 bits overflowed SQLite's driver, a page of 500 instead of a message."""
    if not low <= value <= MAX_ROW_ID:
        raise ProtocolError(f"{what} must be a number in {low}..{MAX_ROW_ID}")
    return value


def _no_nul(where: str, values: Mapping[str, str]) -> None:
    """Refuse NUL in what reaches the database, as the API does (its ``NO_NUL``):
    PostgreSQL cannot hold it, and its DataError made a 503 page ("the monitor cannot
    answer now") of a bad address."""
    for name, value in values.items():
        if "\x00" in value:
            raise ProtocolError(f"{where}: '{name}' must not contain NUL characters")


async def _form(request: Request) -> dict[str, str]:
    """The posted form (urlencoded, at most 16 KB); first value of each field."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise ProtocolError("the form must be posted as application/x-www-form-urlencoded")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_FORM:
            raise ProtocolError(f"the form is larger than {_MAX_FORM} bytes")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                       max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the form is not readable: {exc}") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def _releases(container: MonitorContainer,
              policy: RolloutPolicy) -> tuple[list[dict[str, Any]] | None, str]:
    """The published releases, newest first, each with the ``rollout`` object exactly as
    ``GET /api/v1/agent/releases`` gives it (the same function over the same store), or
    None when the server has no release key.  Listing re-plans the newest rollout as the
    API's listing and the agents' offers do (a batch whose turn has come opens, a failing
    one halts), so the page shows what the next agent will be told.  A store that cannot be
    read is a message beside the agent versions, not a failed page."""
    if container.releases is None:
        return None, ""
    try:
        return release_listing(container.releases, container.monitor.agents(),
                               datetime.now(UTC), policy), ""
    except BootwatchError as exc:
        return [], f"The releases cannot be read now: {exc}"


def _load_static() -> dict[str, bytes]:
    base = resources.files("bootwatch.monitor.ui").joinpath("static")
    return {name: base.joinpath(name).read_bytes() for name in _STATIC}


def ui_router(container: MonitorContainer, *, store: SessionStore | None = None) -> APIRouter:
    """The ``/ui`` routes over ``container``; the session store is this router's own."""
    monitor = container.monitor
    settings = container.settings
    sessions = store or SessionStore()
    nonces = LoginNonces()
    static = _load_static()
    env = Environment(
        loader=PackageLoader("bootwatch.monitor.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.globals.update(href=_href, seg=_seg, short=_short, time=_time,
                       states=list(VmState), reasons=list(AlertReason),
                       severities=list(Severity), colours=_STATE_COLOURS)
    router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)

    # --- plumbing -------------------------------------------------------------

    def render(request: Request, name: str, session: UiSession | None, *,
               status: int = 200, **ctx: Any) -> HTMLResponse:
        flashes = list(session.flashes) if session else []
        if session:
            session.flashes.clear()
        html = env.get_template(name).render(
            session=session, flashes=flashes, path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers=_HEADERS)

    def current(request: Request) -> UiSession:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _Stop(redirect(_href("/login", next=target)))
        return session

    def refuse(request: Request, session: UiSession | None, status: int,
               message: str) -> _Stop:
        return _Stop(render(request, "error.html", session, status=status,
                            title="Refused" if status == 403 else "Error", message=message))

    async def posted(request: Request, *, write: bool = True) -> tuple[UiSession, dict[str, str]]:
        """The signed-in session and its form, after the CSRF and role checks."""
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise refuse(request, None, 403, "Your session has ended: sign in again.")
        try:
            form = await _form(request)
        except ProtocolError as exc:  # no readable form, so no CSRF token either
            raise refuse(request, session, 403, f"Refused: {exc}, so it carries no CSRF "
                         "token.") from None
        token = form.get("csrf", "")
        if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise refuse(request, session, 403, "The form's CSRF token is missing or wrong: "
                         "reload the page and try again.")
        if write and not session.admin:
            raise refuse(request, session, 403, "Your sign-in is read-only (a reader "
                         "token): changes need an admin token.")
        return session, form

    def page(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Turn early stops and the monitor's errors into pages."""
        async def run(request: Request) -> Response:
            session: UiSession | None = None
            try:
                session = current(request)
                _no_nul("path", request.path_params)
                _no_nul("query", request.query_params)
                return await run_in_threadpool(fn, request, session)
            except _Stop as stop:
                return stop.response
            except NotFound as exc:
                return render(request, "error.html", session, status=404, title="Not found",
                              message=str(exc))
            except InputError as exc:
                return render(request, "error.html", session, status=400,
                              title="Bad request", message=str(exc))
            except BootwatchError as exc:
                return render(request, "error.html", session, status=503,
                              title="Unavailable", message=f"The monitor cannot answer now: "
                              f"{exc}")
        run.__name__ = fn.__name__
        return run

    async def act(request: Request, back: str, fn: Callable[[UiSession, Mapping[str, str]],
                  str]) -> Response:
        """Run one write for a signed-in admin, then redirect (post/redirect/get)."""
        try:
            session, form = await posted(request)
        except _Stop as stop:
            return stop.response
        try:
            _no_nul("path", request.path_params)
            _no_nul("form", form)
            message = await run_in_threadpool(fn, session, form)
            session.flashes.append(("ok", message))
            container.webhooks.kick()
        except BootwatchError as exc:
            session.flashes.append(("error", str(exc)))
        return redirect(back)

    # --- sign-in --------------------------------------------------------------

    def login_page(request: Request, *, status: int = 200, message: str = "") -> Response:
        nonce, token = nonces.new()
        nxt = request.query_params.get("next", "")
        response = render(request, "login.html", None, status=status, csrf=token,
                          message=message, next=nxt if _local(nxt) else "")
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=1800, path=UI_PREFIX, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    def _local(target: str) -> bool:
        return (target.startswith(UI_PREFIX) and not target.startswith("//")
                and "\\" not in target and len(target) < 2000)

    @router.get("/login")
    def login_form(request: Request) -> Response:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        try:
            form = await _form(request)
        except ProtocolError as exc:
            return login_page(request, status=400, message=str(exc))
        if not nonces.check(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            return render(request, "error.html", None, status=403, title="Refused",
                          message="The sign-in form's CSRF token is missing or wrong: "
                          "reload the sign-in page and try again.")
        token = form.get("token", "").strip()
        who = token_principal(settings, token) if token and len(token) <= 4096 else None
        if who is None:
            return login_page(request, status=401, message="That is not an admin or reader "
                              "token of this monitor.")
        principal, admin = who
        sid, _ = sessions.create(str(principal), admin=admin)
        nxt = form.get("next", "")
        response = redirect(nxt if _local(nxt) else UI_PREFIX)
        response.set_cookie(SESSION_COOKIE, sid, path=UI_PREFIX, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        response.delete_cookie(LOGIN_COOKIE, path=UI_PREFIX)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        try:
            await posted(request, write=False)
        except _Stop as stop:
            return stop.response
        sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = redirect(_href("/login"))
        response.delete_cookie(SESSION_COOKIE, path=UI_PREFIX)
        return response

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in static:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(static[name], media_type=_STATIC[name],
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    # --- fleet overview -------------------------------------------------------

    def overview(request: Request, session: UiSession) -> Response:
        filters = {"state": _arg(request, "state", 32), "group": _arg(request, "group"),
                   "provider": _arg(request, "provider"), "q": _arg(request, "q")}
        cursor = _arg(request, "cursor", 512)
        fleet = queries.summary(monitor, recommendations=False)
        listing = queries.list_vms(monitor, limit=_PAGE, cursor=cursor, recommendations=False,
                                   **filters)
        total = sum(fleet["vms"].values())
        peak = max(fleet["vms"].values(), default=0) or 1
        nxt = (_href("", cursor=listing["next_cursor"], **filters)
               if listing["next_cursor"] else None)
        return render(request, "overview.html", session, fleet=fleet, total=total, peak=peak,
                      vms=listing["items"], filters=filters, next_url=nxt,
                      first_url=_href("", **filters) if cursor else None)

    router.add_api_route("", page(overview), methods=["GET"])
    router.add_api_route("/", page(overview), methods=["GET"])

    # --- VM page --------------------------------------------------------------

    def vm_page(request: Request, session: UiSession) -> Response:
        ref = request.path_params["ref"]
        vm = queries.vm_detail(monitor, ref)
        boot = _int_arg(request, "boot")
        against = _int_arg(request, "against")
        # the open alerts on their own (at most one per cause): vm["alerts"] is the newest
        # 50, and an alert open since before 50 newer ones (a policy denial flapping while
        # a deviation stays open) fell out of it: "No open alerts" on an unhealthy VM
        open_alerts = queries.list_alerts(monitor, vm=vm["vm_id"], status="open",
                                          limit=_PAGE)["items"]
        deviation = next((a for a in open_alerts if a["reason"] == "baseline_deviation"), None)
        compare: dict[str, Any] | None = None
        compare_error = ""
        asked = boot is not None or against is not None
        if vm["last_boot"] is not None and (asked or deviation is None):
            try:
                compare = monitor.diff(vm["vm_id"], boot_id=boot, against=against)
            except NotFound as exc:
                compare_error = str(exc)
        labels = {b["id"]: b["label"] for b in vm["baselines"]}
        return render(request, "vm.html", session, vm=vm, open_alerts=open_alerts,
                      deviation=deviation, compare=compare, compare_error=compare_error,
                      labels=labels, boot=boot, against=against)

    router.add_api_route("/vms/{ref}", page(vm_page), methods=["GET"])

    def vm_back(ref: str) -> str:
        return _href(f"/vms/{_seg(ref)}")

    @router.post("/vms/{ref}/enable")
    async def vm_enable(ref: str, request: Request) -> Response:
        def run(session: UiSession, form: Mapping[str, str]) -> str:
            vm_id = monitor.enable(ref, by=session.principal)
            return f"Monitoring enabled for VM {vm_id}."
        return await act(request, vm_back(ref), run)

    @router.post("/vms/{ref}/disable")
    async def vm_disable(ref: str, request: Request) -> Response:
        def run(session: UiSession, form: Mapping[str, str]) -> str:
            vm_id = monitor.disable(ref, by=session.principal)
            return f"Monitoring disabled for VM {vm_id}; its open alerts are resolved."
        return await act(request, vm_back(ref), run)

    @router.post("/vms/{ref}/accept-vtpm-rollback")
    async def vm_accept_rollback(ref: str, request: Request) -> Response:
        def run(session: UiSession, form: Mapping[str, str]) -> str:
            vm_id = monitor.accept_vtpm_rollback(ref, by=session.principal)
            return (f"vTPM rollback accepted for VM {vm_id}: its quote mark is the restored "
                    "vTPM's, and its quote_replayed alert is resolved.")
        return await act(request, vm_back(ref), run)

    @router.post("/vms/{ref}/approve")
    async def vm_approve(ref: str, request: Request) -> Response:
        def run(session: UiSession, form: Mapping[str, str]) -> str:
            raw = form.get("boot", "")
            try:
                boot_id = _row_id(int(raw), "form: 'boot'") if raw else None
            except ValueError:
                raise ProtocolError("form: 'boot' must be a boot number") from None
            group = form.get("group") == "on"
            label = form.get("label", "")[:128]
            base = monitor.approve(ref, boot_id=boot_id, group=group, label=label,
                                   by=session.principal)
            return (f"Boot {boot_id if boot_id is not None else '(latest)'} approved as "
                    f"baseline variant {base}.")
        return await act(request, vm_back(ref), run)

    # --- alerts -----------------------------------------------------------------

    def alerts_page(request: Request, session: UiSession) -> Response:
        # "any" status is ``all``, never empty: the pager's links leave empty filters out,
        # and a missing status means "open", so page 2 of "any" listed open alerts
        status = request.query_params.get("status", "open") or "all"
        filters = {"status": status, "reason": _arg(request, "reason", 32),
                   "severity": _arg(request, "severity", 32), "vm": _arg(request, "vm")}
        offset = _int_arg(request, "offset") or 0
        listing = queries.list_alerts(monitor, limit=_PAGE + 1, offset=offset, **filters)
        items = listing["items"][:_PAGE]
        nxt = (_href("/alerts", offset=offset + _PAGE, **filters)
               if len(listing["items"]) > _PAGE else None)
        prev = (_href("/alerts", offset=max(0, offset - _PAGE), **filters)
                if offset > 0 else None)
        return render(request, "alerts.html", session, alerts=items, filters=filters,
                      next_url=nxt, prev_url=prev, status_filter=status)

    router.add_api_route("/alerts", page(alerts_page), methods=["GET"])

    def alert_page(request: Request, session: UiSession) -> Response:
        alert = queries.get_alert(monitor, request.path_params["alert_id"])
        return render(request, "alert.html", session, alert=alert)

    router.add_api_route("/alerts/{alert_id}", page(alert_page), methods=["GET"])

    @router.post("/alerts/{alert_id}/{action}")
    async def alert_action(alert_id: str, action: str, request: Request) -> Response:
        status = _ACTIONS.get(action)
        if status is None:
            return render(request, "error.html", None, status=404, title="Not found",
                          message=f"no alert action {action!r}")

        def run(session: UiSession, form: Mapping[str, str]) -> str:
            monitor.set_alert_status(alert_id, status, by=session.principal)
            return f"Alert {alert_id} is now {status.value}."
        back = request.headers.get("referer", "")
        parsed = urllib.parse.urlsplit(back)
        target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        return await act(request, target if _local(target) else
                         _href(f"/alerts/{_seg(alert_id)}"), run)

    # --- suppressions -----------------------------------------------------------

    def suppressions_page(request: Request, session: UiSession) -> Response:
        rules = queries.list_suppressions(monitor)["items"]
        return render(request, "suppressions.html", session, rules=rules)

    router.add_api_route("/suppressions", page(suppressions_page), methods=["GET"])

    @router.post("/suppressions")
    async def add_suppression(request: Request) -> Response:
        def run(session: UiSession, form: Mapping[str, str]) -> str:
            reason_text = form.get("reason", "")
            try:
                reason = AlertReason(reason_text) if reason_text else None
            except ValueError:
                raise ProtocolError("form: 'reason' is not an alert reason") from None
            vm, group = form.get("vm", "").strip(), form.get("group", "").strip()
            if len(vm) > 128 or len(group) > 128:
                raise ProtocolError("form: 'vm' and 'group' are at most 128 characters")
            rule = monitor.add_suppression(vm=vm or None, group=group or None, reason=reason,
                                           note=form.get("note", "")[:2000],
                                           by=session.principal)
            return f"Suppression rule {rule} added; open alerts it covers are dismissed."
        return await act(request, _href("/suppressions"), run)

    @router.post("/suppressions/{rule_id}/remove")
    async def remove_suppression(rule_id: int, request: Request) -> Response:
        def run(session: UiSession, form: Mapping[str, str]) -> str:
            monitor.remove_suppression(_row_id(rule_id, "the suppression rule's id"))
            return f"Suppression rule {rule_id} removed."
        return await act(request, _href("/suppressions"), run)

    # --- recommendations and agents -------------------------------------------------

    def recommendations_page(request: Request, session: UiSession) -> Response:
        return render(request, "recommendations.html", session,
                      groups=queries.recommendation_groups(monitor))

    router.add_api_route("/recommendations", page(recommendations_page), methods=["GET"])

    def recommendation_page(request: Request, session: UiSession) -> Response:
        key = request.path_params["key"]
        code = request.query_params.get("code", "Unhealthy")
        if code not in ("Healthy", "Unhealthy", "NotApplicable"):
            raise ProtocolError("query: 'code' must be Healthy, Unhealthy or NotApplicable")
        after = _arg(request, "after")
        rows = queries.list_recommendations(monitor, key=key, code=code, limit=_PAGE + 1,
                                            after=after)["items"]
        group = next(iter(queries.recommendation_groups(monitor, key=key)), None)
        if group is None:
            raise NotFound(f"no recommendation {key!r} has been evaluated")
        nxt = (_href(f"/recommendations/{_seg(key)}", code=code, after=rows[_PAGE - 1]["vm_id"])
               if len(rows) > _PAGE else None)
        return render(request, "recommendation.html", session, group=group, rows=rows[:_PAGE],
                      code=code, next_url=nxt)

    router.add_api_route("/recommendations/{key}", page(recommendation_page), methods=["GET"])

    def agents_page(request: Request, session: UiSession) -> Response:
        # the policy and clock extra_routers gives the API's release routes (the defaults)
        policy = RolloutPolicy()
        releases, release_error = _releases(container, policy)
        return render(request, "agents.html", session,
                      versions=queries.agent_versions(monitor), releases=releases,
                      release_error=release_error, policy=policy)

    router.add_api_route("/agents", page(agents_page), methods=["GET"])

    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
    return router
