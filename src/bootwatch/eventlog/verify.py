"""Compare a replayed log with expected PCR values (e.g. from a quote), PCR by PCR.

Each expected PCR is MATCHED, MISMATCHED (with the first event whose removal
would explain it, or the first event with a digest/data finding, where that can
be told) or NOT_COVERED (the log never touches it: PCR10 IMA, PCR14 extended
by the OS, a bank the log lacks).  Named workarounds (:mod:`.workarounds`) are
tried only for PCRs whose raw replay does not match, and are reported.
Comparisons are constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from bootwatch.eventlog.model import (
    Finding,
    LogFormat,
    PcrResult,
    PcrStatus,
    PcrVerification,
    Replay,
    UnverifiedEventLog,
    alg_name,
)
from bootwatch.eventlog.replay import hash_function, initial_pcr_value, replay
from bootwatch.eventlog.workarounds import DEFAULT_WORKAROUNDS, Workaround

__all__ = ["verify_pcrs"]

#: Removal search is quadratic in a PCR's extends; above this many it is skipped.
_MAX_SUSPECT_SEARCH = 512


def verify_pcrs(
    log: UnverifiedEventLog,
    expected: Mapping[int, Mapping[int, bytes]],
    *,
    replayed: Replay | None = None,
    workarounds: Sequence[Workaround] = DEFAULT_WORKAROUNDS,
) -> PcrVerification:
    """Compare every expected PCR value (alg_id -> pcr -> value) with the replayed log."""
    rep = replayed if replayed is not None else replay(log)
    sizes = {a.alg_id: a.size for a in log.algorithms}
    results: list[PcrResult] = []
    applied: list[str] = []
    findings: list[Finding] = []
    for alg_id in sorted(expected):
        bank = rep.pcrs.get(alg_id)
        for pcr in sorted(expected[alg_id]):
            want = bytes(expected[alg_id][pcr])
            if alg_id not in sizes:
                results.append(
                    PcrResult(
                        alg_id,
                        pcr,
                        PcrStatus.NOT_COVERED,
                        want,
                        None,
                        reason=f"the log has no {alg_name(alg_id)} bank",
                    )
                )
                continue
            if bank is None:
                results.append(
                    PcrResult(
                        alg_id,
                        pcr,
                        PcrStatus.NOT_COVERED,
                        want,
                        None,
                        reason=f"the {alg_name(alg_id)} bank cannot be replayed here",
                    )
                )
                continue
            got = bank.get(pcr)
            if got is None:
                results.append(
                    PcrResult(
                        alg_id,
                        pcr,
                        PcrStatus.NOT_COVERED,
                        want,
                        None,
                        reason=f"the log never extends or initialises {log.index_name} {pcr}",
                    )
                )
                continue
            if hmac.compare_digest(got, want):
                results.append(PcrResult(alg_id, pcr, PcrStatus.MATCHED, want, got))
                continue
            fixed = _try_workarounds(log, rep, alg_id, pcr, want, workarounds)
            if fixed is not None:
                name, value = fixed
                if name not in applied:
                    applied.append(name)
                findings.append(
                    Finding(
                        "workaround_applied",
                        None,
                        f"{alg_name(alg_id)} {log.index_name} {pcr} matches only with the "
                        f"named workaround {name!r}",
                    )
                )
                results.append(
                    PcrResult(
                        alg_id,
                        pcr,
                        PcrStatus.MATCHED,
                        want,
                        value,
                        workaround=name,
                        reason=f"matched with workaround {name}",
                    )
                )
                continue
            if len(want) != len(got):
                reason = f"expected value has {len(want)} bytes, the bank's digests {len(got)}"
                suspect = None
            else:
                suspect, reason = _suspect(log, rep, alg_id, pcr, want, sizes[alg_id])
            results.append(
                PcrResult(
                    alg_id,
                    pcr,
                    PcrStatus.MISMATCHED,
                    want,
                    got,
                    suspect_event=suspect,
                    reason=reason,
                )
            )
    return PcrVerification(
        results=tuple(results), workarounds_applied=tuple(applied), findings=tuple(findings)
    )


def _try_workarounds(
    log: UnverifiedEventLog,
    rep: Replay,
    alg_id: int,
    pcr: int,
    want: bytes,
    workarounds: Sequence[Workaround],
) -> tuple[str, bytes] | None:
    for wa in workarounds:
        if pcr not in wa.pcrs:
            continue
        value = wa.adjust(log, rep, alg_id, pcr)
        if value is not None and hmac.compare_digest(value, want):
            return wa.name, value
    return None


def _suspect(
    log: UnverifiedEventLog, rep: Replay, alg_id: int, pcr: int, want: bytes, size: int
) -> tuple[int | None, str]:
    """Find the first event whose removal makes ``pcr`` match, else one with a finding."""
    fn = hash_function(alg_id)
    digests = [
        (ex.event_index, ex.digests[alg_id])
        for ex in rep.extends
        if ex.pcr == pcr and alg_id in ex.digests
    ]
    start = rep.initial.get(alg_id, {}).get(pcr)
    if start is None:
        start = initial_pcr_value(
            pcr,
            size,
            locality=rep.startup_locality,
            hcrtm=rep.hcrtm,
            ccel=log.format is LogFormat.CCEL,
        )
    if fn is not None and len(digests) <= _MAX_SUSPECT_SEARCH:
        for skip in range(len(digests)):
            value = start
            for i, (_, digest) in enumerate(digests):
                if i != skip:
                    value = fn(value + digest).digest()
            if hmac.compare_digest(value, want):
                index = digests[skip][0]
                return index, f"the value matches if event {index} is removed"
    in_pcr = {index for index, _ in digests}
    for finding in rep.findings:
        if finding.event in in_pcr and finding.code == "digest_mismatch":
            return finding.event, f"event {finding.event}: {finding.message}"
    return None, "replayed value differs; no single event explains it"
