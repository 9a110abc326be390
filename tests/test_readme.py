"""Every ```sh block of README.md runs as written, in order, and exits as documented.

How the README is run (so that the docs cannot drift from the commands):

* Every fenced block opened with ```` ```sh ```` is run, in README order, in ONE bash
  process (``set -eE -o pipefail``), so variables, ``export``s and the working folder
  carry over from block to block exactly as in a reader's terminal.  Blocks of every
  section are run, including sections other branches add (monitor, agent, network,
  enrollment): writing a ```sh block means it is tested.
* A block is skipped only when the line just before its fence (blank lines allowed in
  between) is the marker ``<!-- readme-test: skip (REASON) -->``; the reason is
  required (e.g. it installs packages, or it runs this test suite).
* Every command must exit 0 unless its line (the last line of a ``\\``-continued
  command) ends with the comment ``# exit N`` (or ``# exits N``, optionally followed
  by ``:`` and an explanation): then it must exit with exactly N.
* Commands ending in ``&`` start background processes (e.g. the service); whatever is
  still running when the README is done is killed (the shell runs in its own session
  and the whole process group is killed).
* The environment is a scratch one: the working folder is an empty ``clone/`` folder
  with the shared corpus beside it as ``../shared`` (a symlink),
  ``BOOTWATCH_SHARED`` points at the corpus, ``TMPDIR``, ``XDG_DATA_HOME``,
  ``XDG_CONFIG_HOME`` and ``BOOTWATCH_LAB_DIR`` point into the scratch folder,
  ``BOOTWATCH_PORT`` is a free loopback port, and the ``bootwatch`` on ``PATH`` is the
  one installed next to the interpreter running the tests (the project's ``.venv``).

A failure names the README line of the command that failed, the exit code and the
shell's output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, SHARED, stop_leftover_swtpms

pytestmark = pytest.mark.swtpm

README = REPO / "README.md"
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
FENCE_OPEN = re.compile(r"^```sh\s*$")
EXIT = re.compile(r"\s#\s*exits?\s+(?P<code>\d+)\b.*$")
#: the whole README, all blocks together, must finish within this (the suite's budget)
TIMEOUT = 240


@dataclass(frozen=True)
class Block:
    """One ```sh block: its first line number in README.md and its lines."""

    line: int
    lines: tuple[str, ...]
    skip_reason: str | None


def readme_blocks(text: str) -> list[Block]:
    """The ```sh blocks of ``text`` in order, each with its skip marker (if any)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not FENCE_OPEN.match(lines[i]):
            i += 1
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = SKIP.match(lines[j].strip()) if j >= 0 else None
        body: list[str] = []
        k = i + 1
        while k < len(lines) and lines[k].rstrip() != "```":
            body.append(lines[k])
            k += 1
        if k == len(lines):
            raise AssertionError(f"README.md:{i + 1}: ```sh block is never closed")
        blocks.append(Block(i + 2, tuple(body), marker.group("reason") if marker else None))
        i = k + 1
    return blocks


def _with_exit_checks(block: Block) -> list[str]:
    """The block's lines, with each ``# exit N`` command rewritten to check its code.

    Lines keep their count and order so that a shell line number maps back to the
    README; only the first and last line of an annotated command change.
    """
    out = list(block.lines)
    start = 0
    for n, line in enumerate(block.lines):
        continued = line.rstrip().endswith("\\")
        m = None if continued else EXIT.search(line)
        if m:
            out[start] = "__rc=0; " + out[start]
            # the annotation is the line's tail, unchanged by the prefix added at `start`
            cut = out[n][: len(out[n]) - len(m.group(0))]
            out[n] = (f"{cut.rstrip()} || __rc=$?; "
                      f"__expect {int(m.group('code'))} \"$__rc\" {block.line + n}")
        if not continued:
            start = n + 1
    return out


