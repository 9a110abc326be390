"""Evaluate classic Azure Firewall rule collections for attestation traffic.

Input: ``az network firewall show`` output (``networkRuleCollections`` and
``applicationRuleCollections``, under ``properties`` or at the top level; each
collection in the REST shape ``{name, properties: {priority, action, rules}}`` or
flattened) or an object holding just those keys (what ``bootwatch network rules
--format azure-firewall-*`` writes).  Semantics (Azure Firewall docs): network
rule collections first, by priority, the first matching rule's collection action
decides; then application rule collections (by host name, ``Https:PORT``); when
nothing matches the firewall denies.  Application rules need a host name: for an
address target they are not consulted (said so).  A service tag the document does
not define, like an IP group, fails closed (see :mod:`bootwatch.net.matching`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bootwatch.errors import NetworkInputError
from bootwatch.net.matching import (
    AddressEntry,
    Context,
    destination_units,
    destination_unknowns,
    fail_closed,
    host_matches,
    match_destinations,
    parse_address,
    parse_ports,
    source_unknowns,
    split_units,
)
from bootwatch.net.servicetag import IPNetwork, load_json

__all__ = ["FirewallEvaluation", "FirewallRule", "evaluate_firewall", "parse_firewall"]

_MAX_RULES: Final = 10_000


@dataclass(frozen=True)
class FirewallRule:
    """One rule with its collection's name, priority and action."""

    kind: str  # "network" or "application"
    collection: str
    priority: int
    action: str
    name: str
    protocols: tuple[str, ...]  # network: TCP/UDP/Any/ICMP; application: "Https:443"
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    destination_fqdns: tuple[str, ...]
    ports: tuple[str, ...]
    where: str
    #: ``sourceIpGroups`` / ``destinationIpGroups`` (their ids): the groups' addresses
    #: are not in the file, so the evaluator cannot check them and fails closed
    source_ip_groups: tuple[str, ...] = ()
    destination_ip_groups: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.collection}/{self.name}"


#: reported when nothing matches
DEFAULT_DENY = FirewallRule("default", "AzureFirewall", 65536, "Deny", "DefaultDeny", (), (),
                            (), (), (), "no rule matched: Azure Firewall denies by default")


@dataclass(frozen=True)
class FirewallEvaluation:
    allowed: bool
    rule: FirewallRule
    per_destination: tuple[tuple[IPNetwork, FirewallRule], ...]
    rules: tuple[FirewallRule, ...]
    warnings: tuple[str, ...]


