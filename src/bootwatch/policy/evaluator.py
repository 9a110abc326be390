"""Run a compiled policy over a claim set (maa-protocol.md 2.1-2.4, GRAMMAR-NOTES.md 5-6).

Semantics, including the choices the docs leave open (docs/policy.md lists them):

* Sections run configuration -> authorization -> issuance; rules in text order; claims
  added by a rule are visible to every later rule.
* A condition holds when at least one claim passes all its tests; its identifier binds
  *every* claim that passed (so ``c.value`` is a set, as the IsSubsetOf example needs).
  A negated condition (``!``) holds when no claim passes. Conditions of a rule are
  checked left to right; a reference may use identifiers bound to its left.
* A test against a set operand: ``==`` holds if the property equals any element, ``!=`` if
  it equals none; ordering operators need integers on both sides (else the test fails).
  Equality is typed: ``true`` is not ``1``, ``"100"`` is not ``100``.
* ``add`` appends to the incoming set; ``issue`` to the incoming and outgoing sets;
  ``issueproperty`` to the incoming and property sets. A set value gives one claim per
  element; an empty value (JSON null) gives none. ``claim=c`` copies every bound claim.
* Authorization succeeds when some ``permit()`` fires and no ``deny()`` does; the first
  ``deny()`` ends authorization. Issuance runs only when authorization succeeded.
* Read-only claims (and values derived from them) cannot be issued: a PolicyEvaluationError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from bootwatch.policy.ast import (
    Action,
    ActionKind,
    Call,
    ClaimProperty,
    Condition,
    Expr,
    Literal,
    Operator,
    Ref,
    Rule,
    SectionKind,
)
from bootwatch.policy.claims import Claim, ClaimIssuer, ClaimValue, ClaimValueType
from bootwatch.policy.compiler import CompiledPolicy
from bootwatch.policy.errors import PolicyEvaluationError, PolicyLimitError
from bootwatch.policy.functions import FUNCTIONS, Budget, Item, Items, same_value
from bootwatch.policy.limits import DEFAULT_LIMITS, MAX_INTEGER, EvaluationLimits

#: Property claims the engine understands, with their documented defaults
#: (maa-protocol.md 2.4: claim-sets.md and policy-version-1-1/1-2.md).
PROPERTY_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {
        "require_valid_aik_cert": True,
        "required_pcr_mask": 0xFFFFFF,
        "report_validity_in_minutes": 1440,
        "omit_x5c": False,
    }
)

_PROPERTY_TYPES: Mapping[str, type] = MappingProxyType(
    {
        "require_valid_aik_cert": bool,
        "required_pcr_mask": int,
        "report_validity_in_minutes": int,
        "omit_x5c": bool,
    }
)

#: the largest ``report_validity_in_minutes`` (maa-protocol 2.4: "max one year"); the
#: token code applies the same bound (bootwatch.attest.token)
MAX_VALIDITY_MINUTES = 366 * 24 * 60

#: Integer text ``valueType="Integer"`` converts: ASCII digits with at most one ``-``.
#: (``str.isdigit`` also accepts "²" and "--5", which ``int`` then refuses with a bare
#: ValueError, and Arabic-Indic digits, which are no policy integer.)
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One evaluated rule: where it is, whether it fired, and what it did."""

    section: SectionKind
    line: int
    rule: str
    fired: bool
    effect: str

    def to_json(self) -> dict[str, object]:
        return {
            "section": self.section.value,
            "line": self.line,
            "rule": self.rule,
            "fired": self.fired,
            "effect": self.effect,
        }


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """The outcome of one evaluation.

    ``deciding_rule`` is the rule (``line N: text``) that denied, or the first ``permit()``
    that fired; None when no rule decided (``reason`` then says so).
    """

    permitted: bool
    deciding_rule: str | None
    reason: str
    issued: tuple[Claim, ...]
    properties: Mapping[str, object]
    trace: tuple[TraceEntry, ...]
    incoming: tuple[Claim, ...]
    #: the property names the policy set itself (``properties`` also holds defaults);
    #: callers whose attestation type has other defaults (azurevm) apply only these
    explicit_properties: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, object]:
        """The JSON shape of ``bootwatch policy eval --json``."""
        return {
            "permitted": self.permitted,
            "deciding_rule": self.deciding_rule,
            "reason": self.reason,
            "issued": [c.to_json() for c in self.issued],
            "properties": dict(self.properties),
            "trace": [t.to_json() for t in self.trace],
        }


