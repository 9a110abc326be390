"""The version 1.2 functions: JmesPath, JsonToClaimValue, IsSubsetOf, AppendString,
NegateBool, ContainsOnlyValue (claim-rule-functions.md, summarised in maa-protocol.md 2.3).

Values flow through the evaluator as *item tuples*: a literal is one item; ``c.value`` is
one item per claim that ``c`` bound (the IsSubsetOf example shows an identifier bound to
several claims yields a set). Functions taking sets (IsSubsetOf, ContainsOnlyValue) see the
whole tuple; the others run once per combination of their arguments' items, bounded by
``max_set_size``. Every item carries ``read_only``: results derived from a read-only claim
stay read-only, so the evaluator can refuse to issue them.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import jmespath.visitor

from bootwatch.lru import BoundedLru
from bootwatch.policy.claims import ClaimValue
from bootwatch.policy.errors import PolicyEvaluationError, PolicyLimitError
from bootwatch.policy.limits import MAX_INTEGER, MIN_INTEGER, EvaluationLimits

__all__ = [
    "FUNCTIONS",
    "Budget",
    "FunctionSpec",
    "Item",
    "Items",
    "jmespath_search",
    "same_value",
]


@dataclass(frozen=True, slots=True)
class Item:
    """One value flowing through an expression."""

    value: ClaimValue
    read_only: bool = False


Items = tuple[Item, ...]


@dataclass(slots=True)
class Budget:
    """Mutable work counters of one evaluation, checked against its limits."""

    limits: EvaluationLimits
    tests: int = 0
    jmespath_steps: int = 0
    rules: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    #: parsed queries, owned by the compiled policy under evaluation (None: parse each)
    queries: BoundedLru[str, Any] | None = None

    def charge_tests(self, n: int) -> None:
        self.tests += n
        if self.tests > self.limits.max_tests:
            raise PolicyLimitError(
                f"more than {self.limits.max_tests} claim tests", limit="max_tests"
            )

    def charge_jmespath(self) -> None:
        self.jmespath_steps += 1
        if self.jmespath_steps > self.limits.max_jmespath_steps:
            raise PolicyLimitError(
                f"JmesPath queries took more than {self.limits.max_jmespath_steps} steps",
                limit="max_jmespath_steps",
            )


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A policy function: its name, arity and implementation."""

    name: str
    arity: int
    impl: Callable[[tuple[Items, ...], Budget], Items]


# --- equality and helpers ----------------------------------------------------------------


