"""``bootwatch lab``: simulated Trusted Launch VMs on swtpm (create, list, destroy, CA)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bootwatch.lab import LAB_DIR_ENV, Lab

__all__ = [
    "ca_cmd",
    "command",
    "ek_ca_cmd",
    "fleet_group",
    "fleet_run",
    "vm_create",
    "vm_destroy",
    "vm_group",
    "vm_list",
    "vm_reboot",
    "vm_serve",
]


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


@command.group("fleet")
def fleet_group() -> None:
    """Simulate a fleet of lab VMs running the real agent against a deployment."""


@fleet_group.command("run")
@click.option("--vms", type=click.IntRange(1, 100_000), required=True, help="How many VMs.")
@click.option("--interval", type=click.FloatRange(1, 86400), required=True,
              help="The agents' attestation interval (seconds).")
@click.option("--duration", type=click.FloatRange(1, 7 * 86400), required=True,
              help="How long the scenario runs (seconds), after every VM attested once.")
@click.option("--scenario", "scenario_file", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Drift scenario (YAML or JSON; default: the built-in one).")
@click.option("--url", required=True, help="The deployment (bootwatch server) base URL.")
@click.option("--ca", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM CA bundle of the deployment's HTTPS certificate.")
@click.option("--admin-token-file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding an admin token of the deployment [default: "
                   "$BOOTWATCH_MONITOR_TOKEN].")
@click.option("--stale-after", type=click.FloatRange(min=0.1), default=9000.0,
              show_default=True, help="The deployment's --stale-after (seconds).")
@click.option("--sweep", type=click.FloatRange(min=0), default=0.0,
              help="The deployment's stale sweep period [default: derived as the monitor does].")
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait for pending alerts after the run [default: "
                   "interval + sweep + 10].")
@click.option("--vtpm-pool", type=click.IntRange(min=1), default=None,
              help="swtpm processes shared by the VMs [default: one per VM up to 300, "
                   "else 64].")
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The shared corpus folder (shared/corpus).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the agents' state goes [default: a temporary folder].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the draw of VMs for each event.")
@click.option("--keep", is_flag=True, help="Keep the lab VMs, agent state and monitored VMs.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def fleet_run(ctx: click.Context, vms: int, interval: float, duration: float,
              scenario_file: Path | None, url: str, ca: Path | None,
              admin_token_file: Path | None, stale_after: float, sweep: float,
              grace: float | None, vtpm_pool: int | None, corpus: Path | None,
              work_dir: Path | None, seed: int, keep: bool, as_json: bool) -> None:
    """Run VMS lab VMs with the real agent daemon against URL, drift them as the
    scenario says, and report what the monitor caught: detection latency, false and
    missed alerts.  Exit 0 when nothing was missed or false, 1 otherwise, 2 on errors.
    The deployment must trust this lab's CA (`bootwatch lab ca`) as --trust-anchors."""
    import os
    import sys
    import tempfile

    from bootwatch.cli._console import make_console
    from bootwatch.cli._files import read_limited_text
    from bootwatch.cli.demo import find_corpus
    from bootwatch.errors import ConfigError
    from bootwatch.lab.fleet import FleetConfig, run_fleet
    from bootwatch.lab.scenario import load_scenario

    if admin_token_file is not None:
        token = read_limited_text(admin_token_file, "admin token file", 4096).strip()
    else:
        token = os.environ.get("BOOTWATCH_MONITOR_TOKEN", "").strip()
    if not token:
        raise ConfigError("an admin token is needed: --admin-token-file FILE or "
                          "BOOTWATCH_MONITOR_TOKEN")
    scenario = load_scenario(scenario_file)
    # each agent logs its cycles; for a fleet that is noise (the report says what matters)
    import logging

    logging.getLogger("bootwatch.agent").setLevel(logging.ERROR)
    import shutil

    lab = _lab(ctx)
    _stop_cleanly_on_signals()
    # --keep keeps the agents' state too: a temporary folder is removed only without it
    tmp = None if work_dir else Path(tempfile.mkdtemp(prefix="bootwatch-fleet-"))
    err = make_console(stderr=True)
    try:
        cfg = FleetConfig(
            vms=vms, interval=interval, duration=duration, url=url, admin_token=token,
            scenario=scenario, corpus=find_corpus(corpus), lab_dir=lab.root,
            work_dir=work_dir or tmp or Path(), ca=ca, stale_after=stale_after,
            sweep=sweep, grace=grace, vtpm_pool=vtpm_pool, seed=seed, keep=keep)
        report = run_fleet(cfg, None if as_json else
                           (lambda msg: err.print(f"[dim]fleet:[/] {msg}", highlight=False)))
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if keep:
        err.print(f"kept: the agents' state in {cfg.work_dir / report.config['group']}, "
                  f"the lab VMs in {lab.root}", highlight=False)
    data = report.to_json()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_fleet(data)
    ctx.exit(0 if data["ok"] else 1)


