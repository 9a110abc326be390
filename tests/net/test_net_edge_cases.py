"""Edge cases of the network layer found in review, each a wrong verdict or a rule
file that would not do what it says: source/port matching, address families,
overlapping prefixes, priorities, Azure's own host names, text that reaches
config files, and squid's nested wildcards.  Generated rules are loaded by the
real tools (nft in a scratch namespace, squid -k parse) as the other tests do."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bootwatch.errors import NetworkInputError
from bootwatch.net.firewall import evaluate_firewall, parse_firewall
from bootwatch.net.matching import Context
from bootwatch.net.netns import NamespaceSet
from bootwatch.net.nsg import NsgEvaluation, evaluate_nsg, parse_nsg
from bootwatch.net.rules import RuleFormat, RuleOptions, generate_rules
from bootwatch.net.servicetag import ServiceTagDocument, decode_document
from bootwatch.net.target import parse_target

from .conftest import AZURE_FILE, require_netns, squid_conf

AZ = decode_document(json.dumps(AZURE_FILE).encode(), "azure")
ATT = "20.62.129.149"  # inside AzureAttestation's 20.62.129.148/30


def _own(prefixes: list[str], fqdns: list[str], name: str = "Bootwatch") -> ServiceTagDocument:
    body = {"changeNumber": 1, "cloud": "Public",
            "values": [{"name": name, "id": "Bootwatch",
                        "properties": {"changeNumber": 1, "addressPrefixes": prefixes}}],
            "bootwatch": {"fqdns": fqdns, "ports": [443]}}
    return decode_document(json.dumps(body).encode(), "doc")


def rule(name: str, priority: int, access: str, dest: str, *, source: str = "*",
         source_port: str = "*", port: str = "*") -> dict[str, Any]:
    return {"name": name, "properties": {
        "priority": priority, "direction": "Outbound", "access": access, "protocol": "*",
        "sourceAddressPrefix": source, "sourcePortRange": source_port,
        "destinationAddressPrefix": dest, "destinationPortRange": port}}


def nsg(rules: list[dict[str, Any]], to: str = ATT, *, vm_ip: str | None = None,
        doc: ServiceTagDocument = AZ) -> NsgEvaluation:
    parsed, _ = parse_nsg(json.dumps(rules).encode(), "nsg.json")
    ctx = Context(doc, parse_target(to), ipaddress.ip_address(vm_ip) if vm_ip else None)
    return evaluate_nsg(parsed, ctx, "nsg.json")


# --- NSG evaluation -----------------------------------------------------------------


def test_deny_for_another_source_does_not_match_when_source_ports_are_limited() -> None:
    # the VM (10.0.0.4) is outside the Deny's source: the rule cannot match, whatever
    # the source port; only an *unknown* source is assumed to match a Deny
    ev = nsg([rule("DenyOtherSubnet", 100, "Deny", "*", source="10.9.9.0/24",
                   source_port="1000-2000")], vm_ip="10.0.0.4")
    assert (ev.allowed, ev.rule.name) == (True, "AllowInternetOutBound")


def test_full_source_port_range_is_any_port() -> None:
    # 0-65535 covers every source port: Azure lets this Allow match like "*"
    ev = nsg([rule("AllowAll", 100, "Allow", "*", source_port="0-65535"),
              rule("DenyAll", 4000, "Deny", "*")], vm_ip="10.0.0.4")
    assert (ev.allowed, ev.rule.name) == (True, "AllowAll")


@pytest.mark.parametrize(("dest", "to"), [("::/0", ATT), ("0.0.0.0/0", "2001:db8::1")])
def test_default_route_prefix_covers_only_its_family(dest: str, to: str) -> None:
    # ::/0 holds no IPv4 address and 0.0.0.0/0 no IPv6 address
    ev = nsg([rule("DenyOtherFamily", 100, "Deny", dest)], to=to)
    assert ev.allowed is True and ev.rule.name == "AllowInternetOutBound"


def test_firewall_default_route_prefix_covers_only_its_family() -> None:
    fw = {"networkRuleCollections": [{"name": "Block6", "properties": {
        "priority": 100, "action": {"type": "Deny"}, "rules": [
            {"name": "AllV6", "protocols": ["Any"], "sourceAddresses": ["*"],
             "destinationAddresses": ["::/0"], "destinationPorts": ["*"]}]}}, {
        "name": "Allow", "properties": {"priority": 200, "action": {"type": "Allow"}, "rules": [
            {"name": "Att", "protocols": ["TCP"], "sourceAddresses": ["*"],
             "destinationAddresses": ["AzureAttestation"], "destinationPorts": ["443"]}]}}]}
    ev = evaluate_firewall(parse_firewall(json.dumps(fw).encode(), "fw.json"),
                           Context(AZ, parse_target(ATT)), "fw.json")
    assert (ev.allowed, ev.rule.label) == (True, "Allow/Att")


def test_deny_of_part_of_a_tag_prefix_denies_the_host_name() -> None:
    # the host name stands for every address of 20.62.129.148/30; DNS may answer
    # .149, which the Deny blocks, so attestation traffic is not reliably allowed
    doc = _own(["20.62.129.148/30"], ["att.example.com"])
    ev = nsg([rule("DenyOneAddress", 100, "Deny", "20.62.129.149")],
             to="https://att.example.com", doc=doc)
    assert (ev.allowed, ev.rule.name) == (False, "DenyOneAddress")
    denied = [str(u.destination) for u in ev.units if not u.allowed]
    assert denied == ["20.62.129.149/32"]


def test_firewall_deny_of_part_of_a_tag_prefix_denies_the_host_name() -> None:
    doc = _own(["20.62.129.148/30"], ["att.example.com"])
    fw = {"networkRuleCollections": [{"name": "Block", "properties": {
        "priority": 100, "action": {"type": "Deny"}, "rules": [
            {"name": "One", "protocols": ["TCP"], "sourceAddresses": ["*"],
             "destinationAddresses": ["20.62.129.150-20.62.129.150"],
             "destinationPorts": ["443"]}]}}, {
        "name": "Allow", "properties": {"priority": 200, "action": {"type": "Allow"}, "rules": [
            {"name": "All", "protocols": ["TCP"], "sourceAddresses": ["*"],
             "destinationAddresses": ["*"], "destinationPorts": ["443"]}]}}]}
    ev = evaluate_firewall(parse_firewall(json.dumps(fw).encode(), "fw.json"),
                           Context(doc, parse_target("https://att.example.com")), "fw.json")
    assert (ev.allowed, ev.rule.label) == (False, "Block/One")


@pytest.mark.parametrize("priority", [4097, 5000, 64999])
def test_priority_between_user_and_default_ranges_is_refused(priority: int) -> None:
    # 100-4096 for security rules, 65000-65500 for default rules (the message says so)
    with pytest.raises(NetworkInputError, match="100-4096"):
        nsg([rule("Odd", priority, "Allow", "*")])


def test_azure_host_name_is_accepted_with_azures_own_file() -> None:
    # Azure's file carries no host names; the documented *.attest.azure.net stands
    # for the AzureAttestation tag (docs/network.md), as the rule generators use it
    ev = nsg([rule("AllowAtt", 100, "Allow", "AzureAttestation", port="443"),
              rule("DenyAll", 4000, "Deny", "*")], to="https://myatt.eus.attest.azure.net")
    assert (ev.allowed, ev.rule.name) == (True, "AllowAtt")
    assert {str(u.destination) for u in ev.units} == {"20.62.129.148/30", "40.71.15.204/30"}


# --- generated text -------------------------------------------------------------------


HOSTILE_TAG = ("Bw\nflush ruleset\n*filter\n:OUTPUT DROP [0:0]\nCOMMIT\n"
               "http_access allow all")


@pytest.mark.parametrize("fmt", [RuleFormat.NFTABLES, RuleFormat.IPTABLES, RuleFormat.SQUID])
def test_tag_name_cannot_add_lines_to_generated_rules(fmt: RuleFormat) -> None:
    # the document may come from a remote service; its tag name only reaches a
    # comment, and must not start new lines the tool would obey
    opts = RuleOptions(name="AllowAtt")
    hostile = generate_rules(_own(["10.20.0.2/32"], ["att.example.com"], HOSTILE_TAG), fmt,
                             opts)
    benign = generate_rules(_own(["10.20.0.2/32"], ["att.example.com"], "Bw"), fmt, opts)

    def active(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    assert active(hostile) == active(benign)


def test_tag_name_cannot_flush_the_ruleset(netns: NamespaceSet, tmp_path: Path) -> None:
    text = generate_rules(_own(["10.20.0.2/32"], ["att.example.com"], "Bw\nflush ruleset\n#"),
                          RuleFormat.NFTABLES, RuleOptions(name="AllowAtt"))
    path = tmp_path / "allow.nft"
    path.write_text(text)
    ns = netns.add("nft")
    ns.run("nft", "-f", "-", input_text="table inet keep {\n chain output {\n"
           "  type filter hook output priority 10; policy drop;\n }\n}\n")
    ns.run("nft", "-f", str(path))
    assert "table inet keep" in ns.run("nft", "list", "tables").stdout


def test_squid_nested_wildcards_parse(tmp_path: Path) -> None:
    require_netns()
    doc = _own(["10.20.0.2/32"], ["*.x.attest.example.org", "*.attest.example.org"])
    snippet = generate_rules(doc, RuleFormat.SQUID)
    conf = squid_conf(tmp_path, snippet)
    ok = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "ERROR" not in ok.stderr and "WARNING: '" not in ok.stderr
    assert "dstdomain .attest.example.org\n" in snippet


def test_iptables_with_more_than_fifteen_ports_loads(netns: NamespaceSet,
                                                     tmp_path: Path) -> None:
    # multiport takes at most 15 ports; the document may list up to 64
    ports = tuple(range(8000, 8020))
    text = generate_rules(_own(["10.20.0.2/32"], []), RuleFormat.IPTABLES,
                          RuleOptions(ports=ports))
    path = tmp_path / "rules.txt"
    path.write_text(text)
    ns = netns.add("ipt")
    ns.run("iptables-restore", "--noflush", str(path))
    listing = ns.run("iptables", "-S", "OUTPUT").stdout
    assert all(str(p) in listing for p in ports)


def test_firewall_application_port_outside_azures_range_is_refused() -> None:
    # Azure Firewall application rules take ports 0-64000 (monitoring-facts section 3),
    # and `network explain` refuses such a file: the generator must not write one
    with pytest.raises(NetworkInputError, match="64000"):
        generate_rules(_own(["10.20.0.2/32"], ["att.example.com"]),
                       RuleFormat.AZURE_FIREWALL_APPLICATION, RuleOptions(ports=(65000,)))


def test_url_with_port_zero_is_refused() -> None:
    # port 0 is no TCP port; it is not the scheme's default either
    with pytest.raises(NetworkInputError, match="1-65535"):
        parse_target("https://att.example.com:0/")
