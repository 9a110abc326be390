"""claim-rule-functions.md: every worked example (input claims, rule, expected claims), the
doc's typos reported where they are, and the documented edge cases of each function."""

from __future__ import annotations

import json

import pytest

from bootwatch.errors import PolicyEvaluationError, PolicyParsingError
from bootwatch.policy import Claim, ClaimIssuer, compile_policy, evaluate

P = "claim-rule-functions__"


def _run(pc, rule: str, claims: list[Claim]):  # type: ignore[no-untyped-def]
    return evaluate(compile_policy(pc.wrap(rule)), claims)


def _pairs(claims) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((c.type, json.dumps(c.value)) for c in claims)


#: example -> (fix of the doc's typo or None, expected parse error (line offset, column, words))
EXAMPLES = {
    "jmespath-function--arguments-constructed-from-claims": None,
    "jsontoclaimvalue-function--json-array": None,
    "jsontoclaimvalue-function--json-null": None,
    "issubsetof-function--usage-example": None,
    "appendstring-function--usage-example": (("c:[", "c1:["), (1, 86, "'c1' is not bound")),
    "negatebool-function--usage-example": (("NegateBol", "NegateBool"), (1, 47, "NegateBol")),
    "containsonlyvalue-function--usage-example": (
        ("ContainsOnlyValue(100)", "ContainsOnlyValue(c.value, 100)"),
        (1, 45, "takes 2 arguments, got 1"),
    ),
    "not-condition-operator--usage-example": (("300)", "300);"), (3, 1, "expected ';'")),
}

#: Where the doc's expected-claims block itself has a typo (INDEX.md), the prose's value.
EXPECTED_FIXES = {
    # output block says type JmesPathQuery; the rule and the prose say JmesPathResult
    "jmespath-function--arguments-constructed-from-claims": (
        'Claim3: {type="JmesPathQuery"',
        'Claim3: {type="JmesPathResult"',
    ),
    # output block says type Claim2; the prose says the added claim is Claim3
    "not-condition-operator--usage-example": ('Claim3: {type="Claim2"', 'Claim3: {type="Claim3"'),
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_documented_example(pc, example: str) -> None:
    rule = pc.read(f"{P}{example}__rule.txt")
    claims = pc.claims(pc.read(f"{P}{example}__input-claims.txt"))
    expected_text = pc.read(f"{P}{example}__expected-claims.txt")
    if example in EXPECTED_FIXES:
        old, new = EXPECTED_FIXES[example]
        assert old in expected_text
        expected_text = expected_text.replace(old, new)
    fix = EXAMPLES[example]
    if fix is not None:
        (old, new), (line, column, words) = fix
        with pytest.raises(PolicyParsingError) as info:
            compile_policy(pc.wrap(rule))
        assert (info.value.line, info.value.column) == (pc.fragment_line + line - 1, column)
        assert words in str(info.value)
        rule = rule.replace(old, new)
    result = _run(pc, rule, claims)
    assert _pairs(result.incoming) == _pairs(pc.claims(expected_text))


def test_jsontoclaimvalue_number_boolean_string(pc) -> None:
    """The doc prints every value quoted; the results are typed (INDEX.md). The input's
    'abc' is read as the JSON string "abc" (bare abc is not JSON)."""
    example = "jsontoclaimvalue-function--json-number-boolean-string"
    claims = [
        Claim.custom("JsonIntegerData", "100"),
        Claim.custom("JsonBooleanData", "true"),
        Claim.custom("JsonStringData", '"abc"'),
    ]
    result = _run(pc, pc.read(f"{P}{example}__rule.txt"), claims)
    added = {c.type: c.value for c in result.incoming[3:]}
    assert added == {"IntegerResult": 100, "BooleanResult": True, "StringResult": "abc"}
    assert type(added["IntegerResult"]) is int and added["BooleanResult"] is True
    assert all(c.issuer is ClaimIssuer.ATTESTATION_POLICY for c in result.incoming[3:])


def test_jmespath_literal_arguments(pc) -> None:
    """Prose: adds JmesPathResult holding "bar"; the value is the JSON text of the result."""
    rule = pc.read(f"{P}jmespath-function--literal-arguments-boolean-integer-string__rule.txt")
    result = _run(pc, rule, [])
    assert [(c.type, c.value) for c in result.incoming] == [("JmesPathResult", '"bar"')]


def _value(pc, expr: str, claims: list[Claim] | None = None):  # type: ignore[no-untyped-def]
    result = _run(
        pc, f'c:[type=="in"] => add(type="out", value={expr});', claims or [Claim.custom("in", "x")]
    )
    return [c.value for c in result.incoming if c.type == "out"]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('JsonToClaimValue("1.5")', "fraction"),
        ('JsonToClaimValue("{\\"a\\": 1}")', "object"),
        ('JsonToClaimValue("[[1]]")', "array"),
        ('JsonToClaimValue("not json")', "not valid JSON"),
        ('JmesPath("{}", "[?")', "JmesPath"),
        ('NegateBool("true")', "boolean"),
        ("AppendString(1, 2)", "strings"),
        ('JmesPath("{}", 5)', "query must be a string"),
    ],
)
def test_function_errors(pc, expr: str, message: str) -> None:
    with pytest.raises(PolicyEvaluationError) as info:
        _value(pc, expr)
    assert message in str(info.value)
    assert str(info.value).startswith(f"line {pc.fragment_line}: ")


