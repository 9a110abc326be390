"""AzureGuest request (maa-protocol 1.3): the real request round-trips byte for byte; leniencies
are named; every malformed field is refused with its JSON path."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootwatch.errors import ProtocolError
from bootwatch.protocol.azureguest import (
    MAX_BODY_BYTES,
    WORKAROUND_OSBUILD_LITERAL,
    WORKAROUND_PAYLOAD_RAW_JSON,
    WORKAROUND_VERSION_STRINGS,
    AzureGuestRequest,
    TpmInfo,
    UnverifiedAzureGuestRequest,
    attestation_info_json,
    decode_request,
    encode_request,
)

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
MAA = SHARED / "corpus/maa"
DERIVED = MAA / "azure-guest-vm-derived"
INNER = (DERIVED / "attestation-info.json").read_bytes()
SPEC_EXAMPLE = MAA / "spec-2025-06-01/examples/AttestAzureGuestVm.json"
CLIENT_EXAMPLE = MAA / "spec-2025-06-01/AttestationClient-examples/AttestAzureGuestVm.json"


def _inner() -> dict:
    return json.loads(INNER)


def _body(inner: dict) -> bytes:
    return json.dumps(inner).encode()


def test_real_request_fields() -> None:
    r = decode_request(INNER)
    assert isinstance(r, UnverifiedAzureGuestRequest)
    assert (r.protocol_version, r.os_type, r.os_distro, r.os_build) == (
        "2.0", "Windows", "Microsoft", "NotApplicable")
    assert (r.os_version_major, r.os_version_minor, r.isolation_type) == (10, 0, "TrustedLaunch")
    assert r.client_payload["ArmID"].endswith("virtualMachines/bab-winserver2019")
    ti = r.tpm_info
    assert ti.aik_cert == (DERIVED / "aik-cert.der").read_bytes()
    assert ti.aik_pub == (DERIVED / "aik-pub.tpm2b").read_bytes()
    assert ti.pcr_quote == (DERIVED / "pcr-quote.tpms_attest").read_bytes()
    assert ti.pcr_signature == (DERIVED / "pcr-signature.bin").read_bytes()
    assert ti.enc_key_pub == (DERIVED / "enckey-pub.tpm2b").read_bytes()
    assert ti.enc_key_certify_info == (DERIVED / "enckey-certify-info.tpms_attest").read_bytes()
    assert ti.enc_key_certify_info_signature == (
        DERIVED / "enckey-certify-signature.bin").read_bytes()
    assert r.tcg_logs == (DERIVED / "azure-trusted-launch-ws2019.tcglog.bin").read_bytes()
    pcrs = json.loads((DERIVED / "pcrs.json").read_text())
    assert list(ti.pcr_set) == pcrs["pcr_set"]
    assert {i: d.hex() for i, d in ti.pcrs} == {int(k): v for k, v in pcrs["pcrs_hex"].items()}
    assert r.workarounds == () and r.unknown_fields == ()


def test_inner_json_round_trips_byte_for_byte() -> None:
    assert attestation_info_json(decode_request(INNER)) == INNER


@pytest.mark.parametrize("example", [SPEC_EXAMPLE, CLIENT_EXAMPLE], ids=["spec", "client"])
def test_spec_examples_decode_and_round_trip(example: Path) -> None:
    doc = json.loads(example.read_text())
    params = doc["parameters"]
    wire = (params.get("body") or params["request"])["attestationInfo"]
    body = json.dumps({"attestationInfo": wire}).encode()
    r = decode_request(body)
    assert r == decode_request(INNER)
    assert json.loads(encode_request(r)) == {"AttestationInfo": wire}


def test_agent_request_encodes_like_microsoft_clients() -> None:
    u = decode_request(INNER)
    fields = {f: getattr(u, f) for f in (
        "protocol_version", "os_type", "os_distro", "os_version_major", "os_version_minor",
        "os_build", "tcg_logs", "client_payload", "tpm_info", "isolation_type")}
    req = AzureGuestRequest(**fields)
    body = encode_request(req)
    outer = json.loads(body)
    assert list(outer) == ["AttestationInfo"]
    assert "=" not in outer["AttestationInfo"]
    assert base64.urlsafe_b64decode(outer["AttestationInfo"] + "==") == INNER
    back = decode_request(body)
    assert back.tpm_info == req.tpm_info and back.client_payload == req.client_payload


def test_no_aik_cert_and_empty_payload_round_trip() -> None:
    u = decode_request(INNER)
    u2 = replace(u, tpm_info=replace(u.tpm_info, aik_cert=None), client_payload={})
    back = decode_request(encode_request(u2))
    assert back.tpm_info.aik_cert is None and back.client_payload == {}


def test_case_insensitive_keys_and_urlsafe_unpadded_base64() -> None:
    inner = _inner()
    lowered = {k.lower(): v for k, v in inner.items()}
    lowered["tpminfo"] = {k.lower(): v for k, v in inner["TpmInfo"].items()}
    for k in ("aikpub", "pcrquote", "encKeyPub".lower()):
        lowered["tpminfo"][k] = base64.urlsafe_b64encode(
            base64.b64decode(lowered["tpminfo"][k])).decode().rstrip("=")
    r = decode_request(_body(lowered))
    assert r.tpm_info == decode_request(INNER).tpm_info


def test_named_leniencies() -> None:
    inner = _inner()
    inner["OSVersionMajor"] = "10"
    inner["OSBuild"] = "NotApplication"
    inner["ClientPayload"] = {"nonce": {"n": 1}, "ArmID": inner["ClientPayload"]["ArmID"]}
    r = decode_request(_body(inner))
    assert r.os_version_major == 10 and r.os_build == "NotApplication"
    assert r.client_payload["nonce"] == '{"n":1}'
    assert set(r.workarounds) == {WORKAROUND_VERSION_STRINGS, WORKAROUND_OSBUILD_LITERAL,
                                  WORKAROUND_PAYLOAD_RAW_JSON}


def test_unknown_fields_are_listed_not_trusted() -> None:
    inner = _inner()
    inner["Extra"] = 1
    inner["TpmInfo"]["Other"] = "x"
    r = decode_request(_body(inner))
    assert r.unknown_fields == ("Extra", "TpmInfo.Other")


def _mutate(path: str, value: object) -> dict:
    inner = _inner()
    node = inner
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[parts[-1]]
    elif isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return inner


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "problem"),
    [
        ("TpmInfo.PcrQuote", "!!notbase64", "TpmInfo.PcrQuote", "not base64"),
        ("TpmInfo.PcrQuote", "A" * 4000, "TpmInfo.PcrQuote", "over the limit"),
        ("TpmInfo.AikPub", _DELETE, "TpmInfo.AikPub", "missing"),
        ("TpmInfo.PcrSet.3", 99, "TpmInfo.PcrSet[3]", "PCR index"),
        ("TpmInfo.PcrSet.3", 2, "TpmInfo.PcrSet[3]", "twice"),
        ("TpmInfo.PCRs.1.Index", "1", "TpmInfo.PCRs[1].Index", "PCR index"),
        ("TpmInfo.PCRs.1.Digest", "A" * 200, "TpmInfo.PCRs[1].Digest", "over the limit"),
        ("OSVersionMajor", True, "OSVersionMajor", "boolean"),
        ("OSVersionMinor", -1, "OSVersionMinor", "out of range"),
        ("OSVersionMinor", "1.5", "OSVersionMinor", "expected an integer"),
        ("OSType", base64.b64encode(b"\xff\xfe").decode(), "OSType", "UTF-8"),
        ("OSType", 5, "OSType", "base64 string"),
        ("AttestationProtocolVersion", "1.0", "AttestationProtocolVersion", "not supported"),
        ("IsolationInfo", "TrustedLaunch", "IsolationInfo", "expected an object"),
        ("TcgLogs", "", "TcgLogs", "empty"),
        ("ClientPayload", [], "ClientPayload", "expected an object"),
        ("ClientPayload.ArmID", "***", "ClientPayload.ArmID", "not base64"),
        ("TpmInfo", None, "TpmInfo", "expected an object"),
    ],
)
def test_malformed_fields_name_their_path(path: str, value: object, field: str,
                                          problem: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode_request(_body(_mutate(path, value)))
    assert exc.value.field == field
    assert problem in str(exc.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "invalid JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b'{"AttestationInfo": "e30", "x": 1}', "unexpected keys"),
        (b'{"AttestationInfo": 5}', "base64 string"),
        (b'{"AttestationInfo": "bm90IGpzb24"}', "invalid JSON"),
        (b'{"OSType": 1, "ostype": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b"[" * 100000 + b"]" * 100000, "nested deeper"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_request(body)


def test_oversized_body_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="over the limit"):
        decode_request(b" " * (MAX_BODY_BYTES + 1))


def test_tpm_info_is_frozen() -> None:
    ti = decode_request(INNER).tpm_info
    assert isinstance(ti, TpmInfo)
    with pytest.raises(AttributeError):
        ti.aik_pub = b""  # type: ignore[misc]


# --- the fast base64 and envelope paths are shortcuts, never a second rule ------------

_B64_CHARS = "AQgwBZaz09+/-_=\n é\\\""


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_B64_CHARS, max_size=14))
def test_fast_base64_accepts_exactly_what_the_reference_decoder_does(value: str) -> None:
    from bootwatch.protocol.azureguest import _b64, _b64_checked

    try:
        want: bytes | str = _b64_checked(value, "f")
    except ProtocolError as exc:
        want = str(exc)
    try:
        got: bytes | str = _b64(value, "f", 64, allow_empty=True)
    except ProtocolError as exc:
        got = str(exc)
    assert got == want


@pytest.mark.parametrize(
    "body",
    [
        b'{"AttestationInfo":"ZQ"}',  # decodes to "e": invalid JSON inside
        b'{"attestationInfo":"' + base64.urlsafe_b64encode(b'{"x": 1}') + b'"}',
        b'{"AttestationInfo":"e30\\u003d"}',  # a JSON escape: the general path decides
        b'{"AttestationInfo":"e30==="}',
        b'{"AttestationInfo":""}',
        b'{"AttestationInfo":"\xc3\xa9"}',
    ],
)
def test_compact_envelope_shortcut_agrees_with_the_general_path(body: bytes) -> None:
    from bootwatch.protocol.azureguest import _envelope_fast, _loads, decode_attestation_info

    def general() -> object:
        outer = _loads(body, "(body)")
        (value,) = outer.values()
        from bootwatch.protocol.azureguest import _b64

        return decode_attestation_info(_loads(_b64(value, "AttestationInfo", MAX_BODY_BYTES),
                                              "AttestationInfo"))

    results = []
    for fn in (lambda: decode_request(body), general):
        try:
            results.append(fn())
        except ProtocolError as exc:
            results.append((exc.field, exc.message))
    assert results[0] == results[1]
    if b"\\" in body or b"===" in body or b'""' in body:
        assert _envelope_fast(body) is None


def test_compact_envelope_of_the_real_request() -> None:
    from bootwatch.protocol.azureguest import _envelope_fast

    body = encode_request(decode_request(INNER))
    assert _envelope_fast(body) == INNER
    assert decode_request(body) == decode_request(INNER)
