"""``bootwatch lab``: simulated Trusted Launch VMs on swtpm (create, list, destroy, CA)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bootwatch.lab import LAB_DIR_ENV, Lab


def _lab(ctx: click.Context) -> Lab:
    obj = ctx.ensure_object(dict)
    root: Path | None = obj.get("lab_dir")
    return Lab(root)


@click.group()
@click.option(
    "--lab-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=LAB_DIR_ENV,
    help=f"Lab folder (default ${LAB_DIR_ENV}, else $XDG_DATA_HOME/bootwatch/lab).",
)
@click.pass_context
def command(ctx: click.Context, lab_dir: Path | None) -> None:
    """swtpm-backed simulated Trusted Launch VMs."""
    ctx.ensure_object(dict)["lab_dir"] = lab_dir


@command.command("ca")
@click.pass_context
def ca_cmd(ctx: click.Context) -> None:
    """Print the path of the lab CA bundle (PEM: issuer + root): trust anchors for lab certs."""
    click.echo(str(_lab(ctx).ca_cert_path))


@command.command("ek-ca")
@click.pass_context
def ek_ca_cmd(ctx: click.Context) -> None:
    """Print the path of the lab EK CA bundle (PEM: issuer + root), the "manufacturer" of
    lab vTPMs: give it to a provider as --ek-trust-anchors."""
    click.echo(str(_lab(ctx).ek_ca_cert_path))


@command.group("vm")
def vm_group() -> None:
    """Create, list and destroy lab VMs."""


@vm_group.command("create")
@click.argument("name")
@click.option("--log", "log_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A TCG event log (binary_bios_measurements) the VM's vTPM is booted from.")
@click.option("--vm-id", default=None, help="VM id (GUID) for the AIK certificate subject.")
@click.option("--no-aik-cert", is_flag=True,
              help="Only an EK and its certificate (from the lab EK CA), no AIK and no AIK "
                   "certificate: the VM must `bootwatch agent enroll` before it can attest.")
@click.option("--os-release", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The image's os-release file (default: derived from the log).")
@click.pass_context
def vm_create(ctx: click.Context, name: str, log_file: Path, vm_id: str | None,
              no_aik_cert: bool, os_release: Path | None) -> None:
    """Create VM NAME: provision its vTPM and replay LOG into its PCRs.

    The VM reports the OS of the image its log came from: derived from what the log
    measured (boot loader paths, boot options, kernel command line) and its file
    name, or the --os-release file given.
    """
    vm = _lab(ctx).create_vm(name, log_file, vm_id=vm_id, aik_cert=not no_aik_cert,
                             os_release=os_release)
    click.echo(f"created {vm.name} (vm id {vm.vm_id}) in {vm.path}")
    click.echo(f"  OS: {vm.os_name} ({vm.os_source})")
    if no_aik_cert:
        click.echo("  EK certificate only (no AIK certificate): enrol it with "
                   "`bootwatch agent enroll`")
    if vm.startup_locality:
        click.echo(f"  started at locality {vm.startup_locality} (log's StartupLocality)")
    if vm.hcrtm:
        click.echo("  booted through the H-CRTM sequence")
    for note in vm.log_adjustments:
        click.echo(f"  log adjusted: {note}")


@vm_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@click.pass_context
def vm_list(ctx: click.Context, as_json: bool) -> None:
    """List lab VMs."""
    vms = _lab(ctx).list_vms()
    if as_json:
        click.echo(json.dumps([v.to_json() for v in vms], indent=2))
        return
    if not vms:
        click.echo(f"no lab VMs in {_lab(ctx).root} "
                   "(create one with: bootwatch lab vm create NAME --log FILE)")
        return
    for v in vms:
        extra = " hcrtm" if v.hcrtm else (f" locality={v.startup_locality}"
                                          if v.startup_locality else "")
        click.echo(f"{v.name}\t{v.vm_id}\t{v.created}\t{v.os_name}{extra}")


@vm_group.command("reboot")
@click.argument("name")
@click.option("--log", "log_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Boot this log instead (an updated or tampered image); it becomes the "
              "VM's log.")
@click.pass_context
def vm_reboot(ctx: click.Context, name: str, log_file: Path | None) -> None:
    """Reboot VM NAME: same vTPM and AIK, PCRs reset and re-extended from its log."""
    vm = _lab(ctx).reboot_vm(name, log_file)
    what = f"from {log_file}" if log_file else "from its log"
    click.echo(f"rebooted {vm.name} {what} (boot {vm.boot_count})")


@vm_group.command("destroy")
@click.argument("name")
@click.pass_context
def vm_destroy(ctx: click.Context, name: str) -> None:
    """Delete VM NAME and its vTPM state."""
    _lab(ctx).destroy_vm(name)
    click.echo(f"destroyed {name}")


@vm_group.command("serve")
@click.argument("name")
@click.option("--port", type=click.IntRange(1024, 65534), required=True,
              help="Command port P (mssim); the platform port is P+1.")
@click.pass_context
def vm_serve(ctx: click.Context, name: str, port: int) -> None:
    """Serve VM NAME's vTPM on 127.0.0.1:PORT in the mssim framing until SIGTERM/Ctrl-C."""
    import signal

    lab = _lab(ctx)
    with lab.running(name) as vm:
        relay = vm.mssim_relay(port)
        relay.start()

        def stop(signum: int, frame: object) -> None:
            relay.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        click.echo(f"serving lab VM {name} (vm id {vm.vm.vm_id}) on "
                   f"mssim:host=127.0.0.1,port={port} (platform port {port + 1})")
        click.echo(f"event log: {vm.log_path}")
        click.echo(f"try: tpm2_pcrread -T mssim:host=127.0.0.1,port={port} sha256:0,1,2,3,4,5,6,7")
        try:
            relay.wait()
        finally:
            relay.stop()
        click.echo(f"stopped; {relay.clients_served} client(s) served")