def _stop_cleanly_on_signals() -> None:
    """SIGTERM stops a fleet as Ctrl-C does (the simulator's clean-up runs: its swtpm
    processes, lab VMs and monitored VMs go), and once stopping, further SIGTERMs and
    Ctrl-Cs are ignored until that clean-up is done.  Without this, ``kill`` ended the
    process at once and left up to hundreds of swtpm processes running (they live in
    sessions of their own, so no signal to this process reaches them)."""
    import signal

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _print_fleet(data: dict[str, object]) -> None:
    from typing import Any, cast

    from rich.markup import escape

    from bootwatch.cli._console import make_console, table

    d = cast(dict[str, Any], data)
    console = make_console()
    cfg = d["config"]
    console.print(f"[bold]fleet {cfg['group']}[/]: {cfg['vms']} VMs, interval "
                  f"{cfg['interval_s']:g} s, {cfg['duration_s']:g} s "
                  f"({cfg['vtpm_mode']} vTPMs), scenario {escape(cfg['scenario'])}; set-up "
                  f"{d['setup_s']:.0f} s, warm-up {d['warmup_s']:.0f} s", highlight=False)
    cycles = ", ".join(f"{k} {v}" for k, v in d["cycles"].items())
    console.print(f"agent cycles: {cycles}", highlight=False)

    def fmt(v: object) -> str:
        return "-" if v is None else f"{v:.1f}"

    t = table("action", "causes", "detected", "missed", "latency p50 s", "p99 s", "max s",
              title="what the monitor caught")
    for action, k in d["by_action"].items():
        lat = k["latency_s"]
        t.add_row(action, str(k["causes"]), str(k["detected"]),
                  f"[red]{k['missed']}[/]" if k["missed"] else "0",
                  fmt(lat["p50"]), fmt(lat["p99"]), fmt(lat["max"]))
    console.print(t)
    lat, un = d["detection_latency_s"], d["unresponsive_latency_s"]
    console.print(f"detection latency (bad boot or forged log -> alert open): p50 "
                  f"{fmt(lat['p50'])} s, p99 {fmt(lat['p99'])} s over {lat['count']}; "
                  f"unresponsive (stale due -> alert): p50 {fmt(un['p50'])} s, p99 "
                  f"{fmt(un['p99'])} s over {un['count']}", highlight=False)
    colour = "green" if d["ok"] else "red"
    console.print(f"[{colour}]missed {d['missed']}, false {d['false_alerts']}[/] "
                  f"(ambiguous {d['ambiguous']}, undetectable {d['undetectable']}); "
                  f"VM states: {d['vm_states']}", highlight=False)
    for c in d["missed_list"]:
        console.print(f"  [red]MISSED[/] {c['vm']} {c['action']} at {c['at']}: no "
                      f"{c['reason']} alert {escape(c['note'])}", highlight=False)
    for a in d["false_alert_list"]:
        console.print(f"  [red]FALSE[/] {a['vm']} {a['reason']} at {a['start']}: "
                      f"{escape(a['description'])}", highlight=False)
    for p in d["problems"]:
        console.print(f"  [red]PROBLEM[/] {escape(p)}", highlight=False)
    for s in d["skipped"]:
        console.print(f"  [yellow]SKIPPED[/] {escape(s)}", highlight=False)
