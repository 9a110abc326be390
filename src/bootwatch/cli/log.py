"""``bootwatch log``: show, replay, verify and explain TCG event logs.

The edge of the pure :mod:`bootwatch.eventlog` package: it reads files, prints
tables or JSON, and turns outcomes into exit codes (0 ok, 1 a PCR mismatch,
2 unreadable input: one line on stderr naming the file and the byte offset).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from bootwatch.cli._console import make_console, printable, safe
from bootwatch.cli._files import read_limited
from bootwatch.encoding import sha1_thumbprint
from bootwatch.errors import BootwatchError, EventLogError, InputError
from bootwatch.eventlog import (
    DEFAULT_LIMITS,
    PcrStatus,
    PcrVerification,
    Replay,
    UnverifiedEvent,
    UnverifiedEventLog,
    event_type_name,
    parse_expected,
    parse_log,
    replay,
    verify_pcrs,
)
from bootwatch.eventlog.expected import MAX_EXPECTED_SIZE
from bootwatch.eventlog.model import alg_name

__all__ = ["command", "replay_to_json"]



def _echo(text: str = "") -> None:
    """A line of the log's own text (descriptions, command lines, file names): its
    control characters written out, never a terminal escape (found in review)."""
    click.echo(printable(text))

def _read(path: Path, limit: int, what: str) -> bytes:
    return read_limited(path, what, limit)


def load_log(path: Path) -> UnverifiedEventLog:
    """Read and frame ``path``; errors name the file, the record and the byte offset."""
    data = _read(path, DEFAULT_LIMITS.max_log_size, "event log")
    try:
        return parse_log(data)
    except EventLogError as exc:
        raise type(exc)(
            f"{path}: {exc.reason}", offset=exc.offset, event_index=exc.event_index
        ) from None


def _summarizer() -> Callable[[UnverifiedEvent], str] | None:
    """The event decoder's one-line summary, when the decode package is installed."""
    try:
        module = importlib.import_module("bootwatch.eventlog.decode")
    except ImportError:
        return None
    fn = getattr(module, "summarize", None)
    return fn if callable(fn) else None


def _summary(fn: Callable[[UnverifiedEvent], str] | None, ev: UnverifiedEvent) -> str:
    if fn is None:
        return f"{len(ev.data)} bytes"
    try:
        return fn(ev)
    except BootwatchError as exc:
        return f"(undecodable: {exc})"


def replay_to_json(log: UnverifiedEventLog, rep: Replay) -> dict[str, Any]:
    """The documented ``bootwatch log replay --json`` shape."""
    return {
        "format": log.format.value,
        "algorithms": [a.name for a in log.algorithms],
        "events": len(log.events),
        "pcrs": {
            alg_name(alg_id): {str(pcr): value.hex() for pcr, value in sorted(bank.items())}
            for alg_id, bank in rep.pcrs.items()
        },
        "findings": [
            {"code": f.code, "event": f.event, "message": f.message} for f in rep.findings
        ],
    }


def verification_to_json(result: PcrVerification) -> dict[str, Any]:
    """The documented ``bootwatch log verify --json`` shape."""
    return {
        "ok": result.ok,
        "results": [
            {
                "algorithm": alg_name(r.alg_id),
                "pcr": r.pcr,
                "status": r.status.value,
                "expected": r.expected.hex(),
                "replayed": r.replayed.hex() if r.replayed is not None else None,
                "suspect_event": r.suspect_event,
                "workaround": r.workaround,
                "reason": r.reason,
            }
            for r in result.results
        ],
        "workarounds_applied": list(result.workarounds_applied),
        "findings": [
            {"code": f.code, "event": f.event, "message": f.message} for f in result.findings
        ],
    }


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


@click.group("log")
def command() -> None:
    """TCG event logs: show, replay, verify, boot state."""


_FILE = click.Path(exists=False, dir_okay=False, path_type=Path)


@command.command("show")
@click.argument("file", type=_FILE)
def show(file: Path) -> None:
    """A table of the log's records: index, PCR, type, digests, decoded summary."""
    log = load_log(file)
    fn = _summarizer()
    table = Table(
        title=safe(f"{file} ({log.format.value}, {len(log.events)} records, "
                   f"{', '.join(a.name for a in log.algorithms)})")
    )
    table.add_column("#", justify="right")
    table.add_column(log.index_name, justify="right")
    table.add_column("type", overflow="fold")
    table.add_column("digests", overflow="fold")
    table.add_column("summary", overflow="fold")
    for ev in log.events:
        digests = "\n".join(f"{alg_name(a)}:{d.hex()[:16]}…" for a, d in ev.digests.items())
        pcr = "-" if ev.pcr == 0xFFFFFFFF else str(ev.pcr)
        table.add_row(str(ev.index), pcr, safe(event_type_name(ev.event_type)), digests,
                      safe(_summary(fn, ev)))
    make_console().print(table)
    if log.padding:
        _echo(f"{len(log.padding)} bytes of padding after the last record")
    for leniency in log.leniencies:
        _echo(f"leniency used: {leniency.value}")


