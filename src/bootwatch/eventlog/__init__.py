"""bootwatch.eventlog: read, replay and verify TCG measured-boot event logs (pure).

Steps are separate, as in go-eventlog: :func:`parse_log` frames records,
:func:`replay` computes PCR values and findings, :func:`verify_pcrs` compares
them with PCR values from a quote.  Event-data decoding and boot state live
in their own modules and are never paid for on the framing/replay path.
"""

from bootwatch.eventlog.expected import ExpectedPcrs, parse_expected
from bootwatch.eventlog.framing import parse_log
from bootwatch.eventlog.model import (
    DEFAULT_LIMITS,
    DigestAlgorithm,
    EventType,
    Extend,
    Finding,
    HashAlg,
    Limits,
    LogFormat,
    PcrResult,
    PcrStatus,
    PcrVerification,
    Replay,
    UnverifiedEvent,
    UnverifiedEventLog,
    event_type_name,
)
from bootwatch.eventlog.replay import replay
from bootwatch.eventlog.verify import verify_pcrs

__all__ = [
    "DEFAULT_LIMITS",
    "DigestAlgorithm",
    "EventType",
    "ExpectedPcrs",
    "Extend",
    "Finding",
    "HashAlg",
    "Limits",
    "LogFormat",
    "PcrResult",
    "PcrStatus",
    "PcrVerification",
    "Replay",
    "UnverifiedEvent",
    "UnverifiedEventLog",
    "event_type_name",
    "parse_expected",
    "parse_log",
    "replay",
    "verify_pcrs",
]
