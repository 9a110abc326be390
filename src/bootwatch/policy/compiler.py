"""compile_policy: parse + check once, keep the result in a small cache keyed by policy hash.

A service evaluates the same few policies for every attestation; compiling one takes
milliseconds, evaluating it microseconds, so the cache is what makes per-request
evaluation cheap. The cache is bounded (least recently used out) and thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from bootwatch.policy.ast import PolicyAst, Tolerance
from bootwatch.policy.hashes import policy_hash
from bootwatch.policy.parser import check_policy_text, parse_policy

#: Compiled policies kept (a provider has one per attestation type).
CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A checked policy ready to evaluate, with its text and x-ms-policy-hash."""

    text: str
    ast: PolicyAst
    hash: str

    @property
    def version(self) -> str:
        major, minor = self.ast.version
        return f"{major}.{minor}"

    @property
    def tolerances(self) -> tuple[Tolerance, ...]:
        """Leniencies the text relies on (empty for a policy that follows the grammar)."""
        return self.ast.tolerances


_cache: OrderedDict[str, CompiledPolicy] = OrderedDict()
_lock = threading.Lock()


def compile_policy(text: str) -> CompiledPolicy:
    """Parse and check ``text``; raise PolicyParsingError with line:column if invalid."""
    if isinstance(text, str):
        check_policy_text(text)  # before hashing: the hash encodes the text as UTF-8
    key = policy_hash(text) if isinstance(text, str) else ""
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit.text == text:
            _cache.move_to_end(key)
            return hit
    compiled = CompiledPolicy(text, parse_policy(text), key)
    with _lock:
        _cache[key] = compiled
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def clear_cache() -> None:
    """Forget every compiled policy (tests and benchmarks use this)."""
    with _lock:
        _cache.clear()
