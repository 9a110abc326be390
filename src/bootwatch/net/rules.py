"""Egress allow rules for attestation traffic, from a service-tag document.

One function per tool operators already use; each returns text valid for that
tool (the tests load it with ``nft -c -f``, ``iptables-restore --test`` and
``squid -k parse``):

- ``nsg-json``: a JSON list of NSG security rules in the REST shape
  (Outbound, Allow, Tcp, destination the service tag or its prefixes), the shape
  ``bootwatch network explain`` reads back;
- ``azure-firewall-network`` / ``azure-firewall-application``: classic Azure
  Firewall rule collections (monitoring-facts section 3);
- ``nftables``: ``insert rule`` lines at the head of ``inet filter output`` (the
  names of Debian's /etc/nftables.conf), after declaring that chain, which creates
  it (policy accept) only when missing and leaves an existing one's policy alone;
  ``explain`` instead writes :func:`generate_nftables_fix`, for the chains that
  dropped the traffic;
- ``iptables`` / ``ip6tables``: iptables-restore input to load with ``--noflush``
  (``-I OUTPUT 1``: ahead of the operator's DROP rules);
- ``squid``: ACLs and ``http_access allow`` for CONNECT to the service's host
  names and prefixes on its port, to place above the first ``http_access deny``
  (``dst`` prefixes written so squid reads each as its own family only).

Where the issue's options make no sense for a tool the choice is named:
``--priority`` applies to NSG and Azure Firewall only (nftables, iptables and
squid take rules in order; these are inserted first).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from bootwatch.errors import NetworkInputError
from bootwatch.net.servicetag import (
    AZURE_ATTESTATION,
    IPNetwork,
    ServiceTag,
    ServiceTagDocument,
    require_printable_ascii,
)

__all__ = [
    "DEFAULT_PORT",
    "NftChainRef",
    "ResolvedRules",
    "RuleFormat",
    "RuleOptions",
    "generate_nftables_fix",
    "generate_rules",
    "resolve_options",
]

#: attestation traffic is HTTPS (443/TCP is [Inf] in monitoring-facts section 3)
DEFAULT_PORT: Final = 443
DEFAULT_PRIORITY: Final = 100
# fullmatch only (``$`` would accept a final "\n", which reaches nft comments)
_NAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?")


class RuleFormat(StrEnum):
    """The formats ``bootwatch network rules --format`` writes."""

    NSG_JSON = "nsg-json"
    AZURE_FIREWALL_NETWORK = "azure-firewall-network"
    AZURE_FIREWALL_APPLICATION = "azure-firewall-application"
    NFTABLES = "nftables"
    IPTABLES = "iptables"
    IP6TABLES = "ip6tables"
    SQUID = "squid"

    @classmethod
    def parse(cls, text: str, *, field: str = "--format") -> RuleFormat:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise NetworkInputError(
                f"unknown format {text!r} (one of {', '.join(f.value for f in cls)})",
                field=field,
            ) from None


@dataclass(frozen=True)
class RuleOptions:
    """What the operator chose; ``None`` means the documented default.

    ``use_tag``: name the service tag as destination (NSG, Azure Firewall network
    rules) instead of its prefixes; default: only for ``AzureAttestation``, the one
    tag Azure itself knows.
    """

    source: IPNetwork | None = None
    priority: int | None = None
    name: str | None = None
    ports: tuple[int, ...] = ()
    use_tag: bool | None = None
    fqdns: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedRules:
    """The options with their defaults applied, against one tag."""

    tag: ServiceTag
    source: IPNetwork | None
    priority: int
    name: str
    ports: tuple[int, ...]
    use_tag: bool
    fqdns: tuple[str, ...]
    change_number: int

    @property
    def v4(self) -> tuple[IPNetwork, ...]:
        return tuple(p for p in self.tag.address_prefixes if p.version == 4)

    @property
    def v6(self) -> tuple[IPNetwork, ...]:
        return tuple(p for p in self.tag.address_prefixes if p.version == 6)

    def families(self) -> list[tuple[int, tuple[IPNetwork, ...]]]:
        """(version, prefixes) the rules cover: a --source restricts to its family."""
        out = [(4, self.v4), (6, self.v6)]
        return [(v, p) for v, p in out if p and (self.source is None or self.source.version == v)]

    def header(self, what: str) -> str:
        """One line for a comment.  The tag name comes from the document, which may be
        fetched from a remote service: a line break in it would start a line that
        nft, iptables-restore or squid obeys, so anything unprintable becomes ``?``."""
        tag = "".join(c if c.isprintable() else "?" for c in self.tag.name)
        return (
            f"bootwatch: allow outbound attestation traffic to {tag} "
            f"(changeNumber {self.change_number}), {what}"
        )


def resolve_options(
    doc: ServiceTagDocument, options: RuleOptions, *, tag_name: str | None = None
) -> ResolvedRules:
    """Apply defaults and check the options against the document."""
    tag = doc.tag(tag_name)
    name = options.name or f"Allow{tag.name.replace('.', '')}Outbound"
    require_printable_ascii(name, field="--name", what="a rule name")
    if not _NAME_RE.fullmatch(name):
        raise NetworkInputError(
            f"{name!r}: 1-80 of A-Z a-z 0-9 _ . -, starting with a letter or digit and "
            "ending with a letter, digit or _ (Azure's rule-name rule)",
            field="--name",
        )
    for port in options.ports:
        if not 0 < port < 65536:
            raise NetworkInputError(f"{port} is not a TCP port 1-65535", field="--port")
    ports = options.ports or doc.ports or (DEFAULT_PORT,)
    priority = options.priority if options.priority is not None else DEFAULT_PRIORITY
    fqdns = options.fqdns or doc.tag_fqdns(tag)
    use_tag = options.use_tag if options.use_tag is not None else tag.name == AZURE_ATTESTATION
    return ResolvedRules(
        tag=tag,
        source=options.source,
        priority=priority,
        name=name,
        ports=tuple(dict.fromkeys(ports)),
        use_tag=use_tag,
        fqdns=fqdns,
        change_number=tag.change_number or doc.change_number,
    )


def generate_rules(
    doc: ServiceTagDocument,
    fmt: RuleFormat,
    options: RuleOptions | None = None,
    *,
    tag_name: str | None = None,
) -> str:
    """The rules in ``fmt`` allowing outbound TCP to the tag's prefixes (or names)."""
    r = resolve_options(doc, options or RuleOptions(), tag_name=tag_name)
    return _GENERATORS[fmt](r)


