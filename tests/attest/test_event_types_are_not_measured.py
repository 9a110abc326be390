"""A record's event type is not measured: claims must not depend on it (found in review).

The TPM extends a record's digest, never its type, so a client can retype any record
and the replay still matches the quote.  Each test takes the real Azure Trusted Launch
request (or a Windows boot forged from it with the forged-evidence suite's software AIK,
which signs exactly the quote a vTPM would: the PCR values do not change), changes one
record's type, and checks the verdict is what the measurements say.  Before the fix:

- the boot manager retyped from EV_EFI_BOOT_SERVICES_APPLICATION to a driver escaped the
  DBX check (``dbxvalidated`` true, permitted), as did the db authority retyped to EV_IPL;
- a Windows TESTSIGNING record retyped from EV_EVENT_TAG to EV_IPL was skipped
  (``signingdisabled`` true, permitted);
- a Windows boot that quoted PCR 0-7 only and dropped its PCR 11-14 records read as "no
  debugger, no test signing".
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import jwt
import test_evidence_forged as forged  # tests/attest is on sys.path (conftest)
from attest_corpus import SECUREBOOT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.attest.claims import MS_WINDOWS_PCA_2011, DbxReference, dbx_reference_from_json
from bootwatch.attest.pipeline import (
    AttestationOutcome,
    ProviderInputs,
    Verdict,
    attest_azure_guest,
)
from bootwatch.eventlog import parse_log, replay
from bootwatch.policy import default_azureguest_policy
from bootwatch.policy.compiler import compile_policy
from bootwatch.policy.hashes import policy_hash
from bootwatch.protocol import token as t
from bootwatch.protocol.azureguest import AzureGuestRequest, encode_request
from bootwatch.tpm.aik import TrustAnchors
from bootwatch.tpm.pcr import PcrSelection

AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RAW = forged.REAL.tcg_logs
LOG = parse_log(RAW)
SHA256 = 0x000B
EV_EVENT_TAG, EV_IPL, EV_BOOT_SERVICES_DRIVER = 0x6, 0xD, 0x80000004
BOOTMGR = next(e for e in LOG.events if e.pcr == 4 and e.event_type == 0x80000003)
AUTHORITY = next(e for e in LOG.events if e.pcr == 7 and e.event_type == 0x800000E0)


def _inputs(dbx: DbxReference | None = None) -> ProviderInputs:
    text = default_azureguest_policy()
    dbx = dbx or dbx_reference_from_json(
        (SECUREBOOT / "dbx_info_msft_latest.json").read_bytes(), source="dbx")
    return ProviderInputs(
        issuer="https://bw.test", policy=compile_policy(text), policy_hash=policy_hash(text),
        sign=lambda c: jwt.encode(dict(c), KEY, algorithm="RS256", headers={"kid": "k"}),
        trust_anchors=TrustAnchors(()), dbx_reference=dbx, require_aik_certificate=False)


def _attest(request: AzureGuestRequest, dbx: DbxReference | None = None) -> AttestationOutcome:
    return attest_azure_guest(encode_request(request), provider=_inputs(dbx), now=AT)


def _retype(raw: bytes, offset: int, event_type: int) -> bytes:
    """The log with one record's type changed (its digests, so the PCRs, untouched)."""
    out = bytearray(raw)
    struct.pack_into("<I", out, offset + 4, event_type)
    return bytes(out)


def _pcrs(raw: bytes) -> dict[int, bytes]:
    values = replay(parse_log(raw), banks=(SHA256,)).pcrs[SHA256]
    return {p: values[p] for p in forged.REAL_PCRS}


def _claim(out: AttestationOutcome, claim: str) -> object:
    assert out.azurevm is not None, out.reason
    return out.azurevm.claims[claim]


def test_a_retyped_boot_application_is_still_checked_against_the_dbx() -> None:
    revoking = DbxReference(source="test dbx",
                            revoked_images=frozenset({BOOTMGR.digests[SHA256]}))
    assert _attest(forged.REAL, revoking).verdict is Verdict.DENY
    retyped = _retype(RAW, BOOTMGR.offset, EV_BOOT_SERVICES_DRIVER)
    out = _attest(replace(forged.REAL, tcg_logs=retyped), revoking)
    assert out.verdict is Verdict.DENY and _claim(out, t.DBX_VALIDATED) is False, out.reason


