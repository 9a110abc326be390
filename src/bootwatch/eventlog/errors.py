"""Finer event-log errors, all below the classes of :mod:`bootwatch.errors`.

Callers catch :class:`bootwatch.errors.EventLogError` (or ``BootwatchError``);
these subclasses let tests and tools tell the kinds of bad input apart.
"""

from __future__ import annotations

from bootwatch.errors import EventLogError, EventLogLimitError, ExpectedValuesError

__all__ = [
    "EmptyEventLogError",
    "EventLogError",
    "EventLogLimitError",
    "ExpectedValuesError",
    "NotAnEventLogError",
    "TruncatedEventLogError",
]


class EmptyEventLogError(EventLogError):
    """A log of 0 bytes (e.g. keylime's ``binary_bios_measurements-empty``)."""

    code = "eventlog_empty"


class NotAnEventLogError(EventLogError):
    """Bytes that are not a TCG event log at all (e.g. keylime's ``-bogus`` text file)."""

    code = "eventlog_not_a_log"


class TruncatedEventLogError(EventLogError):
    """A record that runs past the end of the log (and the tail is not padding)."""

    code = "eventlog_truncated"
