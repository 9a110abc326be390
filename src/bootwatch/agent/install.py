"""``bootwatch agent install``: the systemd unit, the configuration, the directories.

What gets laid out (under ``--prefix``, ``/`` by default)::

    etc/systemd/system/bootwatch-agent.service   the unit (below)
    usr/lib/sysusers.d/bootwatch.conf           user bootwatch, member of tss
    etc/bootwatch/agent.toml                     configuration (kept if present)
    var/lib/bootwatch/                           state (StateDirectory=bootwatch)
    usr/lib/bootwatch/extension/HandlerManifest.json, handler.sh   VM extension

The unit is ``Type=simple``: the daemon has nothing to announce that another
unit waits for (its first attestation may legitimately wait out a backoff), so
``Type=notify`` would only add an sd_notify dependency.  It runs as the
dedicated user ``bootwatch`` in group ``tss`` with ``DevicePolicy=closed`` and
only ``/dev/tpmrm0`` allowed, ``ProtectSystem=strict``, ``NoNewPrivileges``,
``PrivateTmp``, state in ``StateDirectory=bootwatch``, logs to the journal.
The firmware event log in securityfs is readable by root only, so a
privileged ``ExecStartPre=+`` copies it into ``RuntimeDirectory`` for the
unprivileged daemon (it does not change after boot).  Exit code 75 (a new
version was installed) is restarted by ``Restart=on-failure``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["HANDLER_MANIFEST", "UNIT_NAME", "InstallItem", "install_plan", "perform",
           "unit_text", "upgrade_root"]

UNIT_NAME: Final = "bootwatch-agent.service"
SERVICE_USER: Final = "bootwatch"
SERVICE_GROUP: Final = "bootwatch"
SYSUSERS_PATH: Final = "usr/lib/sysusers.d/bootwatch.conf"
RUNTIME_LOG: Final = "/run/bootwatch/binary_bios_measurements"
#: a missing securityfs log leaves no copy: the daemon then reports the missing file
COPY_LOG: Final = (
    f"cat /sys/kernel/security/tpm0/binary_bios_measurements > {RUNTIME_LOG} "
    f"&& chmod 0644 {RUNTIME_LOG} || rm -f {RUNTIME_LOG}"
)


@dataclass(frozen=True)
class InstallItem:
    path: Path
    content: str | None  # None: a directory
    mode: int
    keep_existing: bool = False
    #: the group that owns the file (root owns it), when one must read it: the daemon
    #: runs as ``bootwatch``, and ConfigurationDirectory= changes no ownership
    group: str | None = None

    def describe(self) -> str:
        kind = "directory" if self.content is None else f"{len(self.content)} bytes"
        keep = ", kept if present" if self.keep_existing else ""
        return f"{self.path} ({kind}, mode {self.mode:04o}{keep})"


def upgrade_root(executable: Path) -> Path | None:
    """The install root of signed upgrades when ``executable`` runs from one
    (``ROOT/current/bin/bootwatch``, docs/upgrade.md), else None."""
    if executable.parent.name == "bin" and executable.parent.parent.name == "current":
        return executable.parent.parent.parent
    return None


def _upgrade_lines(executable: Path) -> tuple[str, str]:
    """What an upgradable install adds to the unit (docs/upgrade.md, "The service unit
    needs"): ([Unit] lines, [Service] lines).  The pre-start guard runs the known-good
    version before every start (restarts included: systemd runs ExecStartPre each time),
    counts the starts of a pending upgrade and rolls it back before the start past
    ``max_unconfirmed_starts`` or once its deadline has passed; the install root must stay
    writable under ProtectSystem=strict; restarts are never rate limited, so a
    crash-looping release is restarted (every RestartSec) until the guard rolls it back."""
    root = upgrade_root(executable)
    if root is None:
        return "", ""
    return ("StartLimitIntervalSec=0\n",
            f"ExecStartPre=-{root}/previous/bin/bootwatch agent upgrade "
            f"--config /etc/bootwatch/agent.toml --rollback-expired\n"
            f"ReadWritePaths={root}\n")


def unit_text(executable: Path) -> str:
    unit_extra, service_extra = _upgrade_lines(executable)
    return f"""[Unit]
Description=bootwatch agent: boot attestation, health reports, provisioning status
After=network-online.target
Wants=network-online.target
{unit_extra}
[Service]
# simple: nothing waits for the agent to be "ready" (see docs/agent.md)
Type=simple
ExecStartPre=+/bin/sh -c '{COPY_LOG}'
{service_extra}ExecStart={executable} agent run --config /etc/bootwatch/agent.toml
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=30
# the daemon sends a keep-alive with every heartbeat (at least each minute, during cycles
# too); one that stops (a hang, a new release stuck before its first cycle) is killed and
# restarted, and the pre-start guard rolls a hung release back (docs/upgrade.md)
WatchdogSec=900
NotifyAccess=main
TimeoutStopSec=30
User=bootwatch
Group=bootwatch
SupplementaryGroups=tss
StateDirectory=bootwatch
StateDirectoryMode=0750
RuntimeDirectory=bootwatch
ConfigurationDirectory=bootwatch
DevicePolicy=closed
DeviceAllow=/dev/tpmrm0 rw
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
PrivateDevices=no
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
UMask=0027
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
"""


SYSUSERS: Final = """# bootwatch agent: a dedicated user, member of tss (owner group of /dev/tpmrm0)
u bootwatch - "bootwatch agent" /var/lib/bootwatch
m bootwatch tss
"""

CONFIG: Final = f"""# bootwatch agent configuration (keys = `bootwatch agent run` options, dashes as
# underscores).  Precedence: command line > this file > BOOTWATCH_AGENT_* environment.
# url = "https://attest.example"         # attestation provider
# ca = "/etc/bootwatch/provider-ca.pem"  # PEM CA bundle for the provider's TLS
# monitor_url = "https://monitor.example"
# interval = 3600                        # seconds, +-10 % jitter
# proxy = "http://proxy.example:3128"    # else https_proxy/HTTPS_PROXY/all_proxy
# no_proxy = "internal.example,10.0.0.0/8"
log = "{RUNTIME_LOG}"                    # copied from securityfs by the unit
state_dir = "/var/lib/bootwatch"
"""

#: the extension handler manifest (Azure VM extension packaging)
HANDLER_MANIFEST: Final = [{
    "version": 1.0,
    "handlerManifest": {
        "installCommand": "handler.sh install",
        "uninstallCommand": "handler.sh uninstall",
        "updateCommand": "handler.sh update",
        "enableCommand": "handler.sh enable",
        "disableCommand": "handler.sh disable",
        "rebootAfterInstall": False,
        "reportHeartbeat": True,
        "updateMode": "UpdateWithInstall",
    },
}]


def handler_script(executable: Path) -> str:
    return f"""#!/bin/sh
# VM extension handler: the commands HandlerManifest.json names.
set -eu
case "${{1:-}}" in
  install)   {executable} agent install ;;
  enable)    systemctl daemon-reload && systemctl enable --now {UNIT_NAME} ;;
  disable)   systemctl disable --now {UNIT_NAME} ;;
  update)    systemctl daemon-reload && systemctl try-restart {UNIT_NAME} ;;
  uninstall) systemctl disable --now {UNIT_NAME} || true
             rm -f /etc/systemd/system/{UNIT_NAME} && systemctl daemon-reload ;;
  *) echo "usage: $0 install|enable|disable|update|uninstall" >&2; exit 53 ;;
