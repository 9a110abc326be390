"""Findings of the second network review, each a wrong verdict, a config line an
attacker could add, or an evaluation without bound:

- F1: a name ending in (or holding) a line break passed the name checks (``$``
  matches before a final newline) and reached squid, ``fqdns`` and firewall files;
- F2: one ``--vm-ip`` was the source of both address families, so an IPv4 source
  rule decided IPv6 traffic;
- F3: rule parts the evaluators cannot check (NSG application security groups,
  Azure Firewall IP groups) failed open;
- F5: a host name's prefixes were cut without bound (minutes on big rule sets);
- F6: squid read a /0 ``dst`` as ``all`` (IPv4 and IPv6).

The nftables findings (F2's probe source, F7) are in ``test_explain_nftables_chains``.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootwatch.errors import NetworkInputError
from bootwatch.net.firewall import FirewallEvaluation, evaluate_firewall, parse_firewall
from bootwatch.net.matching import MAX_PIECES, Context, cut_units
from bootwatch.net.nsg import NsgEvaluation, evaluate_nsg, parse_nsg
from bootwatch.net.rules import RuleFormat, RuleOptions, generate_rules
from bootwatch.net.servicetag import (
    ServiceTagDocument,
    build_document,
    decode_document,
    parse_fqdn,
)
from bootwatch.net.target import parse_target

from .conftest import require_netns, squid_conf, write_doc

HOST = "att.example.com"
ASG = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/applicationSecurityGroups/web"
IPG = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/ipGroups/g"


def _doc(prefixes: list[str], fqdns: list[str] | None = None) -> ServiceTagDocument:
    body = {"changeNumber": 1, "cloud": "Public",
            "values": [{"name": "Bootwatch", "id": "Bootwatch",
                        "properties": {"changeNumber": 1, "addressPrefixes": prefixes}}],
            "bootwatch": {"fqdns": fqdns or [HOST], "ports": [443]}}
    return decode_document(json.dumps(body).encode(), "doc")


DUAL = _doc(["192.0.2.8/30", "2001:db8:10::/64"])


def _ctx(doc: ServiceTagDocument | None, to: str, *vm_ips: str) -> Context:
    addresses = [ipaddress.ip_address(a) for a in vm_ips]
    if len(addresses) < 2:  # one address: the way callers gave it before
        return Context(doc, parse_target(to), addresses[0] if addresses else None)
    return Context(doc, parse_target(to), None, more_vm_ips=tuple(addresses))


def _rule(name: str, priority: int, access: str, **props: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "priority": priority, "direction": "Outbound", "access": access, "protocol": "Tcp",
        "sourceAddressPrefix": "*", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "443"}
    for key, value in props.items():
        if value is None:
            base.pop(key)
        else:
            base[key] = value
    return {"name": name, "properties": base}


def _nsg(rules: list[dict[str, Any]], ctx: Context) -> NsgEvaluation:
    parsed, _ = parse_nsg(json.dumps(rules).encode(), "nsg.json")
    return evaluate_nsg(parsed, ctx, "nsg.json")


def _fw(collections: list[tuple[str, int, str, dict[str, Any]]],
        ctx: Context) -> FirewallEvaluation:
    body = {"networkRuleCollections": [
        {"name": name, "properties": {"priority": prio, "action": {"type": action},
                                      "rules": [rule]}}
        for name, prio, action, rule in collections]}
    return evaluate_firewall(parse_firewall(json.dumps(body).encode(), "fw.json"), ctx,
                             "fw.json")


def _net_rule(name: str, **props: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "protocols": ["TCP"], "sourceAddresses": ["*"],
                            "destinationAddresses": ["*"], "destinationPorts": ["443"]}
    for key, value in props.items():
        if value is None:
            rule.pop(key)
        else:
            rule[key] = value
    return rule


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "network", *args],
                          capture_output=True, text=True, timeout=60)


# --- F1: names are printable ASCII, matched whole ---------------------------------


@pytest.mark.parametrize("text", ["a\n.com", "att.example.com\n", "att.example.com\r",
                                  "att.exa\x00mple.com", "\u2028att.example.com"])
def test_host_name_with_a_control_character_is_refused(text: str) -> None:
    # `$` matched before a final "\n" of each label: "a\n.com" became two lines,
    # the second ".com" (every .com name in a dstdomain file)
    with pytest.raises(NetworkInputError, match=r"^bootwatch.fqdns\[0\]: .*not printable ASCII"):
        parse_fqdn(text, field="bootwatch.fqdns[0]")


def test_document_with_a_line_break_in_a_host_name_is_refused() -> None:
    with pytest.raises(NetworkInputError,
                       match=r"^doc: bootwatch.fqdns\[1\]: 'a\\n.com' is not a host name: "
                       r"character 2 \(U\+000A\)"):
        _doc(["192.0.2.10/32"], [HOST, "a\n.com"])


def test_tag_and_rule_names_ending_in_a_line_break_are_refused() -> None:
    net = ipaddress.ip_network("192.0.2.10/32")
    with pytest.raises(NetworkInputError, match=r"^tag name: .*U\+000A"):
        build_document("Bootwatch\n", (net,), 1)
    with pytest.raises(NetworkInputError, match=r"^--name: .*U\+000A"):
        generate_rules(_doc(["192.0.2.10/32"]), RuleFormat.NFTABLES,
                       RuleOptions(name="AllowAtt\n"))


def test_fqdns_command_refuses_a_host_name_with_a_line_break(tmp_path: Path) -> None:
    doc = write_doc(tmp_path / "doc.json", ["192.0.2.10/32"], fqdns=[HOST, "a\n.com"])
    out = _cli("fqdns", "--from", str(doc))
    assert out.returncode == 2, out.stdout
    assert out.stdout == "" and "bootwatch.fqdns[1]" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# --- F2: the VM's address is per family --------------------------------------------


VM4_ALLOW_THEN_DENY = [
    _rule("AllowFromVm", 100, "Allow", sourceAddressPrefix="10.0.0.4"),
    _rule("AllowFromVm6", 110, "Allow", sourceAddressPrefix="2001:db8:99::/64"),
    _rule("DenyAll", 200, "Deny", destinationPortRange="*", protocol="*"),
]


def test_ipv4_vm_ip_does_not_decide_ipv6_traffic_in_an_nsg() -> None:
    # Azure: IPv6 packets leave from the VM's IPv6 address, never 10.0.0.4, so
    # AllowFromVm cannot allow them; without the IPv6 address, fail closed
    ev = _nsg(VM4_ALLOW_THEN_DENY, _ctx(DUAL, f"https://{HOST}", "10.0.0.4"))
    verdicts = {str(u.destination): (u.allowed, u.rule.name) for u in ev.units}
    assert verdicts == {"192.0.2.8/30": (True, "AllowFromVm"),
                        "2001:db8:10::/64": (False, "DenyAll")}
    assert (ev.allowed, ev.rule.name) == (False, "DenyAll")
    assert any("not an IPv6 address" in w and "--vm-ip" in w for w in ev.warnings), ev.warnings
    # an IPv4 source prefix never covers IPv6 traffic: known, no need to fail closed
    deny4 = _rule("DenyOtherVm", 101, "Deny", sourceAddressPrefix="10.9.0.0/16")
    ev = _nsg([deny4, *VM4_ALLOW_THEN_DENY], _ctx(DUAL, f"https://{HOST}", "10.0.0.4"))
    assert [u.rule.name for u in ev.units] == ["AllowFromVm", "DenyAll"]


def test_one_vm_ip_per_family_decides_each_family() -> None:
    ev = _nsg(VM4_ALLOW_THEN_DENY, _ctx(DUAL, f"https://{HOST}", "10.0.0.4", "2001:db8:99::4"))
    assert [(u.allowed, u.rule.name) for u in ev.units] == [(True, "AllowFromVm"),
                                                            (True, "AllowFromVm6")]
    assert ev.warnings == ()


def test_ipv4_vm_ip_does_not_decide_ipv6_traffic_in_a_firewall() -> None:
    allow_vm = ("AllowVm", 200, "Allow", _net_rule("vm", sourceAddresses=["10.0.0.4"]))
    ev = _fw([allow_vm], _ctx(DUAL, f"https://{HOST}", "10.0.0.4"))
    verdicts = {str(u): r.action for u, r in ev.per_destination}
    assert verdicts == {"192.0.2.8/30": "Allow", "2001:db8:10::/64": "Deny"}
    # an IPv6 Deny limited to sources fails closed when the IPv6 address is unknown
    deny6 = ("Deny6", 100, "Deny", _net_rule("v6", sourceAddresses=["2001:db8:99::/64"]))
    ev = _fw([deny6, allow_vm], _ctx(DUAL, f"https://{HOST}", "10.0.0.4"))
    assert {str(u): r.label for u, r in ev.per_destination}["2001:db8:10::/64"] == "Deny6/v6"


def test_two_vm_ips_of_one_family_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NetworkInputError, match=r"^--vm-ip: .*both IPv4"):
        _ctx(DUAL, f"https://{HOST}", "10.0.0.4", "10.0.0.5")
    rules = tmp_path / "nsg.json"
    rules.write_text(json.dumps(VM4_ALLOW_THEN_DENY))
    doc = write_doc(tmp_path / "doc.json", ["192.0.2.8/30", "2001:db8:10::/64"], fqdns=[HOST])
    both = _cli("explain", "--rules", str(rules), "--to", f"https://{HOST}", "--from",
                str(doc), "--vm-ip", "10.0.0.4", "--vm-ip", "2001:db8:99::4", "--json")
    assert both.returncode == 0, (both.stdout, both.stderr)
    same = _cli("explain", "--rules", str(rules), "--to", f"https://{HOST}", "--from",
                str(doc), "--vm-ip", "10.0.0.4", "--vm-ip", "10.0.0.5")
    assert same.returncode == 2 and "--vm-ip" in same.stderr


# --- F3: what cannot be checked fails closed ------------------------------------------


def test_nsg_allow_limited_to_a_source_asg_does_not_allow() -> None:
    # read as source "*" before: every VM allowed and DenyAllElse never reached
    rules = [_rule("AllowWebTier", 100, "Allow", sourceAddressPrefix=None,
                   sourceApplicationSecurityGroups=[{"id": ASG}]),
             _rule("DenyAllElse", 200, "Deny", destinationPortRange="*")]
    ev = _nsg(rules, _ctx(None, "192.0.2.10:443", "10.0.0.4"))
    assert (ev.allowed, ev.rule.name) == (False, "DenyAllElse")
    assert any("'AllowWebTier'" in w and "source application security groups" in w
               for w in ev.warnings), ev.warnings


@pytest.mark.parametrize("props", [
    {"sourceAddressPrefix": None, "sourceApplicationSecurityGroups": [{"id": ASG}]},
    {"destinationAddressPrefix": None, "destinationApplicationSecurityGroups": [{"id": ASG}]},
])
def test_nsg_deny_with_an_asg_fails_closed(props: dict[str, Any]) -> None:
    # a destination ASG Deny was "not evaluated" and did not match: allowed
    ev = _nsg([_rule("DenyGroup", 100, "Deny", **props)], _ctx(None, "192.0.2.10:443",
                                                                 "10.0.0.4"))
    assert (ev.allowed, ev.rule.name) == (False, "DenyGroup")
    assert any("'DenyGroup'" in w and "assumed to match this Deny" in w for w in ev.warnings)


@pytest.mark.parametrize("props", [
    {"sourceAddresses": None, "sourceIpGroups": [IPG]},
    {"destinationAddresses": None, "destinationIpGroups": [IPG]},
])
def test_firewall_deny_with_an_ip_group_fails_closed(props: dict[str, Any]) -> None:
    allow_all = ("AllowAll", 200, "Allow", _net_rule("any"))
    ev = _fw([("Block", 100, "Deny", _net_rule("grp", **props)), allow_all],
             _ctx(None, "192.0.2.10:443", "10.0.0.4"))
    assert (ev.allowed, ev.rule.label) == (False, "Block/grp")
    assert any("Block/grp" in w and "IpGroups" in w for w in ev.warnings), ev.warnings


def test_firewall_allow_from_an_ip_group_does_not_allow() -> None:
    ev = _fw([("FromGroup", 100, "Allow", _net_rule("grp", sourceAddresses=None,
                                                     sourceIpGroups=[IPG]))],
             _ctx(None, "192.0.2.10:443", "10.0.0.4"))
    assert (ev.allowed, ev.rule.name) == (False, "DefaultDeny")
    assert any("FromGroup/grp" in w and "assumed not to match this Allow" in w
               for w in ev.warnings)


# --- F5: bounded cuts ----------------------------------------------------------------


def _reference_cut(units: tuple[Any, ...], bounds: list[Any]) -> tuple[Any, ...]:
    """The cut as first written (address_exclude for every bound and piece)."""
    out: list[Any] = []
    for unit in units:
        pieces = [unit]
        for bound in set(bounds):
            if bound.version != unit.version or bound.prefixlen <= unit.prefixlen:
                continue
            nxt: list[Any] = []
            for piece in pieces:
                if piece != bound and bound.subnet_of(piece):
                    nxt.extend(piece.address_exclude(bound))
                    nxt.append(bound)
                else:
                    nxt.append(piece)
            pieces = nxt
        out.extend(sorted(pieces))
    return tuple(out)


def test_cut_gives_the_same_pieces_as_before() -> None:
    n = ipaddress.ip_network
    units = (n("10.0.0.0/22"), n("10.0.8.0/24"), n("2001:db8::/120"))
    bounds = [n("10.0.1.7/32"), n("10.0.0.0/23"), n("10.0.2.64/26"), n("10.0.8.128/25"),
              n("10.0.0.0/8"), n("2001:db8::80/121"), n("2001:db8::3/128"), n("10.0.1.6/31")]
    assert cut_units(units, bounds) == _reference_cut(units, bounds)


def test_too_many_pieces_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 single addresses of a /22 cut it into ~1,900 pieces (before: evaluated one by
    one; a 200-address IPv6 Deny over a /32 took minutes).  Refused before any piece is
    evaluated: counted, not timed (a wall-clock bound fails on a loaded machine)."""
    import bootwatch.net.nsg as nsg

    decided = 0
    real = nsg._decide

    def counted(*args: Any, **kw: Any) -> Any:
        nonlocal decided
        decided += 1
        return real(*args, **kw)

    monkeypatch.setattr(nsg, "_decide", counted)
    doc = _doc(["10.0.0.0/22"])
    hosts = list(ipaddress.ip_network("10.0.0.0/22").hosts())[::3][:300]
    rules = [_rule("DenySome", 100, "Deny", destinationAddressPrefix=None,
                   destinationAddressPrefixes=[str(h) for h in hosts])]
    with pytest.raises(NetworkInputError,
                       match=rf"^--to: .*more than {MAX_PIECES} pieces.*--to ADDRESS:PORT"):
        _nsg(rules, _ctx(doc, f"https://{HOST}"))
    assert decided == 0


