"""Which proxy, if any, the agent uses for a URL: libcurl's rules, written down.

Azure's guest attestation client uses libcurl without ``CURLOPT_PROXY``, so on
a VM the proxy comes from the environment the way libcurl reads it
(monitoring-facts section 3).  bootwatch follows the same precedence so an
operator's existing proxy settings mean the same thing to both:

1. the configuration's ``proxy`` (libcurl's ``CURLOPT_PROXY``); ``""`` in the
   configuration means *no proxy* even if the environment names one;
2. ``https_proxy``, then ``HTTPS_PROXY`` for https URLs; ``http_proxy`` only in
   lower case for http URLs (libcurl ignores ``HTTP_PROXY``, a CGI hazard);
3. ``all_proxy``, then ``ALL_PROXY``.

Exclusions: the configuration's ``no_proxy`` (``CURLOPT_NOPROXY``) replaces
``no_proxy``/``NO_PROXY`` from the environment; it applies to the configured
proxy too, as libcurl's does.  Entries are ``*``, host names (matching the
name and its subdomains, a leading dot optional), IP addresses and CIDR
ranges.  The Azure platform addresses (IMDS ``169.254.169.254``, the wire
server ``168.63.129.16``) and all of ``169.254.0.0/16`` are *never* proxied,
whatever the settings say: a proxy cannot reach them and must not see them.

Proxy credentials come from the proxy URL's user-info (configuration or
environment); :func:`redact` removes them from anything printed or logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from bootwatch.errors import ConfigError

__all__ = ["NEVER_PROXIED", "ProxyChoice", "choose_proxy", "redact"]

#: addresses the agent never sends through a proxy (IMDS, the Azure wire server)
NEVER_PROXIED: tuple[str, ...] = ("169.254.169.254", "168.63.129.16")
_LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")


@dataclass(frozen=True)
class ProxyChoice:
    """The proxy for one URL and where that choice came from (for netcheck and logs)."""

    url: str | None
    source: str

    @property
    def display(self) -> str:
        """The proxy URL without credentials (safe to log)."""
        return redact(self.url) if self.url else "none"


def redact(url: str) -> str:
    """``http://user:secret@proxy:3128`` -> ``http://***@proxy:3128``; never raises.

    Works on the text, not on a parse: a password with an unencoded ``#``, ``/`` or
    ``?`` (pasted raw into ``HTTPS_PROXY``) ends the authority early for ``urlsplit``,
    which then found no user-info and the password was printed.  Everything between
    the scheme and the last ``@`` goes."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at < 0:
        return url
    return f"{scheme}{sep}***{rest[at:]}"


def _never_proxied(host: str) -> bool:
    if host in NEVER_PROXIED:
        return True
    try:
        return ipaddress.ip_address(host) in _LINK_LOCAL
    except ValueError:
        return False


def _excluded(host: str, no_proxy: str) -> bool:
    """libcurl's NO_PROXY match: '*', domain suffix, exact IP, CIDR (ports ignored)."""
    host = host.lower().strip("[]")
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if addr is not None:
            try:
                if addr in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _normalise(proxy: str, source: str) -> str:
    """``proxy`` as an ``http(s)://[user:password@]host[:port]`` URL, or ConfigError.

    Checked with the parser the transport uses (httpx's): a URL that ``urlsplit``
    accepted but httpx refused (an unencoded ``#`` in the password, a port past 65535)
    made every cycle die with an httpx or ValueError traceback instead of a reason."""
    url = proxy if "://" in proxy else f"http://{proxy}"
    shown = redact(proxy)
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"{source}: proxy {shown!r} is not a URL httpx can use "
                          f"({redact(str(exc))}); percent-encode '#', '/', '?', '@' and "
                          "':' in its user name and password") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"{source}: proxy {shown!r} is not an http(s)://host[:port] URL"
        )
    if parsed.query or parsed.fragment or parsed.path not in ("", "/") or (
            port is not None and not 0 < port < 65536):
        raise ConfigError(f"{source}: proxy {shown!r} has a path, query, fragment or port "
                          "a proxy URL cannot have (percent-encode '#', '/' and '?' in its "
                          "password)")
    return url


def choose_proxy(
    target_url: str,
    *,
    configured: str | None,
    configured_no_proxy: str | None,
    environ: Mapping[str, str],
) -> ProxyChoice:
    """The proxy for ``target_url`` (see the module docstring for the precedence).

    ``configured`` is ``None`` when the configuration does not mention a proxy
    (the environment decides) and ``""`` when it says "no proxy".
    """
    parts = urlsplit(target_url)
    host = (parts.hostname or "").lower()
    if _never_proxied(host):
        return ProxyChoice(None, f"{host} is a platform address: never proxied")
    if configured_no_proxy is not None:
        no_proxy, np_source = configured_no_proxy, "config no_proxy"
    else:
        no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
        np_source = "no_proxy" if environ.get("no_proxy") else "NO_PROXY"
    if configured is not None:
        candidates: list[tuple[str, str]] = [("config proxy", configured)]
    else:
        names = ["https_proxy", "HTTPS_PROXY"] if parts.scheme == "https" else ["http_proxy"]
        names += ["all_proxy", "ALL_PROXY"]
        candidates = [(n, environ[n]) for n in names if environ.get(n)]
    if not candidates or not candidates[0][1]:
        return ProxyChoice(None, "config proxy = \"\"" if configured == "" else "no proxy set")
    source, proxy = candidates[0]
    if no_proxy and _excluded(host, no_proxy):
        return ProxyChoice(None, f"{host} excluded by {np_source}")
    return ProxyChoice(_normalise(proxy, source), source)
