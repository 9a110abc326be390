"""Hostile and boundary policies for the evaluator (issue 17).

Each case is a policy a provider could upload: property values of the wrong type or
out of range (a string ``required_pcr_mask`` must be refused, never ignored, or PCR
coverage is not enforced), ordering tests on non-integers (no TypeError may escape),
``valueType=`` coercions, and every evaluation limit exactly at and one past its bound.
"""

from __future__ import annotations

import pytest

from bootwatch.errors import PolicyEvaluationError
from bootwatch.policy import compile_policy, evaluate
from bootwatch.policy.claims import Claim, ClaimIssuer, ClaimValueType
from bootwatch.policy.errors import PolicyLimitError
from bootwatch.policy.evaluator import PROPERTY_DEFAULTS
from bootwatch.policy.limits import EvaluationLimits


def _claim(ctype: str, value: object) -> Claim:
    return Claim(ctype, value, ClaimValueType.of(value), ClaimIssuer.CUSTOM_CLAIM)  # type: ignore[arg-type]


def _run(rules: str, claims: list[Claim] | None = None, *, issuance: str = "",
         limits: EvaluationLimits | None = None):  # type: ignore[no-untyped-def]
    text = f"version=1.2;\nauthorizationrules {{\n{rules}\n}};\nissuancerules {{\n{issuance}\n}};"
    kw = {} if limits is None else {"limits": limits}
    return evaluate(compile_policy(text), claims or [], **kw)


def _prop(name: str, value: str):  # type: ignore[no-untyped-def]
    return _run("=> permit();", issuance=f'=> issueproperty(type="{name}", value={value});')


# --- properties ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("required_pcr_mask", '"10"', "property required_pcr_mask must be an integer"),
        ("required_pcr_mask", "true", "property required_pcr_mask must be an integer"),
        ("required_pcr_mask", "-1", "required_pcr_mask must be between 0 and 0xFFFFFF (PCRs 0-23)"),
        ("required_pcr_mask", "16777216",
         "required_pcr_mask must be between 0 and 0xFFFFFF (PCRs 0-23)"),
        ("report_validity_in_minutes", "0",
         "report_validity_in_minutes must be between 1 and 527040 (one year)"),
        ("report_validity_in_minutes", "527041",
         "report_validity_in_minutes must be between 1 and 527040 (one year)"),
        ("report_validity_in_minutes", '"60"',
         "property report_validity_in_minutes must be an integer"),
        ("report_validity_in_minutes", "false",
         "property report_validity_in_minutes must be an integer"),
        ("require_valid_aik_cert", '"true"', "property require_valid_aik_cert must be a boolean"),
        ("require_valid_aik_cert", "1", "property require_valid_aik_cert must be a boolean"),
        ("omit_x5c", '"false"', "property omit_x5c must be a boolean"),
    ],
)
def test_property_of_wrong_type_or_range_is_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(PolicyEvaluationError) as info:
        _prop(name, value)
    text = str(info.value)
    assert text == f"line 6: => issueproperty(type=\"{name}\", value={value});: {message}" or (
        text.startswith("line 6") and text.endswith(message)), text


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("required_pcr_mask", "0", 0),
        ("required_pcr_mask", "16777215", 0xFFFFFF),
        ("required_pcr_mask", "255", 255),
        ("report_validity_in_minutes", "1", 1),
        ("report_validity_in_minutes", "527040", 527040),
        ("require_valid_aik_cert", "false", False),
        ("omit_x5c", "true", True),
        ("x-custom-property", '"anything"', "anything"),
    ],
)
def test_property_at_its_bounds_is_kept(name: str, value: str, expected: object) -> None:
    r = _prop(name, value)
    assert r.properties[name] == expected and type(r.properties[name]) is type(expected)
    assert r.explicit_properties == frozenset({name})
    for other, default in PROPERTY_DEFAULTS.items():
        if other != name:
            assert r.properties[other] == default


