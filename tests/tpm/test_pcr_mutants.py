"""PCR selections pinned against bytes bootwatch did not make (issue 17).

Every expected TPML_PCR_SELECTION here is either written out by hand from the TPM 2.0
spec (Part 2, 10.6.1: hash UINT16, sizeofSelect UINT8, pcrSelect bitmap with PCR n at
byte n/8, bit n%8) or marshalled by tpm2-pytss, never by bootwatch.tpm.pcr's own
builder, so a wrong bitmap for PCR 8 or PCRs 16-23 cannot hide behind a shared bug.
Each error is checked for its structure, field and byte offset: they are what a person
reads to find the bad byte.
"""

from __future__ import annotations

import pytest
from tpm2_pytss.types import TPML_PCR_SELECTION

from bootwatch.errors import TpmStructureError
from bootwatch.tpm.constants import TpmAlg
from bootwatch.tpm.errors import TpmValueError
from bootwatch.tpm.pcr import (
    PcrSelection,
    marshal_pcr_selections,
    parse_pcr_selections,
)

SHA1, SHA256 = int(TpmAlg.SHA1), int(TpmAlg.SHA256)


def _pytss(spec: str) -> bytes:
    return bytes(TPML_PCR_SELECTION.parse(spec).marshal())


@pytest.mark.parametrize(
    ("selections", "spec"),
    [
        ((PcrSelection(SHA256, (8,)),), "sha256:8"),
        ((PcrSelection(SHA256, (9,)),), "sha256:9"),
        ((PcrSelection(SHA256, (8, 9)),), "sha256:8,9"),
        ((PcrSelection(SHA256, (16,)),), "sha256:16"),
        ((PcrSelection(SHA256, (17, 18, 19, 20, 21, 22, 23)),), "sha256:17,18,19,20,21,22,23"),
        ((PcrSelection(SHA256, (23,)),), "sha256:23"),
        ((PcrSelection(SHA256, tuple(range(24))),), "sha256:" + ",".join(map(str, range(24)))),
        ((PcrSelection(SHA256, (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14)),),
         "sha256:0,1,2,3,4,5,6,7,11,12,13,14"),
        ((PcrSelection(SHA1, (7, 15)), PcrSelection(SHA256, (8, 16, 23))),
         "sha1:7,15+sha256:8,16,23"),
    ],
    ids=["pcr8", "pcr9", "pcr8-9", "pcr16", "pcr17-23", "pcr23", "all24", "windows", "two-banks"],
)
def test_marshal_and_parse_agree_with_tpm2_pytss(selections: tuple[PcrSelection, ...],
                                                 spec: str) -> None:
    want = _pytss(spec)
    assert marshal_pcr_selections(selections) == want
    assert parse_pcr_selections(want) == selections


def test_hand_written_bitmaps() -> None:
    # sha256 (0x000b), sizeofSelect 3; PCR 8 is byte 1 bit 0, PCR 23 byte 2 bit 7.
    assert PcrSelection(SHA256, (8,)).marshal() == bytes.fromhex("000b03000100")
    assert PcrSelection(SHA256, (16, 23)).marshal() == bytes.fromhex("000b03000081")
    assert PcrSelection(SHA256, (0, 7, 15)).marshal() == bytes.fromhex("000b03818000")
    two = bytes.fromhex("00000002" "0004030000ff" "000b03010000")
    assert marshal_pcr_selections(
        [PcrSelection(SHA1, (16, 17, 18, 19, 20, 21, 22, 23)), PcrSelection(SHA256, (0,))]
    ) == two
    assert parse_pcr_selections(two) == (
        PcrSelection(SHA1, (16, 17, 18, 19, 20, 21, 22, 23)), PcrSelection(SHA256, (0,)))


