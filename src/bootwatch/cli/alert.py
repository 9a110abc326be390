"""``bootwatch alert``: list, show and act on alerts (ack, resolve, dismiss)."""

from __future__ import annotations

from typing import Any

import click

from bootwatch.cli._console import make_console as console
from bootwatch.cli._console import printable, safe
from bootwatch.cli._console import table as make_table
from bootwatch.cli._monitor_client import client_options, echo_json, make_client, seg

__all__ = [
    "ack_cmd",
    "command",
    "dismiss_cmd",
    "list_cmd",
    "print_diff",
    "resolve_cmd",
    "show_cmd",
    "suppress_cmd",
]


@click.group()
def command() -> None:
    """Boot-integrity alerts with their event-level diffs."""


def print_diff(diff: list[dict[str, Any]]) -> None:
    if not diff:
        return
    table = make_table("PCR", "event", "change", "type", "component", "old digest", "new digest")
    for d in diff:
        # the component is the boot log's own text (a GRUB command line, a file path)
        table.add_row(safe(d["pcr"]), "-" if d["event"] is None else safe(d["event"]),
                      safe(d.get("change", "")), safe(d["type"]), safe(d["component"]),
                      safe(d["old_digest"] or "-"), safe(d["new_digest"] or "-"))
    console().print(table)


#: alerts asked for per request by ``alert list`` (the API's largest page)
PAGE = 1000


@command.command("list")
@click.option("--status", default="open", show_default=True,
              help="open, active, in_progress, resolved, dismissed (or 'all')")
@click.option("--vm", default=None)
@click.option("--reason", default=None)
@click.option("--json", "as_json", is_flag=True)
@client_options
def list_cmd(status: str, vm: str | None, reason: str | None, as_json: bool,
             monitor_url: str, ca: str) -> None:
    """List alerts, newest first."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    with make_client(monitor_url, ca) as client:
        # every page (one page of 1000 cut a large fleet's list off); newest first by
        # offset, so an alert opened meanwhile can shift one into the next page: kept once
        offset = 0
        while True:
            page = client.get("/alerts", status=status, vm=vm, reason=reason, limit=PAGE,
                              offset=offset)
            for a in page["items"]:
                if a["id"] not in seen:
                    seen.add(a["id"])
                    items.append(a)
            if page.get("next_offset") is None:
                break
            offset = int(page["next_offset"])
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo(f"no {'' if status == 'all' else status + ' '}alerts")
        return
    table = make_table("id", "vm", "reason", "severity", "status", "count", "since", "description")
    for a in items:
        table.add_row(safe(a["id"]), safe(a["vm_name"] or a["vm_id"]), safe(a["reason"]),
                      safe(a["severity"]), safe(a["status"]), str(a["count"]),
                      safe(a["startTimeUtc"]), safe(a["description"]))
    console().print(table)


@command.command("show")
@click.argument("alert_id")
@click.option("--json", "as_json", is_flag=True)
@client_options
def show_cmd(alert_id: str, as_json: bool, monitor_url: str, ca: str) -> None:
    """One alert: what happened, the diff, and the remediation steps."""
    with make_client(monitor_url, ca) as client:
        a = client.get(f"/alerts/{seg(alert_id)}")
    if as_json:
        echo_json(a)
        return
    out = console()
    out.print(f"[bold]{safe(a['title'])}[/] "
              + safe(f"({a['severity']}, {a['status']}, seen {a['count']}x)"))
    out.print(safe(f"VM {a['vm_name'] or a['vm_id']} ({a['vm_id']}) since {a['startTimeUtc']}"))
    out.print(safe(a["description"]))
    print_diff(a["diff"])
    for i, step in enumerate(a["remediationSteps"], 1):
        out.print(safe(f"{i}. {step}"))


def _act(action: str, alert_id: str, monitor_url: str, ca: str) -> None:
    with make_client(monitor_url, ca) as client:
        a = client.post(f"/alerts/{seg(alert_id)}/{action}")
    click.echo(printable(f"alert {a['id']} is {a['status']}"))


@command.command("ack")
@click.argument("alert_id")
@client_options
def ack_cmd(alert_id: str, monitor_url: str, ca: str) -> None:
    """Acknowledge: the alert is being worked on (in_progress)."""
    _act("ack", alert_id, monitor_url, ca)


@command.command("resolve")
@click.argument("alert_id")
@client_options
def resolve_cmd(alert_id: str, monitor_url: str, ca: str) -> None:
    """Resolve the alert by hand."""
    _act("resolve", alert_id, monitor_url, ca)


@command.command("dismiss")
@click.argument("alert_id")
@client_options
def dismiss_cmd(alert_id: str, monitor_url: str, ca: str) -> None:
    """Dismiss the alert (a false positive)."""
    _act("dismiss", alert_id, monitor_url, ca)


@command.command("suppress")
@click.option("--vm", default=None)
@click.option("--group", default=None)
@click.option("--reason", default=None, help="only alerts with this reason (default: all)")
@click.option("--note", default="", help="why (shown with the rule)")
@client_options
def suppress_cmd(vm: str | None, group: str | None, reason: str | None, note: str,
                 monitor_url: str, ca: str) -> None:
    """Add a suppression rule for a VM or a group (e.g. Secure Boot off by design)."""
    body = {k: v for k, v in {"vm": vm, "group": group, "reason": reason,
                              "note": note}.items() if v}
    with make_client(monitor_url, ca) as client:
        rule = client.post("/suppressions", body)
    click.echo(f"suppression rule {rule['id']} added")
