"""The pure layers keep no process-wide state (issue 10, house rule 5).

A cache is a bounded object owned by whoever builds it (``bootwatch.lru.BoundedLru``,
``attest.caches.VerifierCaches``, ``policy.PolicyCompiler``) and passed in, so its
bound, lifetime and tests are visible.  This scans the pure packages' source: no
memoising decorator on a function that takes arguments (a zero-argument one is a
lazily built constant: the bundled default policy, the grammar's parser), no
module-level mutable container, lock or LRU, no ``global`` statement.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bootwatch"
PURE = ("eventlog", "tpm", "policy", "protocol", "attest", "net")
MEMOISERS = {"lru_cache", "cache"}
STATEFUL_CALLS = {"OrderedDict", "Lock", "RLock", "BoundedLru", "dict", "list", "set",
                  "defaultdict", "deque", "WeakValueDictionary", "WeakKeyDictionary"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return _name(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _findings(path: Path, root: Path = SRC) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"))
    out: list[str] = []
    where = path.relative_to(root)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            takes_args = bool(node.args.args or node.args.posonlyargs or node.args.kwonlyargs
                              or node.args.vararg or node.args.kwarg)
            for dec in node.decorator_list:
                if _name(dec) in MEMOISERS and takes_args:
                    out.append(f"{where}:{node.lineno}: {node.name} is memoised process-wide")
        if isinstance(node, ast.Global):
            out.append(f"{where}:{node.lineno}: global {', '.join(node.names)}")
    for stmt in tree.body:  # module level only: class and function bodies are instances'
        value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
        if value is None:
            continue
        mutable_literal = isinstance(value, ast.Dict | ast.List | ast.Set) and not (
            isinstance(value, ast.Dict | ast.List | ast.Set) and _is_constant_table(stmt))
        if (isinstance(value, ast.Call) and _name(value) in STATEFUL_CALLS) or mutable_literal:
            out.append(f"{where}:{stmt.lineno}: module-level mutable {ast.unparse(stmt)[:60]}")
    return out


def _is_constant_table(stmt: ast.stmt) -> bool:
    """An UPPER_CASE (or dunder: ``__all__``) name bound to a literal table is a
    constant by convention."""
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]  # type: ignore[attr-defined]
    return all(isinstance(t, ast.Name) and (t.id.lstrip("_").isupper()
                                            or (t.id.startswith("__") and t.id.endswith("__")))
               for t in targets)


@pytest.mark.parametrize("package", PURE)
def test_pure_package_keeps_no_process_wide_state(package: str) -> None:
    found = [f for path in sorted((SRC / package).rglob("*.py")) for f in _findings(path)]
    assert found == []


def test_the_scan_finds_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import functools, threading\n"
        "from collections import OrderedDict\n"
        "_seen: OrderedDict[bytes, int] = OrderedDict()\n"
        "_lock = threading.Lock()\n"
        "_memo = {}\n"
        "TABLE = {1: 'a'}\n"
        "@functools.lru_cache(maxsize=8)\n"
        "def f(x): return x\n"
        "@functools.lru_cache(maxsize=1)\n"
        "def constant(): return 1\n"
        "def g():\n"
        "    global _memo\n", "utf-8")
    found = _findings(bad, tmp_path)
    assert [f.split(": ", 1)[1].split(" ")[0] for f in found] == [
        "f", "global", "module-level", "module-level", "module-level"]
