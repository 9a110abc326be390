"""HTTP(S) for the agent, with failures named by the hop that failed.

One :class:`Transport` per base URL (keep-alive pool, optional proxy, optional
CA bundle).  Every failure becomes a :class:`~bootwatch.errors.TransportError`
whose ``step`` is a :class:`~bootwatch.protocol.health.FailedHop` value and
whose ``target`` is the URL (``https://host:port``), because the person on
call needs "TLS handshake with https://attest.example:443 failed: certificate
verify failed (unable to get local issuer certificate)", not "connection
failed".  429 and 5xx carry the server's ``Retry-After`` (seconds or an HTTP
date) so the daemon can honour it.

TLS contexts come from :func:`tls_context`; a daemon keeps them in its own
:class:`TlsContexts` (once per CA bundle and per version of its file), built in its
idle parent so that each forked cycle inherits them instead of loading the bundles
again.
"""

from __future__ import annotations

import email.utils
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bootwatch.agent.proxy import redact
from bootwatch.errors import TransportError
from bootwatch.httpdeadline import SocketWatch
from bootwatch.lru import BoundedLru
from bootwatch.protocol.health import FailedHop

__all__ = ["BODY_DEADLINE_FACTOR", "MAX_RESPONSE_BYTES", "TlsContexts", "Transport",
           "parse_retry_after", "retry_after_of", "tls_context"]

#: no agent-side response is larger than a few hundred KB (metadata, tokens, reports)
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: a whole answer's body must arrive within this many times the per-read timeout
BODY_DEADLINE_FACTOR = 4
#: Retry-After values above this are capped (a misconfigured server cannot park an agent)
MAX_RETRY_AFTER = 24 * 3600.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes "\u00b2", float() does not
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


