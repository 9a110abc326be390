"""Hostile policies hit a limit quickly (PolicyEvaluationError), and the parser raises nothing
but BootwatchError on arbitrary text (hypothesis)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootwatch.errors import BootwatchError, PolicyEvaluationError
from bootwatch.policy import (
    Claim,
    EvaluationLimits,
    PolicyLimitError,
    compile_policy,
    default_azureguest_policy,
    evaluate,
)

HEAD = "version=1.2; authorizationrules { => permit(); }; issuancerules {\n"


def _hostile(body: str, claims: list[Claim], limits: EvaluationLimits | None = None) -> str:
    policy = compile_policy(HEAD + body + "\n};")
    # the budget is counted in work (nodes, matches, output), never in wall time: a slow
    # machine reaches the same limit at the same step
    with pytest.raises(PolicyEvaluationError) as info:
        evaluate(policy, claims, **({"limits": limits} if limits else {}))
    assert isinstance(info.value, PolicyLimitError)
    return str(info.value)


def test_string_doubling_hits_max_string_chars() -> None:
    rules = '=> add(type="s", value="xxxxxxxxxxxxxxxx");\n' + (
        'c:[type=="s"] => add(type="s", value=AppendString(c.value, c.value));\n' * 40
    )
    message = _hostile(rules, [])
    assert "max_set_size" in message or "max_string_chars" in message


def test_claim_explosion_hits_a_limit() -> None:
    rules = 'c:[type=="a"] => add(type="a", value=c.value);\n' * 30
    assert "max_claims" in _hostile(rules, [Claim.custom("a", 1)])


def test_jmespath_blowup_hits_a_limit() -> None:
    query = " | ".join(["[@,@,@,@]"] * 30)
    _hostile(f'=> add(type="j", value=JmesPath("[1]", "{query}"));', [])
    query = "[*]" + "".join(["[@,@][]"] * 30)
    _hostile(f'=> add(type="j", value=JmesPath("[1]", "{query}"));', [])


def test_rule_and_claim_count_limits() -> None:
    _hostile('=> add(type="x", value=1);\n' * 50, [], EvaluationLimits(max_rules=10))
    with pytest.raises(PolicyLimitError):
        evaluate(
            compile_policy(default_azureguest_policy()),
            [Claim.custom("x", i) for i in range(11)],
            limits=EvaluationLimits(max_claims=10),
        )


def test_big_json_argument_hits_max_json_chars() -> None:
    claims = [Claim.custom("j", "[" + "1," * 600_000 + "1]")]
    _hostile(
        'c:[type=="j"] => add(type="k", value=JmesPath(c.value, "length(@)"));',
        claims,
        EvaluationLimits(max_json_chars=1_000_000),
    )


_ALPHABET = st.sampled_from(
    [
        *list('version=1.2;{}[]()!&,:."\\/ \n\tabcxyz019_-=><'),
        "authorizationrules",
        "issuancerules",
        "configurationrules",
        "permit",
        "deny",
        "add",
        "issue",
        "issueproperty",
        "type",
        "value",
        "issuer",
        "claim",
        "JmesPath",
        "=>",
        "&&",
        "==",
        "//",
        '"x"',
        "true",
        "c",
        "NegateBool",
        "”",
        "\x00",
        "\ufeff",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ALPHABET, max_size=60).map("".join))
def test_parser_raises_only_bootwatch_errors_on_token_soup(text: str) -> None:
    with contextlib.suppress(BootwatchError):
        compile_policy(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parser_raises_only_bootwatch_errors_on_any_text(text: str) -> None:
    for candidate in (text, "version=1.2;" + text, HEAD + text + "};"):
        with contextlib.suppress(BootwatchError):
            compile_policy(candidate)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["type", "value"]))
def test_evaluation_raises_only_bootwatch_errors(fragment: str, prop: str) -> None:
    body = f'c:[type=="in"] => add(type="out", value=JmesPath(c.{prop}, {fragment!r}));'
    body = body.replace("'", '"') if '"' not in fragment else body
    try:
        policy = compile_policy(HEAD + body + "\n};")
        evaluate(policy, [Claim.custom("in", '{"a": [1, 2]}')])
    except BootwatchError:
        pass
