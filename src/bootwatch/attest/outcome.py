"""Turn a pipeline outcome into the monitor's :class:`OutcomeEvent`.

The monitor must explain a verdict down to the event without importing the
verifier, so the service sends it, with each answer, the facts it verified:
the quoted PCR values, the events of the quoted PCRs (each with a one-line
description of the component), the TPM reset count and clock from the quote
and the name of the AIK that signed it (the monitor orders a VM's quotes by
them: a replayed request is not newer than one it saw), the
claims the policy saw, and, when DBX reference data is configured, the boot
components it revokes.  Nothing unverified is put in those fields; a request
whose evidence failed carries only its verdict, reason and *claimed* VM id.

Describing a log's events costs ~0.1-0.3 ms, and a VM sends the same log on
every attestation until it reboots, so :class:`OutcomeEventBuilder` keeps the
per-log part in a bounded LRU it owns (keyed by the log's SHA-256 and the
quoted PCRs).  Pure: time and ids come in as arguments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bootwatch.attest.claims import DbxReference
from bootwatch.attest.facts import is_described_event, pcrs_claim
from bootwatch.attest.pipeline import AttestationOutcome
from bootwatch.errors import BootwatchError
from bootwatch.eventlog.decode.summary import summarize
from bootwatch.eventlog.model import HashAlg, UnverifiedEventLog
from bootwatch.lru import BoundedLru
from bootwatch.protocol import token as t
from bootwatch.protocol.jsonread import storable_text
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, RevokedItem

__all__ = ["OutcomeEventBuilder", "describe_events"]

def describe_events(log: UnverifiedEventLog, pcrs: frozenset[int]) -> tuple[BootEvent, ...]:
    """The events of ``pcrs`` with their SHA-256 digests and a one-line description.

    Only call this on a log whose replay matched a verified quote.  An event
    whose data cannot be decoded is described as such rather than dropped.
    """
    out: list[BootEvent] = []
    for ev in log.events:
        if not is_described_event(ev, pcrs):
            continue
        digest = ev.digests[HashAlg.SHA256]
        try:
            component = summarize(ev)
        except BootwatchError as exc:
            component = f"<undecodable event data: {exc}>"
        # event data is mostly unmeasured (the guest may rewrite it and the quote still
        # verifies): a NUL in a GRUB command made the monitor refuse the whole outcome
        # (found in review); described once per log (the builder's cache)
        out.append(BootEvent(ev.index, ev.pcr, storable_text(ev.type_name), digest.hex(),
                             storable_text(component)))
    return tuple(out)


class OutcomeEventBuilder:
    """Builds outcome events; owns the bounded cache of per-log descriptions."""

    def __init__(self, cache_size: int = 1024) -> None:
        self._events: BoundedLru[tuple[bytes, frozenset[int]], tuple[BootEvent, ...]] = (
            BoundedLru(cache_size)
        )

    def build(
        self,
        outcome: AttestationOutcome,
        *,
        event_id: str,
        time: datetime,
        provider: str,
        issuer: str = "",
        dbx_reference: DbxReference | None = None,
        attestation_type: str = "AzureGuest",
    ) -> OutcomeEvent:
        base: dict[str, Any] = {
            "event_id": event_id,
            "time": time,
            "provider": provider,
            "issuer": issuer,
            "attestation_type": attestation_type,
            "verdict": outcome.verdict,
            "reason": outcome.reason,
            "policy_hash": outcome.policy_hash,
            "failed_check": outcome.failed_check,
            "deciding_rule": outcome.deciding_rule,
            "claimed_vm_id": outcome.claimed_vm_id,
        }
        boot = outcome.boot
        evidence = outcome.evidence
        if boot is None or evidence is None or evidence.verified_event_log is None:
            return OutcomeEvent(**base)
        quoted = frozenset(boot.attested_pcrs)
        key = (evidence.event_log_sha256, quoted)
        log = evidence.verified_event_log
        events = self._events.get_or_compute(key, lambda: describe_events(log, quoted))
        claims: list[tuple[str, Any]] = []
        if outcome.azurevm is not None:
            claims = [(k, v) for k, v in outcome.azurevm.claims.items() if k != t.RUNTIME]
        claims.append(("pcrs", pcrs_claim(boot)))
        sb = boot.secure_boot
        revoked: list[RevokedItem] = []
        missing: int | None = None
        current: int | None = None
        # boot applications come from every PCR 4 event of the log: verified only when
        # the quote covers PCR 4 (the claims say so; the revoked list said otherwise)
        if dbx_reference is not None and 4 in quoted:
            by_digest = {e.digest: e for e in events}
            for app in sb.boot_apps:
                if app in dbx_reference.revoked_images:
                    hit = by_digest.get(app.hex())
                    revoked.append(
                        RevokedItem(
                            event=hit.index if hit else -1,
                            component=hit.component if hit else "boot application",
                            digest=app.hex(),
                            reason=f"its SHA-256 is revoked by {dbx_reference.source}",
                        )
                    )
        # the dbx variable is measured in PCR 7: how far it is behind is known only when
        # the quote covers PCR 7
        if dbx_reference is not None and 7 in quoted:
            current = len(dbx_reference.revoked_images)
            if sb.dbx_hashes is not None:
                missing = len(dbx_reference.revoked_images - sb.dbx_hashes)
        chain = evidence.verified_aik_chain
        clock = evidence.verified_clock
        return OutcomeEvent(
            **base,
            vm_id=outcome.vm_id,
            pcr_bank="sha256",
            pcrs={i: v.hex() for i, v in sorted(boot.pcr_values.items())},
            events=events,
            reset_count=clock.reset_count if clock else None,
            restart_count=clock.restart_count if clock else None,
            tpm_clock=clock.clock if clock else None,
            aik=evidence.verified_aik_pub.name.hex() if evidence.verified_aik_pub else "",
            token_id=str((outcome.token_claims or {}).get(t.JTI, "")),
            secure_boot=sb.secure_boot,
            claims=tuple(claims),
            revoked=tuple(revoked),
            dbx_missing=missing,
            dbx_current=current,
            aik_not_after=chain.leaf.not_valid_after_utc if chain is not None else None,
        )
