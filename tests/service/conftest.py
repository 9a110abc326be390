"""Fixtures for the service tests: real databases, real HTTPS on loopback.

``backend`` is parametrised over SQLite and PostgreSQL (marked ``postgres``;
each run uses its own schema, dropped afterwards).  ``service_factory`` starts
``create_app(settings)`` under uvicorn in a background thread on a free
loopback port with the development TLS certificate.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from bootwatch.service.app import create_app
from bootwatch.service.db import make_engine
from bootwatch.service.httpproto import HTTP_PROTOCOL
from bootwatch.service.server import tls_files
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState, bootstrap

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class Backend:
    name: str
    db_url: str
    schema: str


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "sqlite":
        d = tmp_path_factory.mktemp("sqlite")
        yield Backend("sqlite", f"sqlite:///{d / 'bootwatch.db'}", "")
        return
    schema = f"bwtest_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # the server is part of the test environment
        pytest.fail(f"PostgreSQL at {PG_URL} is not usable: {exc}")
    try:
        yield Backend("postgres", PG_URL, schema)
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def make_cert(cn: str, *, ca: bool = True) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def pem(obj: Any) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def x5c(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def signed_jws(
    payload: dict[str, Any] | None, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> str:
    """A JWS in the Azure SDK's shape: alg RS256 (PyJWT), header jwk.x5c."""
    body = json.dumps(payload).encode() if payload is not None else b""
    return jwt.api_jws.encode(body, key, algorithm="RS256", headers={"jwk": {"x5c": [x5c(cert)]}})


def unverified_claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="session")
def signer1() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("bootwatch test policy signer 1")


@pytest.fixture(scope="session")
def signer2() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("bootwatch test policy signer 2")


@pytest.fixture(scope="session")
def stranger() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return make_cert("not a signer")


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """uvicorn in a background thread on a pre-bound socket."""

    def __init__(self, app: Any, *, tls: Any = None, http: str = HTTP_PROTOCOL) -> None:
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            http=http,  # as bootwatch.service.server runs it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

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
        self.server.force_exit = True  # do not wait for idle keep-alive clients (the SDK's)
        self.thread.join(timeout=20)
        self.sock.close()


@dataclass
class Service:
    url: str
    ca: str
    settings: Settings
    state: ServiceState

    def client(self, **kw: Any) -> httpx.Client:
        tls = ssl.create_default_context(cafile=self.ca)
        return httpx.Client(base_url=self.url, verify=tls, timeout=30, **kw)


ServiceFactory = Callable[..., Service]


@pytest.fixture(scope="module")
def service_factory(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceFactory]:
    running: list[ThreadServer] = []
    at_rest_key = uuid.uuid4().hex + uuid.uuid4().hex  # one DB per module, so one key

    def start(setup: Callable[[ServiceState], None] | None = None, **overrides: Any) -> Service:
        data_dir = tmp_path_factory.mktemp("data")
        base = Settings(
            data_dir=data_dir,
            db_url=backend.db_url,
            db_schema=backend.schema,
            admin_tokens=(ADMIN_TOKEN,),
            rate_limit_per_second=0,
            cache_ttl_seconds=0.0,
            at_rest_key=at_rest_key,
        )
        settings = replace(base, **overrides)
        state = bootstrap(settings)
        if setup is not None:
            setup(state)
        tls = tls_files(settings)
        server = ThreadServer(create_app(settings, state=state), tls=tls).__enter__()
        running.append(server)
        return Service(f"https://127.0.0.1:{server.port}", str(tls.ca), settings, state)

    yield start
    for server in running:
        server.__exit__()


@pytest.fixture(scope="session")
def h() -> Any:
    """Helper functions for the test modules (conftest helpers are not importable)."""
    import types

    return types.SimpleNamespace(
        make_cert=make_cert,
        pem=pem,
        x5c=x5c,
        signed_jws=signed_jws,
        unverified_claims=unverified_claims,
        ThreadServer=ThreadServer,
        ADMIN_TOKEN=ADMIN_TOKEN,
        refuse_provider_inserts=refuse_provider_inserts,
        service_log=service_log,
    )


def create_custom_providers(state: ServiceState, signer_cert: x509.Certificate) -> None:
    """'aadp' (AAD trust model) and 'iso' (Isolated, one signer), if not there yet."""
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    with state.db.session() as s:
        if s.get(ProviderRow, "aadp") is None:
            create_provider(s, state.sealer, "aadp", kind=ProviderKind.CUSTOM,
                            trust_model=TrustModel.AAD)
        if s.get(ProviderRow, "iso") is None:
            create_provider(
                s,
                state.sealer,
                "iso",
                kind=ProviderKind.CUSTOM,
                trust_model=TrustModel.ISOLATED,
                signers=[signer_cert],
            )


@pytest.fixture(scope="module")
def svc(service_factory: ServiceFactory, signer1: Any) -> Service:
    """One HTTPS service per backend with providers 'shared' (default), 'aadp', 'iso'."""
    return service_factory(lambda st: create_custom_providers(st, signer1[1]))


def refuse_provider_inserts(state: ServiceState, backend: Backend, table: str,
                            provider: str) -> None:
    """Create the AAD provider ``provider`` and a database trigger that refuses every row
    of it inserted into ``table``: a real database failure, on one provider only."""
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    with state.db.session() as s:
        if s.get(ProviderRow, provider) is None:
            create_provider(s, state.sealer, provider, kind=ProviderKind.CUSTOM,
                            trust_model=TrustModel.AAD)
    name = f"{provider}_refuse"
    with state.db.engine.begin() as conn:
        if backend.name == "sqlite":
            conn.execute(text(
                f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE INSERT ON {table} "
                f"WHEN NEW.provider = '{provider}' BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            conn.execute(text(
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.provider = '{provider}' THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
            conn.execute(text(f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
                              f"FOR EACH ROW EXECUTE FUNCTION {name}()"))


@contextmanager
def service_log() -> Iterator[list[logging.LogRecord]]:
    """The records the service logs meanwhile (its logger need not propagate to the root
    logger, where pytest's caplog listens)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("bootwatch.service")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