def _need_prefixes(r: ResolvedRules, tool: str) -> list[tuple[int, tuple[IPNetwork, ...]]]:
    fams = r.families()
    if not fams:
        fam = f" of the --source family (IPv{r.source.version})" if r.source else ""
        raise NetworkInputError(
            f"tag {r.tag.name!r} has no address prefixes{fam} to write {tool} rules for",
            field="addressPrefixes",
        )
    return fams


def _need_fqdns(r: ResolvedRules, tool: str) -> tuple[str, ...]:
    if not r.fqdns:
        raise NetworkInputError(
            f"tag {r.tag.name!r} names no host names, which {tool} rules need (a service "
            "started with --public-url https://NAME publishes NAME; or give --fqdn)",
            field="bootwatch.fqdns",
        )
    return r.fqdns


def _check_priority(r: ResolvedRules, low: int, high: int, tool: str) -> None:
    if not low <= r.priority <= high:
        raise NetworkInputError(
            f"{r.priority} is outside {low}-{high}, the range {tool} accepts", field="--priority"
        )


def _port_ranges(r: ResolvedRules) -> list[str]:
    return [str(p) for p in r.ports]


# --- Azure ----------------------------------------------------------------------


def _nsg(r: ResolvedRules) -> str:
    _check_priority(r, 100, 4096, "an NSG rule")
    rules: list[dict[str, Any]] = []
    ports = _port_ranges(r)
    base: dict[str, Any] = {
        "description": r.header("TCP"),
        "direction": "Outbound",
        "access": "Allow",
        "protocol": "Tcp",
        "sourcePortRange": "*",
    }
    if len(ports) == 1:
        base["destinationPortRange"] = ports[0]
    else:
        base["destinationPortRanges"] = ports
    if r.use_tag:
        props = dict(base, priority=r.priority, destinationAddressPrefix=r.tag.name)
        props["sourceAddressPrefix"] = str(r.source) if r.source else "*"
        rules.append({"name": r.name, "properties": _ordered(props)})
    else:
        # one rule per address family: a rule's prefixes are all IPv4 or all IPv6
        for i, (version, prefixes) in enumerate(_need_prefixes(r, "NSG")):
            props = dict(base, priority=r.priority + i)
            props["sourceAddressPrefix"] = str(r.source) if r.source else "*"
            if len(prefixes) == 1:
                props["destinationAddressPrefix"] = str(prefixes[0])
            else:
                props["destinationAddressPrefixes"] = [str(p) for p in prefixes]
            name = r.name if i == 0 else _suffixed(r.name, f"-v{version}")
            rules.append({"name": name, "properties": _ordered(props)})
    if rules[-1]["properties"]["priority"] > 4096:
        raise NetworkInputError("the IPv6 rule would take priority 4097", field="--priority")
    return json.dumps(rules, indent=2) + "\n"