def test_many_rules_parse_each_entry_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """~1600 rules against MAX_PIECES pieces: each rule's address entries are parsed once,
    not once per piece and rule (which took minutes).  Counted, not timed: a wall-clock
    bound failed on a loaded machine."""
    import bootwatch.net.nsg as nsg

    calls = 0
    real = nsg.parse_address

    def counted(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kw)

    monkeypatch.setattr(nsg, "parse_address", counted)
    doc = _doc(["10.0.0.0/24"])
    cuts = [_rule(f"Cut{i}", 4000 - i, "Deny", destinationAddressPrefix=f"10.0.0.{i}")
            for i in range(0, MAX_PIECES, 2)]
    others = [_rule(f"Other{i}", 100 + i, "Allow", destinationAddressPrefix=f"11.0.{i // 250}."
                    f"{i % 250}") for i in range(1500)]
    ev = _nsg(cuts + others, _ctx(doc, f"https://{HOST}"))
    assert ev.allowed is False and len(ev.units) == MAX_PIECES
    assert calls == sum(len(r.destinations) + len(r.sources) for r in ev.rules)


# --- F6: squid dst stays within its family -------------------------------------------


def test_squid_default_routes_and_overlaps(tmp_path: Path) -> None:
    require_netns()
    doc = _doc(["0.0.0.0/0", "::/0", "10.0.0.0/8", "10.1.0.0/16"])
    snippet = generate_rules(doc, RuleFormat.SQUID)
    dst = next(ln for ln in snippet.splitlines() if " dst " in ln).split()[3:]
    assert dst[:2] == ["0.0.0.0/1", "128.0.0.0/1"] and "10.1.0.0/16" not in dst
    assert not any(ipaddress.ip_network(p).prefixlen == 0 for p in dst)
    # squid holds IPv4 as ::ffff:a.b.c.d: the IPv6 entries leave that range out
    mapped = ipaddress.ip_network("::ffff:0:0/96")
    assert not any(p.version == 6 and p.overlaps(mapped)  # type: ignore[arg-type]
                   for p in map(ipaddress.ip_network, dst))
    conf = squid_conf(tmp_path, snippet)
    parsed = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True,
                            text=True, timeout=60)
    assert parsed.returncode == 0, parsed.stderr
    assert "Using 'all'" not in parsed.stderr and "WARNING" not in parsed.stderr, parsed.stderr
