"""One harness per fuzz target: bytes in, every reader of that input run, nothing returned.

Each harness feeds one input to a pure reader and then to everything the service does
with what it read (replay, decode, claim views, re-encoding, key building), so a finding
anywhere on that path shows up. A harness returns normally when the input is read or
rejected with a :class:`~bootwatch.errors.BootwatchError`; anything else it lets through
(:func:`check`), and the fuzzer reports it. That includes ``MemoryError`` and
``RecursionError``: a hostile input must meet a typed limit before it meets either.

Seeds are built from the shared corpus (``../shared/corpus``), read in place; only the
few seeds that are derived (a request with a shortened log, a quote split off a request)
are made here, never copied into the repository.

Why here and not in ``src/``: harnesses are test tooling that imports across layers
(``eventlog`` and ``tpm`` and ``policy`` together); the package stays free of it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bootwatch.attest.outcome import describe_events
from bootwatch.errors import BootwatchError, ProtocolError
from bootwatch.eventlog import parse_log, replay, verify_pcrs
from bootwatch.eventlog.dbx import DbxCatalog, load_dbx_json
from bootwatch.eventlog.decode import SipaEvent, decode_event, events_claim, summarize_decoded
from bootwatch.eventlog.decode.sipa import sipa_records_json
from bootwatch.eventlog.revocation import check_revocation, revocation_to_json
from bootwatch.eventlog.state import boot_state_to_json, extract_boot_state
from bootwatch.policy import (
    Claim,
    compile_policy,
    evaluate,
    parse_policy_document,
    policy_hash,
)
from bootwatch.protocol.azureguest import (
    UnverifiedAzureGuestRequest,
    attestation_info_json,
    decode_request,
    encode_request,
)
from bootwatch.protocol.outcome import (
    BootEventTable,
    OutcomeEvent,
    RevokedItem,
    Verdict,
    decode_outcome,
    encode_outcome,
)
from bootwatch.tpm.aik import TrustAnchors, load_aik_certificate, verify_aik_certificate
from bootwatch.tpm.attest import parse_tpms_attest
from bootwatch.tpm.builtin_anchors import builtin_anchors
from bootwatch.tpm.constants import DIGEST_SIZES, TpmAlg
from bootwatch.tpm.pcr import marshal_pcr_selections, parse_pcr_selections, quote_pcr_digest
from bootwatch.tpm.public import (
    TpmPublic,
    parse_public_or_read_public,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from bootwatch.tpm.signature import parse_tpmt_signature, signature_from_raw, verify_signature

__all__ = [
    "CORPUS",
    "TARGETS",
    "Target",
    "check",
    "corpus_root",
]

#: A moment inside the validity of the corpus's Azure AIK certificate chain (fixed, so a
#: run is a pure function of its inputs).
AT = datetime(2024, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """A fuzz target: its harness, how large an input may grow, and its seeds."""

    name: str
    about: str
    #: libFuzzer's -max_len: larger seeds are read whole, mutations stay below this
    max_len: int
    run: Callable[[bytes], None]
    #: (name, bytes) seeds built from the corpus root
    seeds: Callable[[Path], Iterator[tuple[str, bytes]]]
    #: tokens for libFuzzer's -dict (field names, keywords); may be empty
    dictionary: tuple[bytes, ...] = ()


def check(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; a BootwatchError is a rejection, anything else escapes."""
    with contextlib.suppress(BootwatchError):
        target.run(data)


def corpus_root(repo: Path) -> Path:
    """``shared/corpus`` beside the repository, or under ``$BOOTWATCH_SHARED`` (the tests'
    convention)."""
    shared = os.environ.get("BOOTWATCH_SHARED")
    return (Path(shared) if shared else repo.parent / "shared").resolve() / "corpus"


#: the corpus the seeds and the harnesses' fixed inputs (DBX list, AIK) come from
CORPUS = corpus_root(Path(__file__).resolve().parent.parent)


# --- event log ----------------------------------------------------------------

_LOG_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".txt", ".warn")


@functools.cache
def _dbx_catalog() -> DbxCatalog:
    """Microsoft's DBX list from the corpus, read once per process."""
    return load_dbx_json((CORPUS / "secureboot" / "dbx_info_msft_latest.json").read_bytes())