def test_function_edge_cases(pc) -> None:
    assert _value(pc, 'JsonToClaimValue("2.0")') == [2]
    assert _value(pc, 'JsonToClaimValue("null")') == []
    assert _value(pc, 'JsonToClaimValue("[]")') == []
    assert _value(pc, 'JsonToClaimValue("[1, 1]")') == [1, 1]  # duplicates stay
    assert _value(pc, "NegateBool(false)") == [True]
    assert _value(pc, 'AppendString("ab", "cd")') == ["abcd"]
    assert _value(pc, 'JmesPath("{\\"a\\": [1, 2]}", "a[-1]")') == ["2"]
    assert _value(pc, 'JmesPath("{}", "a")') == ["null"]
    # equals_ignore_case, the samples' non-standard JMESPath function
    assert _value(pc, 'JmesPath("{\\"p\\": \\"A.SYS\\"}", "equals_ignore_case(p, \'a.sys\')")') == [
        "true"
    ]
    assert _value(pc, 'JmesPath("{}", "equals_ignore_case(p, \'a\')")') == ["false"]
    sets = [Claim.custom("in", 1), Claim.custom("in", 2)]
    assert _value(pc, "ContainsOnlyValue(c.value, 1)", sets) == [False]
    assert _value(pc, "ContainsOnlyValue(c.value, 1)", sets[:1]) == [True]
    assert _value(pc, "IsSubsetOf(c.value, c.value)", sets) == [True]
    assert _value(pc, 'IsSubsetOf(c.value, "1")', sets) == [False]  # typed: "1" is not 1


def test_contains_only_value_is_false_for_an_empty_set(pc) -> None:
    rule = (
        'c:[type=="in"] => add(type="set", value=JsonToClaimValue(c.value));\n'
        '[type=="in"] && c:[type=="in"] => add(type="out", '
        "value=ContainsOnlyValue(JsonToClaimValue(c.value), true));"
    )
    result = _run(pc, rule, [Claim.custom("in", "[]")])
    assert [c.value for c in result.incoming if c.type == "out"] == [False]


def test_read_only_claims_cannot_be_issued(pc) -> None:
    pcrs = Claim.service("pcrs", '{"PCRs": []}', read_only=True)
    for rule in (
        'c:[type=="pcrs"] => issue(claim=c);',
        'c:[type=="pcrs"] => issue(type="copy", value=c.value);',
        'c:[type=="pcrs"] => issue(type="n", value=JmesPath(c.value, "length(PCRs)"));',
    ):
        with pytest.raises(PolicyEvaluationError, match="read-only"):
            _run(pc, rule, [pcrs])
    # adding a derived value is fine, and a policy-made verdict about it can be issued
    rule = (
        'c:[type=="pcrs"] => add(type="n", value=JmesPath(c.value, "length(PCRs)"));\n'
        '[type=="n", value=="0"] => issue(type="noPcrs", value=true);'
    )
    assert _run(pc, rule, [pcrs]).issued[0].value is True


def test_pcr_value_table_row_issues_the_policy_claim(pc) -> None:
    """policy-v1.2 table 'PCR Value evaluation': a function call as a condition operand."""
    text = pc.read("policy-v1.2__table__pcr-value-evaluation.txt")
    rule = text.split("golden measurements.", 1)[1]
    pcrs = Claim.service(
        "pcrs", json.dumps({"PCRs": [{"Index": 0, "Digests": {"SHA1": "KCk6Ow"}}]}), read_only=True
    )
    marker = Claim.custom("pcrMatchesExpectedValue", True)
    result = _run(pc, rule.replace("\\|", "|"), [pcrs, marker])
    assert [(c.type, c.value) for c in result.issued] == [("pcrMatchesExpectedValue", True)]