_NSG_ORDER = (
    "description", "priority", "direction", "access", "protocol", "sourceAddressPrefix",
    "sourcePortRange", "destinationAddressPrefix", "destinationAddressPrefixes",
    "destinationPortRange", "destinationPortRanges",
)


def _ordered(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props[k] for k in _NSG_ORDER if k in props}


def _suffixed(name: str, suffix: str) -> str:
    return name[: 80 - len(suffix)] + suffix


def _firewall_network(r: ResolvedRules) -> str:
    _check_priority(r, 100, 65000, "an Azure Firewall rule collection")
    if r.use_tag:
        destinations = [r.tag.name]
    else:
        destinations = [str(p) for _, prefixes in _need_prefixes(r, "firewall") for p in prefixes]
    rule = {
        "name": r.name,
        "description": r.header("TCP"),
        "protocols": ["TCP"],
        "sourceAddresses": [str(r.source) if r.source else "*"],
        "destinationAddresses": destinations,
        "destinationPorts": _port_ranges(r),
    }
    doc = {
        "networkRuleCollections": [
            {
                "name": f"{r.name}Collection"[:80],
                "properties": {
                    "priority": r.priority,
                    "action": {"type": "Allow"},
                    "rules": [rule],
                },
            }
        ]
    }
    return json.dumps(doc, indent=2) + "\n"


def _firewall_application(r: ResolvedRules) -> str:
    _check_priority(r, 100, 65000, "an Azure Firewall rule collection")
    # application rules take ports 0-64000 (monitoring-facts section 3; parse_firewall
    # refuses more), unlike network rules
    high = [p for p in r.ports if p > 64000]
    if high:
        raise NetworkInputError(
            f"port {high[0]} is outside 0-64000, the range Azure Firewall application "
            "rules accept (use azure-firewall-network)", field="--port")
    rule = {
        "name": r.name,
        "description": r.header("HTTPS by host name"),
        "sourceAddresses": [str(r.source) if r.source else "*"],
        "protocols": [{"protocolType": "Https", "port": p} for p in r.ports],
        "targetFqdns": list(_need_fqdns(r, "Azure Firewall application")),
    }
    doc = {
        "applicationRuleCollections": [
            {
                "name": f"{r.name}Collection"[:80],
                "properties": {
                    "priority": r.priority,
                    "action": {"type": "Allow"},
                    "rules": [rule],
                },
            }
        ]
    }
    return json.dumps(doc, indent=2) + "\n"


# --- Linux ------------------------------------------------------------------------


def _nftables(r: ResolvedRules) -> str:
    fams = _need_prefixes(r, "nftables")
    ports = ", ".join(str(p) for p in r.ports)
    lines = [
        "#!/usr/sbin/nft -f",
        f"# {r.header('TCP')}",
        "# Load with: nft -f FILE. The rules go first in inet filter output; the chain is",
        "# declared so the file also loads where it does not exist yet (policy accept).",
        "table inet filter {",
        "\tchain output {",
        "\t\ttype filter hook output priority filter;",
        "\t}",
        "}",
    ]
    for version, prefixes in fams:
        match = "ip" if version == 4 else "ip6"
        source = f"{match} saddr {r.source} " if r.source else ""
        dests = ", ".join(str(p) for p in prefixes)
        lines.append(
            f"insert rule inet filter output {source}{match} daddr {{ {dests} }} "
            f'tcp dport {{ {ports} }} accept comment "bootwatch: {r.name}"'
        )
    return "\n".join(lines) + "\n"