def build_script(blocks: list[Block]) -> tuple[str, dict[int, int]]:
    """One bash script running every non-skipped block; and script line -> README line."""
    head = [
        "set -eE -o pipefail",
        "__expect() { if [ \"$2\" != \"$1\" ]; then",
        "  echo \"README.md:$3: expected exit $1, got $2\" >&2; exit 97; fi; }",
        "trap 'echo \"readme-test: script line $LINENO failed with exit $?\" >&2' ERR",
    ]
    script = list(head)
    where: dict[int, int] = {}
    for block in blocks:
        if block.skip_reason is not None:
            continue
        script.append(f"# README.md:{block.line}")
        for n, line in enumerate(_with_exit_checks(block)):
            script.append(line)
            where[len(script)] = block.line + n
    return "\n".join(script) + "\n", where


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _explain(stderr: str, where: dict[int, int]) -> str:
    m = re.search(r"readme-test: script line (\d+) failed with exit (\d+)", stderr)
    if m:
        line = where.get(int(m.group(1)))
        return f"README.md:{line}: command exited {m.group(2)}"
    m = re.search(r"README\.md:\d+: expected exit \d+, got \d+", stderr)
    return m.group(0) if m else "the README's commands failed"


def test_readme_blocks_parse_and_markers() -> None:
    """The extraction itself: skip markers, exit annotations, continued commands."""
    text = "\n".join([
        "<!-- readme-test: skip (installs packages) -->",
        "```sh",
        "bash scripts/test",
        "```",
        "",
        "```sh",
        "a=1",
        "bootwatch x \\",
        "    --y   # exit 1: because",
        "bootwatch z   # exits 2",
        "```",
    ])
    skipped, run = readme_blocks(text)
    assert skipped.skip_reason == "installs packages" and skipped.line == 3
    assert run.skip_reason is None and run.line == 7
    lines = _with_exit_checks(run)
    assert lines[0] == "a=1"
    assert lines[1] == "__rc=0; bootwatch x \\"
    assert lines[2] == '    --y || __rc=$?; __expect 1 "$__rc" 9'
    assert lines[3] == '__rc=0; bootwatch z || __rc=$?; __expect 2 "$__rc" 10'


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (["true", "false   # exit 1", "sh -c 'exit 3'"], "README.md:12: command exited 3"),
        (["true", "true   # exit 1: should have failed"], "README.md:11: expected exit 1, got 0"),
    ],
)
def test_a_failing_block_names_its_readme_line(tmp_path: Path, body: list[str],
                                               named: str) -> None:
    """The runner fails on an unexpected exit code and names the README line."""
    text = "\n".join(["# t", "", "<!-- readme-test: skip (not this one) -->", "```sh",
                      "exit 5", "```", "", "```sh", "x=1", *body, "```"])
    script, where = build_script(readme_blocks(text))
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert proc.returncode != 0
    assert _explain(proc.stderr, where) == named


def test_every_readme_sh_block_runs_as_written(tmp_path: Path, swtpm_available: None) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert [b for b in blocks if b.skip_reason is None], "README.md has no ```sh block to run"
    script, where = build_script(blocks)
    clone = tmp_path / "clone"
    clone.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    for sub in ("tmp", "xdg-data", "xdg-config", "lab"):
        (tmp_path / sub).mkdir()
    (tmp_path / "readme.sh").write_text(script)
    bindir = str(Path(sys.executable).parent)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOOTWATCH_")},
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "BOOTWATCH_SHARED": str(SHARED),
        "BOOTWATCH_LAB_DIR": str(tmp_path / "lab"),
        "BOOTWATCH_PORT": str(_free_port()),
        "TMPDIR": str(tmp_path / "tmp"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "COLUMNS": "80",
    }
    if os.environ.get("BOOTWATCH_SKIP_SWTPM"):
        env["BOOTWATCH_SKIP_SWTPM"] = os.environ["BOOTWATCH_SKIP_SWTPM"]
    proc = subprocess.Popen(["bash", str(tmp_path / "readme.sh")], cwd=clone, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"README commands did not finish in {TIMEOUT} s\n{out[-3000:]}\n"
                    f"{err[-3000:]}")
    finally:
        # background processes the README started (e.g. the service) share the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        stop_leftover_swtpms(tmp_path)
    assert proc.returncode == 0, (f"{_explain(err, where)}\n--- stdout (end)\n{out[-4000:]}"
                                  f"\n--- stderr (end)\n{err[-4000:]}")
    # nothing the README makes lands outside the scratch folder's clone/ and tmp/
    assert not any(clone.iterdir()), sorted(p.name for p in clone.iterdir())
