"""The service's own service-tag document, published at ``GET /servicetags``.

Built at start-up from the settings (``--advertise-prefix``, else the listening
address; ``--public-url`` and ``--allowed-host`` for host names; the public or
listening port) and kept in the database (table ``service_tags``, migration
``0002_service_tag``) with its change number, so the number survives restarts, is
the same for every worker and node on one database, and increases only when the
prefixes change.  The pure model lives in :mod:`bootwatch.net.servicetag`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bootwatch.errors import ConfigError, NetworkInputError, StorageError
from bootwatch.net.servicetag import (
    IPNetwork,
    ServiceTagDocument,
    build_document,
    encode_document,
    next_change_number,
    parse_fqdn,
    parse_prefix,
    sorted_prefixes,
)
from bootwatch.service.db import Database, utcnow
from bootwatch.service.hosts import AllowedHosts
from bootwatch.service.models import ServiceTagRow
from bootwatch.service.settings import Settings

_log = logging.getLogger(__name__)

__all__ = ["ServiceTagDocument", "advertised_prefixes", "publish_service_tag", "service_fqdns",
           "service_ports"]

_WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - recognising, not binding


def advertised_prefixes(settings: Settings) -> tuple[IPNetwork, ...]:
    """``--advertise-prefix`` values, else the listening address as a /32 or /128;
    for a wildcard listener, the non-loopback addresses this host's name resolves to."""
    if settings.advertise_prefixes:
        try:
            return sorted_prefixes([parse_prefix(p, field="--advertise-prefix")
                                    for p in settings.advertise_prefixes])
        except NetworkInputError as exc:
            raise ConfigError(str(exc)) from None
    host = settings.host.strip("[]")
    if host not in _WILDCARDS:
        try:
            return (ipaddress.ip_network(host),)
        except ValueError:
            pass  # a host name: resolve it below
    name = socket.gethostname() if host in _WILDCARDS else host
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    found = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            found.append(ipaddress.ip_network(address))
    return sorted_prefixes(found)


def service_fqdns(settings: Settings) -> tuple[str, ...]:
    """Host names clients use: ``--public-url``'s, then ``--allowed-host``s (addresses
    and loopback names left out: they are not names a firewall filters on).

    A name the service answers for but that is not a DNS host name (``my_svc``, a
    container network's alias) is left out of the document with a warning naming it:
    egress rules cannot filter on it, and it is no reason to refuse to start."""
    names = []
    candidates = [urlsplit(settings.public_base_url).hostname or ""] if (
        settings.public_base_url) else []
    allowed = AllowedHosts.parse(settings.allowed_hosts)
    names_only, pairs = allowed.names, allowed.pairs
    candidates += sorted(names_only) + sorted({host for host, _ in pairs})
    for host in candidates:
        if not host or host == "localhost":
            continue
        try:
            ipaddress.ip_address(host.strip("[]"))
            continue
        except ValueError:
            pass
        try:
            names.append(parse_fqdn(host, field="--public-url/--allowed-host"))
        except NetworkInputError as exc:
            _log.warning("service tag: %r left out of the published host names (%s)",
                         host, exc)
    return tuple(dict.fromkeys(names))


def service_ports(settings: Settings) -> tuple[int, ...]:
    """The port clients connect to: ``--public-url``'s, else the listening port."""
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"--public-url {settings.public_base_url!r}: bad port") from None
        return (port or (443 if parts.scheme == "https" else 80),)
    return (settings.port,)


def publish_service_tag(db: Database, settings: Settings) -> ServiceTagDocument:
    """Build the document and store it; the change number moves only with the
    prefixes.  Safe against several workers starting at once (a lost insert race
    is retried once, reading the winner's row)."""
    prefixes = advertised_prefixes(settings)
    fqdns = service_fqdns(settings)
    ports = service_ports(settings)
    for attempt in range(2):
        try:
            return _store(db, settings, prefixes, fqdns, ports)
        except StorageError as exc:
            if attempt or not isinstance(exc.__cause__, IntegrityError):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _store(db: Database, settings: Settings, prefixes: tuple[IPNetwork, ...],
           fqdns: tuple[str, ...], ports: tuple[int, ...]) -> ServiceTagDocument:
    name = settings.service_tag_name
    with db.session() as session:
        row = session.execute(
            select(ServiceTagRow).where(ServiceTagRow.name == name).with_for_update()
        ).scalar_one_or_none()
        previous = None
        if row is not None:
            previous = tuple(ipaddress.ip_network(p) for p in json.loads(row.prefixes))
        number = next_change_number(previous, row.change_number if row else None, prefixes)
        doc = build_document(name, prefixes, number, fqdns=fqdns, ports=ports)
        text = json.dumps(encode_document(doc), separators=(",", ":"))
        canonical = json.dumps([str(p) for p in prefixes])
        if row is None:
            session.add(ServiceTagRow(name=name, change_number=number, prefixes=canonical,
                                      document=text, updated_at=utcnow()))
        elif row.document != text:
            row.change_number, row.prefixes = number, canonical
            row.document, row.updated_at = text, utcnow()
    return doc