def test_sizeof_select_bounds_and_round_trip() -> None:
    # sizeofSelect 0 (a bank listed with nothing selected) and 4 (32 PCRs) are both legal.
    assert PcrSelection(SHA256, (), 0).marshal() == bytes.fromhex("000b00")
    assert PcrSelection(SHA256, (0,), 4).marshal() == bytes.fromhex("000b0401000000")
    for size in (0, 1, 2, 3, 4):
        sel = PcrSelection(SHA256, (0,) if size else (), size)
        parsed = parse_pcr_selections(marshal_pcr_selections([sel]))
        assert parsed == (sel,) and parsed[0].size_of_select == size
    with pytest.raises(TpmValueError, match=r"^sizeofSelect 5 is outside 0\.\.\.4$"):
        PcrSelection(SHA256, (0,), 5).marshal()
    with pytest.raises(TpmValueError, match=r"^sizeofSelect -1 is outside 0\.\.\.4$"):
        PcrSelection(SHA256, (), -1).marshal()


@pytest.mark.parametrize(("pcr", "size"), [(-1, 3), (24, 3), (8, 1), (32, 4)])
def test_pcr_outside_the_bitmap_is_refused(pcr: int, size: int) -> None:
    with pytest.raises(TpmValueError) as info:
        PcrSelection(SHA256, (pcr,), size).marshal()
    assert str(info.value) == f"PCR {pcr} does not fit a {size}-byte selection bitmap"


def _err(data: bytes) -> TpmStructureError:
    with pytest.raises(TpmStructureError) as info:
        parse_pcr_selections(data)
    assert info.value.structure == "TPML_PCR_SELECTION"
    return info.value


def test_trailing_bytes_after_a_selection_are_refused() -> None:
    e = _err(_pytss("sha256:0,1,2") + b"\x00")
    assert (e.field, e.offset) == ("(end)", 10)
    assert e.problem == "1 unexpected trailing bytes"


@pytest.mark.parametrize(
    ("data", "field", "offset", "problem"),
    [
        (bytes.fromhex("000000"), "pcrSelections.count", 0,
         "needs 4 bytes, only 3 left (truncated)"),
        (bytes.fromhex("00000011"), "pcrSelections.count", 0, "17 banks exceeds the maximum 16"),
        (bytes.fromhex("0000000100"), "pcrSelections.pcrSelections[0].hash", 4,
         "needs 2 bytes, only 1 left (truncated)"),
        (bytes.fromhex("00000002000b03000000abcd03000000"), "pcrSelections.pcrSelections[1].hash",
         10, "TPM_ALG_0xabcd is not a supported PCR bank"),
        (bytes.fromhex("00000001000b"), "pcrSelections.pcrSelections[0].sizeofSelect", 6,
         "needs 1 bytes, only 0 left (truncated)"),
        (bytes.fromhex("00000001000b05"), "pcrSelections.pcrSelections[0].sizeofSelect", 6,
         "5 exceeds 4"),
        (bytes.fromhex("00000001000b030000"), "pcrSelections.pcrSelections[0].pcrSelect", 7,
         "needs 3 bytes, only 2 left (truncated)"),
        (bytes.fromhex("00000001000b0400000001"), "pcrSelections.pcrSelections[0].pcrSelect", 7,
         "PCR 24 is beyond PCR 23"),
        (bytes.fromhex("00000002000403000000000b0400000080"),
         "pcrSelections.pcrSelections[1].pcrSelect", 13, "PCR 31 is beyond PCR 23"),
    ],
    ids=["short-count", "17-banks", "short-hash", "bad-bank", "short-size", "size-5",
         "short-bitmap", "pcr24", "pcr31-second-bank"],
)
def test_malformed_selection_names_field_and_offset(data: bytes, field: str, offset: int,
                                                    problem: str) -> None:
    e = _err(data)
    assert (e.field, e.offset) == (field, offset)
    if "TPM_ALG" in problem:
        assert e.problem.endswith("is not a supported PCR bank")
    else:
        assert e.problem == problem


def test_sixteen_banks_is_the_limit_not_over_it() -> None:
    one = bytes.fromhex("000b00")
    assert len(parse_pcr_selections(bytes.fromhex("00000010") + one * 16)) == 16
    e = _err(bytes.fromhex("00000011") + one * 17)
    assert e.field == "pcrSelections.count"