def test_defaults_without_properties() -> None:
    r = _run("=> permit();")
    assert dict(r.properties) == {"require_valid_aik_cert": True, "required_pcr_mask": 0xFFFFFF,
                                  "report_validity_in_minutes": 1440, "omit_x5c": False}
    assert r.explicit_properties == frozenset()


def test_string_mask_with_integer_value_type_is_coerced() -> None:
    r = _run("=> permit();", issuance='=> issueproperty(type="required_pcr_mask", value="255", '
                                      'valueType="Integer");')
    assert r.properties["required_pcr_mask"] == 255


# --- ordering tests --------------------------------------------------------------------------

CLAIMS = [_claim("n", 10), _claim("s", "10"), _claim("b", True), _claim("neg", -3)]


@pytest.mark.parametrize(
    ("cond", "holds"),
    [
        ('type=="n", value > 9', True), ('type=="n", value > 10', False),
        ('type=="n", value >= 10', True), ('type=="n", value >= 11', False),
        ('type=="n", value < 11', True), ('type=="n", value < 10', False),
        ('type=="n", value <= 10', True), ('type=="n", value <= 9', False),
        ('type=="neg", value < 0', True), ('type=="neg", value > -4', True),
        # ordering needs integers on both sides: never a TypeError, never a bool as 0/1
        ('type=="s", value > 5', False), ('type=="s", value < 50', False),
        ('type=="s", value >= 5', False), ('type=="s", value <= 50', False),
        ('type=="b", value > 0', False), ('type=="b", value >= 1', False),
        ('type=="b", value < 2', False), ('type=="b", value <= 1', False),
        # equality is typed
        ('type=="n", value == 10', True), ('type=="n", value == "10"', False),
        ('type=="b", value == 1', False), ('type=="b", value == true', True),
        ('type=="n", value != "10"', True), ('type=="n", value != 10', False),
    ],
)
def test_ordering_and_equality(cond: str, holds: bool) -> None:
    r = _run(f"[{cond}] => permit();", CLAIMS)
    assert r.permitted is holds
    assert r.trace[0].fired is holds


def test_ordering_against_a_non_integer_claim_operand() -> None:
    # literals are type-checked when the policy compiles; claim values only when it runs
    claims = [*CLAIMS, _claim("big", "50"), _claim("t", True)]
    assert _run('c:[type=="neg"] && [type=="n", value > c.value] => permit();', claims).permitted
    for src in ("big", "t"):
        for op in ("<", "<=", ">", ">="):
            r = _run(f'c:[type=="{src}"] && [type=="n", value {op} c.value] => permit();', claims)
            assert not r.permitted, (src, op)


def test_ordering_against_a_set_operand() -> None:
    claims = [*CLAIMS, _claim("lim", 5), _claim("lim", 20)]
    assert _run('c:[type=="lim"] && [type=="n", value > c.value] => permit();', claims).permitted
    assert not _run('c:[type=="lim"] && [type=="n", value > c.value] && '
                    '[type=="n", value > 30] => permit();', claims).permitted
    assert _run('c:[type=="lim"] && [type=="n", value != c.value] => permit();', claims).permitted
    assert not _run('c:[type=="n"] && [type=="n", value != c.value] => permit();',
                    claims).permitted


def test_negated_condition_and_bound_claims() -> None:
    assert _run('![type=="absent"] => permit();', CLAIMS).permitted
    assert not _run('![type=="n"] => permit();', CLAIMS).permitted
    r = _run('c:[type=="n"] => permit();', CLAIMS,
             issuance='c:[type=="n"] => issue(type="copy", value=c.value);')
    assert [(c.type, c.value) for c in r.issued] == [("copy", 10)]


