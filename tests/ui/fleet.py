"""A small lab fleet behind a real ``bootwatch server`` on loopback (HTTPS, SQLite).

Shared by the dashboard's browser tests (tests/ui/conftest.py) and
``scripts/screenshots``: real swtpm lab VMs booted from corpus logs, the
embedded server (service + monitor + dashboard) under uvicorn in a thread,
VMs enabled through the real CLI (``bootwatch vm enable ... --name``) and
attested with the real agent code over HTTPS, so every row the dashboard
shows came through the monitor's own ingestion.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from bootwatch.agent.evidence import read_os_info, read_tcg_log
from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
from bootwatch.cli.agent_attest import attest_once
from bootwatch.cli.demo import _Server
from bootwatch.cli.main import cli as cli_main
from bootwatch.embedded import create_server_app
from bootwatch.lab import Lab
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.service.server import tls_files
from bootwatch.service.settings import Settings

ADMIN_TOKEN = "ui-admin-token-0123456789abcdef"
READER_TOKEN = "ui-reader-token-0123456789abcdef"
HOSTILE_NAME = "<script>alert(1)</script>"
COS_OLD = "eventlogs/go-tpm-tools/cos-93-amd-sev.bin"
COS_NEW = "eventlogs/go-tpm-tools/cos-101-amd-sev.bin"


@dataclass
class Fleet:
    url: str
    ca: Path
    lab: Lab
    corpus: Path
    #: the server's event relay: attest() waits until the monitor ingested the outcome
    relay: Any = None
    vm_ids: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        """Run the real ``bootwatch`` CLI against this server; returns its output."""
        env = {"BOOTWATCH_MONITOR": self.url, "BOOTWATCH_MONITOR_CA": str(self.ca),
               "BOOTWATCH_MONITOR_TOKEN": ADMIN_TOKEN}
        result = CliRunner().invoke(cli_main, list(args), env=env, catch_exceptions=False)
        if result.exit_code != 0:
            raise AssertionError(f"bootwatch {' '.join(args)} exited {result.exit_code}: "
                                 f"{result.output}")
        return result.output

    def api(self, path: str) -> Any:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca)),
                          timeout=30) as client:
            r = client.get(self.url + "/api/v1" + path,
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            r.raise_for_status()
            return r.json()

    def attest(self, name: str) -> str:
        """One attestation of lab VM ``name`` with the agent code; returns the verdict."""
        with self.lab.running(name) as vm:
            result = attest_once(vm.tcti, read_tcg_log(vm.log_path), self.url, ca=self.ca,
                                 os_info=read_os_info())
        assert self.relay.flush(), "the monitor did not ingest the outcome"
        return result.verdict

    def add_vm(self, name: str, log: str, *, monitor_name: str | None = None) -> str:
        vm = self.lab.create_vm(name, self.corpus / log)
        self.vm_ids[name] = vm.vm_id
        self.cli("vm", "enable", vm.vm_id, "--name", monitor_name or name, "--json")
        return vm.vm_id

    def reboot(self, name: str, log: str) -> None:
        self.lab.reboot_vm(name, self.corpus / log)


@contextmanager
def running_fleet(work: Path, corpus: Path, lab_root: Path | None = None, *,
                  release_keys: tuple[str, ...] = ()) -> Iterator[Fleet]:
    """The server on a free loopback port with the lab's CA and the COS key template;
    ``release_keys`` (public PEMs) turn on agent releases, as ``--release-key`` does."""
    lab = Lab(lab_root or work / "lab")
    templates = work / "templates.json"
    templates.write_text(json.dumps([template_to_json(GOOGLE_COS_V10)]))
    # bound first: the service's token issuer carries the port, and the monitor trusts the
    # issuer URLs built from settings.port (agents' reports verify only with it)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    settings = Settings(
        data_dir=work / "server",
        host="127.0.0.1",
        port=sock.getsockname()[1],
        rate_limit_per_second=0,
        trust_anchors_path=str(lab.ca_cert_path),
        secureboot_templates_path=str(templates),
        admin_tokens=(ADMIN_TOKEN,),
    )
    settings.data_dir.mkdir(parents=True)
    tls = tls_files(settings)
    assert tls is not None and tls.ca is not None
    monitor_settings = MonitorSettings(reader_tokens=(READER_TOKEN,), release_keys=release_keys)
    embedded = create_server_app(settings, monitor_settings, issuer_ca=str(tls.ca))
    with _Server(embedded.app, tls, sock) as server:
        # the monitor trusts tokens of this server's own issuer URLs, built from its port
        yield Fleet(f"https://127.0.0.1:{server.port}", Path(tls.ca), lab, corpus,
                    relay=embedded.service.relay)


def build_demo_fleet(fleet: Fleet) -> None:
    """``cos`` deviates (rebooted from COS 93 into COS 101), ``cos-b`` and the VM with
    a hostile name stay healthy; every VM is enabled before its first attestation."""
    fleet.add_vm("cos", COS_OLD)
    fleet.add_vm("cos-b", COS_NEW)
    fleet.add_vm("hostile", COS_NEW, monitor_name=HOSTILE_NAME)
    for name in ("cos", "cos-b", "hostile"):
        verdict = fleet.attest(name)
        assert verdict == "permit", f"{name}: {verdict}"
    fleet.reboot("cos", COS_NEW)
    assert fleet.attest("cos") == "permit"


def sign_in(page: Any, fleet: Fleet, token: str = ADMIN_TOKEN) -> None:
    """Sign in through the form as a person does (Playwright page)."""
    page.goto(fleet.url + "/ui/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(fleet.url + "/ui")
