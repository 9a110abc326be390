"""The embedded server (service + monitor) as tests drive it: ``Deployment``.

The monitor tests' ``deploy`` fixture runs ``create_server_app`` under uvicorn
on a loopback port with its development TLS certificate, on SQLite and on PostgreSQL (one schema per
module), with real swtpm lab VMs attesting through the real agent code.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bwservers import ThreadServer

from bootwatch.cli.agent_attest import AttestResult, attest_once
from bootwatch.lab import Lab
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.service.outbox import EventRelay
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState

REPO = Path(__file__).resolve().parents[2]
EVENTLOGS = (
    Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
    / "corpus"
    / "eventlogs"
)
ADMIN = "monitor-test-admin-token-0123456789"
READER = "monitor-test-reader-token-0123456789"


@dataclass
class Deployment:
    url: str
    ca: str
    settings: Settings
    monitor_settings: MonitorSettings
    container: MonitorContainer
    #: the service's event relay (service/outbox.py): flush() waits for ingestion
    relay: EventRelay
    server: ThreadServer
    lab: Lab
    #: the service's container (its providers, for tests that add one)
    service: ServiceState

    def client(self, token: str | None = ADMIN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        tls = ssl.create_default_context(cafile=self.ca)
        return httpx.Client(base_url=self.url, verify=tls, headers=headers, timeout=30)

    def attest(self, vm: str, *, log: bytes | None = None,
               provider: str | None = None) -> AttestResult:
        """One agent attestation of lab VM ``vm`` (through ``provider``, else the default
        one); waits until the monitor ingested it."""
        url = f"{self.url}/providers/{provider}" if provider else self.url
        with self.lab.running(vm) as running:
            result = attest_once(
                running.tcti, log or running.log_path.read_bytes(), url, ca=Path(self.ca)
            )
        assert self.relay.flush(), "the monitor did not ingest the outcome"
        return result

    def vm(self, ref: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/api/v1/vms/{ref}")
            assert r.status_code == 200, r.text
            return dict(r.json())

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.get("/api/v1/alerts", params=params)
            assert r.status_code == 200, r.text
            return list(r.json()["items"])


DeploymentFactory = Callable[..., Deployment]
