"""A real OpenID token issuer on loopback for the monitor's report tests.

``Issuer`` serves OpenID metadata (for its URL and for the ``/providers/NAME`` under it
it is given, as the service does) and one RS256 key set, or an endless flood in place of the key
set; ``token`` mints real RS256 JWTs (PyJWT) for a VM id and an issuer URL.
(``tests/conftest.py`` puts this folder on ``sys.path``.)
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

__all__ = ["FLOOD_BYTES", "KID", "Issuer"]

KID = "test-key-1"
_METADATA = "/.well-known/openid-configuration"
#: what the flooding issuer would send in all: far past any socket buffer
FLOOD_BYTES = 96 * 1024 * 1024
_CHUNK = b" " * (64 * 1024)


class Issuer:
    """An OpenID issuer on loopback whose key set is either real or an endless flood."""

    def __init__(self, providers: tuple[str, ...] = ()) -> None:
        #: the issuer's own path and ``/providers/NAME`` for these names serve metadata
        self.paths = {""} | {f"/providers/{name}" for name in providers}
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = json.dumps({"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]})
        self.flood = False
        #: requests served
        self.requests = 0
        #: key-set bytes sent per request before the reader went away
        self.sent: list[int] = []
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a body that ends when the connection does

            def do_GET(self) -> None:
                outer.requests += 1
                if self.path.endswith(_METADATA) and self.path[:-len(_METADATA)] in outer.paths:
                    # the issuer itself and the providers under it it was given
                    base = outer.url + self.path[:-len(_METADATA)]
                    body = json.dumps({"issuer": base, "jwks_uri": f"{base}/keys"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if not outer.flood:
                    body = outer.jwks.encode()
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.end_headers()  # no Content-Length: nothing to refuse up front
                sent = 0
                try:
                    self.wfile.write(b'{"keys": [')
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

    def token(self, vm_id: str, iss: str | None = None) -> str:
        now = int(time.time())
        claims = {"iss": iss or self.url, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex,
                  t.VMID: vm_id}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})

    def close(self) -> None:
        stop_http(self.http)
