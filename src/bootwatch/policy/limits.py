"""Bounds that keep a hostile policy (or hostile claims) from hanging a service thread.

Parse-time bounds are module constants (a policy over them is a ``PolicyParsingError``);
evaluation bounds are an :class:`EvaluationLimits` value the caller may tighten or loosen.
Exceeding one is a :class:`~bootwatch.policy.errors.PolicyLimitError` (a
``PolicyEvaluationError``) naming the limit. The defaults are sized so every published
sample runs on a full Windows event log with two orders of magnitude to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_EXPRESSION_DEPTH",
    "MAX_INTEGER",
    "MAX_POLICY_CHARS",
    "MIN_INTEGER",
    "EvaluationLimits",
]

#: Largest policy text compile_policy accepts (characters). The largest sample is 5 KB.
MAX_POLICY_CHARS = 256 * 1024

#: Deepest nesting of function calls inside one expression.
MAX_EXPRESSION_DEPTH = 16

#: Largest integer literal (64-bit signed, like the service's Integer claims).
MAX_INTEGER = 2**63 - 1
MIN_INTEGER = -(2**63)


@dataclass(frozen=True, slots=True)
class EvaluationLimits:
    """Per-evaluation work bounds."""

    #: rules evaluated in all sections together
    max_rules: int = 2_000
    #: claims in the incoming set, given and added together
    max_claims: int = 10_000
    #: claim-property tests run in one evaluation
    max_tests: int = 2_000_000
    #: characters of one string value (AppendString results, JmesPath results)
    max_string_chars: int = 4 * 1024 * 1024
    #: characters of JSON text handed to JmesPath / JsonToClaimValue
    max_json_chars: int = 8 * 1024 * 1024
    #: characters of one JmesPath query
    max_query_chars: int = 16 * 1024
    #: JmesPath AST node visits in one whole evaluation, all queries together (bounds
    #: projections and filters). The published samples need at most ~10k on a full Windows
    #: log; 200k keeps a hostile policy's worst case to a fraction of a second, since the
    #: service evaluates policies inline on its event loop.
    max_jmespath_steps: int = 200_000
    #: elements of one set value (JsonToClaimValue arrays, argument combinations, claims
    #: one action adds)
    max_set_size: int = 10_000


DEFAULT_LIMITS = EvaluationLimits()
