"""Evaluate a network security group the way Azure does, for attestation traffic.

Input: what ``az network nsg show`` prints (``securityRules`` and
``defaultSecurityRules``, under ``properties`` or at the top level; each rule in
the REST shape ``{name, properties: {...}}`` or flattened as the CLI prints it) or
a bare JSON list of rules.  Semantics (NSG doc, monitoring-facts section 3):
outbound rules only, lowest priority number first, the first match decides;
missing default rules (65000 AllowVnetOutBound, 65001 AllowInternetOutBound,
65500 DenyAllOutBound) are added, and said so.  Service tags are expanded from the
published service-tag document; a tag it does not define is unknown and fails
closed (it matches a Deny, never an Allow, and a warning names it).  Approximations
and what fails closed are named in :mod:`bootwatch.net.matching`.
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
    match_destinations,
    parse_address,
    parse_ports,
    source_unknowns,
    split_units,
)
from bootwatch.net.servicetag import IPNetwork, load_json

__all__ = [
    "DEFAULT_OUTBOUND_RULES",
    "MAX_RULES",
    "NsgEvaluation",
    "NsgRule",
    "evaluate_nsg",
    "free_priority_below",
    "parse_nsg",
]

MAX_RULES: Final = 4000
_PROTOCOLS: Final = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp", "esp": "Esp", "ah": "Ah",
                     "*": "*", "any": "*"}


@dataclass(frozen=True)
class NsgRule:
    """One security rule as read (``where`` is its JSON path in the file)."""

    name: str
    priority: int
    direction: str
    access: str
    protocol: str
    sources: tuple[str, ...]
    source_ports: tuple[str, ...]
    destinations: tuple[str, ...]
    destination_ports: tuple[str, ...]
    where: str
    default: bool = False
    #: added by the evaluator because the file did not have it
    added: bool = False
    #: ``sourceApplicationSecurityGroups`` / ``destinationApplicationSecurityGroups``
    #: (their ids): which NICs are members is not in the file, so the evaluator
    #: cannot check them and fails closed (see :func:`evaluate_nsg`)
    source_asgs: tuple[str, ...] = ()
    destination_asgs: tuple[str, ...] = ()


#: Azure's default outbound rules, added when a file lacks them
DEFAULT_OUTBOUND_RULES: Final = (
    NsgRule("AllowVnetOutBound", 65000, "Outbound", "Allow", "*", ("VirtualNetwork",), ("*",),
            ("VirtualNetwork",), ("*",), "default rule", default=True, added=True),
    NsgRule("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", ("*",), ("*",),
            ("Internet",), ("*",), "default rule", default=True, added=True),
    NsgRule("DenyAllOutBound", 65500, "Outbound", "Deny", "*", ("*",), ("*",), ("*",), ("*",),
            "default rule", default=True, added=True),
)


@dataclass(frozen=True)
class UnitDecision:
    """The verdict for one destination prefix."""

    destination: IPNetwork
    allowed: bool
    rule: NsgRule
    notes: tuple[str, ...]


@dataclass(frozen=True)
class NsgEvaluation:
    """The verdict: allowed only if every destination unit is allowed; ``rule`` is
    the rule deciding the first denied unit, else the allow rule of the first."""

    allowed: bool
    rule: NsgRule
    units: tuple[UnitDecision, ...]
    rules: tuple[NsgRule, ...]
    warnings: tuple[str, ...]


def _ci(obj: dict[str, Any], key: str) -> Any:
    """Azure's JSON keys are case-insensitive in practice; exact key first."""
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if k.lower() == low:
            return v
    return None


def _texts(props: dict[str, Any], one: str, many: str, where: str, source: str,
           *, required: bool = True) -> tuple[str, ...]:
    single = _ci(props, one)
    plural = _ci(props, many)
    out: list[str] = []
    if single not in (None, ""):
        if not isinstance(single, str):
            raise NetworkInputError("must be a string", source=source, field=f"{where}.{one}")
        out.append(single)
    if plural not in (None, []):
        if not isinstance(plural, list) or not all(isinstance(x, str) for x in plural):
            raise NetworkInputError("must be a list of strings", source=source,
                                    field=f"{where}.{many}")
        out.extend(plural)
    if not out and required:
        raise NetworkInputError(f"needs {one} or {many}", source=source, field=where)
    return tuple(out)