def test_tests_on_issuer_and_value_type() -> None:
    assert _run('[type=="n", issuer=="CustomClaim"] => permit();', CLAIMS).permitted
    assert not _run('[type=="n", issuer=="AttestationService"] => permit();', CLAIMS).permitted
    assert _run('[type=="n", valueType=="Integer"] => permit();', CLAIMS).permitted
    assert not _run('[type=="s", valueType=="Integer"] => permit();', CLAIMS).permitted
    assert _run('[value=="10"] => permit();', CLAIMS).permitted
    assert _run('[type=="s"] && [value==10, type=="n"] => permit();', CLAIMS).permitted


# --- valueType= in add and issue ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "vtype", "expected"),
    [
        ('"10"', "Integer", 10), ('" -42 "', "Integer", -42),
        ('"9223372036854775807"', "Integer", 2**63 - 1),
        ("10", "String", "10"), ("true", "String", "true"), ("false", "String", "false"),
        ('"true"', "Boolean", True), ('"false"', "Boolean", False),
        ('"x"', "String", "x"), ("7", "Integer", 7), ("true", "Boolean", True),
    ],
)
def test_value_type_coerces_in_issue_and_add(value: str, vtype: str, expected: object) -> None:
    r = _run("=> permit();", issuance=(
        f'=> add(type="a", value={value}, valueType="{vtype}");\n'
        f'=> issue(type="i", value={value}, valueType="{vtype}");\n'
        '[type=="a"] => issue(type="seen", value=true);'))
    assert [(c.type, c.value, c.value_type.value) for c in r.issued] == [
        ("i", expected, vtype), ("seen", True, "Boolean")]
    added = [c for c in r.incoming if c.type == "a"]
    assert [(c.value, c.value_type.value) for c in added] == [(expected, vtype)]
    assert all(type(c.value) is type(expected) for c in r.issued[:1] + tuple(added))


@pytest.mark.parametrize(
    ("value", "vtype", "message"),
    [
        ('"abc"', "Integer", "'abc' cannot be given valueType Integer"),
        ('"9223372036854775808"', "Integer", "cannot be given valueType Integer"),
        ('"123456789012345678901"', "Integer", "cannot be given valueType Integer"),
        ('"1.5"', "Integer", "cannot be given valueType Integer"),
        ('"yes"', "Boolean", "'yes' cannot be given valueType Boolean"),
        ("1", "Boolean", "1 cannot be given valueType Boolean"),
    ],
)
def test_value_type_that_does_not_fit_is_an_error(value: str, vtype: str, message: str) -> None:
    with pytest.raises(PolicyEvaluationError) as info:
        _run("=> permit();", issuance=f'=> issue(type="i", value={value}, valueType="{vtype}");')
    assert str(info.value).startswith("line 6") and str(info.value).endswith(message)


def test_value_type_from_a_claim_must_be_a_scalar_type() -> None:
    claims = [_claim("vt", "Json"), _claim("vt2", "Nonsense")]
    for src in ("vt", "vt2"):
        with pytest.raises(PolicyEvaluationError) as info:
            _run("=> permit();", claims, issuance=(
                f'c:[type=="{src}"] => issue(type="i", value="1", valueType=c.value);'))
        assert str(info.value).endswith("valueType must be String, Integer or Boolean")
    ok = _run("=> permit();", [_claim("vt", "Integer")], issuance=(
        'c:[type=="vt"] => issue(type="i", value="1", valueType=c.value);'))
    assert [(c.value, c.value_type) for c in ok.issued] == [(1, ClaimValueType.INTEGER)]


def test_claim_type_must_be_one_nonempty_string() -> None:
    claims = [_claim("n", 10), _claim("e", ""), _claim("two", "a"), _claim("two", "b")]
    for src in ("n", "e", "two"):
        with pytest.raises(PolicyEvaluationError, match="the claim type must be one non-empty"):
            _run("=> permit();", claims,
                 issuance=f'c:[type=="{src}"] => issue(type=c.value, value=1);')


# --- limits at their exact boundary -------------------------------------------------------------