def same_value(a: object, b: object) -> bool:
    """Typed equality: ``true`` is not ``1`` and ``"1"`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, (int, str)) or isinstance(b, (int, str)):
        return False
    return a == b


def _product(args: tuple[Items, ...], budget: Budget) -> list[tuple[Item, ...]]:
    size = 1
    for arg in args:
        size *= len(arg)
    if size > budget.limits.max_set_size:
        raise PolicyLimitError(
            f"a function would run over {size} argument combinations "
            f"(limit {budget.limits.max_set_size})",
            limit="max_set_size",
        )
    return list(itertools.product(*args))


def _check_string(value: str, budget: Budget, what: str) -> str:
    if len(value) > budget.limits.max_string_chars:
        raise PolicyLimitError(
            f"{what} is {len(value)} characters (limit {budget.limits.max_string_chars})",
            limit="max_string_chars",
        )
    return value


#: A UTF-16 surrogate code point: in a Python str always a lone one (json.loads joins pairs).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_lone_surrogate(value: str, what: str) -> str:
    """Refuse a string no UTF-8 can encode (JSON's ``\\ud800`` escape makes one).

    Issued claims are signed into a UTF-8 token; such a value would fail there, outside
    the policy, instead of as this rule's evaluation error.
    """
    found = _SURROGATE.search(value)
    if found is not None:
        raise PolicyEvaluationError(
            f"{what} holds a lone UTF-16 surrogate (U+{ord(found.group()):04X}), "
            "which is not text"
        )
    return value


def _json_size_ok(value: object, budget: Budget) -> None:
    """Walk a JSON value without recursion, counting its serialised size roughly.

    JmesPath results can share sub-values (``[@,@] | [@,@] | ...``), so a small result in
    memory can serialise to an exponential text; refuse before serialising.
    """
    limit = budget.limits.max_string_chars
    total = 0
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            total += len(node) + 2
        elif isinstance(node, Mapping):
            total += 2
            for k, v in node.items():
                total += len(str(k)) + 4
                stack.append(v)
        elif isinstance(node, Sequence):
            total += 2 + len(node)
            stack.extend(node)
        elif node is None or isinstance(node, int):
            total += 8
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise PolicyEvaluationError(
                    f"JmesPath: the result holds {node}, a number JSON cannot hold")
            total += 8
        else:
            # an expression reference (``&expr``) is an argument of sort_by/max_by/...,
            # never a value: jmespath returns its internal object, which is no JSON (found
            # by fuzzing: the result's serialisation raised TypeError)
            raise PolicyEvaluationError(
                "JmesPath: the result is not a JSON value (an expression reference '&...' "
                "is only an argument of functions such as sort_by)")
        if total > limit:
            raise PolicyLimitError(
                f"a JmesPath result is larger than {limit} characters", limit="max_string_chars"
            )


def _load_json(value: ClaimValue, budget: Budget, fname: str) -> Any:
    """The JSON value of an argument: a JSON text string is parsed, a JSON claim used as is."""
    if not isinstance(value, str):
        return value
    if len(value) > budget.limits.max_json_chars:
        raise PolicyLimitError(
            f"{fname}: JSON argument is {len(value)} characters "
            f"(limit {budget.limits.max_json_chars})",
            limit="max_json_chars",
        )
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise PolicyEvaluationError(f"{fname}: argument is not valid JSON ({exc})") from None


# --- JmesPath ----------------------------------------------------------------------------


class _MaaJmesFunctions(jmespath.functions.Functions):
    """Standard JMESPath functions plus ``equals_ignore_case``, which the samples use.

    MAA's evaluator evidently has it (four published samples call it); it is not in the
    JMESPath specification. A non-string argument compares unequal instead of failing,
    so a filter over events that lack the field simply does not match.
    """

    @jmespath.functions.signature({"types": []}, {"types": []})
    def _func_equals_ignore_case(self, a: object, b: object) -> bool:
        if not isinstance(a, str) or not isinstance(b, str):
            return False
        return a.casefold() == b.casefold()


_JMES_OPTIONS = jmespath.Options(custom_functions=_MaaJmesFunctions())


class _CountingInterpreter(jmespath.visitor.TreeInterpreter):
    """The reference interpreter, charging every AST node visit to the budget."""

    def __init__(self, budget: Budget) -> None:
        super().__init__(_JMES_OPTIONS)
        self._budget = budget

    def visit(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        self._budget.charge_jmespath()
        return super().visit(node, *args, **kwargs)


def _compile_query(query: str, cache: BoundedLru[str, Any] | None) -> Any:
    if cache is None:
        return jmespath.parser.Parser().parse(query)
    return cache.get_or_compute(query, lambda: jmespath.parser.Parser().parse(query))


def jmespath_search(data: Any, query: str, budget: Budget) -> Any:
    """Run one JMESPath query under the budget; errors become PolicyEvaluationError."""
    if len(query) > budget.limits.max_query_chars:
        raise PolicyLimitError(
            f"JmesPath query is {len(query)} characters (limit {budget.limits.max_query_chars})",
            limit="max_query_chars",
        )
    try:
        parsed = _compile_query(query, budget.queries)
        return _CountingInterpreter(budget).visit(parsed.parsed, data)
    except jmespath.exceptions.JMESPathError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PolicyEvaluationError(f"JmesPath: query {query!r} failed: {first}") from None
    except RecursionError:
        raise PolicyLimitError(
            f"JmesPath query {query[:60]!r} nests too deeply", limit="max_query_chars"
        ) from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        # the reference interpreter lets Python errors through for some data: ordering a
        # string against a number (``[?x > `1`]``, ``max_by``), a zero slice step, ``ceil``
        # of an infinite or NaN number; they are the query's failure, not the service's
        raise PolicyEvaluationError(f"JmesPath: query {query!r} failed: {exc}") from None


def _jmespath(args: tuple[Items, ...], budget: Budget) -> Items:
    out: list[Item] = []
    for data_item, query_item in _product(args, budget):
        query = query_item.value
        if not isinstance(query, str):
            raise PolicyEvaluationError(
                f"JmesPath: the query must be a string, not {type(query).__name__}"
            )
        data = _load_json(data_item.value, budget, "JmesPath")
        result = jmespath_search(data, query, budget)
        _json_size_ok(result, budget)
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        _check_string(text, budget, "JmesPath result")
        _no_lone_surrogate(text, "JmesPath: the result")
        out.append(Item(text, data_item.read_only or query_item.read_only))
    return tuple(out)


# --- JsonToClaimValue --------------------------------------------------------------------


def _scalar_from_json(value: object, where: str) -> ClaimValue:
    if isinstance(value, str):
        return _no_lone_surrogate(value, f"JsonToClaimValue: {where}")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not MIN_INTEGER <= value <= MAX_INTEGER:
            raise PolicyEvaluationError(f"JsonToClaimValue: {where} {value} is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise PolicyEvaluationError(
                f"JsonToClaimValue: {where} {value!r} is a fraction; only integers are allowed"
            )
        return _scalar_from_json(int(value), where)
    if value is None:
        raise PolicyEvaluationError(f"JsonToClaimValue: {where} is null inside an array")
    kind = "an array" if isinstance(value, list) else "an object"
    raise PolicyEvaluationError(
        f"JsonToClaimValue: {where} is {kind}; only strings, integers, booleans "
        "and arrays of them are allowed"
    )


def _json_to_claim_value(args: tuple[Items, ...], budget: Budget) -> Items:
    out: list[Item] = []
    for (item,) in _product(args, budget):
        data = _load_json(item.value, budget, "JsonToClaimValue")
        if data is None:
            continue  # null -> no value; adding or issuing it is a no-op
        if isinstance(data, list):
            if len(data) > budget.limits.max_set_size:
                raise PolicyLimitError(
                    f"JsonToClaimValue: array of {len(data)} elements", limit="max_set_size"
                )
            for i, element in enumerate(data):
                out.append(Item(_scalar_from_json(element, f"element {i}"), item.read_only))
        else:
            out.append(Item(_scalar_from_json(data, "value"), item.read_only))
    return tuple(out)


# --- set and scalar functions ------------------------------------------------------------


def _is_subset_of(args: tuple[Items, ...], budget: Budget) -> Items:
    subset, superset = args
    budget.charge_tests(len(subset) * max(1, len(superset)))
    result = all(any(same_value(a.value, b.value) for b in superset) for a in subset)
    read_only = any(i.read_only for i in subset + superset)
    return (Item(result, read_only),)


def _append_string(args: tuple[Items, ...], budget: Budget) -> Items:
    out: list[Item] = []
    for a, b in _product(args, budget):
        if not isinstance(a.value, str) or not isinstance(b.value, str):
            raise PolicyEvaluationError(
                "AppendString: both arguments must be strings, got "
                f"{type(a.value).__name__} and {type(b.value).__name__}"
            )
        text = _check_string(a.value + b.value, budget, "AppendString result")
        out.append(Item(text, a.read_only or b.read_only))
    return tuple(out)


def _negate_bool(args: tuple[Items, ...], budget: Budget) -> Items:
    out: list[Item] = []
    for (a,) in _product(args, budget):
        if not isinstance(a.value, bool):
            raise PolicyEvaluationError(
                f"NegateBool: argument must be a boolean, got {type(a.value).__name__}"
            )
        out.append(Item(not a.value, a.read_only))
    return tuple(out)


def _contains_only_value(args: tuple[Items, ...], budget: Budget) -> Items:
    values, wanted = args
    out: list[Item] = []
    budget.charge_tests(len(values) * max(1, len(wanted)))
    for w in wanted:
        result = bool(values) and all(same_value(v.value, w.value) for v in values)
        out.append(Item(result, w.read_only or any(v.read_only for v in values)))
    return tuple(out)


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec("JmesPath", 2, _jmespath),
        FunctionSpec("JsonToClaimValue", 1, _json_to_claim_value),
        FunctionSpec("IsSubsetOf", 2, _is_subset_of),
        FunctionSpec("AppendString", 2, _append_string),
        FunctionSpec("NegateBool", 1, _negate_bool),
        FunctionSpec("ContainsOnlyValue", 2, _contains_only_value),
    )
}
