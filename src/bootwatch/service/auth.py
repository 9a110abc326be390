"""Who is calling: bearer tokens from an OpenID issuer, and static admin tokens.

Every policy and signer write (AAD and Isolated providers alike) needs an
authenticated principal holding ``Settings.oidc_write_role`` in its ``roles``
claim (or a static admin token from ``Settings.admin_tokens``, compared in
constant time); Isolated providers check the body's signature in addition.  Bearer JWTs
are verified with PyJWT against the JWKS of ``Settings.oidc_issuer``, found
through its OpenID discovery document and fetched with httpx (cached for
:data:`JWKS_TTL` seconds; an unknown ``kid`` refetches them, at most once per
:data:`JWKS_REFETCH_INTERVAL` seconds: the ``kid`` is the caller's choice, so an
anonymous caller must not be able to make every request fetch from the issuer).  When
a refetch fails, keys fetched less than :data:`JWKS_TTL` + :data:`JWKS_STALE_GRACE`
ago keep verifying, and the issuer is not asked again for
:data:`JWKS_FAILED_RETRY` seconds (the monitor's rule for report tokens): an issuer's
blip of a minute no longer turns every policy write into a 503, and while it is down
each request no longer waits for a fetch's timeout.

Dependencies (stable names): :func:`require_policy_writer` (AAD writes) and
:func:`require_attest_auth` (attestation on providers that require it).
"""

from __future__ import annotations

import binascii
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import jwt
from fastapi import Depends
from starlette.requests import Request

from bootwatch.encoding import b64url_decode
from bootwatch.errors import ProtocolError
from bootwatch.httpdeadline import SocketWatch
from bootwatch.httpread import read_bounded
from bootwatch.protocol.jsonread import read_json
from bootwatch.service.deps import service_state
from bootwatch.service.errors import ApiError, unauthorized
from bootwatch.service.hosts import CurrentProvider
from bootwatch.service.logs import get_logger

if TYPE_CHECKING:
    from bootwatch.service.settings import Settings

__all__ = [
    "DEFAULT_OIDC_AUDIENCE",
    "FETCH_TIMEOUT",
    "JWKS_FAILED_RETRY",
    "JWKS_REFETCH_INTERVAL",
    "JWKS_STALE_GRACE",
    "JWKS_TTL",
    "MAX_DOCUMENT_BYTES",
    "MAX_TOKEN_CHARS",
    "AttestCaller",
    "OidcVerifier",
    "PolicyWriter",
    "Principal",
    "authenticate",
    "bearer_token",
    "require_attest_auth",
    "require_policy_writer",
]

JWKS_TTL = 300.0
#: least seconds between two JWKS fetches caused by an unknown ``kid``
JWKS_REFETCH_INTERVAL = 30.0
#: how long past JWKS_TTL fetched keys still verify while the issuer cannot be reached
JWKS_STALE_GRACE = 3600.0
#: least seconds between two fetches after one failed
JWKS_FAILED_RETRY = 10.0
FETCH_TIMEOUT = 5.0
#: largest discovery document or key set read from the issuer
MAX_DOCUMENT_BYTES = 256 * 1024
#: the audience of tokens for MAA's resource (scope ``https://attest.azure.net/.default``)
DEFAULT_OIDC_AUDIENCE = "https://attest.azure.net"
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    roles: tuple[str, ...]
    #: "admin-token" or "oidc"
    via: str

    def has_role(self, role: str) -> bool:
        return self.via == "admin-token" or role in self.roles