def test_a_retyped_db_authority_leaves_the_secure_boot_state_undecoded() -> None:
    pca_revoked = DbxReference(source="CVE-2023-24932 mitigation",
                               revoked_cert_thumbprints=frozenset({MS_WINDOWS_PCA_2011}),
                               enforce_certificates=True)
    assert _attest(forged.REAL, pca_revoked).verdict is Verdict.DENY
    for event_type in (EV_IPL, 0x80000001):  # EV_IPL, and a second "db" configuration
        retyped = _retype(RAW, AUTHORITY.offset, event_type)
        out = _attest(replace(forged.REAL, tcg_logs=retyped), pca_revoked)
        assert out.verdict is Verdict.DENY, (event_type, out.reason)
        assert _claim(out, t.DBX_VALIDATED) is False


def _testsigning_on() -> tuple[bytes, int]:
    """The real log with TESTSIGNING on in its PCR 12 SIPA record (digests recomputed as
    Windows measures SIPA records: the hash of the data); that record's offset."""
    event = next(e for e in LOG.events if e.pcr == 12 and e.event_type == EV_EVENT_TAG)
    at = event.data.find(struct.pack("<II", 0x00050003, 1))  # TESTSIGNING, one byte
    assert at > 0 and event.data[at + 8] == 0
    data = event.data[:at + 8] + b"\x01" + event.data[at + 9:]
    sizes = {a.alg_id: a.size for a in LOG.algorithms}
    names = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
    pcr, etype, count = struct.unpack_from("<III", RAW, event.offset)
    pos, digests = event.offset + 12, b""
    for _ in range(count):
        (alg,) = struct.unpack_from("<H", RAW, pos)
        pos += 2 + sizes[alg]
        digests += struct.pack("<H", alg) + hashlib.new(names[alg], data).digest()
    (size,) = struct.unpack_from("<I", RAW, pos)
    record = struct.pack("<III", pcr, etype, count) + digests + struct.pack("<I", len(data))
    return RAW[:event.offset] + record + data + RAW[pos + 4 + size:], event.offset


def test_a_retyped_sipa_record_does_not_hide_test_signing() -> None:
    on, offset = _testsigning_on()
    pcrs = _pcrs(on)
    out = _attest(forged.forge(pcrs=pcrs, log=on))
    assert out.verdict is Verdict.DENY and _claim(out, t.TESTSIGNING_ENABLED) is True
    retyped = _retype(on, offset, EV_IPL)
    assert _pcrs(retyped) == pcrs  # the same PCRs: the same quote
    out = _attest(forged.forge(pcrs=pcrs, log=retyped))
    assert out.verdict is Verdict.DENY, out.reason
    assert _claim(out, t.SIGNING_DISABLED) is False
    assert out.azurevm is not None
    assert "another type than EV_EVENT_TAG" in out.azurevm.decision(t.SIGNING_DISABLED).reason


def test_a_windows_boot_quoting_no_sipa_pcr_is_not_read_as_signing_off() -> None:
    on, _ = _testsigning_on()
    low = {p: v for p, v in _pcrs(on).items() if p < 8}
    events = parse_log(on).events
    kept = bytearray(on[:events[1].offset])  # the header record
    for n, e in enumerate(events[1:], start=1):
        end = events[n + 1].offset if n + 1 < len(events) else len(on)
        if e.pcr < 8:
            kept += on[e.offset:end]
    out = _attest(forged.forge(pcrs=low, log=bytes(kept),
                               selection=(PcrSelection(SHA256, tuple(range(8))),)))
    assert _claim(out, t.IS_WINDOWS) is True and _claim(out, t.ATTESTED_PCRS) == list(range(8))
    assert out.verdict is Verdict.DENY, out.reason
    assert _claim(out, t.DEBUGGERS_DISABLED) is False and _claim(out, t.SIGNING_DISABLED) is False


# --- second review: what else in a record is not measured -------------------------------

