"""``bootwatch policy``: check, evaluate, hash and sign MAA claim-rule policies.

Exit codes: 0 success (``eval``: the policy was evaluated, permitted or not); 1 the policy
does not parse (``check``) or the claims file is unusable; 2 other bootwatch errors (main).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.cli._files import read_limited, read_limited_text
from bootwatch.errors import InputError, PolicyParsingError
from bootwatch.policy import (
    Claim,
    claim_from_json,
    compile_policy,
    evaluate,
    parse_policy_document,
    policy_hash,
    sign_policy,
)

__all__ = [
    "check",
    "command",
    "eval_",
    "hash_",
    "sign",
]

#: Largest file the CLI reads (policy, claims, key, certificate).
_MAX_FILE = 16 * 1024 * 1024


def _read(path: str) -> str:
    return read_limited_text(path, "file", _MAX_FILE)


def _policy_text(path: str) -> str:
    """The policy in FILE: plain text, or the text inside a policy JWS."""
    return parse_policy_document(_read(path)).text


@click.group()
def command() -> None:
    """MAA claim-rule policies: check, eval, hash, sign."""


@command.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def check(file: str) -> None:
    """Parse FILE (text or JWS); print FILE:line:column and the error, exit 1, if invalid."""
    text = _policy_text(file)
    try:
        compiled = compile_policy(text)
    except PolicyParsingError as exc:
        where = f"{exc.line}:{exc.column}: " if exc.line is not None else ""
        reason = exc.message.removeprefix(f"line {where}")
        click.echo(f"{file}:{where}{reason}", err=True)
        raise SystemExit(1) from None
    click.echo(f"{file}: ok (version {compiled.version}, x-ms-policy-hash {compiled.hash})")
    for tol in compiled.tolerances:
        click.echo(f"{file}:{tol.pos}: note: accepted leniency {tol.name}: {tol.detail}")


def _claims(path: str) -> list[Claim]:
    try:
        data = json.loads(_read(path))
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of claims")
    return [claim_from_json(item, where=f"{path}[{i}]") for i, item in enumerate(data)]


@command.command("eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--claims",
    "claims_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help='JSON list of {"type", "value", "valueType"?, "issuer"?, "readOnly"?}.',
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_(file: str, claims_file: str, as_json: bool) -> None:
    """Evaluate FILE over the claims in CLAIMS (a JSON list)."""
    policy = compile_policy(_policy_text(file))
    result = evaluate(policy, _claims(claims_file))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    verdict = "PERMITTED" if result.permitted else "DENIED"
    click.echo(f"{verdict}: {result.reason}")
    if result.deciding_rule:
        click.echo(f"  deciding rule: {result.deciding_rule}")
    for claim in result.issued:
        click.echo(f"  issued {claim.type} = {json.dumps(claim.value)} ({claim.value_type.value})")
    for name, value in result.properties.items():
        click.echo(f"  property {name} = {json.dumps(value)}")


@command.command("hash")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def hash_(file: str) -> None:
    """Print x-ms-policy-hash (and x-ms-policy-token-hash when FILE is a JWS)."""
    doc = parse_policy_document(_read(file))
    click.echo(f"x-ms-policy-hash: {policy_hash(doc.text)}")
    if doc.jws is not None:
        click.echo(f"x-ms-policy-token-hash: {doc.token_hash}")


@command.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="PEM RSA private key (unencrypted).",
)
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate of that key (goes into the x5c header).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the JWS here, not stdout.")
def sign(file: str, key_file: str, cert_file: str, out: str | None) -> None:
    """Sign the policy in FILE as an RS256 JWS with the certificate in x5c."""
    text = _read(file)
    compile_policy(text)  # refuse to sign a policy that does not parse
    try:
        pem = read_limited(key_file, "private key")
        key = serialization.load_pem_private_key(pem, password=None)
        cert = x509.load_pem_x509_certificate(read_limited(cert_file, "certificate"))
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot read the key or certificate: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InputError(f"{key_file}: policy signing needs an RSA key (RS256)")
    jws = sign_policy(text, key, cert)
    if out:
        Path(out).write_text(jws + "\n", encoding="ascii")
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(jws)
