"""``bootwatch agent enroll``: get an AIK certificate for a TPM that has only an EK
certificate (see docs/enrollment.md).

Exit codes: 0 enrolled (the AIK certificate is in NV 0x01C101D0, so ``agent attest``
works next); 1 the provider refused, with its reason (the check that failed); 2 the
provider could not be reached (the step is named) or the TPM failed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bootwatch.errors import ConfigError

if TYPE_CHECKING:
    from bootwatch.agent.enroll import EnrollResult

__all__ = [
    "enroll",
]


def _print_human(r: EnrollResult) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=False)
    if r.outcome == "enrolled":
        console.print(f"[bold green]ENROLLED[/]: {escape(r.subject or '')} serial {r.serial}, "
                      f"valid until {r.not_after}; {escape(r.reason)}")
    elif r.outcome == "unreachable":
        console.print(f"[bold red]UNREACHABLE[/] (step: {r.step}): {escape(r.reason)}")
    else:
        tag = escape(f" [{r.error_code}]") if r.error_code else ""
        console.print(f"[bold red]REFUSED[/]{tag}: {escape(r.reason)}")


@click.command("enroll")
@click.option("--url", required=True, help="Provider base URL, e.g. https://127.0.0.1:8443")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="PEM CA bundle that signs the provider's TLS certificate.")
@click.option("--tcti", default=None, help="tpm2-tss TCTI (default device:/dev/tpmrm0).")
@click.option("--lab-vm", default=None, help="Enrol this lab VM's vTPM.")
@click.option("--lab-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="BOOTWATCH_LAB_DIR", default=None, help="Lab folder for --lab-vm.")
@click.option("--vm-id", default=None, metavar="GUID",
              help="VM id for the AIK certificate (default: the lab VM's, else the SMBIOS "
                   "system UUID).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def enroll(url: str, ca: Path | None, tcti: str | None, lab_vm: str | None,
           lab_dir: Path | None, vm_id: str | None, as_json: bool) -> None:
    """Enrol this TPM (or a lab VM's) with --url; exit 0 enrolled, 1 refused, 2 unreachable."""
    from bootwatch.agent.client import AttestationClient
    from bootwatch.agent.enroll import EnrollResult, dmi_vm_id, enroll_tpm
    from bootwatch.agent.tpm import open_tpm
    from bootwatch.errors import TransportError

    if tcti and lab_vm:
        raise ConfigError("give --tcti or --lab-vm, not both")

    def run(spec: str | None, vid: str) -> EnrollResult:
        try:
            with AttestationClient(url, ca=ca) as client, open_tpm(spec) as esys:
                return enroll_tpm(esys, client, vid)
        except TransportError as exc:
            return EnrollResult("unreachable", str(exc), vid, step=exc.step)

    if lab_vm is not None:
        from bootwatch.lab import Lab

        lab = Lab(lab_dir)
        with lab.running(lab_vm) as vm:
            result = run(vm.tcti, vm_id or vm.vm.vm_id)
    else:
        vid = vm_id or dmi_vm_id()
        if vid is None:
            raise ConfigError("no VM id: pass --vm-id (the SMBIOS UUID is not readable)")
        result = run(tcti, vid)
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    else:
        _print_human(result)
    click.get_current_context().exit(result.exit_code)