def test_incoming_claim_limit_boundary() -> None:
    lim = EvaluationLimits(max_claims=3)
    three = [_claim("x", i) for i in range(3)]
    assert _run("=> permit();", three, limits=lim).permitted
    with pytest.raises(PolicyLimitError) as info:
        _run("=> permit();", [*three, _claim("x", 9)], limits=lim)
    assert info.value.limit == "max_claims"
    assert str(info.value) == ("evaluation limit 'max_claims' exceeded: 4 incoming claims "
                               "(limit 3)")


def test_added_claims_count_toward_the_claim_limit() -> None:
    lim = EvaluationLimits(max_claims=3)
    two = [_claim("x", 1), _claim("x", 2)]
    r = _run("=> permit();", two, issuance='=> add(type="y", value=1);', limits=lim)
    assert len(r.incoming) == 3
    with pytest.raises(PolicyLimitError) as info:
        _run("=> permit();", two, issuance='=> add(type="y", value=1);\n=> add(type="z", value=2);',
             limits=lim)
    assert info.value.limit == "max_claims" and info.value.rule is not None
    assert info.value.rule.startswith("line 7")
    assert "the claim set would grow past 3 claims" in str(info.value)


def test_set_size_limit_boundary() -> None:
    claims = [_claim("x", i) for i in range(4)]
    lim = EvaluationLimits(max_set_size=4)
    r = _run("=> permit();", claims, issuance='c:[type=="x"] => issue(type="y", value=c.value);',
             limits=lim)
    assert len(r.issued) == 4
    with pytest.raises(PolicyLimitError) as info:
        _run("=> permit();", [*claims, _claim("x", 4)],
             issuance='c:[type=="x"] => issue(type="y", value=c.value);', limits=lim)
    assert info.value.limit == "max_set_size"
    assert "one action would add 5 claims" in str(info.value)


def test_rule_limit_boundary() -> None:
    lim = EvaluationLimits(max_rules=3)
    assert _run("=> permit();\n=> permit();", issuance="=> add(type=\"a\", value=1);",
                limits=lim).permitted
    with pytest.raises(PolicyLimitError) as info:
        _run("=> permit();\n=> permit();", issuance="=> add(type=\"a\", value=1);\n"
             "=> add(type=\"b\", value=1);", limits=lim)
    assert info.value.limit == "max_rules"
    assert "more than 3 rules evaluated" in str(info.value)


# --- authorization and issuance ------------------------------------------------------------------

def test_first_permit_decides_and_deny_wins() -> None:
    r = _run('=> permit();\n[type=="n"] => permit();', CLAIMS,
             issuance='=> issue(type="i", value=1);')
    assert r.permitted and r.deciding_rule == "line 3: => permit();"
    assert r.reason == "a permit() rule fired and no deny() did"
    assert [c.type for c in r.issued] == ["i"]
    r = _run('=> permit();\n[type=="n"] => deny();\n=> permit();',
             CLAIMS, issuance='=> issue(type="i", value=1);')
    assert not r.permitted and r.deciding_rule == 'line 4: [type=="n"] => deny();'
    assert r.reason == "a deny() rule fired" and r.issued == ()
    assert len(r.trace) == 2  # the first deny() ends authorization
    r = _run('[type=="absent"] => permit();', CLAIMS, issuance='=> issue(type="i", value=1);')
    assert not r.permitted and r.deciding_rule is None and r.issued == ()
    assert r.reason == "no permit() rule fired in authorizationrules"
    assert [t.fired for t in r.trace] == [False]


def test_issued_claims_and_trace_effects() -> None:
    r = _run("=> permit();", issuance=('=> issue(type="i", value=1);\n'
                                       '=> add(type="a", value=2);\n'
                                       '=> issueproperty(type="p", value=3);'))
    assert [(c.type, c.issuer) for c in r.issued] == [("i", ClaimIssuer.ATTESTATION_POLICY)]
    assert [t.effect for t in r.trace] == ["permit", "issue: 1 claim (i)", "add: 1 claim (a)",
                                           "issueproperty: 1 claim (p)"]
    assert {c.type for c in r.incoming} == {"i", "a", "p"}
    assert r.to_json()["issued"] == [{"type": "i", "value": 1, "valueType": "Integer",
                                      "issuer": "AttestationPolicy"}]


