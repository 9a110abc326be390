"""``bootwatch monitor run`` answers ``GET /readyz``, as the service and the server do.

A README walk-through found the monitor alone had only ``/healthz``, so ``bootwatch service
wait --url https://HOST:PORT`` (which polls ``/readyz``) never returned against it. Ready
means what it means for the service: the database answers; else a 503 (the monitor's
error body, with Retry-After). The embedded server mounts the monitor's routers, not its
app: it keeps exactly one ``/readyz``, the service's.

Real processes: ``bootwatch monitor run`` and ``bootwatch service wait`` as a user starts
them, on SQLite and on a private PostgreSQL cluster that the test stops and starts.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from bwproc import Proc, free_port, private_postgres
from bwservers import ThreadServer, bound_socket
from fastapi import FastAPI

from bootwatch.embedded import create_server_app
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.service.db import make_engine
from bootwatch.service.settings import Settings

ADMIN = "readyz-admin-token-0123456789abcdef"


def bootwatch(*args: str) -> subprocess.CompletedProcess[str]:
    """One CLI command in its own process (exit codes as a shell script sees them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTWATCH_")}
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", *args],
                          capture_output=True, text=True, timeout=120, env=env)


@contextmanager
def monitor_run(tmp: Path, *args: str) -> Iterator[str]:
    """``bootwatch monitor run ARGS`` on a free loopback port; yields its base URL."""
    port = free_port()
    proc = Proc(["monitor", "run", "--port", str(port), *args], port=port, log=tmp / "run.log",
                env={"BOOTWATCH_ADMIN_TOKENS": ADMIN})
    try:
        proc.start()
        scheme = "http" if "--insecure-http" in args else "https"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_monitor_run_is_ready_and_service_wait_returns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with monitor_run(tmp_path, "--data-dir", str(data)) as url:
        ca = data / "tls" / "dev-ca.pem"  # the development certificate `monitor run` made
        r = bootwatch("service", "wait", "--url", url, "--ca", str(ca), "--timeout", "60")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip() == f"ready: {url}"
        got = httpx.get(f"{url}/readyz", verify=ssl.create_default_context(cafile=str(ca)))
        assert got.status_code == 200 and got.json() == {"status": "ready"}


@pytest.mark.postgres
def test_readyz_is_503_while_the_database_is_stopped(tmp_path: Path) -> None:
    with private_postgres() as pg, monitor_run(tmp_path, "--insecure-http", "--db", pg.url,
                                               "--data-dir", str(tmp_path / "data")) as url:
        assert bootwatch("service", "wait", "--url", url, "--timeout", "60").returncode == 0
        pg.stop()
        got = httpx.get(f"{url}/readyz", timeout=30)
        assert got.status_code == 503, got.text
        assert got.json()["error"]["code"] == "ServiceUnavailable"
        assert "database unreachable" in got.json()["error"]["message"]
        assert got.headers["x-ms-error-code"] == "ServiceUnavailable"
        assert int(got.headers["retry-after"]) > 0
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200  # alive, not ready
        r = bootwatch("service", "wait", "--url", url, "--timeout", "1")
        assert r.returncode == 2 and "GET /readyz answered 503" in r.stderr, r.stderr
        pg.start()
        r = bootwatch("service", "wait", "--url", url, "--timeout", "60")
        assert r.returncode == 0, r.stdout + r.stderr


def _routes(app: FastAPI) -> list[Any]:
    """Every route of ``app``, those of included routers too (FastAPI 0.165 keeps an
    included router as one entry of ``app.routes``; older versions copy its routes in)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(app.routes)) if flatten is not None else list(app.routes)


def test_the_server_keeps_its_one_readyz(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "server", admin_tokens=(ADMIN,),
                        rate_limit_per_second=0)
    embedded = create_server_app(settings, MonitorSettings())
    readyz = [r for r in _routes(embedded.app) if getattr(r, "path", None) == "/readyz"]
    assert [r.endpoint.__module__ for r in readyz] == ["bootwatch.service.routes"]
    server = ThreadServer(embedded.app, bound_socket()).start()
    db = embedded.service.db
    engine = db.engine
    try:
        got = httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=30)
        assert got.status_code == 200 and got.json() == {"status": "ready"}
        # the service's answer while its database is away, as before: a directory where
        # the database file should be, so every connection fails
        db.engine = make_engine(f"sqlite:///{tmp_path}")
        got = httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=30)
        assert got.status_code == 503 and got.json()["status"] == "unavailable", got.text
    finally:
        db.engine.dispose()
        db.engine = engine
        server.stop()
