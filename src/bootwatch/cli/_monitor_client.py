"""Shared options of the commands that talk to a monitor (vm, alert, baseline, ...).

``--monitor URL`` (or ``BOOTWATCH_MONITOR``; default the local embedded server
``https://127.0.0.1:8443``), ``--ca PEM`` (or ``BOOTWATCH_MONITOR_CA``; default the
development CA of the default data directory when it exists) and the bearer
token from ``BOOTWATCH_MONITOR_TOKEN`` (never the command line).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bootwatch.monitor.client import MonitorClient

__all__ = ["DEFAULT_MONITOR", "client_options", "echo_json", "make_client", "seg"]

DEFAULT_MONITOR = "https://127.0.0.1:8443"


def client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--ca", "ca", envvar="BOOTWATCH_MONITOR_CA", default="",
                     help="CA bundle of the monitor's HTTPS certificate")(f)
    f = click.option("--monitor", "monitor_url", envvar="BOOTWATCH_MONITOR",
                     default=DEFAULT_MONITOR, show_default=True,
                     help="the monitor (or embedded server) base URL")(f)
    return f


def _default_ca() -> str:
    from bootwatch.cli.service import default_data_dir

    candidate = Path(default_data_dir()) / "tls" / "dev-ca.pem"
    return str(candidate) if candidate.is_file() else ""


def make_client(monitor_url: str, ca: str) -> MonitorClient:
    return MonitorClient(monitor_url, token=os.environ.get("BOOTWATCH_MONITOR_TOKEN", ""),
                         ca=ca or _default_ca())


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def seg(value: str) -> str:
    """``value`` (a VM name or id, an alert id) as one URL path segment: unquoted, a ``#``
    or ``?`` in a VM's name cut the path, so ``vm show 'db#2'`` showed the VM ``db``."""
    return urllib.parse.quote(value, safe="")