def test_read_only_claims_cannot_be_issued() -> None:
    pcrs = Claim("pcrs", "x", ClaimValueType.STRING, ClaimIssuer.ATTESTATION_SERVICE, True)
    with pytest.raises(PolicyEvaluationError, match="is read-only"):
        _run("=> permit();", [pcrs], issuance='c:[type=="pcrs"] => issue(type="p", value=c.value);')
    r = _run("=> permit();", [pcrs], issuance='c:[type=="pcrs"] => add(type="p", value=c.value);')
    assert r.permitted and r.issued == ()


def test_json_shape_of_a_result_and_its_trace() -> None:
    # the exact keys of `bootwatch policy eval --json` (tools read them)
    r = _run('c:[type=="n"] => permit();\n[type=="absent"] => deny();', CLAIMS,
             issuance='=> issue(type="i", value="v");')
    assert r.to_json() == {
        "permitted": True,
        "deciding_rule": 'line 3: c:[type=="n"] => permit();',
        "reason": "a permit() rule fired and no deny() did",
        "issued": [{"type": "i", "value": "v", "valueType": "String",
                    "issuer": "AttestationPolicy"}],
        "properties": {"require_valid_aik_cert": True, "required_pcr_mask": 0xFFFFFF,
                       "report_validity_in_minutes": 1440, "omit_x5c": False},
        "trace": [
            {"section": "authorizationrules", "line": 3, "rule": 'c:[type=="n"] => permit();',
             "fired": True, "effect": "permit"},
            {"section": "authorizationrules", "line": 4, "rule": '[type=="absent"] => deny();',
             "fired": False, "effect": ""},
            {"section": "issuancerules", "line": 7, "rule": '=> issue(type="i", value="v");',
             "fired": True, "effect": "issue: 1 claim (i)"},
        ],
    }


def test_claims_issued_during_authorization_are_dropped_on_deny() -> None:
    r = _run('=> issue(type="early", value=1);\n=> permit();\n=> deny();')
    assert not r.permitted and r.issued == ()
    assert r.to_json()["issued"] == []
    r = _run('=> issue(type="early", value=1);\n=> permit();')
    assert r.permitted and [c.type for c in r.issued] == ["early"]


def test_type_index_and_test_budget_at_the_boundary() -> None:
    # 10 claims of type x, 10 of type y: a leading type=="x" test looks the 10 up by type
    # and runs the 2 remaining tests on each (20 tests); scanning all 20 claims with all 3
    # tests would cost 60.
    claims = [_claim("x", i) for i in range(10)] + [_claim("y", i) for i in range(10)]
    rule = '[type=="x", value==3, issuer=="CustomClaim"] => permit();'
    assert _run(rule, claims, limits=EvaluationLimits(max_tests=20)).permitted
    with pytest.raises(PolicyLimitError) as info:
        _run(rule, claims, limits=EvaluationLimits(max_tests=19))
    assert info.value.limit == "max_tests"
    # a type test that is not the equality lookup scans every claim
    rule = '[type!="y", value==3] => permit();'
    assert _run(rule, claims, limits=EvaluationLimits(max_tests=40)).permitted
    with pytest.raises(PolicyLimitError):
        _run(rule, claims, limits=EvaluationLimits(max_tests=39))


def test_value_type_from_a_set_of_claims_is_refused() -> None:
    claims = [_claim("vt", "Integer"), _claim("vt", "String")]
    with pytest.raises(PolicyEvaluationError) as info:
        _run("=> permit();", claims,
             issuance='c:[type=="vt"] => issue(type="i", value="1", valueType=c.value);')
    assert str(info.value).endswith("valueType must be String, Integer or Boolean")


