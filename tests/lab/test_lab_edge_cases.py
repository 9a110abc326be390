"""Edge cases of the lab, the fleet simulator and the embedded server found in review:
each test failed before its fix.  Real swtpm where a VM is involved."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootwatch.cli.main import cli
from bootwatch.embedded import own_issuers
from bootwatch.lab import Lab
from bootwatch.service.settings import Settings

from .conftest import ADMIN, EVENTLOGS, Deployment

COS93 = EVENTLOGS / "go-tpm-tools" / "cos-93-amd-sev.bin"
COS101 = EVENTLOGS / "go-tpm-tools" / "cos-101-amd-sev.bin"


def test_reboot_keeps_the_vm_os_and_an_image_update_changes_it(lab: Lab) -> None:
    """vm.json records the image's OS; a reboot must not reset it to the generic
    "Linux", and booting another image makes that image's OS the VM's (os-release too,
    which the agent reports for --lab-vm)."""
    vm = lab.create_vm("edge-os", COS93)
    try:
        assert vm.os_name == "Container-Optimized OS 93"
        again = lab.reboot_vm("edge-os")
        assert (again.os_name, again.os_source) == (vm.os_name, vm.os_source)
        assert lab.get_vm("edge-os").os_name == vm.os_name
        updated = lab.reboot_vm("edge-os", COS101)
        assert lab.get_vm("edge-os").os_name == updated.os_name == "Container-Optimized OS 101"
        assert 'VERSION_ID="101"' in updated.os_release_path.read_text() or \
            "VERSION_ID=101" in updated.os_release_path.read_text()
    finally:
        lab.destroy_vm("edge-os")


def test_own_issuers_are_the_urls_the_server_puts_in_its_tokens(tmp_path: Path) -> None:
    """The service builds a token's issuer from the Host header (IPv6 in brackets; an
    --allowed-host NAME:PORT pair with its own port), so the monitor of bootwatch server
    must trust exactly those URLs, or it rejects the agents' reports."""
    s = Settings(data_dir=tmp_path, host="::1", port=9443,
                 allowed_hosts=("proxy.example:8443", "front.example"))
    issuers = set(own_issuers(s))
    assert "https://[::1]:9443" in issuers
    assert "https://proxy.example:8443" in issuers
    assert "https://front.example:9443" in issuers
    assert not any(u.count(":") > 2 and "[" not in u for u in issuers), issuers


def test_fleet_keep_keeps_the_agents_state_without_work_dir(
        deployment: Deployment, corpus: Path, tmp_path: Path) -> None:
    """--keep keeps "the lab VMs and the agents' state" (docs/lab.md); without
    --work-dir the state went into a temporary folder that was deleted anyway."""
    url, ca, fleet_lab = deployment.url, deployment.ca, deployment.lab
    scenario = tmp_path / "none.yaml"
    scenario.write_text("version: 1\nevents: []\n")
    token = tmp_path / "token"
    token.write_text(ADMIN)
    result = CliRunner().invoke(cli, [
        "lab", "--lab-dir", str(fleet_lab.root), "fleet", "run", "--vms", "1",
        "--interval", "1", "--duration", "1", "--grace", "0", "--stale-after", "5",
        "--scenario", str(scenario), "--url", url, "--ca", str(ca),
        "--admin-token-file", str(token), "--corpus", str(corpus), "--keep", "--json"])
    kept = [vm.name for vm in fleet_lab.list_vms()]
    try:
        assert result.exit_code == 0, result.output
        assert len(kept) == 1
        states = [p for p in Path(tempfile.gettempdir()).glob(
            f"bootwatch-fleet-*/fleet-*/agents/{kept[0]}") if p.is_dir()]
        assert states, f"the agent state of {kept[0]} was deleted despite --keep"
    finally:
        for name in kept:
            fleet_lab.destroy_vm(name)
        for p in Path(tempfile.gettempdir()).glob(f"bootwatch-fleet-*/fleet-*/agents/{kept[0]}"
                                                  if kept else "-"):
            shutil.rmtree(p.parents[2], ignore_errors=True)


def test_swtpm_that_loses_its_ports_to_another_never_serves_the_other_vtpm(
        tmp_path: Path, swtpm_available: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fleets on one machine draw swtpm ports at random: when another swtpm takes
    the pair between the draw and the bind, start() must not hand out the other one's
    TCTI (its process exited; every command would go to a foreign vTPM)."""
    from bootwatch.lab import swtpm as swtpm_mod
    from bootwatch.lab.swtpm import SwtpmProcess

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = SwtpmProcess.start(tmp_path / "a")
    try:
        real = swtpm_mod._free_port_pair
        # the first draws: the pair the other swtpm just took, then one overlapping it
        draws = iter([a.port, a.port + 1, a.port - 1])
        monkeypatch.setattr(swtpm_mod, "_free_port_pair", lambda: next(draws, None) or real())
        b = SwtpmProcess.start(tmp_path / "b")
        try:
            assert b.port != a.port
            time.sleep(0.2)
            assert b.process.poll() is None, "start() returned an swtpm that had exited"
        finally:
            b.stop(save=False)
    finally:
        a.stop(save=False)


def test_demo_on_a_corpus_missing_its_files_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    """`bootwatch demo` exits 2 "when the corpus cannot be used" (its docstring): a folder
    with eventlogs/ and maa/ that lacks the logs and DBX data the demo reads was exit 1,
    "demo failed", as if the demo had run and something had gone unexpectedly."""
    corpus = tmp_path / "corpus"
    (corpus / "eventlogs").mkdir(parents=True)
    (corpus / "maa").mkdir()
    r = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "demo", "--corpus",
                        str(corpus)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("bootwatch: error: ") and str(corpus) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
