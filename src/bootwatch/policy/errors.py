"""Finer policy errors, each below a class of :mod:`bootwatch.errors`.

The service maps the three bases (``PolicyParsingError``, ``PolicyEvaluationError``,
``PolicySignatureError``) to MAA error codes; the subclasses here only let callers and
tests tell the reasons apart.
"""

from __future__ import annotations

from bootwatch.errors import (
    PolicyError,
    PolicyEvaluationError,
    PolicyParsingError,
    PolicySignatureError,
)

__all__ = [
    "PolicyDocumentError",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyLimitError",
    "PolicyParsingError",
    "PolicySignatureError",
    "UntrustedSignerError",
]


class PolicyLimitError(PolicyEvaluationError):
    """An evaluation limit (rules, claims, nesting, JmesPath work, value size) was exceeded."""

    code = "PolicyEvaluationError"

    def __init__(self, reason: str, *, limit: str, rule: str | None = None) -> None:
        where = f"{rule}: " if rule else ""
        super().__init__(f"{where}evaluation limit {limit!r} exceeded: {reason}")
        self.reason = reason
        self.limit = limit
        self.rule = rule


class PolicyDocumentError(PolicyParsingError):
    """An upload body that is neither policy text nor a well-formed policy JWS.

    A subclass of :class:`PolicyParsingError` because MAA answers a malformed
    policy upload with that code.
    """


class UntrustedSignerError(PolicySignatureError):
    """A correctly signed JWS whose signer is not one of the trusted signers."""
