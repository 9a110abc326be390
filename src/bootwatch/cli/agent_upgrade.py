"""``bootwatch agent upgrade``: one upgrade check (and install) now.

The daemon checks on its own interval; this command is for operators and
tests: ``--check`` fetches and verifies the monitor's offer and says what
would be installed, changing nothing; without it an acceptable release is
installed beside the running version and ``ROOT/current`` switched to it.

Exit codes: 0 nothing to do (no offer, not newer, pending, disabled) or
``--check`` found an acceptable offer; 75 installed and switched (restart the
agent, as the daemon's supervisor does); 2 refused (with the reason) or failed.
``--rollback-expired`` (the unit's pre-start guard) exits 0 whether or not it
rolled back, so a start is never blocked by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bootwatch.errors import ConfigError

__all__ = ["load_upgrade_table", "upgrade", "upgrade_table"]

#: top-level settings the ``[upgrade]`` table inherits (bootwatch.agent.upgrade)
_INHERITED_FROM = ("monitor_url", "vm_id", "state_dir", "monitor_ca", "ca", "proxy", "no_proxy")


def upgrade_table(config: Any) -> dict[str, Any] | None:
    """The ``[upgrade]`` table of a loaded agent configuration with the inherited
    top-level settings as the daemon runs with them (environment, paths resolved against
    the file), or None without one.  The one place both the daemon and the unit's
    pre-start guard get it: they must read one ``upgrade.json``.  (The guard read the raw
    TOML document: ``BOOTWATCH_AGENT_STATE_DIR`` and a relative ``state_dir`` sent the two
    to different directories, and a version that could not start was never rolled
    back.)"""
    table = getattr(config, "upgrade", None)
    if not table:
        return None
    from bootwatch.agent.upgrade import with_inherited

    return with_inherited(dict(table), {key: getattr(config, key, None)
                                        for key in _INHERITED_FROM})


def load_upgrade_table(path: Path) -> dict[str, Any]:
    """:func:`upgrade_table` of the agent configuration at ``path`` (ConfigError without
    an ``[upgrade]`` table)."""
    from bootwatch.agent.config import load_config

    table = upgrade_table(load_config(path).config)
    if table is None:
        raise ConfigError(f"{path}: no [upgrade] table")
    return table


@click.command("upgrade")
@click.option("--config", "config_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The agent's TOML file (its [upgrade] table).")
@click.option("--check", is_flag=True, help="Fetch and verify the offer only; change nothing.")
@click.option("--rollback-expired", is_flag=True,
              help="Only roll back a pending upgrade whose deadline has passed (the unit's "
                   "ExecStartPre, run as ROOT/previous/bin/bootwatch); no monitor contact.")
@click.option("--vm-id", default=None, help="This VM's id (default: vm_id of the file).")
def upgrade(config_file: Path, check: bool, rollback_expired: bool, vm_id: str | None) -> int:
    """Ask the monitor for a release now; verify it and (without --check) install it."""
    from bootwatch.agent.upgrade import (
        EXIT_RESTART,
        AgentUpgrader,
        OutcomeKind,
        parse_upgrade_config,
    )

    if check and rollback_expired:
        raise ConfigError("give --check or --rollback-expired, not both")
    config = parse_upgrade_config(load_upgrade_table(config_file), source=str(config_file))
    # the pre-start guard never asks the monitor, so it does not need the VM id
    upgrader = AgentUpgrader(config, vm_id=vm_id or config.vm_id or (
        "-" if rollback_expired else None))
    try:
        if rollback_expired:
            rolled = upgrader.rollback_if_expired()
            click.echo(f"{rolled.kind.value}: {rolled.message}" if rolled
                       else "nothing to roll back")
            return 0
        outcome = upgrader.run_check(apply=not check)
    finally:
        upgrader.close()
    line = f"{outcome.kind.value}: {outcome.message}"
    if outcome.kind is OutcomeKind.INSTALLED:
        click.echo(line)
        return EXIT_RESTART
    if outcome.kind in (OutcomeKind.REFUSED, OutcomeKind.ERROR):
        click.echo(f"bootwatch: {line}", err=True)
        return 2
    click.echo(line)
    return 0