class OidcVerifier:
    """Verifies bearer JWTs against one OpenID issuer's JWKS."""

    def __init__(self, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: the issuer without a trailing slash (discovery is ``<issuer>/.well-known/...``)
        self.issuer = settings.oidc_issuer.rstrip("/")
        #: ``iss`` values accepted: the issuer with and without its trailing slash (Entra
        #: ID's v1 issuer, ``https://sts.windows.net/TENANT/``, ends in one; its v2 one
        #: does not), so configuring either spelling works and ``iss`` still names it
        self.issuers = (self.issuer, self.issuer + "/")
        #: always checked (found in review: with none configured, a token the issuer
        #: minted for any application whose roles named the write role, which any tenant
        #: user can arrange with an app registration of their own, changed policies)
        self.audience = settings.oidc_audience or DEFAULT_OIDC_AUDIENCE
        self._verify: str | bool = settings.oidc_ca or True
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._clock = clock
        #: clock time of the last successful fetch (None: never fetched)
        self._fetched: float | None = None
        #: clock time and reason of the last failed fetch (None: the last one worked)
        self._failed: tuple[float, str] | None = None
        #: held by the one thread fetching the keys
        self._fetching = threading.Lock()

    def _document(self, client: httpx.Client, url: str, watch: SocketWatch) -> dict[str, Any]:
        body = read_bounded(client, url, limit=MAX_DOCUMENT_BYTES, timeout=FETCH_TIMEOUT,
                            watch=watch)
        doc = read_json(body, field=url)
        if not isinstance(doc, dict):
            raise ValueError(f"{url}: not a JSON object")
        return doc

    def _fetch(self) -> None:
        """Fetch the issuer's keys; a failure is remembered (reason and time), not raised."""
        try:
            watch = SocketWatch()  # the client's sockets: both documents are bounded
            with httpx.Client(verify=self._verify, timeout=FETCH_TIMEOUT) as client:
                doc = self._document(client, f"{self.issuer}/.well-known/openid-configuration",
                                     watch)
                jwks_uri = doc.get("jwks_uri")
                if not isinstance(jwks_uri, str) or not jwks_uri.startswith(
                        ("https://", "http://")):
                    raise ValueError("its discovery document has no http(s) jwks_uri")
                body = self._document(client, jwks_uri, watch)
                if not isinstance(body.get("keys"), list):
                    raise ValueError("its key set is not a JSON object with a keys list")
                try:
                    keys = jwt.PyJWKSet.from_dict(body).keys
                except jwt.PyJWKSetError:
                    # a well-formed set without a usable key is the issuer's answer, not a
                    # failed fetch: keys it withdrew must stop verifying now, not after
                    # the grace (found in review)
                    keys = []
                    get_logger().warning("the OpenID issuer's key set has no usable key",
                                         extra={"issuer": self.issuer})
        except (httpx.HTTPError, KeyError, ValueError, ProtocolError, jwt.PyJWTError) as exc:
            with self._lock:
                self._failed = (self._clock(), f"cannot fetch the OpenID issuer's keys: {exc}")
            get_logger().warning("OpenID issuer's keys not fetched", extra={
                "issuer": self.issuer, "reason": str(exc)[:500]})
            return
        with self._lock:
            self._keys = {k.key_id: k for k in keys if k.key_id}
            self._fetched = self._clock()
            self._failed = None

    def _cached(self, kid: str) -> tuple[Any, bool]:
        """The cached key of ``kid`` (None: unknown), and whether to fetch the keys first:
        when they are expired, or for an unknown kid when they are not recent (a key the
        issuer just added), so made-up kids cannot drive a fetch per request; never
        within JWKS_FAILED_RETRY of a failed fetch."""
        now = self._clock()
        with self._lock:
            fetched, failed = self._fetched, self._failed
            key = self._keys.get(kid)
        if failed is not None and now - failed[0] < JWKS_FAILED_RETRY:
            return key, False
        if fetched is None:
            return key, True
        age = now - fetched
        return key, age >= JWKS_TTL or (key is None and age >= JWKS_REFETCH_INTERVAL)

    def _usable(self) -> bool:
        """Whether the cached keys may still verify (fetched within TTL + grace)."""
        with self._lock:
            fetched = self._fetched
        return fetched is not None and self._clock() - fetched < JWKS_TTL + JWKS_STALE_GRACE

    def _key(self, kid: str) -> Any:
        key, due = self._cached(kid)
        if due:
            # one fetch at a time (found in review: when the keys fell due, every request
            # arriving during the fetch started its own and waited for it, tying up the
            # worker threads through an issuer's outage); the others go on with the keys
            # in the grace, and wait only when they have none or lack this kid
            if self._fetching.acquire(blocking=False):
                try:
                    if self._cached(kid)[1]:  # not fetched meanwhile by another thread
                        self._fetch()
                finally:
                    self._fetching.release()
            elif key is None or not self._usable():
                # each document is bounded (FETCH_TIMEOUT, headers included): a waiter
                # needs at most both; past that it answers 503, not wait on
                if not self._fetching.acquire(timeout=2 * FETCH_TIMEOUT + 1):
                    raise ApiError(503, "ServiceUnavailable",
                                   "the OpenID issuer's keys are being fetched; retry")
                self._fetching.release()
            key, _ = self._cached(kid)
        with self._lock:
            failed = self._failed
        if not self._usable():
            # fail closed: no keys, or keys too old to trust any longer
            why = failed[1] if failed is not None else "no keys fetched"
            raise ApiError(503, "ServiceUnavailable",
                           f"{why}; retried after {JWKS_FAILED_RETRY:g} s")
        if key is None:
            if failed is not None:
                # the kid may be the issuer's new key that the failed fetch would have
                # brought: the caller's token is not known bad, the issuer is unreachable
                # (a 401 here refused valid tokens through an outage; found in review)
                raise ApiError(503, "ServiceUnavailable",
                               f"bearer token: key id {kid!r} is not in the cached keys and "
                               f"{failed[1]}; retried after {JWKS_FAILED_RETRY:g} s")
            raise unauthorized(f"bearer token: key id {kid!r} is not in the issuer's JWKS")
        return key

    def verify(self, token: str) -> Principal:
        _check_header_json(token)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized(f"bearer token is not a JWT: {exc}") from exc
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise unauthorized("bearer token has no 'kid' header")
        key = self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=["RS256", "ES256", "PS256"],
                issuer=self.issuers,
                audience=self.audience,
                options={"require": ["exp", "iss", "aud"], "verify_aud": True},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise unauthorized(f"bearer token rejected: {exc}") from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list):
            roles = []
        name = str(claims.get("oid") or claims.get("sub") or "unknown")
        return Principal(name, tuple(str(r) for r in roles), "oidc")


