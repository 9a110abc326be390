"""``bootwatch policy`` end to end, through the real console entry (subprocess)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bootwatch.policy import default_azureguest_policy, parse_policy_document, policy_hash


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "policy", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_ok_and_error(pc, tmp_path: Path) -> None:
    ok = _cli("check", str(pc.dir / "policy-v1.2__sample-tpm-1.2.txt"))
    assert ok.returncode == 0 and "ok (version 1.2" in ok.stdout
    assert "positional-claim-type" in ok.stdout
    bad = _cli("check", str(pc.dir / "author-sign-policy__sample-1.0.txt"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "author-sign-policy__sample-1.0.txt:5:1: unexpected '}'; expected ';'" in bad.stderr
    jws = _cli("check", str(pc.dir / "policy-examples__sgx-default-signed.jws"))
    assert jws.returncode == 0


def test_eval_json(tmp_path: Path) -> None:
    policy = tmp_path / "p.txt"
    policy.write_text(default_azureguest_policy())
    names = [
        "x-ms-azurevm-default-securebootkeysvalidated",
        "x-ms-azurevm-debuggersdisabled",
        "secureboot",
        "x-ms-azurevm-signingdisabled",
        "x-ms-azurevm-dbvalidated",
        "x-ms-azurevm-dbxvalidated",
    ]
    claims = [
        {"type": n, "value": n != "secureboot", "issuer": "AttestationService"} for n in names
    ]
    claims_file = tmp_path / "c.json"
    claims_file.write_text(json.dumps(claims))
    out = _cli("eval", str(policy), "--claims", str(claims_file), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["permitted"] is False
    assert result["deciding_rule"] == 'line 6: [type=="secureboot", value==false] => deny();'
    assert result["issued"] == []
    assert result["properties"]["required_pcr_mask"] == 0xFFFFFF
    assert [t["fired"] for t in result["trace"]] == [False, False, True]
    claims_file.write_text(json.dumps([{"type": "x", "valueType": "Integer", "value": "nope"}]))
    bad = _cli("eval", str(policy), "--claims", str(claims_file), "--json")
    assert (
        bad.returncode == 2
        and "not a valid Integer" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_sign_then_hash(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cli signer")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    policy = tmp_path / "p.txt"
    policy.write_text(default_azureguest_policy())
    signed = _cli(
        "sign",
        str(policy),
        "--key",
        str(tmp_path / "k.pem"),
        "--cert",
        str(tmp_path / "c.pem"),
        "--out",
        str(tmp_path / "p.jws"),
    )
    assert signed.returncode == 0, signed.stderr
    jws = (tmp_path / "p.jws").read_text().strip()
    doc = parse_policy_document(jws, trusted_signers=[cert], require_signed=True)
    assert doc.text == default_azureguest_policy()
    hashed = _cli("hash", str(tmp_path / "p.jws"))
    assert hashed.stdout.splitlines() == [
        f"x-ms-policy-hash: {policy_hash(default_azureguest_policy())}",
        f"x-ms-policy-token-hash: {doc.token_hash}",
    ]
    plain = _cli("hash", str(policy))
    assert plain.stdout.strip() == f"x-ms-policy-hash: {policy_hash(default_azureguest_policy())}"
