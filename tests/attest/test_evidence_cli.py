"""``bootwatch attest verify``: exit codes, JSON shape, trust anchors (bundle and folder)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootwatch.cli.main import main

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
DERIVED = SHARED / "corpus/maa/azure-guest-vm-derived"
INNER = DERIVED / "attestation-info.json"
CHECKS = ["quote_signature", "quote_structure", "quote_nonce", "pcr_digest", "log_replay",
          "enc_key_certified", "enc_key_attributes", "enc_key_pcr_policy", "aik_certificate"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["attest", "verify", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_real_request_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(INNER), "--at", "2025-01-01T00:00:00Z", "--json")
    doc = json.loads(out)
    assert code == 0  # the built-in azure-trusted-launch anchors issue its AIK certificate
    assert [c["name"] for c in doc["checks"]] == CHECKS
    assert all(c["passed"] for c in doc["checks"]), doc["checks"]
    aik = doc["checks"][-1]["reason"]
    assert "Global Virtual TPM CA - 01" in aik and "Root Certificate Authority 2023" in aik
    assert doc["anchor_warnings"] == []
    assert all(set(c) >= {"name", "passed", "reason"} for c in doc["checks"])
    assert doc["pcrs"]["quoted_verified"] is True
    assert doc["pcrs"]["quoted"] == doc["pcrs"]["replayed"]
    assert doc["pcrs"]["quoted"]["7"].startswith("ddfa981d")
    assert doc["tpm"]["reset_count"] == 3
    assert doc["boot_state"]["secure_boot"] is True


def test_outer_envelope_and_human_output(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "req.json"
    wire = base64.urlsafe_b64encode(INNER.read_bytes()).rstrip(b"=").decode()
    body.write_text(json.dumps({"AttestationInfo": wire}))
    code, out, _ = run(capsys, str(body), "--at", "2025-01-01", "--no-builtin-anchors")
    assert code == 1
    lines = out.splitlines()
    # verdict and reason first, then a short summary; no boot-state dump without --verbose
    assert lines[0].startswith("REJECTED: aik_certificate [no_trust_anchors]: ")
    assert "checks passed: 8 of 9" in out and "resetCount 3" in out
    assert "Secure Boot on" in out and "dbx 486 entries" in out
    assert len(lines) <= 8 and "PASS  quote_signature" not in out
    code, out, _ = run(capsys, str(body), "--at", "2025-01-01", "--verbose",
                       "--no-builtin-anchors")
    assert code == 1 and out.startswith("REJECTED: aik_certificate")
    assert "PASS  quote_signature" in out and "FAIL  aik_certificate" in out
    assert '"secure_boot": true' in out


def test_trust_anchor_folder_and_bundle(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    leaf = x509.load_der_x509_certificate((DERIVED / "aik-cert.der").read_bytes())
    (tmp_path / "a.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    for anchors in (tmp_path, tmp_path / "a.pem"):
        code, out, _ = run(capsys, str(INNER), "--at", "2025-01-01", "--json",
                           "--no-builtin-anchors", "--trust-anchors", str(anchors))
        aik = json.loads(out)["checks"][-1]
        assert (code, aik["reason_code"]) == (1, "aik_cert_untrusted")


def test_expired_now(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(INNER), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["checks"][-1]["reason_code"] == "aik_cert_expired"
    assert "TrustedVM.Azure.Microsoft expired on 2025-10-30" in doc["checks"][-1]["reason"]


def test_expiring_intermediate_is_warned_about_ahead(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    """Without its successor (CA - 03) in the set, CA - 01's end is warned about; with
    the built-in set (which holds CA - 03) it is not."""
    ca = SHARED / "corpus/maa/azure-vtpm-ca"
    pem = tmp_path / "ca01.pem"
    pem.write_bytes((ca / "azure-virtual-tpm-root-ca-2023.pem").read_bytes()
                    + (ca / "global-virtual-tpm-ca-01.pem").read_bytes())
    code, out, err = run(capsys, str(INNER), "--at", "2025-10-01", "--no-builtin-anchors",
                         "--trust-anchors", str(pem))
    assert code == 0, out
    assert "warning: trust anchor CN=Global Virtual TPM CA - 01 expires on 2025-11-03" in err
    code, out, err = run(capsys, str(INNER), "--at", "2025-10-01")
    assert code == 0, out
    assert "CA - 01 expires" not in err


def test_added_anchors_extend_the_builtin_set(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A new intermediate is added by configuration: the file joins the built-in set."""
    ca01 = Path(__file__).resolve().parents[2] / (
        "src/bootwatch/tpm/anchors/azure-trusted-launch/global-virtual-tpm-ca-01.pem")
    (tmp_path / "ca01.pem").write_bytes(ca01.read_bytes())
    code, out, _ = run(capsys, str(INNER), "--at", "2025-01-01", "--json",
                       "--no-builtin-anchors", "--trust-anchors", str(tmp_path / "ca01.pem"))
    assert code == 0, out
    code, out, _ = run(capsys, str(INNER), "--at", "2025-01-01", "--json",
                       "--trust-anchors", str(tmp_path / "ca01.pem"))
    assert code == 0, out


@pytest.mark.parametrize("content", [b"not json", b'{"AttestationInfo": "!!"}', b"{}"])
def test_unreadable_request_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    content: bytes) -> None:
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    code, out, err = run(capsys, str(p))
    assert code == 2 and out == ""
    assert err.startswith("bootwatch: error:") and str(p) in err


def test_missing_file_and_bad_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read" in err
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here")
    code, _, err = run(capsys, str(INNER), "--trust-anchors", str(empty))
    assert code == 2 and "no PEM certificate" in err


def test_bad_time(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(INNER), "--at", "yesterday")
    assert code == 2 and "ISO 8601" in err