PCA_REVOKED = DbxReference(source="CVE-2023-24932 mitigation",
                           revoked_cert_thumbprints=frozenset({MS_WINDOWS_PCA_2011}),
                           enforce_certificates=True)


def _renamed(raw: bytes, event: Any, name: str, guid: uuid.UUID) -> bytes:
    """The record's data as a new UEFI_VARIABLE_DATA (``guid``, ``name``) whose
    VariableData is the old data: for a variable event hashed over its data only, the
    digest still holds."""
    sizes = {a.alg_id: a.size for a in LOG.algorithms}
    _, _, count = struct.unpack_from("<III", raw, event.offset)
    pos = event.offset + 12
    for _ in range(count):
        (alg,) = struct.unpack_from("<H", raw, pos)
        pos += 2 + sizes[alg]
    (size,) = struct.unpack_from("<I", raw, pos)
    old = raw[pos + 4:pos + 4 + size]
    new = guid.bytes_le + struct.pack("<QQ", len(name), len(old)) + name.encode(
        "utf-16-le") + old
    return raw[:pos] + struct.pack("<I", len(new)) + new + raw[pos + 4 + size:]


def test_a_db_authority_renamed_over_its_measured_data_is_not_trusted() -> None:
    """Found in review: the replay took a variable event's digest over its VariableData
    alone (as for EV_EFI_VARIABLE_BOOT), so the name and GUID were not measured, and the
    db authority renamed "Shim" vanished from the checks (permitted, dbxvalidated)."""
    assert _attest(forged.REAL, PCA_REVOKED).verdict is Verdict.DENY
    renamed = _renamed(RAW, AUTHORITY, "Shim",
                       uuid.UUID("605dab50-e046-4300-abb6-3dd810dd8b23"))
    assert _pcrs(renamed) == _pcrs(RAW)  # the same PCRs: the genuine quote still fits
    out = _attest(replace(forged.REAL, tcg_logs=renamed), PCA_REVOKED)
    assert out.verdict is Verdict.EVIDENCE_REJECTED and out.failed_check == "log_replay"
    assert "name and GUID" in out.reason, out.reason


def test_a_record_retyped_to_a_separator_or_an_action_hides_nothing() -> None:
    """Found in review: a SIPA record or a db authority is measured as the hash of its
    data, as a separator or an action is, so retyped to one it passed the replay and was
    skipped as harmless (test signing off, dbxvalidated)."""
    on, offset = _testsigning_on()
    pcrs = _pcrs(on)
    out = _attest(forged.forge(pcrs=pcrs, log=_retype(on, offset, 0x4)))
    assert out.verdict is Verdict.DENY and _claim(out, t.SIGNING_DISABLED) is False
    for event_type in (0x4, 0x80000007):
        retyped = _retype(RAW, AUTHORITY.offset, event_type)
        out = _attest(replace(forged.REAL, tcg_logs=retyped), PCA_REVOKED)
        assert out.verdict is Verdict.DENY and _claim(out, t.DBX_VALIDATED) is False


def test_a_junk_request_names_no_vm() -> None:
    """Found in review: the claimed VM id (what the monitor attributes an
    evidence_rejected outcome to) was read from any certificate, even one for another key
    in a request whose signature verified nothing."""
    from cryptography.hazmat.primitives.asymmetric import ec

    victim = "0000BEEF-0000-4000-8000-00000000BEEF"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, victim)])
    now = datetime(2025, 3, 1, tzinfo=UTC)
    junk_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                 .public_key(key.public_key()).serial_number(1)
                 .not_valid_before(now).not_valid_after(now.replace(year=2026))
                 .sign(key, hashes.SHA256()))
    info = forged.REAL.tpm_info
    bad_signature = info.pcr_signature[:-1] + bytes([info.pcr_signature[-1] ^ 1])
    for cert in (junk_cert.public_bytes(serialization.Encoding.DER), info.aik_cert):
        junk = replace(forged.REAL, tpm_info=replace(info, aik_cert=cert,
                                                     pcr_signature=bad_signature))
        out = _attest(junk)
        assert out.verdict is Verdict.EVIDENCE_REJECTED and out.claimed_vm_id is None
