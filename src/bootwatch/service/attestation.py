"""Attestation routes: ``POST /attest/AzureGuest`` and round one of ``POST /attest/Tpm``.

``/attest/AzureGuest`` runs :func:`bootwatch.attest.pipeline.attest_azure_guest`
with the provider's policy, token signer and the configured trust anchors,
DBX data and Secure Boot templates, records the verdict, and answers:

* permit: 200 ``{"token": base64url(sealed envelope)}`` (maa-protocol 1.3);
* deny: 400 ``PolicyEvaluationError`` whose message names the deciding rule
  and the claims that made it fire;
* evidence that does not verify: 400 ``InvalidParameter`` naming the failing
  check and its reason.

``/attest/Tpm`` answers the ``aikcert`` init message with a random challenge
and an opaque ``service_context`` (challenge and expiry, sealed with the
service's at-rest key), as the live service does; later rounds are not
implemented by this service and are refused as InvalidOperation.

Configuration read by :func:`load_attestation_config` (once per process, when the
container is built; ``state.attest_config``):
``settings.trust_anchors_path`` (PEM file or folder of AIK issuing CAs, added to the
built-in ``azure-trusted-launch`` set unless ``settings.no_builtin_anchors``),
``settings.dbx_data_path`` (Microsoft's ``dbx_info_msft_latest.json``) and
``settings.secureboot_templates_path`` (JSON file of extra templates, see
docs/attestation.md).
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bootwatch.attest.claims import (
    DEFAULT_TEMPLATES,
    DbxReference,
    SecureBootTemplate,
    dbx_reference_from_json,
    templates_from_json,
)
from bootwatch.attest.pipeline import (
    AttestationOutcome,
    ProviderInputs,
    Verdict,
    attest_azure_guest,
)
from bootwatch.encoding import b64url_decode, b64url_encode
from bootwatch.errors import BootwatchError, ConfigError, StorageError
from bootwatch.protocol.envelope import encode_token_response
from bootwatch.protocol.jsonread import read_json
from bootwatch.protocol.outcome import OutcomeEvent
from bootwatch.service.auth import require_attest_auth
from bootwatch.service.deps import service_state
from bootwatch.service.errors import ApiError, invalid_operation, invalid_parameter
from bootwatch.service.hosts import SCOPE_PREFIX, current_provider
from bootwatch.service.logs import get_logger
from bootwatch.service.middleware import SCOPE_LOG, bootwatch_error_response, maa_error
from bootwatch.service.providers import ProviderContext
from bootwatch.service.records import AttestationRecord, Commit, record_attestation
from bootwatch.service.routes import api_version
from bootwatch.service.settings import Settings
from bootwatch.tpm.aik import TrustAnchors
from bootwatch.tpm.builtin_anchors import anchor_expiry_notes, builtin_anchors

#: how long an /attest/Tpm challenge stays valid
if TYPE_CHECKING:
    from bootwatch.service.state import ServiceState

TPM_CHALLENGE_TTL = timedelta(minutes=5)
#: Retry-After (seconds) of the 503 answered when a record cannot be committed
RETRY_AFTER_UNRECORDED = 5
_TPM_CONTEXT = "attest-tpm-service-context"


@dataclass(frozen=True)
class AttestationConfig:
    """Per-process attestation configuration loaded from the settings."""

    trust_anchors: TrustAnchors
    dbx_reference: DbxReference | None
    templates: tuple[SecureBootTemplate, ...]


def load_attestation_config(settings: Settings) -> AttestationConfig:
    """Read the files the settings name; a bad path is a ConfigError at start-up."""
    anchors_path = settings.trust_anchors_path
    blobs: list[bytes] = []
    if anchors_path:
        p = Path(anchors_path)
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        try:
            blobs = [f.read_bytes() for f in files]
        except OSError as exc:
            raise ConfigError(f"trust_anchors_path {anchors_path}: {exc}") from None
    dbx: DbxReference | None = None
    dbx_path = settings.dbx_data_path
    if dbx_path:
        try:
            dbx = dbx_reference_from_json(Path(dbx_path).read_bytes(), source=Path(dbx_path).name)
        except OSError as exc:
            raise ConfigError(f"dbx_data_path {dbx_path}: {exc}") from None
    templates = DEFAULT_TEMPLATES
    tpl_path = settings.secureboot_templates_path
    if tpl_path:
        try:
            templates = templates + templates_from_json(Path(tpl_path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"secureboot_templates_path {tpl_path}: {exc}") from None
    extra = TrustAnchors.from_pem(blobs)
    if anchors_path and not extra.certificates:
        # a file with no certificate in it started the service with no anchor added,
        # unsaid (found in review); --ek-trust-anchors already refused such a file
        raise ConfigError(f"trust_anchors_path {anchors_path}: no PEM certificate found")
    anchors = TrustAnchors(()) if settings.no_builtin_anchors else builtin_anchors()
    anchors = anchors.plus(extra)
    for note in anchor_expiry_notes(anchors, datetime.now(UTC)):
        # the note in the message too: a CLI command without a log handler of its own
        # prints the message alone (found in review: "AIK trust anchor expiry", no reason)
        get_logger().warning("AIK trust anchor expiry: %s", note, extra={"reason": note})
    return AttestationConfig(anchors, dbx, templates)


def provider_inputs(ctx: ProviderContext, cfg: AttestationConfig) -> ProviderInputs:
    """What the pure pipeline needs from this provider and this process."""
    policy = ctx.azureguest_policy
    return ProviderInputs(
        issuer=ctx.issuer,
        policy=policy.compiled,
        policy_hash=policy.policy_hash,
        policy_signer=policy.signer_jwk,
        sign=ctx.token_signer.with_issuer(ctx.issuer).sign,
        trust_anchors=cfg.trust_anchors,
        templates=cfg.templates,
        dbx_reference=cfg.dbx_reference,
    )


def deny_message(outcome: AttestationOutcome) -> str:
    """The PolicyEvaluationError message: the rule, then why the claims are what they are."""
    parts = [f"A Deny claim was issued, authorization failed: {outcome.reason}"]
    if outcome.azurevm is not None:
        false = [
            d
            for d in outcome.azurevm.decisions
            if d.value is False and d.claim in _DEFAULT_DECIDERS
        ]
        if false:
            parts.append("; ".join(f"{d.claim}=false ({d.reason})" for d in false))
    return ". ".join(parts)


_DEFAULT_DECIDERS = frozenset(
    {
        "secureboot",
        "x-ms-azurevm-default-securebootkeysvalidated",
        "x-ms-azurevm-debuggersdisabled",
        "x-ms-azurevm-signingdisabled",
        "x-ms-azurevm-dbvalidated",
        "x-ms-azurevm-dbxvalidated",
    }
)


def _record(
    state: ServiceState,
    request: Request,
    ctx: ProviderContext,
    outcome: AttestationOutcome,
    body: bytes,
    event: OutcomeEvent | None,
    request_id: str,
) -> Commit:
    return record_attestation(
        state.records,
        state.metrics,
        AttestationRecord(
            provider=ctx.name,
            attestation_type="AzureGuest",
            verdict=outcome.verdict,
            reason=outcome.reason,
            vm_id=outcome.vm_id,
            policy_hash=outcome.policy_hash,
            # evidence only for requests that parsed as evidence: anything else is not
            # worth keeping and would let anyone fill the disk (the quota bounds the rest)
            evidence=None if outcome.failed_check == "request" else body,
            client=(request.scope.get("client") or ("unknown", 0))[0],
            outcome=event,
            request_id=request_id,
        ),
    )


def _run(
    request: Request, ctx: ProviderContext, body: bytes, request_id: str
) -> tuple[AttestationOutcome, Commit]:
    """The verdict, and the commit of its record (and outcome event, when the service
    has an event sink) that must complete before the verdict is answered.
    ``request_id`` names the answer, the record and the outcome event alike."""
    state = service_state(request)
    cfg = state.attest_config
    inputs = provider_inputs(ctx, cfg)
    # the provider's own AIK CA and its revoked certificates
    inputs = state.enrollment.attestation_inputs(ctx.name, inputs)
    now = datetime.now(UTC)
    outcome = attest_azure_guest(body, provider=inputs, now=now, caches=state.verifier_caches)
    event: OutcomeEvent | None = None
    if state.sink is not None:
        try:
            event = state.outcome_builder.build(outcome, event_id=request_id, time=now,
                                                provider=ctx.name, issuer=ctx.issuer,
                                                dbx_reference=cfg.dbx_reference)
        except Exception as exc:  # a bug in describing the boot must not cost the verdict
            get_logger().error("outcome event not built", extra={"reason": repr(exc)})
    return outcome, _record(state, request, ctx, outcome, body, event, request_id)


async def _durable(request: Request, commit: Commit) -> None:
    """Wait for the record's commit: an attestation is answered only once its record
    (and event) would survive a crash; otherwise 503 with ``Retry-After``.

    A failed commit's StorageError holds the database's error with its SQL: it goes to
    the log under an incident id, and the answer names only that id (as every other
    database 503, see ``middleware.bootwatch_error_response``)."""
    settings = service_state(request).settings
    try:
        await asyncio.wait_for(commit.wait(), timeout=settings.record_commit_timeout_seconds)
    except (StorageError, TimeoutError) as exc:
        if isinstance(exc, StorageError):
            incident = uuid.uuid4().hex[:16]
            get_logger().error("request failed", extra={
                "incident": incident, "error": exc.code, "reason": str(exc)})
            reason = (f"a database error, incident {incident}; the service log has the "
                      "details")
        else:
            reason = f"no commit within {settings.record_commit_timeout_seconds:g} s"
        raise ApiError(
            503, "ServiceUnavailable",
            f"the attestation could not be recorded ({reason}); nothing was decided: "
            "retry later",
            headers={"Retry-After": str(RETRY_AFTER_UNRECORDED)},
        ) from None


async def _admit(request: Request) -> ProviderContext:
    """The checks before an attestation, inline rather than as FastAPI dependencies
    (resolving three dependencies cost ~0.2 ms of a ~2 ms attestation): a non-empty
    ``api-version``, the provider (404 if unknown), and the caller when the provider
    requires authentication.  Checking a bearer token may fetch the issuer's JWKS over
    the network, so that one runs in a worker thread, never on the event loop."""
    api_version(request)
    ctx = current_provider(request)
    if ctx.attest_auth_required:
        await run_in_threadpool(require_attest_auth, request, ctx)
    return ctx


#: the AzureGuest attestation path (after the provider prefix is stripped)
AZUREGUEST_PATH = "/attest/AzureGuest"


@dataclass(frozen=True)
class _Route:
    """What the edge middleware reads from ``scope["route"]`` for its metric label."""

    path: str


_AZUREGUEST_ROUTE = _Route(AZUREGUEST_PATH)


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (the edge middleware's ``receive`` enforces the size cap)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: the response header naming an attestation's record (and its outcome event)
REQUEST_ID_HEADER = "x-bootwatch-request-id"


async def attest_azureguest(request: Request) -> tuple[int, bytes, str]:
    """``POST /attest/AzureGuest``: (status, JSON body, request id) of a permit; raises
    the :class:`~bootwatch.service.errors.ApiError` of a deny or of invalid evidence
    (which carries the request id header too: every recorded verdict is named)."""
    ctx = await _admit(request)
    body = await _read_body(request.receive)
    request_id = str(uuid.uuid4())
    # CPU-bound and GIL-bound: run inline (a thread hop only adds GIL hand-offs)
    outcome, commit = _run(request, ctx, body, request_id)
    await _durable(request, commit)
    # the verdict goes into the request's one log line (written by the edge middleware)
    request.scope[SCOPE_LOG] = {
        "provider": ctx.name,
        "verdict": outcome.verdict.value,
        "vm_id": outcome.vm_id,
        "reason": outcome.reason or None,
    }
    if outcome.verdict is Verdict.PERMIT and outcome.envelope is not None:
        return 200, encode_token_response(outcome.envelope), request_id
    named = {REQUEST_ID_HEADER: request_id}
    if outcome.verdict is Verdict.DENY:
        raise ApiError(400, "PolicyEvaluationError", deny_message(outcome), headers=named)
    raise ApiError(400, "InvalidParameter", outcome.reason, headers=named)


_JSON_HEADERS = ((b"content-type", b"application/json"),)


class AzureGuestFastPath:
    """Pure-ASGI front of FastAPI for ``/attest/AzureGuest`` (see ``ServiceApp``).

    The only implementation of the AzureGuest route: its checks (``api-version``,
    provider, attestation auth; body size and rate limit in the edge middleware
    around it), pipeline and record are :func:`attest_azureguest`; library errors
    are answered by the same translation as FastAPI's exception handler.  Every
    other request goes to ``app`` (FastAPI), its slash redirects kept under the
    request's provider prefix (:func:`_keep_prefix_in_redirects`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != AZUREGUEST_PATH:
            prefix = scope.get(SCOPE_PREFIX)
            if prefix and scope["type"] == "http":
                send = _keep_prefix_in_redirects(scope, prefix, send)
            await self.app(scope, receive, send)
            return
        scope["route"] = _AZUREGUEST_ROUTE
        if scope["method"] != "POST":
            response = maa_error(
                405,
                "MethodNotAllowed",
                f"{scope['method']} {AZUREGUEST_PATH}: Method Not Allowed",
                {"allow": "POST"},
            )
            await response(scope, receive, send)
            return
        try:
            status, payload, request_id = await attest_azureguest(Request(scope, receive))
        except _Disconnected:
            return
        except BootwatchError as exc:
            await bootwatch_error_response(exc)(scope, receive, send)
            return
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode()),
                   (REQUEST_ID_HEADER.encode(), request_id.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _keep_prefix_in_redirects(scope: Scope, prefix: str, send: Send) -> Send:
    """``send`` with the provider prefix put back into Starlette's slash redirects.

    The router answers ``/x/`` with a 307 to ``/x`` (or ``/x`` to ``/x/``), built from
    the path after ``/providers/NAME`` was stripped: without this, a client of provider
    NAME would be sent to the default provider (its keys, its policies, its
    enrolment).  Only a 307 whose location is this very path, one slash more or less,
    is rewritten; any other answer passes unchanged."""
    path: str = scope["path"]
    redirected = {path.rstrip("/"), path + "/"}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 307:
            headers = list(message.get("headers", []))
            for i, (name, value) in enumerate(headers):
                if name.lower() != b"location":
                    continue
                url = urlsplit(value.decode("latin-1"))
                if url.path in redirected:
                    fixed = urlunsplit(url._replace(path=quote(prefix) + url.path))
                    headers[i] = (name, fixed.encode("latin-1"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def router() -> APIRouter:
    """FastAPI routes of the attestation API other than AzureGuest (/attest/Tpm)."""
    r = APIRouter()

    @r.post("/attest/Tpm")
    async def attest_tpm(request: Request) -> JSONResponse:
        ctx = await _admit(request)
        message = _tpm_message(await request.body())
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise invalid_parameter("data.payload: missing or not an object")
        if "type" not in payload:
            raise invalid_operation(
                'data.payload: only round one ({"type": "aikcert"}) of the TPM protocol '
                "is served by this provider"
            )
        if payload.get("type") != "aikcert":
            raise invalid_parameter(
                f"data.payload.type: {payload.get('type')!r} is not supported (only 'aikcert')"
            )
        challenge = secrets.token_bytes(16)
        expiry = int((datetime.now(UTC) + TPM_CHALLENGE_TTL).timestamp())
        inner = json.dumps(
            {"challenge": b64url_encode(challenge), "exp": expiry, "provider": ctx.name}
        ).encode()
        sealer = service_state(request).sealer
        protected = sealer.seal(inner, context=_TPM_CONTEXT)
        key_name = hashlib.sha256(f"bootwatch:{ctx.name}:{_TPM_CONTEXT}".encode()).hexdigest()
        context = json.dumps(
            {"ProtectionKeyName": key_name.upper(), "ProtectedContext": b64url_encode(protected)},
            separators=(",", ":"),
        ).encode()
        answer = {"payload": {"challenge": b64url_encode(challenge),
                              "service_context": b64url_encode(context)}}
        data = b64url_encode(json.dumps(answer, separators=(",", ":")).encode())
        return JSONResponse({"data": data})

    return r



def _tpm_message(body: bytes) -> dict[str, Any]:
    # read_json: untrusted JSON with the depth limit (ProtocolError -> 400 InvalidParameter)
    outer = read_json(body, field="(body)")
    if not isinstance(outer, dict) or not isinstance(outer.get("data"), str):
        raise invalid_parameter("data: missing or not a string")
    text = outer["data"]
    try:
        raw = b64url_decode(text)
    except (binascii.Error, ValueError):
        raise invalid_parameter("data: not base64url of a JSON object") from None
    inner = read_json(raw, field="data")
    if not isinstance(inner, dict):
        raise invalid_parameter("data: not base64url of a JSON object")
    return inner


__all__ = [
    "AttestationConfig",
    "AzureGuestFastPath",
    "attest_azureguest",
    "load_attestation_config",
    "provider_inputs",
    "router",
]
