"""``bootwatch vm``: the monitored inventory (list, show, enable, disable)."""

from __future__ import annotations

from typing import Any

import click

from bootwatch.cli._console import make_console as console
from bootwatch.cli._console import printable, safe
from bootwatch.cli._console import table as make_table
from bootwatch.cli._monitor_client import client_options, echo_json, make_client, seg

__all__ = [
    "command",
    "disable_cmd",
    "enable_cmd",
    "list_cmd",
    "show_cmd",
]

_STATE_STYLE = {"healthy": "green", "unhealthy": "bold red", "stale": "yellow",
                "platform_error": "magenta", "not_reporting": "yellow", "not_monitored": "dim"}


@click.group()
def command() -> None:
    """VMs the monitor knows: state, alerts, recommendations; enable monitoring."""


@command.command("list")
@click.option("--state", default=None, help="only VMs in this state")
@click.option("--group", default=None)
@click.option("--json", "as_json", is_flag=True)
@client_options
def list_cmd(state: str | None, group: str | None, as_json: bool, monitor_url: str,
             ca: str) -> None:
    """List VMs, those that need attention first."""
    with make_client(monitor_url, ca) as client:
        vms = client.all_vms(state=state, group=group)
    if as_json:
        echo_json(vms)
        return
    if not vms:
        click.echo("no VMs known to the monitor yet (enable one with `bootwatch vm enable`)")
        return
    table = make_table("name", "vm id", "state", "alerts", "unhealthy recommendations", "why")
    for v in vms:
        bad = [r["name"] for r in v["recommendations"] if r["status"]["code"] == "Unhealthy"]
        table.add_row(safe(v["name"] or "-"), safe(v["vm_id"]), _state(v["state"]),
                      str(v["open_alerts"]), safe("; ".join(bad) or "-"),
                      safe(v["state_reason"]))
    console().print(table)


@command.command("show")
@click.argument("vm")
@click.option("--json", "as_json", is_flag=True)
@client_options
def show_cmd(vm: str, as_json: bool, monitor_url: str, ca: str) -> None:
    """One VM: state and why, boots, alerts, recommendations with remediation."""
    with make_client(monitor_url, ca) as client:
        v = client.get(f"/vms/{seg(vm)}")
    if as_json:
        echo_json(v)
        return
    out = console()
    out.print(f"[bold]{safe(v['name'] or v['vm_id'])}[/] ({safe(v['vm_id'])}): "
              f"{_state(v['state'])} - {safe(v['state_reason'])}")
    out.print(safe(f"monitored: {v['monitored']}  group: {v['group'] or '-'}  security type: "
                   f"{v['security_type']}  agent: {v['agent_version'] or '-'}"))
    for a in v["alerts"]:
        if a["status"] in ("active", "in_progress"):
            out.print(safe(f"ALERT {a['id']} [{a['severity']}] {a['reason']}: "
                           f"{a['description']}"))
    for r in v["recommendations"]:
        if r["status"]["code"] == "Unhealthy":
            out.print(safe(f"RECOMMENDATION [{r['severity']}] {r['name']}: "
                           f"{r['status']['description']}\n  fix: {r['remediation']}"))
    table = make_table("boot", "last seen", "verdict", "baseline", "reason")
    for b in v["boots"][:10]:
        table.add_row(str(b["id"]), safe(b["last_seen"]), safe(b["verdict"]),
                      str(b["baseline"]) if b["baseline"] else "-", safe(b["reason"]))
    out.print(table)
    if len(v["boots"]) > 10 or v.get("boots_truncated"):
        more = "more than 50" if v.get("boots_truncated") else str(len(v["boots"]))
        out.print(f"the newest 10 of {more} boots (--json lists up to 50; each older boot "
                  "at /api/v1/boots/ID)")


def _state(state: str) -> str:
    """The state in its colour (the style is ours, the state's text is escaped)."""
    style = _STATE_STYLE.get(state)
    return f"[{style}]{safe(state)}[/]" if style else safe(state)


def _enable_body(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@command.command("enable")
@click.argument("vm")
@click.option("--name", default=None, help="a name for the VM")
@click.option("--group", default=None, help="group (baselines and suppressions can be per group)")
@click.option("--security-type", type=click.Choice(["trusted-launch", "confidential",
                                                      "standard"]), default=None)
@click.option("--secure-boot", type=click.Choice(["on", "off"]), default=None)
@click.option("--vtpm", type=click.Choice(["on", "off"]), default=None)
@click.option("--provider", default=None,
              help="bind the VM to this attestation provider: only its outcomes and tokens "
                   "count for the VM (default: the provider of its first attestation)")
@click.option("--json", "as_json", is_flag=True)
@client_options
def enable_cmd(vm: str, name: str | None, group: str | None, security_type: str | None,
               secure_boot: str | None, vtpm: str | None, provider: str | None,
               as_json: bool, monitor_url: str, ca: str) -> None:
    """Enable boot-integrity monitoring for VM (its id, or the name of a known VM)."""
    with make_client(monitor_url, ca) as client:
        v = client.post(f"/vms/{seg(vm)}/enable", _enable_body(
            name=name, group=group, security_type=security_type, secure_boot=secure_boot,
            vtpm=vtpm, provider=provider))
    if as_json:
        echo_json(v)
    else:
        click.echo(printable(f"monitoring enabled for {v['name'] or v['vm_id']} "
                             f"({v['vm_id']}): {v['state']} - {v['state_reason']}"))


@command.command("disable")
@click.argument("vm")
@client_options
def disable_cmd(vm: str, monitor_url: str, ca: str) -> None:
    """Stop monitoring VM (its open alerts are resolved; history is kept)."""
    with make_client(monitor_url, ca) as client:
        v = client.post(f"/vms/{seg(vm)}/disable")
    click.echo(printable(f"monitoring disabled for {v['name'] or v['vm_id']} ({v['vm_id']})"))


@command.command("accept-vtpm-rollback")
@click.argument("vm")
@client_options
def accept_vtpm_rollback_cmd(vm: str, monitor_url: str, ca: str) -> None:
    """Accept that VM's vTPM was restored from a snapshot, cleared or replaced on
    purpose: its quotes went back, which reads as a replayed attestation
    (alert quote_replayed).  The VM's quote mark becomes the restored vTPM's newest
    quote that the alert names (so older replays still count as such), and that alert
    is resolved.  Do this only when you know the vTPM
    was rolled back: otherwise the alert means the attestation was replayed."""
    with make_client(monitor_url, ca) as client:
        v = client.post(f"/vms/{seg(vm)}/accept-vtpm-rollback")
    click.echo(printable(f"vTPM rollback accepted for {v['name'] or v['vm_id']} ({v['vm_id']}): "
                         f"{v['state']} - {v['state_reason']}"))