@pytest.mark.parametrize(
    ("value", "vtype", "expected"),
    [('"-9223372036854775807"', "Integer", -(2**63) + 1),
     ('"00000000000000000001"', "Integer", 1)],
)
def test_integer_text_of_twenty_characters(value: str, vtype: str, expected: int) -> None:
    r = _run("=> permit();", issuance=f'=> issue(type="i", value={value}, valueType="{vtype}");')
    assert r.issued[0].value == expected


@pytest.mark.parametrize("value", ['"000000000000000000001"', '"-09223372036854775807"', '"X5"',
                                   '"5-"'])
def test_integer_text_that_is_not_an_integer(value: str) -> None:
    with pytest.raises(PolicyEvaluationError, match="cannot be given valueType Integer"):
        _run("=> permit();", issuance=f'=> issue(type="i", value={value}, valueType="Integer");')


def test_digits_are_not_a_boolean() -> None:
    with pytest.raises(PolicyEvaluationError, match="'5' cannot be given valueType Boolean"):
        _run("=> permit();", issuance='=> issue(type="i", value="5", valueType="Boolean");')


def test_read_only_refusal_says_what_to_do() -> None:
    pcrs = Claim("pcrs", "x", ClaimValueType.STRING, ClaimIssuer.ATTESTATION_SERVICE, True)
    with pytest.raises(PolicyEvaluationError) as info:
        _run("=> permit();", [pcrs], issuance='c:[type=="pcrs"] => issue(type="p", value=c.value);')
    assert str(info.value).startswith("line 6") and str(info.value).endswith(
        "claim 'p' is read-only (or derived from a read-only service claim) and cannot be "
        "issued; issue a claim the policy computes instead")


def test_effect_names_every_claim_type_added() -> None:
    claims = [_claim("a", 1), _claim("b", 2)]
    r = _run('c:[type=="a"] && d:[type=="b"] => permit();', claims,
             issuance='c:[value>=1] => add(claim=c);')
    assert r.trace[-1].effect == "add: 2 claims (a, b)"


def test_conditions_after_a_negated_one_are_still_checked() -> None:
    assert not _run('![type=="absent"] && [type=="also-absent"] => permit();', CLAIMS).permitted
    assert _run('![type=="absent"] && [type=="n"] => permit();', CLAIMS).permitted


def test_error_message_is_labelled_once() -> None:
    with pytest.raises(PolicyEvaluationError) as info:
        _run("=> permit();", [_claim("vt", "Json")],
             issuance='c:[type=="vt"] => issue(type="i", value="1", valueType=c.value);')
    assert str(info.value) == ('line 6: c:[type=="vt"] => issue(type="i", value="1", '
                               'valueType=c.value);: valueType must be String, Integer or Boolean')
    with pytest.raises(PolicyEvaluationError) as info:
        _prop("required_pcr_mask", '"10"')
    assert str(info.value) == ('line 6: => issueproperty(type="required_pcr_mask", value="10");: '
                               "property required_pcr_mask must be an integer")


def test_policy_without_issuance_and_with_configuration() -> None:
    r = evaluate(compile_policy("version=1.2;\nauthorizationrules { => permit(); };"), [])
    assert r.permitted is True and r.issued == ()
    text = ("version=1.2;\nconfigurationrules {\n=> issueproperty(type=\"omit_x5c\", value=true);"
            "\n[type==\"absent\"] => issueproperty(type=\"omit_x5c\", value=false);\n};\n"
            "authorizationrules { => deny(); };")
    r = evaluate(compile_policy(text), [])
    assert r.permitted is False and r.properties["omit_x5c"] is True
    assert [t.to_json()["section"] for t in r.trace] == [
        "configurationrules", "configurationrules", "authorizationrules"]
    assert r.to_json()["permitted"] is False
