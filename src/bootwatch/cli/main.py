"""The one ``bootwatch`` command.

Every subcommand group is registered here, in :data:`GROUPS`, and imported
only when invoked, so ``bootwatch log ...`` never pays for importing the
service or tpm2-pytss.  Errors are translated to exit codes at this edge
only: a :class:`~bootwatch.errors.BootwatchError` that escapes a command
becomes exit code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from bootwatch.errors import BootwatchError

__all__ = [
    "EXIT_ERROR",
    "EXTRA_OF",
    "GROUPS",
    "cli",
    "main",
    "missing_extra",
]

#: name -> "module:attribute" of a click.Group (or Command); imported lazily.
GROUPS: dict[str, tuple[str, str]] = {
    "log": ("bootwatch.cli.log", "TCG event logs: show, replay, verify, boot state"),
    "policy": ("bootwatch.cli.policy", "MAA claim-rule policies: check, eval, hash, sign"),
    "attest": ("bootwatch.cli.attest", "Offline verification of AzureGuest evidence"),
    "lab": ("bootwatch.cli.lab", "swtpm-backed simulated Trusted Launch VMs"),
    "agent": ("bootwatch.cli.agent", "The guest side: collect evidence, attest, unseal"),
    "service": ("bootwatch.cli.service", "Run the MAA-compatible attestation service"),
    "provider": ("bootwatch.cli.provider", "Create and list attestation providers"),
    "network": ("bootwatch.cli.network", "Service tag, egress rules, blocked-traffic diagnosis"),
    "demo": ("bootwatch.cli.demo", "End-to-end demo on embedded defaults"),
    "server": ("bootwatch.cli.server", "Service + monitor in one process (embedded default)"),
    "monitor": ("bootwatch.cli.monitor", "Run the monitor alone; dry-run a policy"),
    "vm": ("bootwatch.cli.vm", "Monitored VMs: list, show, enable, disable"),
    "alert": ("bootwatch.cli.alert", "Boot-integrity alerts: list, show, ack, resolve"),
    "baseline": ("bootwatch.cli.baseline", "Approved boot variants: list, diff, approve"),
    "recommendation": ("bootwatch.cli.recommendation", "Per-VM recommendations"),
    "release": ("bootwatch.cli.release", "Agent releases: signing keys, signed manifests, publish"),
    "example": ("bootwatch.cli.example", "Example inputs: a claims list, a policy signer"),
}

#: exit code for unreadable input, unreachable services and other errors
EXIT_ERROR = 2

#: third-party module -> the install extra that brings it (pyproject.toml: installs by
#: role), for the one-line error when a command needs what this install lacks
EXTRA_OF: dict[str, str] = {
    "tpm2_pytss": "agent",
    "lark": "service", "jmespath": "service", "fastapi": "service", "starlette": "service",
    "uvicorn": "service", "sqlalchemy": "service", "alembic": "service",
    "psycopg": "service", "prometheus_client": "service", "nats": "service",
    "jinja2": "monitor",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The message for a command that needs a dependency of another role, or None
    when the missing module is not one of bootwatch's optional dependencies (a bug)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return (f"this command needs {top!r}, which this install of bootwatch lacks: "
            f"pip install 'bootwatch[{extra}]' (or 'bootwatch[all]')")


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = GROUPS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command = module.command
        if not isinstance(command, click.Command):  # pragma: no cover - programming error
            raise TypeError(f"{entry[0]}.command is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in sorted(GROUPS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bootwatch")
def cli() -> None:
    """bootwatch: boot-integrity monitoring for machines with a TPM or vTPM."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI, translating BootwatchError to exit 2."""
    try:
        # In non-standalone mode click returns ctx.exit()'s code instead of exiting.
        rv = cli.main(args=argv, prog_name="bootwatch", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("bootwatch: aborted", err=True)
        sys.exit(1)
    except BootwatchError as exc:
        # an error may quote a server's answer or a file: written out, never a terminal
        # escape (found in review); imported here, the daemon's start stays without rich
        from bootwatch.cli._console import printable

        click.echo(f"bootwatch: error: {printable(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        click.echo(f"bootwatch: error: {message}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
