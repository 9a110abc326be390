"""``bootwatch monitor dry-run`` without ``--json`` names the boots that matter.

A README walk-through found its text form printed only the summary (``PERMITS: the policy
would deny 0 of 3 boot(s) on 0 VM(s)``), so a permit-all policy that would let the denied
VM ``nosb`` through read as harmless; only ``--json`` showed ``deny -> permit``. The text
now lists every boot whose verdict would change and every boot the candidate would deny.

Against a standalone monitor under uvicorn on loopback (real SQLite), fed outcome events
that carry the claims the service recorded, as the service's sink hands them over.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bwservers import serve_monitor
from click.testing import CliRunner, Result

from bootwatch.cli.main import cli
from bootwatch.monitor.container import MonitorContainer
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, Verdict

ADMIN = "dry-run-text-admin-token-0123456789"

PERMIT_ALL = "version=1.2;\nauthorizationrules{\n => permit();\n};\n"
NOBODY = ('version=1.2;\nauthorizationrules{\n'
          '[type=="x-ms-azurevm-osdistro", value=="Nobody"] => permit();\n};\n')
DENY_NO_SB = ('version=1.2;\nauthorizationrules{\n'
              '[type=="secureboot", value==false] => deny();\n => permit();\n};\n')

#: name -> (Secure Boot on, the verdict the service recorded); one VM's name is rich markup
FLEET = {"web": (True, Verdict.PERMIT), "nosb": (False, Verdict.DENY),
         "[bold]db[/bold]": (True, Verdict.PERMIT)}


def _outcome(i: int, vm_id: str, secure_boot: bool, verdict: Verdict) -> OutcomeEvent:
    """One attestation of a distinct boot (its own PCR 7), with the claims a dry run reads."""
    return OutcomeEvent(
        event_id=f"dry-run-{i}", time=datetime.now(UTC) - timedelta(minutes=5), provider="p",
        attestation_type="AzureGuest", verdict=verdict, reason="recorded", policy_hash="h" * 43,
        vm_id=vm_id, pcrs={7: f"{i % 256:02x}" * 32}, reset_count=1, secure_boot=secure_boot,
        events=(BootEvent(0, 7, "EV_EFI_VARIABLE_DRIVER_CONFIG", "ab" * 32, "SecureBoot"),),
        claims=(("secureboot", secure_boot), ("x-ms-azurevm-osdistro", "Ubuntu")))


def _feed(container: MonitorContainer, fleet: dict[str, tuple[bool, Verdict]]) -> None:
    events = []
    for i, (name, (secure_boot, verdict)) in enumerate(fleet.items()):
        vm_id = str(uuid.UUID(int=i + 1)).upper()
        container.monitor.enable(vm_id, name=name)
        events.append(_outcome(i, vm_id, secure_boot, verdict))
    container.monitor.ingest_outcomes(events)


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_monitor(tmp_path_factory.mktemp("dry-run-text"), ADMIN) as (url, container):
        _feed(container, FLEET)
        yield url


def dry_run(url: str, policy: str, tmp: Path, *extra: str) -> Result:
    path = tmp / "candidate.txt"
    path.write_text(policy)
    env = {"BOOTWATCH_MONITOR": url, "BOOTWATCH_MONITOR_TOKEN": ADMIN}
    return CliRunner().invoke(cli, ["monitor", "dry-run", "--policy", str(path), "--since",
                                    "1h", *extra], env=env, catch_exceptions=False)


def boots(url: str, policy: str, tmp: Path) -> dict[str, dict[str, Any]]:
    """The JSON answer's boots by VM name (what the text must agree with)."""
    res = dry_run(url, policy, tmp, "--json")
    return {b["name"]: b for b in json.loads(res.output)["boots"]}


def rows(output: str) -> list[str]:
    """The table's body rows (the lines naming a verdict change; not its header)."""
    return [line for line in output.splitlines()
            if " -> " in line and "recorded -> candidate" not in line]


def test_a_permit_all_policy_lists_the_denied_boot_it_would_permit(
        monitor: str, tmp_path: Path) -> None:
    res = dry_run(monitor, PERMIT_ALL, tmp_path)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "PERMITS: the policy would deny 0 of 3 boot(s) on 0 VM(s)"
    nosb = boots(monitor, PERMIT_ALL, tmp_path)["nosb"]
    [row] = rows(res.output)
    for cell in ("nosb", str(nosb["boot"]), nosb["last_seen"], "deny -> permit",
                 "permitted by line 3: => permit();"):
        assert cell in row, (cell, row)
    assert "web" not in res.output  # its verdict does not change: not listed


def test_a_stricter_policy_lists_the_boots_it_would_break_first(
        monitor: str, tmp_path: Path) -> None:
    res = dry_run(monitor, NOBODY, tmp_path)
    assert res.exit_code == 1, res.output
    assert res.output.splitlines()[0] == "DENIES: the policy would deny 3 of 3 boot(s) on 3 VM(s)"
    listed = rows(res.output)
    assert [("permit -> deny" in r, "deny -> deny" in r) for r in listed] == [
        (True, False), (True, False), (False, True)]
    assert "nosb" in listed[2] and all("no rule permitted" in r for r in listed)
    # a VM's name is printed as the text it is, never as rich markup
    assert any("[bold]db[/bold]" in r for r in listed)


def test_a_denying_rule_is_named_and_unchanged_permits_are_not_listed(
        monitor: str, tmp_path: Path) -> None:
    res = dry_run(monitor, DENY_NO_SB, tmp_path)
    assert res.exit_code == 1, res.output
    [row] = rows(res.output)
    assert "nosb" in row and "deny -> deny" in row
    assert 'denied by line 3: [type=="secureboot", value==false] => deny();' in row


def test_the_json_answer_keeps_its_keys(monitor: str, tmp_path: Path) -> None:
    res = dry_run(monitor, PERMIT_ALL, tmp_path, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert set(doc) == {"boots", "would_deny", "vms_denied"}
    assert {frozenset(b) for b in doc["boots"]} == {frozenset(
        {"vm_id", "name", "boot", "last_seen", "verdict", "would", "deciding_rule", "changes"})}
    assert {b["name"]: (b["verdict"], b["would"], b["changes"]) for b in doc["boots"]} == {
        "web": ("permit", "permit", False), "nosb": ("deny", "permit", True),
        "[bold]db[/bold]": ("permit", "permit", False)}


def test_a_long_list_is_cut_with_a_count_and_no_change_is_said(tmp_path: Path) -> None:
    fleet = {f"vm-{i:02}": (True, Verdict.PERMIT) for i in range(53)}
    with serve_monitor(tmp_path / "data", ADMIN) as (url, container):
        _feed(container, fleet)
        res = dry_run(url, NOBODY, tmp_path)
        assert res.exit_code == 1, res.output
        assert len(rows(res.output)) == 50
        assert res.output.splitlines()[-1] == "... and 3 more (use --json)"
        res = dry_run(url, PERMIT_ALL, tmp_path)
        assert res.exit_code == 0, res.output
        assert res.output.splitlines() == [
            "PERMITS: the policy would deny 0 of 53 boot(s) on 0 VM(s)",
            "no boot's verdict would change"]