#: a table or chain name nft takes unquoted (anything else is not written into a file)
_NFT_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]{0,255}")
#: which address families a table of each nft family can match on the output hook
_NFT_FAMILIES: Final = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}


@dataclass(frozen=True)
class NftChainRef:
    """A chain of the operator's ruleset: nft ``family``, ``table`` and ``chain``."""

    family: str
    table: str
    chain: str

    def __str__(self) -> str:
        return f"{self.family} {self.table} {self.chain}"


def generate_nftables_fix(
    doc: ServiceTagDocument,
    chains: tuple[NftChainRef, ...],
    options: RuleOptions | None = None,
    *,
    tag_name: str | None = None,
) -> str:
    """``insert rule`` lines for each of ``chains``, the chains that dropped the traffic.

    Unlike ``--format nftables`` (which puts its rules into ``inet filter output``),
    this is for ``explain``, which knows where the drop happened: an accept in one
    base chain does not override a drop in another (each base chain on the hook
    gives its own verdict), so the rule goes first in the chain that dropped.  The
    chains exist (the probe saw them), so none is declared: redeclaring a base chain
    with another type or priority is an error that stops the whole file loading.
    A chain of an ``ip`` (``ip6``) table gets only the IPv4 (IPv6) prefixes."""
    r = resolve_options(doc, options or RuleOptions(), tag_name=tag_name)
    fams = dict(_need_prefixes(r, "nftables"))
    ports = ", ".join(str(p) for p in r.ports)
    lines = [
        "#!/usr/sbin/nft -f",
        f"# {r.header('TCP')}",
        "# Load with: nft -f FILE. Each rule goes first in a chain that dropped the traffic;",
        "# an accept in one base chain does not override a drop in another.",
    ]
    for ref in chains:
        if ref.family not in _NFT_FAMILIES:
            raise NetworkInputError(f"{ref}: nft family {ref.family!r} has no output hook",
                                    field="chain")
        for name in (ref.table, ref.chain):
            if not _NFT_NAME_RE.fullmatch(name):
                raise NetworkInputError(f"{name!r} is not a name nft takes unquoted",
                                        field=f"chain {_printable(str(ref))}")
        for version in _NFT_FAMILIES[ref.family]:
            if version not in fams:
                continue
            match = "ip" if version == 4 else "ip6"
            source = f"{match} saddr {r.source} " if r.source else ""
            dests = ", ".join(str(p) for p in fams[version])
            lines.append(
                f"insert rule {ref.family} {ref.table} {ref.chain} {source}{match} daddr "
                f'{{ {dests} }} tcp dport {{ {ports} }} accept comment "bootwatch: {r.name}"'
            )
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _iptables_for(r: ResolvedRules, version: int) -> str:
    tool = "iptables" if version == 4 else "ip6tables"
    prefixes = [p for v, ps in _need_prefixes(r, tool) if v == version for p in ps]
    if not prefixes:
        other = "ip6tables" if version == 4 else "iptables"
        raise NetworkInputError(
            f"tag {r.tag.name!r} has no IPv{version} prefixes for {tool}; use --format {other}",
            field="--format",
        )
    if len(r.ports) == 1:
        port_matches = [f"-m tcp --dport {r.ports[0]}"]
    else:
        # multiport takes at most 15 ports per rule (iptables-restore refuses more)
        port_matches = [
            "-m multiport --dports " + ",".join(str(p) for p in r.ports[i:i + 15])
            for i in range(0, len(r.ports), 15)
        ]
    source = f"-s {r.source} " if r.source else ""
    lines = [
        f"# {r.header('TCP')}",
        f"# Load with: {tool}-restore --noflush FILE (inserted at the head of OUTPUT)",
        "*filter",
    ]
    lines += [
        f"-I OUTPUT 1 {source}-d {p} -p tcp {port_match} "
        f'-m comment --comment "bootwatch: {r.name}" -j ACCEPT'
        for p in reversed(prefixes)
        for port_match in reversed(port_matches)
    ]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _iptables(r: ResolvedRules) -> str:
    return _iptables_for(r, 4)


