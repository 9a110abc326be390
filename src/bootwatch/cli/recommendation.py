"""``bootwatch recommendation``: per-VM recommendations (Defender's keys where they exist)."""

from __future__ import annotations

from typing import Any

import click

from bootwatch.cli._console import make_console as console
from bootwatch.cli._console import safe
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
    items: list[dict[str, Any]] = []
    page = 1000
    with make_client(monitor_url, ca) as client:
        # every page, by the keyset of the last row (one page of 1000 cut the fleet off)
        after: dict[str, str] = {}
        while True:
            got = client.get("/recommendations", vm=vm, limit=page,
                             code=None if show_all else "Unhealthy", **after)["items"]
            items.extend(got)
            if len(got) < page:
                break
            after = {"after": got[-1]["vm_id"], "after_key": got[-1]["key"]}
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no unhealthy recommendations")
        return
    table = make_table("vm", "recommendation", "key", "severity", "status", "why", "remediation")
    for r in items:
        table.add_row(safe(r["vm_id"]), safe(r["name"]), safe(r["key"]), safe(r["severity"]),
                      safe(r["status"]["code"]), safe(r["status"]["description"]),
                      safe(r["remediation"]))
    console().print(table)
