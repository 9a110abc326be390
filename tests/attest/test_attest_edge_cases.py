"""Edge cases of evidence verification and boot facts found in review.

Each test names the behaviour it pins down; evidence is forged with the
software keys of ``test_evidence_forged`` from the real Trusted Launch request.
"""

from __future__ import annotations

import hashlib
import struct

import test_evidence_forged as forged  # tests/attest is on sys.path (conftest)

from bootwatch.attest.facts import measured_secure_boot
from bootwatch.eventlog import parse_log
from bootwatch.tpm.constants import TpmAlg
from bootwatch.tpm.pcr import PcrSelection

_EFI_GLOBAL = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
_DRIVER_CONFIG = 0x80000001


def _secure_boot_var(value: bytes) -> bytes:
    name = "SecureBoot".encode("utf-16-le")
    return _EFI_GLOBAL + struct.pack("<QQ", len(name) // 2, len(value)) + name + value


def _record(pcr: int, etype: int, data: bytes, algs: tuple[TpmAlg, ...]) -> bytes:
    """A TCG_PCR_EVENT2 carrying digests (of ``data``) for ``algs`` only."""
    digests = b"".join(struct.pack("<H", a) + hashlib.new(a.name.lower(), data).digest()
                       for a in algs)
    head = struct.pack("<III", pcr, etype, len(algs))
    return head + digests + struct.pack("<I", len(data)) + data


def test_event_without_the_quoted_bank_digest_fails_log_replay() -> None:
    """A PCR 7 SecureBoot event carrying SHA-1 and SHA-384 digests but no SHA-256 one is
    never extended into the quoted SHA-256 bank, so nothing attests its data; yet the
    boot facts read it (the first SecureBoot measurement counts).  It must fail
    log_replay like any other unbound event, not pass and turn ``secureboot`` false
    (or true, for a VM whose real measurement is 0)."""
    raw = forged.REAL.tcg_logs
    log = parse_log(raw)
    first_sb = next(e for e in log.events if e.pcr == 7 and e.event_type == _DRIVER_CONFIG)
    fake = _record(7, _DRIVER_CONFIG, _secure_boot_var(b"\x00"), (TpmAlg.SHA1, TpmAlg.SHA384))
    tampered = raw[: first_sb.offset] + fake + raw[first_sb.offset :]
    # the forged log does state Secure Boot off: this is what a pass would hand the claims
    assert measured_secure_boot(parse_log(tampered)).secure_boot is False
    v = forged.verify(forged.forge(log=tampered))
    assert forged.first_failure(v) == ("log_replay", "log_data_digest_mismatch")
    assert f"event {first_sb.index} in PCR 7" in v.check("log_replay").reason
    assert v.verified_event_log is None and v.verified_replay is None


def test_quoted_pcr_at_its_all_ones_reset_value_is_not_unexplained() -> None:
    """PCRs 17-22 reset to all 0xFF (PC Client PTP; the replay starts them there).  A
    quoted PCR 17 that the log never extends and that still holds that reset value is
    explained by the log; log_replay fails only a PCR "never extended in the log, yet
    not at its reset value", so this one must pass."""
    pcrs = dict(forged.REAL_PCRS)
    pcrs[17] = b"\xff" * 32
    sel = (PcrSelection(TpmAlg.SHA256, tuple(sorted(pcrs))),)
    v = forged.verify(forged.forge(pcrs=pcrs, selection=sel))
    assert v.check("log_replay").passed, v.check("log_replay").reason
    assert v.passed, v.failed


def test_quoted_pcr_never_extended_and_not_at_reset_value_still_fails() -> None:
    """The counterpart: PCR 17 all-zero was never reached by a TPM from its reset value
    with no extend, so nothing in the log explains it."""
    pcrs = dict(forged.REAL_PCRS)
    pcrs[17] = bytes(32)
    sel = (PcrSelection(TpmAlg.SHA256, tuple(sorted(pcrs))),)
    v = forged.verify(forged.forge(pcrs=pcrs, selection=sel))
    assert forged.first_failure(v) == ("log_replay", "log_pcr_not_covered")
