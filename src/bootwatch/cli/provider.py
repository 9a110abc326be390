"""``bootwatch provider``: create, list providers and rotate their signing keys.

Works directly on the service database (``--db URL`` or ``--data-dir D``);
running services pick the change up within their cache time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bootwatch.cli.service import build_settings, db_options
from bootwatch.errors import ConfigError

__all__ = [
    "command",
    "create_cmd",
    "list_cmd",
    "revoke_aik_cmd",
    "rotate_cmd",
]


def _open(kw: dict[str, Any], *, write: bool = True) -> Any:
    """The service's container for a provider command: writes migrate the database and
    seed the shared providers first (as the service's start does); reading does not."""
    from bootwatch.service.state import bootstrap

    return bootstrap(build_settings(**kw), migrate=write, seed=write)


@click.group()
def command() -> None:
    """Create and list attestation providers."""


@command.command("create")
@click.argument("name")
@click.option("--trust-model", type=click.Choice(["aad", "isolated"]), required=True)
@click.option(
    "--signer",
    "signers",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM certificate of a trusted policy signer (repeatable; Isolated model)",
)
@click.option("--hostname", default=None, help="host name this provider also answers at")
@click.option("--attest-auth", is_flag=True, help="require an authenticated caller to attest")
@db_options
def create_cmd(
    name: str,
    trust_model: str,
    signers: tuple[Path, ...],
    hostname: str | None,
    attest_auth: bool,
    **kw: Any,
) -> None:
    """Create a custom provider answering under /providers/NAME."""
    from cryptography import x509

    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    certs = []
    for path in signers:
        try:
            certs.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except ValueError as exc:
            raise ConfigError(f"{path}: not a PEM certificate: {exc}") from exc
    state = _open(kw)
    try:
        with state.db.session() as s:
            create_provider(
                s,
                state.sealer,
                name,
                kind=ProviderKind.CUSTOM,
                trust_model=TrustModel(trust_model),
                signers=certs,
                hostname=hostname,
                attest_auth_required=attest_auth,
            )
    finally:
        state.close()
    click.echo(f"created provider {name} ({trust_model}); answers under /providers/{name}")


@command.command("list")
@click.option("--json", "as_json", is_flag=True)
@db_options
def list_cmd(as_json: bool, **kw: Any) -> None:
    """List providers with their trust model and current signing key."""
    from sqlalchemy import select

    from bootwatch.service.models import ProviderRow, SigningKeyRow

    state = _open(kw, write=False)
    try:
        with state.db.session() as s:
            rows = []
            for p in s.scalars(select(ProviderRow).order_by(ProviderRow.name)):
                kid = s.scalar(
                    select(SigningKeyRow.kid).where(
                        SigningKeyRow.provider == p.name, SigningKeyRow.active
                    )
                )
                rows.append(
                    {
                        "name": p.name,
                        "kind": p.kind,
                        "trust_model": p.trust_model,
                        "hostname": p.hostname,
                        "attest_auth_required": p.attest_auth_required,
                        "kid": kid,
                    }
                )
    finally:
        state.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<24} {r['kind']:<7} {r['trust_model']:<9} kid={r['kid']}")


