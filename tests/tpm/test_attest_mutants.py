"""TPMS_ATTEST parsing at its limits, on bytes bootwatch did not marshal (issue 17).

The structures are written by hand (TPM 2.0 Part 2, 10.12.12: magic, type,
qualifiedSigner, extraData, clockInfo, firmwareVersion, attested) or by tpm2-pytss;
each size limit is tried at its boundary and one past it, and every refusal is checked
for the field and byte offset it names.
"""

from __future__ import annotations

import struct

import pytest
from tpm2_pytss.constants import TPM2_GENERATED, TPM2_ST
from tpm2_pytss.types import TPM2B_DATA, TPM2B_DIGEST, TPM2B_NAME, TPML_PCR_SELECTION, TPMS_ATTEST

from bootwatch.errors import TpmStructureError
from bootwatch.tpm.attest import (
    MAX_ATTEST_BYTES,
    CertifyInfo,
    ClockInfo,
    QuoteInfo,
    marshal_tpms_attest,
    parse_tpms_attest,
)
from bootwatch.tpm.constants import TPM_GENERATED_VALUE, TpmAlg, TpmSt
from bootwatch.tpm.errors import TpmValueError
from bootwatch.tpm.marshal import tpm2b, u64
from bootwatch.tpm.pcr import PcrSelection


def _b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _head(*, magic: int = 0xFF544347, st: int = 0x8018, signer: bytes = b"\x00\x0b" + bytes(32),
          extra: bytes = b"nonce", clock: int = 7, reset: int = 3, restart: int = 1,
          safe: int = 1, fw: int = 0x0102030405060708) -> bytes:
    return (struct.pack(">IH", magic, st) + _b(signer) + _b(extra)
            + struct.pack(">QIIBQ", clock, reset, restart, safe, fw))


SEL_0_7 = bytes.fromhex("00000001000b03ff0000")


def _quote(digest: bytes = bytes(32), sel: bytes = SEL_0_7, **kw: object) -> bytes:
    return _head(**kw) + sel + _b(digest)  # type: ignore[arg-type]


def _certify(name: bytes = b"\x00\x0b" + bytes(32), qname: bytes = b"\x00\x0b" + b"\x01" * 32,
             **kw: object) -> bytes:
    return _head(st=0x8017, **kw) + _b(name) + _b(qname)  # type: ignore[arg-type]


def _err(data: bytes) -> TpmStructureError:
    with pytest.raises(TpmStructureError) as info:
        parse_tpms_attest(data)
    assert info.value.structure == "TPMS_ATTEST"
    return info.value


# offsets in _head() with the default 34-byte signer and 5-byte extraData
SIGNER_AT, EXTRA_AT, SAFE_AT, BODY_AT = 6, 42, 65, 74


def test_every_field_of_a_hand_written_quote() -> None:
    a = parse_tpms_attest(_quote(b"\x5a" * 32))
    assert a.magic == TPM_GENERATED_VALUE and a.type == TpmSt.ATTEST_QUOTE
    assert a.qualified_signer == b"\x00\x0b" + bytes(32) and a.extra_data == b"nonce"
    assert (a.clock_info.clock, a.clock_info.reset_count, a.clock_info.restart_count,
            a.clock_info.safe) == (7, 3, 1, True)
    assert a.firmware_version == 0x0102030405060708
    assert a.quote is not None and a.certify is None
    assert a.quote.pcr_selections == (PcrSelection(TpmAlg.SHA256, tuple(range(8))),)
    assert a.quote.pcr_digest == b"\x5a" * 32
    assert parse_tpms_attest(_quote(safe=0)).clock_info.safe is False


def test_every_field_of_a_hand_written_certify() -> None:
    a = parse_tpms_attest(_certify())
    assert a.type == TpmSt.ATTEST_CERTIFY and a.quote is None and a.certify is not None
    assert a.certify.name == b"\x00\x0b" + bytes(32)
    assert a.certify.qualified_name == b"\x00\x0b" + b"\x01" * 32


