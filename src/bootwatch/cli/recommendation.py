"""``bootwatch recommendation``: per-VM recommendations (Defender's keys where they exist)."""

from __future__ import annotations

import click

from bootwatch.cli._console import make_console as console
from bootwatch.cli._console import table as make_table
from bootwatch.cli._monitor_client import client_options, echo_json, make_client

__all__ = [
    "command",
    "list_cmd",
]


@click.group()
def command() -> None:
    """Recommendations: what to fix on which VM, and how."""


@command.command("list")
@click.option("--vm", default=None)
@click.option("--all", "show_all", is_flag=True, help="also Healthy and NotApplicable ones")
@click.option("--json", "as_json", is_flag=True)
@client_options
def list_cmd(vm: str | None, show_all: bool, as_json: bool, monitor_url: str, ca: str) -> None:
    """List Unhealthy recommendations (all with --all)."""
    with make_client(monitor_url, ca) as client:
        items = client.get("/recommendations", vm=vm,
                           code=None if show_all else "Unhealthy")["items"]
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no unhealthy recommendations")
        return
    table = make_table("vm", "recommendation", "key", "severity", "status", "why", "remediation")
    for r in items:
        table.add_row(r["vm_id"], r["name"], r["key"], r["severity"], r["status"]["code"],
                      r["status"]["description"], r["remediation"])
    console().print(table)