def _eventlog(data: bytes) -> None:
    log = parse_log(data)
    rep = replay(log)
    # expected values: the replay's own, one flipped (a mismatch: the suspect search and
    # the workarounds run) and one PCR the log does not extend (not covered)
    expected: dict[int, dict[int, bytes]] = {}
    for alg, values in rep.pcrs.items():
        bank = dict(values)
        for pcr in sorted(bank)[:1]:
            bank[pcr] = bytes([bank[pcr][0] ^ 1]) + bank[pcr][1:] if bank[pcr] else b"\x01"
        bank.setdefault(23, bytes(len(next(iter(values.values()), b"\x00" * 32))))
        expected[alg] = bank
    verify_pcrs(log, expected, replayed=rep)
    # the claim view decodes every event (and builds its ProcessedData); the one-line
    # summaries and the SIPA JSON are read from one more decode of each event
    json.dumps(events_claim(log, pcrs=range(24)))
    for event in log.events:
        decoded = decode_event(event)
        summarize_decoded(decoded)
        if isinstance(decoded, SipaEvent):
            sipa_records_json(decoded.records)
    state = extract_boot_state(log)
    json.dumps(boot_state_to_json(state))
    json.dumps(revocation_to_json(check_revocation(state, _dbx_catalog())))


def _eventlog_seeds(corpus: Path) -> Iterator[tuple[str, bytes]]:
    roots = [corpus / "eventlogs", corpus / "maa" / "azure-guest-vm-derived"]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.endswith(_LOG_SUFFIXES):
                continue
            if root.name == "azure-guest-vm-derived" and "tcglog" not in path.name:
                continue
            yield f"{root.name}-{path.relative_to(root)}".replace("/", "-"), path.read_bytes()


# --- TPM structures -----------------------------------------------------------

#: first input byte (mod this many) picks the reader; the rest is its input
_TPM_MODES = 8


@functools.cache
def _anchors() -> TrustAnchors:
    return builtin_anchors()


def _use_key(key: TpmPublic, sig: bytes) -> None:
    _ = key.name, key.attribute_names, key.marshal()
    with contextlib.suppress(BootwatchError):
        key.public_key()
    signature = signature_from_raw(sig or b"\x00", key)
    verify_signature(key, b"fuzz message", signature)