def _rule(item: Any, where: str, source: str, *, default: bool) -> NsgRule:
    if not isinstance(item, dict):
        raise NetworkInputError("must be a JSON object (a security rule)", source=source,
                                field=where)
    name = _ci(item, "name")
    if not isinstance(name, str) or not name or len(name) > 80:
        raise NetworkInputError("must be a string of 1-80 characters", source=source,
                                field=f"{where}.name")
    props = _ci(item, "properties")
    ppath = f"{where}.properties"
    if props is None:  # flattened, as `az network nsg show` prints rules
        props, ppath = item, where
    if not isinstance(props, dict):
        raise NetworkInputError("must be a JSON object", source=source, field=ppath)
    priority = _ci(props, "priority")
    # Azure's ranges: 100-4096 for security rules, 65000-65500 for its default rules
    # (a bare list may hold both, as `az network nsg rule list --include-default`)
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
        100 <= priority <= 4096 or 65000 <= priority <= 65500
    ):
        raise NetworkInputError("must be an integer 100-4096 (65000-65500 for default rules)",
                                source=source, field=f"{ppath}.priority")
    values: dict[str, str] = {}
    for key, allowed in (("direction", ("inbound", "outbound")), ("access", ("allow", "deny"))):
        value = _ci(props, key)
        if not isinstance(value, str) or value.lower() not in allowed:
            raise NetworkInputError(f"must be one of {', '.join(a.title() for a in allowed)}",
                                    source=source, field=f"{ppath}.{key}")
        values[key] = value.title()
    protocol = _ci(props, "protocol")
    if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
        raise NetworkInputError("must be one of Tcp, Udp, Icmp, Esp, Ah, *", source=source,
                                field=f"{ppath}.protocol")
    dests = _texts(props, "destinationAddressPrefix", "destinationAddressPrefixes", ppath,
                   source, required=False)
    dest_asgs = _asgs(props, "destinationApplicationSecurityGroups", ppath, source)
    if not dests and not dest_asgs:
        raise NetworkInputError("needs destinationAddressPrefix, destinationAddressPrefixes "
                                "or destinationApplicationSecurityGroups",
                                source=source, field=ppath)
    sources = _texts(props, "sourceAddressPrefix", "sourceAddressPrefixes", ppath, source,
                     required=False)
    source_asgs = _asgs(props, "sourceApplicationSecurityGroups", ppath, source)
    return NsgRule(
        name=name,
        priority=priority,
        direction=values["direction"],
        access=values["access"],
        protocol=_PROTOCOLS[protocol.lower()],
        # no source at all is Azure's "*"; groups alone restrict the source to them
        sources=sources or (() if source_asgs else ("*",)),
        source_ports=_texts(props, "sourcePortRange", "sourcePortRanges", ppath, source,
                            required=False) or ("*",),
        destinations=dests,
        destination_ports=_texts(props, "destinationPortRange", "destinationPortRanges", ppath,
                                 source),
        where=where,
        default=default,
        source_asgs=source_asgs,
        destination_asgs=dest_asgs,
    )


def _asgs(props: dict[str, Any], key: str, where: str, source: str) -> tuple[str, ...]:
    """The ids of an application-security-group list (``[{"id": ...}]``, as Azure
    writes it; a bare string id is accepted too)."""
    value = _ci(props, key)
    if value in (None, []):
        return ()
    if not isinstance(value, list):
        raise NetworkInputError("must be a JSON list", source=source, field=f"{where}.{key}")
    out = []
    for i, item in enumerate(value):
        ident = _ci(item, "id") if isinstance(item, dict) else item
        if not isinstance(ident, str) or not ident:
            raise NetworkInputError('must be {"id": "/subscriptions/..."}', source=source,
                                    field=f"{where}.{key}[{i}]")
        out.append(ident)
    return tuple(out)


def parse_nsg(data: bytes, source: str) -> tuple[list[NsgRule], list[str]]:
    """Rules from an NSG document or a bare list; returns (rules, notes about what
    was added).  Duplicate priorities in one direction are an error (Azure refuses
    them)."""
    root = load_json(data, source)
    lists: list[tuple[str, Any, bool]] = []
    if isinstance(root, list):
        lists.append(("$", root, False))
    elif isinstance(root, dict):
        holder = root
        props = _ci(root, "properties")
        if isinstance(props, dict) and any(
            _ci(props, k) is not None for k in ("securityRules", "defaultSecurityRules")
        ):
            holder, prefix = props, "properties."
        else:
            prefix = ""
        found = False
        for key, default in (("securityRules", False), ("defaultSecurityRules", True)):
            value = _ci(holder, key)
            if value is not None:
                found = True
                lists.append((prefix + key, value, default))
        if not found:
            raise NetworkInputError(
                "not an NSG: expected a list of security rules or an object with "
                "securityRules/defaultSecurityRules (at the top level or under properties)",
                source=source,
            )
    else:
        raise NetworkInputError("not an NSG: expected a JSON object or list", source=source)
    rules: list[NsgRule] = []
    for path, items, default in lists:
        if not isinstance(items, list):
            raise NetworkInputError("must be a JSON list", source=source, field=path)
        if len(items) + len(rules) > MAX_RULES:
            raise NetworkInputError(f"more than {MAX_RULES} rules", source=source, field=path)
        rules.extend(
            _rule(item, f"{path}[{i}]", source, default=default) for i, item in enumerate(items)
        )
    seen: dict[tuple[str, int], NsgRule] = {}
    for rule in rules:
        slot = (rule.direction, rule.priority)
        if slot in seen:
            raise NetworkInputError(
                f"priority {rule.priority} is used by {seen[slot].name!r} and {rule.name!r} "
                f"in direction {rule.direction} (Azure requires it unique)",
                source=source, field=rule.where,
            )
        seen[slot] = rule
    notes = []
    names = {r.name.lower() for r in rules}
    for d in DEFAULT_OUTBOUND_RULES:
        if d.name.lower() not in names and ("Outbound", d.priority) not in seen:
            rules.append(d)
            notes.append(f"added the default rule {d.name} ({d.priority})")
    return rules, notes