def _check_header_json(token: str) -> None:
    """Read the bearer JWT's header with the service's depth-limited JSON reader first:
    PyJWT's own parse of a deeply nested header would end in a RecursionError."""
    head = token.split(".", 1)[0]
    try:
        raw = b64url_decode(head)
    except (binascii.Error, ValueError):
        raise unauthorized("bearer token is not a JWT: its header is not base64url") from None
    try:
        read_json(raw, field="bearer token header")
    except ProtocolError as exc:
        raise unauthorized(f"bearer token is not a JWT: {exc}") from None


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Authorization header must be 'Bearer <token>'")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise unauthorized("bearer token is too long")
    return token


def authenticate(request: Request) -> Principal | None:
    """The caller's principal, None when no credentials were sent; 401 when they are bad."""
    token = bearer_token(request)
    if token is None:
        return None
    state = service_state(request)
    for admin in state.settings.admin_tokens:
        if hmac.compare_digest(token.encode(), admin.encode()):
            return Principal("admin", (), "admin-token")
    verifier = state.oidc
    if verifier is None:
        raise unauthorized(
            "bearer token is not a configured admin token and no OpenID issuer is configured"
        )
    return verifier.verify(token)


def require_policy_writer(request: Request, ctx: CurrentProvider) -> Principal:
    """Every policy and signer write, in every trust model: an authenticated principal
    holding the write role (a static admin token, or an OIDC bearer token with
    ``Settings.oidc_write_role``).  As in MAA, the Isolated model's signature on the
    request body is checked in addition (by the handler); it does not replace this."""
    principal = authenticate(request)
    if principal is None:
        raise unauthorized(
            f"provider {ctx.name!r}: policy and signer changes need a bearer token "
            f"(an admin token or an OpenID token with the write role), in every trust model"
        )
    role = service_state(request).settings.oidc_write_role
    if not principal.has_role(role):
        raise unauthorized(f"principal {principal.name!r} lacks the role {role!r}")
    return principal


def require_attest_auth(request: Request, ctx: CurrentProvider) -> Principal | None:
    """Attestation: anonymous unless the provider requires authentication."""
    if not ctx.attest_auth_required:
        return None
    principal = authenticate(request)
    if principal is None:
        raise unauthorized(f"provider {ctx.name!r} requires an authenticated caller to attest")
    return principal


#: ``principal: PolicyWriter`` = the caller allowed to change policies and signers
PolicyWriter = Annotated[Principal, Depends(require_policy_writer)]
#: ``principal: AttestCaller`` = the attesting caller (None when anonymous is allowed)
AttestCaller = Annotated[Principal | None, Depends(require_attest_auth)]
