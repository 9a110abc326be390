"""scripts/mutation's bookkeeping, and the checked-in list of equivalent mutants.

The mutation run itself is too slow for the default suite (minutes per module); what
runs here is cheap: how the script names functions, diffs mutants, matches equivalents
and computes the kill rate, and that every entry of docs/mutation-equivalents.json still
describes code that exists (a stale entry would silently excuse nothing, or worse, a
future real survivor with the same text).
"""

from __future__ import annotations

import ast
import json
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutation"


def _load():  # type: ignore[no-untyped-def]
    loader = SourceFileLoader("bootwatch_mutation_script", str(SCRIPT))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    mod = module_from_spec(spec)
    sys.modules[loader.name] = mod  # dataclasses look their module up there
    loader.exec_module(mod)
    return mod


M = _load()


def test_function_names_from_mutant_names() -> None:
    d = "bootwatch.tpm.pcr"
    assert M.function_of(f"{d}.xǁPcrSelectionǁmarshal__mutmut_3", d) == "PcrSelection.marshal"
    assert M.function_of(f"{d}.x_read_pcr_selections__mutmut_71", d) == "read_pcr_selections"
    assert M.function_of(f"{d}.x__check_pcr__mutmut_2", d) == "_check_pcr"


MUTATED = '''
def x_f__mutmut_orig(a):
    """doc"""
    b = a + 1
    return b
def x_f__mutmut_1(a):
    """doc"""
    b = a - 1
    return b
class C:
    def xǁCǁg__mutmut_orig(self):
        return 1
    def xǁCǁg__mutmut_1(self):
        return 2
'''


def test_diff_of_a_mutant_against_its_original() -> None:
    src = M.function_sources(MUTATED)
    assert M.diff_lines(src["x_f__mutmut_orig"], src["x_f__mutmut_1"]) == (
        ("b = a + 1",), ("b = a - 1",))
    assert M.diff_lines(src["xǁCǁg__mutmut_orig"], src["xǁCǁg__mutmut_1"]) == (
        ("return 1",), ("return 2",))


def test_equivalents_match_by_function_and_lines_not_number() -> None:
    entry = {"module": "tpm/pcr.py", "function": "f", "removed": ["b = a + 1"],
             "added": ["b = a - 1"], "reason": "r"}
    hit = M.Mutant("x.x_f__mutmut_99", "f", ("b = a + 1",), ("b = a - 1",))
    assert M.match_equivalent("tpm/pcr.py", hit, [entry]) is entry
    assert M.match_equivalent("tpm/attest.py", hit, [entry]) is None
    other = M.Mutant("x.x_f__mutmut_1", "f", ("b = a + 1",), ("b = a * 1",))
    assert M.match_equivalent("tpm/pcr.py", other, [entry]) is None


def test_kill_rate() -> None:
    assert M.kill_rate(90, 0, 100, 0) == 0.9
    assert M.kill_rate(85, 5, 100, 0) == 0.9  # a mutant that hangs the tests is detected
    assert M.kill_rate(89, 0, 100, 1) == round(89 / 99, 4)
    assert M.kill_rate(0, 0, 3, 3) == 1.0


def test_module_arguments() -> None:
    tpm = M.expand(["tpm"])
    assert "tpm/pcr.py" in tpm and "tpm/attest.py" in tpm and all(
        m.startswith("tpm/") for m in tpm)
    assert M.expand(["eventlog/replay", "src/bootwatch/eventlog/replay.py"]) == [
        "eventlog/replay.py"]
    assert M.expand([])[:2] == ["eventlog/replay.py", "eventlog/framing.py"]
    with pytest.raises(M.UsageError, match="no module"):
        M.expand(["eventlog/nope.py"])
    assert M.own_tests("policy/evaluator.py") == ["tests/policy"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert M.main(["--jobs", "4", "tpm/pcr.py"]) == 2
    assert "--jobs must be 1 or 2" in capsys.readouterr().err
    assert M.main(["no/such.py"]) == 2


def _functions(path: Path) -> dict[str, list[str]]:
    tree = ast.parse(path.read_text("utf-8"))
    lines = path.read_text("utf-8").splitlines()
    out: dict[str, list[str]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                out[prefix + child.name] = [ln.strip() for ln in
                                            lines[child.lineno - 1:child.end_lineno]]

    visit(tree, "")
    return out


def test_checked_in_equivalents_describe_existing_code() -> None:
    entries = M.load_equivalents()
    assert entries, "docs/mutation-equivalents.json lists no equivalent mutant"
    raw = json.loads((ROOT / "docs" / "mutation-equivalents.json").read_text("utf-8"))
    assert raw["equivalents"] == entries
    for e in entries:
        path = ROOT / "src" / "bootwatch" / e["module"]
        assert path.is_file(), e
        funcs = _functions(path)
        assert e["function"] in funcs, e
        body = funcs[e["function"]]
        for line in e["removed"]:
            assert line in body, f"stale equivalent (line gone): {e['function']}: {line}"
        assert tuple(e["removed"]) != tuple(e["added"])
        assert len(e["reason"]) >= 20, e


def test_modules_without_functions_have_no_mutants() -> None:
    assert not M.has_functions("tpm/__init__.py")
    assert M.has_functions("tpm/pcr.py")
    res = M.run_module("tpm/__init__.py", 1, [])
    assert (res.mutants, res.kill_rate, res.survivors) == (0, 1.0, [])
