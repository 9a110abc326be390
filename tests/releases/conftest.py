"""Fixtures for agent releases: keys, real wheels of two versions, a monitor on loopback.

``wheels`` builds two real bootwatch wheels (this worktree's code, with the
version rewritten to 0.1.0 and 0.2.0) once per session with ``pip wheel``.
``monitor`` serves :func:`releases_router` from a small FastAPI app under
uvicorn on a loopback port with a fake fleet the test controls, standing in
for the monitor the lead wires (same router, real HTTP).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import Response

from bootwatch.monitor.releases import AgentView, ReleaseStore, RolloutPolicy, releases_router
from bootwatch.protocol.release import PrivateReleaseKey, ReleaseManifest, key_id, sign_release

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "release-admin-token-" + "0123456789"
OLD, NEW = "0.1.0", "0.2.0"


# --- keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private: PrivateReleaseKey
    private_pem: Path
    public_pem: Path

    @property
    def kid(self) -> str:
        return key_id(self.private.public_key())


def _write_keypair(directory: Path, name: str, key: PrivateReleaseKey) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    priv = directory / f"{name}.pem"
    pub = directory / f"{name}.pub.pem"
    priv.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pub.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyPair(key, priv, pub)


@pytest.fixture(scope="session")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """The release key the agents trust (Ed25519)."""
    return _write_keypair(
        tmp_path_factory.mktemp("keys"), "release", ed25519.Ed25519PrivateKey.generate()
    )


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key the agents do NOT trust (ECDSA P-256)."""
    return _write_keypair(
        tmp_path_factory.mktemp("keys"), "other", ec.generate_private_key(ec.SECP256R1())
    )


def manifest_for(wheel: Path, version: str, key: KeyPair, **extra: Any) -> ReleaseManifest:
    data = wheel.read_bytes()
    return ReleaseManifest(
        version=version, wheel=wheel.name, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        published_at=datetime.now(UTC).replace(microsecond=0), key_id=key.kid, **extra,
    )


def signed(wheel: Path, version: str, key: KeyPair, **extra: Any) -> bytes:
    return sign_release(manifest_for(wheel, version, key, **extra), key.private)


# --- wheels --------------------------------------------------------------------


def _build_wheel(version: str, work: Path, out: Path) -> Path:
    """A real wheel of this worktree's code with the version set to ``version``."""
    src = work / f"src-{version}"
    shutil.copytree(REPO / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "README.md", src / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text()
    pyproject, n = re.subn(r'(?m)^version = "[^"]+"$', f'version = "{version}"', pyproject)
    assert n == 1
    (src / "pyproject.toml").write_text(pyproject)
    init = src / "src" / "bootwatch" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"',
                           init.read_text()))
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    try:
        import wheel  # noqa: F401 - the offline build needs it beside setuptools

        argv.insert(4, "--no-build-isolation")
    except ImportError:
        pass  # isolated build: pip fetches setuptools from the configured index
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    built = out / f"bootwatch-{version}-py3-none-any.whl"
    assert built.is_file(), sorted(p.name for p in out.iterdir())
    return built


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real bootwatch wheels: {"0.1.0": path, "0.2.0": path}."""
    work = tmp_path_factory.mktemp("wheelbuild")
    out = work / "dist"
    out.mkdir()
    return {v: _build_wheel(v, work, out) for v in (OLD, NEW)}


# --- the monitor on loopback -----------------------------------------------------


@dataclass
class FakeFleet:
    """A FleetView the test edits: vm_id -> AgentView."""

    views: dict[str, AgentView] = field(default_factory=dict)

    def agents(self) -> Sequence[AgentView]:
        return list(self.views.values())

    def report(self, vm_id: str, version: str | None, healthy: bool | None = True,
               enabled: bool = True) -> None:
        self.views[vm_id] = AgentView(vm_id, enabled, version, healthy, datetime.now(UTC))


def require_admin(authorization: str = Header(default="")) -> None:
    """The admin dependency the tests pass in (the lead passes the monitor's own)."""
    expected = f"Bearer {ADMIN_TOKEN}"
    if not secrets.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="admin token required")


class ThreadServer:
    """uvicorn in a background thread on a pre-bound loopback socket."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
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
        self.server.force_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@dataclass
class Monitor:
    url: str
    store: ReleaseStore
    fleet: FakeFleet
    admin_headers: dict[str, str]


@pytest.fixture
def monitor_factory(
    tmp_path: Path, release_key: KeyPair, other_key: KeyPair
) -> Iterator[Callable[..., Monitor]]:
    """``make(policy=..., data=DIR, clock=...)``: a monitor trusting both test keys.

    Trusting both keys lets the tests show that the AGENT, trusting only
    ``release_key``, is what refuses a release signed by ``other_key``.
    Servers stop at teardown; ``data`` lets a test restart over the same state.
    """
    with contextlib.ExitStack() as stack:

        def make(
            policy: RolloutPolicy = RolloutPolicy(),  # noqa: B008
            data: Path | None = None,
            clock: Callable[[], datetime] | None = None,
            offer_plan_ttl: float = 0.0,
        ) -> Monitor:
            store = ReleaseStore(
                (data or tmp_path / "monitor-data") / "releases",
                (release_key.private.public_key(), other_key.private.public_key()),
            )
            fleet = FakeFleet()
            app = FastAPI()
            # 0: every offer plans anew, so a report is seen by the next offer (the tests
            # step the fleet one report at a time); the caching has its own test
            kwargs: dict[str, Any] = {"policy": policy, "offer_plan_ttl": offer_plan_ttl}
            if clock is not None:
                kwargs["clock"] = clock
            app.include_router(releases_router(store, fleet, require_admin, **kwargs))
            server = stack.enter_context(ThreadServer(app))
            return Monitor(server.url, store, fleet, {"Authorization": f"Bearer {ADMIN_TOKEN}"})

        yield make


@pytest.fixture
def monitor(monitor_factory: Callable[..., Monitor]) -> Monitor:
    """A monitor with the default rollout policy (20% batches, 5 min settle)."""
    return monitor_factory()


@pytest.fixture
def sign() -> Any:
    """``sign(wheel, version, keypair, **manifest_fields) -> signed body`` (the real signer)."""
    return signed


@pytest.fixture
def serve() -> type[ThreadServer]:
    """The loopback server context manager, for tests that serve their own app."""
    return ThreadServer


@dataclass
class Hostile:
    """A monitor that serves whatever the test says (a compromised or MITM'd channel)."""

    offer: bytes = b""
    wheel: bytes = b""
    offer_requests: int = 0


@pytest.fixture
def hostile(serve: Any) -> Any:
    box = Hostile()
    app = FastAPI()

    @app.get("/api/v1/agent/releases/offer")
    def offer() -> Response:
        box.offer_requests += 1
        if not box.offer:
            return Response(status_code=204)
        return Response(box.offer, media_type="application/json")

    @app.get("/api/v1/agent/releases/{version}/wheel")
    def wheel(version: str) -> Response:
        return Response(box.wheel, media_type="application/octet-stream")

    with serve(app) as server:
        yield box, server.url
