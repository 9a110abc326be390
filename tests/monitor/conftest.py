"""Fixtures for the monitor: the embedded server (service + monitor) for real.

``deploy`` runs ``create_server_app`` under uvicorn on a loopback port with its
development TLS certificate, on SQLite and on PostgreSQL (one schema per
module), with real swtpm lab VMs attesting through the real agent code
(``tests/support/bwdeploy.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bwdeploy import ADMIN, EVENTLOGS, READER, Deployment, DeploymentFactory
from bwservers import PG_URL, ThreadServer, bound_socket, pg_schema
from click.testing import CliRunner
from sqlalchemy import Engine

from bootwatch.cli.main import cli
from bootwatch.embedded import create_server_app
from bootwatch.lab import Lab
from bootwatch.monitor.db import make_engine, run_migrations
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.service.server import tls_files
from bootwatch.service.settings import Settings


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        d = tmp_path_factory.mktemp("monitor-db")
        yield f"sqlite:///{d / 'bootwatch.db'}", ""
        return
    with pg_schema() as schema:
        yield PG_URL, schema


@pytest.fixture(scope="module")
def deploy(
    db: tuple[str, str],
    lab: Lab,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DeploymentFactory]:
    running: list[ThreadServer] = []
    key = uuid.uuid4().hex + uuid.uuid4().hex

    templates = tmp_path_factory.mktemp("templates") / "cos.json"
    res = CliRunner().invoke(
        cli,
        ["log", "template", str(EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin"), "--name", "cos"],
    )
    assert res.exit_code == 0, res.output
    templates.write_text(res.output)

    def start(*, data_dir: Path | None = None, **monitor_overrides: Any) -> Deployment:
        sock = bound_socket()
        port = sock.getsockname()[1]
        data = data_dir or tmp_path_factory.mktemp("server")
        settings = Settings(
            data_dir=data,
            db_url=db[0],
            db_schema=db[1],
            port=port,
            admin_tokens=(ADMIN,),
            rate_limit_per_second=0,
            cache_ttl_seconds=0.0,
            at_rest_key=key,
            trust_anchors_path=str(lab.ca_cert_path),
            secureboot_templates_path=str(templates),
        )
        tls = tls_files(settings)
        ms = replace(MonitorSettings(), reader_tokens=(READER,), **monitor_overrides)
        embedded = create_server_app(settings, ms, issuer_ca=str(tls.ca))
        app, container = embedded.app, embedded.monitor
        server = ThreadServer(app, sock, tls=tls).start()
        running.append(server)
        return Deployment(
            f"https://127.0.0.1:{port}",
            str(tls.ca),
            settings,
            container.settings,
            container,
            embedded.service.relay,
            server,
            lab,
            embedded.service,
        )

    yield start
    for server in running:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Engine]]:
    """Two empty monitor databases of the same kind (a batch against one at a time)."""
    if request.param == "sqlite":
        out = [make_engine(f"sqlite:///{tmp_path / f'm{i}.db'}") for i in range(2)]
        for e in out:
            run_migrations(e)
        yield out
        for e in out:
            e.dispose()
        return
    with pg_schema() as s1, pg_schema() as s2:
        out = [make_engine(PG_URL, schema=s) for s in (s1, s2)]
        for e in out:
            run_migrations(e)
        yield out
        for e in out:
            e.dispose()