class _ClaimSet:
    """The incoming claim set, indexed by type for the common ``type == "x"`` test."""

    __slots__ = ("_limit", "by_type", "claims")

    def __init__(self, claims: Sequence[Claim], limit: int) -> None:
        self._limit = limit
        self.claims: list[Claim] = []
        self.by_type: dict[str, list[Claim]] = {}
        for claim in claims:
            self.append(claim)

    def append(self, claim: Claim) -> None:
        if len(self.claims) >= self._limit:
            raise PolicyLimitError(
                f"the claim set would grow past {self._limit} claims", limit="max_claims"
            )
        self.claims.append(claim)
        bucket = self.by_type.get(claim.type)
        if bucket is None:
            self.by_type[claim.type] = [claim]
        else:
            bucket.append(claim)


def _property_of(claim: Claim, prop: ClaimProperty) -> ClaimValue:
    if prop is ClaimProperty.TYPE:
        return claim.type
    if prop is ClaimProperty.VALUE:
        return claim.value
    if prop is ClaimProperty.ISSUER:
        return claim.issuer.value
    return claim.value_type.value


def _compare(left: ClaimValue, op: Operator, right: ClaimValue) -> bool:
    if op is Operator.EQ:
        return same_value(left, right)
    if op is Operator.NE:
        return not same_value(left, right)
    if (
        isinstance(left, bool)
        or isinstance(right, bool)
        or not isinstance(left, int)
        or not isinstance(right, int)
    ):
        return False
    if op is Operator.LT:
        return left < right
    if op is Operator.LE:
        return left <= right
    if op is Operator.GT:
        return left > right
    return left >= right


