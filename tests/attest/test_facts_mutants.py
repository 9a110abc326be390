"""Boot facts from crafted logs and certificates (issue 17).

The Windows SIPA records, UEFI variables and logs here are written byte by byte
(Microsoft's SIPA layout: UINT32 type, UINT32 size, body, aggregations nesting records;
UEFI_VARIABLE_DATA; TCG PFP records), so each flag, limit and fail-closed rule of
bootwatch.attest.facts is pinned independently of the corpus.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bootwatch.attest import facts
from bootwatch.attest.caches import CertificateCache, VerifierCaches
from bootwatch.attest.claims import WindowsBootConfig
from bootwatch.encoding import sha1_thumbprint
from bootwatch.eventlog import parse_log
from bootwatch.lru import BoundedLru

SHA1, SHA256 = 0x0004, 0x000B
EV_EVENT_TAG, NO_ACTION = 0x6, 0x3
EV_BOOT_APP, EV_DRIVER_CONFIG, EV_AUTHORITY = 0x80000003, 0x80000001, 0x800000E0


def _header() -> bytes:
    body = (b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 2)
            + struct.pack("<HHHH", SHA1, 20, SHA256, 32) + b"\x00")
    return struct.pack("<II20sI", 0, NO_ACTION, bytes(20), len(body)) + body


def _rec(pcr: int, etype: int, data: bytes) -> bytes:
    return (struct.pack("<III", pcr, etype, 2) + struct.pack("<H", SHA1)
            + hashlib.sha1(data).digest() + struct.pack("<H", SHA256)
            + hashlib.sha256(data).digest() + struct.pack("<I", len(data)) + data)


def _log(*records: bytes):  # type: ignore[no-untyped-def]
    return parse_log(_header() + b"".join(records))


def sipa(type_id: int, body: bytes) -> bytes:
    return struct.pack("<II", type_id, len(body)) + body


def agg(type_id: int, *records: bytes) -> bytes:
    return sipa(type_id, b"".join(records))


TRUSTBOUNDARY = 0x40010001  # an aggregation (bit 30)
LOADEDMODULE = 0x40010003
BOOTDEBUGGING, OSKERNELDEBUG, TESTSIGNING = 0x00040001, 0x00050001, 0x00050003
HYPERVISOR_DEBUG, FLIGHTSIGNING, HVCI, ELAM_KEYNAME = 0x0005000D, 0x00050021, 0x000A0007, 0x00090001
ALL = (12, 13, 14)


def _config(*events: tuple[int, bytes], attested=ALL) -> WindowsBootConfig:  # type: ignore[no-untyped-def]
    return facts.windows_boot_config(_log(*(_rec(p, EV_EVENT_TAG, d) for p, d in events)),
                                     attested)


def test_no_sipa_event_is_not_windows() -> None:
    assert _config() == WindowsBootConfig(quoted_all=True)
    assert _config(attested=(12, 13)) == WindowsBootConfig(quoted_all=False)
    assert _config((9, sipa(BOOTDEBUGGING, b"\x01"))) == WindowsBootConfig(quoted_all=True)
    # a record of another type in a SIPA PCR is not read as SIPA, and is named: on a
    # Windows boot it may be a SIPA record retyped to hide it (types are not measured)
    log = _log(_rec(12, 0x80000008, sipa(BOOTDEBUGGING, b"\x01")))
    assert facts.windows_boot_config(log, ALL) == WindowsBootConfig(quoted_all=True,
                                                                     foreign_event=1)
    log = _log(_rec(12, 0x00000004, b"\x00" * 4), _rec(13, 0x0000000D, b"x"))
    assert facts.windows_boot_config(log, ALL).foreign_event == 2


@pytest.mark.parametrize(
    ("type_id", "flag"),
    [(BOOTDEBUGGING, "boot_debugging"), (OSKERNELDEBUG, "kernel_debug"),
     (HYPERVISOR_DEBUG, "hypervisor_debug"), (TESTSIGNING, "test_signing"),
     (FLIGHTSIGNING, "flight_signing")],
)
def test_each_flag_inside_an_aggregation(type_id: int, flag: str) -> None:
    on = _config((12, agg(TRUSTBOUNDARY, sipa(type_id, b"\x01"))))
    assert on.present and on.attested and getattr(on, flag) is True
    off = _config((12, agg(TRUSTBOUNDARY, sipa(type_id, b"\x00"))))
    assert getattr(off, flag) is False
    # once set in any record it stays set
    both = _config((12, sipa(type_id, b"\x01")), (13, sipa(type_id, b"\x00")))
    assert getattr(both, flag) is True


@pytest.mark.parametrize(("body", "policy"), [
    (b"\x03", 3), (b"\x01\x02", 0x0201), (b"\x05\x00\x00\x00", 5),
    (bytes(7) + b"\x01", 1 << 56), (b"\x01\x02\x03", 0)])
def test_hvci_policy_sizes(body: bytes, policy: int) -> None:
    assert _config((13, sipa(HVCI, body))).hvci_policy == policy


def test_elam_and_skipped_module_lists() -> None:
    assert _config((12, agg(TRUSTBOUNDARY, sipa(ELAM_KEYNAME, b"k")))).elam is True
    assert _config((12, sipa(0x00090004, b""))).elam is True  # ELAM_MEASURED
    assert _config((12, sipa(BOOTDEBUGGING, b"\x00"))).elam is False
    # loaded-module lists are not descended into: a flag-looking record there counts not
    cfg = _config((12, agg(LOADEDMODULE, sipa(BOOTDEBUGGING, b"\x01"))))
    assert cfg.boot_debugging is False and cfg.attested is True
    # an aggregation that does not frame inside a skipped list is not read either
    assert _config((12, agg(LOADEDMODULE, b"\x01\x02"))).attested is True


def test_unquoted_sipa_pcr_is_present_not_attested() -> None:
    cfg = _config((12, sipa(BOOTDEBUGGING, b"\x00")), (14, sipa(TESTSIGNING, b"\x00")),
                  attested=(12, 13))
    assert cfg.present and not cfg.attested
    assert _config((14, sipa(TESTSIGNING, b"\x00")), attested=(14,)).attested


@pytest.mark.parametrize(
    "data",
    [b"\x01\x00\x04\x00\x01\x00\x00",  # 7 bytes: no room for a header
     sipa(BOOTDEBUGGING, b"\x01")[:-1],  # body shorter than its size
     agg(TRUSTBOUNDARY, b"\x01\x00\x04\x00\x05\x00\x00\x00\x01"),  # nested record too short
     ],
    ids=["short-header", "short-body", "bad-nested"],
)
def test_sipa_that_does_not_frame_fails_closed(data: bytes) -> None:
    cfg = _config((12, data))
    assert cfg.present and not cfg.attested


def test_sipa_nesting_depth_limit() -> None:
    inner = sipa(BOOTDEBUGGING, b"\x01")
    for _ in range(8):  # the record sits at depth 8, the deepest scanned
        inner = agg(TRUSTBOUNDARY, inner)
    ok = _config((12, inner))
    assert ok.attested and ok.boot_debugging
    deeper = _config((12, agg(TRUSTBOUNDARY, inner)))
    assert deeper.present and not deeper.attested


def test_exact_header_room() -> None:
    # a record of 8 header bytes and an empty body frames; a size one past the end does not
    assert _config((12, sipa(BOOTDEBUGGING, b""))).attested
    assert not _config((12, struct.pack("<II", BOOTDEBUGGING, 1))).attested


# --- small pure helpers -----------------------------------------------------------------------

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_enc_key_jwk() -> None:
    key = _key().public_key()
    jwk = facts.enc_key_jwk(key)
    n = key.public_numbers().n
    assert jwk == {"e": "AQAB", "key_ops": ["encrypt"], "kid": "TpmEphemeralEncryptionKey",
                   "kty": "RSA",
                   "n": base64.urlsafe_b64encode(n.to_bytes(256, "big")).rstrip(b"=").decode()}


def test_client_payload_and_pcrs_claims() -> None:
    assert facts.client_payload_claim({"nonce": "abc", "x": "é"}) == {
        "nonce": "YWJj", "x": base64.b64encode("é".encode()).decode()}
    assert facts.pcrs_json({7: b"\x07" * 32, 0: b"\x00" * 32}) == {"PCRs": [
        {"Index": 0, "Digests": {"SHA256": "00" * 32}},
        {"Index": 7, "Digests": {"SHA256": "07" * 32}}]}
    assert sha1_thumbprint(b"der") == hashlib.sha1(b"der").hexdigest()


def _cert(*cns: str) -> x509.Certificate:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]
                     or [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
            .sign(key, hashes.SHA256()))


def test_vm_id_from_certificate_subject() -> None:
    vm = uuid.uuid4()
    assert facts.vm_id_from_aik_certificate(_cert(str(vm))) == str(vm).upper()
    assert facts.vm_id_from_aik_certificate(_cert(f" {vm} ")) == str(vm).upper()
    assert facts.vm_id_from_aik_certificate(_cert("abc.TrustedVM.Azure.Microsoft",
                                                  str(vm))) == str(vm).upper()
    assert facts.vm_id_from_aik_certificate(_cert("abc.TrustedVM.Azure.Microsoft")) is None
    assert facts.vm_id_from_aik_certificate(_cert()) is None
    assert facts.vm_id_from_aik_certificate(None) is None


# --- Secure Boot variables -------------------------------------------------------------------

GLOBAL = uuid.UUID(facts.EFI_GLOBAL_VARIABLE).bytes_le
SECDB = uuid.UUID(facts.EFI_IMAGE_SECURITY_DATABASE).bytes_le
SHA256_LIST = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328").bytes_le


def var(name: str, data: bytes, guid: bytes = GLOBAL) -> bytes:
    n = name.encode("utf-16-le")
    return guid + struct.pack("<QQ", len(name), len(data)) + n + data


def hash_list(*digests: bytes) -> bytes:
    owner = bytes(16)
    return (SHA256_LIST + struct.pack("<III", 28 + 48 * len(digests), 0, 48)
            + b"".join(owner + d for d in digests))


def test_secure_boot_variable_measured_twice_is_undecoded() -> None:
    """Firmware measures each Secure Boot variable once; a second measurement is a db
    authority retyped as configuration (both bind their data) or a log that says two
    things, so the state is not decoded (it was: the first one counted)."""
    sb = facts.measured_secure_boot(_log(_rec(7, EV_DRIVER_CONFIG, var("SecureBoot", b"\x01")),
                                         _rec(7, EV_DRIVER_CONFIG, var("SecureBoot", b"\x00"))))
    assert not sb.decoded and sb.problems == ("SecureBoot (event 2): measured a second time",)
    sb = facts.measured_secure_boot(_log(_rec(7, EV_DRIVER_CONFIG, var("SecureBoot", b"\x00"))))
    assert sb.secure_boot is False
    # a SecureBoot variable of another vendor is not the Secure Boot variable
    sb = facts.measured_secure_boot(_log(_rec(7, EV_DRIVER_CONFIG,
                                              var("SecureBoot", b"\x01", SECDB))))
    assert sb.secure_boot is None
    # nor one measured into another PCR
    sb = facts.measured_secure_boot(_log(_rec(1, EV_DRIVER_CONFIG, var("SecureBoot", b"\x01"))))
    assert sb.secure_boot is None and sb.pk is None and sb.dbx_hashes is None


def test_dbx_and_db_hashes_and_boot_apps() -> None:
    d1, d2 = b"\x11" * 32, b"\x22" * 32
    sb = facts.measured_secure_boot(_log(
        _rec(7, EV_DRIVER_CONFIG, var("dbx", hash_list(d1, d2), SECDB)),
        _rec(7, EV_DRIVER_CONFIG, var("db", hash_list(d2), SECDB)),
        _rec(7, EV_DRIVER_CONFIG, var("PK", b"")),
        _rec(4, EV_BOOT_APP, b"app1"), _rec(4, EV_BOOT_APP, b"app2"),
        _rec(5, EV_BOOT_APP, b"not-pcr4")))
    assert sb.dbx_hashes == frozenset({d1, d2}) and sb.db_hashes == (d2,)
    assert sb.db_certs == () and sb.pk == () and sb.kek is None
    assert sb.boot_apps == (hashlib.sha256(b"app1").digest(), hashlib.sha256(b"app2").digest())
    assert sb.decoded and sb.problems == ()


def test_undecodable_variable_fails_closed() -> None:
    sb = facts.measured_secure_boot(_log(_rec(7, EV_DRIVER_CONFIG, b"\x00" * 10)))
    assert not sb.decoded
    assert sb.problems == ("event 1: variable event does not decode",)
    sb = facts.measured_secure_boot(_log(_rec(7, EV_DRIVER_CONFIG,
                                              var("db", b"\x01\x02\x03", SECDB))))
    assert not sb.decoded and sb.problems[0].startswith("db (event 1): ")
    assert sb.db_certs is None


def test_authority_events_count_only_for_uefi_db() -> None:
    sb = facts.measured_secure_boot(_log(
        _rec(7, EV_AUTHORITY, var("db", bytes(16) + b"rawcert", SECDB)),
        _rec(7, EV_AUTHORITY, var("Shim", bytes(16) + b"vendor", GLOBAL)),
        _rec(7, EV_AUTHORITY, var("db", bytes(16) + b"rawcert", SECDB))))
    assert len(sb.authorities) == 1 and sb.decoded


# --- more SIPA framing -----------------------------------------------------------------------

def test_sipa_records_after_an_aggregation_are_read() -> None:
    cfg = _config((12, agg(TRUSTBOUNDARY, sipa(ELAM_KEYNAME, b"k")) + sipa(TESTSIGNING, b"\x01")))
    assert cfg.test_signing is True and cfg.elam is True and cfg.attested


@pytest.mark.parametrize(
    "data",
    [sipa(BOOTDEBUGGING, b"\x00") + b"\x01" * 5,  # a second header cut short
     sipa(BOOTDEBUGGING, b"\x00") + struct.pack("<II", TESTSIGNING, 2) + b"\x01",  # body short
     struct.pack("<II", BOOTDEBUGGING, 0x80000000) + b"\x01" * 8,  # size with the top bit set
     struct.pack("<II", BOOTDEBUGGING, 0xFFFFFFF8) + b"\x01" * 8],
    ids=["second-header", "second-body", "size-2^31", "size-minus-8"],
)
def test_later_sipa_records_that_do_not_frame(data: bytes) -> None:
    cfg = _config((12, data))
    assert cfg.present and not cfg.attested


def test_sipa_event_after_other_events() -> None:
    log = _log(_rec(4, EV_BOOT_APP, b"app"), _rec(12, 0x80000008, b"x"),
               _rec(13, EV_EVENT_TAG, sipa(BOOTDEBUGGING, b"\x01")))
    cfg = facts.windows_boot_config(log, ALL)
    assert cfg.present and cfg.attested and cfg.boot_debugging


def test_b64url_integers() -> None:
    assert facts._b64url_uint(0) == "AA"
    assert facts._b64url_uint(65537) == "AQAB"
    # 0x5d7 -> bytes 05 d7 -> "Bdc"; 0x17 -> "Fw"; trailing X must survive
    assert facts._b64url_uint(0x5D7) == "Bdc"
    assert facts._b64url_uint(0x17) == "Fw"
    assert facts._b64url_uint(0x5D) == "XQ"


# --- more Secure Boot variables ------------------------------------------------------------------

X509_LIST = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le


def x509_list(*ders: bytes) -> bytes:
    # one EFI_SIGNATURE_LIST per certificate (each entry: owner GUID + DER)
    out = b""
    for d in ders:
        size = 16 + len(d)
        out += X509_LIST + struct.pack("<III", 28 + size, 0, size) + bytes(16) + d
    return out


def _der(c: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return c.public_bytes(serialization.Encoding.DER)


def test_certificates_in_db_dbx_and_authorities() -> None:
    ca = _der(_cert("Test CA"))
    bad = b"\x30\x03\x02\x01\x01"
    sb = facts.measured_secure_boot(_log(
        _rec(4, EV_BOOT_APP, b"app"),  # a boot application first: the rest is still read
        _rec(7, EV_DRIVER_CONFIG, var("SecureBoot", b"\x01")),
        _rec(7, EV_DRIVER_CONFIG, var("db", x509_list(ca), SECDB)),
        _rec(7, EV_DRIVER_CONFIG, var("dbx", x509_list(ca), SECDB)),
        _rec(7, EV_AUTHORITY, var("db", bytes(16) + ca, SECDB)),
        _rec(7, EV_AUTHORITY, var("db", bytes(16) + b"raw", GLOBAL)),  # wrong vendor: skipped
        _rec(7, EV_AUTHORITY, var("db", bytes(16), SECDB)),  # owner only, no data
        _rec(7, EV_AUTHORITY, var("db", bytes(16) + b"rawcert", SECDB))))
    thumb = hashlib.sha1(ca).hexdigest()
    assert sb.secure_boot is True and sb.decoded, sb.problems
    assert sb.db_certs == (thumb,) and sb.dbx_certs == frozenset({thumb})
    assert sb.authorities == (thumb, sha1_thumbprint(b"rawcert"))
    assert sb.boot_apps == (hashlib.sha256(b"app").digest(),)
    sb = facts.measured_secure_boot(_log(_rec(7, EV_DRIVER_CONFIG,
                                              var("KEK", x509_list(bad), GLOBAL))))
    assert not sb.decoded and sb.kek == ()
    assert sb.problems[0].startswith("KEK: an X.509 entry does not parse (")


# --- verified_boot and the boot-facts cache -------------------------------------------------

def _forged():  # type: ignore[no-untyped-def]
    import test_evidence_forged as forged  # tests/attest is on sys.path (conftest)
    return forged


def test_verified_boot_reads_only_verified_fields() -> None:
    from dataclasses import replace

    f = _forged()
    vm = uuid.uuid4()
    aik_cert = f._der(f._cert(str(vm), f.AIK, ("Test vTPM CA", f.CA_KEY), ca=False))
    req = f.forge(aik_cert=aik_cert)
    ev = f.verify(req)
    assert ev.passed
    boot = facts.verified_boot(ev, req)
    assert boot.vm_id == str(vm).upper()
    assert boot.attested_pcrs == tuple(sorted(f.REAL_PCRS))
    assert boot.pcr_values == dict(f.REAL_PCRS)
    assert boot.protocol_version == str(req.protocol_version) and boot.protocol_version
    assert boot.client_payload == facts.client_payload_claim(req.client_payload)
    assert boot.enc_key.public_numbers() == f.ENC.public_key().public_numbers()
    assert boot.events is not None and boot.events == facts.events_claim(
        ev.verified_event_log, pcrs=boot.attested_pcrs)
    assert boot.secure_boot == facts.measured_secure_boot(ev.verified_event_log)
    assert boot.windows == facts.windows_boot_config(ev.verified_event_log, boot.attested_pcrs)
    assert boot.windows.present and boot.windows.attested
    assert facts.verified_boot(ev, req, with_events=False).events is None
    # without a verified AIK chain there is no VM id
    assert facts.verified_boot(replace(ev, verified_aik_chain=None), req).vm_id is None
    for missing in ("verified_event_log", "verified_pcrs", "verified_enc_key"):
        with pytest.raises(facts.BootFactsError) as info:
            facts.verified_boot(replace(ev, **{missing: None}), req)
        assert str(info.value) == ("evidence is not verified (log, PCRs or ephemeral key "
                                   "missing)")


def test_verified_boot_refuses_a_non_rsa_key() -> None:
    from dataclasses import replace

    from bootwatch.tpm.public import parse_tpm2b_public

    f = _forged()
    import test_evidence_mutants as em

    req = f.forge()
    ev = f.verify(req)
    ecc = parse_tpm2b_public(em.tpm2b(em._ecc_enc_pub()))
    with pytest.raises(facts.BootFactsError) as info:
        facts.verified_boot(replace(ev, verified_enc_key=ecc), req)
    assert str(info.value) == "EncKeyPub: the ephemeral key is not RSA (MAA wraps with RSAES)"


def test_boot_facts_are_keyed_by_log_digest_and_pcrs() -> None:
    from dataclasses import replace

    f = _forged()
    req = f.forge()
    ev = f.verify(req)
    caches = VerifierCaches(boot_facts=BoundedLru(2))
    one = facts.verified_boot(ev, req, caches=caches)
    assert facts.verified_boot(ev, req, caches=caches).secure_boot is one.secure_boot  # kept
    # without the caller's caches nothing is kept (the module holds no state)
    assert facts.verified_boot(ev, req).secure_boot is not one.secure_boot
    # another log (another digest) with the same PCRs: its own facts
    other_log = _log(_rec(7, EV_DRIVER_CONFIG, var("SecureBoot", b"\x00")))
    ev2 = replace(ev, verified_event_log=other_log, event_log_sha256=b"\x02" * 32)
    two = facts.verified_boot(ev2, req, with_events=False, caches=caches)
    assert two.secure_boot.secure_boot is False and one.secure_boot.secure_boot is True
    assert not two.windows.present
    # no digest from the evidence: the request's log bytes are hashed
    ev3 = replace(ev, event_log_sha256=b"")
    three = facts.verified_boot(ev3, req, with_events=False, caches=caches)
    assert three.secure_boot is one.secure_boot  # same bytes, same digest, same entry
    keys = caches.boot_facts.ordered_keys()
    assert len(keys) == 2
    assert keys[0][0] == b"\x02" * 32  # the older entry (hit moved the first to the end)
    assert keys[1][0] == hashlib.sha256(bytes(req.tcg_logs)).digest()
    # a third key evicts the oldest
    ev4 = replace(ev2, event_log_sha256=b"\x04" * 32)
    facts.verified_boot(ev4, req, with_events=False, caches=caches)
    assert [k[0] for k in caches.boot_facts.ordered_keys()] == [
        hashlib.sha256(bytes(req.tcg_logs)).digest(), b"\x04" * 32]


def test_policy_claims_are_service_claims() -> None:
    from bootwatch.attest.claims import AzureVmClaims
    from bootwatch.protocol import token as t

    azurevm = AzureVmClaims({"x-ms-azurevm-vmid": "ID", t.RUNTIME: {"keys": []},
                             "secureboot": True})
    out = facts.policy_claims(azurevm, events={"e": 1}, pcrs={"PCRs": []})
    assert [(c.type, c.value, c.read_only) for c in out] == [
        ("x-ms-azurevm-vmid", "ID", False), ("secureboot", True, False),
        ("events", {"e": 1}, False), ("pcrs", {"PCRs": []}, True)]
    assert all(c.issuer.value == "AttestationService" for c in out)
    out = facts.policy_claims(azurevm, events=None, pcrs={"PCRs": []})
    assert [c.type for c in out] == ["x-ms-azurevm-vmid", "secureboot", "pcrs"]


def test_secure_boot_certificates_are_read_once_per_verifier() -> None:
    """A new boot of a fleet's image carries the same db/KEK/PK certificates: the
    verifier's cache reads each once, and the facts are the same with or without it."""
    f = _forged()
    req = f.forge()
    ev = f.verify(req)
    log = ev.verified_event_log
    assert log is not None
    cache: CertificateCache = BoundedLru(64)
    first = facts.measured_secure_boot(log, cache)
    assert first == facts.measured_secure_boot(log)
    kept = cache.ordered_keys()
    assert kept and all(isinstance(k, bytes) for k in kept)
    again = facts.measured_secure_boot(log, cache)
    assert again == first and cache.ordered_keys() == kept
