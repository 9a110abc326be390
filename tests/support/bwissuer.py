"""A real OpenID token issuer on loopback for the monitor's report tests, and the
flooding JSON server it is built on.

``FloodingServer`` answers every GET with one JSON body, or with an endless flood in
its place: what a reader's size limit is tested against (the monitor's key-set and
service-tag reads).  ``Issuer`` is one whose body is an RS256 key set and which also
serves OpenID metadata (for its URL and for the ``/providers/NAME`` under it it is
given, as the service does); ``token`` mints real RS256 JWTs (PyJWT) for a VM id and
an issuer URL.  (``tests/conftest.py`` puts this folder on ``sys.path``.)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from bwwebhook import serve_http, stop_http
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.protocol import token as t

__all__ = ["FLOOD_BYTES", "KID", "FloodingServer", "Issuer"]

KID = "test-key-1"
_METADATA = "/.well-known/openid-configuration"
#: what a flooding server would send in all: far past any socket buffer
FLOOD_BYTES = 96 * 1024 * 1024
_CHUNK = b" " * (64 * 1024)


class FloodingServer:
    """A loopback HTTP server answering every GET with the JSON ``body`` or, once
    ``flood`` is set, with ``opening`` and then spaces up to :data:`FLOOD_BYTES`,
    without a Content-Length (nothing for the reader to refuse up front), so that only
    the reader's own limit stops it.  ``sent`` gets the flood bytes that left per
    request before the reader hung up, and ``done`` is set when a flood has ended."""

    def __init__(self, body: bytes, *, opening: bytes) -> None:
        self.body = body
        self.opening = opening
        self.flood = False
        #: requests served
        self.requests = 0
        #: flood bytes sent per request before the reader went away
        self.sent: list[int] = []
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a body that ends when the connection does

            def do_GET(self) -> None:
                outer.requests += 1
                fixed = outer.fixed(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if fixed is not None or not outer.flood:
                    body = outer.body if fixed is None else fixed
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.end_headers()  # no Content-Length: nothing to refuse up front
                sent = 0
                try:
                    self.wfile.write(outer.opening)
                    while sent < FLOOD_BYTES:
                        self.wfile.write(_CHUNK)
                        sent += len(_CHUNK)
                except OSError:
                    pass  # the monitor hung up
                finally:
                    outer.sent.append(sent)
                    outer.done.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.http, self.url = serve_http(Handler, threaded=True)

    def fixed(self, path: str) -> bytes | None:
        """A JSON answer for ``path`` that never floods; None: ``body`` or the flood."""
        return None

    def close(self) -> None:
        stop_http(self.http)


class Issuer(FloodingServer):
    """An OpenID issuer on loopback whose key set is either real or an endless flood."""

    def __init__(self, providers: tuple[str, ...] = ()) -> None:
        #: the issuer's own path and ``/providers/NAME`` for these names serve metadata
        self.paths = {""} | {f"/providers/{name}" for name in providers}
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        keys = json.dumps({"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]})
        super().__init__(keys.encode(), opening=b'{"keys": [')

    @property
    def jwks(self) -> str:
        """The key set served (a test may replace it)."""
        return self.body.decode()

    @jwks.setter
    def jwks(self, value: str) -> None:
        self.body = value.encode()

    def fixed(self, path: str) -> bytes | None:
        """OpenID metadata for the issuer itself and the providers under it it was given."""
        if not (path.endswith(_METADATA) and path[:-len(_METADATA)] in self.paths):
            return None
        base = self.url + path[:-len(_METADATA)]
        return json.dumps({"issuer": base, "jwks_uri": f"{base}/keys"}).encode()

    def token(self, vm_id: str, iss: str | None = None) -> str:
        now = int(time.time())
        claims = {"iss": iss or self.url, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex,
                  t.VMID: vm_id}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})
