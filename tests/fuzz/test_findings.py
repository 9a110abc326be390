"""Regression tests for what the fuzzers found (scripts/fuzz; docs/fuzzing.md lists them).

Each test is the smallest input of the finding's kind, run through the pure module that
was fixed and through the harness that found it.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from bootwatch.errors import ProtocolError
from bootwatch.policy import (
    PolicyDocumentError,
    PolicyParsingError,
    compile_policy,
    parse_policy_document,
)
from bootwatch.protocol.azureguest import decode_request, encode_request

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fuzz.targets import CORPUS, TARGETS, check  # noqa: E402


def _request() -> dict[str, object]:
    """The corpus's AzureGuest request (inner JSON), as a dict to alter."""
    path = CORPUS / "maa" / "azure-guest-vm-derived" / "attestation-info.json"
    return dict(json.loads(path.read_bytes()))


@pytest.mark.parametrize(
    "alter",
    [
        # azureguest, 479,093rd execution of the first 1,000,000 run: a lone surrogate
        # escape in IsolationInfo.Type was accepted, and re-encoding the request as
        # UTF-8 (records, replays) raised UnicodeEncodeError
        lambda d: d["IsolationInfo"].update(Type="Trus\ud800tedLaunch"),
        # the same in a key the decoder keeps (ClientPayload) or lists (an unknown field)
        lambda d: d["ClientPayload"].update({"k\udc00": "dg=="}),
        lambda d: d.update({"Unknown\udfff": 1}),
    ],
)
def test_lone_surrogates_are_refused_with_a_protocol_error(alter: object) -> None:
    doc = _request()
    alter(doc)  # type: ignore[operator]
    body = json.dumps(doc).encode()  # ensure_ascii: the surrogate travels as \\udXXX
    assert b"\\ud" in body
    with pytest.raises(ProtocolError, match="lone UTF-16 surrogate"):
        decode_request(body)
    check(TARGETS["azureguest"], body)


def test_surrogate_pairs_are_still_text() -> None:
    doc = _request()
    doc["ClientPayload"] = {"emoji\U0001f600": "dg=="}  # \\ud83d\\ude00 in the JSON: valid
    req = decode_request(json.dumps(doc).encode())
    assert req.client_payload == {"emoji\U0001f600": "v"}
    assert decode_request(encode_request(req)).client_payload == req.client_payload


POLICY = ('version=1.0;\nauthorizationrules { => permit(); };\n'
          'issuancerules { => issue(type="a{}b", value="x"); };')


@pytest.mark.parametrize(("char", "what"), [("\x00", "NUL character"),
                                            ("\ud800", "lone UTF-16 surrogate")])
def test_policies_with_nul_or_a_lone_surrogate_are_refused_at_their_position(
        char: str, what: str) -> None:
    """A lone surrogate (a JSON escape in a JWS payload makes one) reached the policy
    hash's UTF-8 encoding and raised UnicodeEncodeError; a NUL was accepted and reached
    the database on upload. Both are now a typed error at line:column."""
    text = POLICY.replace("{}", char)
    with pytest.raises(PolicyParsingError, match=f"line 3:33: a {what}"):
        compile_policy(text)
    with pytest.raises(PolicyDocumentError, match=f"line 3:33: a {what}"):
        parse_policy_document(text)
    payload = json.dumps({"AttestationPolicy": text})  # the escape travels as \\u0000 / \\ud800
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    with pytest.raises(PolicyDocumentError, match=what):
        parse_policy_document(f"{header}.{body}.")
    # the harness reaches the str path through invalid UTF-8 (surrogateescape)
    check(TARGETS["policy"], POLICY.replace("{}", "").encode()[:60] + b"\xff" +
          POLICY.encode()[60:])
    assert compile_policy(POLICY.replace("{}", "\U0001f600")).ast is not None


@pytest.mark.parametrize(("at", "was", "now"), [
    # eventlog, 11,845th execution of the first run: the issuer name's PrintableString tag
    # turned into BIT STRING made cryptography raise TypeError while reading the name
    (86, 0x13, 0x03),
    # eventlog, 25,379th execution of the second run: version v3 (2) turned into 9 made
    # cryptography raise InvalidVersion (no ValueError) loading the certificate
    (12, 0x02, 0x09),
])
def test_certificates_cryptography_cannot_decode_are_undecodable(at: int, was: int,
                                                                  now: int) -> None:
    """One byte changed in the db certificate of a Secure Boot log: the error escaped
    x509_info (it caught ValueError only) and the one-line summary of the event."""
    from bootwatch.eventlog.decode._util import EventDataError
    from bootwatch.eventlog.decode.efi import x509_info

    log = bytearray((CORPUS / "eventlogs" / "secboot" / "eventlog1-2020-03.bin").read_bytes())
    start, size = 4963, 1499  # the db certificate's DER inside the log
    assert x509_info(bytes(log[start:start + size])).issuer  # reads as it is
    assert log[start + at] == was
    log[start + at] = now
    with pytest.raises(EventDataError, match="does not parse"):
        x509_info(bytes(log[start:start + size]))
    check(TARGETS["eventlog"], bytes(log))


@pytest.mark.parametrize(("query", "why"), [
    # policy, 20,415th execution of the second run: '&@' inside a JmesPath query
    ("PCRs[? Index == `0`] | &@[0]", "not a JSON value"),
    ("[&@, `1`]", "not a JSON value"),
    ("{a: &length(@)}", "not a JSON value"),
    ("`1e999`", "a number JSON cannot hold"),  # json.dumps wrote it as Infinity
])
def test_jmespath_results_that_are_no_json_are_an_evaluation_error(query: str, why: str) -> None:
    """An expression reference (``&expr``) outside a function argument made jmespath return
    its internal object, and serialising the result raised TypeError; an infinite number
    was serialised as ``Infinity``, which no JSON reader accepts."""
    from bootwatch.policy import Claim, PolicyEvaluationError, evaluate

    text = ('version=1.2; authorizationrules { => permit(); }; issuancerules { '
            'c:[type=="pcrs"] => issue(type="r", value=JmesPath(c.value, "'
            + query.replace('"', '\\"') + '")); };')
    policy = compile_policy(text)
    claims = [Claim.service("pcrs", {"PCRs": [{"Index": 0}]})]  # type: ignore[arg-type]
    with pytest.raises(PolicyEvaluationError, match=why):
        evaluate(policy, claims)
    ok = compile_policy(text.replace(query.replace('"', '\\"'), "sort_by(PCRs, &Index)"))
    assert [c.value for c in evaluate(ok, claims).issued if c.type == "r"] == ['[{"Index":0}]']


def test_a_spec_id_signature_that_is_not_ascii_is_undecodable() -> None:
    """eventlog, 325,511th execution of the third run: an EV_NO_ACTION event whose data
    starts "Spec ID Event0" then a non-ASCII byte raised UnicodeDecodeError decoding the
    signature (in the claim view, the summary and the boot state alike)."""
    from bootwatch.eventlog.decode import Undecodable, decode_data

    decoded = decode_data(3, 0, b"Spec ID Event0\x83" + bytes(20))
    assert isinstance(decoded, Undecodable) and "not ASCII" in decoded.reason
    log = bytearray((CORPUS / "eventlogs" / "tpm2-tools" / "specid-vendordata.bin").read_bytes())
    check(TARGETS["eventlog"], bytes(log))
    assert log[32:47] == b"Spec ID Event03"
    log[47] = 0x83  # the header's own signature: framing refuses it, with a typed error
    check(TARGETS["eventlog"], bytes(log))
