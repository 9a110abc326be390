"""``network explain --format nftables`` for a host name: every part of every prefix
of the chosen tag is probed, with real nft in scratch namespaces.

A probe tests one address; a host name stands for the tag's prefixes.  A rule that
covers part of a prefix (a ``drop`` of one address of a /30) must decide that
part, and ``--tag`` must choose which tag's prefixes the host name stands for.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import require_netns, write_doc

HOST = "att.example.com"


def _explain(rules: Path, doc: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "network", "explain", "--rules",
         str(rules), "--format", "nftables", "--to", f"https://{HOST}", "--from", str(doc),
         "--json", *extra],
        capture_output=True, text=True, timeout=120)


def _rules(path: Path, *lines: str) -> Path:
    body = "\n".join(f"    {ln}" for ln in lines)
    path.write_text("table inet filter {\n  chain output {\n"
                    "    type filter hook output priority 0; policy accept;\n"
                    f"{body}\n  }}\n}}\n")
    return path


def test_drop_of_one_address_inside_a_tag_prefix_is_found(tmp_path: Path) -> None:
    require_netns()
    doc = write_doc(tmp_path / "doc.json", ["20.62.129.148/30"], fqdns=[HOST], ports=[443])
    rules = _rules(tmp_path / "one.nft",
                   'ip daddr 20.62.129.150 tcp dport 443 drop comment "DropOne"')
    out = _explain(rules, doc)
    assert out.returncode == 1, (out.stdout, out.stderr)
    verdict: dict[str, Any] = json.loads(out.stdout)
    assert verdict["allowed"] is False
    assert verdict["rule"]["name"] == "DropOne"
    # the /30 cut at .150: three pieces, each probed, only .150 dropped
    per = {d["prefix"]: d["allowed"] for d in verdict["destinations"]}
    assert per == {"20.62.129.148/31": True, "20.62.129.150/32": False,
                   "20.62.129.151/32": True}


def test_ruleset_prefixes_reads_rules_and_named_sets(tmp_path: Path) -> None:
    from bootwatch.net.nftprobe import ruleset_prefixes

    require_netns()
    rules = tmp_path / "sets.nft"
    rules.write_text(
        "table inet t {\n"
        "  set deny { type ipv4_addr; flags interval;\n"
        "    elements = { 192.0.2.16/29, 198.51.100.1-198.51.100.2 } }\n"
        "  chain output {\n    type filter hook output priority 0; policy accept;\n"
        "    ip daddr @deny drop\n    ip daddr 203.0.113.7 drop\n"
        "    ip6 daddr 2001:db8:5::/64 drop\n  }\n}\n")
    found = set(ruleset_prefixes(rules))
    n = ipaddress.ip_network
    assert {n("192.0.2.16/29"), n("198.51.100.1/32"), n("198.51.100.2/32"),
            n("203.0.113.7/32"), n("2001:db8:5::/64")} <= found


def test_tag_option_chooses_the_host_names_tag(tmp_path: Path) -> None:
    require_netns()
    doc = tmp_path / "two.json"
    values = [
        {"name": name, "id": name, "properties": {
            "changeNumber": 4, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": name, "addressPrefixes": [prefix],
            "networkFeatures": ["API", "NSG", "UDR", "FW"]}}
        for name, prefix in (("AzureAttestation", "20.62.129.148/30"),
                             ("Bootwatch", "192.0.2.8/30"))
    ]
    doc.write_text(json.dumps({"changeNumber": 4, "cloud": "Public", "values": values,
                               "bootwatch": {"fqdns": [HOST], "ports": [443]}}))
    rules = _rules(tmp_path / "drop.nft", 'ip daddr 192.0.2.8/30 drop comment "DropBootwatch"')
    out = _explain(rules, doc, "--tag", "Bootwatch")
    assert out.returncode == 1, (out.stdout, out.stderr)
    verdict = json.loads(out.stdout)
    assert verdict["rule"]["name"] == "DropBootwatch"
    assert [d["prefix"] for d in verdict["destinations"]] == ["192.0.2.8/30"]


def test_many_probes_share_one_namespace_and_keep_their_order(tmp_path: Path) -> None:
    from bootwatch.net.nftprobe import probe_nftables_many

    require_netns()
    rules = _rules(tmp_path / "mixed.nft",
                   'ip daddr 192.0.2.7 tcp dport 443 drop comment "DropV4"',
                   'ip6 daddr 2001:db8:7::9 tcp dport 443 drop comment "DropV6"',
                   'ip daddr 192.0.2.8 tcp dport 443 accept comment "AllowV4"')
    a = ipaddress.ip_address
    wanted = [a("192.0.2.6"), a("192.0.2.7"), a("2001:db8:7::9"), a("192.0.2.8"),
              a("2001:db8:7::8"), a("192.0.2.7")]
    got = probe_nftables_many(rules, wanted, 443)
    assert [v.allowed for v in got] == [True, False, False, True, True, False]
    assert [v.name for v in got[1:4]] + [got[5].name] == ["DropV4", "DropV6", "AllowV4",
                                                           "DropV4"]
    # the allowed ones without a rule of their own were decided by the chain's policy
    assert got[0].rule == got[4].rule == "policy accept"


def test_more_pieces_than_the_probe_cap_is_refused_at_once(tmp_path: Path) -> None:
    from bootwatch.net.nftprobe import MAX_PROBES

    require_netns()
    doc = write_doc(tmp_path / "doc.json", ["20.62.128.0/22"], fqdns=[HOST], ports=[443])
    hosts = list(ipaddress.ip_network("20.62.128.0/22").hosts())[1:MAX_PROBES + 40:2]
    elements = ", ".join(str(h) for h in hosts)
    rules = tmp_path / "many.nft"
    rules.write_text("table inet filter {\n"
                     f"  set deny {{ type ipv4_addr; elements = {{ {elements} }} }}\n"
                     "  chain output {\n    type filter hook output priority 0; "
                     "policy accept;\n    ip daddr @deny drop\n  }\n}\n")
    out = _explain(rules, doc)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert f"more than {MAX_PROBES}" in out.stderr and "--to" in out.stderr
    assert "Traceback" not in out.stderr
