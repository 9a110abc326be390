"""Every generated format is valid for its tool: nftables (nft -c -f), iptables
(iptables-restore --test), squid (squid -k parse), all run for real, in a scratch
namespace where they touch rules; a broken variant of each is refused, so these
checks can fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bootwatch.net.netns import NamespaceSet
from bootwatch.net.rules import RuleFormat, RuleOptions, generate_rules
from bootwatch.net.servicetag import decode_document, parse_prefix

from .conftest import require_netns, squid_conf


def _doc(path: Path):  # type: ignore[no-untyped-def]
    return decode_document(path.read_bytes(), str(path))


@pytest.mark.parametrize("source", [None, "10.1.0.0/16", "2001:db8:1::/48"])
def test_nftables_loads_and_inserts_first(netns: NamespaceSet, doc_file: Path, tmp_path: Path,
                                          source: str | None) -> None:
    opts = RuleOptions(source=parse_prefix(source, field="s") if source else None)
    text = generate_rules(_doc(doc_file), RuleFormat.NFTABLES, opts)
    rules = tmp_path / "allow.nft"
    rules.write_text(text)
    ns = netns.add("nft")
    # the operator's existing output chain with a DROP policy
    ns.run("nft", "-f", "-", input_text="table inet filter {\n chain output {\n"
           "  type filter hook output priority 0; policy drop;\n  oif \"lo\" accept\n }\n}\n")
    ns.run("nft", "-c", "-f", str(rules))
    ns.run("nft", "-f", str(rules))
    listing = ns.run("nft", "list", "chain", "inet", "filter", "output").stdout
    assert "policy drop" in listing  # re-declaring the chain kept the operator's policy
    body = [ln.strip() for ln in listing.splitlines() if "daddr" in ln or "oif" in ln]
    assert "bootwatch: AllowBootwatchOutbound" in body[0]  # inserted ahead of the rest
    if source is None:
        assert any("10.20.0.2" in ln for ln in body) and any("2001:db8:20::" in ln for ln in body)
    else:
        assert all(source in ln for ln in body if "bootwatch" in ln)
    broken = tmp_path / "broken.nft"
    broken.write_text(text.replace("tcp dport", "tcp dprt"))
    assert ns.run("nft", "-c", "-f", str(broken), check=False).returncode != 0


@pytest.mark.parametrize("fmt", [RuleFormat.IPTABLES, RuleFormat.IP6TABLES])
def test_iptables_restore_accepts(netns: NamespaceSet, doc_file: Path, tmp_path: Path,
                                  fmt: RuleFormat) -> None:
    text = generate_rules(_doc(doc_file), fmt, RuleOptions(ports=(443, 8443)))
    tool = "iptables-restore" if fmt is RuleFormat.IPTABLES else "ip6tables-restore"
    path = tmp_path / "rules.txt"
    path.write_text(text)
    ns = netns.add("ipt")
    ns.run(tool, "--test", "--noflush", str(path))
    ns.run(tool, "--noflush", str(path))
    listing = ns.run(tool.replace("-restore", ""), "-S", "OUTPUT").stdout
    assert "bootwatch: AllowBootwatchOutbound" in listing
    path.write_text(text.replace("--dports 443,8443", "--dports 443,99999"))
    assert ns.run(tool, "--test", "--noflush", str(path), check=False).returncode != 0


@pytest.mark.parametrize("source", [None, "10.1.0.0/16"])
def test_squid_parses(doc_file: Path, tmp_path: Path, source: str | None) -> None:
    require_netns()
    opts = RuleOptions(source=parse_prefix(source, field="s") if source else None)
    snippet = generate_rules(_doc(doc_file), RuleFormat.SQUID, opts)
    assert "dstdomain att.example.com .attest.example.org" in snippet
    conf = squid_conf(tmp_path, snippet)
    ok = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "FATAL" not in ok.stderr and "ERROR" not in ok.stderr
    conf = squid_conf(tmp_path, snippet.replace(" port ", " portt "))
    bad = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0


def test_azure_formats(doc_file: Path, azure_file: Path) -> None:
    own = _doc(doc_file)
    (v4, v6) = json.loads(generate_rules(own, RuleFormat.NSG_JSON, RuleOptions(priority=310)))
    assert v4["properties"] | {"description": ""} == {
        "description": "", "priority": 310, "direction": "Outbound", "access": "Allow",
        "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*",
        "destinationAddressPrefix": "10.20.0.2/32", "destinationPortRange": "8443"}
    assert v6["name"] == "AllowBootwatchOutbound-v6" and v6["properties"]["priority"] == 311
    # Azure's own file: the tag itself is the destination (one rule), port 443
    azure = decode_document(azure_file.read_bytes(), "azure")
    (rule,) = json.loads(generate_rules(azure, RuleFormat.NSG_JSON))
    assert rule["name"] == "AllowAzureAttestationOutbound"
    assert rule["properties"]["destinationAddressPrefix"] == "AzureAttestation"
    assert rule["properties"]["destinationPortRange"] == "443"
    net = json.loads(generate_rules(azure, RuleFormat.AZURE_FIREWALL_NETWORK))
    coll = net["networkRuleCollections"][0]
    assert coll["properties"]["action"] == {"type": "Allow"}
    assert coll["properties"]["rules"][0]["destinationAddresses"] == ["AzureAttestation"]
    assert coll["properties"]["rules"][0]["protocols"] == ["TCP"]
    app = json.loads(generate_rules(azure, RuleFormat.AZURE_FIREWALL_APPLICATION))
    arule = app["applicationRuleCollections"][0]["properties"]["rules"][0]
    assert arule["targetFqdns"] == ["*.attest.azure.net"]
    assert arule["protocols"] == [{"protocolType": "Https", "port": 443}]
    prefixes = json.loads(generate_rules(azure, RuleFormat.NSG_JSON,
                                         RuleOptions(use_tag=False)))
    assert prefixes[0]["properties"]["destinationAddressPrefixes"] == ["20.62.129.148/30",
                                                                       "40.71.15.204/30"]
