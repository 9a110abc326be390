"""Evaluate an nftables ruleset by loading it into a scratch namespace and probing.

nftables has no offline evaluator, and re-implementing its semantics would be a
second, wrong nftables.  So the kernel decides: a scratch namespace gets a veth
pair with a default route (no peer answers), the operator's file is loaded with
``nft -f``, a tracing chain at the lowest priority marks TCP packets to the target
(``meta nftrace set 1``), one connection attempt is made, and ``nft monitor
trace`` tells which rule of which chain gave the verdict.  The namespace is
deleted afterwards, whatever happened.  The probe's source address is the VM's
address of the probe's family (``--vm-ip``, once per family) or 198.18.0.1 /
2001:db8::1 (benchmarking and documentation ranges).

One probe answers for one address only.  A host name stands for whole prefixes,
and a rule may cover part of one (a ``drop`` of one address of a /30), so
:func:`ruleset_prefixes` lists every address, prefix and range the loaded ruleset
names (read back from the kernel with ``nft -j list ruleset``, so named sets and
``include`` files count too); the caller cuts the prefixes there and probes one
address of each piece.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bootwatch.errors import ConfigError, NetworkInputError
from bootwatch.net.netns import NamespaceSet, Netns, require_tools
from bootwatch.net.servicetag import IPNetwork
from bootwatch.net.target import IPAddress

__all__ = ["MAX_PROBES", "TRACE_PRIORITY", "NftVerdict", "output_drop_chains",
           "probe_nftables", "probe_nftables_many", "probe_source", "ruleset_prefixes"]

_TRACE_RE: Final = re.compile(r"^trace id (\S+) (\S+) (\S+) (\S+) (.*)$")
_VERDICT_RE: Final = re.compile(r"^rule (.*) \(verdict (\w+)(?: [^)]*)?\)\s*$")
_POLICY_RE: Final = re.compile(r"^policy (\w+)")
_COMMENT_RE: Final = re.compile(r'comment "([^"]*)"')


@dataclass(frozen=True)
class NftVerdict:
    """The kernel's verdict for the probe: ``rule`` is the rule text (or ``policy
    drop``) in ``family table chain`` that decided; ``name`` its comment if any."""

    allowed: bool
    table: str
    chain: str
    rule: str
    name: str
    trace: tuple[str, ...]


_PROBE = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
    "s.settimeout(float(sys.argv[3]))\n"
    "try:\n s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "except OSError:\n pass\n"
)


#: the tracing chain's priority: the lowest nft accepts (INT32_MIN), so that the
#: trace mark is set before any operator chain on the output hook runs; a chain
#: hooked earlier (at -1000000 the probe used to miss a drop at -2000000) would
#: drop the packet untraced and the verdict be lost
TRACE_PRIORITY: Final = -2**31

#: the most addresses one explanation probes (each costs about a quarter of a second)
MAX_PROBES: Final = 256


def probe_source(version: int) -> IPAddress:
    """The probe's source address of IP ``version`` when the VM's is not given
    (benchmarking and documentation ranges)."""
    return ipaddress.ip_address("2001:db8::1" if version == 6 else "198.18.0.1")


def probe_nftables(rules_file: Path, address: IPAddress, port: int, *,
                   vm_ip: IPAddress | None = None, attempts: int = 6) -> NftVerdict:
    """Load ``rules_file`` in a scratch namespace and trace a TCP SYN to
    ``address:port``.  A file nft refuses raises :class:`NetworkInputError` with
    nft's own ``file:line:column`` message."""
    return probe_nftables_many(rules_file, (address,), port, vm_ip=vm_ip,
                               attempts=attempts)[0]


