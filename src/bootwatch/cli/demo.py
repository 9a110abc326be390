"""``bootwatch demo``: the main job on embedded defaults, on real corpus logs.

Runs ``bootwatch server`` (the attestation service and the monitor in one
process, SQLite, the shared provider with its fixed default AzureGuest
policy, a development TLS certificate) on a free loopback port in a temporary
data folder; creates a small fleet of lab VMs (swtpm vTPMs) whose PCRs are
those of real boot logs; enables monitoring for each; runs one agent cycle on
each (attest over HTTPS, open the sealed token in the VM's vTPM, verify it
through the provider's OpenID metadata, send a health report); then shows a
change, as an operator would see it:

* ``cos-web`` reboots from Google COS 93 into COS 101: a ``baseline_deviation``
  alert whose diff names the changed PCRs and events; the demo approves the
  new variant and the alert resolves;
* ``ubuntu-sb-off`` (Secure Boot off) is denied by the default policy and gets
  the "Secure Boot should be enabled" recommendation;
* ``tampered`` sends its log altered after boot: ``evidence_rejected``;
* ``cos-idle`` stops reporting and goes ``stale`` (``agent_unresponsive``).

``azure-tl`` (the real Azure Trusted Launch WS2019 log) stays healthy
throughout.  Exit 0 when everything happened as described, 1 otherwise, 2 when
the corpus cannot be used; the corpus is found with ``--corpus``,
``$BOOTWATCH_SHARED/corpus`` or ``../shared/corpus`` next to the repository or
the current folder (a path given with the option or the variable that does not
hold the corpus is an error naming it, not a reason to look elsewhere).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bootwatch.cli.agent_attest import AttestResult
from bootwatch.errors import BootwatchError, ConfigError
from bootwatch.monitor.client import MonitorClient

__all__ = [
    "DBX_DATA",
    "STALE_AFTER",
    "UPDATE_LOG",
    "VMS",
    "Demo",
    "DemoVm",
    "check_corpus_files",
    "command",
    "find_corpus",
    "run_demo",
]


@dataclass(frozen=True)
class DemoVm:
    name: str
    boot_log: str  # relative to the corpus folder
    sent_log: str | None  # the log the agent sends, when not the boot log
    expect: str  # first verdict: permit | deny | refused
    story: str
    windows: bool = False


VMS = (
    DemoVm("azure-tl", "maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin", None,
           "permit", "Azure Trusted Launch WS2019, Secure Boot on", windows=True),
    DemoVm("cos-web", "eventlogs/go-tpm-tools/cos-93-amd-sev.bin", None, "permit",
           "Google COS 93, Secure Boot on; updated to COS 101 below"),
    DemoVm("cos-idle", "eventlogs/go-tpm-tools/cos-101-amd-sev.bin", None, "permit",
           "Google COS 101; its agent stops reporting below"),
    DemoVm("ubuntu-sb-off", "eventlogs/go-tpm-tools/ubuntu-2104-no-secure-boot.bin", None, "deny",
           "Ubuntu 21.04, Secure Boot off"),
    DemoVm("tampered", "eventlogs/hirs/TpmLog.bin", "eventlogs/hirs/TPMLog_Altered.bin",
           "refused", "HIRS log altered after the vTPM booted"),
)
UPDATE_LOG = "eventlogs/go-tpm-tools/cos-101-amd-sev.bin"
#: the demo's stale window (seconds); the default of bootwatch server is 900
STALE_AFTER = 6.0


def _explicit_corpus(path: Path, source: str) -> Path:
    """A corpus path the user gave: it must hold the corpus, else an error naming it."""
    if not path.exists():
        raise ConfigError(f"{source} {path}: no such folder")
    if not ((path / "eventlogs").is_dir() and (path / "maa").is_dir()):
        raise ConfigError(f"{source} {path}: not the shared corpus "
                          "(no eventlogs/ and maa/ folders in it)")
    return path.resolve()


def find_corpus(explicit: Path | None) -> Path:
    """The ``shared/corpus`` folder: --corpus, $BOOTWATCH_SHARED, or ../shared nearby.

    A path the user gave (the option or the variable) is used or refused, never
    silently replaced by one found nearby: a wrong path is a ConfigError naming it
    (exit 2).
    """
    if explicit is not None:
        return _explicit_corpus(explicit, "--corpus")
    env = os.environ.get("BOOTWATCH_SHARED")
    if env:
        if not Path(env).exists():
            raise ConfigError(f"BOOTWATCH_SHARED={env}: no such folder")
        return _explicit_corpus(Path(env) / "corpus", f"BOOTWATCH_SHARED={env}:")
    candidates: list[Path] = []
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo):
        for parent in (base, *base.parents):
            candidates.append(parent / "shared" / "corpus")
            candidates.append(parent.parent / "shared" / "corpus")
    for c in candidates:
        if (c / "eventlogs").is_dir() and (c / "maa").is_dir():
            return c.resolve()
    raise ConfigError("shared corpus not found: pass --corpus PATH/TO/shared/corpus "
                      "or set BOOTWATCH_SHARED=PATH/TO/shared")


class _Server:
    """uvicorn in a background thread on a pre-bound loopback socket."""

    def __init__(self, app: Any, tls: Any, sock: socket.socket | None = None) -> None:
        import uvicorn

        from bootwatch.service.httpproto import HTTP_PROTOCOL

        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key),
                                timeout_graceful_shutdown=1, http=HTTP_PROTOCOL)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ConfigError("bootwatch server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@dataclass
class Demo:
    """The running demo: the server, the lab and the monitor's client."""

    corpus: Path
    lab: Any
    url: str
    ca: Path
    client: MonitorClient
    #: the event relay: flush() waits until the monitor ingested every answered outcome
    relay: Any
    vm_ids: dict[str, str]
    problems: list[str]

    def cycle(self, spec: DemoVm, *, log: str | None = None) -> AttestResult:
        """One agent cycle: attest, open the token in the vTPM, report health."""
        from bootwatch.agent.evidence import read_os_info
        from bootwatch.cli.agent_attest import attest_once
        from bootwatch.protocol.health import (
            HealthReport,
            HealthStatus,
            encode_health_report,
        )

        sent_file = log or spec.sent_log
        sent = ((self.corpus / sent_file).read_bytes() if sent_file
                else self.lab.get_vm(spec.name).log_path.read_bytes())
        with self.lab.running(spec.name) as vm:
            # the OS of the image the log came from, as the lab recorded it
            os_info = read_os_info(vm.vm.os_release_path)
            result = attest_once(vm.tcti, sent, self.url, ca=self.ca, os_info=os_info,
                                 client_payload={"nonce": os.urandom(8).hex()},
                                 pcr_indices=_pcrs_for(spec))
        status = {"permit": HealthStatus.HEALTHY, "deny": HealthStatus.UNHEALTHY}.get(
            result.verdict, HealthStatus.UNHEALTHY)
        report = HealthReport(
            report_id=str(uuid.uuid4()), vm_id=self.vm_ids[spec.name], health_status=status,
            time=datetime.now(UTC), agent_version="demo-" + _version(),
            attestation_token=result.token if result.verdict == "permit" else None,
            attestation_status_message=result.reason, attestation_uri=self.url,
        )
        self.client.post_report(encode_health_report(report))
        self.relay.flush()
        return result

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)


