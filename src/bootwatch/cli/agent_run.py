"""``bootwatch agent run``, ``netcheck`` and ``install``: parse options, run, print.

The work is in :mod:`bootwatch.agent` (daemon, netcheck, install); this module
only maps options to configuration keys and results to exit codes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["install_cmd", "netcheck_cmd", "run_cmd"]


def _setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="bootwatch-agent: %(levelname)s %(message)s")
    # one line per HTTP request is noise in the journal; failures are logged by the daemon
    logging.getLogger("httpx").setLevel(logging.WARNING)


@click.command("run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="TOML (or Azure handler JSON) configuration "
              "[default /etc/bootwatch/agent.toml when present].")
@click.option("--url", default=None, help="Attestation provider base URL.")
@click.option("--ca", default=None, help="PEM CA bundle for the provider's TLS certificate.")
@click.option("--lab-vm", default=None, help="Use this lab VM's vTPM and event log.")
@click.option("--lab-dir", default=None, envvar="BOOTWATCH_LAB_DIR",
              help="Lab folder for --lab-vm.")
@click.option("--tcti", default=None,
              help="tpm2-tss TCTI [default device:/dev/tpmrm0, else device:/dev/tpm0].")
@click.option("--log", "log_file", default=None,
              help="TCG event log [default /sys/kernel/security/tpm0/binary_bios_measurements].")
@click.option("--pcrs", default=None, metavar="LIST",
              help="PCRs to quote [default: 0-7 plus every PCR among 8-15 the event log "
                   "extends].")
@click.option("--monitor-url", default=None, help="Monitor base URL for health reports.")
@click.option("--monitor-ca", default=None, help="PEM CA bundle for the monitor's TLS.")
@click.option("--status-file", default=None,
              help="Provisioning status file [default STATE_DIR/status/0.status].")
@click.option("--state-dir", default=None, help="State directory [default /var/lib/bootwatch].")
@click.option("--interval", default=None, help="Seconds between attestations [default 3600].")
@click.option("--once", is_flag=True,
              help="One cycle, then exit 0 healthy, 1 unhealthy, 2 platform error.")
def run_cmd(config_file: Path | None, once: bool, log_file: str | None, **options: Any) -> None:
    """Attest now and every interval; report health; write the provisioning status."""
    from bootwatch.agent.config import load_config
    from bootwatch.agent.daemon import AgentDaemon

    _setup_logging()
    overrides = dict(options, log=log_file)

    def load() -> Any:
        return load_config(config_file, overrides=overrides)

    loaded = load()
    daemon = AgentDaemon(loaded, reload=load, upgrade_hook=_upgrader(loaded, config_file))
    if once:
        result = daemon.run_once()
        click.echo(f"{result.health.value}: {result.status.message}")
        click.get_current_context().exit(result.exit_code)
    daemon.install_signal_handlers()
    click.get_current_context().exit(daemon.run())


def _upgrader(loaded: Any, config_file: Path | None) -> Any:
    """The signed-upgrade hook when the configuration has an ``[upgrade]`` table."""
    config = getattr(loaded, "config", loaded)
    from bootwatch.cli.agent_upgrade import upgrade_table

    # the same table as `bootwatch agent upgrade` (the unit's pre-start guard) builds:
    # both must read one upgrade.json
    table = upgrade_table(config)
    if table is None:
        return None
    from bootwatch.agent.upgrade import AgentUpgrader, parse_upgrade_config

    upgrade = parse_upgrade_config(table, source=str(config_file or "configuration"))
    return AgentUpgrader(upgrade, vm_id=getattr(config, "vm_id", None))


@click.command("netcheck")
@click.argument("url", required=False)
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="PEM CA bundle that signs the provider's TLS certificate.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Agent configuration (URL, CA and proxy from it).")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def netcheck_cmd(url: str | None, ca: Path | None, config_file: Path | None,
                 as_json: bool) -> None:
    """Can this machine reach the provider?  Exit 0 reachable, 2 not."""
    from bootwatch.agent.config import load_config
    from bootwatch.agent.netcheck import netcheck

    cfg = load_config(config_file, overrides={"url": url, "ca": ca}).config
    report = netcheck(cfg.attestation_url, ca=cfg.ca, proxy=cfg.proxy, no_proxy=cfg.no_proxy,
                      timeout=cfg.timeout)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        for step in report.steps:
            mark = {"ok": "ok  ", "fail": "FAIL", "skip": "skip", "warn": "warn"}[step.result]
            click.echo(f"[{mark}] {step.name:<13} {step.detail}")
            for line in step.lines:
                click.echo(f"       {'':<13} {line}")
        click.echo(report.verdict)
    click.get_current_context().exit(0 if report.reachable else 2)


@click.command("install")
@click.option("--prefix", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Root to install under (packaging, tests).")
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
def install_cmd(prefix: Path, dry_run: bool) -> None:
    """Lay out the systemd unit, the configuration and the directories under --prefix."""
    from bootwatch.agent.install import install_plan, perform

    # an absolute prefix: systemd-sysusers runs with --root, which it resolves against its
    # own directory (found in review: --prefix ./root failed to create the service user)
    prefix = Path(os.path.abspath(prefix))
    # absolute, not resolved: ROOT/current/bin/bootwatch must stay the `current` link, or
    # the unit would run this version for ever and roll every upgrade back
    plan = install_plan(prefix, executable=Path(os.path.abspath(sys.argv[0])))
    for item in plan:
        click.echo(f"{'would write' if dry_run else 'write'} {item.describe()}")
    if not dry_run:
        for warning in perform(plan, prefix=prefix):
            click.echo(f"warning: {warning}", err=True)
        click.echo("next: systemctl daemon-reload && systemctl enable --now bootwatch-agent"
                   if prefix == Path("/") else f"installed under {prefix}")
