"""``bootwatch demo``: the whole system in one command, on real corpus logs.

Starts the attestation service (SQLite, the shared provider with its fixed
default AzureGuest policy, a development TLS certificate) on a free loopback
port in a temporary data folder; creates lab VMs (swtpm vTPMs) whose PCRs are
those of real boot logs from the shared corpus; attests each one through
HTTPS with the agent's evidence collector; opens each sealed token in that
VM's vTPM; verifies it against the provider's OpenID metadata and /certs;
and prints a table of verdicts and the claims or rules that decided them.

The VMs:

* ``azure-tl``: the real Azure Trusted Launch Windows Server 2019 log
  (Secure Boot on, Azure's default keys): permitted by the default policy.
* ``cos-sb-on``: Google COS 101 (Secure Boot on, Google's own keys): permitted
  because the demo enables the ``google-cos-v10`` Secure Boot template.
* ``ubuntu-sb-off``: Ubuntu 21.04 with Secure Boot off: denied.
* ``tampered``: a VM booted from HIRS ``TpmLog.bin`` that sends the altered
  copy of that log: the evidence is rejected (the log does not replay).

The service's trust anchors are the lab CA, its DBX data Microsoft's list
from ``shared/corpus/secureboot``.  Exit status 0 when every VM got the
verdict expected of it, 1 otherwise, 2 when the corpus cannot be used; the
corpus is found with ``--corpus``, ``$BOOTWATCH_SHARED/corpus`` or
``../shared/corpus`` next to the repository or the current folder (a path given
with the option or the variable that does not hold the corpus is an error
naming it, not a reason to look elsewhere).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from bootwatch.cli.agent_attest import AttestResult
from bootwatch.errors import BootwatchError, ConfigError


@dataclass(frozen=True)
class DemoVm:
    name: str
    boot_log: str  # relative to the corpus folder
    sent_log: str | None  # the log the agent sends, when not the boot log
    expect: str  # permit | deny | refused
    story: str
    windows: bool = False


VMS = (
    DemoVm("azure-tl", "maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin", None,
           "permit", "Azure Trusted Launch WS2019, Secure Boot on, Azure default keys",
           windows=True),
    DemoVm("cos-sb-on", "eventlogs/go-tpm-tools/cos-101-amd-sev.bin", None, "permit",
           "Google COS 101, Secure Boot on (google-cos-v10 template enabled)"),
    DemoVm("ubuntu-sb-off", "eventlogs/go-tpm-tools/ubuntu-2104-no-secure-boot.bin", None, "deny",
           "Ubuntu 21.04, Secure Boot off"),
    DemoVm("tampered", "eventlogs/hirs/TpmLog.bin", "eventlogs/hirs/TPMLog_Altered.bin",
           "refused", "HIRS log altered after the vTPM booted"),
)


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

    def __init__(self, app: Any, tls: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ConfigError("the attestation service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@dataclass
class Row:
    vm: DemoVm
    verdict: str
    decided_by: str
    unsealed: bool
    ok: bool


def _decided_by(result: AttestResult) -> str:
    if result.verdict == "permit":
        keys = ("secureboot", "x-ms-azurevm-default-securebootkeysvalidated",
                "x-ms-azurevm-dbvalidated", "x-ms-azurevm-dbxvalidated",
                "x-ms-azurevm-debuggersdisabled", "x-ms-azurevm-signingdisabled")
        shown = ", ".join(f"{k.removeprefix('x-ms-azurevm-')}={str(result.claims.get(k)).lower()}"
                          for k in keys)
        return f"=> permit(); {shown}"
    return str(result.reason)


def run_demo(corpus: Path, work: Path, *, echo: Any = print) -> list[Row]:
    """Run the demo in ``work``; returns one row per VM."""
    from bootwatch.agent.evidence import OsInfo
    from bootwatch.attest.claims import GOOGLE_COS_V10, template_to_json
    from bootwatch.cli.agent_attest import attest_once
    from bootwatch.lab import Lab
    from bootwatch.service.app import create_app
    from bootwatch.service.server import tls_files
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import ServiceState

    lab = Lab(work / "lab")
    templates = work / "secureboot-templates.json"
    templates.write_text(json.dumps([template_to_json(GOOGLE_COS_V10)], indent=2))
    settings = Settings(
        data_dir=work / "service",
        host="127.0.0.1",
        rate_limit_per_second=0,
        trust_anchors_path=str(lab.ca_cert_path),
        dbx_data_path=str(corpus / "secureboot" / "dbx_info_msft_latest.json"),
        secureboot_templates_path=str(templates),
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tls = tls_files(settings)
    if tls is None or tls.ca is None:
        raise ConfigError("the demo needs the development TLS certificate")
    state = ServiceState.open(settings)
    rows: list[Row] = []
    with _Server(create_app(settings, state=state), tls) as server:
        url = f"https://127.0.0.1:{server.port}"
        settings = replace(settings, port=server.port)
        echo(f"service: {url} (SQLite in {settings.data_dir}), shared provider, default policy")
        for spec in VMS:
            lab.create_vm(spec.name, corpus / spec.boot_log)
            sent = (corpus / (spec.sent_log or spec.boot_log)).read_bytes()
            os_info = (OsInfo("Windows", "Microsoft", 10, 0, "NotApplicable") if spec.windows
                       else OsInfo("Linux", "Ubuntu", 22, 4))
            with lab.running(spec.name) as vm:
                result = attest_once(vm.tcti, sent, url, ca=tls.ca, os_info=os_info,
                                     client_payload={"nonce": os.urandom(8).hex()},
                                     pcr_indices=_pcrs_for(spec))
            got = {"permit": "permit", "deny": "deny"}.get(result.verdict, "refused")
            rows.append(Row(spec, result.verdict, _decided_by(result),
                            result.verdict == "permit", got == spec.expect))
            echo(f"  {spec.name}: {result.verdict}")
    return rows


def _pcrs_for(spec: DemoVm) -> tuple[int, ...]:
    """Linux agents quote PCRs 0-7; Windows ones 0-7 and 11-14 (maa-protocol 1.3)."""
    return (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14) if spec.windows else tuple(range(8))


def _table(rows: list[Row]) -> Any:
    from rich.markup import escape

    from bootwatch.cli._console import table as make_table

    table = make_table("VM", "boot", "verdict", "decided by", "token opened in vTPM",
                       title="bootwatch demo: attestation of lab VMs booted from real logs",
                       show_lines=True)
    for r in rows:
        colour = {"permit": "green", "deny": "red"}.get(r.verdict, "yellow")
        mark = "" if r.ok else " (UNEXPECTED)"
        table.add_row(r.vm.name, escape(r.vm.story), f"[{colour}]{r.verdict}[/]{mark}",
                      escape(r.decided_by),
                      "yes, signature verified via /certs" if r.unsealed else "-")
    return table


@click.command("demo")
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The shared corpus folder (shared/corpus).")
@click.option("--keep", is_flag=True, help="Keep the temporary data folder and print its path.")
def command(corpus: Path | None, keep: bool) -> None:
    """End-to-end demo: service + lab VMs from real logs + agent attest + vTPM unseal."""
    from bootwatch.cli._console import make_console

    console = make_console()
    corpus_dir = find_corpus(corpus)
    work = Path(tempfile.mkdtemp(prefix="bootwatch-demo-"))
    try:
        rows = run_demo(corpus_dir, work, echo=lambda m: console.print(m, highlight=False))
    except BootwatchError as exc:
        raise click.ClickException(f"demo failed: {exc}") from None
    finally:
        if keep:
            console.print(f"data kept in {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    console.print(_table(rows))
    bad = [r.vm.name for r in rows if not r.ok]
    if bad:
        console.print(f"[red]unexpected verdicts for {', '.join(bad)}[/]")
        click.get_current_context().exit(1)
