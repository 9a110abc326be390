"""The service's bearer-token keys survive an issuer's blip, and an issuer that is down
is not asked on every request.

A defaults audit found ``OidcVerifier`` dropped its keys' use the moment they were
``JWKS_TTL`` (300 s) old: one failed refetch turned every policy write into a 503, and
while the issuer stayed down every request waited for a fetch of its own.  Now keys
fetched less than ``JWKS_TTL + JWKS_STALE_GRACE`` ago keep verifying, a failed fetch is
not repeated for ``JWKS_FAILED_RETRY`` seconds, and past the grace it fails closed.

A real OpenID issuer on loopback (discovery document and JWKS over HTTP) that the test
takes down and brings back; the verifier's clock is the test's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from bwservers import ThreadServer, bound_socket
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Response

from bootwatch.service.auth import (
    JWKS_FAILED_RETRY,
    JWKS_STALE_GRACE,
    JWKS_TTL,
    MAX_DOCUMENT_BYTES,
    OidcVerifier,
)
from bootwatch.service.errors import ApiError
from bootwatch.service.settings import Settings

AUD = "https://attest.azure.net"


class Issuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.down = False
        self.huge = False
        self.empty = False
        self.slow = 0.0
        self.fetches = 0
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def meta() -> Any:
            self.fetches += 1
            time.sleep(self.slow)
            if self.down:
                return Response(status_code=503)
            return {"issuer": self.url, "jwks_uri": self.url + "/keys"}

        @app.get("/keys")
        def keys() -> Any:
            if self.huge:
                return Response(b'{"keys": [' + b" " * (MAX_DOCUMENT_BYTES + 10) + b"]}",
                                media_type="application/json")
            if self.empty:
                return {"keys": []}
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
            jwk["kid"] = "k1"
            return {"keys": [jwk]}

        self.server = ThreadServer(app, bound_socket()).start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    @staticmethod
    def mint_with(key: Any, iss: str, kid: str = "k1") -> str:
        now = int(time.time())
        return jwt.encode({"iss": iss, "sub": "u", "aud": AUD, "roles": ["w"],
                           "iat": now, "exp": now + 600}, key, algorithm="RS256",
                          headers={"kid": kid})

    def mint(self, kid: str = "k1") -> str:
        now = int(time.time())
        return jwt.encode({"iss": self.url, "sub": "u", "aud": AUD, "roles": ["w"],
                           "iat": now, "exp": now + 600}, self.key, algorithm="RS256",
                          headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    i = Issuer()
    try:
        yield i
    finally:
        i.server.stop()


def test_keys_outlive_an_issuer_blip_and_a_down_issuer_is_not_asked_each_request(
        issuer: Issuer) -> None:
    now = [1000.0]
    v = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience=AUD), clock=lambda: now[0])
    token = issuer.mint()
    assert v.verify(token).name == "u" and issuer.fetches == 1
    issuer.down = True
    now[0] += JWKS_TTL + 1  # due again; the issuer is down: the keys still verify
    for _ in range(20):
        assert v.verify(token).name == "u"
    assert issuer.fetches == 2  # one failed fetch, not one per request
    now[0] += JWKS_FAILED_RETRY + 1
    assert v.verify(token).name == "u" and issuer.fetches == 3
    issuer.down = False
    now[0] += JWKS_FAILED_RETRY + 1  # back: fetched again, fresh keys
    assert v.verify(token).name == "u" and issuer.fetches == 4
    assert v.verify(token).name == "u" and issuer.fetches == 4


def test_past_the_grace_it_fails_closed_with_the_reason(issuer: Issuer) -> None:
    now = [1000.0]
    v = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience=AUD), clock=lambda: now[0])
    token = issuer.mint()
    v.verify(token)
    issuer.down = True
    now[0] += JWKS_TTL + JWKS_STALE_GRACE + 1
    with pytest.raises(ApiError) as caught:
        v.verify(token)
    assert caught.value.status == 503
    assert "cannot fetch the OpenID issuer's keys" in caught.value.message
    assert "503" in caught.value.message


def test_a_key_set_over_the_size_limit_is_refused_not_read_whole(issuer: Issuer) -> None:
    issuer.huge = True
    v = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience=AUD))
    with pytest.raises(ApiError) as caught:
        v.verify(issuer.mint())
    assert caught.value.status == 503 and "larger than" in caught.value.message


def test_a_new_key_id_during_an_outage_is_a_503_not_a_401(issuer: Issuer) -> None:
    # the issuer rotated to a key the cache lacks while it cannot be reached: the token is
    # not known bad, so the caller is told to retry, not that its token is refused
    now = [1000.0]
    v = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience=AUD), clock=lambda: now[0])
    v.verify(issuer.mint())
    issuer.down = True
    now[0] += JWKS_TTL + 1
    with pytest.raises(ApiError) as caught:
        v.verify(issuer.mint(kid="k2"))
    assert caught.value.status == 503 and "'k2' is not in the cached keys" in caught.value.message
    assert v.verify(issuer.mint()).name == "u"  # the cached key still verifies
    issuer.down = False
    now[0] += JWKS_FAILED_RETRY + 1
    with pytest.raises(ApiError) as caught:  # reachable again: an unknown kid is a 401
        v.verify(issuer.mint(kid="k2"))
    assert caught.value.status == 401


def test_keys_the_issuer_withdrew_stop_verifying_at_once(issuer: Issuer) -> None:
    # an empty key set is the issuer's answer, not a failed fetch: no grace for it
    now = [1000.0]
    v = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience=AUD), clock=lambda: now[0])
    v.verify(issuer.mint())
    issuer.empty = True
    now[0] += JWKS_TTL + 1
    with pytest.raises(ApiError) as caught:
        v.verify(issuer.mint())
    assert caught.value.status == 401 and "not in the issuer's JWKS" in caught.value.message


def test_requests_arriving_while_the_keys_are_fetched_share_one_fetch(issuer: Issuer) -> None:
    # when the keys fall due and the issuer is slow, one thread fetches; the others verify
    # with the keys in the grace instead of each starting (and waiting for) its own fetch
    import threading

    now = [1000.0]
    v = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience=AUD), clock=lambda: now[0])
    token = issuer.mint()
    v.verify(token)
    issuer.slow, issuer.down = 1.0, True
    now[0] += JWKS_TTL + 1
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(v.verify(token).name))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert names == ["u"] * 20
    assert issuer.fetches == 2  # the first fetch and one refetch for all twenty


def test_an_issuer_trickling_its_headers_is_cut_off_with_a_503() -> None:
    """httpx's timeout bounds each read: an issuer sending its headers a byte at a time
    held the fetch, and every request waiting on it, for ever (found in review)."""
    from bwtrickle import Trickler

    from bootwatch.service.auth import FETCH_TIMEOUT

    trickler = Trickler(gap=0.5, lasts=60, head=True)
    try:
        v = OidcVerifier(Settings(oidc_issuer=f"http://127.0.0.1:{trickler.port}",
                                  oidc_audience=AUD))
        with pytest.raises(ApiError) as caught:
            v.verify(Issuer.mint_with(rsa.generate_private_key(65537, 2048), "x"))
    finally:
        trickler.close()
    assert caught.value.status == 503
    assert f"took longer than {FETCH_TIMEOUT:g} s" in caught.value.message
    assert trickler.sent < 30  # cut off after about FETCH_TIMEOUT, not the 60 s