def probe_nftables_many(rules_file: Path, addresses: Sequence[IPAddress], port: int, *,
                        vm_ip: IPAddress | None = None, vm_ips: Sequence[IPAddress] = (),
                        attempts: int = 6) -> tuple[NftVerdict, ...]:
    """:func:`probe_nftables` for each of ``addresses`` (in order), with one namespace,
    one loaded ruleset and one trace monitor for all of them: a probe then costs one
    connection attempt, not a namespace.  At most :data:`MAX_PROBES` addresses
    (a :class:`NetworkInputError` saying so: the caller narrows the question).

    The probes of each family come from the VM's address of that family
    (``vm_ip`` and ``vm_ips``, at most one per family), else from
    :func:`probe_source`: a dual-stack VM sends IPv6 traffic from its IPv6 address,
    never from its IPv4 one."""
    if not addresses:
        return ()
    if len(addresses) > MAX_PROBES:
        raise NetworkInputError(
            f"{len(addresses)} destinations to probe, more than {MAX_PROBES}: the ruleset "
            f"cuts the target's prefixes into that many pieces; ask about one address "
            f"(--to ADDRESS:PORT) or a narrower name", field="--to")
    sources: dict[int, IPAddress] = {}
    for given in (*((vm_ip,) if vm_ip is not None else ()), *vm_ips):
        if sources.setdefault(given.version, given) != given:
            raise NetworkInputError(f"{sources[given.version]} and {given} are both "
                                    f"IPv{given.version}: give at most one address per family",
                                    field="--vm-ip")
    require_tools("ip", "nft")
    families = {a.version for a in addresses}
    trace_table = f"bwtrace{secrets.token_hex(3)}"
    with NamespaceSet() as nsset:
        ns = nsset.add("probe")
        if_a = f"bwp{secrets.token_hex(3)}"
        ns.ip("link", "add", if_a, "type", "veth", "peer", "name", f"{if_a}x")
        ns.ip("link", "set", if_a, "up")
        ns.ip("link", "set", f"{if_a}x", "up")
        for version in sorted(families):
            v6 = version == 6
            src = sources.get(version) or probe_source(version)
            ns.ip("addr", "add", f"{src}/{128 if v6 else 32}", "dev", if_a,
                  *(["nodad"] if v6 else []))
            ns.ip(*(["-6"] if v6 else []), "route", "add", "default", "dev", if_a)
        _load(ns, rules_file)
        ns.run("nft", "-f", "-", input_text=(
            f"table inet {trace_table} {{\n chain out {{\n"
            f"  type filter hook output priority {TRACE_PRIORITY};\n"
            f"  meta l4proto tcp th dport {port} meta nftrace set 1\n }}\n}}\n"))
        monitor = subprocess.Popen(ns.exec_args("nft", "monitor", "trace"),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(monitor, lines), daemon=True)
        reader.start()
        verdicts: list[NftVerdict] = []
        try:
            subscribed = False
            for address in addresses:
                mark = len(lines)
                for _ in range(attempts):
                    if not subscribed:
                        time.sleep(0.3)  # the monitor subscribes asynchronously
                    ns.run(sys.executable, "-c", _PROBE, str(address), str(port), "0.3",
                           check=False)
                    deadline = time.monotonic() + 1.0
                    while time.monotonic() < deadline and not _complete(lines[mark:], address):
                        time.sleep(0.02)
                    if _complete(lines[mark:], address):
                        subscribed = True
                        time.sleep(0.1)  # the rest of that packet's verdicts
                        break
                verdicts.append(_verdict(lines[mark:], trace_table, address))
        finally:
            monitor.terminate()
            try:
                monitor.wait(timeout=5)
            except subprocess.TimeoutExpired:
                monitor.kill()
                monitor.wait()
            reader.join(timeout=5)
    return tuple(verdicts)


def ruleset_prefixes(rules_file: Path) -> tuple[IPNetwork, ...]:
    """Every address, prefix and range (as prefixes) that ``rules_file`` names, as
    the kernel holds it once loaded in a scratch namespace.

    Used to cut a host name's prefixes where a rule's coverage starts or ends, so
    that one probe per piece speaks for the whole piece.  Anything that parses as
    an address counts, also where it is not a destination (a source, a mask): an
    extra cut only costs a probe, a missing one hides a verdict.  A file nft
    refuses raises :class:`NetworkInputError` as :func:`probe_nftables` does."""
    found: set[IPNetwork] = set()
    _collect_addresses(_list_ruleset(rules_file), found)
    return tuple(sorted(found, key=lambda n: (n.version, n.network_address.packed,
                                              n.prefixlen)))


def output_drop_chains(rules_file: Path) -> tuple[tuple[str, str, str], ...]:
    """The base chains on the output hook whose policy is drop, as (family, table,
    chain), read back from the kernel after loading ``rules_file``.

    The trace stops at the first drop, so it names one chain; but each base chain on
    the hook gives its own verdict, and an allow rule must go into every one that
    drops by policy.  This is how ``explain`` finds the others."""
    out: list[tuple[str, str, str]] = []
    ruleset = _list_ruleset(rules_file)
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    for item in items if isinstance(items, list) else []:
        chain = item.get("chain") if isinstance(item, dict) else None
        if not isinstance(chain, dict) or chain.get("hook") != "output" \
                or chain.get("policy") != "drop":
            continue
        fam, table, name = chain.get("family"), chain.get("table"), chain.get("name")
        if isinstance(fam, str) and isinstance(table, str) and isinstance(name, str):
            out.append((fam, table, name))
    return tuple(out)


