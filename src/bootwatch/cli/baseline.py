"""``bootwatch baseline``: approved boot variants per VM or group."""

from __future__ import annotations

import click

from bootwatch.cli._console import make_console as console
from bootwatch.cli._console import printable, safe
from bootwatch.cli._console import table as make_table
from bootwatch.cli._monitor_client import client_options, echo_json, make_client, seg
from bootwatch.cli.alert import print_diff

__all__ = [
    "approve_cmd",
    "command",
    "diff_cmd",
    "list_cmd",
    "remove_cmd",
]


@click.group()
def command() -> None:
    """Baselines: the approved boots a VM's boots are compared with."""


@command.command("list")
@click.argument("vm", required=False)
@click.option("--json", "as_json", is_flag=True)
@client_options
def list_cmd(vm: str | None, as_json: bool, monitor_url: str, ca: str) -> None:
    """List baseline variants (of VM, or all)."""
    with make_client(monitor_url, ca) as client:
        items = client.all_baselines(vm)
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no baselines yet (a VM's first verified boot is learned automatically)")
        return
    table = make_table("id", "vm", "group", "origin", "label", "from boot", "PCRs", "created", "by")
    for b in items:
        table.add_row(str(b["id"]), safe(b["vm_id"] or "-"), safe(b["group"] or "-"),
                      safe(b["origin"]), safe(b["label"]), str(b["source_boot"]),
                      ",".join(sorted(b["pcrs"], key=int)), safe(b["created_at"]),
                      safe(b["created_by"]))
    console().print(table)


@command.command("diff")
@click.argument("vm")
@click.option("--boot", type=int, default=None, help="boot id (default: the latest)")
@click.option("--against", type=int, default=None,
              help="compare with this boot instead of the closest baseline variant")
@click.option("--json", "as_json", is_flag=True)
@client_options
def diff_cmd(vm: str, boot: int | None, against: int | None, as_json: bool, monitor_url: str,
             ca: str) -> None:
    """The event-level diff of a boot against its baseline. Exit 1 when they differ."""
    with make_client(monitor_url, ca) as client:
        d = client.get(f"/vms/{seg(vm)}/diff", boot=boot, against=against)
    if as_json:
        echo_json(d)
    else:
        n = len(d["diff"])
        click.echo(f"{'DIFFERS' if n else 'MATCHES'}: boot {d['boot']} against {d['against']}"
                   + (f": {n} event(s) differ" if n else ""))
        print_diff(d["diff"])
    raise SystemExit(1 if d["diff"] else 0)


@command.command("approve")
@click.argument("vm")
@click.option("--boot", type=int, default=None, help="boot id (default: the latest verified)")
@click.option("--group", "for_group", is_flag=True, help="approve for the VM's whole group")
@click.option("--label", default="", help="a label for the variant (e.g. image-2026-12)")
@client_options
def approve_cmd(vm: str, boot: int | None, for_group: bool, label: str, monitor_url: str,
                ca: str) -> None:
    """Approve a boot as a baseline variant (resolves the VM's deviation alert)."""
    body: dict[str, object] = {"vm": vm, "group": for_group}
    if boot is not None:
        body["boot"] = boot
    if label:
        body["label"] = label
    with make_client(monitor_url, ca) as client:
        res = client.post("/baselines/approve", body)
        v = client.get(f"/vms/{seg(vm)}")
    click.echo(printable(f"approved as baseline variant {res['baseline']}; "
                         f"{v['name'] or v['vm_id']} is now {v['state']}"))


@command.command("remove")
@click.argument("baseline_id", type=int)
@client_options
def remove_cmd(baseline_id: int, monitor_url: str, ca: str) -> None:
    """Remove a baseline variant."""
    with make_client(monitor_url, ca) as client:
        client.delete(f"/baselines/{baseline_id}")
    click.echo(f"removed baseline variant {baseline_id}")
