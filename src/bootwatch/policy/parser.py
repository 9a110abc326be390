r"""Policy text -> :class:`~bootwatch.policy.ast.PolicyAst`, with compiler-grade errors.

Two steps: the lark LALR grammar (``grammar.lark``) gives the syntax tree; ``_Builder``
turns it into the AST and checks what a context-free grammar cannot (versions, section
order, which actions a section allows, function names and arities, bound identifiers,
literal types). Every error is a :class:`~bootwatch.errors.PolicyParsingError` with the
1-based line and column and, for syntax errors, the tokens that would have been accepted.

Named leniencies (each recorded as a :class:`~bootwatch.policy.ast.Tolerance` on the AST,
and listed in docs/policy.md), accepted because published samples contain them:

``single-equals-in-condition``
    ``[type="x"]`` for ``[type=="x"]`` (claim-rule-functions sample-secure-boot line 13,
    policy-v1.2 sample line 14, author-sign-policy sample lines 4/9/10).
``positional-claim-type``
    ``issue("PlatformAttested", value=true)`` without ``type=`` (policy-v1.2 sample).
``version-keyword-case``
    ``Version= 1.0;`` (policy-examples SGX default, text format).
``issue-in-authorizationrules``
    ``issue(...)`` inside ``authorizationrules`` (tpm-sample-policies key attestation).
``unknown-escape-kept``
    a backslash before anything but ``"`` or ``\\`` is kept as written, so
    ``'\\windows\\...'`` and ``'\windows\...'`` reach JmesPath alike (tpm-attestation-concepts
    1.2 sample).
``byte-order-mark``
    a leading U+FEFF is ignored (editors on Windows write one).

Not accepted (the docs' samples that fail do so at the reported position): a missing ``;``
after a rule or after a section's ``}``, curly quotes, misspelled function names, wrong
arities and unbound identifiers.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from bootwatch.policy.ast import (
    Action,
    ActionKind,
    Call,
    ClaimProperty,
    Condition,
    Expr,
    Literal,
    Operator,
    PolicyAst,
    Position,
    Ref,
    Rule,
    Section,
    SectionKind,
    Test,
    Tolerance,
)
from bootwatch.policy.claims import ClaimIssuer, ClaimValueType
from bootwatch.policy.errors import PolicyParsingError
from bootwatch.policy.functions import FUNCTIONS
from bootwatch.policy.limits import MAX_EXPRESSION_DEPTH, MAX_INTEGER, MAX_POLICY_CHARS, MIN_INTEGER

__all__ = [
    "SUPPORTED_VERSIONS",
    "check_policy_text",
    "parse_policy",
]

SUPPORTED_VERSIONS = ((1, 0), (1, 1), (1, 2))

#: How expected terminals are shown in error messages.
_TERMINAL_NAMES = {
    "IDENT": "identifier",
    "STRING": "string",
    "INT": "integer",
    "VERSION_NUMBER": "version number (1.0, 1.1 or 1.2)",
    "VERSION_KW": "'version'",
    "SECTION_NAME": "'configurationrules', 'authorizationrules' or 'issuancerules'",
    "$END": "end of text",
}

#: Actions each section accepts (GRAMMAR-NOTES.md section 6; issue in authorization is a
#: named leniency, checked separately).
_ALLOWED = {
    SectionKind.CONFIGURATION: {ActionKind.ISSUE_PROPERTY, ActionKind.ADD},
    SectionKind.AUTHORIZATION: {ActionKind.PERMIT, ActionKind.DENY, ActionKind.ADD},
    SectionKind.ISSUANCE: {ActionKind.ADD, ActionKind.ISSUE, ActionKind.ISSUE_PROPERTY},
}

_ORDER = [SectionKind.CONFIGURATION, SectionKind.AUTHORIZATION, SectionKind.ISSUANCE]


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files("bootwatch.policy").joinpath("grammar.lark").read_text("utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _end_position(text: str, last: Token | None = None) -> Position:
    """The spot a missing token belongs: just after the last token.

    ``last`` is that token when known (lark gives ``$END`` the last token's position, and
    the parse tree's end is the end of its last token); otherwise the end of the text
    without trailing white space. Trailing comments are not tokens, so a missing ``;``
    before a ``// comment`` is reported where it belongs, not after the comment.
    """
    if last is not None and last.end_line is not None and last.end_column is not None:
        return Position(last.end_line, last.end_column)
    text = text.rstrip()
    line = text.count("\n") + 1
    return Position(line, len(text) - (text.rfind("\n") + 1) + 1)


def _syntax_error(exc: UnexpectedInput, text: str) -> PolicyParsingError:
    if isinstance(exc, UnexpectedToken):
        expected = tuple(sorted({_describe_terminal(t) for t in exc.expected}))
        if exc.token.type == "$END":
            pos = _end_position(text, exc.token)
            found = "end of text"
        else:
            pos = Position(exc.line, exc.column)
            found = f"{exc.token.value!r}"
    elif isinstance(exc, UnexpectedCharacters):
        expected = tuple(sorted({_describe_terminal(t) for t in exc.allowed or ()}))
        pos = Position(exc.line, exc.column)
        found = f"character {exc.char!r}"
    else:  # UnexpectedEOF (not produced by LALR, kept for completeness)
        expected = tuple(sorted({_describe_terminal(t) for t in getattr(exc, "expected", ())}))
        pos = _end_position(text)
        found = "end of text"
    message = f"unexpected {found}"
    if expected:
        message += "; expected " + ", ".join(expected)
    return PolicyParsingError(message, line=pos.line, column=pos.column, expected=expected)


#: NUL, or a UTF-16 surrogate with no partner: neither is text a policy can hold (no UTF-8
#: encodes a lone surrogate, no database text column holds NUL); JSON's escapes can carry
#: both into a JWS payload's plain-text policy.  And a carriage return that no line feed
#: follows: editors show it as a line break, but a ``//`` comment ran on through it and
#: swallowed the rule an operator saw on the next line (``=> permit(); // x<CR>[...] =>
#: deny();`` permitted what the deny rule was meant to stop)
_NOT_TEXT_RE = re.compile("[\x00\ud800-\udfff]|\r(?!\n)")


def check_policy_text(text: str) -> None:
    """Raise PolicyParsingError (line:column) when ``text`` holds NUL, a lone surrogate or
    a carriage return that ends no CRLF.

    Found by fuzzing (scripts/fuzz policy): such a text reached the policy hash's UTF-8
    encoding and raised UnicodeEncodeError, and a NUL reached the database on upload.
    """
    found = _NOT_TEXT_RE.search(text)
    if found is None:
        return
    at = found.start()
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    what = {"\x00": "a NUL character",
            "\r": "a carriage return without a line feed (use LF or CRLF line ends)"}.get(
        found.group(), f"a lone UTF-16 surrogate (U+{ord(found.group()):04X})")
    raise PolicyParsingError(f"{what} is not policy text", line=line, column=column)


def parse_policy(text: str) -> PolicyAst:
    """Parse and check a policy; raise PolicyParsingError (line, column, expected) if invalid."""
    if not isinstance(text, str):
        raise PolicyParsingError("policy text must be a string")
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyParsingError(
            f"policy is {len(text)} characters; the limit is {MAX_POLICY_CHARS}", line=1, column=1
        )
    check_policy_text(text)
    tolerances: list[Tolerance] = []
    if text.startswith("\ufeff"):
        tolerances.append(Tolerance("byte-order-mark", Position(1, 1), "leading U+FEFF ignored"))
        text = " " + text[1:]  # keep columns stable
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    except (LarkError, RecursionError) as exc:  # pragma: no cover - defensive
        raise PolicyParsingError(f"policy could not be parsed: {exc}", line=1, column=1) from None
    return _Builder(text, tolerances).build(tree)


def _pos(node: Tree[Token] | Token) -> Position:
    if isinstance(node, Token):
        return Position(node.line or 1, node.column or 1)
    return Position(node.meta.line, node.meta.column)


def _unescape(raw: str, pos: Position, tolerances: list[Tolerance]) -> str:
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    kept = False
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in '"\\':
                out.append(nxt)
            else:
                out.append(ch + nxt)
                kept = True
            i += 2
        else:
            out.append(ch)
            i += 1
    if kept:
        tolerances.append(
            Tolerance("unknown-escape-kept", pos, "backslash before other characters kept")
        )
    return "".join(out)


class _Builder:
    """Syntax tree -> AST, with the semantic checks."""

    def __init__(self, text: str, tolerances: list[Tolerance]) -> None:
        self.text = text
        self.tolerances = tolerances
        self.version: tuple[int, int] = (1, 0)

    def error(
        self, message: str, pos: Position, expected: tuple[str, ...] = ()
    ) -> PolicyParsingError:
        return PolicyParsingError(message, line=pos.line, column=pos.column, expected=expected)

    def build(self, tree: Tree[Token]) -> PolicyAst:
        version_tree, *section_trees = tree.children
        assert isinstance(version_tree, Tree)
        self.version = self._version(version_tree)
        sections: list[Section] = []
        for st in section_trees:
            assert isinstance(st, Tree)
            sections.append(self._section(st, sections))
        if not any(s.kind is SectionKind.AUTHORIZATION for s in sections):
            meta = tree.meta
            end = (
                Position(meta.end_line, meta.end_column)
                if not meta.empty
                else _end_position(self.text)
            )
            raise self.error(
                "the policy has no authorizationrules section",
                end,
                ("'authorizationrules'",),
            )
        return PolicyAst(self.version, tuple(sections), tuple(self.tolerances))

    def _version(self, tree: Tree[Token]) -> tuple[int, int]:
        kw, number = tree.children
        assert isinstance(kw, Token) and isinstance(number, Token)
        if str(kw) != "version":
            self.tolerances.append(
                Tolerance("version-keyword-case", _pos(kw), f"{str(kw)!r} read as 'version'")
            )
        major, minor = (int(p) for p in str(number).split("."))
        if (major, minor) not in SUPPORTED_VERSIONS:
            raise self.error(
                f"unsupported policy version {number}",
                _pos(number),
                tuple(f"{a}.{b}" for a, b in SUPPORTED_VERSIONS),
            )
        return (major, minor)

    def _section(self, tree: Tree[Token], before: list[Section]) -> Section:
        name_tok = tree.children[0]
        assert isinstance(name_tok, Token)
        kind = SectionKind(str(name_tok))
        pos = _pos(name_tok)
        if kind is SectionKind.CONFIGURATION and self.version < (1, 1):
            raise self.error("configurationrules needs policy version 1.1 or later", pos)
        for prev in before:
            if prev.kind is kind:
                raise self.error(
                    f"second {kind.value} section (first at line {prev.pos.line})", pos
                )
            if _ORDER.index(prev.kind) > _ORDER.index(kind):
                raise self.error(
                    f"{kind.value} must come before {prev.kind.value} "
                    "(order: configurationrules, authorizationrules, issuancerules)",
                    pos,
                )
        rules = tuple(self._rule(r, kind) for r in tree.children[1:] if isinstance(r, Tree))
        return Section(kind, rules, pos)

    # --- rules ---------------------------------------------------------------------------

    def _rule(self, tree: Tree[Token], section: SectionKind) -> Rule:
        bound: dict[str, Position] = {}
        conditions: list[Condition] = []
        action_tree: Tree[Token] | None = None
        for child in tree.children:
            if isinstance(child, Tree) and child.data == "conditions":
                for ct in child.children:
                    assert isinstance(ct, Tree)
                    conditions.append(self._condition(ct, bound))
            elif isinstance(child, Tree):
                action_tree = child
        assert action_tree is not None
        action = self._action(action_tree, bound, section)
        text = " ".join(self.text[tree.meta.start_pos : tree.meta.end_pos].split())
        return Rule(tuple(conditions), action, _pos(tree), text)

    def _condition(self, tree: Tree[Token], bound: dict[str, Position]) -> Condition:
        negated = False
        identifier: str | None = None
        tests: list[Test] = []
        pos = _pos(tree)
        pending: list[Tree[Token]] = []
        for child in tree.children:
            if isinstance(child, Token) and child.type == "NOT":
                negated = True
            elif isinstance(child, Token) and child.type == "IDENT":
                identifier = str(child)
                if identifier in bound:
                    raise self.error(
                        f"identifier {identifier!r} is already bound in this rule "
                        f"(at {bound[identifier]})",
                        _pos(child),
                    )
            elif isinstance(child, Tree):
                pending.append(child)
        if negated and self.version < (1, 2):
            raise self.error("the ! operator needs policy version 1.2", pos)
        if negated and identifier is not None:
            raise self.error(
                f"a negated condition matches no claim, so it cannot bind {identifier!r}", pos
            )
        for tt in pending:
            tests.append(self._test(tt, bound))
        if identifier is not None:
            bound[identifier] = pos
        return Condition(identifier, negated, tuple(tests), pos)

    def _test(self, tree: Tree[Token], bound: dict[str, Position]) -> Test:
        prop_tree, cmp_tree, operand_tree = tree.children
        assert isinstance(prop_tree, Tree) and isinstance(cmp_tree, Tree)
        prop = self._prop(prop_tree)
        cmp_tok = cmp_tree.children[0]
        assert isinstance(cmp_tok, Token)
        if cmp_tok.type == "ASSIGN":
            self.tolerances.append(
                Tolerance("single-equals-in-condition", _pos(cmp_tok), "'=' read as '=='")
            )
            op = Operator.EQ
        else:
            op = Operator(str(cmp_tok))
        operand = self._expr(operand_tree, bound, 0)
        if isinstance(operand, Literal):
            self._check_literal_test(prop, op, operand)
        elif op not in (Operator.EQ, Operator.NE) and prop is not ClaimProperty.VALUE:
            raise self.error(f"{prop.value} can only be compared with == or !=", _pos(cmp_tok))
        return Test(prop, op, operand, _pos(tree))

    def _check_literal_test(self, prop: ClaimProperty, op: Operator, lit: Literal) -> None:
        ordering = op not in (Operator.EQ, Operator.NE)
        if ordering and (isinstance(lit.value, bool) or not isinstance(lit.value, int)):
            raise self.error(
                f"operator {op.value} needs an integer operand; strings and booleans "
                "support only == and !=",
                lit.pos,
                ("integer",),
            )
        if prop is ClaimProperty.ISSUER:
            names = tuple(i.value for i in ClaimIssuer)
            if lit.value not in names:
                raise self.error(f"unknown issuer {lit.value!r}", lit.pos, names)
        elif prop is ClaimProperty.VALUE_TYPE:
            names = tuple(v.value for v in ClaimValueType)
            if lit.value not in names:
                raise self.error(f"unknown valueType {lit.value!r}", lit.pos, names)
        elif prop is ClaimProperty.TYPE and not isinstance(lit.value, str):
            raise self.error("a claim type is a string", lit.pos, ("string",))

    def _prop(self, tree: Tree[Token]) -> ClaimProperty:
        tok = tree.children[0]
        assert isinstance(tok, Token)
        return ClaimProperty(str(tok))

    # --- expressions ---------------------------------------------------------------------

    def _expr(
        self, node: Tree[Token] | Token | None, bound: dict[str, Position], depth: int
    ) -> Expr:
        assert isinstance(node, Tree)
        if depth > MAX_EXPRESSION_DEPTH:
            raise self.error(
                f"function calls nest deeper than {MAX_EXPRESSION_DEPTH} levels", _pos(node)
            )
        if node.data == "literal":
            tok = node.children[0]
            assert isinstance(tok, Token)
            return self._literal(tok)
        if node.data == "ref":
            ident, prop_tree = node.children
            assert isinstance(ident, Token) and isinstance(prop_tree, Tree)
            if str(ident) not in bound:
                raise self.error(
                    f"identifier {str(ident)!r} is not bound by an earlier condition of this rule",
                    _pos(ident),
                    tuple(sorted(bound)),
                )
            return Ref(str(ident), self._prop(prop_tree), _pos(ident))
        # call
        name_tok = node.children[0]
        assert isinstance(name_tok, Token)
        name = str(name_tok)
        pos = _pos(name_tok)
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise self.error(f"unknown function {name!r}", pos, tuple(sorted(FUNCTIONS)))
        if self.version < (1, 2):
            raise self.error(f"function {name} needs policy version 1.2", pos)
        args = tuple(self._expr(a, bound, depth + 1) for a in node.children[1:] if a is not None)
        if len(args) != spec.arity:
            raise self.error(
                f"{name} takes {spec.arity} argument{'s' if spec.arity != 1 else ''}, "
                f"got {len(args)}",
                pos,
            )
        return Call(name, args, pos)

    def _literal(self, tok: Token) -> Literal:
        pos = _pos(tok)
        if tok.type == "STRING":
            return Literal(_unescape(str(tok), pos, self.tolerances), pos)
        if tok.type == "INT":
            digits = str(tok)
            if len(digits.lstrip("-")) > 19 or not MIN_INTEGER <= int(digits) <= MAX_INTEGER:
                raise self.error(f"integer {digits} is outside the 64-bit range", pos)
            return Literal(int(digits), pos)
        return Literal(tok.type == "TRUE", pos)

    # --- actions -------------------------------------------------------------------------

    def _action(
        self, tree: Tree[Token], bound: dict[str, Position], section: SectionKind
    ) -> Action:
        pos = _pos(tree)
        if tree.data == "decision":
            tok = tree.children[0]
            assert isinstance(tok, Token)
            kind = ActionKind(str(tok))
            self._check_allowed(kind, section, pos)
            return Action(kind, pos)
        verb_tree = tree.children[0]
        assert isinstance(verb_tree, Tree)
        verb = verb_tree.children[0]
        assert isinstance(verb, Token)
        kind = ActionKind(str(verb))
        self._check_allowed(kind, section, pos)
        if tree.data == "copy_claim":
            ident = tree.children[-1]
            assert isinstance(ident, Token)
            if str(ident) not in bound:
                raise self.error(
                    f"identifier {str(ident)!r} is not bound by a condition of this rule",
                    _pos(ident),
                    tuple(sorted(bound)),
                )
            return Action(kind, pos, copy_of=str(ident))
        args: dict[ClaimProperty, Expr] = {}
        rest = tree.children[1:]
        if tree.data == "positional_claim":
            type_tok = rest[0]
            assert isinstance(type_tok, Token)
            self.tolerances.append(
                Tolerance("positional-claim-type", _pos(type_tok), "first argument read as type=")
            )
            args[ClaimProperty.TYPE] = self._literal(type_tok)
            rest = rest[1:]
        for arg in rest:
            assert isinstance(arg, Tree)
            prop_tree, _assign, value_tree = arg.children
            assert isinstance(prop_tree, Tree)
            prop = self._prop(prop_tree)
            if prop in args:
                raise self.error(f"{prop.value}= given twice", _pos(arg))
            if prop is ClaimProperty.ISSUER:
                raise self.error(
                    "issuer cannot be set; claims a policy makes have issuer AttestationPolicy",
                    _pos(arg),
                    ("type", "value", "valueType"),
                )
            args[prop] = self._expr(value_tree, bound, 0)
        for required in (ClaimProperty.TYPE, ClaimProperty.VALUE):
            if required not in args:
                raise self.error(f"{kind.value}(...) needs {required.value}=", pos)
        value_type = args.get(ClaimProperty.VALUE_TYPE)
        if isinstance(value_type, Literal) and value_type.value not in (
            ClaimValueType.STRING.value,
            ClaimValueType.INTEGER.value,
            ClaimValueType.BOOLEAN.value,
        ):
            raise self.error(
                f"unknown valueType {value_type.value!r}",
                value_type.pos,
                ("String", "Integer", "Boolean"),
            )
        claim_type = args[ClaimProperty.TYPE]
        if isinstance(claim_type, Literal) and not isinstance(claim_type.value, str):
            raise self.error("a claim type is a string", claim_type.pos, ("string",))
        if (kind is ActionKind.ISSUE_PROPERTY and isinstance(claim_type, Literal)
                and claim_type.value == "omit_x5c"):
            # accepted (MAA documents it), but our tokens' headers never change: named,
            # not silently ignored (found in review)
            self.tolerances.append(Tolerance(
                "omit-x5c-has-no-effect", pos,
                "omit_x5c read but tokens always carry jku and kid, never x5c or x5t"))
        return Action(
            kind,
            pos,
            claim_type=claim_type,
            value=args[ClaimProperty.VALUE],
            value_type=value_type,
        )

    def _check_allowed(self, kind: ActionKind, section: SectionKind, pos: Position) -> None:
        if kind in _ALLOWED[section]:
            return
        if kind is ActionKind.ISSUE and section is SectionKind.AUTHORIZATION:
            self.tolerances.append(
                Tolerance("issue-in-authorizationrules", pos, "issue() read in authorizationrules")
            )
            return
        allowed = tuple(sorted(f"{k.value}()" for k in _ALLOWED[section]))
        raise self.error(f"{kind.value}() is not allowed in {section.value}", pos, allowed)