def test_a_quote_marshalled_by_tpm2_pytss() -> None:
    att = TPMS_ATTEST()
    att.magic = TPM2_GENERATED.VALUE
    att.type = TPM2_ST.ATTEST_QUOTE
    att.qualifiedSigner = TPM2B_NAME(b"\x00\x0b" + b"\x11" * 32)
    att.extraData = TPM2B_DATA(b"\x22" * 64)
    att.clockInfo.clock = 123456
    att.clockInfo.resetCount = 9
    att.clockInfo.restartCount = 2
    att.clockInfo.safe = 1
    att.firmwareVersion = 42
    att.attested.quote.pcrSelect = TPML_PCR_SELECTION.parse("sha256:8,9,16,23")
    att.attested.quote.pcrDigest = TPM2B_DIGEST(b"\x33" * 64)
    a = parse_tpms_attest(bytes(att.marshal()))
    assert a.extra_data == b"\x22" * 64 and a.clock_info.reset_count == 9
    assert a.quote is not None
    assert a.quote.pcr_selections == (PcrSelection(TpmAlg.SHA256, (8, 9, 16, 23)),)
    assert a.quote.pcr_digest == b"\x33" * 64


@pytest.mark.parametrize("safe", [2, 3, 0x80, 0xFF])
def test_clock_safe_is_a_yes_no(safe: int) -> None:
    e = _err(_quote(safe=safe))
    assert (e.field, e.offset) == ("clockInfo.safe", SAFE_AT)
    assert e.problem == f"TPMI_YES_NO value {safe}"


def test_attest_size_limit_boundary() -> None:
    pad = MAX_ATTEST_BYTES - len(_quote())
    # pad inside extraData is refused for its own limit first; use the whole-size check
    exact = _quote() + bytes(pad)
    assert len(exact) == MAX_ATTEST_BYTES
    e = _err(exact)  # fits the size limit: fails later, on its trailing bytes
    assert e.field == "(end)"
    over = exact + b"\x00"
    e = _err(over)
    assert (e.field, e.offset) == ("(whole)", 0)
    assert e.problem == f"{MAX_ATTEST_BYTES + 1} bytes exceeds the maximum {MAX_ATTEST_BYTES}"


def test_name_and_data_size_limits_at_the_boundary() -> None:
    name66 = b"\x00\x0d" + bytes(64)  # sha512 name: 2 + 64 bytes, the largest
    assert parse_tpms_attest(_quote(signer=name66)).qualified_signer == name66
    e = _err(_quote(signer=name66 + b"\x00"))
    assert (e.field, e.offset) == ("qualifiedSigner.size", SIGNER_AT)
    assert e.problem == "size 67 exceeds the maximum 66"
    assert parse_tpms_attest(_quote(extra=bytes(64))).extra_data == bytes(64)
    e = _err(_quote(extra=bytes(65)))
    assert (e.field, e.offset) == ("extraData.size", EXTRA_AT)
    assert e.problem == "size 65 exceeds the maximum 64"
    cert = parse_tpms_attest(_certify(name=name66, qname=name66))
    assert cert.certify is not None and cert.certify.name == name66
    e = _err(_certify(name=name66 + b"\x01"))
    assert (e.field, e.offset) == ("attested.certify.name.size", BODY_AT)
    e = _err(_certify(qname=name66 + b"\x01"))
    assert (e.field, e.offset) == ("attested.certify.qualifiedName.size", BODY_AT + 36)


@pytest.mark.parametrize("size", [20, 32, 48, 64])
def test_every_digest_size_up_to_sha512(size: int) -> None:
    a = parse_tpms_attest(_quote(b"\x01" * size))
    assert a.quote is not None and a.quote.pcr_digest == b"\x01" * size


@pytest.mark.parametrize(("size", "problem"), [(0, "0 bytes is no digest size"),
                                               (31, "31 bytes is no digest size"),
                                               (65, "size 65 exceeds the maximum 64")])
def test_pcr_digest_of_no_digest_size(size: int, problem: str) -> None:
    e = _err(_quote(b"\x01" * size))
    field = "attested.quote.pcrDigest" + (".size" if size > 64 else "")
    assert (e.field, e.offset, e.problem) == (field, BODY_AT + len(SEL_0_7), problem)


