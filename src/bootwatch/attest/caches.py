"""What a verifier may reuse between attestations, owned by the verifier.

A VM sends the same AIK, AIK certificate and event log on every attestation until it
reboots, and parsing, replaying and deriving boot facts from them are pure functions of
those bytes; keeping the results is what makes a repeat attestation cheap.  The pure
layers keep nothing themselves: a service builds one :class:`VerifierCaches` (its
container does) and passes it to :func:`bootwatch.attest.pipeline.attest_azure_guest`,
so each cache's bound, lifetime and tests are visible.  Without one (``None``) every
call computes everything, which is what the CLI's one-shot checks do.

Only successes are kept, each keyed by the exact bytes (or their SHA-256) it was
computed from; what depends on the request (the quoted PCRs, the clock, revocation,
the nonce) is checked on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bootwatch.attest.claims import MeasuredSecureBoot, WindowsBootConfig
from bootwatch.eventlog.decode.efi import X509Info
from bootwatch.eventlog.model import Replay, UnverifiedEventLog
from bootwatch.lru import BoundedLru
from bootwatch.tpm.aik import AikCache
from bootwatch.tpm.public import TpmPublic

__all__ = [
    "AIK_PUB_CACHE_SIZE",
    "BOOT_FACTS_CACHE_SIZE",
    "CERTIFICATE_CACHE_SIZE",
    "LOG_CACHE_SIZE",
    "BootFactsKey",
    "CertificateCache",
    "ParsedLog",
    "Unbound",
    "VerifierCaches",
]

#: AikPub parses kept (one per VM seen recently).
AIK_PUB_CACHE_SIZE = 1024
#: Parsed and replayed logs kept (each holds a whole log: a few hundred KB at most).
LOG_CACHE_SIZE = 256
#: Boot facts kept, per (log SHA-256, attested PCRs).
BOOT_FACTS_CACHE_SIZE = 4096
#: Secure Boot certificates (db, KEK, PK, authorities) read, per DER.
CERTIFICATE_CACHE_SIZE = 512

#: (event index, its PCR, why its data is not what was measured), in report order
Unbound = tuple[tuple[int, int, str], ...]
#: a log's parse, its replay of the reported bank and its unbound events
ParsedLog = tuple[UnverifiedEventLog, Replay, Unbound]
#: (log SHA-256, attested PCRs)
BootFactsKey = tuple[bytes, tuple[int, ...]]
#: a certificate's DER -> what it says, or why it does not parse
CertificateCache = BoundedLru[bytes, X509Info | str]


@dataclass(frozen=True)
class VerifierCaches:
    """The bounded caches one verifier owns (see the module docstring)."""

    aik_publics: BoundedLru[bytes, TpmPublic] = field(
        default_factory=lambda: BoundedLru(AIK_PUB_CACHE_SIZE))
    aik: AikCache = field(default_factory=AikCache)
    #: keyed by the log's SHA-256
    logs: BoundedLru[bytes, ParsedLog] = field(
        default_factory=lambda: BoundedLru(LOG_CACHE_SIZE))
    boot_facts: BoundedLru[BootFactsKey, tuple[MeasuredSecureBoot, WindowsBootConfig]] = field(
        default_factory=lambda: BoundedLru(BOOT_FACTS_CACHE_SIZE))
    #: a fleet's logs carry the same db/KEK/PK certificates: a new boot reads them once
    certificates: CertificateCache = field(
        default_factory=lambda: BoundedLru(CERTIFICATE_CACHE_SIZE))