class _Run:
    """State of one evaluation."""

    def __init__(self, policy: CompiledPolicy, incoming: Sequence[Claim], limits: EvaluationLimits):
        if len(incoming) > limits.max_claims:
            raise PolicyLimitError(
                f"{len(incoming)} incoming claims (limit {limits.max_claims})", limit="max_claims"
            )
        self.policy = policy
        self.limits = limits
        self.budget = Budget(limits, queries=policy.queries)
        self.claims = _ClaimSet(incoming, limits.max_claims)
        self.issued: list[Claim] = []
        self.properties: dict[str, object] = dict(PROPERTY_DEFAULTS)
        self.explicit: set[str] = set()
        self.trace: list[TraceEntry] = []

    # --- expressions ---------------------------------------------------------------------

    def expr(self, expr: Expr, env: Mapping[str, list[Claim]]) -> Items:
        if isinstance(expr, Literal):
            return (Item(expr.value),)
        if isinstance(expr, Ref):
            return tuple(
                Item(_property_of(c, expr.prop), c.read_only) for c in env[expr.identifier]
            )
        return self.call(expr, env)

    def call(self, call: Call, env: Mapping[str, list[Claim]]) -> Items:
        args = tuple(self.expr(a, env) for a in call.args)
        return FUNCTIONS[call.name].impl(args, self.budget)

    # --- conditions ----------------------------------------------------------------------

    def matches(self, cond: Condition, env: Mapping[str, list[Claim]]) -> list[Claim]:
        candidates: Sequence[Claim] | None = None
        checks: list[tuple[ClaimProperty, Operator, Items]] = []
        for test in cond.tests:
            if (
                candidates is None
                and test.prop is ClaimProperty.TYPE
                and test.op is Operator.EQ
                and isinstance(test.operand, Literal)
                and isinstance(test.operand.value, str)
            ):
                candidates = self.claims.by_type.get(test.operand.value, ())
                continue
            checks.append((test.prop, test.op, self.expr(test.operand, env)))
        if candidates is None:
            candidates = self.claims.claims
        if not checks:
            return list(candidates)
        self.budget.charge_tests(len(candidates) * len(checks))
        return [c for c in candidates if all(self._passes(c, chk) for chk in checks)]

    @staticmethod
    def _passes(claim: Claim, check: tuple[ClaimProperty, Operator, Items]) -> bool:
        prop, op, operand = check
        left = _property_of(claim, prop)
        if op is Operator.NE:
            return not any(same_value(left, item.value) for item in operand)
        return any(_compare(left, op, item.value) for item in operand)

    def conditions_hold(self, rule: Rule) -> dict[str, list[Claim]] | None:
        env: dict[str, list[Claim]] = {}
        for cond in rule.conditions:
            found = self.matches(cond, env)
            if cond.negated:
                if found:
                    return None
                continue
            if not found:
                return None
            if cond.identifier is not None:
                env[cond.identifier] = found
        return env

    # --- actions -------------------------------------------------------------------------

    def new_claims(self, action: Action, env: Mapping[str, list[Claim]], rule: Rule) -> list[Claim]:
        if action.copy_of is not None:
            return list(env[action.copy_of])
        assert action.claim_type is not None and action.value is not None
        types = self.expr(action.claim_type, env)
        if len(types) != 1 or not isinstance(types[0].value, str) or not types[0].value:
            raise PolicyEvaluationError(
                f"{rule.label}: the claim type must be one non-empty string, "
                f"got {[t.value for t in types]!r}"
            )
        ctype = types[0].value
        forced: ClaimValueType | None = None
        if action.value_type is not None:
            vts = self.expr(action.value_type, env)
            try:
                forced = ClaimValueType(vts[0].value) if len(vts) == 1 else None
            except ValueError:
                forced = None
            if forced is None or forced is ClaimValueType.JSON:
                raise PolicyEvaluationError(
                    f"{rule.label}: valueType must be String, Integer or Boolean"
                )
        items = self.expr(action.value, env)
        if len(items) > self.limits.max_set_size:
            raise PolicyLimitError(
                f"one action would add {len(items)} claims", limit="max_set_size", rule=rule.label
            )
        out = []
        for item in items:
            value = item.value if forced is None else _coerce(item.value, forced, rule)
            vtype = forced or ClaimValueType.of(value)
            out.append(Claim(ctype, value, vtype, ClaimIssuer.ATTESTATION_POLICY, item.read_only))
        return out

    def act(self, rule: Rule, env: Mapping[str, list[Claim]]) -> str:
        kind = rule.action.kind
        made = self.new_claims(rule.action, env, rule)
        if not made:
            return f"{kind.value}: empty value, nothing added"
        if kind is ActionKind.ISSUE:
            for claim in made:
                if claim.read_only:
                    raise PolicyEvaluationError(
                        f"{rule.label}: claim {claim.type!r} is read-only (or derived from a "
                        "read-only service claim) and cannot be issued; issue a claim the "
                        "policy computes instead"
                    )
        for claim in made:
            self.claims.append(claim)
        if kind is ActionKind.ISSUE:
            self.issued.extend(made)
        elif kind is ActionKind.ISSUE_PROPERTY:
            for claim in made:
                self.properties[claim.type] = _check_property(claim, rule)
                self.explicit.add(claim.type)
        names = ", ".join(sorted({c.type for c in made}))
        return f"{kind.value}: {len(made)} claim{'s' if len(made) != 1 else ''} ({names})"

    # --- driver --------------------------------------------------------------------------

    def run_rule(self, section: SectionKind, rule: Rule) -> tuple[bool, str]:
        self.budget.rules += 1
        if self.budget.rules > self.limits.max_rules:
            raise PolicyLimitError(
                f"more than {self.limits.max_rules} rules evaluated", limit="max_rules"
            )
        try:
            env = self.conditions_hold(rule)
            if env is None:
                self.trace.append(TraceEntry(section, rule.pos.line, rule.text, False, ""))
                return False, ""
            if rule.action.kind in (ActionKind.PERMIT, ActionKind.DENY):
                effect = rule.action.kind.value
            else:
                effect = self.act(rule, env)
        except PolicyLimitError as exc:
            if exc.rule is not None:
                raise
            raise PolicyLimitError(exc.reason, limit=exc.limit, rule=rule.label) from None
        except PolicyEvaluationError as exc:
            if exc.message.startswith("line "):
                raise
            raise PolicyEvaluationError(f"{rule.label}: {exc.message}") from None
        self.trace.append(TraceEntry(section, rule.pos.line, rule.text, True, effect))
        return True, effect

    def run(self) -> EvaluationResult:
        ast = self.policy.ast
        config = ast.section(SectionKind.CONFIGURATION)
        if config is not None:
            for rule in config.rules:
                self.run_rule(SectionKind.CONFIGURATION, rule)
        permit: Rule | None = None
        deny: Rule | None = None
        auth = ast.section(SectionKind.AUTHORIZATION)
        for rule in auth.rules if auth is not None else ():
            fired, _ = self.run_rule(SectionKind.AUTHORIZATION, rule)
            if fired and rule.action.kind is ActionKind.DENY:
                deny = rule
                break
            if fired and rule.action.kind is ActionKind.PERMIT and permit is None:
                permit = rule
        if deny is not None:
            return self.result(False, deny.label, "a deny() rule fired")
        if permit is None:
            return self.result(False, None, "no permit() rule fired in authorizationrules")
        issuance = ast.section(SectionKind.ISSUANCE)
        for rule in issuance.rules if issuance is not None else ():
            self.run_rule(SectionKind.ISSUANCE, rule)
        return self.result(True, permit.label, "a permit() rule fired and no deny() did")

    def result(self, permitted: bool, deciding: str | None, reason: str) -> EvaluationResult:
        return EvaluationResult(
            permitted=permitted,
            deciding_rule=deciding,
            reason=reason,
            issued=tuple(self.issued) if permitted else (),
            properties=MappingProxyType(self.properties),
            trace=tuple(self.trace),
            incoming=tuple(self.claims.claims),
            explicit_properties=frozenset(self.explicit),
        )


