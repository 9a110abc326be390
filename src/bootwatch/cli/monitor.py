"""``bootwatch monitor``: run the monitor alone; dry-run a policy over its history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bootwatch.cli._console import make_console as console
from bootwatch.cli._console import safe
from bootwatch.cli._console import table as make_table
from bootwatch.cli._monitor_client import client_options, echo_json, make_client
from bootwatch.cli.server import monitor_options, monitor_settings_from
from bootwatch.cli.service import db_options
from bootwatch.errors import ConfigError
from bootwatch.service.events_nats import DEFAULT_DURABLE, DEFAULT_STREAM, DEFAULT_SUBJECT

__all__ = [
    "command",
    "dry_run_cmd",
    "run_cmd",
]


@click.group()
def command() -> None:
    """The boot-integrity monitor: health, alerts, recommendations, baselines."""


@command.command("run")
@click.option("--host", envvar="BOOTWATCH_MONITOR_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="BOOTWATCH_MONITOR_PORT", default=8444, show_default=True,
              type=int)
@db_options
@monitor_options
@click.option("--cert", "tls_cert", default="", help="PEM certificate (with --key)")
@click.option("--key", "tls_key", default="", help="PEM private key")
@click.option("--insecure-http", is_flag=True, help="plain HTTP (loopback addresses only)")
@click.option("--trusted-issuer", "trusted_issuers", multiple=True,
              help="attestation service URL whose tokens verify reports (repeatable)")
@click.option("--issuer-ca", default="", help="CA bundle for the issuers' HTTPS")
@click.option("--service-url", default="",
              help="the attestation service whose GET /servicetags the egress "
              "recommendation's rules are generated from (read at start-up)")
@click.option("--admin-tokens-file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="admin bearer tokens, one per line (or BOOTWATCH_ADMIN_TOKENS)")
@click.option("--events", "events_url", envvar="BOOTWATCH_EVENTS", default="",
              help="consume outcome events from NATS JetStream at nats://HOST:PORT (or "
              "tls://); several monitors may share the work; credentials from "
              "BOOTWATCH_NATS_TOKEN(_FILE) or BOOTWATCH_NATS_USER/_PASSWORD, never the URL")
@click.option("--events-stream", envvar="BOOTWATCH_EVENTS_STREAM", default=DEFAULT_STREAM,
              show_default=True, help="JetStream stream of outcome events")
@click.option("--events-subject", envvar="BOOTWATCH_EVENTS_SUBJECT", default=DEFAULT_SUBJECT,
              show_default=True, help="subject the service publishes outcome events to")
@click.option("--events-consumer", envvar="BOOTWATCH_EVENTS_CONSUMER", default=DEFAULT_DURABLE,
              show_default=True, help="durable consumer shared by every ingesting monitor")
def run_cmd(**kw: Any) -> None:
    """Serve the monitor's API (/api/v1), /metrics and /healthz (and, with --events
    nats://..., ingest outcome events from JetStream)."""
    import os

    import uvicorn

    from bootwatch.cli._files import read_limited_text
    from bootwatch.monitor.app import create_monitor_app
    from bootwatch.monitor.container import bootstrap
    from bootwatch.service.logs import configure_logging
    from bootwatch.service.server import is_loopback
    from bootwatch.service.tls import ensure_dev_certificate

    if kw["events_url"] and not kw["events_url"].startswith(("nats://", "tls://")):
        raise ConfigError(f"--events {kw['events_url']!r}: the monitor consumes outcome events "
                          "from NATS JetStream (nats://HOST:PORT); an HTTP event sink posts to "
                          "this monitor's /api/v1/outcomes instead")
    if kw["release_keys"] and not kw["trusted_issuers"]:
        # a rollout counts a VM as upgraded only through a verified report (its version
        # is taken from reports whose token verifies); with no issuer none verifies, no
        # VM ever counts as upgraded and every rollout halts after upgrade_timeout
        raise ConfigError("--release-key needs --trusted-issuer: a rollout counts a VM as "
                          "upgraded only by a health report whose attestation token this "
                          "monitor verifies, and without a trusted issuer none does, so "
                          "every rollout would halt; give the attestation service's URL")
    tokens = tuple(t.strip() for t in os.environ.get("BOOTWATCH_ADMIN_TOKENS", "").split(",")
                   if t.strip())
    if kw["admin_tokens_file"]:
        text = read_limited_text(kw["admin_tokens_file"], "admin tokens file", 1024 * 1024)
        tokens += tuple(t.strip() for t in text.splitlines() if t.strip())
    data_dir = Path(kw["data_dir"])
    settings = monitor_settings_from(
        kw, data_dir=data_dir, db_url=kw["db_url"], db_schema=kw["db_schema"],
        host=kw["host"], port=kw["port"], admin_tokens=tokens,
        trusted_issuers=tuple(kw["trusted_issuers"]), issuer_ca=kw["issuer_ca"],
    )
    configure_logging("INFO")
    data_dir.mkdir(parents=True, exist_ok=True)
    if kw["insecure_http"]:
        if not is_loopback(kw["host"]):
            raise ConfigError("--insecure-http is only allowed on a loopback address")
        cert = key = None
    elif kw["tls_cert"] or kw["tls_key"]:
        cert, key = kw["tls_cert"], kw["tls_key"]
    else:
        files = ensure_dev_certificate(data_dir, (kw["host"],))
        cert, key = str(files.cert), str(files.key)
    egress = None
    if kw["service_url"]:
        from bootwatch.monitor.egress import advisor, fetch_service_tags

        egress = advisor(fetch_service_tags(kw["service_url"], ca=kw["issuer_ca"]),
                         settings.egress_formats)
    container = bootstrap(settings, egress_text=egress)
    if kw["events_url"]:
        from bootwatch.monitor.nats_ingest import JetStreamIngester

        container.ingester = JetStreamIngester(
            container.monitor, kw["events_url"], stream=kw["events_stream"],
            subject=kw["events_subject"], durable=kw["events_consumer"])
        click.echo(f"ingesting outcome events from {container.ingester.target.url} (stream "
                   f"{kw['events_stream']}, consumer {kw['events_consumer']})", err=True)
    app = create_monitor_app(container)
    scheme = "http" if cert is None else "https"
    click.echo(f"bootwatch monitor on {scheme}://{kw['host']}:{kw['port']}/api/v1", err=True)
    from bootwatch.service.httpproto import GRACEFUL_SHUTDOWN_SECONDS, HTTP_PROTOCOL

    uvicorn.run(app, host=kw["host"], port=kw["port"], ssl_certfile=cert, ssl_keyfile=key,
                log_config=None, access_log=False, server_header=False, http=HTTP_PROTOCOL,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = (int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units
                   else int(text))
    except (ValueError, OverflowError):  # "infh", "1e400h": an OverflowError traceback
        raise ConfigError(f"--since {text!r}: use N, Ns, Nm, Nh or Nd") from None
    if not 0 < seconds <= 100 * 366 * 86400:
        raise ConfigError(f"--since {text!r}: between 1 second and 100 years")
    return seconds


@command.command("dry-run")
@click.option("--policy", "policy_file", required=True,
              type=click.Path(exists=True, dir_okay=False), help="candidate AzureGuest policy")
@click.option("--since", default="30d", show_default=True, help="history window (N[smhd])")
@click.option("--json", "as_json", is_flag=True)
@client_options
def dry_run_cmd(policy_file: str, since: str, as_json: bool, monitor_url: str, ca: str) -> None:
    """Which VMs and boots a candidate policy would have denied (over stored history).

    Exit 0 when the policy would deny no boot, 1 when it would deny some."""
    from bootwatch.cli._files import read_limited_text

    text = read_limited_text(policy_file, "policy", 200_000)
    with make_client(monitor_url, ca) as client:
        result = client.post("/dry-run", {"policy": text, "since_seconds": _duration(since)})
    if as_json:
        echo_json(result)
    else:
        _print_dry_run(result)
    raise SystemExit(1 if result["would_deny"] else 0)


#: boots listed in dry-run's text; the rest are counted (``--json`` has every one)
DRY_RUN_ROWS = 50


def _print_dry_run(result: dict[str, Any]) -> None:
    """The summary, then the boots that matter for deciding on the policy: every boot
    whose verdict would change and every boot it would deny (the summary's count alone
    did not say that a permit-all policy would let a denied VM through)."""
    denied = result["would_deny"]
    click.echo(f"{'DENIES' if denied else 'PERMITS'}: the policy would deny {denied} of "
               f"{len(result['boots'])} boot(s) on {len(result['vms_denied'])} VM(s)")
    listed = _dry_run_rows(result["boots"])
    if not listed:
        if result["boots"]:
            click.echo("no boot's verdict would change")
        return
    rows = make_table("vm", "boot", "last seen", "recorded -> candidate", "candidate's reason",
                      title="boots whose verdict would change, or that it would deny")
    for b in listed[:DRY_RUN_ROWS]:
        rows.add_row(safe(b["name"] or b["vm_id"]), str(b["boot"]), safe(b["last_seen"]),
                     safe(f"{b['verdict']} -> {b['would']}"), safe(_candidate_reason(b)))
    console().print(rows)
    if len(listed) > DRY_RUN_ROWS:
        click.echo(f"... and {len(listed) - DRY_RUN_ROWS} more (use --json)")


def _dry_run_rows(boots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The boots to list, the ones a policy change would break first (permitted now,
    denied by the candidate), then the ones it would let through, then those denied
    either way; the answer's order (VM, boot) within each."""
    def rank(b: dict[str, Any]) -> int:
        if b["would"] == "deny":
            return 0 if b["changes"] else 2
        return 1
    return sorted((b for b in boots if b["changes"] or b["would"] == "deny"), key=rank)


def _candidate_reason(boot: dict[str, Any]) -> str:
    """Why the candidate decides as it does: the rule that denied or permitted (``line N:
    text``), that no rule permitted, or why the evaluation failed."""
    rule = boot["deciding_rule"]
    if boot["would"] != "deny":
        return f"permitted by {rule}" if rule else "permitted"
    if not rule:
        return "no rule permitted"
    return rule if rule.startswith("evaluation failed") else f"denied by {rule}"
