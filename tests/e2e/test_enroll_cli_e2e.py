"""The enrolment commands end to end, as the README runs them: ``bootwatch lab ek-ca``,
``lab vm create --no-aik-cert``, ``agent enroll`` (exit 0/1/2, ``--json``), ``agent
attest`` afterwards, ``provider revoke-aik``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootwatch.lab import Lab

pytestmark = pytest.mark.swtpm

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
COS = SHARED / "corpus/eventlogs/go-tpm-tools/cos-101-amd-sev.bin"


def _bootwatch(*args: str, lab: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", *args], capture_output=True, text=True,
        timeout=240, env={**os.environ, "BOOTWATCH_LAB_DIR": str(lab)},
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, swtpm_available: None
          ) -> Iterator[dict[str, Any]]:
    """A lab, and the service trusting the lab's EK CA (SQLite, default shared provider)."""
    from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
    from bootwatch.cli.demo import _Server
    from bootwatch.service.app import create_app
    from bootwatch.service.server import tls_files
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import bootstrap

    work = tmp_path_factory.mktemp("enroll-e2e")
    lab_dir = work / "lab"
    r = _bootwatch("lab", "ek-ca", lab=lab_dir)
    assert r.returncode == 0, r.stderr
    ek_ca = Path(r.stdout.strip())
    assert ek_ca == Lab(lab_dir).ek_ca_cert_path and ek_ca.is_file()
    templates = work / "templates.json"
    templates.write_text(json.dumps([template_to_json(GOOGLE_COS_V10)]))
    settings = Settings(data_dir=work / "service", rate_limit_per_second=0,
                        cache_ttl_seconds=0.0, ek_trust_anchors_path=str(ek_ca),
                        secureboot_templates_path=str(templates))
    settings.data_dir.mkdir(parents=True)
    tls = tls_files(settings)
    assert tls is not None and tls.ca is not None
    state = bootstrap(settings)
    with _Server(create_app(settings, state=state), tls) as server:
        yield {"url": f"https://127.0.0.1:{server.port}", "ca": str(tls.ca), "lab": lab_dir,
               "data": str(settings.data_dir), "work": work}


def test_enrol_attest_revoke_with_the_cli(world: dict[str, Any]) -> None:
    lab, url, ca = world["lab"], world["url"], world["ca"]
    r = _bootwatch("lab", "vm", "create", "kvm", "--log", str(COS), "--no-aik-cert", lab=lab)
    assert r.returncode == 0 and "EK certificate only" in r.stdout, r.stdout + r.stderr
    vm_id = Lab(lab).get_vm("kvm").vm_id
    r = _bootwatch("agent", "attest", "--lab-vm", "kvm", "--url", url, "--ca", ca, lab=lab)
    assert r.returncode == 2 and "must enrol first" in r.stdout + r.stderr, r.stdout + r.stderr

    r = _bootwatch("agent", "enroll", "--lab-vm", "kvm", "--url", url, "--ca", ca, "--json",
                   lab=lab)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "enrolled" and out["ek_cert_nv_index"] == "0x01c00002"
    assert out["subject"].startswith(f"CN={vm_id.upper()},")

    r = _bootwatch("agent", "attest", "--lab-vm", "kvm", "--url", url, "--ca", ca, "--json",
                   lab=lab)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["claims"]["x-ms-azurevm-vmid"] == vm_id.upper()

    r = _bootwatch("provider", "revoke-aik", "shared", "--vm-id", vm_id, "--reason",
                   "decommissioned", "--data-dir", world["data"], lab=lab)
    assert r.returncode == 0 and out["serial"] in r.stdout, r.stdout + r.stderr
    r = _bootwatch("provider", "revoke-aik", "shared", "--vm-id", vm_id,
                   "--data-dir", world["data"], lab=lab)
    assert r.returncode == 1 and "no unrevoked" in r.stderr

    r = _bootwatch("agent", "attest", "--lab-vm", "kvm", "--url", url, "--ca", ca, "--json",
                   lab=lab)
    assert r.returncode == 1, r.stdout + r.stderr
    reason = json.loads(r.stdout)["reason"]
    assert "aik_cert_revoked" in reason and "decommissioned" in reason
    # the revoked TPM may not enrol again by itself, until the operator releases its id
    r = _bootwatch("agent", "enroll", "--lab-vm", "kvm", "--url", url, "--ca", ca, lab=lab)
    assert r.returncode == 1 and "revoked by the operator" in r.stdout, r.stdout + r.stderr
    r = _bootwatch("provider", "release-vm", "shared", "--vm-id", vm_id,
                   "--data-dir", world["data"], lab=lab)
    assert r.returncode == 0 and "released" in r.stdout, r.stdout + r.stderr
    r = _bootwatch("agent", "enroll", "--lab-vm", "kvm", "--url", url, "--ca", ca, lab=lab)
    assert r.returncode == 0, r.stdout + r.stderr


def test_enrol_refused_exit_1_and_unreachable_exit_2(world: dict[str, Any]) -> None:
    stranger = world["work"] / "other-lab"  # another maker: its own EK CA
    r = _bootwatch("lab", "vm", "create", "odd", "--log", str(COS), "--no-aik-cert",
                   lab=stranger)
    assert r.returncode == 0, r.stderr
    r = _bootwatch("agent", "enroll", "--lab-vm", "odd", "--url", world["url"], "--ca",
                   world["ca"], lab=stranger)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REFUSED" in r.stdout and "ek_certificate" in r.stdout
    r = _bootwatch("agent", "enroll", "--lab-vm", "odd", "--url", world["url"], "--json",
                   lab=stranger)  # no --ca: the TLS step fails
    assert r.returncode == 2, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "unreachable" and out["step"] == "tls"
