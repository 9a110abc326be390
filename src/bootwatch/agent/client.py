"""The agent's HTTP client for an MAA-compatible provider.

Three jobs: POST an AzureGuest request and return the sealed envelope, turn
a refusal into a :class:`~bootwatch.errors.ServiceError` carrying MAA's error
code and message, and verify an (unsealed) token the way a relying party
does, with only the provider's OpenID metadata and ``/certs`` (PyJWT).

When the provider cannot be reached the :class:`~bootwatch.errors.TransportError`
says which step failed (``dns``, ``proxy_connect``, ``tcp_connect``, ``tls``,
``http_status``, ``timeout`` or ``protocol``; see :mod:`bootwatch.agent.transport`),
because "connection failed" is useless to the person on call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from bootwatch.agent.transport import TlsContexts, Transport, retry_after_of
from bootwatch.errors import ProtocolError, ServiceError, TransportError, VerificationError
from bootwatch.protocol.envelope import SealedEnvelope, decode_token_response
from bootwatch.protocol.health import FailedHop
from bootwatch.protocol.token import ATTESTATION_TYPE, AZUREVM

if TYPE_CHECKING:  # enrolment is imported when used: not on the attestation path
    from bootwatch.protocol.enroll import ChallengeResponse, EnrolledAik

__all__ = [
    "API_VERSION",
    "MAX_METADATA_BYTES",
    "AttestationClient",
]

#: MAA's data-plane version the Azure guest clients send
API_VERSION = "2020-10-01"
#: metadata and key documents are small; refuse anything absurd
MAX_METADATA_BYTES = 1024 * 1024


class AttestationClient:
    """One provider, one keep-alive connection pool (optionally through a proxy)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca: Path | None = None,
        timeout: float = 15.0,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self._t = Transport(base_url, ca=ca, proxy=proxy, timeout=timeout,
                            headers=dict(headers or {}), tls=tls)
        self.base_url = self._t.base_url

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> AttestationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- attestation -------------------------------------------------------

    def attest_azure_guest(self, request_body: bytes) -> SealedEnvelope:
        """POST ``/attest/AzureGuest``; the sealed token on 200, ServiceError otherwise."""
        resp = self._send(
            "POST",
            f"/attest/AzureGuest?api-version={API_VERSION}",
            content=request_body,
            headers={"Content-Type": "application/json"},
        )
        if resp.status_code != 200:
            raise _service_error(resp)
        try:
            return decode_token_response(resp.content)
        except ProtocolError as exc:
            # a proxy's block page, a captive portal or another service answering 200:
            # the path, not this VM, is wrong (it was reported as a local platform error,
            # with no URL named)
            raise TransportError(
                f"POST {resp.request.url} answered 200 without a sealed token ({exc}): "
                "something other than an attestation provider answered (a proxy or portal "
                "page, or a wrong URL)",
                step=FailedHop.HTTP_STATUS.value, target=self._t.origin) from None

    # --- enrolment (bootwatch.protocol.enroll) ------------------------------

    def enroll_challenge(self, body: bytes) -> ChallengeResponse:
        """Round one: POST the EK certificate and AIK; the credential on 200."""
        from bootwatch.protocol.enroll import CHALLENGE_PATH, decode_challenge_response

        resp = self._send("POST", f"{CHALLENGE_PATH}?api-version={API_VERSION}",
                          content=body, headers={"Content-Type": "application/json"})
        if resp.status_code != 200:
            raise _service_error(resp)
        return decode_challenge_response(resp.content)

    def enroll_activate(self, body: bytes) -> EnrolledAik:
        """Round two: POST the activated secret; the issued AIK certificate on 200."""
        from bootwatch.protocol.enroll import ACTIVATE_PATH, decode_enrolled_aik

        resp = self._send("POST", f"{ACTIVATE_PATH}?api-version={API_VERSION}",
                          content=body, headers={"Content-Type": "application/json"})
        if resp.status_code != 200:
            raise _service_error(resp)
        return decode_enrolled_aik(resp.content)

    # --- relying-party verification -----------------------------------------

    def openid_metadata(self) -> dict[str, Any]:
        resp = self._send("GET", "/.well-known/openid-configuration")
        if resp.status_code != 200:
            raise _service_error(resp)
        return _json_object(resp, "openid-configuration")

    def verify_token(self, token: str, *, leeway: float = 60.0) -> dict[str, Any]:
        """Verify an attestation token with only OpenID discovery and the JWKS.

        Checks the RS256 signature against the key whose ``kid`` the header
        names, ``iss`` equal to the discovered issuer, ``exp``/``nbf``, and that
        it is an ``azurevm`` token.  Returns the claims.
        """
        meta = self.openid_metadata()
        issuer = meta.get("issuer")
        jwks_uri = meta.get("jwks_uri")
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
            raise ProtocolError("issuer and jwks_uri must be strings", field="openid-configuration")
        resp = self._send("GET", jwks_uri)
        if resp.status_code != 200:
            raise _service_error(resp)
        jwks = _json_object(resp, "certs")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise VerificationError(f"token header unreadable: {exc}") from None
        if header.get("alg") != "RS256":
            raise VerificationError(f"token alg {header.get('alg')!r} is not RS256")
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise ProtocolError("keys must be a list", field="certs.keys")
        kid = header.get("kid")
        candidates = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid] or [
            k for k in keys if isinstance(k, dict)
        ]
        last: Exception | None = None
        for jwk in candidates:
            try:
                key = jwt.PyJWK(jwk, algorithm="RS256").key
                claims: dict[str, Any] = jwt.decode(
                    token, key, algorithms=["RS256"], issuer=issuer, leeway=leeway,
                    options={"require": ["exp", "iat", "iss"]},
                )
            except (jwt.PyJWTError, ValueError) as exc:
                last = exc
                continue
            if claims.get(ATTESTATION_TYPE) != AZUREVM:
                raise VerificationError(
                    f"token {ATTESTATION_TYPE} is {claims.get(ATTESTATION_TYPE)!r}, not {AZUREVM}"
                )
            return claims
        raise VerificationError(
            f"token signature does not verify with /certs (kid {kid!r}): {last}"
        )

    # --- transport ---------------------------------------------------------

    def _send(self, method: str, path_or_url: str, **kwargs: Any) -> httpx.Response:
        resp = self._t.send(method, path_or_url, **kwargs)
        bad_status = resp.status_code >= 500 or resp.status_code in (404, 405, 429)
        if bad_status and _maa_error(resp) is None:
            raise self._t.status_error(resp)
        return resp


def _maa_error(resp: httpx.Response) -> tuple[str, str] | None:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return err["code"], str(err.get("message", ""))
    return None


def _service_error(resp: httpx.Response) -> ServiceError | TransportError:
    parsed = _maa_error(resp)
    retry = None
    if resp.status_code == 429 or resp.status_code >= 500:
        retry = retry_after_of(resp)
    if parsed is None:
        origin = f"{resp.request.url.scheme}://{resp.request.url.host}:{resp.request.url.port}"
        return TransportError(
            f"{resp.request.method} {resp.request.url} answered HTTP {resp.status_code} "
            "without an MAA error body",
            step="http_status", target=origin, retry_after=retry,
        )
    return ServiceError(parsed[1], status=resp.status_code, error_code=parsed[0],
                        retry_after=retry)


def _json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    if len(resp.content) > MAX_METADATA_BYTES:
        raise ProtocolError("document too large", field=what)
    try:
        value = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("not JSON", field=what) from None
    if not isinstance(value, dict):
        raise ProtocolError("not a JSON object", field=what)
    return value
