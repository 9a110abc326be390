"""swtpm fixtures for the agent tests (as in tests/lab): one lab per session.

Every swtpm is started by the lab on free loopback ports and stopped when its
``running()`` block ends; the shared ``lab`` fixture (tests/conftest.py) stops any
swtpm still serving its folder at the end of the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootwatch.lab import Lab, LabVm

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
)
EVENTLOGS = SHARED / "corpus" / "eventlogs"


@pytest.fixture(scope="session")
def agent_vm(lab: Lab) -> LabVm:
    """One Trusted-Launch-like VM booted from a real RHEL 8 UEFI log, created once."""
    return lab.create_vm("agent-rhel8", EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin")


# --- the daemon's world: the real attestation service, a monitor test server ------

import json as _json  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import uvicorn  # noqa: E402


class ThreadServer:
    """uvicorn in a background thread on a pre-bound loopback socket."""

    def __init__(self, app: Any, *, tls: Any = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=1,
                                ssl_certfile=str(tls.cert) if tls else None,
                                ssl_keyfile=str(tls.key) if tls else None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@dataclass
class MonitorState:
    """What the monitor test server stored, and how it should answer next."""

    reports: list[Any] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    #: answer this many requests with 503 + Retry-After first
    fail_next: int = 0
    retry_after: str = "2"
    #: then answer this many with ``refuse_status`` (a proxy's or a wrong URL's answer)
    refuse_next: int = 0
    refuse_status: int = 403
    attempts: list[float] = field(default_factory=list)


def monitor_app(state: MonitorState) -> Any:
    """The monitor's report endpoint as its API says (202 / 400 / 503 + Retry-After)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from bootwatch.errors import ProtocolError
    from bootwatch.protocol.health import decode_health_report

    async def reports(request: Request) -> JSONResponse:
        state.attempts.append(time.time())
        if state.fail_next > 0:
            state.fail_next -= 1
            return JSONResponse({"error": {"code": "Unavailable", "message": "busy"}},
                                status_code=503, headers={"Retry-After": state.retry_after})
        if state.refuse_next > 0:
            state.refuse_next -= 1
            return JSONResponse({"error": {"code": "Forbidden", "message": "no"}},
                                status_code=state.refuse_status)
        if request.headers.get("content-type") != "application/json":
            return JSONResponse({"error": {"code": "InvalidParameter",
                                           "message": "Content-Type"}}, status_code=400)
        try:
            report = decode_health_report(await request.body())
        except ProtocolError as exc:
            return JSONResponse({"error": {"code": "InvalidParameter", "message": str(exc)}},
                                status_code=400)
        stored = report.report_id not in state.ids
        if stored:
            state.ids.add(report.report_id)
            state.reports.append(report)
        return JSONResponse({"report_id": report.report_id, "stored": stored}, status_code=202)

    return Starlette(routes=[Route("/api/v1/reports", reports, methods=["POST"])])


@dataclass
class Monitor:
    url: str
    state: MonitorState


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    state = MonitorState()
    with ThreadServer(monitor_app(state)) as server:
        yield Monitor(f"http://127.0.0.1:{server.port}", state)


@dataclass
class AttestService:
    url: str
    ca: Path
    lab: Lab
    port: int


@pytest.fixture(scope="module")
def attest_service(tmp_path_factory: pytest.TempPathFactory,
                   swtpm_available: None) -> Iterator[AttestService]:
    """``bootwatch service`` as the demo runs it (HTTPS, SQLite, the lab CA trusted)."""
    from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
    from bootwatch.service.app import create_app
    from bootwatch.service.server import tls_files
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import bootstrap

    work = tmp_path_factory.mktemp("agentd")
    lab = Lab(work / "lab")
    templates = work / "templates.json"
    templates.write_text(_json.dumps([template_to_json(GOOGLE_COS_V10)]))
    settings = Settings(
        data_dir=work / "service", rate_limit_per_second=0,
        trust_anchors_path=str(lab.ca_cert_path),
        dbx_data_path=str(SHARED / "corpus" / "secureboot" / "dbx_info_msft_latest.json"),
        secureboot_templates_path=str(templates),
    )
    settings.data_dir.mkdir(parents=True)
    tls = tls_files(settings)
    assert tls is not None and tls.ca is not None
    state = bootstrap(settings)
    with ThreadServer(create_app(settings, state=state), tls=tls) as server:
        yield AttestService(f"https://127.0.0.1:{server.port}", Path(tls.ca), lab, server.port)


@pytest.fixture(scope="module")
def cos_vm(attest_service: AttestService) -> LabVm:
    """A VM the service's policy permits (COS 101 with its key template trusted)."""
    return attest_service.lab.create_vm("cos", EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin")


@pytest.fixture(scope="module")
def sboff_vm(attest_service: AttestService) -> LabVm:
    """A VM the default policy denies (Secure Boot off)."""
    return attest_service.lab.create_vm(
        "sboff", EVENTLOGS / "go-tpm-tools/ubuntu-2104-no-secure-boot.bin")
