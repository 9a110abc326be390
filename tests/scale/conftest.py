"""Fixtures of the scale tests: one real AzureGuest request from a swtpm lab VM booted
from the Azure Trusted Launch log, shared by the fault and replica tests (the protocol
has no server nonce, so replaying it is what load looks like)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

AZURE_LOG = "maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin"
WINDOWS_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14)


@pytest.fixture(scope="module")
def request_body(lab: Any, corpus: Path) -> tuple[bytes, Path]:
    """(request body, the lab's CA that issued its AIK certificate)."""
    from bootwatch.agent.evidence import OsInfo, collect_evidence

    name = f"scale-{uuid.uuid4().hex[:6]}"
    lab.create_vm(name, corpus / AZURE_LOG)
    with lab.running(name) as vm:
        ev = collect_evidence(
            vm.tcti, tcg_log=(corpus / AZURE_LOG).read_bytes(),
            os_info=OsInfo("Windows", "Microsoft", 10, 0, "NotApplicable"),
            client_payload={"nonce": "scale"}, pcr_indices=WINDOWS_PCRS)
    return ev.request_body(), lab.ca_cert_path


#: the machine's NATS server with JetStream (scripts/test starts it)
NATS_URL = "nats://127.0.0.1:4222"


def nats_up(host: str = "127.0.0.1", port: int = 4222) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Names:
    stream: str
    subject: str
    durable: str


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
def jetstream() -> str:
    if not nats_up():
        pytest.fail(f"NATS JetStream at {NATS_URL} is not running (scripts/test starts it)")
    return NATS_URL


@pytest.fixture
def names(jetstream: str) -> Iterator[Names]:
    tag = uuid.uuid4().hex[:12]
    n = Names(f"BWTEST_{tag}", f"bwtest.{tag}.outcomes", f"bwtest-{tag}")
    yield n
    asyncio.run(_delete_stream(jetstream, n.stream))
