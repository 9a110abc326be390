"""Verify the attestation token an agent's health report carries.

A report counts as healthy only when its token verifies: RS256 signature by a
key published in the issuer's OpenID metadata (``jwks_uri``), issuer among the
monitor's trusted issuers, not expired, and ``x-ms-azurevm-vmid`` equal to the
report's VM.  JWKS documents are cached per issuer in a bounded LRU owned by
the verifier (5 minutes; refetched once when a ``kid`` is unknown, at most
every 10 s, so a flood of forged kids cannot hammer the issuer).  Each metadata or
JWKS answer is read as a stream and dropped past 256 KB or the timeout in all.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from bootwatch.errors import ProtocolError
from bootwatch.httpread import read_bounded
from bootwatch.lru import BoundedLru
from bootwatch.protocol import token as t
from bootwatch.protocol.jsonread import read_json
from bootwatch.tlsverify import tls_verify

__all__ = ["TokenCheck", "TokenVerifier"]


@dataclass(frozen=True)
class TokenCheck:
    """What :meth:`TokenVerifier.check` found: ``verified_issuer`` and ``verified_jti``
    are the ``iss`` and ``jti`` of a token whose signature, expiry and VM id verified (""
    otherwise), ``why`` the reason it did not verify."""

    verified: bool
    why: str = ""
    verified_issuer: str = ""
    #: the verified token's ``jti`` (the monitor's token proof), "" when not verified
    verified_jti: str = ""
    #: the verified token's ``iat`` (seconds since the epoch), None when not verified
    verified_iat: float | None = None


#: a provider's name in an issuer URL (``.../providers/NAME``): nothing that would make
#: the URL point elsewhere once the metadata path is appended (``?``, ``#``, ``%``, ``/``)
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

_JWKS_TTL = 300.0
_REFETCH_MIN = 10.0
#: how long past ``_JWKS_TTL`` fetched keys still verify while the issuer cannot be reached
_STALE_GRACE = 3600.0
_MAX_DOC = 256 * 1024
#: fetches for issuers not in the cache, at most this many per _NEW_WINDOW seconds in all
_NEW_FETCHES = 10
_NEW_WINDOW = 10.0


class TokenVerifier:
    def __init__(self, trusted_issuers: tuple[str, ...], *, ca: str = "",
                 timeout: float = 5.0) -> None:
        self.trusted = tuple(i.rstrip("/") for i in trusted_issuers)
        self._verify = tls_verify(ca)
        self._timeout = timeout
        self._jwks: BoundedLru[str, tuple[float, dict[str, Any]]] = BoundedLru(64)
        # POST /reports is open: a token naming a made-up provider under a trusted issuer
        # (``.../providers/x1``, ``x2`` ...) made one outbound fetch per report.  A failed
        # issuer is not fetched again for _REFETCH_MIN, and issuers not in the cache get
        # at most _NEW_FETCHES fetches per _NEW_WINDOW in all
        self._failed: BoundedLru[str, tuple[float, str]] = BoundedLru(256)
        self._new_fetches: deque[float] = deque()
        self._lock = threading.Lock()

    def trusts(self, issuer: str) -> bool:
        iss = issuer.rstrip("/")
        for base in self.trusted:
            if iss == base:
                return True
            rest = iss[len(base):] if iss.startswith(base + "/providers/") else ""
            if rest and _PROVIDER_NAME.fullmatch(rest[len("/providers/"):]):
                return True
        return False

    def _fetch(self, url: str) -> dict[str, Any]:
        """One JSON document of the issuer: at most ``_MAX_DOC`` bytes, ``timeout`` s in all
        (:func:`bootwatch.httpread.read_bounded`: POST /reports is open, and an issuer, or
        whatever answers at its address, could otherwise hold a report's thread with an
        endless key set)."""
        with httpx.Client(verify=self._verify, timeout=self._timeout) as client:
            body = read_bounded(client, url, limit=_MAX_DOC, timeout=self._timeout)
        doc = read_json(body, field=url)
        if not isinstance(doc, dict):
            raise ValueError(f"{url}: not a JSON object")
        return doc

    def _keys(self, issuer: str, *, refresh: bool) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._jwks.get(issuer)
        if hit is not None and (now - hit[0] < _JWKS_TTL) and not (
            refresh and now - hit[0] > _REFETCH_MIN
        ):
            return hit[1]
        # keys fetched before serve a while longer when the issuer cannot be reached (found
        # in review: one failed refetch made every report unverified for its 10 s, and
        # the agent does not send a report again)
        stale = hit[1] if hit is not None and now - hit[0] < _JWKS_TTL + _STALE_GRACE else None
        failed = self._failed.get(issuer)
        if failed is not None and now - failed[0] < _REFETCH_MIN:
            if stale is not None:
                return stale
            raise ValueError(f"{failed[1]} (not fetched again for {_REFETCH_MIN:g} s)")
        if hit is None:
            with self._lock:
                while self._new_fetches and now - self._new_fetches[0] > _NEW_WINDOW:
                    self._new_fetches.popleft()
                if len(self._new_fetches) >= _NEW_FETCHES:
                    raise ValueError(f"more than {_NEW_FETCHES} issuers not seen before in "
                                     f"{_NEW_WINDOW:g} s; {issuer} is not fetched now")
                self._new_fetches.append(now)
        try:
            meta = self._fetch(issuer + "/.well-known/openid-configuration")
            jwks_uri = str(meta.get("jwks_uri", ""))
            a, b = urlsplit(jwks_uri), urlsplit(issuer)
            if (a.scheme, a.netloc) != (b.scheme, b.netloc):
                raise ValueError(f"jwks_uri {jwks_uri!r} is not on the issuer's origin")
            keys = self._fetch(jwks_uri)
        except (httpx.HTTPError, ValueError, ProtocolError) as exc:
            self._failed.put(issuer, (now, str(exc)[:300]))
            if stale is not None:
                return stale
            raise
        self._failed.pop(issuer)
        self._jwks.put(issuer, (now, keys))
        return keys

    def check(self, token: str, vm_id: str) -> TokenCheck:
        """Verify ``token`` for ``vm_id``.  Never raises for a bad token: the reason says
        what."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            return TokenCheck(False, f"the token is not a JWT: {exc}")
        issuer = str(claims.get("iss", ""))
        if not self.trusts(issuer):
            return TokenCheck(False, f"the token's issuer {issuer!r} is not trusted by this "
                                     "monitor")
        if header.get("alg") != "RS256":
            return TokenCheck(False, f"the token's alg {header.get('alg')!r} is not RS256")
        kid = str(header.get("kid", ""))
        try:
            key = None
            for refresh in (False, True):
                keys = self._keys(issuer.rstrip("/"), refresh=refresh)
                for jwk in keys.get("keys", []):
                    if isinstance(jwk, dict) and jwk.get("kid") == kid:
                        key = jwt.PyJWK(jwk, algorithm="RS256").key
                        break
                if key is not None:
                    break
        except (httpx.HTTPError, ValueError, ProtocolError, jwt.PyJWTError) as exc:
            return TokenCheck(False, f"the issuer's keys could not be fetched: {exc}")
        except (TypeError, KeyError) as exc:  # PyJWK on a malformed key of the issuer
            return TokenCheck(False, f"the issuer's key {kid!r} is malformed "
                                     f"({exc.__class__.__name__})")
        if key is None:
            return TokenCheck(False, f"no key {kid!r} in the issuer's JWKS")
        try:
            verified = jwt.decode(token, key=key, algorithms=["RS256"],
                                  options={"require": ["exp", "iat"], "verify_aud": False},
                                  leeway=60)
        except jwt.PyJWTError as exc:
            return TokenCheck(False, f"the token does not verify: {exc}")
        token_vm = str(verified.get(t.VMID, "")).upper()
        if not token_vm:
            return TokenCheck(False, "the token carries no x-ms-azurevm-vmid")
        if token_vm != vm_id.upper():
            return TokenCheck(False, f"the token is for VM {token_vm}, not {vm_id}")
        jti = verified.get(t.JTI)
        iat = verified.get("iat")
        return TokenCheck(True, verified_issuer=str(verified.get("iss", "")),
                          verified_jti=jti[:128] if isinstance(jti, str) else "",
                          verified_iat=float(iat) if isinstance(iat, int | float) else None)