def _tpm(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % _TPM_MODES, data[1:]
    if mode == 0:
        attest = parse_tpms_attest(body)
        quote = attest.quote
        if quote is not None:
            values = {s.hash_alg: {p: bytes(DIGEST_SIZES.get(s.hash_alg, 32)) for p in s.pcrs}
                      for s in quote.pcr_selections}
            quote_pcr_digest(TpmAlg.SHA256, quote.pcr_selections, values)
        _ = attest.certify
    elif mode == 1:
        sig = parse_tpmt_signature(body)
        if parse_tpmt_signature(sig.marshal()) != sig:
            raise AssertionError("TPMT_SIGNATURE does not survive marshal/parse")
    elif mode == 2:
        key = parse_tpm2b_public(body)
        if parse_tpm2b_public(key.marshal()) != key:
            raise AssertionError("TPM2B_PUBLIC does not survive marshal/parse")
        _use_key(key, b"")
    elif mode == 3:
        _use_key(parse_tpmt_public(body), b"")
    elif mode == 4:
        _use_key(parse_public_or_read_public(body), b"")
    elif mode == 5:
        parse_pcr_selections(body)
    elif mode == 6:
        # an AIK certificate against the built-in Azure anchors, with a key of the corpus
        cert = load_aik_certificate(body)
        _ = cert.subject
        verify_aik_certificate(body, _corpus_aik(), _anchors(), at=AT)
    else:
        # a key and a raw signature: UINT16 length of the key, the key, the signature
        if len(body) < 2:
            return
        size = int.from_bytes(body[:2], "big")
        key = parse_public_or_read_public(body[2 : 2 + size])
        _use_key(key, body[2 + size :])


@functools.cache
def _corpus_aik() -> TpmPublic:
    """The Azure AIK of the corpus request (the key its AIK certificate certifies)."""
    path = CORPUS / "maa" / "azure-guest-vm-derived" / "aik-pub.tpm2b"
    return parse_public_or_read_public(path.read_bytes())


def _tpm_seeds(corpus: Path) -> Iterator[tuple[str, bytes]]:
    d = corpus / "maa" / "azure-guest-vm-derived"

    def read(name: str) -> bytes:
        return (d / name).read_bytes()

    aik, enc = read("aik-pub.tpm2b"), read("enckey-pub.tpm2b")
    yield "quote", b"\x00" + read("pcr-quote.tpms_attest")
    yield "certify", b"\x00" + read("enckey-certify-info.tpms_attest")
    yield "aik-tpm2b", b"\x02" + aik
    yield "enc-tpm2b", b"\x02" + enc
    yield "aik-tpmt", b"\x03" + aik[2:]
    yield "enc-readpublic", b"\x04" + enc
    yield "aik-cert", b"\x06" + read("aik-cert.der")
    yield "aik-and-sig", b"\x07" + len(aik).to_bytes(2, "big") + aik + read("pcr-signature.bin")
    yield "enc-and-sig", (b"\x07" + len(enc).to_bytes(2, "big") + enc
                          + read("enckey-certify-signature.bin"))
    # TPMT_SIGNATURE and TPML_PCR_SELECTION seeds in the shapes a TPM returns
    yield "sig-rsassa", b"\x01" + bytes.fromhex("0014000b0100") + b"\x5a" * 256
    yield "sig-ecdsa", b"\x01" + bytes.fromhex("0018000b0020") + b"\x01" * 32 + \
        bytes.fromhex("0020") + b"\x02" * 32
    yield "pcr-selection", b"\x05" + bytes.fromhex("00000002000b03ffffff000403030000")
    quote = parse_tpms_attest(read("pcr-quote.tpms_attest")).quote
    if quote is not None:
        yield "quote-selection", b"\x05" + marshal_pcr_selections(quote.pcr_selections)


# --- AzureGuest requests ------------------------------------------------------


def _same_fields(a: UnverifiedAzureGuestRequest, b: UnverifiedAzureGuestRequest) -> bool:
    return (a.protocol_version, a.os_type, a.os_distro, a.os_version_major,
            a.os_version_minor, a.os_build, a.tcg_logs, dict(a.client_payload), a.tpm_info,
            a.isolation_type) == (b.protocol_version, b.os_type, b.os_distro,
                                  b.os_version_major, b.os_version_minor, b.os_build,
                                  b.tcg_logs, dict(b.client_payload), b.tpm_info,
                                  b.isolation_type)


def _azureguest(data: bytes) -> None:
    request = decode_request(data)
    # what the service and the agent do with a request: re-encode it (records, replays)
    attestation_info_json(request)
    again = decode_request(encode_request(request))
    if not _same_fields(request, again):
        raise AssertionError("an AzureGuest request does not survive encode/decode")


def _short_request(doc: dict[str, object]) -> dict[str, object]:
    """The request with its (opaque to the decoder) event log cut to a few records."""
    out = dict(doc)
    for key in out:
        if key.lower() == "tcglogs" and isinstance(out[key], str):
            raw = base64.b64decode(str(out[key]) + "==")
            out[key] = base64.b64encode(raw[:96]).decode()
    return out


def _azureguest_seeds(corpus: Path) -> Iterator[tuple[str, bytes]]:
    maa = corpus / "maa"
    inner_docs: list[tuple[str, dict[str, object]]] = []
    info = json.loads((maa / "azure-guest-vm-derived" / "attestation-info.json").read_bytes())
    inner_docs.append(("derived", info))
    for example in sorted(maa.glob("spec-*/**/AttestAzureGuestVm.json")):
        body = json.loads(example.read_bytes())["parameters"].get("body", {})
        for value in body.values() if isinstance(body, dict) else ():
            if isinstance(value, str):
                try:
                    inner = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(inner, dict):
                    name = f"{example.parent.parent.name}-{example.parent.name}"
                    inner_docs.append((name, inner))
    for name, doc in inner_docs:
        short = _short_request(doc)
        styled = json.dumps(short, indent="\t").encode()
        yield f"{name}-inner", styled
        yield f"{name}-inner-compact", json.dumps(short, separators=(",", ":")).encode()
        b64 = base64.urlsafe_b64encode(styled).rstrip(b"=").decode()
        yield f"{name}-envelope", json.dumps({"AttestationInfo": b64},
                                             separators=(",", ":")).encode()
        yield f"{name}-envelope-spaced", json.dumps({"attestationInfo": b64}).encode()


_AZUREGUEST_DICT = (*(
    f'"{k}"'.encode()
    for k in ("AttestationInfo", "AttestationProtocolVersion", "ClientPayload", "IsolationInfo",
              "Type", "Evidence", "OSBuild", "OSDistro", "OSType", "OSVersionMajor",
              "OSVersionMinor", "TcgLogs", "TpmInfo", "AikCert", "AikPub", "PcrQuote",
              "PcrSignature", "EncKeyPub", "EncKeyCertifyInfo", "EncKeyCertifyInfoSignature",
              "PcrSet", "PCRs", "Index", "Digest", "NotApplication", "TrustedLaunch", "2.0")
), b"\\ud800", b"\\u0000", b"==", b"-_", b"[[[[", b"{}", b"null", b"true", b"1e999")


# --- MAA policies ---------------------------------------------------------------


@functools.cache
def _claims() -> tuple[Claim, ...]:
    """Incoming claims of the shapes the service issues (booleans, integers, strings and
    the structured ``pcrs``/``events`` JSON claims), made here."""
    events = {"Events": [
        {"EventSeq": i, "PcrIndex": i % 8, "EventTypeString": "EV_EFI_VARIABLE_DRIVER_CONFIG",
         "ProcessedData": {"UnicodeName": "SecureBoot", "VariableData": "AQ"}}
        for i in range(8)
    ]}
    pcrs = {"pcrs": [{"index": i, "digest": f"{i:064x}"} for i in range(8)]}
    return (
        Claim.service("secureboot", True),
        Claim.service("x-ms-azurevm-is-windows", False),
        Claim.service("x-ms-azurevm-osversion-major", 22),
        Claim.service("x-ms-azurevm-osdistro", "Ubuntu"),
        Claim.service("x-ms-attestation-type", "azurevm"),
        Claim.service("x-ms-azurevm-bootdebug-enabled", False),
        Claim.service("pcrs", pcrs),  # type: ignore[arg-type]
        Claim.service("events", events),  # type: ignore[arg-type]
        Claim.custom("custom", "value"),
    )


def _policy(data: bytes) -> None:
    body: str | bytes = data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # a JWS payload carries the policy as JSON text, whose escapes make any code point,
        # a lone surrogate included: invalid UTF-8 stands in for them here (surrogateescape
        # turns each bad byte into one), so the str path is fuzzed as well as the bytes one
        body = data.decode("utf-8", "surrogateescape")
    document = parse_policy_document(body)
    policy_hash(document.text)
    compiled = compile_policy(document.text)
    evaluate(compiled, _claims())


def _policy_seeds(corpus: Path) -> Iterator[tuple[str, bytes]]:
    d = corpus / "maa" / "policies"
    for path in sorted(d.iterdir()):
        if path.suffix not in (".txt", ".jws") or "claims" in path.name:
            continue
        text = path.read_bytes()
        yield path.name, text
        if "__table__" in path.name or path.name.endswith("__rule.txt"):
            # a documentation fragment: also as a whole policy, so it reaches the evaluator
            yield f"{path.name}-whole", (b"version=1.2;\nauthorizationrules { => permit(); };"
                                         b"\nissuancerules {\n" + text + b"\n};\n")


_POLICY_DICT = tuple(
    f'"{k}"'.encode() if k.startswith("x-ms") else k.encode()
    for k in ("version=1.0;", "version=1.2;", "configurationrules", "authorizationrules",
              "issuancerules", "issue", "issueproperty", "add", "permit()", "deny()",
              "c:[type==", "value==", "valueType", "issuer==", "=>", "&&", "||", "!",
              "JmesPath(", "AppendString(", "NegateBool(", "ContainsOnlyValue(",
              "IsSubsetOf(", "JsonToClaimValue(", "type=", "value=", "c.value", "c.type",
              "AttestationService", "AttestationPolicy", "CustomClaim", "Integer",
              "Boolean", "String", "Json", "true", "false", "x-ms-azurevm-is-windows",
              "secureboot", "events", "pcrs", "@[?", "[*]", "length(", "\\\"", ";}")
)


# --- outcome events (service -> monitor) ------------------------------------------


def _outcome_seeds(corpus: Path) -> Iterator[tuple[str, bytes]]:
    """Outcome events as the service encodes them, their events described from real logs
    of the corpus (the monitor's JetStream ingester reads these)."""
    logs = sorted((corpus / "eventlogs" / "go-tpm-tools").glob("*.bin"))[:6]
    when = datetime(2026, 12, 3, tzinfo=UTC)
    for n, path in enumerate(logs):
        try:
            events = describe_events(parse_log(path.read_bytes()), frozenset(range(10)))
        except BootwatchError:
            continue
        pcrs = {p: f"{p + n:02x}" * 32 for p in range(10)}
        base = OutcomeEvent(
            event_id=f"seed-{n}", time=when, provider="shared", attestation_type="AzureGuest",
            verdict=Verdict.PERMIT, reason="permitted", policy_hash="h" * 43,
            vm_id=f"VM-{n}", pcrs=pcrs, events=events, reset_count=n + 1, secure_boot=True,
            claims=(("secureboot", True), ("x-ms-azurevm-is-windows", False)))
        yield f"{path.stem}-permit", encode_outcome(base)
        if n == 0:
            denied = OutcomeEvent(**{**base.__dict__, "event_id": "seed-deny",
                                     "verdict": Verdict.DENY, "reason": "denied by rule 4",
                                     "revoked": (RevokedItem(3, "bootmgfw.efi", "ab" * 32,
                                                             "in dbx"),)})
            yield f"{path.stem}-deny", encode_outcome(denied)
            rejected = OutcomeEvent(**{**base.__dict__, "event_id": "seed-rejected",
                                       "verdict": Verdict.EVIDENCE_REJECTED, "vm_id": None,
                                       "claimed_vm_id": "VM-0", "pcrs": {}, "events": (),
                                       "reason": "log_pcr_mismatch"})
            yield f"{path.stem}-rejected", encode_outcome(rejected)


@functools.cache
def _outcome_table() -> BootEventTable:
    """The decoder's table of one ingester, warmed with the seeds (so mutated inputs meet
    remembered events arrays), kept for the process as an ingester keeps its own."""
    table = BootEventTable()
    for _, seed in _outcome_seeds(CORPUS):
        decode_outcome(seed, shared=table)
    return table


def _outcome(data: bytes) -> None:
    """Decode as a JetStream ingester does (with its BootEventTable) and as the general
    route does: both must give the same event, or refuse with the same message."""
    general: OutcomeEvent | ProtocolError
    shared: OutcomeEvent | ProtocolError
    try:
        general = decode_outcome(data)
    except ProtocolError as exc:
        general = exc
    try:
        shared = decode_outcome(data, shared=_outcome_table())
    except ProtocolError as exc:
        shared = exc
    if isinstance(general, ProtocolError) or isinstance(shared, ProtocolError):
        if str(general) != str(shared):
            raise AssertionError(f"decoding with a BootEventTable gives {shared!r}, the "
                                 f"general route {general!r}")
        if isinstance(general, ProtocolError):
            raise general
    elif general != shared:
        raise AssertionError("decoding with a BootEventTable gives another event than the "
                             "general route")


_OUTCOME_DICT = (*(
    f'"{k}":'.encode()
    for k in ("schema", "event_id", "time", "verdict", "reason", "pcrs", "events", "index",
              "pcr", "type", "digest", "component", "claims", "revoked", "secure_boot")
), b'"events":[', b"}]", b"-0e-0", b"\\u0000", b"\\ud800", b"\\u0065", b"1e999", b"null")


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("eventlog", "TCG event log: framing, replay, PCR verification, event "
               "decoding, claims, boot state, revocation", 128 * 1024, _eventlog,
               _eventlog_seeds),
        Target("tpm", "TPM structures: TPMS_ATTEST, TPMT_SIGNATURE, TPM2B/TPMT_PUBLIC, "
               "ReadPublic, TPML_PCR_SELECTION, AIK certificate, signature checks", 4096, _tpm,
               _tpm_seeds),
        Target("azureguest", "AzureGuest request decoder (/attest/AzureGuest body), with "
               "re-encoding", 8192, _azureguest, _azureguest_seeds, _AZUREGUEST_DICT),
        Target("policy", "MAA policy upload document (text or JWS), parser and evaluator",
               16 * 1024, _policy, _policy_seeds, _POLICY_DICT),
        Target("outcome", "outcome event decoder (service -> monitor), with and without the "
               "JetStream ingester's table of remembered events, which must agree",
               32 * 1024, _outcome, _outcome_seeds, _OUTCOME_DICT),
    )
}
