"""Every module states its public surface (issue 10 item 7): ``__all__`` exists, is a
literal list, and names only what the module defines or re-exports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bootwatch"
MODULES = sorted(
    p for p in SRC.rglob("*.py")
    if "migrations" not in p.parts and p.name != "__main__.py"
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_declares_all(path: Path) -> None:
    tree = ast.parse(path.read_text("utf-8"))
    declared = [n for n in tree.body
                if isinstance(n, ast.Assign | ast.AnnAssign)
                and any(isinstance(t, ast.Name) and t.id == "__all__"
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
    assert len(declared) == 1, f"{path.relative_to(SRC)} has no (single) __all__"
    value = declared[0].value
    assert isinstance(value, ast.List | ast.Tuple), "__all__ must be a literal list"
    names = [ast.literal_eval(e) for e in value.elts]
    assert len(names) == len(set(names))


def test_every_name_in_all_exists() -> None:
    """Importing each module (the agent's tpm2-pytss modules included: this suite
    installs every extra) and resolving every name it exports."""
    missing = []
    for path in MODULES:
        name = _module_name(path)
        module = importlib.import_module(name)
        missing += [f"{name}.{n}" for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert missing == []
