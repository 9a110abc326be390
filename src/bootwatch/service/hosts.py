"""The HTTP edge of provider resolution: which provider a request is for, and its issuer.

A request reaches a provider by path prefix ``/providers/NAME/...`` (stripped by
:class:`ProviderPrefixMiddleware`), by the ``Host`` header when a provider has a host
name, or else reaches ``Settings.default_provider`` (a shared provider) at the root of
the listening address.  With ``Settings.public_base_url`` the issuer is that URL for the
default provider and that URL plus ``/providers/NAME`` for any other, however the request
reached it.  Otherwise the ``Host`` header also makes the token issuer and ``jku``,
so only host:port pairs this service answers for are accepted
(:func:`host_is_served`).  Storage lives in :mod:`bootwatch.service.providers`; this
module only reads requests and asks the store.

:func:`current_provider` is the FastAPI dependency returning the request's
:class:`~bootwatch.service.providers.ProviderContext` (404 ``NotFound`` for an unknown
provider); ``CurrentProvider`` is its ``Annotated`` alias for handler signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bootwatch.errors import ConfigError, InputError
from bootwatch.service.deps import remember_provider, request_provider, service_state
from bootwatch.service.errors import invalid_parameter, not_found
from bootwatch.service.providers import ProviderContext
from bootwatch.service.settings import Settings

if TYPE_CHECKING:
    from bootwatch.service.state import ServiceState

__all__ = [
    "PREFIX",
    "SCOPE_PREFIX",
    "SCOPE_PROVIDER",
    "AllowedHosts",
    "CurrentProvider",
    "ProviderPrefixMiddleware",
    "current_provider",
    "host_is_served",
    "listening_port",
    "request_base_url",
    "resolve_provider",
    "split_host",
]

PREFIX = "/providers/"
SCOPE_PROVIDER = "bootwatch.provider"
SCOPE_PREFIX = "bootwatch.prefix"


class ProviderPrefixMiddleware:
    """Strips ``/providers/NAME`` from the path and remembers NAME in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX):
                rest = path[len(PREFIX) :]
                name, sep, tail = rest.partition("/")
                scope = dict(scope)
                scope[SCOPE_PROVIDER] = name
                scope[SCOPE_PREFIX] = PREFIX + name
                scope["path"] = "/" + tail if sep else "/"
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def split_host(header: str) -> tuple[str, int | None]:
    """``host[:port]`` of a Host header, IPv6 literals (``[::1]:8443``) included."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            raise InputError(f"Host header {header!r} is not a valid host")
        host, rest = header[1:end], header[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise InputError(f"Host header {header!r} is not a valid host")
    elif header.count(":") == 1:
        host, port_text = header.split(":")
    else:
        host, port_text = header, ""
    if not port_text:
        return host.lower(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"Host header {header!r} has an invalid port")
    return host.lower(), int(port_text)


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


def listening_port(request: Request, settings: Settings) -> int:
    """The port this request arrived on (the ASGI server's), else the configured one."""
    server = request.scope.get("server")
    if server and len(server) > 1 and isinstance(server[1], int) and server[1] > 0:
        return int(server[1])
    return settings.port


@dataclass(frozen=True)
class AllowedHosts:
    """``--allowed-host`` entries, parsed once (the container keeps them): names (see
    :func:`host_is_served`) and exact host:port pairs."""

    names: frozenset[str]
    pairs: frozenset[tuple[str, int]]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowedHosts:
        """A malformed entry is a ConfigError naming it (start-up stops)."""
        names: set[str] = set()
        pairs: set[tuple[str, int]] = set()
        for entry in entries:
            try:
                host, port = split_host(entry)
            except InputError:
                raise ConfigError(
                    f"--allowed-host {entry!r} is not a host or host:port") from None
            if port is None:
                names.add(host)
            else:
                pairs.add((host, port))
        return cls(frozenset(names), frozenset(pairs))


def host_is_served(request: Request, state: ServiceState, host: str, port: int | None) -> bool:
    """Whether ``host[:port]`` of a Host header is one this service answers for.

    Accepted: a configured ``host:port`` pair exactly (``--allowed-host name:port``);
    a configured name (``--allowed-host name``, a provider's host name) with the
    listening port or no port (a reverse proxy on the scheme's default port); the
    listening host and loopback names with the listening port, or with no port when
    the service listens on the scheme's default port.  Any other port is refused: the
    issuer and ``jku`` of every token are built from this header.
    """
    settings = state.settings
    listening = listening_port(request, settings)
    names, pairs = state.allowed_hosts.names, state.allowed_hosts.pairs
    if port is not None and (host, port) in pairs:
        return True
    if host in _LOOPBACK_NAMES or host == settings.host.lower():
        if port is None:
            return _DEFAULT_PORTS.get(request.url.scheme) == listening
        return port == listening
    if host in names or state.providers.provider_for_host(host) is not None:
        return port is None or port == listening
    return False


def request_base_url(request: Request, prefix: str) -> str:
    """The base URL (issuer) of this request's provider.

    With ``public_base_url`` set it is that. Otherwise it comes from the Host header,
    which is accepted only for a host:port this service answers for
    (:func:`host_is_served`): the issuer and the ``jku`` of every token are built from
    it, so a forged Host, or a forged port, must not change them.
    """
    state = service_state(request)
    settings = state.settings
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + prefix
    header = request.headers.get("host")
    if not header:
        listening = listening_port(request, settings)
        return f"{request.url.scheme}://{_url_host(settings.host)}:{listening}{prefix}"
    host, port = split_host(header)
    if not host_is_served(request, state, host, port):
        shown = f"{host}:{port}" if port is not None else host
        raise invalid_parameter(
            f"Host {shown!r} is not served here (the service answers for its configured "
            f"host names on port {listening_port(request, settings)} and for configured "
            f"host:port pairs): start the service with --allowed-host {shown} or "
            "--public-url, or use one of its configured host names"
        )
    netloc = _url_host(host) + (f":{port}" if port is not None else "")
    return f"{request.url.scheme}://{netloc}{prefix}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def resolve_provider(request: Request) -> ProviderContext:
    """The provider a request is for (prefix, host name, or the default)."""
    state = service_state(request)
    name = request.scope.get(SCOPE_PROVIDER)
    prefix = request.scope.get(SCOPE_PREFIX, "")
    if name is None:
        header = request.headers.get("host")
        host = split_host(header)[0] if header else ""
        name = state.providers.provider_for_host(host) if host else None
        if name is not None and state.settings.public_base_url:
            # the public URL alone is the default provider's issuer (and its /certs);
            # under it, this provider is reached, and its keys published, by its prefix
            prefix = PREFIX + name
        if name is None:
            name = state.settings.default_provider
            if not name:
                raise not_found("no default provider is configured; use /providers/NAME")
    return state.providers.context(name, request_base_url(request, prefix))


def current_provider(request: Request) -> ProviderContext:
    """FastAPI dependency: the resolved :class:`ProviderContext` of this request."""
    ctx = request_provider(request)
    if ctx is None:
        ctx = resolve_provider(request)
        remember_provider(request, ctx)
    return ctx


#: ``ctx: CurrentProvider`` in a handler signature = the request's ProviderContext
CurrentProvider = Annotated[ProviderContext, Depends(current_provider)]
