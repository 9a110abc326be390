"""The embedded default: the attestation service and the monitor in one process.

``bootwatch server`` runs this: the service's MAA paths at the root as
always, the monitor's API under ``/api/v1`` and its dashboard under ``/ui`` on the
same port, one SQLite
database (the monitor's tables are prefixed ``monitor_``), and the service's
outcome events handed to the monitor in-process.  This module is the
composition root that knows both sides; neither imports the other.

The monitor trusts tokens issued by this very server (its loopback and
public addresses) and fetches their keys through the server's own OpenID
metadata, with the development CA when the server uses one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

from fastapi import FastAPI

from bootwatch.errors import ConfigError
from bootwatch.monitor.api import extra_routers, monitor_router
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.container import bootstrap as bootstrap_monitor
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.ui import ui_router
from bootwatch.protocol.health import FailedHop
from bootwatch.service.app import AppExtensions, create_app
from bootwatch.service.db import make_engine
from bootwatch.service.events import (
    EventSink,
    events_url,
    is_jetstream_url,
    sink_from_settings,
)
from bootwatch.service.hosts import AllowedHosts
from bootwatch.service.servicetag import ServiceTagDocument
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState, bootstrap

__all__ = ["EmbeddedServer", "create_server_app", "own_issuers"]


def _url_host(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def own_issuers(settings: Settings) -> tuple[str, ...]:
    """The issuer URLs this server's tokens can carry (for the monitor to trust).

    The service builds a token's issuer from the Host header it accepted
    (``service.hosts.request_base_url``): IPv6 addresses in brackets, an
    ``--allowed-host NAME:PORT`` pair with its own port, a configured name with the
    listening port or none (a reverse proxy on the default port).  Anything else here
    would be an issuer no token carries, and the monitor would refuse the reports of
    agents attesting through that address."""
    scheme = "http" if settings.insecure_http else "https"
    wildcard = {"0.0.0.0", "::"}  # noqa: S104 - names, not a bind
    allowed = AllowedHosts.parse(settings.allowed_hosts)
    hosts = {settings.host.lower(), "127.0.0.1", "localhost", "::1", *allowed.names} - wildcard
    found = {f"{scheme}://{_url_host(h)}:{settings.port}" for h in hosts}
    found |= {f"{scheme}://{_url_host(h)}" for h in allowed.names}
    found |= {f"{scheme}://{_url_host(h)}:{p}" for h, p in allowed.pairs}
    out = sorted(found)
    if settings.public_base_url:
        out.append(settings.public_base_url.rstrip("/"))
    return tuple(out)


class _EgressAdvisor:
    """The monitor's egress remediation from this server's own service-tag document.

    The monitor is built before the service's container (the container needs the
    monitor's sink) and the document is published while the container is built, so
    the advisor is bound to it right after; until then (never during requests) it
    says nothing."""

    def __init__(self, formats: tuple[str, ...]) -> None:
        self.formats = formats
        self._advise: Callable[[FailedHop, str], str] | None = None

    def bind(self, document: ServiceTagDocument) -> None:
        from bootwatch.monitor.egress import advisor

        self._advise = advisor(document, self.formats)

    def __call__(self, hop: FailedHop, target: str) -> str:
        return self._advise(hop, target) if self._advise is not None else ""


@dataclass(frozen=True)
class EmbeddedServer:
    """The combined app and the two containers behind it (tests and the demo wait on
    ``service.relay.flush()`` for the monitor to have ingested what was answered)."""

    app: FastAPI
    monitor: MonitorContainer
    service: ServiceState


def create_server_app(
    settings: Settings, monitor_settings: MonitorSettings, *, issuer_ca: str = ""
) -> EmbeddedServer:
    """Build the combined app; the monitor's threads start with the app's lifespan.

    One engine: the monitor's container (its migrations, its in-process sink) first,
    then the service's container around that sink."""
    engine = make_engine(settings.database_url, schema=settings.db_schema)
    ms = replace(
        monitor_settings,
        trusted_issuers=monitor_settings.trusted_issuers or own_issuers(settings),
        issuer_ca=monitor_settings.issuer_ca or issuer_ca,
        admin_tokens=monitor_settings.admin_tokens or settings.admin_tokens,
        db_url=monitor_settings.db_url or settings.database_url,
        db_schema=monitor_settings.db_schema or settings.db_schema,
        data_dir=settings.data_dir,
    )
    egress = _EgressAdvisor(ms.egress_formats)
    container = bootstrap_monitor(ms, engine=engine, egress_text=egress)
    url = events_url(settings)
    sink: EventSink
    if not url:  # the default: outcome events handed to this monitor in-process
        sink, owns_sink = container.sink, False
    elif is_jetstream_url(url):
        # through JetStream, consumed here too (and by any `monitor run --events` beside it)
        from bootwatch.monitor.nats_ingest import JetStreamIngester

        sink, owns_sink = cast(EventSink, sink_from_settings(settings)), True
        container.ingester = JetStreamIngester(container.monitor, url,
                                               stream=settings.events_stream,
                                               subject=settings.events_subject)
    else:
        raise ConfigError(f"bootwatch server --events {url!r}: the server has its own "
                          "monitor; give nats://HOST:PORT or nothing (an https:// monitor "
                          "is for bootwatch service run)")
    state = bootstrap(settings, sink=sink, owns_sink=owns_sink, engine=engine,
                      metrics_extra=(container.metrics.exposition,))
    egress.bind(state.service_tag)
    ext = AppExtensions(
        routers=(monitor_router(container), ui_router(container), *extra_routers(container)),
        on_startup=(container.start,),
        on_shutdown=(container.stop,),
    )

    def close_engine() -> None:  # after both sides stopped: the engine is shared
        engine.dispose()

    ext = replace(ext, on_shutdown=(*ext.on_shutdown, close_engine))
    return EmbeddedServer(create_app(settings, state=state, extensions=ext), container, state)
