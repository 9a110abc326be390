"""``bootwatch agent``: the guest side: collect evidence, unseal tokens (and attest)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from bootwatch.cli._files import read_limited
from bootwatch.errors import ConfigError

__all__ = [
    "HOST_OS_RELEASE",
    "command",
    "evidence_cmd",
    "unseal_cmd",
]


@click.group()
def command() -> None:
    """The guest side: collect AzureGuest evidence, open sealed tokens."""


#: where a machine (not a lab VM) describes its OS
HOST_OS_RELEASE = Path("/etc/os-release")


@contextlib.contextmanager
def _tpm_target(
    tcti: str | None, lab_vm: str | None, lab_dir: Path | None
) -> Iterator[tuple[str | None, Path | None, Path]]:
    """(TCTI, default log path, os-release) for ``--tcti`` / ``--lab-vm``.

    A lab VM runs for the block; its os-release is the one the lab recorded for the
    image its log came from, never the lab host's.
    """
    if tcti and lab_vm:
        raise ConfigError("give --tcti or --lab-vm, not both")
    if lab_vm is None:
        yield tcti, None, HOST_OS_RELEASE
        return
    from bootwatch.lab import Lab

    with Lab(lab_dir).running(lab_vm) as vm:
        yield vm.tcti, vm.log_path, vm.vm.os_release_path


_tcti_opt = click.option(
    "--tcti", default=None, help="tpm2-tss TCTI (default device:/dev/tpmrm0)."
)
_lab_vm_opt = click.option(
    "--lab-vm", default=None, help="Use this lab VM's vTPM (and its event log)."
)
_lab_dir_opt = click.option(
    "--lab-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BOOTWATCH_LAB_DIR",
    default=None, help="Lab folder for --lab-vm.",
)


@command.command("evidence")
@_tcti_opt
@_lab_vm_opt
@_lab_dir_opt
@click.option("--log", "log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="TCG log (default: the lab VM's, else securityfs).")
@click.option("--os-release", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="os-release file to report (default: the lab VM's, "
              "else /etc/os-release).")
@click.option("--payload", multiple=True, metavar="KEY=VALUE",
              help="ClientPayload entry (repeatable); echoed back in the token.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the request body ('-' for stdout).")
def evidence_cmd(
    tcti: str | None, lab_vm: str | None, lab_dir: Path | None, log_file: Path | None,
    os_release: Path | None, payload: tuple[str, ...], out: Path,
) -> None:
    """Collect one AzureGuest attestation and write the request body to --out."""
    from bootwatch.agent.evidence import (
        SECURITYFS_LOG,
        collect_evidence,
        read_os_info,
        read_tcg_log,
    )

    client_payload: dict[str, str] = {}
    for item in payload:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--payload {item!r}: expected KEY=VALUE")
        client_payload[key] = value
    with _tpm_target(tcti, lab_vm, lab_dir) as (spec, vm_log, target_os):
        log = read_tcg_log(log_file or vm_log or SECURITYFS_LOG)
        start = time.perf_counter()
        ev = collect_evidence(
            spec, tcg_log=log, os_info=read_os_info(os_release or target_os),
            client_payload=client_payload,
        )
        elapsed = time.perf_counter() - start
    body = ev.request_body()
    if str(out) == "-":
        sys.stdout.write(body.decode("ascii") + "\n")
    else:
        out.write_bytes(body)
        click.echo(
            f"wrote {out} ({len(body)} bytes; PCRs {list(ev.pcr_set)} quoted; "
            f"collected in {elapsed * 1000:.1f} ms)",
            err=True,
        )


@command.command("unseal")
@click.argument("response", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_tcti_opt
@_lab_vm_opt
@_lab_dir_opt
@click.option("--request", "request_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The request the response answers: its quoted PCRs name what changed.")
def unseal_cmd(
    response: Path, tcti: str | None, lab_vm: str | None, lab_dir: Path | None,
    request_file: Path | None,
) -> None:
    """Open a sealed AzureGuest RESPONSE with the vTPM; print the JWS."""
    from bootwatch.agent.unseal import unseal

    quoted: dict[int, bytes] | None = None
    if request_file is not None:
        from bootwatch.protocol.azureguest import decode_request

        req = decode_request(read_limited(request_file, "request"))
        quoted = dict(req.tpm_info.pcrs)
    body = read_limited(response, "response")
    with _tpm_target(tcti, lab_vm, lab_dir) as (spec, _, _os):
        jws = unseal(spec, body, quoted_pcrs=quoted)
    click.echo(jws)


# further agent subcommands are registered below (one line each)
command.add_command(__import__("bootwatch.cli.agent_attest", fromlist=["attest"]).attest)
command.add_command(__import__("bootwatch.cli.agent_upgrade", fromlist=["upgrade"]).upgrade)
command.add_command(__import__("bootwatch.cli.agent_enroll", fromlist=["enroll"]).enroll)
for _name in ("run_cmd", "netcheck_cmd", "install_cmd"):
    command.add_command(getattr(__import__("bootwatch.cli.agent_run", fromlist=[_name]), _name))
