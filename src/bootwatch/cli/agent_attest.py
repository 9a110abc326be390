"""``bootwatch agent attest``: one attestation from the guest side.

Collect AzureGuest evidence from the vTPM, send it to the provider, open the
sealed token in the same vTPM, verify the token's signature through the
provider's OpenID metadata and ``/certs``, print the claims.

Exit codes: 0 permitted; 1 refused (policy deny or evidence rejected, with
the provider's reason) or the token did not open/verify; 2 the provider
could not be reached (the failing step is named: dns, tcp_connect, tls,
http_status, timeout).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bootwatch.errors import (
    BootwatchError,
    ConfigError,
    ServiceError,
    TransportError,
)

EXIT_PERMITTED = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2

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


@dataclass
class AttestResult:
    """What one guest-side attestation ended with (also the ``--json`` shape)."""

    verdict: str
    reason: str = ""
    step: str | None = None
    error_code: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    token: str | None = None

    @property
    def exit_code(self) -> int:
        return {"permit": EXIT_PERMITTED, "unreachable": EXIT_UNREACHABLE}.get(
            self.verdict, EXIT_REFUSED
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "step": self.step,
            "error_code": self.error_code,
            "claims": self.claims,
            "token": self.token,
        }


def attest_once(
    tcti: str | None,
    tcg_log: bytes,
    url: str,
    *,
    ca: Path | None = None,
    os_info: Any = None,
    client_payload: dict[str, str] | None = None,
    pcr_indices: tuple[int, ...] | None = None,
) -> AttestResult:
    """Collect, send, unseal, verify; never raises for the outcomes the exit codes cover."""
    from bootwatch.agent.client import AttestationClient
    from bootwatch.agent.evidence import collect_from
    from bootwatch.agent.tpm import open_tpm
    from bootwatch.agent.unseal import open_envelope

    with open_tpm(tcti) as esys:
        extra = {"pcr_indices": pcr_indices} if pcr_indices else {}
        ev = collect_from(esys, tcg_log=tcg_log, os_info=os_info,
                          client_payload=client_payload, **extra)
        try:
            with AttestationClient(url, ca=ca) as client:
                try:
                    envelope = client.attest_azure_guest(ev.request_body())
                except ServiceError as exc:
                    verdict = "deny" if exc.error_code == "PolicyEvaluationError" else "refused"
                    if exc.status >= 500:
                        return AttestResult("unreachable", str(exc), step="http_status",
                                            error_code=exc.error_code)
                    return AttestResult(verdict, exc.args[0] if exc.args else str(exc),
                                        error_code=exc.error_code)
                try:
                    jws = open_envelope(esys, envelope, quoted_pcrs=ev.pcrs,
                                        pcr_indices=ev.pcr_set)
                except BootwatchError as exc:
                    return AttestResult("unsealed-failed", f"the token did not open: {exc}")
                try:
                    claims = client.verify_token(jws)
                except TransportError:
                    raise
                except BootwatchError as exc:
                    return AttestResult("token-invalid", f"token verification failed: {exc}",
                                        token=jws)
        except TransportError as exc:
            return AttestResult("unreachable", str(exc), step=exc.step)
    return AttestResult("permit", "permitted", claims=claims, token=jws)


def parse_pcr_list(text: str) -> tuple[int, ...]:
    """``0-7,11-14`` -> (0, 1, ..., 7, 11, ..., 14); PCRs 0..23."""
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"--pcrs {text!r}: {part!r} is not N or N-M") from None
        if not 0 <= first <= last <= 23:
            raise ConfigError(f"--pcrs {text!r}: {part!r} is outside PCRs 0-23")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def _print_human(result: AttestResult) -> None:
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
    else:
        code = escape(f" [{result.error_code}]") if result.error_code else ""
        console.print(f"[bold red]{result.verdict.upper()}[/]{code}: {escape(result.reason)}")


@click.command("attest")
@click.option("--tcti", default=None, help="tpm2-tss TCTI (default device:/dev/tpmrm0).")
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
              help="PCRs to quote, e.g. 0-7,11-14 (Windows); default 0-7 (Linux).")
@click.option("--os-release", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="os-release file to report (default: the lab VM's, else /etc/os-release).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def attest(
    tcti: str | None, lab_vm: str | None, lab_dir: Path | None, log_file: Path | None, url: str,
    ca: Path | None, payload: tuple[str, ...], pcrs: str | None, os_release: Path | None,
    as_json: bool,
) -> None:
    """Attest this machine (or a lab VM) to --url; exit 0 permitted, 1 denied, 2 unreachable."""
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
    if lab_vm is not None:
        from bootwatch.lab import Lab

        with Lab(lab_dir).running(lab_vm) as vm:
            log = read_tcg_log(log_file or vm.log_path)
            # the image's OS as the lab recorded it, never the lab host's
            os_info = read_os_info(os_release or vm.vm.os_release_path)
            result = attest_once(vm.tcti, log, url, ca=ca, os_info=os_info,
                                 client_payload=client_payload, pcr_indices=indices)
    else:
        log = read_tcg_log(log_file or SECURITYFS_LOG)
        os_info = read_os_info(os_release or Path("/etc/os-release"))
        result = attest_once(tcti, log, url, ca=ca, os_info=os_info,
                             client_payload=client_payload, pcr_indices=indices)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _print_human(result)
    click.get_current_context().exit(result.exit_code)