@command.command("rotate-key")
@click.argument("name")
@click.option(
    "--overlap",
    type=int,
    default=None,
    help="seconds the old key stays published (default: the service setting)",
)
@click.option(
    "--publish-ahead",
    type=click.IntRange(0, 30 * 24 * 3600),
    default=600,
    show_default=True,
    help="seconds the new key is published before it signs (verifiers cache /certs: "
    "the monitor for 300 s); 0 signs at once",
)
@db_options
def rotate_cmd(name: str, overlap: int | None, publish_ahead: int, **kw: Any) -> None:
    """Publish a new signing key now and sign with it after --publish-ahead; the old one
    signs until then and stays in /certs for the overlap after it."""
    from datetime import timedelta

    from bootwatch.service.db import utcnow
    from bootwatch.service.keys import rotate_key
    from bootwatch.service.models import ProviderRow

    state = _open(kw)
    try:
        seconds = state.settings.key_overlap_seconds if overlap is None else overlap
        with state.db.session() as s:
            if s.get(ProviderRow, name) is None:
                raise ConfigError(f"no provider named {name!r}")
            now = utcnow()
            kid, old = rotate_key(s, state.sealer, name, now, timedelta(seconds=seconds),
                                  ahead=timedelta(seconds=publish_ahead))
        state.changes.announce(name)  # running replicas reload the provider's keys now
    finally:
        state.close()
    start = (now + timedelta(seconds=publish_ahead)).strftime("%Y-%m-%dT%H:%M:%SZ")
    click.echo(f"{name}: new key {kid} (published now, signing from {start}); retiring "
               f"{', '.join(old) or 'none'} {seconds} s after that")


@command.command("revoke-aik")
@click.argument("name")
@click.option("--serial", default=None, metavar="HEX",
              help="serial number (hex) of the AIK certificate to revoke")
@click.option("--vm-id", default=None, metavar="GUID",
              help="revoke every unrevoked AIK certificate issued to this VM id")
@click.option("--reason", default="revoked by the operator", show_default=True,
              help="why (stated to the VM when it next attests)")
@db_options
def revoke_aik_cmd(name: str, serial: str | None, vm_id: str | None, reason: str,
                   **kw: Any) -> None:
    """Revoke AIK certificates provider NAME issued on enrolment; every later attestation
    with one of them is refused (aik_cert_revoked), by running services at once on
    PostgreSQL (LISTEN/NOTIFY), within their cache time otherwise.  The VM's TPM may not
    enrol again until its VM id is released (release-vm).  Exit 0 when something was
    revoked, 1 when nothing matched."""
    from bootwatch.service.db import utcnow
    from bootwatch.service.enroll import revoke_aik_certificates
    from bootwatch.service.models import ProviderRow

    if (serial is None) == (vm_id is None):
        raise ConfigError("give exactly one of --serial or --vm-id")
    if len(reason) > 500:
        raise ConfigError("--reason: at most 500 characters")
    state = _open(kw)
    try:
        with state.db.session() as s:
            if s.get(ProviderRow, name) is None:
                raise ConfigError(f"no provider named {name!r}")
            revoked = revoke_aik_certificates(s, name, serial=serial, vm_id=vm_id,
                                              reason=reason, now=utcnow())
        state.changes.announce(name)  # running replicas refuse the certificates now
    finally:
        state.close()
    if not revoked:
        click.echo(f"{name}: no unrevoked AIK certificate matched", err=True)
        click.get_current_context().exit(1)
    click.echo(f"{name}: revoked {', '.join(revoked)}; the VM's TPM may not enrol again "
               f"until `bootwatch provider release-vm {name} --vm-id ID`")


@command.command("release-vm")
@click.argument("name")
@click.option("--vm-id", required=True, metavar="GUID", help="the VM id to release")
@db_options
def release_vm_cmd(name: str, vm_id: str, **kw: Any) -> None:
    """Forget which TPM enrolled as VM id with provider NAME (after revoke-aik, or when a
    VM was rebuilt with a new vTPM), so it can enrol again: the first TPM to enrol with
    that id is bound to it.  Its certificates are not changed.  Exit 0 when a binding
    was released, 1 when none existed."""
    from bootwatch.service.enroll import release_vm
    from bootwatch.service.models import ProviderRow

    state = _open(kw)
    try:
        with state.db.session() as s:
            if s.get(ProviderRow, name) is None:
                raise ConfigError(f"no provider named {name!r}")
            released = release_vm(s, name, vm_id)
        state.changes.announce(name)
    finally:
        state.close()
    if not released:
        click.echo(f"{name}: no TPM is enrolled as VM {vm_id}", err=True)
        click.get_current_context().exit(1)
    click.echo(f"{name}: VM {vm_id.upper()} released: the next TPM to enrol with it is bound")
