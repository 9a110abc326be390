"""Servers and databases for tests that run bootwatch's apps for real.

(``tests/conftest.py`` puts this folder on ``sys.path``.)  ``ThreadServer``
runs an ASGI app under uvicorn in a thread on a socket bound before the app
is built, so the app can know its own port (token issuers are built from it).
``pg_schema`` makes a PostgreSQL schema for one test module and drops it.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import text

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """uvicorn in a background thread on ``sock`` (a pre-bound socket)."""

    def __init__(self, app: Any, sock: socket.socket, *, tls: Any = None) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        from bootwatch.service.httpproto import HTTP_PROTOCOL

        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", http=HTTP_PROTOCOL,
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards; fails (not skips) without a server."""
    import pytest

    from bootwatch.service.db import make_engine

    schema = f"bwtest_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # the server is part of the test environment
        pytest.fail(f"PostgreSQL at {PG_URL} is not usable: {exc}")
    try:
        yield schema
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def serve_monitor(data_dir: Path, admin_token: str) -> Iterator[tuple[str, Any]]:
    """A standalone monitor (SQLite under ``data_dir``, one admin token) served by uvicorn
    on loopback: (its URL, its container)."""
    from bootwatch.monitor.app import create_monitor_app
    from bootwatch.monitor.container import bootstrap
    from bootwatch.monitor.settings import MonitorSettings

    container = bootstrap(MonitorSettings(data_dir=data_dir, admin_tokens=(admin_token,)))
    server = ThreadServer(create_monitor_app(container), bound_socket()).start()
    try:
        yield f"http://127.0.0.1:{server.port}", container
    finally:
        server.stop()
        container.engine.dispose()
