"""Read an HTTP answer's body with a size and a time limit: one place, one rule.

Why: ``resp.content`` reads the whole body before anyone can look at its size, and
httpx's timeout bounds each read, not the whole body, so a peer (or whatever answers at
its address) sending an endless body held the reader's thread and grew its memory for as
long as it kept sending.  Here the body is read raw (no compression asked for, none
accepted: the limit is the size of what the caller parses), refused early when its
declared length is over the limit, and dropped as soon as it is, or when the deadline
passes.
"""

from __future__ import annotations

import time

import httpx

from bootwatch.httpdeadline import SocketWatch

__all__ = ["BodyTooLarge", "read_bounded"]


class BodyTooLarge(ValueError):
    """The answer was larger than the limit, compressed, or slower than the deadline."""


def read_bounded(client: httpx.Client, url: str, *, limit: int, timeout: float,
                 watch: SocketWatch | None = None) -> bytes:
    """GET ``url`` with ``client``; the body, at most ``limit`` bytes within ``timeout``
    seconds in all, headers included.  HTTP errors (including a status >= 400) are
    httpx's exceptions; limits broken raise :class:`BodyTooLarge` naming the URL.
    ``watch``: the client's :class:`~bootwatch.httpdeadline.SocketWatch` when it makes
    more than one request (a reused connection is not traced again); None: a new one."""
    watch = watch or SocketWatch()
    with watch.bound(timeout) as bound:
        try:
            return _read(client, url, limit, timeout, watch)
        except httpx.TransportError:
            if bound.passed:  # the status line or headers trickled past the deadline
                raise BodyTooLarge(f"{url}: took longer than {timeout:g} s") from None
            raise


def _read(client: httpx.Client, url: str, limit: int, timeout: float,
          watch: SocketWatch) -> bytes:
    deadline = time.monotonic() + timeout
    body = bytearray()
    with client.stream("GET", url, headers={"Accept-Encoding": "identity"},
                       extensions={"trace": watch.trace}) as resp:
        resp.raise_for_status()
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise BodyTooLarge(f"{url}: answered with content-encoding {encoding!r}")
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"{url}: document larger than {limit} bytes")
        for chunk in resp.iter_raw():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(f"{url}: document larger than {limit} bytes")
            if time.monotonic() > deadline:
                raise BodyTooLarge(f"{url}: took longer than {timeout:g} s")
    return bytes(body)
