"""One guest-side attestation, start to finish, as a typed outcome.

Collect AzureGuest evidence from the vTPM, send it to the provider, open the
sealed token in the same vTPM, verify the token through the provider's OpenID
metadata and ``/certs``.  Every way this can end is an :class:`AttestOutcome`
with a :class:`Verdict`; nothing the exit codes or the health report cover is
raised.  ``bootwatch agent attest`` prints it; the daemon turns it into a
health report and a provisioning status.

Both pass an :class:`~bootwatch.agent.attestlock.AttestLock`: held from before
the quote until the provider's answer is in, so two attestations of one VM from
this agent never cross in flight (the monitor would see a replayed quote); a
lock another attestation holds past its wait bound is a platform error (hop
``local``, ``error_code`` ``attestation_busy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootwatch.agent.errors import PlatformError
from bootwatch.errors import (
    BootwatchError,
    ConfigError,
    ServiceError,
    TpmDeviceError,
    TransportError,
)
from bootwatch.protocol.health import HealthStatus

if TYPE_CHECKING:
    from bootwatch.agent.attestlock import AttestLock
    from bootwatch.agent.transport import TlsContexts

__all__ = [
    "EXIT_PERMITTED",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "AttestOutcome",
    "Verdict",
    "attest_once",
    "parse_pcr_list",
]

EXIT_PERMITTED = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


class Verdict(StrEnum):
    """How one attestation ended (the strings ``agent attest --json`` prints)."""

    PERMIT = "permit"
    #: the provider's policy denied (PolicyEvaluationError)
    DENY = "deny"
    #: the provider rejected the evidence (4xx with an MAA error body)
    REFUSED = "refused"
    #: the sealed token did not open in this vTPM (PCRs changed, interception)
    UNSEALED_FAILED = "unsealed-failed"
    #: the token did not verify against the provider's /certs
    TOKEN_INVALID = "token-invalid"  # noqa: S105 - a verdict name, not a secret
    #: the provider could not be reached (the hop is in ``step``)
    UNREACHABLE = "unreachable"
    #: the TPM or the event log could not be used
    PLATFORM_ERROR = "platform-error"


_UNHEALTHY = frozenset({Verdict.DENY, Verdict.REFUSED, Verdict.UNSEALED_FAILED,
                        Verdict.TOKEN_INVALID})


@dataclass(frozen=True)
class AttestOutcome:
    """What one attestation ended with (also the ``agent attest --json`` shape).

    ``claims`` come from a token whose signature was verified; ``aik_cert`` is
    the DER the vTPM holds (claimed: the provider is what validates it).
    ``retry_after`` is the provider's Retry-After on a 429/503, when it gave one.
    """

    verdict: Verdict
    reason: str = ""
    step: str | None = None
    target: str = ""
    error_code: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    token: str | None = None
    retry_after: float | None = None
    aik_cert: bytes | None = None
    http_status: int | None = None

    @property
    def exit_code(self) -> int:
        if self.verdict is Verdict.PERMIT:
            return EXIT_PERMITTED
        if self.verdict in (Verdict.UNREACHABLE, Verdict.PLATFORM_ERROR):
            return EXIT_UNREACHABLE
        return EXIT_REFUSED

    @property
    def health(self) -> HealthStatus:
        if self.verdict is Verdict.PERMIT:
            return HealthStatus.HEALTHY
        if self.verdict in _UNHEALTHY:
            return HealthStatus.UNHEALTHY
        return HealthStatus.PLATFORM_ERROR

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "step": self.step,
            "error_code": self.error_code,
            "claims": dict(self.claims),
            "token": self.token,
        }


def parse_pcr_list(text: str, *, key: str = "--pcrs") -> tuple[int, ...]:
    """``0-7,11-14`` -> (0, 1, ..., 7, 11, ..., 14); PCRs 0..23."""
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"{key} {text!r}: {part!r} is not N or N-M") from None
        if not 0 <= first <= last <= 23:
            raise ConfigError(f"{key} {text!r}: {part!r} is outside PCRs 0-23")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def attest_once(
    tcti: str | None,
    tcg_log: bytes,
    url: str,
    *,
    ca: Path | None = None,
    os_info: Any = None,
    client_payload: Mapping[str, str] | None = None,
    pcr_indices: Sequence[int] | None = None,
    proxy: str | None = None,
    timeout: float = 15.0,
    key_cache: Path | None = None,
    tls: TlsContexts | None = None,
    lock: AttestLock | None = None,
) -> AttestOutcome:
    """Collect, send, unseal, verify; never raises for the outcomes the exit codes cover.

    ``key_cache``: where the ephemeral key's TPM context is kept between attestations
    (:func:`bootwatch.agent.tpm.create_ephemeral_key`); None derives it every time.
    ``lock``: held from before the TPM is opened for the quote until the provider has
    answered (the unseal and the token check run without it); one that cannot be
    taken within its wait is a PLATFORM_ERROR outcome at hop ``local`` naming the
    lock file, and the TPM is not touched.  None: no lock (the lab's demo callers)."""
    # the lock, released once the answer is in (closing it twice is harmless)
    until_answered = ExitStack()
    if lock is not None:
        try:
            until_answered.enter_context(lock.hold())
        except PlatformError as exc:  # AttestationBusyError among them
            return AttestOutcome(Verdict.PLATFORM_ERROR, str(exc), step="local",
                                 error_code=exc.code)
    with until_answered:
        return _attest_locked(tcti, tcg_log, url, until_answered, ca=ca, os_info=os_info,
                              client_payload=client_payload, pcr_indices=pcr_indices,
                              proxy=proxy, timeout=timeout, key_cache=key_cache, tls=tls)


def _attest_locked(
    tcti: str | None,
    tcg_log: bytes,
    url: str,
    until_answered: ExitStack,
    *,
    ca: Path | None,
    os_info: Any,
    client_payload: Mapping[str, str] | None,
    pcr_indices: Sequence[int] | None,
    proxy: str | None,
    timeout: float,
    key_cache: Path | None,
    tls: TlsContexts | None,
) -> AttestOutcome:
    """:func:`attest_once` with its lock held: closes ``until_answered`` as soon as the
    provider's answer (or its failure) is in, so the next attestation may quote while
    this one unseals and verifies."""
    from bootwatch.agent.client import AttestationClient
    from bootwatch.agent.evidence import collect_keeping_key
    from bootwatch.agent.tpm import flushing, open_tpm
    from bootwatch.agent.unseal import open_envelope

    aik: bytes | None = None
    try:
        with open_tpm(tcti) as esys:
            extra = {"pcr_indices": tuple(pcr_indices)} if pcr_indices else {}
            # the certified ephemeral key stays loaded until the answer is unsealed:
            # the vTPM derives it once per attestation, not twice
            ev, key = collect_keeping_key(esys, tcg_log=tcg_log, os_info=os_info,
                                          client_payload=dict(client_payload or {}),
                                          key_cache=key_cache, **extra)
            aik = ev.aik_cert
            with flushing(esys, key), \
                    AttestationClient(url, ca=ca, proxy=proxy, timeout=timeout,
                                      tls=tls) as client:
                try:
                    envelope = client.attest_azure_guest(ev.request_body())
                except ServiceError as exc:
                    if _busy(exc):
                        return _unreachable(exc, client.base_url, aik)
                    verdict = (Verdict.DENY if exc.error_code == "PolicyEvaluationError"
                               else Verdict.REFUSED)
                    return AttestOutcome(verdict, exc.message, error_code=exc.error_code,
                                         aik_cert=aik, http_status=exc.status)
                finally:
                    until_answered.close()  # the quote is answered: another may go
                try:
                    jws = open_envelope(esys, envelope, quoted_pcrs=ev.pcrs,
                                        pcr_indices=ev.pcr_set, key_handle=key)
                except BootwatchError as exc:
                    return AttestOutcome(Verdict.UNSEALED_FAILED,
                                         f"the token did not open: {exc}", aik_cert=aik)
                try:
                    claims = client.verify_token(jws)
                except TransportError:
                    raise
                except ServiceError as exc:
                    # the metadata or /certs answered 429/5xx with an MAA error body: the
                    # provider is busy, which says nothing about this VM's boot
                    if _busy(exc):
                        return _unreachable(exc, client.base_url, aik)
                    return AttestOutcome(Verdict.TOKEN_INVALID,
                                         f"token verification failed: {exc}", token=jws,
                                         aik_cert=aik)
                except BootwatchError as exc:
                    return AttestOutcome(Verdict.TOKEN_INVALID,
                                         f"token verification failed: {exc}", token=jws,
                                         aik_cert=aik)
    except TransportError as exc:
        return AttestOutcome(Verdict.UNREACHABLE, exc.detail, step=exc.step, target=exc.target,
                             retry_after=exc.retry_after, aik_cert=aik)
    except TpmDeviceError as exc:
        return AttestOutcome(Verdict.PLATFORM_ERROR, f"TPM: {exc}", step="local", aik_cert=aik)
    return AttestOutcome(Verdict.PERMIT, "permitted", claims=claims, token=jws, aik_cert=aik)


def _busy(exc: ServiceError) -> bool:
    """A 429 or 5xx: the provider cannot answer now (come back later), not a verdict."""
    return exc.status >= 500 or exc.status == 429


def _unreachable(exc: ServiceError, base_url: str, aik: bytes | None) -> AttestOutcome:
    """A busy provider as an ``http_status`` hop failure carrying its Retry-After, at any
    step (attestation, OpenID metadata, /certs): a platform error the daemon backs off
    from, never an Unhealthy VM."""
    return AttestOutcome(
        Verdict.UNREACHABLE, exc.message, step="http_status", target=base_url,
        error_code=exc.error_code, retry_after=exc.retry_after, aik_cert=aik,
        http_status=exc.status)
