"""Where attestation traffic goes: ``--to URL_OR_IP[:PORT]`` parsed once.

Accepted: a URL (``https://host[:port]/...``; https means 443 and http 80 unless a
port is given), an address (``10.0.0.4``, ``2001:db8::4``), an address with a port
(``10.0.0.4:8443``, ``[2001:db8::4]:8443``) or ``host:port``.  The default port is
443, where attestation traffic goes (monitoring-facts section 3 infers 443/TCP).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from bootwatch.errors import NetworkInputError
from bootwatch.net.servicetag import parse_fqdn

__all__ = ["IPAddress", "Target", "parse_target"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A destination: a host name or an address, and a TCP port."""

    host: str
    address: IPAddress | None
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.address is not None and self.address.version == 6 else (
            self.host
        )
        return f"{host}:{self.port}"


def _port(text: str, field: str) -> int:
    if not text.isdecimal() or not 0 < int(text) < 65536:
        raise NetworkInputError(f"port {text!r} is not 1-65535", field=field)
    return int(text)


def parse_target(text: str, *, field: str = "--to") -> Target:
    """Parse ``text``; a :class:`NetworkInputError` names ``field`` and the problem."""
    raw = text.strip()
    if not raw:
        raise NetworkInputError("is empty", field=field)
    if "://" in raw:
        try:
            parts = urlsplit(raw)
            port_value = parts.port
        except ValueError as exc:
            raise NetworkInputError(f"{raw!r} is not a URL ({exc})", field=field) from None
        if parts.scheme not in ("http", "https"):
            raise NetworkInputError(f"{raw!r}: only http and https URLs", field=field)
        if not parts.hostname:
            raise NetworkInputError(f"{raw!r} has no host", field=field)
        if port_value == 0:  # ":0" is no port, not the scheme's default
            raise NetworkInputError(f"{raw!r}: port 0 is not 1-65535", field=field)
        port = port_value or (443 if parts.scheme == "https" else 80)
        return _host_target(parts.hostname, port, field)
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise NetworkInputError(f"{raw!r}: expected [IPv6]:PORT", field=field)
        return _host_target(host, _port(rest[1:], field) if rest else 443, field)
    if raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        if not host:
            raise NetworkInputError(f"{raw!r} has no host", field=field)
        return _host_target(host, _port(port_text, field), field)
    return _host_target(raw, 443, field)


def _host_target(host: str, port: int, field: str) -> Target:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host:
            raise NetworkInputError(f"{host!r} is not an IP address", field=field) from None
        return Target(parse_fqdn(host, field=field), None, port)
    return Target(str(address), address, port)
