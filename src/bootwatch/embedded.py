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
from dataclasses import replace

from fastapi import FastAPI

from bootwatch.monitor.api import extra_routers, monitor_router
from bootwatch.monitor.container import MonitorContainer, bootstrap
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.ui import ui_router
from bootwatch.protocol.health import FailedHop
from bootwatch.service.app import AppExtensions, create_app
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState

__all__ = ["create_server_app", "own_issuers"]


def own_issuers(settings: Settings) -> tuple[str, ...]:
    """The issuer URLs this server's tokens can carry (for the monitor to trust)."""
    scheme = "http" if settings.insecure_http else "https"
    wildcard = {"0.0.0.0", "::"}  # noqa: S104 - names, not a bind
    hosts = {settings.host, "127.0.0.1", "localhost", *settings.allowed_hosts} - wildcard
    out = [f"{scheme}://{h}:{settings.port}" for h in sorted(hosts)]
    if settings.public_base_url:
        out.append(settings.public_base_url.rstrip("/"))
    return tuple(out)


def egress_advisor(
    state: ServiceState, formats: tuple[str, ...]
) -> Callable[[FailedHop, str], str]:
    """The monitor's egress remediation from this server's own service-tag document,
    published once here, at start-up (it changes only with the settings)."""
    from bootwatch.monitor.egress import advisor
    from bootwatch.service.servicetag import publish_service_tag

    return advisor(publish_service_tag(state), formats)


def create_server_app(
    settings: Settings, monitor_settings: MonitorSettings, *, issuer_ca: str = ""
) -> tuple[FastAPI, MonitorContainer]:
    """Build the combined app; the monitor's threads start with the app's lifespan."""
    state = ServiceState.open(settings)
    ms = replace(
        monitor_settings,
        trusted_issuers=monitor_settings.trusted_issuers or own_issuers(settings),
        issuer_ca=monitor_settings.issuer_ca or issuer_ca,
        admin_tokens=monitor_settings.admin_tokens or settings.admin_tokens,
        db_url=monitor_settings.db_url or settings.database_url,
        db_schema=monitor_settings.db_schema or settings.db_schema,
        data_dir=settings.data_dir,
    )
    container = bootstrap(ms, engine=state.db.engine,
                          egress_text=egress_advisor(state, ms.egress_formats))
    ext = AppExtensions(
        sink=container.sink,
        routers=(monitor_router(container), ui_router(container), *extra_routers(container)),
        metrics=(container.metrics.exposition,),
        on_startup=(container.start,),
        on_shutdown=(container.stop,),
    )
    return create_app(settings, state=state, extensions=ext), container