def test_unknown_type_names_the_type_field() -> None:
    e = _err(_head(st=0x8014) + bytes(4))
    assert (e.field, e.offset) == ("type", 4)
    assert e.problem == ("attestation type 0x8014 is neither a quote (0x8018) nor a certify "
                         "(0x8017)")


def test_trailing_bytes_after_a_quote_or_certify() -> None:
    for data in (_quote() + b"\x00", _certify() + b"\x00\x00"):
        e = _err(data)
        assert (e.field, e.offset) == ("(end)", len(data) - (1 if data[4:6] == b"\x80\x18"
                                                             else 2))


def test_truncation_names_the_field() -> None:
    full = _quote()
    cases = {3: ("magic", 0), 5: ("type", 4), 7: ("qualifiedSigner.size", 6),
             EXTRA_AT + 1: ("extraData.size", EXTRA_AT), EXTRA_AT + 9: ("clockInfo.clock", 49),
             59: ("clockInfo.resetCount", 57), 63: ("clockInfo.restartCount", 61),
             SAFE_AT: ("clockInfo.safe", SAFE_AT), SAFE_AT + 3: ("firmwareVersion", 66),
             BODY_AT + 2: ("attested.quote.pcrSelect.count", BODY_AT)}
    for cut, (field, offset) in cases.items():
        e = _err(full[:cut])
        assert (e.field, e.offset) == (field, offset), cut


def test_raw_is_the_signed_bytes() -> None:
    data = _quote()
    assert parse_tpms_attest(data).raw == data


@pytest.mark.parametrize("safe", [0, 1])
def test_test_builder_matches_hand_written_bytes(safe: int) -> None:
    # marshal_tpms_attest builds the forged-evidence suite's structures: it must write
    # exactly what a TPM writes, field by field.
    common = {"magic": 0xFF544347, "qualified_signer": b"\x00\x0b" + bytes(32),
              "extra_data": b"nonce", "firmware_version": 0x0102030405060708,
              "clock_info": ClockInfo(7, 3, 1, bool(safe))}
    quote = marshal_tpms_attest(attest_type=0x8018, attested=QuoteInfo(
        (PcrSelection(TpmAlg.SHA256, tuple(range(8))),), b"\x5a" * 32), **common)  # type: ignore[arg-type]
    assert quote == _quote(b"\x5a" * 32, safe=safe)
    cert = marshal_tpms_attest(attest_type=0x8017, attested=CertifyInfo(
        b"\x00\x0b" + bytes(32), b"\x00\x0b" + b"\x01" * 32), **common)  # type: ignore[arg-type]
    assert cert == _certify(safe=safe)


def test_unsigned_64_bit_fields_and_tpm2b_limits() -> None:
    a = parse_tpms_attest(_quote(clock=2**64 - 1, fw=2**63))
    assert a.clock_info.clock == 2**64 - 1 and a.firmware_version == 2**63
    assert u64(2**64 - 1) == b"\xff" * 8 and u64(2**63) == b"\x80" + bytes(7)
    with pytest.raises(TpmValueError):
        u64(2**64)
    assert tpm2b(bytes(0xFFFF)) == b"\xff\xff" + bytes(0xFFFF)
    with pytest.raises(TpmValueError):
        tpm2b(bytes(0x10000))


def test_truncated_tpm2b_body_names_its_field() -> None:
    data = _quote()
    e = _err(data[:EXTRA_AT + 2 + 3])  # extraData says 5 bytes, 3 are there
    assert (e.field, e.offset) == ("extraData", EXTRA_AT + 2)
    assert e.problem == "needs 5 bytes, only 3 left (truncated)"


def test_digest_of_an_uncomputable_hash_says_which_are() -> None:
    from bootwatch.tpm.constants import digest

    with pytest.raises(TpmValueError) as info:
        digest(TpmAlg.SM3_256, b"x")
    assert str(info.value) == ("hash algorithm TPM_ALG_SM3_256 is not supported (SHA-1, "
                               "SHA-256, SHA-384 and SHA-512 are)")
