"""``bootwatch agent attest``: one attestation from the guest side (parse, run, print).

The workflow (collect AzureGuest evidence from the vTPM, send it to the
provider, open the sealed token in the same vTPM, verify the token through the
provider's OpenID metadata and ``/certs``) lives in
:mod:`bootwatch.agent.attestation`; this module parses options and prints.

Exit codes: 0 permitted; 1 refused (policy deny or evidence rejected, with
the provider's reason) or the token did not open/verify; 2 the provider
could not be reached (the failing step is named: dns, tcp_connect, tls,
http_status, timeout), or another attestation of this VM held the attestation
lock for longer than 15 s (a platform error naming the lock file; where the lock
lives: :mod:`bootwatch.agent.attestlock`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bootwatch.agent.attestation import (
    EXIT_PERMITTED,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    AttestOutcome,
    attest_once,
    parse_pcr_list,
)
from bootwatch.errors import ConfigError

__all__ = ["EXIT_PERMITTED", "EXIT_REFUSED", "EXIT_UNREACHABLE", "AttestResult", "attest",
           "attest_once", "parse_pcr_list"]

#: the outcome type under its older name (``bootwatch demo`` and tests use it)
AttestResult = AttestOutcome

#: claims shown first in the human output: the ones the default policy decides on
HEADLINE = (
    "secureboot",
    "x-ms-azurevm-default-securebootkeysvalidated",
    "x-ms-azurevm-dbvalidated",
    "x-ms-azurevm-dbxvalidated",
    "x-ms-azurevm-debuggersdisabled",
    "x-ms-azurevm-signingdisabled",
    "x-ms-azurevm-attested-pcrs",
    "x-ms-azurevm-ostype",
    "x-ms-azurevm-vmid",
)


def _print_human(result: AttestOutcome) -> None:
    from rich.markup import escape

    from bootwatch.cli._console import make_console
    from bootwatch.cli._console import table as make_table

    console = make_console()
    if result.verdict == "permit":
        console.print("[bold green]PERMITTED[/]: token opened in the vTPM and verified "
                      "against the provider's /certs")
        table = make_table("claim", "value")
        shown = [c for c in HEADLINE if c in result.claims]
        rest = sorted(c for c in result.claims if c not in HEADLINE and c != "x-ms-runtime")
        for name in shown + rest:
            table.add_row(name, escape(json.dumps(result.claims[name])))
        console.print(table)
    elif result.verdict == "unreachable":
        # the transport error's text starts with the step already: name it once
        reason = result.reason.removeprefix(f"{result.step}: ")
        console.print(f"[bold red]UNREACHABLE[/] (step: {result.step}): {escape(reason)}")
    elif result.verdict == "platform-error":
        console.print(f"[bold red]PLATFORM ERROR[/]: {escape(result.reason)}")
    else:
        code = escape(f" [{result.error_code}]") if result.error_code else ""
        console.print(f"[bold red]{result.verdict.upper()}[/]{code}: {escape(result.reason)}")


@click.command("attest")
@click.option("--tcti", default=None,
              help="tpm2-tss TCTI (default device:/dev/tpmrm0, else device:/dev/tpm0).")
@click.option("--lab-vm", default=None, help="Use this lab VM's vTPM and event log.")
@click.option("--lab-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="BOOTWATCH_LAB_DIR", default=None, help="Lab folder for --lab-vm.")
@click.option("--log", "log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="TCG log (default: the lab VM's, else securityfs).")
@click.option("--url", required=True, help="Provider base URL, e.g. https://127.0.0.1:8443")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="PEM CA bundle that signs the provider's TLS certificate.")
@click.option("--payload", multiple=True, metavar="KEY=VALUE",
              help="ClientPayload entry (repeatable); echoed back in x-ms-runtime.")
@click.option("--pcrs", default=None, metavar="LIST",
              help="PCRs to quote, e.g. 0-7,11-14 (Windows); default 0-7 plus every PCR among "
                   "8-15 the event log extends.")
@click.option("--os-release", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="os-release file to report (default: the lab VM's, else /etc/os-release).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="BOOTWATCH_AGENT_STATE_DIR", default=None,
              help="The agent's state directory: its attest.lock keeps this attestation and "
                   "the daemon's apart (default: the lab VM's folder with --lab-vm, else "
                   "/var/lib/bootwatch when it exists, else /run/bootwatch).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def attest(
    tcti: str | None, lab_vm: str | None, lab_dir: Path | None, log_file: Path | None, url: str,
    ca: Path | None, payload: tuple[str, ...], pcrs: str | None, os_release: Path | None,
    state_dir: Path | None, as_json: bool,
) -> None:
    """Attest this machine (or a lab VM) to --url; exit 0 permitted, 1 denied, 2 unreachable."""
    from bootwatch.agent.attestlock import ATTEST_LOCK, AttestLock, default_lock_dir
    from bootwatch.agent.config import DEFAULT_TIMEOUT
    from bootwatch.agent.evidence import SECURITYFS_LOG, read_os_info, read_tcg_log

    if tcti and lab_vm:
        raise ConfigError("give --tcti or --lab-vm, not both")
    client_payload: dict[str, str] = {}
    for item in payload:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--payload {item!r}: expected KEY=VALUE")
        client_payload[key] = value
    indices = parse_pcr_list(pcrs) if pcrs else None
    import os

    from bootwatch.agent.proxy import choose_proxy

    # HTTPS_PROXY / NO_PROXY with libcurl's precedence, as the daemon (docs/agent.md)
    proxy = choose_proxy(url, configured=None, configured_no_proxy=None,
                         environ=os.environ).url
    if lab_vm is not None:
        from bootwatch.lab import Lab

        with Lab(lab_dir).running(lab_vm) as vm:
            log = read_tcg_log(log_file or vm.log_path)
            # the image's OS as the lab recorded it, never the lab host's
            os_info = read_os_info(os_release or vm.vm.os_release_path)
            lock = AttestLock((state_dir or vm.vm.path) / ATTEST_LOCK, wait=DEFAULT_TIMEOUT)
            result = attest_once(vm.tcti, log, url, ca=ca, os_info=os_info,
                                 client_payload=client_payload, pcr_indices=indices,
                                 proxy=proxy, lock=lock)
    else:
        from bootwatch.agent.platform import default_tcti, read_event_log

        # real machines first: /dev/tpmrm0, else /dev/tpm0; an empty log names the file
        log = read_event_log(log_file or SECURITYFS_LOG)
        os_info = read_os_info(os_release or Path("/etc/os-release"))
        lock = AttestLock((state_dir or default_lock_dir()) / ATTEST_LOCK, wait=DEFAULT_TIMEOUT)
        result = attest_once(tcti or default_tcti(), log, url, ca=ca, os_info=os_info,
                             client_payload=client_payload, pcr_indices=indices, proxy=proxy,
                             lock=lock)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _print_human(result)
    click.get_current_context().exit(result.exit_code)
