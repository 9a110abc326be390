"""``bootwatch attest``: offline verification of AzureGuest evidence.

``bootwatch attest verify REQUEST.json`` reads a request body (the outer
``{"AttestationInfo": ...}`` or the decoded inner JSON), runs every evidence
check as of now or ``--at``, and prints the verdict and its reason first, then a
short summary (checks, PCRs, TPM counters, boot state in one line each); every
check, PCR value and the whole boot state follow with ``--verbose``, and
``--json`` prints everything as one document.  Exit codes: 0 every check passed, 1 a check failed,
2 unreadable input (one line on stderr).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bootwatch.attest.evidence import REPORTED_BANK, EvidenceVerification, verify_evidence
from bootwatch.cli._files import read_limited
from bootwatch.errors import BootwatchError, InputError
from bootwatch.eventlog.state import boot_state_to_json, extract_boot_state
from bootwatch.protocol.azureguest import MAX_BODY_BYTES, decode_request
from bootwatch.tpm.aik import TrustAnchors
from bootwatch.tpm.builtin_anchors import anchor_expiry_notes, builtin_anchors
from bootwatch.tpm.constants import alg_name

__all__ = ["command", "load_trust_anchors", "verification_to_json"]

#: Largest trust-anchor file read, and most files read from a folder.
MAX_ANCHOR_FILE = 4 * 1024 * 1024
MAX_ANCHOR_FILES = 1000
_ANCHOR_SUFFIXES = {".pem", ".crt", ".cer"}


def _read(path: Path, limit: int, what: str) -> bytes:
    return read_limited(path, what, limit)


def load_trust_anchors(path: Path) -> TrustAnchors:
    """Trust anchors from a PEM bundle, or from every .pem/.crt/.cer file in a folder."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _ANCHOR_SUFFIXES)
        if len(files) > MAX_ANCHOR_FILES:
            raise InputError(f"{path}: more than {MAX_ANCHOR_FILES} certificate files")
    else:
        files = [path]
    blobs = [_read(f, MAX_ANCHOR_FILE, "trust-anchor PEM") for f in files]
    try:
        anchors = TrustAnchors.from_pem(blobs)
    except BootwatchError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not anchors.certificates:
        raise InputError(f"{path}: no PEM certificate found")
    return anchors


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint="--at") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def verification_to_json(v: EvidenceVerification) -> dict[str, Any]:
    """``{"checks": [...], "pcrs": {...}, "boot_state": {...} | null}`` (see docs/tpm.md)."""
    boot: dict[str, object] | None = None
    if v.verified_event_log is not None:
        boot = boot_state_to_json(extract_boot_state(v.verified_event_log))
    return {
        "checks": [
            {"name": c.name, "passed": c.passed, "reason_code": c.reason_code,
             "reason": c.reason}
            for c in v.checks
        ],
        "passed": v.passed,
        "pcrs": {
            "bank": alg_name(REPORTED_BANK).removeprefix("TPM_ALG_").lower(),
            "quoted_verified": v.verified_pcrs is not None,
            "quoted": {str(k): d.hex() for k, d in v.unverified_reported_pcrs.items()},
            "replayed": (None if v.unverified_replayed_pcrs is None else
                         {str(k): d.hex() for k, d in v.unverified_replayed_pcrs.items()}),
        },
        "tpm": {
            "reset_count": v.verified_reset_count,
            "restart_count": v.verified_restart_count,
            "clock": v.verified_clock.clock if v.verified_clock else None,
            "firmware_version": (None if v.verified_firmware_version is None
                                 else f"0x{v.verified_firmware_version:016x}"),
            "aik_name": v.verified_aik_pub.name.hex() if v.verified_aik_pub else None,
            "enc_key_name": v.verified_enc_key.name.hex() if v.verified_enc_key else None,
        },
        "boot_state": boot,
    }


