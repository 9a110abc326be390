"""``network explain --format nftables``: which chains the probe sees and where its
packets come from, with real nft in scratch namespaces (second network review).

- F7: the tracing chain ran at priority -1000000, so a drop in an operator chain
  hooked earlier was never traced (exit 2, "not traced") instead of DENIED;
- F2: ``--vm-ip`` is the probe's source for its own family only, and may be given
  once per family (a dual-stack host name with one ``--vm-ip`` was refused);
- F4: the printed fix always went into ``inet filter output``: an accept there does
  not override a drop in another base chain, and redeclaring an existing
  ``inet filter output`` with another priority does not load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bootwatch.net.netns import NamespaceSet

from .conftest import require_netns, write_doc

HOST = "att.example.com"


def _explain(rules: Path, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "network", "explain", "--rules",
         str(rules), "--format", "nftables", "--to", to, "--json", *extra],
        capture_output=True, text=True, timeout=120)


def _chain(path: Path, priority: str, *rules: str) -> Path:
    body = "".join(f"    {r}\n" for r in rules)
    path.write_text("table inet ops {\n  chain out {\n"
                    f"    type filter hook output priority {priority}; policy accept;\n"
                    f"{body}  }}\n}}\n")
    return path


def test_drop_in_a_chain_hooked_before_the_old_trace_priority_is_found(tmp_path: Path) -> None:
    require_netns()
    rules = _chain(tmp_path / "early.nft", "-2000000",
                   'tcp dport 443 drop comment "early-drop"')
    out = _explain(rules, "192.0.2.10:443")
    assert out.returncode == 1, (out.stdout, out.stderr)
    body = json.loads(out.stdout)
    assert (body["rule"]["name"], body["where"]) == ("early-drop", "inet ops out")


def test_vm_ip_is_the_source_of_its_own_family_only(tmp_path: Path) -> None:
    require_netns()
    doc = write_doc(tmp_path / "doc.json", ["192.0.2.8/32", "2001:db8:10::8/128"],
                    fqdns=[HOST], ports=[443])
    rules = _chain(tmp_path / "src.nft", "0",
                   'ip saddr 10.0.0.4 tcp dport 443 drop comment "DropVm4"',
                   'ip6 saddr 2001:db8:99::4 tcp dport 443 accept comment "AllowVm6"')
    # one IPv4 --vm-ip and a dual-stack name: was refused ("different families")
    one = _explain(rules, f"https://{HOST}", "--from", str(doc), "--vm-ip", "10.0.0.4")
    assert one.returncode == 1, (one.stdout, one.stderr)
    body = json.loads(one.stdout)
    assert [(d["prefix"], d["allowed"], d["rule"]["name"]) for d in body["destinations"]] == [
        ("192.0.2.8/32", False, "DropVm4"), ("2001:db8:10::8/128", True, "policy accept")]
    assert any("no IPv6 --vm-ip" in w for w in body["warnings"]), body["warnings"]
    # once per family: the IPv6 probe leaves from the VM's IPv6 address
    both = _explain(rules, f"https://{HOST}", "--from", str(doc), "--vm-ip", "10.0.0.4",
                    "--vm-ip", "2001:db8:99::4")
    body = json.loads(both.stdout)
    assert [d["rule"]["name"] for d in body["destinations"]] == ["DropVm4", "AllowVm6"]
    assert body["warnings"] == []


DROP_ELSEWHERE = """table ip fw {
\tchain out {
\t\ttype filter hook output priority 0; policy drop;
\t\toif "lo" accept
\t}
}
table inet filter {
\tchain output {
\t\ttype filter hook output priority 10; policy drop;
\t}
}
table ip6 six {
\tchain out {
\t\ttype filter hook output priority 5; policy drop;
\t}
}
"""


def test_fix_goes_into_every_chain_that_drops(netns: NamespaceSet, tmp_path: Path) -> None:
    rules = tmp_path / "drop.nft"
    rules.write_text(DROP_ELSEWHERE)
    first = _explain(rules, "192.0.2.10:443")
    assert first.returncode == 1, first.stderr
    body = json.loads(first.stdout)
    assert body["where"] == "ip fw out"
    fix = body["fix"]
    inserts = [ln.split(" ip daddr")[0] for ln in fix.splitlines() if ln.startswith("insert")]
    # the chain that dropped and the other IPv4-seeing policy-drop chain; the ip6
    # table never sees this traffic; no chain is (re)declared
    assert inserts == ["insert rule ip fw out", "insert rule inet filter output"]
    assert "chain output {" not in fix and "type filter" not in fix
    assert "ip fw out, inet filter output): every one" in body["fix_note"]
    # the fix loads on top of the existing chains (inet filter output has priority 10) ...
    ns = netns.add("fix")
    ns.run("nft", "-f", str(rules))
    fix_file = tmp_path / "fix.nft"
    fix_file.write_text(fix)
    loaded = ns.run("nft", "-f", str(fix_file), check=False)
    assert loaded.returncode == 0, loaded.stderr
    # ... and once loaded the traffic passes
    fixed = tmp_path / "fixed.nft"
    fixed.write_text(DROP_ELSEWHERE + fix)
    again = _explain(fixed, "192.0.2.10:443")
    assert again.returncode == 0, again.stdout


def _rules(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "network", "rules",
                           *args], capture_output=True, text=True, timeout=120)


def test_rules_into_the_operators_chains_load_and_let_the_traffic_pass(
        netns: NamespaceSet, tmp_path: Path) -> None:
    """``rules --format nftables`` declares inet filter output (priority filter): on top
    of a ruleset whose inet filter output has another priority it does not load, and it
    cannot override a drop in another table.  ``--into`` puts the rules first in the
    operator's own chains, declaring none."""
    doc = write_doc(tmp_path / "doc.json", ["192.0.2.10/32"], ports=[443])
    rules = tmp_path / "drop.nft"
    rules.write_text(DROP_ELSEWHERE)
    ns = netns.add("into")
    ns.run("nft", "-f", str(rules))
    plain = _rules("--format", "nftables", "--from", str(doc))
    assert plain.returncode == 0, plain.stderr
    plain_file = tmp_path / "plain.nft"
    plain_file.write_text(plain.stdout)
    assert ns.run("nft", "-f", str(plain_file), check=False).returncode != 0
    into = _rules("--format", "nftables", "--from", str(doc), "--into", "ip:fw:out",
                  "--into", "inet:filter:output")
    assert into.returncode == 0, into.stderr
    assert "type filter" not in into.stdout
    into_file = tmp_path / "into.nft"
    into_file.write_text(into.stdout)
    loaded = ns.run("nft", "-f", str(into_file), check=False)
    assert loaded.returncode == 0, loaded.stderr
    both = tmp_path / "both.nft"
    both.write_text(DROP_ELSEWHERE + into.stdout)
    assert _explain(both, "192.0.2.10:443").returncode == 0


def test_rules_into_is_checked(tmp_path: Path) -> None:
    doc = write_doc(tmp_path / "doc.json", ["192.0.2.10/32"], ports=[443])
    for args, what in ((["--format", "squid", "--into", "inet:filter:output"], "nftables only"),
                       (["--format", "nftables", "--into", "inet:filter"], "FAMILY:TABLE:CHAIN"),
                       (["--format", "nftables", "--into", "arp:t:c"], "no output hook"),
                       (["--format", "nftables", "--into", "inet:t;x:c"], "unquoted")):
        out = _rules(*args, "--from", str(doc))
        assert out.returncode == 2 and what in out.stderr, (args, out.stderr)
