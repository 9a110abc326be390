"""swtpm fixtures for the lab tests: one lab per session, VMs provisioned once.

Every swtpm is started by the lab on free loopback ports and stopped when its
``running()`` block ends; the shared ``lab`` fixture (tests/conftest.py) stops any
swtpm still serving its folder at the end of the session.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
from bootwatch.cli.demo import _Server
from bootwatch.embedded import create_server_app
from bootwatch.lab import Lab, LabVm
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.service.server import tls_files
from bootwatch.service.settings import Settings

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
)
EVENTLOGS = SHARED / "corpus" / "eventlogs"

#: name -> corpus log: a plain TCG2 log, StartupLocality 3, H-CRTM, SHA-1 only
LAB_LOGS = {
    "rhel8": "go-tpm-tools/rhel8-uefi.bin",
    "alex": "go-tpm-tools/glinux-alex.bin",
    "hcrtm": "tpm2-tss/binary_measurements_hcrtm.bin",
    "sha1only": "tpm2-tools/event-uefi-sha1-log.bin",
}


@pytest.fixture(scope="session")
def lab_vms(lab: Lab) -> dict[str, LabVm]:
    """The four corpus VMs, created once per session."""
    return {name: lab.create_vm(name, EVENTLOGS / log) for name, log in LAB_LOGS.items()}


#: the admin token of the ``deployment`` fixture's server
ADMIN = "fleet-test-admin-token-0123456789abcdef"
#: its monitor's stale window, seconds
STALE = 5.0


@dataclass
class Deployment:
    url: str
    ca: Path
    lab: Lab


@pytest.fixture
def deployment(tmp_path: Path, corpus: Path, lab: Lab) -> Iterator[Deployment]:
    """bootwatch server on loopback trusting a lab of its own (under the session lab,
    whose swtpms the root conftest stops), stale after 5 s, token proof within 10 s."""
    fleet_lab = Lab(lab.root / f"fleet-{tmp_path.name}")
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps([template_to_json(GOOGLE_COS_V10)]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    settings = Settings(
        data_dir=tmp_path / "server", port=sock.getsockname()[1], rate_limit_per_second=0,
        admin_tokens=(ADMIN,), trust_anchors_path=str(fleet_lab.ca_cert_path),
        dbx_data_path=str(corpus / "secureboot" / "dbx_info_msft_latest.json"),
        secureboot_templates_path=str(templates),
    )
    settings.data_dir.mkdir(parents=True)
    tls = tls_files(settings)
    assert tls is not None and tls.ca is not None
    # token proof required (twice the stale window): the honest agents of a fleet run must
    # raise no attestation_unproven, which the fleet report would count as a false alert
    app = create_server_app(settings, MonitorSettings(stale_after_seconds=STALE,
                                                      sweep_interval_seconds=0.5,
                                                      token_proof_seconds=2 * STALE),
                            issuer_ca=str(tls.ca)).app
    with _Server(app, tls, sock) as server:
        yield Deployment(f"https://127.0.0.1:{server.port}", Path(tls.ca), fleet_lab)