def _print_verdict(doc: dict[str, Any]) -> None:
    """The verdict and the reason first, then a few lines a person reads at a glance."""
    checks = doc["checks"]
    failed = [c for c in checks if not c["passed"]]
    if failed:
        first = failed[0]
        click.echo(f"REJECTED: {first['name']} [{first['reason_code']}]: {first['reason']}")
        for c in failed[1:]:
            click.echo(f"  also failed: {c['name']} [{c['reason_code']}]: {c['reason']}")
    else:
        click.echo(f"VERIFIED: every check passed ({len(checks)} checks)")
    passed = [c["name"] for c in checks if c["passed"]]
    click.echo(f"checks passed: {len(passed)} of {len(checks)}"
               + (f" ({', '.join(passed)})" if failed and passed else ""))
    pcrs = doc["pcrs"]
    quoted = pcrs["quoted"]
    replayed = pcrs["replayed"] or {}
    differ = [i for i, v in quoted.items() if replayed.get(i) not in (None, v)]
    where = "verified by the quote" if pcrs["quoted_verified"] else "NOT verified by the quote"
    replay = (f"log replay differs at PCR {', '.join(differ)}" if differ
              else "log replay equals them" if pcrs["replayed"] is not None
              else "log not replayed")
    click.echo(f"PCRs ({pcrs['bank']}) {', '.join(quoted)}: {where}; {replay}")
    tpm = doc["tpm"]
    if tpm["reset_count"] is not None:
        click.echo(f"TPM: resetCount {tpm['reset_count']}, restartCount "
                   f"{tpm['restart_count']}, firmware {tpm['firmware_version']}")
    boot = doc["boot_state"]
    if boot is None:
        click.echo("boot state: not shown (the log is not verified against the quote)")
    else:
        sb = {True: "on", False: "off"}.get(boot.get("secure_boot"), "not measured")
        counts = ", ".join(f"{k} {len(boot.get(k) or [])}" for k in ("pk", "kek", "db", "dbx"))
        apps = len(boot.get("boot_applications") or [])
        click.echo(f"boot state: Secure Boot {sb}; {counts} entries; "
                   f"{apps} boot application(s); {len(boot.get('findings') or [])} finding(s)")


def _print_details(doc: dict[str, Any]) -> None:
    """``--verbose``: every check, every PCR value, the whole boot state."""
    click.echo("\nchecks:")
    for c in doc["checks"]:
        mark = "PASS" if c["passed"] else "FAIL"
        code = "" if c["passed"] else f" [{c['reason_code']}]"
        click.echo(f"{mark}  {c['name']:<20}{code} {c['reason']}")
    pcrs = doc["pcrs"]
    state = "verified by the quote" if pcrs["quoted_verified"] else "NOT verified"
    click.echo(f"\nPCRs ({pcrs['bank']}, quoted values {state}):")
    replayed = pcrs["replayed"] or {}
    for idx, value in pcrs["quoted"].items():
        rep = replayed.get(idx)
        same = "=" if rep == value else ("(log: none)" if rep is None else f"!= log {rep}")
        click.echo(f"  {idx:>2}  {value}  {same}")
    if doc["boot_state"] is not None:
        click.echo("\nboot state (from the verified log):")
        click.echo(json.dumps(doc["boot_state"], indent=2, sort_keys=True))


def _print_human(doc: dict[str, Any], verbose: bool) -> None:
    _print_verdict(doc)
    if verbose:
        _print_details(doc)
    else:
        click.echo("details: --verbose (every check, PCR value, the boot state) or --json")


@click.group(name="attest")
def command() -> None:
    """Offline verification of AzureGuest (Trusted Launch) evidence."""


@command.command("verify")
@click.argument("request", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--trust-anchors", "anchors_path", type=click.Path(path_type=Path),
              help="PEM bundle or folder of CA certificates trusted to issue AIK certificates "
                   "(added to the built-in sets).")
@click.option("--no-builtin-anchors", is_flag=True,
              help="Do not trust the built-in anchor sets (azure-trusted-launch).")
@click.option("--at", "at_text", metavar="ISO-TIME",
              help="Verify as of this time (AIK certificate validity); default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-v", "--verbose", is_flag=True,
              help="After the verdict, print every check, PCR value and the boot state.")
@click.pass_context
def verify_cmd(ctx: click.Context, request: Path, anchors_path: Path | None,
               no_builtin_anchors: bool, at_text: str | None, as_json: bool,
               verbose: bool) -> None:
    """Verify the evidence in REQUEST.json; exit 0 if every check passes, 1 if not.

    The built-in ``azure-trusted-launch`` anchors are trusted unless
    --no-builtin-anchors; --trust-anchors adds to them.
    """
    at = _parse_at(at_text)
    try:
        body = _read(request, MAX_BODY_BYTES, "request")  # its errors name the file
        try:
            req = decode_request(body)
        except BootwatchError as exc:
            raise InputError(f"{request}: {exc}") from None
        anchors = TrustAnchors(()) if no_builtin_anchors else builtin_anchors()
        if anchors_path:
            anchors = anchors.plus(load_trust_anchors(anchors_path))
    except BootwatchError as exc:
        click.echo(f"bootwatch: error: {exc}", err=True)
        ctx.exit(2)
    v = verify_evidence(req, trust_anchors=anchors, at=at)
    doc = verification_to_json(v)
    doc["anchor_warnings"] = list(anchor_expiry_notes(anchors, at))
    if not as_json:
        for note in doc["anchor_warnings"]:
            click.echo(f"bootwatch: warning: {note}", err=True)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_human(doc, verbose)
    ctx.exit(0 if v.passed else 1)
