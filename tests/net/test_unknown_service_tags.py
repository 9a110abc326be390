"""A service tag the loaded document does not define fails closed, as unknown groups do.

Found in review: such a tag was taken as matching nothing, so a Deny to
``AzureCloud`` (every Azure public address, an attestation endpoint hosted in Azure
among them) was skipped and ``network explain`` could say "allowed" where Azure
denies.  Now whether the tag holds the address is unknown: a Deny naming it is
assumed to match, an Allow naming it is assumed not to, and the warnings name the
tag and how to settle it (``--from`` a document that defines it).  Tags the
document defines, and the NSG's own ``Internet``, ``VirtualNetwork``,
``AzureLoadBalancer`` and ``*``, keep their meaning: no false blocks.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootwatch.net.firewall import FirewallEvaluation, evaluate_firewall, parse_firewall
from bootwatch.net.matching import Context, destination_unknowns
from bootwatch.net.nsg import NsgEvaluation, evaluate_nsg, parse_nsg
from bootwatch.net.servicetag import ServiceTagDocument, decode_document
from bootwatch.net.target import parse_target

from .conftest import AZURE_FILE

ATT = "20.62.129.149"  # inside AzureAttestation's 20.62.129.148/30 (conftest.AZURE_FILE)
#: Azure's file as the tests load it: AzureAttestation only, no AzureCloud
AZ = decode_document(json.dumps(AZURE_FILE).encode(), "azure")


def _with(*extra: tuple[str, list[str]]) -> ServiceTagDocument:
    """AZURE_FILE plus more tags (name, prefixes), as Azure's full file would hold."""
    body = json.loads(json.dumps(AZURE_FILE))
    for name, prefixes in extra:
        body["values"].append({"name": name, "id": name, "properties": {
            "changeNumber": 1, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": "", "addressPrefixes": prefixes}})
    return decode_document(json.dumps(body).encode(), "azure+")


#: AzureCloud defined and holding the attestation prefixes (as in Azure's real file)
WITH_CLOUD = _with(("AzureCloud", ["20.0.0.0/8", "40.64.0.0/10"]))
#: a tag defined but not holding the destination
WITH_STORAGE = _with(("Storage", ["52.239.0.0/16"]))


def _ctx(doc: ServiceTagDocument | None, to: str = ATT, vm_ip: str | None = "10.0.0.4"
         ) -> Context:
    return Context(doc, parse_target(to), ipaddress.ip_address(vm_ip) if vm_ip else None)


def _nsg_rule(name: str, priority: int, access: str, dest: str, *,
              source: str = "*") -> dict[str, Any]:
    return {"name": name, "properties": {
        "priority": priority, "direction": "Outbound", "access": access, "protocol": "Tcp",
        "sourceAddressPrefix": source, "sourcePortRange": "*",
        "destinationAddressPrefix": dest, "destinationPortRange": "443"}}


def _nsg(rules: list[dict[str, Any]], ctx: Context) -> NsgEvaluation:
    parsed, _ = parse_nsg(json.dumps(rules).encode(), "nsg.json")
    return evaluate_nsg(parsed, ctx, "nsg.json")


def _fw_collection(name: str, priority: int, action: str, dest: str) -> dict[str, Any]:
    return {"name": name, "properties": {"priority": priority, "action": {"type": action},
            "rules": [{"name": "r", "protocols": ["TCP"], "sourceAddresses": ["*"],
                       "destinationAddresses": [dest], "destinationPorts": ["443"]}]}}


def _fw(collections: list[dict[str, Any]], ctx: Context) -> FirewallEvaluation:
    rules = parse_firewall(json.dumps({"networkRuleCollections": collections}).encode(),
                           "fw.json")
    return evaluate_firewall(rules, ctx, "fw.json")


DENY_ALL = _nsg_rule("DenyAllElse", 4000, "Deny", "*")


def _names_unknown(warnings: tuple[str, ...], who: str, assumption: str) -> bool:
    """A warning names the rule, the unknown tag and the assumption made."""
    return any(who in w and "'AzureCloud'" in w and assumption in w for w in warnings)


def _says_how_to_settle(warnings: tuple[str, ...]) -> bool:
    return any("'AzureCloud'" in w and "--from" in w for w in warnings)


# --- NSG -----------------------------------------------------------------------------


def test_nsg_deny_to_an_unknown_tag_above_the_allow_blocks() -> None:
    rules = [_nsg_rule("DenyAzureCloud", 100, "Deny", "AzureCloud"),
             _nsg_rule("AllowAtt", 200, "Allow", "AzureAttestation"), DENY_ALL]
    ev = _nsg(rules, _ctx(AZ))
    assert (ev.allowed, ev.rule.name) == (False, "DenyAzureCloud")
    assert "'AzureCloud'" in ev.units[0].notes[0], ev.units
    assert _names_unknown(ev.warnings, "'DenyAzureCloud'", "assumed to match this Deny")
    assert _says_how_to_settle(ev.warnings), ev.warnings


def test_nsg_allow_only_to_an_unknown_tag_does_not_allow() -> None:
    ev = _nsg([_nsg_rule("AllowAzureCloud", 100, "Allow", "AzureCloud"), DENY_ALL], _ctx(AZ))
    assert (ev.allowed, ev.rule.name) == (False, "DenyAllElse")
    assert _names_unknown(ev.warnings, "'AllowAzureCloud'", "assumed not to match this Allow")


def test_nsg_settled_by_a_document_that_defines_the_tag() -> None:
    rules = [_nsg_rule("DenyAzureCloud", 100, "Deny", "AzureCloud"),
             _nsg_rule("AllowAtt", 200, "Allow", "AzureAttestation"), DENY_ALL]
    # holding the destination: a sure Deny, nothing unknown said
    ev = _nsg(rules, _ctx(WITH_CLOUD))
    assert (ev.allowed, ev.rule.name, ev.units[0].notes) == (False, "DenyAzureCloud", ())
    assert ev.warnings == ()
    # an Allow to it now allows for sure
    ev = _nsg([_nsg_rule("AllowAzureCloud", 100, "Allow", "AzureCloud"), DENY_ALL],
              _ctx(WITH_CLOUD))
    assert (ev.allowed, ev.rule.name, ev.warnings) == (True, "AllowAzureCloud", ())


def test_nsg_deny_to_a_defined_tag_without_the_destination_does_not_block() -> None:
    rules = [_nsg_rule("DenyStorage", 100, "Deny", "Storage"),
             _nsg_rule("AllowAtt", 200, "Allow", "AzureAttestation"), DENY_ALL]
    ev = _nsg(rules, _ctx(WITH_STORAGE))
    assert (ev.allowed, ev.rule.name, ev.warnings) == (True, "AllowAtt", ())


@pytest.mark.parametrize(("dest", "to"), [
    ("AzureLoadBalancer", ATT),  # the platform's probe source: never a destination here
    ("VirtualNetwork", ATT),  # a public address is outside the private ranges
    ("Internet", "10.20.0.2"),  # a private address is not Internet
])
def test_nsg_special_tags_keep_their_meaning(dest: str, to: str) -> None:
    # none of them is in any service-tag document, and none is unknown
    rules = [_nsg_rule("DenySpecial", 100, "Deny", dest),
             _nsg_rule("AllowAny", 200, "Allow", "*"), DENY_ALL]
    ev = _nsg(rules, _ctx(AZ, to))
    assert (ev.allowed, ev.rule.name, ev.warnings) == (True, "AllowAny", ())


def test_nsg_special_tags_still_match_where_they_apply() -> None:
    for dest, to in (("Internet", ATT), ("VirtualNetwork", "10.20.0.2"), ("*", ATT)):
        ev = _nsg([_nsg_rule("DenySpecial", 100, "Deny", dest)], _ctx(AZ, to))
        assert (ev.allowed, ev.rule.name, ev.warnings) == (False, "DenySpecial", ()), dest


def test_nsg_without_any_document_a_tag_deny_fails_closed() -> None:
    # no --from: every tag is unknown, AzureAttestation included
    rules = [_nsg_rule("DenyAtt", 100, "Deny", "AzureAttestation"),
             _nsg_rule("AllowAny", 200, "Allow", "*")]
    ev = _nsg(rules, _ctx(None, "192.0.2.9"))
    assert (ev.allowed, ev.rule.name) == (False, "DenyAtt")
    assert any("'AzureAttestation'" in w and "no service-tag document" in w and "--from" in w
               for w in ev.warnings), ev.warnings


def test_nsg_unknown_source_tag_fails_closed() -> None:
    # whether the VM's address is in the tag is as unknown as a destination's
    deny = _nsg_rule("DenyFromCloud", 100, "Deny", "*", source="AzureCloud")
    ev = _nsg([deny, _nsg_rule("AllowAny", 200, "Allow", "*")], _ctx(AZ))
    assert (ev.allowed, ev.rule.name) == (False, "DenyFromCloud")
    assert _names_unknown(ev.warnings, "'DenyFromCloud'", "assumed to match this Deny")
    allow = _nsg_rule("AllowFromCloud", 100, "Allow", "*", source="AzureCloud")
    ev = _nsg([allow, DENY_ALL], _ctx(AZ))
    assert (ev.allowed, ev.rule.name) == (False, "DenyAllElse")


# --- Azure Firewall --------------------------------------------------------------------


def test_firewall_deny_to_an_unknown_tag_above_the_allow_blocks() -> None:
    ev = _fw([_fw_collection("DenyCloud", 100, "Deny", "AzureCloud"),
              _fw_collection("AllowAtt", 200, "Allow", "AzureAttestation")], _ctx(AZ))
    assert (ev.allowed, ev.rule.label) == (False, "DenyCloud/r")
    assert _names_unknown(ev.warnings, "DenyCloud/r", "assumed to match this Deny")
    assert _says_how_to_settle(ev.warnings), ev.warnings


def test_firewall_allow_only_to_an_unknown_tag_does_not_allow() -> None:
    ev = _fw([_fw_collection("AllowCloud", 100, "Allow", "AzureCloud")], _ctx(AZ))
    assert (ev.allowed, ev.rule.name) == (False, "DefaultDeny")
    assert _names_unknown(ev.warnings, "AllowCloud/r", "assumed not to match this Allow")


def test_firewall_deny_to_a_defined_tag_without_the_destination_does_not_block() -> None:
    ev = _fw([_fw_collection("DenyStorage", 100, "Deny", "Storage"),
              _fw_collection("AllowAtt", 200, "Allow", "AzureAttestation")],
             _ctx(WITH_STORAGE))
    assert (ev.allowed, ev.rule.label, ev.warnings) == (True, "AllowAtt/r", ())
    ev = _fw([_fw_collection("DenyCloud", 100, "Deny", "AzureCloud"),
              _fw_collection("AllowAtt", 200, "Allow", "AzureAttestation")],
             _ctx(WITH_CLOUD))
    assert (ev.allowed, ev.rule.label, ev.warnings) == (False, "DenyCloud/r", ())


# --- the shared step and the command line ------------------------------------------------


def test_destination_unknowns_names_the_tags() -> None:
    assert destination_unknowns(True, (), "g", tags=("AzureCloud",)) == ()
    assert destination_unknowns(False, (), "g", tags=("AzureCloud",)) == (
        "whether the destination is in service tag 'AzureCloud'",)
    assert destination_unknowns(False, ("id",), "destinationIpGroups",
                                tags=("A", "B")) == (
        "whether the destination is in its destinationIpGroups",
        "whether the destination is in service tags 'A', 'B'")
    assert destination_unknowns(False, (), "g", tags=()) is None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "network", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_names_the_tag_and_how_to_settle_it(tmp_path: Path, azure_file: Path) -> None:
    rules = tmp_path / "nsg.json"
    rules.write_text(json.dumps([_nsg_rule("DenyAzureCloud", 100, "Deny", "AzureCloud"),
                                 _nsg_rule("AllowAtt", 200, "Allow", "AzureAttestation")]))
    out = _cli("explain", "--rules", str(rules), "--to", f"https://{ATT}", "--from",
               str(azure_file))
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stdout.startswith(f"DENIED: TCP to {ATT}:443 is decided by DenyAzureCloud, "
                                 "priority 100")
    warnings = tuple(line for line in out.stdout.splitlines() if "warning:" in line)
    assert _names_unknown(warnings, "'DenyAzureCloud'", "assumed to match this Deny"), out.stdout
    assert _says_how_to_settle(warnings), out.stdout
    # settled: a document defining AzureCloud without the destination -> allowed
    settled = tmp_path / "ServiceTags_Public.json"
    body = json.loads(azure_file.read_text())
    body["values"].append({"name": "AzureCloud", "id": "AzureCloud", "properties": {
        "changeNumber": 1, "region": "", "regionId": 0, "platform": "Azure",
        "systemService": "", "addressPrefixes": ["52.239.0.0/16"]}})
    settled.write_text(json.dumps(body))
    out = _cli("explain", "--rules", str(rules), "--to", f"https://{ATT}", "--from",
               str(settled))
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "AllowAtt" in out.stdout.splitlines()[0] and "warning" not in out.stdout