def retry_after_of(resp: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds; an HTTP date is read against the answer's
    own ``Date`` when it has one (RFC 9110 10.2.3), so a server whose clock differs from
    this VM's still gets the wait it asked for: against the local clock, a server minutes
    behind would see every agent retry at once, and one ahead would park them."""
    server_now: float | None = None
    date = resp.headers.get("date")
    if date:
        try:
            server_now = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            server_now = None
    return parse_retry_after(resp.headers.get("retry-after"), now=server_now)


class TlsContexts:
    """Verifying client contexts by CA bundle, owned by one daemon (bounded).

    Why a cache: loading a bundle costs about 10 ms of CPU, and the daemon builds its
    contexts once in its idle parent so that each forked cycle inherits them.  Why owned:
    a module-level table was process-wide state every importer shared.  A context is
    reused while its file is unchanged (path, mtime and size), so a replaced bundle is
    read again on the next request; older versions age out of the bound."""

    def __init__(self, size: int = 8) -> None:
        self._contexts: BoundedLru[tuple[str | None, int, int], ssl.SSLContext] = (
            BoundedLru(size))

    def get(self, ca: Path | None = None) -> ssl.SSLContext:
        """:func:`tls_context` of ``ca``, built once per version of its file."""
        if ca is None:
            key: tuple[str | None, int, int] = (None, 0, 0)
        else:
            st = os.stat(ca)  # OSError: the caller names the bundle
            key = (str(ca), st.st_mtime_ns, st.st_size)
        return self._contexts.get_or_compute(key, lambda: tls_context(ca))


def tls_context(ca: Path | None = None) -> ssl.SSLContext:
    """A verifying client context for ``ca`` (None: the system's trust store, as libcurl
    and netcheck use it, honouring ``SSL_CERT_FILE``/``SSL_CERT_DIR``; certifi's bundle,
    httpx's default, missed a proxy's or a private CA installed in the OS store, so
    netcheck said "verified" while every attestation failed TLS).

    The context is what httpx would build itself (``ssl.create_default_context``):
    verification and hostname checks on, same minimum protocol.  OSError (ssl.SSLError
    included) when the bundle cannot be read.
    """
    return ssl.create_default_context(cafile=str(ca) if ca is not None else None)


class Transport:
    """One origin (scheme://host:port), one connection pool, failures named by hop."""

    def __init__(
        self,
        base_url: str,
        *,
        ca: Path | None = None,
        proxy: str | None = None,
        timeout: float = 15.0,
        headers: dict[str, str] | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {base_url!r}", step="protocol",
                                 target=base_url)
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        shown = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        self.origin = f"{parts.scheme}://{shown}:{self.port}"
        self.proxy = proxy
        self.timeout = timeout
        try:
            verify = tls.get(ca) if tls is not None else tls_context(ca)
        except OSError as exc:  # ssl.SSLError is an OSError
            why = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else exc
            raise TransportError(f"cannot load the CA bundle {ca}: {why}", step="tls",
                                 target=self.origin) from None
        # trust_env=False: the proxy is chosen by bootwatch.agent.proxy (libcurl's rules)
        self.http = httpx.Client(
            verify=verify, timeout=timeout, headers=headers or {}, follow_redirects=False,
            proxy=proxy, trust_env=False,
        )
        #: the client's sockets, to cut a request off at its whole deadline
        self._watch = SocketWatch()

    def close(self) -> None:
        self.http.close()

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"

    def send(self, method: str, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """One request; TransportError naming the hop for anything but an HTTP answer."""
        url = self.url(path_or_url)
        # how far the connection got (httpcore's trace events), to name the hop that timed
        # out: httpcore raises ConnectTimeout for a stalled TLS handshake too, and a proxy
        # that never answers CONNECT ends in a read timeout
        progress: set[str] = set()

        def trace(name: str, info: dict[str, Any]) -> None:
            progress.add(name)
            self._watch.trace(name, info)

        # the whole request, headers included: httpx's timeout bounds each read, so a peer
        # trickling its status line held a request for ever (found in review)
        whole = (BODY_DEADLINE_FACTOR + 1) * self.timeout
        with self._watch.bound(whole) as bound:
            try:
                return self._send(method, url, trace, progress, kwargs)
            except TransportError:
                if bound.passed:  # the hop it stalled at, as for a read timeout
                    raise self._timed_out(progress, method, url, whole=whole) from None
                raise

    def _send(self, method: str, url: str, trace: Any, progress: set[str],
              kwargs: dict[str, Any]) -> httpx.Response:
        try:
            request = self.http.build_request(method, url, extensions={"trace": trace}, **kwargs)
            resp = self.http.send(request, stream=True)
            try:
                body = self._read_limited(resp, method, url)
            finally:
                resp.close()
        except httpx.ProxyError as exc:
            raise TransportError(
                f"proxy CONNECT to {self.origin} through {redact(self.proxy or '')} "
                f"failed: the proxy answered {exc}",
                step=FailedHop.PROXY_CONNECT.value, target=self.origin,
            ) from None
        except httpx.TimeoutException:
            raise self._timed_out(progress, method, url) from None
        except httpx.ConnectError as exc:
            raise self._classify(exc) from None
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {url}: {exc}", step="protocol",
                                 target=self.origin) from None
        # the body read within the limit is the response's content (what .read() keeps)
        resp._content = body
        return resp

    def _timed_out(self, progress: set[str], method: str, url: str,
                   whole: float | None = None) -> TransportError:
        """The hop a timeout belongs to, from how far the connection got (``whole``: the
        request's whole deadline passed, not one read's timeout)."""
        within = f"within {whole if whole is not None else self.timeout:g} s"
        tcp_done = "connection.connect_tcp.complete" in progress
        if self.proxy:
            proxy = redact(self.proxy)
            if not tcp_done:
                return TransportError(f"no TCP connection to the proxy {proxy} {within}",
                                      step=FailedHop.PROXY_CONNECT.value, target=self.origin)
            if "proxy.start_tls.started" in progress and \
                    "proxy.start_tls.complete" not in progress:
                return TransportError(
                    f"the proxy {proxy} tunnelled to {self.origin}, but the TLS handshake "
                    f"did not complete {within}", step=FailedHop.TLS.value, target=self.origin)
            if self.origin.startswith("https:") and "proxy.start_tls.started" not in progress:
                return TransportError(
                    f"the proxy {proxy} accepted the TCP connection but did not answer "
                    f"CONNECT {self.origin} {within}",
                    step=FailedHop.PROXY_CONNECT.value, target=self.origin)
        else:
            if not tcp_done:
                return TransportError(f"no TCP connection to {self.origin} {within}",
                                      step=FailedHop.TCP_CONNECT.value, target=self.origin)
            if "connection.start_tls.started" in progress and \
                    "connection.start_tls.complete" not in progress:
                return TransportError(
                    f"TCP connected to {self.origin}, but the TLS handshake did not complete "
                    f"{within}", step=FailedHop.TLS.value, target=self.origin)
        answer = "no complete answer" if whole is not None else "no answer"
        return TransportError(f"{method} {url}: {answer} {within}",
                              step=FailedHop.TIMEOUT.value, target=self.origin)

    def _read_limited(self, resp: httpx.Response, method: str, url: str) -> bytes:
        """The (decoded) body, refused past :data:`MAX_RESPONSE_BYTES` while it arrives:
        a hostile or broken server (or a compressed body that inflates) never makes the
        agent hold more than the limit."""
        too_big = TransportError(f"{method} {url}: response over {MAX_RESPONSE_BYTES} bytes",
                                 step="protocol", target=self.origin)
        declared = resp.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise too_big
        # httpx's timeout bounds each read, not the body: a peer sending a byte now and
        # then held a cycle (and, in a child, the waiting daemon) for as long as it liked
        allowed = BODY_DEADLINE_FACTOR * self.timeout
        deadline = time.monotonic() + allowed
        chunks: list[bytes] = []
        total = 0
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > MAX_RESPONSE_BYTES:
                raise too_big
            if time.monotonic() > deadline:
                raise TransportError(f"{method} {url}: the answer took longer than "
                                     f"{allowed:g} s in all", step=FailedHop.TIMEOUT.value,
                                     target=self.origin)
            chunks.append(chunk)
        return b"".join(chunks)

    def status_error(self, resp: httpx.Response, what: str = "") -> TransportError:
        """An HTTP answer the caller cannot use, as the ``http_status`` hop."""
        retry = None
        if resp.status_code == 429 or resp.status_code >= 500:
            retry = retry_after_of(resp)
        line = f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip()
        extra = f" (Retry-After {retry:g} s)" if retry is not None else ""
        return TransportError(
            f"{resp.request.method} {resp.request.url} answered {line}{extra}{what}",
            step=FailedHop.HTTP_STATUS.value, target=self.origin, retry_after=retry,
        )

    def _classify(self, exc: httpx.ConnectError) -> TransportError:
        chain = _causes(exc)
        for c in chain:
            if isinstance(c, ssl.SSLCertVerificationError):
                why = c.verify_message or c.reason or str(c)
                return TransportError(
                    f"TLS handshake with {self.origin} failed: certificate verify failed ({why})",
                    step=FailedHop.TLS.value, target=self.origin,
                )
        ssl_err = next((c for c in chain if isinstance(c, ssl.SSLError)), None)
        if ssl_err is not None or "SSL" in str(exc):
            why = (ssl_err.reason or str(ssl_err)) if ssl_err is not None else str(exc)
            return TransportError(
                f"TLS handshake with {self.origin} failed: {why}",
                step=FailedHop.TLS.value, target=self.origin,
            )
        if self.proxy:
            return TransportError(
                f"cannot connect to the proxy {redact(self.proxy)} for {self.origin}: {exc}",
                step=FailedHop.PROXY_CONNECT.value, target=self.origin,
            )
        gai = next((c for c in chain if isinstance(c, socket.gaierror)), None)
        if gai is not None or not _resolves(self.host):
            why = gai.strerror if gai is not None and gai.strerror else "no address"
            return TransportError(
                f"DNS lookup of {self.host} (for {self.origin}) failed: {why}",
                step=FailedHop.DNS.value, target=self.origin,
            )
        os_err = next((c for c in chain if isinstance(c, OSError) and c.strerror), None)
        why = str(os_err.strerror) if os_err is not None else str(exc)
        return TransportError(
            f"TCP connection to {self.origin} failed: {why}",
            step=FailedHop.TCP_CONNECT.value, target=self.origin,
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
