"""Edge cases of the policy engine found in review: each test failed before its fix.

Positions are 1-based ``line:column`` as ``bootwatch policy check`` prints them.
"""

from __future__ import annotations

import pytest

from bootwatch.errors import InputError, PolicyEvaluationError, PolicyParsingError
from bootwatch.policy import Claim, claim_from_json, compile_policy, evaluate


def _error(text: str) -> PolicyParsingError:
    with pytest.raises(PolicyParsingError) as info:
        compile_policy(text)
    return info.value


# --- error positions: a missing token belongs after the last token, not after a comment ---


def test_missing_semicolon_before_a_trailing_comment_points_after_the_brace() -> None:
    err = _error("version=1.0;\nauthorizationrules { => permit(); } // no ';'\n")
    assert (err.line, err.column) == (2, 36)


def test_missing_semicolon_before_a_comment_line_points_after_the_brace() -> None:
    err = _error("version=1.0;\nauthorizationrules { => permit(); }\n// end of policy\n")
    assert (err.line, err.column) == (2, 36)


def test_missing_authorization_section_points_after_the_version_not_the_comment() -> None:
    err = _error("version=1.0; // nothing else\n")
    assert (err.line, err.column) == (1, 13)
    assert "no authorizationrules section" in str(err)


# --- integer text: only ASCII decimal digits, and a typed error otherwise ---------------------


def _issue_integer(text: str) -> object:
    policy = compile_policy(
        "version=1.0;\nauthorizationrules { => permit(); };\nissuancerules {\n"
        f'=> issue(type="i", value="{text}", valueType="Integer");\n}};'
    )
    return evaluate(policy, []).issued[0].value


@pytest.mark.parametrize("text", ["--5", "\u00b2", "\u0661\u0662"])
def test_value_type_integer_refuses_non_ascii_or_doubled_sign_text(text: str) -> None:
    with pytest.raises(PolicyEvaluationError, match="cannot be given valueType Integer") as info:
        _issue_integer(text)
    assert str(info.value).startswith("line 4: ")


@pytest.mark.parametrize("text", ["--5", "\u00b2", "\u0661\u0662"])
def test_claims_file_integer_refuses_non_ascii_or_doubled_sign_text(text: str) -> None:
    with pytest.raises(InputError, match="is not a valid Integer"):
        claim_from_json({"type": "x", "value": text, "valueType": "Integer"})


# --- JmesPath: every query failure is a PolicyEvaluationError naming the rule's line --------


@pytest.mark.parametrize(
    "query",
    [
        "a[?@ > `1`]",  # ordering a string against a number: TypeError in the interpreter
        "max_by(a, &@)",  # the same inside max_by
        "a[::0]",  # a zero slice step: ValueError
        "ceil(to_number(b))",  # ceil of infinity: OverflowError
        "floor(to_number(c))",  # floor of NaN: ValueError
    ],
)
def test_jmespath_runtime_failure_is_a_policy_evaluation_error(query: str) -> None:
    data = '{\\"a\\": [1, \\"x\\"], \\"b\\": \\"1e999\\", \\"c\\": \\"nan\\"}'
    policy = compile_policy(
        "version=1.2;\nauthorizationrules { => permit(); };\nissuancerules {\n"
        f'=> issue(type="r", value=JmesPath("{data}", "{query}"));\n}};'
    )
    with pytest.raises(PolicyEvaluationError, match="JmesPath") as info:
        evaluate(policy, [])
    assert str(info.value).startswith("line 4: ")


# --- values a function makes are text a token can carry (no lone UTF-16 surrogate) ---------


@pytest.mark.parametrize(
    "value",
    [
        'JsonToClaimValue("\\"\\\\ud800\\"")',  # JSON text "\ud800": a lone surrogate
        'JmesPath("{}", "`\\"\\\\udc00\\"`")',  # a JMESPath literal holding one
    ],
)
def test_function_result_with_a_lone_surrogate_is_an_evaluation_error(value: str) -> None:
    policy = compile_policy(
        "version=1.2;\nauthorizationrules { => permit(); };\nissuancerules {\n"
        f'=> issue(type="r", value={value});\n}};'
    )
    with pytest.raises(PolicyEvaluationError, match="surrogate") as info:
        result = evaluate(policy, [])
        # what the token signer does with an issued value
        str(result.issued[0].value).encode("utf-8")
    assert str(info.value).startswith("line 4: ")


# --- line ends: a carriage return with no line feed ends no line ---------------------------

#: an editor (and ``str.splitlines``) shows the deny rule on its own line after the comment
_LONE_CR = ('version=1.0;\r\nauthorizationrules\r\n{\r\n'
            '    => permit(); // default\r'
            '    [type=="secureboot", value==false] => deny();\r\n'
            '};\r\nissuancerules { };\r\n')


def test_a_lone_carriage_return_is_refused_where_it_stands() -> None:
    """A ``//`` comment ran to the next LF only, so it swallowed the deny rule after a
    lone CR and the policy permitted Secure Boot off (found in review)."""
    err = _error(_LONE_CR)
    assert "carriage return" in str(err) and (err.line, err.column) == (4, 28)
    # CRLF line ends, with comments, are policy text
    policy = compile_policy(_LONE_CR.replace("// default\r", "// default\r\n"))
    assert not evaluate(policy, [Claim.service("secureboot", False)]).permitted


def test_omit_x5c_is_a_named_leniency_not_silently_ignored() -> None:
    """Found in review: ``omit_x5c`` (MAA: x5c or x5t in the token header) was accepted
    and changed nothing, unsaid; the headers never change, and the policy now says so."""
    policy = compile_policy('version=1.1;\nconfigurationrules { => issueproperty('
                            'type="omit_x5c", value=true); };\nauthorizationrules { => '
                            'permit(); };\nissuancerules { };\n')
    assert [t.name for t in policy.tolerances] == ["omit-x5c-has-no-effect"]
    assert (policy.tolerances[0].pos.line, policy.tolerances[0].pos.column) == (2, 25)