def _coerce(value: ClaimValue, target: ClaimValueType, rule: Rule) -> ClaimValue:
    if ClaimValueType.of(value) is target:
        return value
    if target is ClaimValueType.STRING and isinstance(value, (int, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if target is ClaimValueType.INTEGER and isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text) and len(text) <= 20 and abs(int(text)) <= MAX_INTEGER:
            return int(text)
    if target is ClaimValueType.BOOLEAN and value in ("true", "false"):
        return value == "true"
    raise PolicyEvaluationError(f"{rule.label}: {value!r} cannot be given valueType {target.value}")


def _check_property(claim: Claim, rule: Rule) -> object:
    expected = _PROPERTY_TYPES.get(claim.type)
    value = claim.value
    if expected is None:
        return value
    if expected is bool and not isinstance(value, bool):
        raise PolicyEvaluationError(f"{rule.label}: property {claim.type} must be a boolean")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise PolicyEvaluationError(f"{rule.label}: property {claim.type} must be an integer")
    if claim.type == "required_pcr_mask" and not 0 <= value <= 0xFFFFFF:  # type: ignore[operator]
        raise PolicyEvaluationError(
            f"{rule.label}: required_pcr_mask must be between 0 and 0xFFFFFF (PCRs 0-23)"
        )
    if claim.type == "report_validity_in_minutes" and not (
        1 <= value <= MAX_VALIDITY_MINUTES  # type: ignore[operator]
    ):
        raise PolicyEvaluationError(
            f"{rule.label}: report_validity_in_minutes must be between 1 and "
            f"{MAX_VALIDITY_MINUTES} (one year)"
        )
    return value


def evaluate(
    policy: CompiledPolicy,
    incoming: Sequence[Claim],
    *,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> EvaluationResult:
    """Evaluate ``policy`` over ``incoming``; raise PolicyEvaluationError on failure."""
    return _Run(policy, incoming, limits).run()


__all__ = ["MAX_VALIDITY_MINUTES", "PROPERTY_DEFAULTS", "EvaluationResult", "TraceEntry",
           "evaluate"]
