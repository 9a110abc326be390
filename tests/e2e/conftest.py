"""End-to-end fixtures: the real service on HTTPS loopback, and a lab of swtpm VMs.

The service is the one ``bootwatch demo`` runs (SQLite, shared provider with
the default policy, lab CA as AIK trust anchor, Microsoft's DBX data, the
google-cos-v10 template enabled), started once per module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootwatch.lab import Lab

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
CORPUS = SHARED / "corpus"


@dataclass
class E2eService:
    url: str
    ca: Path
    lab: Lab
    corpus: Path


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, swtpm_available: None) -> Iterator[E2eService]:
    from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
    from bootwatch.cli.demo import _Server
    from bootwatch.service.app import create_app
    from bootwatch.service.server import tls_files
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import bootstrap

    work = tmp_path_factory.mktemp("e2e")
    lab = Lab(work / "lab")
    templates = work / "templates.json"
    templates.write_text(json.dumps([template_to_json(GOOGLE_COS_V10)]))
    settings = Settings(
        data_dir=work / "service",
        rate_limit_per_second=0,
        trust_anchors_path=str(lab.ca_cert_path),
        dbx_data_path=str(CORPUS / "secureboot" / "dbx_info_msft_latest.json"),
        secureboot_templates_path=str(templates),
    )
    settings.data_dir.mkdir(parents=True)
    tls = tls_files(settings)
    assert tls is not None and tls.ca is not None
    state = bootstrap(settings)
    with _Server(create_app(settings, state=state), tls) as server:
        yield E2eService(f"https://127.0.0.1:{server.port}", Path(tls.ca), lab, CORPUS)


@pytest.fixture(scope="module")
def vms(e2e: E2eService) -> dict[str, Any]:
    """Lab VMs booted from real corpus logs (created once per module)."""
    logs = {
        "cos": "eventlogs/go-tpm-tools/cos-101-amd-sev.bin",
        "sboff": "eventlogs/go-tpm-tools/ubuntu-2104-no-secure-boot.bin",
        "rhel8": "eventlogs/go-tpm-tools/rhel8-uefi.bin",
    }
    return {name: e2e.lab.create_vm(name, e2e.corpus / rel) for name, rel in logs.items()}