def _any_port(entries: tuple[str, ...]) -> bool:
    """Do the source port entries cover every port (``*``, ``Any`` or ``0-65535``)?
    Only then is the VM's unknown source port sure to match."""
    for entry in entries:
        e = entry.strip().lower()
        if e in ("*", "any"):
            return True
        lo, sep, hi = e.partition("-")
        if sep and lo.strip() == "0" and hi.strip() == "65535":
            return True
    return False


@dataclass(frozen=True)
class _Compiled:
    """A rule's address and port entries parsed once for all destination pieces."""

    rule: NsgRule
    #: protocol and destination port cover the target (the same for every piece)
    applies: bool
    destinations: tuple[AddressEntry, ...]
    sources: tuple[AddressEntry, ...]


def _compile(rule: NsgRule, ctx: Context, source: str) -> _Compiled:
    ports = parse_ports(rule.destination_ports,
                        field_name=f"{rule.where}.destinationPortRange", source=source)
    port = ctx.target.port
    return _Compiled(
        rule,
        rule.protocol in ("Tcp", "*") and any(lo <= port <= hi for lo, hi in ports),
        tuple(parse_address(d, ctx, field_name=f"{rule.where}.destinationAddressPrefix",
                            source=source) for d in rule.destinations),
        tuple(parse_address(s, ctx, field_name=f"{rule.where}.sourceAddressPrefix",
                            source=source) for s in rule.sources),
    )


def _decide(c: _Compiled, unit: IPNetwork, ctx: Context) -> tuple[bool, str]:
    """(matches, note) for one outbound rule and one destination unit.

    What cannot be known from the file (the VM's address without ``--vm-ip``, its
    source port, membership of application security groups, the addresses of a
    service tag the document does not define) fails closed: it counts for a Deny
    and never for an Allow, and a note or warning names the rule."""
    if not c.applies:
        return False, ""
    rule = c.rule
    matched, tags = match_destinations(c.destinations, unit, ctx)
    dest = destination_unknowns(matched, rule.destination_asgs,
                                "destination application security groups", tags=tags)
    if dest is None:
        return False, ""
    src = source_unknowns(c.sources, unit, ctx, groups=rule.source_asgs,
                          groups_name="source application security groups")
    if src is None:
        return False, ""  # the VM is outside every source: no source port changes that
    unknown = [*dest, *src]
    if not _any_port(rule.source_ports):
        unknown.append("the source port")
    matched, said = fail_closed(unknown, deny=rule.access == "Deny",
                                who=f"rule {rule.name!r} ({rule.where})", ctx=ctx)
    return matched, f"{rule.name}: {said}" if matched and said else ""


def evaluate_nsg(rules: list[NsgRule], ctx: Context, source: str) -> NsgEvaluation:
    """First matching outbound rule by priority, per destination unit."""
    outbound = sorted((r for r in rules if r.direction == "Outbound"), key=lambda r: r.priority)
    compiled = [_compile(r, ctx, source) for r in outbound]
    units: list[UnitDecision] = []
    units_in = split_units(destination_units(ctx),
                           [d for c in compiled for d in c.destinations], ctx)
    for unit in units_in:
        for c in compiled:
            matched, note = _decide(c, unit, ctx)
            if matched:
                units.append(UnitDecision(unit, c.rule.access == "Allow", c.rule,
                                          (note,) if note else ()))
                break
        else:  # unreachable while DenyAllOutBound is present; kept fail-closed
            raise NetworkInputError("no outbound rule matched and no default deny rule",
                                    source=source)
    denied = [u for u in units if not u.allowed]
    deciding = denied[0] if denied else units[0]
    return NsgEvaluation(
        allowed=not denied,
        rule=deciding.rule,
        units=tuple(units),
        rules=tuple(outbound),
        warnings=tuple(ctx.warnings),
    )


def free_priority_below(rules: tuple[NsgRule, ...], limit: int, count: int = 1) -> int | None:
    """The highest P with P..P+count-1 unused outbound priorities, all in
    100..min(4096, limit - 1) (the fix must come before the deciding rule), or None."""
    used = {r.priority for r in rules if r.direction == "Outbound"}
    for p in range(min(4096, limit - 1) - count + 1, 99, -1):
        if not any(q in used for q in range(p, p + count)):
            return p
    return None