def _ci(obj: dict[str, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    low = key.lower()
    return next((v for k, v in obj.items() if k.lower() == low), None)


def _strings(obj: dict[str, Any], key: str, where: str, source: str) -> tuple[str, ...]:
    value = _ci(obj, key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise NetworkInputError("must be a list of strings", source=source, field=f"{where}.{key}")
    return tuple(value)


def _collections(holder: dict[str, Any], key: str, kind: str, source: str,
                 prefix: str) -> list[FirewallRule]:
    items = _ci(holder, key)
    if items is None:
        return []
    path = prefix + key
    if not isinstance(items, list):
        raise NetworkInputError("must be a JSON list", source=source, field=path)
    out: list[FirewallRule] = []
    for i, coll in enumerate(items):
        cpath = f"{path}[{i}]"
        if not isinstance(coll, dict):
            raise NetworkInputError("must be a JSON object", source=source, field=cpath)
        name = _ci(coll, "name")
        if not isinstance(name, str) or not name:
            raise NetworkInputError("must be a non-empty string", source=source,
                                    field=f"{cpath}.name")
        props = _ci(coll, "properties")
        ppath = f"{cpath}.properties"
        if props is None:
            props, ppath = coll, cpath
        if not isinstance(props, dict):
            raise NetworkInputError("must be a JSON object", source=source, field=ppath)
        priority = _ci(props, "priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not (
            100 <= priority <= 65000
        ):
            raise NetworkInputError("must be an integer 100-65000", source=source,
                                    field=f"{ppath}.priority")
        action = _ci(props, "action")
        action_type = _ci(action, "type") if isinstance(action, dict) else None
        if not isinstance(action_type, str) or action_type.lower() not in ("allow", "deny"):
            raise NetworkInputError("must be {\"type\": \"Allow\"|\"Deny\"}", source=source,
                                    field=f"{ppath}.action")
        rules = _ci(props, "rules")
        if not isinstance(rules, list):
            raise NetworkInputError("must be a JSON list", source=source, field=f"{ppath}.rules")
        for j, rule in enumerate(rules):
            rpath = f"{ppath}.rules[{j}]"
            if not isinstance(rule, dict):
                raise NetworkInputError("must be a JSON object", source=source, field=rpath)
            rname = _ci(rule, "name")
            if not isinstance(rname, str) or not rname:
                raise NetworkInputError("must be a non-empty string", source=source,
                                        field=f"{rpath}.name")
            if kind == "network":
                protocols = tuple(p.upper() for p in _strings(rule, "protocols", rpath, source))
                bad = [p for p in protocols if p not in ("TCP", "UDP", "ANY", "ICMP")]
                if bad or not protocols:
                    raise NetworkInputError("must list TCP, UDP, Any or ICMP", source=source,
                                            field=f"{rpath}.protocols")
                ports = _strings(rule, "destinationPorts", rpath, source)
                dests = _strings(rule, "destinationAddresses", rpath, source)
                fqdns = _strings(rule, "destinationFqdns", rpath, source)
                dest_groups = _strings(rule, "destinationIpGroups", rpath, source)
                if not ports:
                    raise NetworkInputError("is required", source=source,
                                            field=f"{rpath}.destinationPorts")
            else:
                raw = _ci(rule, "protocols")
                if not isinstance(raw, list) or not raw:
                    raise NetworkInputError("must list {protocolType, port}", source=source,
                                            field=f"{rpath}.protocols")
                protos = []
                for k, p in enumerate(raw):
                    ptype = _ci(p, "protocolType") if isinstance(p, dict) else None
                    port = _ci(p, "port") if isinstance(p, dict) else None
                    if not isinstance(ptype, str) or ptype.lower() not in ("http", "https",
                                                                           "mssql"):
                        raise NetworkInputError("must be Http, Https or Mssql", source=source,
                                                field=f"{rpath}.protocols[{k}].protocolType")
                    if isinstance(port, bool) or not isinstance(port, int) or not (
                        0 <= port <= 64000
                    ):
                        raise NetworkInputError("must be an integer 0-64000", source=source,
                                                field=f"{rpath}.protocols[{k}].port")
                    protos.append(f"{ptype.title()}:{port}")
                protocols, ports, dests, dest_groups = tuple(protos), (), (), ()
                fqdns = _strings(rule, "targetFqdns", rpath, source)
                if _strings(rule, "fqdnTags", rpath, source):
                    fqdns = (*fqdns, "(fqdn tag)")
            sources = _strings(rule, "sourceAddresses", rpath, source)
            source_groups = _strings(rule, "sourceIpGroups", rpath, source)
            if not sources and not source_groups:
                sources = ("*",)
            out.append(FirewallRule(kind, name, priority, action_type.title(), rname, protocols,
                                    sources, dests, fqdns, ports, rpath,
                                    source_ip_groups=source_groups,
                                    destination_ip_groups=dest_groups))
            if len(out) > _MAX_RULES:
                raise NetworkInputError(f"more than {_MAX_RULES} rules", source=source,
                                        field=path)
    return out


def parse_firewall(data: bytes, source: str) -> list[FirewallRule]:
    """Every rule, network collections first, each kind by collection priority."""
    root = load_json(data, source)
    if not isinstance(root, dict):
        raise NetworkInputError("not an Azure Firewall: expected a JSON object", source=source)
    holder, prefix = root, ""
    props = _ci(root, "properties")
    if isinstance(props, dict) and any(
        _ci(props, k) is not None for k in ("networkRuleCollections", "applicationRuleCollections")
    ):
        holder, prefix = props, "properties."
    network = _collections(holder, "networkRuleCollections", "network", source, prefix)
    application = _collections(holder, "applicationRuleCollections", "application", source,
                               prefix)
    if _ci(holder, "networkRuleCollections") is None and _ci(
        holder, "applicationRuleCollections"
    ) is None:
        raise NetworkInputError(
            "not an Azure Firewall: no networkRuleCollections or applicationRuleCollections "
            "(at the top level or under properties)", source=source)
    network.sort(key=lambda r: r.priority)
    application.sort(key=lambda r: r.priority)
    return network + application


@dataclass(frozen=True)
class _Compiled:
    """A rule's address and port entries parsed once for all destination pieces."""

    rule: FirewallRule
    #: a network rule's protocol and destination port cover the target
    applies: bool
    destinations: tuple[AddressEntry, ...]
    sources: tuple[AddressEntry, ...]


def _compile(rule: FirewallRule, ctx: Context, source: str) -> _Compiled:
    ports = parse_ports(rule.ports, field_name=f"{rule.where}.destinationPorts", source=source)
    port = ctx.target.port
    return _Compiled(
        rule,
        any(p in ("TCP", "ANY") for p in rule.protocols)
        and any(lo <= port <= hi for lo, hi in ports),
        tuple(parse_address(d, ctx, field_name=f"{rule.where}.destinationAddresses",
                            source=source) for d in rule.destinations),
        tuple(parse_address(s, ctx, field_name=f"{rule.where}.sourceAddresses",
                            source=source) for s in rule.sources),
    )


def _matches(c: _Compiled, unit: IPNetwork, ctx: Context) -> bool:
    """Does ``c``'s rule match TCP from the VM to ``unit``?

    What cannot be known from the file (the VM's address without ``--vm-ip``, the
    addresses of IP groups and of service tags the document does not define) fails
    closed: it counts for a Deny and never for an Allow, and a warning names the
    rule."""
    rule = c.rule
    t = ctx.target
    unknown: list[str] = []
    if rule.kind == "network":
        if not c.applies:
            return False
        by_address, tags = match_destinations(c.destinations, unit, ctx)
        by_name = t.address is None and any(host_matches(t.host, f)
                                            for f in rule.destination_fqdns)
        dest = destination_unknowns(by_address or by_name, rule.destination_ip_groups,
                                    "destinationIpGroups", tags=tags)
        if dest is None:
            return False
        unknown.extend(dest)
    else:
        if t.address is not None:
            return False
        if f"Https:{t.port}" not in rule.protocols:
            return False
        if "(fqdn tag)" in rule.destination_fqdns:
            ctx.warn(f"rule {rule.label} uses FQDN tags: not evaluated")
        if not any(host_matches(t.host, f) for f in rule.destination_fqdns if f != "(fqdn tag)"):
            return False
    src = source_unknowns(c.sources, unit, ctx, groups=rule.source_ip_groups,
                          groups_name="sourceIpGroups")
    if src is None:
        return False
    unknown.extend(src)
    return fail_closed(unknown, deny=rule.action == "Deny", who=rule.label, ctx=ctx)[0]


def evaluate_firewall(rules: list[FirewallRule], ctx: Context, source: str) -> FirewallEvaluation:
    """The first matching rule (network, then application) per destination unit."""
    if ctx.target.address is not None and any(r.kind == "application" for r in rules):
        ctx.warn("application rules match host names only; the target is an address, so "
                 "they were not consulted (give --to with the service's host name)")
    compiled = [_compile(r, ctx, source) for r in rules]
    decided: list[tuple[IPNetwork, FirewallRule]] = []
    units = split_units(destination_units(ctx),
                        [d for c in compiled if c.rule.kind == "network" for d in c.destinations],
                        ctx)
    for unit in units:
        rule = next((c.rule for c in compiled if _matches(c, unit, ctx)), DEFAULT_DENY)
        decided.append((unit, rule))
    denied = [(u, r) for u, r in decided if r.action != "Allow"]
    deciding = denied[0][1] if denied else decided[0][1]
    return FirewallEvaluation(
        allowed=not denied,
        rule=deciding,
        per_destination=tuple(decided),
        rules=tuple(rules),
        warnings=tuple(ctx.warnings),
    )
