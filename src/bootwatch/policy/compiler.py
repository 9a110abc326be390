"""Compile MAA policies: ``compile_policy`` (parse and check) and ``PolicyCompiler``.

A service evaluates the same few policies for every attestation; compiling one takes
milliseconds, evaluating it microseconds, so a service keeps compiled policies in a
:class:`PolicyCompiler` it owns (bounded, least recently used out, thread-safe).  The
module itself keeps nothing between calls: ``compile_policy`` parses every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bootwatch.lru import BoundedLru
from bootwatch.policy.ast import PolicyAst, Tolerance
from bootwatch.policy.hashes import policy_hash
from bootwatch.policy.parser import check_policy_text, parse_policy

__all__ = ["CACHE_SIZE", "QUERY_CACHE_SIZE", "CompiledPolicy", "PolicyCompiler",
           "compile_policy"]

#: Compiled policies a PolicyCompiler keeps (a provider has one per attestation type).
CACHE_SIZE = 256
#: Parsed JmesPath queries a compiled policy keeps.
QUERY_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A checked policy ready to evaluate, with its text and x-ms-policy-hash."""

    text: str
    ast: PolicyAst
    hash: str
    #: parsed JmesPath queries of this policy (its queries are literals of its text, so
    #: the bound is only a guard); owned by the compiled policy, dropped with it
    queries: BoundedLru[str, Any] = field(
        default_factory=lambda: BoundedLru(QUERY_CACHE_SIZE), compare=False, repr=False)

    @property
    def version(self) -> str:
        major, minor = self.ast.version
        return f"{major}.{minor}"

    @property
    def tolerances(self) -> tuple[Tolerance, ...]:
        """Leniencies the text relies on (empty for a policy that follows the grammar)."""
        return self.ast.tolerances


def compile_policy(text: str) -> CompiledPolicy:
    """Parse and check ``text``; raise PolicyParsingError with line:column if invalid."""
    if isinstance(text, str):
        check_policy_text(text)  # before hashing: the hash encodes the text as UTF-8
    key = policy_hash(text) if isinstance(text, str) else ""
    return CompiledPolicy(text, parse_policy(text), key)


class PolicyCompiler:
    """``compile_policy`` with a bounded cache keyed by policy hash, owned by its creator.

    A hit must also have the same text (a hash is not trusted as identity).  Errors are
    never kept: an invalid text is parsed, and refused, every time.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._cache: BoundedLru[str, CompiledPolicy] = BoundedLru(size)

    def compile(self, text: str) -> CompiledPolicy:
        """The compiled policy for ``text`` (see :func:`compile_policy`)."""
        if isinstance(text, str):
            check_policy_text(text)
        key = policy_hash(text) if isinstance(text, str) else ""
        hit = self._cache.get(key)
        if hit is not None and hit.text == text:
            return hit
        compiled = CompiledPolicy(text, parse_policy(text), key)
        self._cache.put(key, compiled)
        return compiled

    def __len__(self) -> int:
        return len(self._cache)
