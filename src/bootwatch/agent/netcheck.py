"""``bootwatch agent netcheck``: can this machine reach the attestation provider?

Step by step, as the agent itself would go, so the failing hop is named:
``dns`` (the provider's name; with a proxy, the proxy resolves it and a local
failure is only a warning), ``proxy`` (which proxy and why, per libcurl's
rules; the proxy's answer to CONNECT), ``tcp_connect``, ``tls`` (the chain
the server presented, and the verify result), ``http`` (GET of the OpenID
metadata, the issuer) and ``clock`` (skew against the ``Date`` header: tokens
carry ``iat``/``exp``, a skewed clock makes valid tokens look expired).
A failed step stops the ones that depend on it.  Reachable means the OpenID
metadata was fetched and parsed.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography import x509

from bootwatch.agent.proxy import ProxyChoice, choose_proxy
from bootwatch.agent.transport import Transport
from bootwatch.errors import BootwatchError

__all__ = ["NetcheckReport", "Step", "netcheck"]

#: clock skew above this is reported as a warning (tokens are checked with 60 s leeway)
SKEW_WARN = 60.0


@dataclass(frozen=True)
class Step:
    name: str
    result: str  # ok | fail | warn | skip
    detail: str
    lines: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "result": self.result, "detail": self.detail,
                "lines": list(self.lines), **dict(self.data)}


@dataclass(frozen=True)
class NetcheckReport:
    url: str
    steps: tuple[Step, ...]
    reachable: bool

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.result == "fail"), None)

    @property
    def verdict(self) -> str:
        if self.reachable:
            return f"REACHABLE: {self.url} served its OpenID metadata"
        bad = self.failed
        where = f" at {bad.name}: {bad.detail}" if bad else ""
        return f"NOT REACHABLE: {self.url}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "reachable": self.reachable, "verdict": self.verdict,
                "steps": [s.to_json() for s in self.steps]}


def _cert_line(der: bytes) -> str:
    try:
        c = x509.load_der_x509_certificate(der)
    except ValueError:
        return f"(unparseable certificate, {len(der)} bytes)"
    return (f"subject {c.subject.rfc4514_string()}; issuer {c.issuer.rfc4514_string()}; "
            f"not after {c.not_valid_after_utc:%Y-%m-%d}")


def _presented_chain(sock: ssl.SSLSocket) -> list[bytes]:
    """The chain the server sent (private CPython API on 3.11/3.12, public from 3.13)."""
    getter = getattr(sock, "get_unverified_chain", None)
    if getter is None:
        inner = getattr(sock, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
            out = []
            for c in chain:
                out.append(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
            return out
        except (ssl.SSLError, AttributeError, ValueError):
            pass
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _connect(host: str, port: int, choice: ProxyChoice, timeout: float,
             steps: list[Step]) -> socket.socket | None:
    """TCP to the target (directly or through a proxy's CONNECT); appends steps."""
    if choice.url is None:
        try:
            s = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            steps.append(Step("tcp_connect", "fail",
                              f"TCP connection to {host}:{port} failed: "
                              f"{exc.strerror or exc}"))
            return None
        peer = s.getpeername()
        steps.append(Step("tcp_connect", "ok", f"connected to {peer[0]}:{peer[1]}"))
        return s
    p = urlsplit(choice.url)
    phost, pport = p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
    try:
        s = socket.create_connection((phost, pport), timeout=timeout)
    except OSError as exc:
        steps.append(Step("proxy_connect", "fail",
                          f"cannot connect to the proxy {choice.display}: {exc.strerror or exc}"))
        return None
    auth = ""
    if p.username is not None:
        cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = f"Proxy-Authorization: Basic {base64.b64encode(cred).decode()}\r\n"
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError as exc:
        s.close()
        steps.append(Step("proxy_connect", "fail",
                          f"the proxy {choice.display} did not answer CONNECT: {exc}"))
        return None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:200]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        s.close()
        steps.append(Step("proxy_connect", "fail",
                          f"the proxy {choice.display} refused CONNECT {host}:{port}: "
                          f"{status_line or '(no answer)'}"))
        return None
    steps.append(Step("proxy_connect", "ok",
                      f"{choice.display} tunnels to {host}:{port} ({status_line})"))
    steps.append(Step("tcp_connect", "ok", f"through the proxy to {host}:{port}"))
    return s


