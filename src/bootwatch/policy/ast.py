"""The parsed form of a policy: small frozen dataclasses, positions kept for error messages.

Produced by :mod:`bootwatch.policy.parser`, consumed by :mod:`bootwatch.policy.evaluator`.
Every node records the 1-based line and column where it starts so evaluation errors can
point at the rule, the way parse errors do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Action",
    "ActionKind",
    "Call",
    "ClaimProperty",
    "Condition",
    "Expr",
    "Literal",
    "Operator",
    "PolicyAst",
    "Position",
    "Ref",
    "Rule",
    "Section",
    "SectionKind",
    "Test",
    "Tolerance",
]


class SectionKind(enum.Enum):
    """The three rule sections, in evaluation order."""

    CONFIGURATION = "configurationrules"
    AUTHORIZATION = "authorizationrules"
    ISSUANCE = "issuancerules"


class ClaimProperty(enum.Enum):
    """Claim properties a condition can test and a claim argument can set."""

    TYPE = "type"
    VALUE = "value"
    ISSUER = "issuer"
    VALUE_TYPE = "valueType"


class Operator(enum.Enum):
    """Comparison operators (Integer: all; String and Boolean: == and !=)."""

    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class ActionKind(enum.Enum):
    """What a rule does when its conditions hold."""

    PERMIT = "permit"
    DENY = "deny"
    ADD = "add"
    ISSUE = "issue"
    ISSUE_PROPERTY = "issueproperty"


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column of a node's first character."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, integer or boolean literal."""

    value: str | int | bool
    pos: Position


@dataclass(frozen=True, slots=True)
class Ref:
    """``identifier.property``: a property of the claim(s) a condition bound."""

    identifier: str
    prop: ClaimProperty
    pos: Position


@dataclass(frozen=True, slots=True)
class Call:
    """A 1.2 function call, e.g. ``JmesPath(c.value, "Events")``."""

    name: str
    args: tuple[Expr, ...]
    pos: Position


Expr = Literal | Ref | Call


@dataclass(frozen=True, slots=True)
class Test:
    """``property op operand`` inside a condition's brackets."""

    prop: ClaimProperty
    op: Operator
    operand: Expr
    pos: Position


@dataclass(frozen=True, slots=True)
class Condition:
    """``[!][identifier:][test, test, ...]``: holds when some claim passes every test.

    Negated (1.2 ``!``): holds when no claim passes every test.
    """

    identifier: str | None
    negated: bool
    tests: tuple[Test, ...]
    pos: Position


@dataclass(frozen=True, slots=True)
class Action:
    """The action of a rule.

    For ``add``/``issue``/``issueproperty`` either ``copy_of`` names a bound claim
    (``claim=c``) or ``claim_type`` and ``value`` give the new claim.
    """

    kind: ActionKind
    pos: Position
    copy_of: str | None = None
    claim_type: Expr | None = None
    value: Expr | None = None
    value_type: Expr | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """``conditions => action;`` with its source text (whitespace collapsed) and position."""

    conditions: tuple[Condition, ...]
    action: Action
    pos: Position
    text: str

    @property
    def label(self) -> str:
        """The rule as error messages and results show it: ``line N: <text>``."""
        return f"line {self.pos.line}: {self.text}"


@dataclass(frozen=True, slots=True)
class Section:
    """One ``name { rules };`` block."""

    kind: SectionKind
    rules: tuple[Rule, ...]
    pos: Position


@dataclass(frozen=True, slots=True)
class Tolerance:
    """A deviation from the documented grammar that bootwatch accepted (named leniency)."""

    name: str
    pos: Position
    detail: str


@dataclass(frozen=True, slots=True)
class PolicyAst:
    """A whole policy: version, sections in text order, and the leniencies used."""

    version: tuple[int, int]
    sections: tuple[Section, ...]
    tolerances: tuple[Tolerance, ...]

    def section(self, kind: SectionKind) -> Section | None:
        """The section of that kind, or None if the policy has none."""
        for section in self.sections:
            if section.kind is kind:
                return section
        return None
