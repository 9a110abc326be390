"""Readers of expected-values files: each format, and clear errors on bad ones."""

from __future__ import annotations

import base64
import json

import pytest

from bootwatch.errors import ExpectedValuesError
from bootwatch.eventlog import parse_expected
from bootwatch.eventlog.model import HashAlg


def test_expected_json() -> None:
    doc = {"pcrs": {"sha256": {"0": "ab" * 32}, "sha1": {"7": "cd" * 20}}}
    exp = parse_expected(json.dumps(doc).encode())
    assert exp.format == "expected_json"
    assert exp.values[HashAlg.SHA256][0] == b"\xab" * 32
    assert exp.values[HashAlg.SHA1][7] == b"\xcd" * 20


def test_go_attestation_dump_uses_go_crypto_hash_numbers() -> None:
    doc = {
        "Log": {
            "Raw": "",
            "PCRs": [
                {"Index": 0, "Digest": base64.b64encode(b"\x01" * 20).decode(), "DigestAlg": 3},
                {"Index": 1, "Digest": base64.b64encode(b"\x02" * 32).decode(), "DigestAlg": 5},
            ],
        }
    }
    exp = parse_expected(json.dumps(doc).encode())
    assert exp.format == "go_attestation_dump"
    assert exp.values[HashAlg.SHA1][0] == b"\x01" * 20
    assert exp.values[HashAlg.SHA256][1] == b"\x02" * 32


def test_go_dump_with_tpm_alg_id_instead_of_go_hash_is_refused() -> None:
    doc = {"Log": {"PCRs": [{"Index": 0, "Digest": "AA==", "DigestAlg": 11}]}}
    with pytest.raises(ExpectedValuesError, match=r"crypto\.Hash"):
        parse_expected(json.dumps(doc).encode())


def test_tpm2_tools_yaml_integers_are_repadded() -> None:
    text = (
        "---\nversion: 1\nevents: []\npcrs:\n  sha1:\n"
        "    0  : 0x00000000000000000000000000000000000000ff\n"
    )
    exp = parse_expected(text.encode())
    assert exp.format == "tpm2_tools_yaml"
    assert exp.values[HashAlg.SHA1][0] == bytes(19) + b"\xff"


def test_evepcr_yaml() -> None:
    text = "pcrs:\n  sha256:\n    3: 0x" + "0A" * 32 + "\n"
    exp = parse_expected(text.encode())
    assert exp.format == "evepcr_yaml"
    assert exp.values[HashAlg.SHA256][3] == b"\x0a" * 32


def test_hirs_text() -> None:
    text = "\n".join(["00" * 32] * 17 + ["ff" * 32] * 6 + ["00" * 32]) + "\n"
    exp = parse_expected(text.encode())
    assert exp.format == "hirs_txt"
    assert sorted(exp.values[HashAlg.SHA256]) == list(range(24))
    assert exp.values[HashAlg.SHA256][17] == b"\xff" * 32


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b"", "empty"),
        (b'{"pcrs": {"sha256": {"0": "zz"}}}', "not a hex digest"),
        (b'{"pcrs": {"sha256": {"0": "abcd"}}}', "2-byte value"),
        (b'{"pcrs": {"md5": {"0": "ab"}}}', "unknown digest algorithm"),
        (b'{"pcrs": ', "line 1"),
        (b"pcrs: [1, 2", "invalid YAML"),
        (b"hello: world\n", "no 'pcrs:' map"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (("ab" * 32 + "\nnot hex\n").encode(), "line 2"),
    ],
)
def test_bad_expected_files_name_the_problem(blob: bytes, needle: str) -> None:
    with pytest.raises(ExpectedValuesError, match=needle):
        parse_expected(blob, name="x")
