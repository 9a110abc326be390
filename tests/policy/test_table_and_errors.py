"""policy-version-1-2.md table rows (after undoing the Markdown escaping and ending the
'//' comments the table flattened), and grammar errors at the right line:column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bootwatch.errors import PolicyParsingError
from bootwatch.policy import compile_policy, evaluate

_UNESCAPE = [("\\|", "|"), ("\\!", "!"), ("\\[", "["), ("\\*", "*"), ("\\]", "]")]
#: a comment ends where a rule starts (the table row has no line breaks)
_RULE_START = re.compile(r"(//.*?)(?=c\d*\s*:\s*\[|!\[|\[type|$)")
#: prose after the last rule of a row (not policy text)
_TRAILING_PROSE = {"policy-v1.2__table__bitlocker-boot-state.txt": "Nonzero means enabled."}


def _table_rules(path: Path) -> str:
    text = path.read_text(encoding="utf-8").rstrip("\n")
    for old, new in _UNESCAPE:
        text = text.replace(old, new)
    text = text.removesuffix(_TRAILING_PROSE.get(path.name, ""))
    return _RULE_START.sub(lambda m: m.group(1) + "\n", text)


def _rows(policies_dir: Path) -> list[Path]:
    return sorted(policies_dir.glob("policy-v1.2__table__*.txt"))


def test_table_rows(pc) -> None:
    rows = _rows(pc.dir)
    assert len(rows) == 19
    for path in rows:
        text = pc.wrap(_table_rules(path))
        if path.name == "policy-v1.2__table__secure-boot.txt":
            # INDEX.md: the second rule has no condition, so 'c' is unbound
            with pytest.raises(PolicyParsingError, match="'c' is not bound"):
                compile_policy(text)
            continue
        policy = compile_policy(text)
        result = evaluate(policy, [])
        assert result.permitted, path.name


@pytest.mark.parametrize(
    ("text", "line", "column", "expected"),
    [
        ("", 1, 1, "'version'"),
        ("version=1.3;", 1, 9, "1.2"),
        ("version=1.0;\nauthorizationrules {\n => permit()\n};", 4, 1, "';'"),
        ("version=1.0;\nauthorizationrules {\n [type==] => permit();\n};", 3, 9, "string"),
        ("version=1.0;\nauthorizationrules {\n [type=='x'] => permit();\n};", 3, 9, "string"),
        ("version=1.0;\nauthorizationrules {\n => allow();\n};", 3, 5, "'permit'"),
        ("version=1.0;\nauthorizationrules {\n => permit();\n}", 4, 2, "';'"),
        ("version=1.0;\nissuancerules {};\nauthorizationrules {};", 3, 1, ""),
        ("version=1.0;\nissuancerules {};", 2, 18, "'authorizationrules'"),
        ("version=1.0;\nconfigurationrules {};\nauthorizationrules {};", 2, 1, ""),
        ('version=1.1;\nauthorizationrules {\n ![type=="x"] => permit();\n};', 3, 2, ""),
        (
            'version=1.0;\nauthorizationrules {\n => add(type="x", value=NegateBool(true));\n};',
            3,
            25,
            "",
        ),
        (
            'version=1.2;\nauthorizationrules {\n => issueproperty(type="x", value=1);\n};',
            3,
            5,
            "add()",
        ),
        ("version=1.2;\nissuancerules {};\nauthorizationrules{ => permit(); };", 3, 1, ""),
        (
            'version=1.2;\nauthorizationrules {\n [type=="a", value<"b"] => permit();\n};',
            3,
            20,
            "integer",
        ),
        (
            'version=1.2;\nauthorizationrules {\n [issuer=="Me"] => permit();\n};',
            3,
            11,
            "AttestationService",
        ),
        (
            'version=1.2;\nauthorizationrules {\n c:[type=="a"] && c:[type=="b"] => permit();\n};',
            3,
            19,
            "",
        ),
        ('version=1.2;\nauthorizationrules {\n !c:[type=="a"] => permit();\n};', 3, 2, ""),
        ('version=1.2;\nauthorizationrules {\n => add(type="a");\n};', 3, 5, ""),
        (
            "version=1.2;\nauthorizationrules {\n"
            ' => add(type="a", value=99999999999999999999);\n};',
            3,
            25,
            "",
        ),
    ],
)
def test_grammar_errors(text: str, line: int, column: int, expected: str) -> None:
    with pytest.raises(PolicyParsingError) as info:
        compile_policy(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert str(info.value).startswith(f"line {line}:{column}: ")
    if expected:
        assert any(expected in e for e in info.value.expected) or expected in str(info.value)


def test_deep_nesting_is_a_parsing_error() -> None:
    expr = "NegateBool(" * 40 + "true" + ")" * 40
    with pytest.raises(PolicyParsingError, match="nest deeper"):
        compile_policy(f'version=1.2; authorizationrules {{ => add(type="x", value={expr}); }};')


def test_oversized_policy_is_a_parsing_error() -> None:
    with pytest.raises(PolicyParsingError, match="limit"):
        compile_policy("version=1.0;" + " " * 300_000)
