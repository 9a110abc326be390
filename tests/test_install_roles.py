"""Installs by role (issue 10, item 6): ``bootwatch[agent]`` on a VM never needs the server
stack, and a command whose role's extra is missing says which extra to install instead of
a traceback.

The import check runs the real CLI in a subprocess whose import system refuses every
module of the service and monitor extras (what an agent-only install lacks), and the
static check reads every module of each role's packages and pyproject.toml's extras.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bootwatch.cli.main import EXTRA_OF

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "bootwatch"

#: importable module names of the distributions pyproject names
DIST_MODULES = {
    "cryptography": "cryptography", "pybase64": "pybase64", "pyyaml": "yaml",
    "packaging": "packaging", "click": "click", "rich": "rich", "httpx": "httpx",
    "pyjwt": "jwt", "tpm2-pytss": "tpm2_pytss", "lark": "lark", "jmespath": "jmespath",
    "fastapi": "fastapi", "uvicorn": "uvicorn", "sqlalchemy": "sqlalchemy",
    "alembic": "alembic", "psycopg": "psycopg", "prometheus-client": "prometheus_client",
    "nats-py": "nats", "jinja2": "jinja2", "certifi": "certifi",
}

BLOCKER = """
import sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
from bootwatch.cli.main import main
main({argv!r})
"""


def _extras() -> dict[str, set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out: dict[str, set[str]] = {"": set()}
    for dep in project["dependencies"]:
        out[""].add(_module(dep))
    for extra, deps in project["optional-dependencies"].items():
        out[extra] = {_module(d) for d in deps if not d.startswith("bootwatch[")}
    return out


def _module(requirement: str) -> str:
    name = requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
    return DIST_MODULES.get(name.lower(), name.lower())


def _third_party_imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "bootwatch"}


def _run(blocked: set[str], *argv: str) -> subprocess.CompletedProcess[str]:
    code = BLOCKER.format(blocked=sorted(blocked), argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_the_agent_needs_only_the_core_and_the_agent_extra() -> None:
    extras = _extras()
    allowed = extras[""] | extras["agent"]
    used = _third_party_imports(SRC / "agent")
    assert used <= allowed, f"agent/ imports {used - allowed}, not in bootwatch[agent]"


@pytest.mark.parametrize("extra", ["service", "monitor", "agent", "lab"])
def test_every_optional_module_names_its_extra(extra: str) -> None:
    extras = _extras()
    for module in extras[extra]:
        assert module in EXTRA_OF or module in extras[""], (module, extra)


def test_server_commands_without_the_server_stack_say_which_extra(tmp_path: Path) -> None:
    server_stack = {m for m, e in EXTRA_OF.items() if e in ("service", "monitor")}
    res = _run(server_stack, "provider", "list", "--data-dir", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert "pip install 'bootwatch[service]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_agent_and_log_commands_work_without_the_server_stack(corpus: Path) -> None:
    server_stack = {m for m, e in EXTRA_OF.items() if e in ("service", "monitor")}
    res = _run(server_stack, "agent", "run", "--help")
    assert res.returncode == 0, res.stderr
    log = next((corpus / "eventlogs").rglob("*.bin"))
    res = _run(server_stack, "log", "replay", str(log))
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 1), res.stderr
