"""The NSG and Azure Firewall evaluators on table cases, the remediation text, and
the CLI's exit codes and one-line errors for bad input."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootwatch.errors import NetworkInputError
from bootwatch.net.firewall import evaluate_firewall, parse_firewall
from bootwatch.net.matching import Context
from bootwatch.net.nsg import evaluate_nsg, parse_nsg
from bootwatch.net.remediation import RECOMMENDATION_TITLE, remediation_for
from bootwatch.net.rules import RuleFormat
from bootwatch.net.servicetag import decode_document
from bootwatch.net.target import parse_target
from bootwatch.protocol.health import FailedHop

from .conftest import AZURE_FILE

AZ = decode_document(json.dumps(AZURE_FILE).encode(), "azure")
ATT = "20.62.129.149"  # inside AzureAttestation's 20.62.129.148/30


def rule(name: str, priority: int, access: str, dest: str, *, port: str = "*",
         protocol: str = "*", direction: str = "Outbound", source: str = "*") -> dict[str, Any]:
    return {"name": name, "properties": {
        "priority": priority, "direction": direction, "access": access, "protocol": protocol,
        "sourceAddressPrefix": source, "sourcePortRange": "*",
        "destinationAddressPrefix": dest, "destinationPortRange": port}}


def nsg(rules: list[dict[str, Any]], to: str = ATT, vm_ip: str | None = None) -> Any:
    parsed, _ = parse_nsg(json.dumps(rules).encode(), "nsg.json")
    ctx = Context(AZ, parse_target(to), ipaddress.ip_address(vm_ip) if vm_ip else None)
    return evaluate_nsg(parsed, ctx, "nsg.json")


CASES = [
    # (rules, expected allowed, deciding rule)
    ([], True, "AllowInternetOutBound"),  # default rules added: public address -> Internet
    ([rule("DenyAll", 4096, "Deny", "*")], False, "DenyAll"),
    ([rule("DenyAll", 4096, "Deny", "*"), rule("AllowAtt", 200, "Allow", "AzureAttestation",
                                               port="443", protocol="Tcp")], True, "AllowAtt"),
    # deny before allow: lower number wins whatever the order in the file
    ([rule("AllowAtt", 300, "Allow", "AzureAttestation"), rule("DenyInet", 250, "Deny",
                                                               "Internet")], False, "DenyInet"),
    # the tag vs its prefixes: both match the same address
    ([rule("DenyAll", 4000, "Deny", "*"), rule("AllowPfx", 150, "Allow", "20.62.129.148/30")],
     True, "AllowPfx"),
    ([rule("DenyAll", 4000, "Deny", "*"), rule("AllowOther", 150, "Allow", "20.62.130.0/24")],
     False, "DenyAll"),
    # wrong port, wrong protocol, inbound: do not match
    ([rule("DenyAll", 4000, "Deny", "*"), rule("AllowAtt", 150, "Allow", "AzureAttestation",
                                               port="80")], False, "DenyAll"),
    ([rule("DenyAll", 4000, "Deny", "*"), rule("AllowUdp", 150, "Allow", "AzureAttestation",
                                               protocol="Udp")], False, "DenyAll"),
    ([rule("DenyIn", 100, "Deny", "*", direction="Inbound")], True, "AllowInternetOutBound"),
    # a port range covers 443; the regional tag expands too
    ([rule("DenyAll", 4000, "Deny", "*"), rule("AllowRange", 150, "Allow",
                                               "AzureAttestation.eastus", port="400-500")],
     True, "AllowRange"),
]


@pytest.mark.parametrize(("rules", "allowed", "decider"), CASES)
def test_nsg_table(rules: list[dict[str, Any]], allowed: bool, decider: str) -> None:
    ev = nsg(rules)
    assert (ev.allowed, ev.rule.name) == (allowed, decider)


def test_nsg_private_destination_and_defaults() -> None:
    # a private address is VirtualNetwork: 65000 decides, not 65001
    ev = nsg([], to="10.0.0.4")
    assert ev.rule.name == "AllowVnetOutBound" and ev.rule.priority == 65000
    # an explicit DenyAllOutBound override in the file's defaultSecurityRules is used
    ev = nsg([rule("DenyInternetOutBound", 65001, "Deny", "Internet")])
    assert not ev.allowed and ev.rule.priority == 65001


def test_nsg_unknown_source_fails_closed() -> None:
    rules = [rule("DenyFromSubnet", 200, "Deny", "*", source="10.1.0.0/24"),
             rule("AllowAtt", 300, "Allow", "AzureAttestation")]
    ev = nsg(rules)
    assert not ev.allowed and ev.rule.name == "DenyFromSubnet"
    assert ev.allowed is False and "unknown" in ev.units[0].notes[0]
    assert nsg(rules, vm_ip="10.2.0.4").allowed  # another subnet: the deny does not apply
    assert not nsg(rules, vm_ip="10.1.0.4").allowed


def test_nsg_az_cli_shape(tmp_path: Path) -> None:
    # `az network nsg show` flattens properties; default rules listed separately
    body = {"name": "n", "securityRules": [{"name": "DenyAtt", "priority": 100,
                                            "direction": "Outbound", "access": "Deny",
                                            "protocol": "Tcp", "sourceAddressPrefix": "*",
                                            "sourcePortRange": "*",
                                            "destinationAddressPrefixes": ["40.71.15.204/30"],
                                            "destinationPortRanges": ["443", "8443"]}],
            "defaultSecurityRules": []}
    parsed, notes = parse_nsg(json.dumps(body).encode(), "az.json")
    assert len(notes) == 3
    ev = evaluate_nsg(parsed, Context(AZ, parse_target("40.71.15.205:8443")), "az.json")
    assert not ev.allowed and ev.rule.name == "DenyAtt" and ev.rule.where == "securityRules[0]"


@pytest.mark.parametrize(("body", "where"), [
    ([rule("a", 100, "Allow", "*"), rule("b", 100, "Deny", "*")],
     r"\$\[1\]: priority 100 is used"),
    ([rule("a", 99, "Allow", "*")], r"\$\[0\].properties.priority"),
    ([rule("a", 100, "Maybe", "*")], r"\$\[0\].properties.access"),
    ([rule("a", 100, "Allow", "*", port="4x3")], r"destinationPortRange: '4x3'"),
    ([rule("a", 100, "Allow", "10.0.0.0/33")], r"'10.0.0.0/33' is not an IPv4"),
    ({"foo": 1}, "not an NSG"),
])
def test_nsg_bad_input(body: Any, where: str) -> None:
    with pytest.raises(NetworkInputError, match=where):
        nsg(body)


def test_firewall() -> None:
    fw = {"properties": {
        "networkRuleCollections": [
            {"name": "deny-att", "properties": {"priority": 300, "action": {"type": "Deny"},
             "rules": [{"name": "d", "protocols": ["TCP"], "sourceAddresses": ["*"],
                        "destinationAddresses": ["AzureAttestation"],
                        "destinationPorts": ["443"]}]}},
            {"name": "allow-att", "properties": {"priority": 200, "action": {"type": "Allow"},
             "rules": [{"name": "a", "protocols": ["Any"], "sourceAddresses": ["*"],
                        "destinationAddresses": ["40.71.15.204/30"],
                        "destinationPorts": ["400-500"]}]}}],
        "applicationRuleCollections": [
            {"name": "app", "properties": {"priority": 100, "action": {"type": "Allow"},
             "rules": [{"name": "maa", "sourceAddresses": ["*"],
                        "protocols": [{"protocolType": "Https", "port": 443}],
                        "targetFqdns": ["*.attest.azure.net"]}]}}]}}
    rules = parse_firewall(json.dumps(fw).encode(), "fw.json")

    def ev(to: str) -> Any:
        return evaluate_firewall(rules, Context(AZ, parse_target(to)), "fw.json")

    r = ev("40.71.15.205")
    assert r.allowed and r.rule.label == "allow-att/a"
    r = ev("20.62.129.149")
    assert not r.allowed and r.rule.label == "deny-att/d" and r.rule.priority == 300
    r = ev("192.0.2.1")
    assert not r.allowed and r.rule.name == "DefaultDeny"
    with pytest.raises(NetworkInputError, match=r"Collections\[0\]\.properties\.priority"):
        bad = json.loads(json.dumps(fw))
        bad["properties"]["networkRuleCollections"][0]["properties"]["priority"] = 50
        parse_firewall(json.dumps(bad).encode(), "fw.json")


def test_remediation_per_hop() -> None:
    rem = remediation_for(AZ, FailedHop.TCP_CONNECT,
                          (RuleFormat.NSG_JSON, RuleFormat.NFTABLES, RuleFormat.SQUID),
                          failed_target="sharedeus.eus.attest.azure.net:443")
    assert rem is not None and rem.title == RECOMMENDATION_TITLE == (
        "Allow outbound attestation traffic")
    assert [r.format for r in rem.rules] == [RuleFormat.NSG_JSON, RuleFormat.NFTABLES,
                                            RuleFormat.SQUID]
    assert '"destinationAddressPrefix": "AzureAttestation"' in rem.text
    assert "insert rule inet filter output ip daddr { 20.62.129.148/30, 40.71.15.204/30 }" in (
        rem.text)
    assert "tcp_connect to sharedeus.eus.attest.azure.net:443" in rem.text
    proxy = remediation_for(AZ, FailedHop.HTTP_STATUS, (RuleFormat.NFTABLES, RuleFormat.SQUID))
    assert proxy is not None and proxy.rules[0].format is RuleFormat.SQUID  # proxy first
    assert "dstdomain .attest.azure.net" in proxy.text
    assert remediation_for(AZ, FailedHop.LOCAL) is None
    # a format the document cannot serve is listed with the reason, not dropped
    own = decode_document(json.dumps({"values": [{"name": "Bw", "properties": {
        "addressPrefixes": ["10.0.0.1/32"]}}]}).encode(), "own")
    rem = remediation_for(own, FailedHop.TLS, (RuleFormat.AZURE_FIREWALL_APPLICATION,))
    assert rem is not None and "names no host names" in rem.rules[0].error


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "network", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_exit_codes_and_json(tmp_path: Path, azure_file: Path) -> None:
    rules = tmp_path / "nsg.json"
    rules.write_text(json.dumps([rule("DenyAtt", 200, "Deny", "AzureAttestation")]))
    out = _cli("explain", "--rules", str(rules), "--format", "nsg-json", "--to",
               f"https://{ATT}", "--from", str(azure_file), "--json")
    assert out.returncode == 1, out.stderr
    body = json.loads(out.stdout)
    assert body["allowed"] is False and body["rule"] == {"name": "DenyAtt", "priority": 200}
    assert body["fix"][0]["properties"]["priority"] == 199
    assert body["fix"][0]["properties"]["destinationAddressPrefix"] == "AzureAttestation"
    # the fix applied: allowed, exit 0
    rules.write_text(json.dumps([rule("DenyAtt", 200, "Deny", "AzureAttestation"),
                                 *body["fix"]]))
    out = _cli("explain", "--rules", str(rules), "--to", f"{ATT}:443", "--from",
               str(azure_file))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ALLOWED: TCP to 20.62.129.149:443 is decided by "
                                 "AllowAzureAttestationOutbound, priority 199")
    # without --from the tags are unknown: the Deny to AzureAttestation may hold
    # 192.0.2.9, so it fails closed (exit 1, was 0: an unknown tag matched nothing);
    # the document settles it (192.0.2.9 is outside the tag)
    assert _cli("explain", "--rules", str(rules), "--to", "192.0.2.9").returncode == 1
    assert _cli("explain", "--rules", str(rules), "--to", "192.0.2.9", "--from",
                str(azure_file)).returncode == 0
    # human output of a denial names the rule and prints the fix as a generated rule
    rules.write_text(json.dumps([rule("DenyWeb", 1000, "Deny", "*", port="443")]))
    out = _cli("explain", "--rules", str(rules), "--to", "https://192.0.2.9")
    assert out.returncode == 1
    assert out.stdout.startswith("DENIED: TCP to 192.0.2.9:443 is decided by DenyWeb, "
                                 "priority 1000, $[0]\n")
    assert "fix (nsg-json): add this rule" in out.stdout
    fix = json.loads(out.stdout[out.stdout.index("\n[") :])
    assert fix[0]["properties"]["priority"] == 999
    assert fix[0]["properties"]["destinationAddressPrefix"] == "192.0.2.9/32"


def test_cli_bad_input_is_one_line(tmp_path: Path, azure_file: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"name": "x",\n   "properties": }\n]')
    good = tmp_path / "ok.json"
    good.write_text("[]")
    cases = [
        (("explain", "--rules", str(broken), "--to", ATT), f"{broken}:3: column 18: not JSON"),
        (("explain", "--rules", str(good), "--format", "pf", "--to", ATT),
         "--format: unknown format 'pf'"),
        (("rules", "--format", "ufw", "--from", str(azure_file)), "--format: unknown format"),
        (("rules", "--format", "nftables", "--from", str(azure_file), "--source", "10.0.0.0/40"),
         "--source: '10.0.0.0/40' is not an IPv4 or IPv6 CIDR"),
        (("explain", "--rules", str(good), "--to", "https://:443/x"),
         "--to: 'https://:443/x' has no host"),
        (("explain", "--rules", str(good), "--to", "att.example.com"),
         "--to: 'att.example.com' is a host name"),
        (("fqdns", "--from", str(tmp_path / "missing.json")), "missing.json: cannot read"),
        (("explain", "--rules", str(tmp_path / "none.json"), "--to", ATT),
         "none.json: cannot read"),
    ]
    for args, expected in cases:
        out = _cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert expected in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_cli_firewall_and_remediation(tmp_path: Path, azure_file: Path) -> None:
    fw = tmp_path / "fw.json"
    fw.write_text(json.dumps({"networkRuleCollections": [
        {"name": "deny-web", "priority": 500, "action": {"type": "Deny"},
         "rules": [{"name": "d", "protocols": ["TCP"], "sourceAddresses": ["*"],
                    "destinationAddresses": ["*"], "destinationPorts": ["443"]}]}]}))
    out = _cli("explain", "--rules", str(fw), "--format", "azure-firewall", "--to", ATT,
               "--from", str(azure_file), "--json")
    assert out.returncode == 1, out.stderr
    body = json.loads(out.stdout)
    assert body["rule"] == {"name": "deny-web/d", "priority": 500}
    coll = body["fix"]["networkRuleCollections"][0]
    assert coll["properties"]["priority"] == 499
    assert coll["properties"]["rules"][0]["destinationAddresses"] == ["AzureAttestation"]
    # the fix merged in: allowed by it
    merged = json.loads(fw.read_text())
    merged["networkRuleCollections"].append(coll)
    fw.write_text(json.dumps(merged))
    out = _cli("explain", "--rules", str(fw), "--format", "azure-firewall", "--to", ATT,
               "--from", str(azure_file), "--json")
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)["rule"]["priority"] == 499

    out = _cli("remediation", "--hop", "proxy_connect", "--from", str(azure_file),
               "--format", "nftables", "--format", "squid")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Allow outbound attestation traffic\n")
    assert out.stdout.index("[squid]") < out.stdout.index("[nftables]")
    out = _cli("remediation", "--hop", "nowhere", "--from", str(azure_file))
    assert out.returncode == 2 and "--hop: 'nowhere' is not one of" in out.stderr