@command.command("replay")
@click.argument("file", type=_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON shape.")
def replay_cmd(file: Path, as_json: bool) -> None:
    """Replay every bank and print the PCR values and findings."""
    log = load_log(file)
    rep = replay(log)
    if as_json:
        _echo_json(replay_to_json(log, rep))
        return
    console = make_console()
    table = Table(title=safe(f"{file}: replayed {log.index_name}s ({log.format.value})"))
    table.add_column("bank")
    table.add_column(log.index_name, justify="right")
    table.add_column("value", overflow="fold")
    for alg_id, bank in rep.pcrs.items():
        for pcr, value in sorted(bank.items()):
            table.add_row(alg_name(alg_id), str(pcr), value.hex())
    console.print(table)
    if rep.startup_locality is not None:
        _echo(f"StartupLocality: {rep.startup_locality}")
    if rep.hcrtm:
        _echo("H-CRTM event present: PCR0 started at locality 4")
    for f in rep.findings:
        where = f"event {f.event}" if f.event is not None else "log"
        _echo(f"finding {f.code} ({where}): {f.message}")


_STATE_LIST_SHOWN = 8

#: exit code of ``log state --dbx`` when a revoked boot component was loaded
EXIT_REVOKED = 1


def _describe(value: Any) -> str:
    """One complete line for a boot-state entry: the fields a person reads, never cut.

    Certificates show subject and SHA-1 thumbprint, hashes the hash, boot applications
    event, PCR, device path and SHA-256 digest; anything else its whole JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("type") == "x509" and "subject" in value:
            where = (f"event {value['event']} ({value.get('variable')}): "
                     if "event" in value else "")
            return f"{where}{value['subject']} (sha1 {value.get('sha1_thumbprint')})"
        if "hash" in value and "type" in value:
            return f"{value['type']} {value['hash']}"
        if "device_path" in value and "pcr" in value:
            digest = (value.get("digests") or {}).get("sha256") or json.dumps(value.get("digests"))
            return (f"event {value.get('event')}, PCR {value['pcr']}: "
                    f"{value.get('device_path') or '(no device path)'} (sha256 {digest})")
    return json.dumps(value)


def _print_revocation(rev: dict[str, Any]) -> None:
    """The revocation verdict first: revoked components loaded, then dbx staleness."""
    loaded = rev["revoked_loaded"]
    if loaded:
        _echo(f"REVOKED BOOT COMPONENT LOADED ({len(loaded)}):")
        for r in loaded:
            _echo(f"  event {r['event']}: {r['kind']} {r['name'] or ''} "
                       f"({r['identifier']}): {r['reason']}")
    else:
        _echo("revocation: no loaded boot component is revoked by the DBX data")
    for f in rev["findings"]:
        if f["code"] != "revoked_component_loaded":
            where = f" (event {f['event']})" if f["event"] is not None else ""
            _echo(f"  {f['code']}{where}: {f['message']}")
    for app in rev["unchecked_applications"]:
        _echo(f"  not checked: {_describe(app)}")
    _echo("")


#: Largest DBX data file read (the current JSON catalogue is ~400 KB).
_MAX_DBX_FILE = 8 * 1024 * 1024


def _load_dbx(paths: tuple[Path, ...]) -> Any:
    """Microsoft DBX data: ``dbx_info_msft_latest.json`` and/or signed DBXUpdate payloads."""
    from bootwatch.eventlog.dbx import load_dbx_json, load_dbx_update, merge_catalogs

    catalogs = []
    for path in paths:
        data = read_limited(path, "DBX data", _MAX_DBX_FILE)
        try:
            is_json = data.lstrip()[:1] == b"{"
            catalogs.append(load_dbx_json(data) if is_json else load_dbx_update(data))
        except BootwatchError as exc:
            raise InputError(f"{path}: {exc}") from None
    return merge_catalogs(*catalogs)


@command.command("state")
@click.argument("file", type=_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print the boot state as JSON.")
@click.option(
    "--dbx",
    "dbx_paths",
    multiple=True,
    type=_FILE,
    help="Microsoft DBX data (dbx_info_msft_latest.json or a DBXUpdate.bin; repeatable): "
    "adds a 'revocation' report (revoked components loaded, revocations missing from dbx) "
    "and exits 1 when a revoked boot component was loaded.",
)
@click.pass_context
def state_cmd(ctx: click.Context, file: Path, as_json: bool, dbx_paths: tuple[Path, ...]) -> None:
    """The boot state the log records: Secure Boot, keys, boot applications, ...

    Exit 0, or 1 when --dbx finds a revoked boot component loaded (the report comes
    first); 2 when an input is unreadable.
    """
    log = load_log(file)
    state_mod = importlib.import_module("bootwatch.eventlog.state")
    state = state_mod.extract_boot_state(log)
    doc = state_mod.boot_state_to_json(state)
    if dbx_paths:
        from bootwatch.eventlog.revocation import check_revocation, revocation_to_json

        doc["revocation"] = revocation_to_json(check_revocation(state, _load_dbx(dbx_paths)))
    if as_json:
        _echo_json(doc)
        ctx.exit(_state_exit(doc.get("revocation")))
    revocation = doc.pop("revocation", None)
    if revocation is not None:
        _print_revocation(revocation)
    for key, value in doc.items():
        if isinstance(value, list) and value:
            _echo(f"{key}: {len(value)} entries")
            for item in value[:_STATE_LIST_SHOWN]:
                _echo(f"  - {_describe(item)}")
            if len(value) > _STATE_LIST_SHOWN:
                _echo(f"  ... {len(value) - _STATE_LIST_SHOWN} more (see --json)")
        elif isinstance(value, dict) and value:
            _echo(f"{key}:")
            for sub, item in value.items():
                _echo(f"  {sub}: {_describe(item)}")
        else:
            _echo(f"{key}: {_describe(value) if value is not None else 'null'}")
    ctx.exit(_state_exit(revocation))


def _state_exit(revocation: dict[str, Any] | None) -> int:
    return EXIT_REVOKED if revocation is not None and revocation["revoked_loaded"] else 0


@command.command("template")
@click.argument("file", type=_FILE)
@click.option("--name", required=True, help="Template name, e.g. my-image-v3.")
@click.option("--description", default="", help="What the key set is (default: the log).")
def template_cmd(file: Path, name: str, description: str) -> None:
    """A Secure Boot key template from the PK, KEK and db a known-good log measured.

    Prints the JSON list that ``bootwatch service run --secureboot-templates`` reads,
    so the keys of an image you trust make ``x-ms-azurevm-default-securebootkeysvalidated``
    and ``-dbvalidated`` true for VMs booted with the same keys.
    """

    from bootwatch.attest.claims import SecureBootTemplate, template_to_json
    from bootwatch.eventlog.decode.efi import SignatureKind
    from bootwatch.eventlog.state import extract_boot_state

    state = extract_boot_state(load_log(file))

    def thumbprints(variable: str, lists: Any) -> frozenset[str]:
        if lists is None:
            raise InputError(f"{file}: the log does not measure {variable}")
        found = frozenset(
            sha1_thumbprint(e.data)
            for sl in lists
            for e in sl.entries
            if e.kind is SignatureKind.X509
        )
        if not found:
            raise InputError(f"{file}: the measured {variable} holds no certificate")
        return found

    template = SecureBootTemplate(
        name=name,
        description=description or f"keys measured in {file.name}",
        pk=thumbprints("PK", state.pk),
        kek=thumbprints("KEK", state.kek),
        db=thumbprints("db", state.db),
    )
    _echo_json([template_to_json(template)])


@command.command("verify")
@click.argument("file", type=_FILE)
@click.option(
    "--expected",
    "expected_path",
    required=True,
    type=_FILE,
    help="Expected PCR values: *.expected.json, tpm2-tools YAML, HIRS *ExpectedPcrs.txt, "
    "evepcr *.pcr.yml or go-attestation dump JSON (auto-detected).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify_cmd(ctx: click.Context, file: Path, expected_path: Path, as_json: bool) -> None:
    """Compare the replayed log with expected PCR values; exit 1 on any mismatch."""
    log = load_log(file)
    raw = _read(expected_path, MAX_EXPECTED_SIZE, "expected-values file")
    expected = parse_expected(raw, name=str(expected_path))
    result = verify_pcrs(log, expected.values)
    if as_json:
        _echo_json(verification_to_json(result))
    else:
        table = Table(title=safe(f"{file} vs {expected_path} ({expected.format})"))
        table.add_column("bank")
        table.add_column(log.index_name, justify="right")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        style = {
            PcrStatus.MATCHED: "green",
            PcrStatus.MISMATCHED: "bold red",
            PcrStatus.NOT_COVERED: "yellow",
        }
        for r in result.results:
            table.add_row(
                alg_name(r.alg_id),
                str(r.pcr),
                f"[{style[r.status]}]{r.status.value}[/]",
                safe(r.reason),
            )
        make_console().print(table)
        for name in result.workarounds_applied:
            _echo(f"workaround applied: {name}")
        matched = sum(r.status is PcrStatus.MATCHED for r in result.results)
        bad = len(result.mismatched)
        _echo(
            f"{'OK' if result.ok else 'MISMATCH'}: {matched} matched, {bad} mismatched, "
            f"{len(result.results) - matched - bad} not covered by the log"
        )
    ctx.exit(0 if result.ok else 1)
