"""MAA data-plane routes other than attestation: OpenID metadata, signing
certificates, policies, policy signers; plus health, readiness and metrics.

Every route accepts (and ignores the value of) MAA's ``api-version`` query
parameter; an ``api-version`` that is present but empty is InvalidParameter.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from bootwatch.errors import StorageError
from bootwatch.protocol.token import CLAIMS_SUPPORTED
from bootwatch.service import policy_admin
from bootwatch.service.auth import PolicyWriter
from bootwatch.service.deps import service_state
from bootwatch.service.errors import invalid_parameter
from bootwatch.service.hosts import CurrentProvider
from bootwatch.service.keys import cert_jwk

if TYPE_CHECKING:
    from bootwatch.service.state import ServiceState

__all__ = [
    "API_VERSION",
    "AllowRollback",
    "api_version",
    "maa_router",
    "ops_router",
    "token_response",
]


def api_version(request: Request) -> str | None:
    """MAA's ``api-version`` query parameter (any version is served the same way)."""
    value = request.query_params.get("api-version")
    if value is not None and not value.strip():
        raise invalid_parameter("query parameter 'api-version' is empty")
    return value


API_VERSION = Depends(api_version)

#: ``?allowRollback=true`` on policy and signer writes: apply a signed document that was
#: applied before (an older or superseded version, one used for another type); without
#: it such a replay is refused with 409 RollbackRefused (see policy_admin)
AllowRollback = Annotated[
    bool,
    Query(
        alias="allowRollback",
        description="Isolated providers: apply a signed document that was applied before "
        "(a superseded or older policy, a reset or signer change used before). Without it "
        "such a replay is refused with 409 RollbackRefused.",
    ),
]


def _state(request: Request) -> ServiceState:
    return service_state(request)


def token_response(token: str) -> JSONResponse:
    return JSONResponse({"token": token})


async def _text_body(request: Request) -> str:
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_parameter(f"request body is not UTF-8 (byte {exc.start})") from exc


def maa_router() -> APIRouter:
    router = APIRouter(dependencies=[API_VERSION])

    @router.get("/.well-known/openid-configuration")
    def openid_configuration(ctx: CurrentProvider) -> dict[str, Any]:
        base = ctx.base_url
        return {
            "issuer": base,
            "jwks_uri": f"{base}/certs",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token", "none"],
            "claims_supported": list(CLAIMS_SUPPORTED),
        }

    @router.get("/certs")
    def certs(ctx: CurrentProvider) -> JSONResponse:
        keys = [cert_jwk(k.certificate, kid=k.kid) for k in ctx.keys]
        return JSONResponse({"keys": keys})

    @router.get("/policies/{attestation_type}")
    def get_policy(attestation_type: str, ctx: CurrentProvider) -> JSONResponse:
        return token_response(policy_admin.get_policy(ctx, attestation_type))

    @router.put("/policies/{attestation_type}")
    async def set_policy(
        attestation_type: str,
        request: Request,
        ctx: CurrentProvider,
        principal: PolicyWriter,
        allow_rollback: AllowRollback = False,
    ) -> JSONResponse:
        body = await _text_body(request)
        token = await run_in_threadpool(
            functools.partial(
                policy_admin.set_policy,
                _state(request), ctx, attestation_type, body, principal,
                allow_rollback=allow_rollback,
            )
        )
        return token_response(token)

    @router.post("/policies/{attestation_type}:reset")
    async def reset_policy(
        attestation_type: str,
        request: Request,
        ctx: CurrentProvider,
        principal: PolicyWriter,
        allow_rollback: AllowRollback = False,
    ) -> JSONResponse:
        body = await _text_body(request)
        token = await run_in_threadpool(
            functools.partial(
                policy_admin.reset_policy,
                _state(request), ctx, attestation_type, body, principal,
                allow_rollback=allow_rollback,
            )
        )
        return token_response(token)

    @router.get("/certificates")
    def get_certificates(ctx: CurrentProvider) -> JSONResponse:
        return token_response(policy_admin.get_certificates(ctx))

    @router.post("/certificates:add")
    async def add_certificate(
        request: Request,
        ctx: CurrentProvider,
        principal: PolicyWriter,
        allow_rollback: AllowRollback = False,
    ) -> JSONResponse:
        body = await _text_body(request)
        token = await run_in_threadpool(
            functools.partial(
                policy_admin.modify_signers,
                _state(request), ctx, body, principal,
                add=True, allow_rollback=allow_rollback,
            )
        )
        return token_response(token)

    @router.post("/certificates:remove")
    async def remove_certificate(
        request: Request,
        ctx: CurrentProvider,
        principal: PolicyWriter,
        allow_rollback: AllowRollback = False,
    ) -> JSONResponse:
        body = await _text_body(request)
        token = await run_in_threadpool(
            functools.partial(
                policy_admin.modify_signers,
                _state(request), ctx, body, principal,
                add=False, allow_rollback=allow_rollback,
            )
        )
        return token_response(token)

    return router


def ops_router() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        try:
            _state(request).db.ping()
        except StorageError as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        body, ctype = service_state(request).metrics.exposition()
        return Response(body, media_type=ctype)

    @router.get("/servicetags")
    def servicetags(request: Request) -> JSONResponse:
        """This service's endpoints in Azure's ServiceTags format (built at start-up)."""
        from bootwatch.net.servicetag import encode_document

        return JSONResponse(encode_document(service_state(request).service_tag))

    return router