def _list_ruleset(rules_file: Path) -> object:
    """``nft -j list ruleset`` after loading ``rules_file`` in a scratch namespace."""
    require_tools("ip", "nft")
    with NamespaceSet() as nsset:
        ns = nsset.add("list")
        _load(ns, rules_file)
        listed = ns.run("nft", "-j", "list", "ruleset")
    try:
        ruleset: object = json.loads(listed.stdout)
    except ValueError as exc:
        raise ConfigError(f"nft -j list ruleset printed no JSON ({exc}) "
                          f"after loading {rules_file}") from None
    return ruleset


def _load(ns: Netns, rules_file: Path) -> None:
    """``nft -f rules_file`` in ``ns``; nft's own ``file:line:column`` if it refuses."""
    loaded = ns.run("nft", "-f", str(rules_file), check=False)
    if loaded.returncode != 0:
        first = next((ln for ln in loaded.stderr.splitlines() if ln.strip()), "nft failed")
        raise NetworkInputError(f"nft refused the rules: {first.strip()}",
                                source=str(rules_file))


def _collect_addresses(node: object, found: set[IPNetwork]) -> None:
    """Walk nft's JSON: a bare address string, ``{"prefix": {"addr", "len"}}`` and
    ``{"range": [lo, hi]}`` wherever they are (rules, anonymous and named sets)."""
    if isinstance(node, list):
        for item in node:
            _collect_addresses(item, found)
        return
    if isinstance(node, str):
        with contextlib.suppress(ValueError):
            found.add(ipaddress.ip_network(ipaddress.ip_address(node)))
        return
    if not isinstance(node, dict):
        return
    prefix = node.get("prefix")
    if isinstance(prefix, dict) and isinstance(prefix.get("addr"), str) \
            and isinstance(prefix.get("len"), int):
        try:
            found.add(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))
            return
        except ValueError:
            pass
    span = node.get("range")
    if isinstance(span, list) and len(span) == 2 and all(isinstance(v, str) for v in span):
        try:
            lo, hi = ipaddress.ip_address(span[0]), ipaddress.ip_address(span[1])
        except ValueError:
            pass
        else:
            if lo.version == hi.version and lo <= hi:  # type: ignore[operator]
                found.update(ipaddress.summarize_address_range(lo, hi))
            return
    for value in node.values():
        _collect_addresses(value, found)


def _read_lines(monitor: subprocess.Popen[str], lines: list[str]) -> None:
    assert monitor.stdout is not None
    for line in monitor.stdout:
        lines.append(line.rstrip("\n"))


def _is_probe(packet_line: str, address: IPAddress) -> bool:
    """Whether a trace's ``packet:`` line is the SYN to ``address``."""
    return "tcp flags == syn" in packet_line and f"daddr {address} " in packet_line + " "


def _complete(lines: list[str], address: IPAddress) -> bool:
    """The traced SYN to ``address`` has been seen."""
    return any(_is_probe(ln, address) for ln in lines)


def _verdict(lines: list[str], trace_table: str, address: IPAddress) -> NftVerdict:
    """The verdicts of the first traced SYN to ``address``, chain by chain (ours
    skipped); another packet's lines (an earlier probe's late verdicts) are ignored."""
    packets: dict[str, list[tuple[str, str, str, str]]] = {}
    order: list[str] = []
    for line in lines:
        m = _TRACE_RE.match(line.strip())
        if not m:
            continue
        tid, fam, table, chain, rest = m.groups()
        if tid not in packets:
            packets[tid] = []
            order.append(tid)
        packets[tid].append((fam, table, chain, rest))
    for tid in order:
        events = packets[tid]
        if not any(rest.startswith("packet:") and _is_probe(rest, address)
                   for _, _, _, rest in events):
            continue
        last_accept: tuple[str, str, str, str] | None = None
        trace = tuple(f"{f} {t} {c} {r}" for f, t, c, r in events if t != trace_table)
        for fam, table, chain, rest in events:
            if table == trace_table:
                continue
            vm = _VERDICT_RE.match(rest)
            pm = _POLICY_RE.match(rest)
            verdict, text = (vm.group(2), vm.group(1)) if vm else (
                (pm.group(1), f"policy {pm.group(1)}") if pm else ("", ""))
            if verdict == "drop":
                return NftVerdict(False, f"{fam} {table}", chain, text, _name(text), trace)
            if verdict == "accept":
                last_accept = (fam, table, chain, text)
        if last_accept is None:
            return NftVerdict(True, "", "", "no chain filters output", "", trace)
        fam, table, chain, text = last_accept
        return NftVerdict(True, f"{fam} {table}", chain, text, _name(text), trace)
    raise ConfigError("the probe packet was not traced (nft monitor trace saw nothing); "
                      "is nf_tables tracing available in this kernel?")


def _name(rule_text: str) -> str:
    m = _COMMENT_RE.search(rule_text)
    return m.group(1) if m else rule_text