def _version() -> str:
    from importlib.metadata import version

    return version("bootwatch")


def _pcrs_for(spec: DemoVm) -> tuple[int, ...] | None:
    """Windows agents quote PCRs 0-7 and 11-14 (maa-protocol 1.3); Linux ones the default
    (0-7 plus the late-boot PCRs their log extends)."""
    return (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14) if spec.windows else None


#: the DBX data the demo's server reads, relative to the corpus folder
DBX_DATA = "secureboot/dbx_info_msft_latest.json"


def check_corpus_files(corpus: Path) -> None:
    """Every corpus file the demo reads is there, else a ConfigError naming it (exit 2:
    the corpus cannot be used), before anything starts; found later, a missing file
    would end the demo as "demo failed" (exit 1, as if something went unexpectedly)."""
    needed = {DBX_DATA, UPDATE_LOG, *(v.boot_log for v in VMS),
              *(v.sent_log for v in VMS if v.sent_log)}
    missing = sorted(rel for rel in needed if not (corpus / rel).is_file())
    if missing:
        raise ConfigError(f"the corpus {corpus} cannot be used for the demo: missing "
                          + ", ".join(missing))


def run_demo(corpus: Path, work: Path, console: Any) -> list[str]:
    """Run the demo in ``work``; returns what did not happen as expected (empty: all did)."""
    from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
    from bootwatch.embedded import create_server_app
    from bootwatch.lab import Lab
    from bootwatch.monitor.settings import MonitorSettings
    from bootwatch.service.server import tls_files
    from bootwatch.service.settings import Settings

    lab = Lab(work / "lab")
    templates = work / "secureboot-templates.json"
    templates.write_text(json.dumps([template_to_json(GOOGLE_COS_V10)], indent=2))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    token = os.urandom(16).hex()
    settings = Settings(
        data_dir=work / "server", host="127.0.0.1", port=sock.getsockname()[1],
        rate_limit_per_second=0, admin_tokens=(token,),
        trust_anchors_path=str(lab.ca_cert_path),
        dbx_data_path=str(corpus / DBX_DATA),
        secureboot_templates_path=str(templates),
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tls = tls_files(settings)
    if tls is None or tls.ca is None:
        raise ConfigError("the demo needs the development TLS certificate")
    monitor_settings = MonitorSettings(stale_after_seconds=STALE_AFTER,
                                       sweep_interval_seconds=0.5)
    embedded = create_server_app(settings, monitor_settings, issuer_ca=str(tls.ca))
    with _Server(embedded.app, tls, sock) as server:
        url = f"https://127.0.0.1:{server.server.servers[0].sockets[0].getsockname()[1]}"
        console.print(f"[bold]bootwatch server[/] on {url}: attestation at the root, monitor at "
                      f"/api/v1, SQLite in {settings.data_dir}", highlight=False)
        with MonitorClient(url, token=token, ca=str(tls.ca)) as client:
            demo = Demo(corpus, lab, url, tls.ca, client, embedded.service.relay, {}, [])
            _play(demo, console)
        return demo.problems


def _play(demo: Demo, console: Any) -> None:
    specs = {s.name: s for s in VMS}
    console.print("\n[bold]1. A fleet of lab VMs booted from real logs; monitoring enabled; "
                  "one agent cycle each[/]")
    for spec in VMS:
        vm = demo.lab.create_vm(spec.name, demo.corpus / spec.boot_log)
        demo.vm_ids[spec.name] = vm.vm_id.upper()
        demo.client.post(f"/vms/{vm.vm_id}/enable", {
            "name": spec.name, "group": "demo",
            "security_type": "trusted-launch",
            "secure_boot": "off" if "sb-off" in spec.name else "on", "vtpm": "on"})
        result = demo.cycle(spec)
        got = {"permit": "permit", "deny": "deny"}.get(result.verdict, "refused")
        demo.expect(got == spec.expect, f"{spec.name}: {result.verdict}, expected {spec.expect}")
        console.print(f"  {spec.name}: {result.verdict} ({spec.story})", highlight=False)
    _fleet(demo, console)

    console.print("\n[bold]2. cos-web reboots into an updated image (COS 93 -> COS 101)[/]")
    demo.lab.reboot_vm("cos-web", demo.corpus / UPDATE_LOG)
    demo.cycle(specs["cos-web"])
    alerts = demo.client.get("/alerts", vm=demo.vm_ids["cos-web"], status="open")["items"]
    deviation = [a for a in alerts if a["reason"] == "baseline_deviation"]
    demo.expect(bool(deviation), "cos-web: no baseline_deviation alert after the update")
    if deviation:
        _alert(deviation[0], console)
        console.print("\n[bold]3. The update is approved as a baseline variant[/]")
        res = demo.client.post("/baselines/approve", {"vm": "cos-web", "label": "cos-101"})
        after = demo.client.get(f"/alerts/{deviation[0]['id']}")
        vm = demo.client.get("/vms/cos-web")
        console.print(f"  baseline variant {res['baseline']} added; alert {after['id']} is "
                      f"[green]{after['status']}[/]; cos-web is [green]{vm['state']}[/]",
                      highlight=False)
        demo.expect(after["status"] == "resolved", "cos-web: the alert did not resolve")
        demo.expect(vm["state"] == "healthy", f"cos-web: {vm['state']} after approval")

    console.print(f"\n[bold]4. cos-idle's agent stops; the others keep reporting "
                  f"(stale after {STALE_AFTER:g} s)[/]")
    deadline = time.monotonic() + STALE_AFTER * 4
    while time.monotonic() < deadline:
        for name in ("azure-tl", "cos-web"):
            demo.cycle(specs[name])
        if demo.client.get("/vms/cos-idle")["state"] == "stale":
            break
        time.sleep(1.0)
    idle = demo.client.get("/vms/cos-idle")
    demo.expect(idle["state"] == "stale", f"cos-idle: {idle['state']}, expected stale")
    demo.expect(any(a["reason"] == "agent_unresponsive" and a["status"] == "active"
                    for a in idle["alerts"]), "cos-idle: no agent_unresponsive alert")
    sb = demo.client.get("/vms/ubuntu-sb-off")
    sb_rec = [r for r in sb["recommendations"]
              if r["key"] == "69ad830b-d98c-b1cf-2158-9d69d38c7093"]
    demo.expect(bool(sb_rec) and sb_rec[0]["status"]["code"] == "Unhealthy",
                "ubuntu-sb-off: the Secure Boot recommendation is not Unhealthy")
    tampered = demo.client.get("/vms/tampered")
    demo.expect(any(a["reason"] == "evidence_rejected" for a in tampered["alerts"]),
                "tampered: no evidence_rejected alert")
    _fleet(demo, console)
    if sb_rec:
        r = sb_rec[0]
        console.print(f"\nubuntu-sb-off: [bold]{r['name']}[/] ({r['key']}, {r['severity']}): "
                      f"{r['status']['code']} - {r['status']['description']}\n  fix: "
                      f"{r['remediation']}", highlight=False)


def _fleet(demo: Demo, console: Any) -> None:
    from rich.markup import escape

    from bootwatch.cli._console import table as make_table

    table = make_table("VM", "state", "open alerts", "unhealthy recommendations", "why",
                       title="fleet (bootwatch vm list)")
    colours = {"healthy": "green", "unhealthy": "red", "stale": "yellow"}
    for v in demo.client.all_vms():
        bad = [r["name"] for r in v["recommendations"] if r["status"]["code"] == "Unhealthy"]
        table.add_row(escape(v["name"]), f"[{colours.get(v['state'], 'magenta')}]{v['state']}[/]",
                      str(v["open_alerts"]), escape("; ".join(bad) or "-"),
                      escape(v["state_reason"]))
    console.print(table)


def _alert(alert: dict[str, Any], console: Any) -> None:
    from rich.markup import escape

    from bootwatch.cli._console import table as make_table

    console.print(f"  [red]ALERT[/] {alert['title']} ({alert['severity']}, {alert['reason']}): "
                  f"{escape(alert['description'])}", highlight=False)
    table = make_table("PCR", "event", "change", "component", "old digest", "new digest",
                       title="what changed (bootwatch alert show)")
    for d in alert["diff"]:
        table.add_row(str(d["pcr"]), "-" if d["event"] is None else str(d["event"]),
                      d["change"], escape(d["component"]),
                      d["old_digest"] or "-", d["new_digest"] or "-")
    console.print(table)


@click.command("demo")
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The shared corpus folder (shared/corpus).")
@click.option("--keep", is_flag=True, help="Keep the temporary data folder and print its path.")
def command(corpus: Path | None, keep: bool) -> None:
    """The main job: bootwatch server + a lab fleet; a boot change detected, explained,
    approved; a denial with its recommendation; a tampered log; a stale agent."""
    import shutil

    from bootwatch.cli._console import make_console

    console = make_console()
    corpus_dir = find_corpus(corpus)
    check_corpus_files(corpus_dir)
    work = Path(tempfile.mkdtemp(prefix="bootwatch-demo-"))
    started = time.monotonic()
    try:
        problems = run_demo(corpus_dir, work, console)
    except BootwatchError as exc:
        raise click.ClickException(f"demo failed: {exc}") from None
    finally:
        if keep:
            console.print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if problems:
        console.print("[red]UNEXPECTED:[/] " + "; ".join(problems), highlight=False)
        click.get_current_context().exit(1)
    console.print(f"\n[green]demo complete[/] in {time.monotonic() - started:.1f} s: every "
                  "verdict, alert and recommendation as expected", highlight=False)