def netcheck(
    url: str,
    *,
    ca: Path | None = None,
    proxy: str | None = None,
    no_proxy: str | None = None,
    timeout: float = 10.0,
    environ: Mapping[str, str] | None = None,
) -> NetcheckReport:
    """Run every step against ``url`` (``proxy``/``no_proxy`` as in the configuration)."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    steps: list[Step] = []
    choice = choose_proxy(url, configured=proxy, configured_no_proxy=no_proxy, environ=env)

    def done(reachable: bool) -> NetcheckReport:
        return NetcheckReport(url, tuple(steps), reachable)

    # dns
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addrs = sorted({str(i[4][0]) for i in infos})
        steps.append(Step("dns", "ok", f"{host} -> {', '.join(addrs)}",
                          data={"addresses": addrs}))
    except OSError as exc:
        why = exc.strerror or str(exc)
        if choice.url is None:
            steps.append(Step("dns", "fail", f"DNS lookup of {host} failed: {why}"))
            return done(False)
        steps.append(Step("dns", "warn", f"no local answer for {host} ({why}); "
                          "the proxy resolves it"))
    # proxy
    steps.append(Step("proxy", "ok" if choice.url else "skip",
                      f"{choice.display} ({choice.source})",
                      data={"proxy": choice.display, "source": choice.source}))
    sock = _connect(host, port, choice, timeout, steps)
    if sock is None:
        return done(False)
    # tls
    if parts.scheme == "https":
        try:
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        except OSError as exc:  # a CA bundle from the configuration that cannot be read
            sock.close()
            reason = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) \
                else str(exc)
            steps.append(Step("tls", "fail", f"cannot load the CA bundle {ca}: {reason}"))
            return done(False)
        try:
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                chain = _presented_chain(tls)
                steps.append(Step("tls", "ok", f"{tls.version()}, certificate verified for "
                                  f"{host}", tuple(_cert_line(c) for c in chain)))
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or exc.reason or str(exc)
            lines = _unverified_chain(host, port, choice, timeout)
            steps.append(Step("tls", "fail", f"TLS handshake with https://{host}:{port} failed: "
                              f"certificate verify failed ({why})", lines))
            return done(False)
        except (ssl.SSLError, OSError) as exc:
            steps.append(Step("tls", "fail",
                              f"TLS handshake with https://{host}:{port} failed: {exc}"))
            return done(False)
    else:
        sock.close()
        steps.append(Step("tls", "skip", "plain http (no TLS)"))
    # http + clock
    try:
        t = Transport(url, ca=ca, proxy=choice.url, timeout=timeout)
    except BootwatchError as exc:
        steps.append(Step("http", "fail", str(exc)))
        return done(False)
    try:
        before = time.time()
        resp = t.send("GET", "/.well-known/openid-configuration")
        after = time.time()
    except BootwatchError as exc:
        steps.append(Step("http", "fail", str(exc)))
        return done(False)
    finally:
        t.close()
    ok = False
    if resp.status_code == 200:
        try:
            meta = resp.json()
            issuer = meta.get("issuer") if isinstance(meta, dict) else None
            ok = isinstance(issuer, str) and isinstance(meta.get("jwks_uri"), str)
        except ValueError:
            issuer = None
        if ok:
            steps.append(Step("http", "ok", f"GET /.well-known/openid-configuration: 200, "
                              f"issuer {issuer}", data={"issuer": issuer}))
        else:
            steps.append(Step("http", "fail", "GET /.well-known/openid-configuration: 200 "
                              "but not OpenID metadata (no issuer/jwks_uri)"))
    else:
        steps.append(Step("http", "fail", f"GET /.well-known/openid-configuration answered "
                          f"HTTP {resp.status_code} {resp.reason_phrase}"))
    date = resp.headers.get("date")
    if date:
        try:
            server = parsedate_to_datetime(date).timestamp()
            skew = server - (before + after) / 2
            result = "ok" if abs(skew) <= SKEW_WARN else "warn"
            steps.append(Step("clock", result, f"local clock is {-skew:+.1f} s from the "
                              f"server's Date header (resolution 1 s)", data={"skew": -skew}))
        except (TypeError, ValueError):
            steps.append(Step("clock", "warn", f"unreadable Date header {date[:60]!r}"))
    else:
        steps.append(Step("clock", "skip", "the server sent no Date header"))
    return done(ok)


def _unverified_chain(host: str, port: int, choice: ProxyChoice, timeout: float
                      ) -> tuple[str, ...]:
    """The chain the server presents, read without verification (to show what failed)."""
    scratch: list[Step] = []
    sock = _connect(host, port, choice, timeout, scratch)
    if sock is None:
        return ()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            return tuple(f"presented: {_cert_line(c)}" for c in _presented_chain(tls))
    except (ssl.SSLError, OSError):
        return ()