esac
"""


def install_plan(prefix: Path, *, executable: Path) -> list[InstallItem]:
    root = prefix
    ext = root / "usr/lib/bootwatch/extension"
    return [
        InstallItem(root / "etc/bootwatch", None, 0o755),
        InstallItem(root / "var/lib/bootwatch", None, 0o750),
        InstallItem(root / "etc/systemd/system" / UNIT_NAME, unit_text(executable), 0o644),
        InstallItem(root / SYSUSERS_PATH, SYSUSERS, 0o644),
        InstallItem(root / "etc/bootwatch/agent.toml", CONFIG, 0o640, keep_existing=True,
                    group=SERVICE_GROUP),
        InstallItem(ext / "HandlerManifest.json",
                    json.dumps(HANDLER_MANIFEST, indent=2) + "\n", 0o644),
        InstallItem(ext / "handler.sh", handler_script(executable), 0o755),
    ]


def perform(plan: Sequence[InstallItem], *, prefix: Path | None = None) -> list[str]:
    """Write ``plan``; with ``prefix`` (a real install, or an image root) also create the
    service user and group there (``systemd-sysusers``) and give each file with a
    ``group`` to root and that group.  Returns what could not be done, for the operator.

    Why: the configuration is written 0640 root:root by default, and the daemon runs as
    ``bootwatch``, so it could not read its own configuration and the unit restarted in
    a loop; and nothing created the user before the first boot, so ``handler.sh enable``
    on a fresh VM failed (found in review)."""
    for item in plan:
        if item.content is None:
            item.path.mkdir(parents=True, exist_ok=True)
            os.chmod(item.path, item.mode)
            continue
        if item.keep_existing and item.path.exists():
            continue
        item.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = item.path.with_name(f".{item.path.name}.tmp")
        tmp.write_text(item.content, encoding="utf-8")
        os.chmod(tmp, item.mode)
        os.replace(tmp, item.path)
    if prefix is None:
        return []
    warnings = _create_service_user(prefix)
    for item in plan:
        if item.group is None or item.content is None:
            continue
        gid = _group_id(prefix, item.group)
        if gid is None or os.geteuid() != 0:
            warnings.append(f"{item.path} stays readable by root only: create the "
                            f"{item.group} group (systemd-sysusers), then run `chgrp "
                            f"{item.group} {item.path}` as root")
            continue
        os.chown(item.path, 0, gid)
    return warnings


def _create_service_user(prefix: Path) -> list[str]:
    """Run ``systemd-sysusers`` on our sysusers file under ``prefix`` (as root only)."""
    sysusers = shutil.which("systemd-sysusers")
    conf = prefix / SYSUSERS_PATH
    if os.geteuid() != 0 or sysusers is None:
        return [f"the {SERVICE_USER} user was not created (needs root and systemd-sysusers): "
                f"run `systemd-sysusers {conf}`"]
    args = [sysusers, str(conf)]
    if prefix.resolve() != Path("/"):
        args.insert(1, f"--root={prefix}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        return [f"systemd-sysusers failed ({done.stderr.strip()[:300]}): run "
                f"`systemd-sysusers {conf}`"]
    return []


def _group_id(prefix: Path, name: str) -> int | None:
    """``name``'s gid in ``prefix``'s /etc/group (an image root has its own)."""
    try:
        lines = (prefix / "etc/group").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None