def _ip6tables(r: ResolvedRules) -> str:
    return _iptables_for(r, 6)


def _squid(r: ResolvedRules) -> str:
    acl = r.name.lower().replace(".", "_").replace("-", "_")
    lines = [
        f"# {r.header('CONNECT through the proxy')}",
        "# Place these lines above the first 'http_access deny' of squid.conf.",
        f"acl {acl}_connect method CONNECT",
        f"acl {acl}_port port {' '.join(str(p) for p in r.ports)}",
    ]
    condition = f"{acl}_connect {acl}_port"
    if r.source:
        lines.append(f"acl {acl}_src src {r.source}")
        condition += f" {acl}_src"
    allows = []
    names = [f if not f.startswith("*.") else f[1:] for f in r.fqdns]
    if names:
        lines.append(f"acl {acl}_fqdn dstdomain {' '.join(_squid_domains(names))}")
        allows.append(f"http_access allow {condition} {acl}_fqdn")
    prefixes = _squid_prefixes(r.tag.address_prefixes)
    if prefixes:
        lines.append(f"acl {acl}_dst dst {' '.join(str(p) for p in prefixes)}")
        allows.append(f"http_access allow {condition} {acl}_dst")
    if not allows:
        raise NetworkInputError(
            f"tag {r.tag.name!r} has neither host names nor prefixes", field="values"
        )
    return "\n".join(lines + allows) + "\n"


#: squid holds IPv4 addresses as IPv4-mapped IPv6 (::ffff:a.b.c.d), so an IPv6
#: ``dst`` prefix holding this range would also match IPv4 destinations
_V4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


def _squid_prefixes(prefixes: tuple[IPNetwork, ...]) -> list[IPNetwork]:
    """The ``dst`` values, each covering its own family only, as the tag does.

    squid reads ``0.0.0.0/0`` (and ``::/0``) as ``all``, every IPv4 *and* IPv6
    address, so a /0 is written as its two /1 halves; it holds IPv4 addresses as
    IPv4-mapped IPv6, so an IPv6 prefix holding ::ffff:0:0/96 (``::/1`` does) is
    written without that range; and each family is collapsed, since squid warns
    about a prefix inside another of one ACL and ignores one of them."""
    out: list[IPNetwork] = []
    for version in (4, 6):
        family = [p for p in prefixes if p.version == version]
        for net in ipaddress.collapse_addresses(family):  # type: ignore[type-var]
            if isinstance(net, ipaddress.IPv6Network) and _V4_MAPPED.subnet_of(net):
                out.extend(sorted(net.address_exclude(_V4_MAPPED)))
            elif net.prefixlen == 0:
                out.extend(net.subnets(prefixlen_diff=1))
            else:
                out.append(net)
    return out


def _squid_domains(names: list[str]) -> list[str]:
    """dstdomain refuses a name next to a wildcard covering it (".a.b" covers "x.a.b"
    and "a.b", and also the wildcard ".x.a.b": squid 5 stops on ".x.a.b .a.b")."""
    wild = set(n for n in names if n.startswith("."))
    keep = [
        n for n in names
        if not any(n != w and (n.endswith(w) or n == w[1:]) for w in wild)
    ]
    return list(dict.fromkeys(keep))


_GENERATORS = {
    RuleFormat.NSG_JSON: _nsg,
    RuleFormat.AZURE_FIREWALL_NETWORK: _firewall_network,
    RuleFormat.AZURE_FIREWALL_APPLICATION: _firewall_application,
    RuleFormat.NFTABLES: _nftables,
    RuleFormat.IPTABLES: _iptables,
    RuleFormat.IP6TABLES: _ip6tables,
    RuleFormat.SQUID: _squid,
}

