"""Every permitted outcome the service builds, a standalone monitor decodes.

Found in review: event data is mostly unmeasured, so a guest can rewrite a record's data
(a GRUB command with a NUL in it) and the genuine quote still verifies; the description
kept the NUL and the monitor refused the whole outcome (poison, dropped), so the VM
stayed healthy on its old boot.  And a boot application revoked by the DBX data but
measured in a PCR 4 the quote did not cover went out as ``revoked[].event = -1``, which
the decoder refused, though the claims already treat an unquoted PCR 4 as unknown.

The real Azure Trusted Launch request (its own quote), one record rewritten; a quote
without PCR 4 signed by the forged-evidence suite's software AIK.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import test_evidence_forged as forged  # tests/attest is on sys.path (conftest)
from test_event_types_are_not_measured import AT, BOOTMGR, LOG, RAW, SHA256, _inputs, _pcrs

from bootwatch.attest.claims import DbxReference
from bootwatch.attest.outcome import OutcomeEventBuilder
from bootwatch.attest.pipeline import attest_azure_guest
from bootwatch.policy.compiler import compile_policy
from bootwatch.policy.hashes import policy_hash
from bootwatch.protocol.azureguest import encode_request
from bootwatch.protocol.outcome import decode_outcome, encode_outcome
from bootwatch.tpm.pcr import PcrSelection

PERMIT_ALL = "version=1.0; authorizationrules { => permit(); }; issuancerules { };"


def _rewritten(data: bytes) -> bytes:
    """The real log with its first PCR 0 firmware-blob record retyped EV_IPL and its data
    replaced by ``data`` (neither is measured: the PCRs do not change)."""
    ev = next(e for e in LOG.events
              if e.pcr == 0 and e.type_name == "EV_EFI_PLATFORM_FIRMWARE_BLOB")
    sizes = {a.alg_id: a.size for a in LOG.algorithms}
    pcr, _type, count = struct.unpack_from("<III", RAW, ev.offset)
    pos = ev.offset + 12
    for _ in range(count):
        (alg,) = struct.unpack_from("<H", RAW, pos)
        pos += 2 + sizes[alg]
    (size,) = struct.unpack_from("<I", RAW, pos)
    log = (RAW[:ev.offset] + struct.pack("<III", pcr, 0x0D, count) + RAW[ev.offset + 12:pos]
           + struct.pack("<I", len(data)) + data + RAW[pos + 4 + size:])
    assert _pcrs(log) == _pcrs(RAW)
    return log


def test_a_nul_in_unmeasured_event_data_does_not_make_the_outcome_undecodable() -> None:
    log = _rewritten(b"grub_cmd: linux /vmlinuz x\x00y\xed\xa0\x80")
    out = attest_azure_guest(encode_request(replace(forged.REAL, tcg_logs=log)),
                             provider=_inputs(), now=AT, jti="00" * 32)
    assert out.verdict.value == "permit", out.reason
    event = OutcomeEventBuilder().build(out, event_id=str(uuid.uuid4()),
                                        time=datetime.now(UTC), provider="p")
    got = decode_outcome(encode_outcome(event))
    grub = [e.component for e in got.events if "vmlinuz" in e.component]
    assert grub and "\x00" not in grub[0] and "\ufffd" in grub[0]


def test_a_revoked_image_in_an_unquoted_pcr4_is_not_reported_and_decodes() -> None:
    dbx = DbxReference(source="dbx_info_msft_latest.json",
                       revoked_images=frozenset({BOOTMGR.digests[SHA256]}))
    sel = tuple(p for p in forged.REAL_PCRS if p != 4)
    req = forged.forge(pcrs={p: forged.REAL_PCRS[p] for p in sel},
                       selection=(PcrSelection(SHA256, sel),))
    inputs = replace(_inputs(dbx), policy=compile_policy(PERMIT_ALL),
                     policy_hash=policy_hash(PERMIT_ALL))
    out = attest_azure_guest(encode_request(req), provider=inputs, now=AT, jti="00" * 32)
    assert out.verdict.value == "permit", out.reason
    event = OutcomeEventBuilder().build(out, event_id=str(uuid.uuid4()),
                                        time=datetime.now(UTC), provider="p",
                                        dbx_reference=dbx)
    # PCR 4 unquoted: its events are unverified, so nothing is reported revoked from them
    assert event.revoked == ()
    # the dbx variable is measured in PCR 7, which is quoted: its staleness is known
    assert event.dbx_current == 1
    assert decode_outcome(encode_outcome(event)).verdict.value == "permit"
