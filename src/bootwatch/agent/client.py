"""The agent's HTTP client for an MAA-compatible provider.

Three jobs: POST an AzureGuest request and return the sealed envelope, turn
a refusal into a :class:`~bootwatch.errors.ServiceError` carrying MAA's error
code and message, and verify an (unsealed) token the way a relying party
does, with only the provider's OpenID metadata and ``/certs`` (PyJWT).

When the provider cannot be reached the :class:`~bootwatch.errors.TransportError`
says which step failed (``dns``, ``tcp_connect``, ``tls``, ``http_status``,
``timeout`` or ``protocol``), because "connection failed" is useless to the
person on call.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from bootwatch.errors import ProtocolError, ServiceError, TransportError, VerificationError
from bootwatch.protocol.enroll import (
    ACTIVATE_PATH,
    CHALLENGE_PATH,
    ChallengeResponse,
    EnrolledAik,
    decode_challenge_response,
    decode_enrolled_aik,
)
from bootwatch.protocol.envelope import SealedEnvelope, decode_token_response
from bootwatch.protocol.token import ATTESTATION_TYPE, AZUREVM

#: MAA's data-plane version the Azure guest clients send
API_VERSION = "2020-10-01"
#: metadata and key documents are small; refuse anything absurd
MAX_METADATA_BYTES = 1024 * 1024


class AttestationClient:
    """One provider, one keep-alive connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        ca: Path | None = None,
        timeout: float = 15.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {base_url!r}", step="protocol")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            verify = ssl.create_default_context(cafile=str(ca))
        self._http = httpx.Client(
            verify=verify, timeout=timeout, headers=dict(headers or {}), follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

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
        return decode_token_response(resp.content)

    # --- enrolment (bootwatch.protocol.enroll) ------------------------------

    def enroll_challenge(self, body: bytes) -> ChallengeResponse:
        """Round one: POST the EK certificate and AIK; the credential on 200."""
        resp = self._send("POST", f"{CHALLENGE_PATH}?api-version={API_VERSION}",
                          content=body, headers={"Content-Type": "application/json"})
        if resp.status_code != 200:
            raise _service_error(resp)
        return decode_challenge_response(resp.content)

    def enroll_activate(self, body: bytes) -> EnrolledAik:
        """Round two: POST the activated secret; the issued AIK certificate on 200."""
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
        url = path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"
        try:
            resp = self._http.request(method, url, **kwargs)
        except httpx.ConnectTimeout:
            raise TransportError(
                f"no TCP connection to {self._host}:{self._port} within the timeout",
                step="tcp_connect",
            ) from None
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{method} {url}: no answer in time ({exc})", step="timeout"
            ) from None
        except httpx.ConnectError as exc:
            raise self._classify(exc) from None
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {url}: {exc}", step="protocol") from None
        if len(resp.content) > MAX_METADATA_BYTES * 4:
            raise TransportError(f"{method} {url}: response too large", step="protocol")
        bad_status = resp.status_code >= 500 or resp.status_code in (404, 405, 429)
        if bad_status and _maa_error(resp) is None:
            raise TransportError(
                f"{method} {url} answered HTTP {resp.status_code}", step="http_status"
            )
        return resp

    def _classify(self, exc: httpx.ConnectError) -> TransportError:
        chain = _causes(exc)
        if any(isinstance(c, ssl.SSLError) for c in chain) or "SSL" in str(exc):
            return TransportError(
                f"TLS handshake with {self._host}:{self._port} failed ({exc}); "
                "pass the provider's CA with --ca",
                step="tls",
            )
        if any(isinstance(c, socket.gaierror) for c in chain) or not _resolves(self._host):
            return TransportError(f"cannot resolve host name {self._host!r}", step="dns")
        return TransportError(
            f"TCP connection to {self._host}:{self._port} failed ({exc})", step="tcp_connect"
        )


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


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
    if parsed is None:
        return TransportError(
            f"{resp.request.method} {resp.request.url} answered HTTP {resp.status_code} "
            "without an MAA error body",
            step="http_status",
        )
    return ServiceError(parsed[1], status=resp.status_code, error_code=parsed[0])


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
