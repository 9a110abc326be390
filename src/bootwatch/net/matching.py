"""What the rule evaluators share: destinations, address and port matching.

A destination is evaluated as one or more *units*, each a prefix: an IP target is
one /32 or /128; a host name that the service-tag document publishes stands for
every prefix of the tag (traffic passes only if it passes to each of them, since
DNS may answer any).  A rule's address entry matches a unit when the unit lies
inside it; the evaluators first cut the units at the rule entries' prefix
boundaries (:func:`split_units`), so a rule covering part of a tag prefix decides
that part.  ``0.0.0.0/0`` and ``::/0`` cover their own family only.

Named approximations (the platform knows more than a rules file says):

- ``VirtualNetwork`` is taken as the private ranges (RFC 1918, 100.64/10, fc00::/7)
  unless ``vnet`` prefixes are given; ``Internet`` as every other address;
  ``AzureLoadBalancer`` as matching no address (it stands for the platform's
  load-balancer probes, never an attestation endpoint or the VM).

Fail closed (what a rules file and the document cannot tell is never taken to let
traffic through): an unknown source (no ``--vm-ip``, or none of the destination's
family), a rule limited to source ports, a rule part the evaluators cannot check
(NSG application security groups, Azure Firewall IP groups) and a service tag the
loaded document does not define (or any tag when no document was given) are
assumed to match a Deny and not an Allow, and a warning names the rule and what is
unknown.  A tag is not "not matching" just because the document lacks it:
``AzureCloud`` holds every Azure public address, an attestation endpoint in Azure
among them, so skipping a Deny to it would say "allowed" where Azure denies.  The
warning for a tag says how to settle it: ``--from`` a document that defines it
(Azure's ``ServiceTags_Public.json`` defines every Azure tag).  ``*``, ``Internet``,
``VirtualNetwork`` and ``AzureLoadBalancer`` are the NSG's own names, never looked
up in a document and never unknown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

from bootwatch.errors import NetworkInputError
from bootwatch.net.servicetag import IPNetwork, ServiceTagDocument
from bootwatch.net.target import IPAddress, Target

__all__ = [
    "MAX_PIECES",
    "PRIVATE_RANGES",
    "AddressEntry",
    "Context",
    "Match",
    "cut_units",
    "destination_units",
    "destination_unknowns",
    "fail_closed",
    "host_matches",
    "match_address",
    "match_destinations",
    "match_ports",
    "match_source",
    "parse_address",
    "parse_ports",
    "source_unknowns",
    "split_units",
]

PRIVATE_RANGES: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(p)
    for p in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


class Match:
    """Outcome of matching one rule field: yes, no, or unknown (with why)."""

    YES: Final = "yes"
    NO: Final = "no"
    UNKNOWN: Final = "unknown"


@dataclass
class Context:
    """Everything an evaluation reads besides the rules; collects warnings.

    ``tag`` is the ``--tag`` the operator chose: in a document with several tags it
    says which one a host-name target stands for (None: the document's default).

    The VM's addresses (``--vm-ip``, at most one per family) are ``vm_ip`` and
    ``more_vm_ips``; :attr:`vm_ips` holds them all.  A dual-stack VM sends IPv4
    traffic from its IPv4 address and IPv6 traffic from its IPv6 address, so each
    destination is matched against the address of its own family only."""

    document: ServiceTagDocument | None
    target: Target
    vm_ip: IPAddress | None = None
    vnet: tuple[IPNetwork, ...] = ()
    tag: str | None = None
    warnings: list[str] = field(default_factory=list)
    more_vm_ips: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[int, IPAddress] = {}
        for address in self.vm_ips:
            if address.version in seen and seen[address.version] != address:
                raise NetworkInputError(
                    f"{seen[address.version]} and {address} are both IPv{address.version}: "
                    "give at most one address per family", field="--vm-ip")
            seen[address.version] = address

    @property
    def vm_ips(self) -> tuple[IPAddress, ...]:
        """Every VM address given, without repeats."""
        first = (self.vm_ip,) if self.vm_ip is not None else ()
        return tuple(dict.fromkeys((*first, *self.more_vm_ips)))

    def vm_address(self, version: int) -> IPAddress | None:
        """The VM's address of IP ``version``, if given."""
        return next((a for a in self.vm_ips if a.version == version), None)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def tag_prefixes(self, name: str) -> tuple[IPNetwork, ...] | None:
        """Prefixes of tag ``name`` (case-insensitive; ``Tag`` also covers its
        ``Tag.region`` entries), or None when the document does not define it."""
        if self.document is None:
            return None
        low = name.lower()
        found: list[IPNetwork] = []
        known = False
        for value in self.document.values:
            vname = value.name.lower()
            if vname == low or vname.startswith(low + "."):
                known = True
                found.extend(value.address_prefixes)
        return tuple(found) if known else None

    def is_vnet(self, unit: IPNetwork) -> bool:
        ranges = self.vnet or PRIVATE_RANGES
        return any(unit.version == r.version and unit.subnet_of(r) for r in ranges)  # type: ignore[arg-type]


def destination_units(ctx: Context) -> tuple[IPNetwork, ...]:
    """The prefixes the traffic may go to (see the module docstring)."""
    t = ctx.target
    if t.address is not None:
        return (ipaddress.ip_network(t.address),)
    doc = ctx.document
    if doc is None:
        raise NetworkInputError(
            f"{t.host!r} is a host name: give its address, or --from with the service-tag "
            "document that publishes it",
            field="--to",
        )
    # the chosen tag, not the default: with several tags, the default would be
    # another tag's prefixes (or no default at all) and the verdict about them
    tag = doc.tag(ctx.tag)
    # the names the rule generators allow for this tag: the document's own, or for
    # Azure's file (which has none) the documented *.attest.azure.net
    fqdns = doc.tag_fqdns(tag)
    if not any(_host_matches(t.host, f) for f in fqdns):
        raise NetworkInputError(
            f"{t.host!r} is not one of the document's host names "
            f"({', '.join(fqdns) or 'none'}); give its address",
            field="--to",
        )
    if not tag.address_prefixes:
        raise NetworkInputError(f"tag {tag.name!r} has no prefixes", field="--from")
    return tag.address_prefixes


#: the most pieces a host name's prefixes are cut into for the NSG and Azure Firewall
#: evaluators; more is refused, asking for one address.  Each piece is checked
#: against every rule (about 2 microseconds a check), so 256 pieces and an NSG's
#: 4000 rules take about two seconds; the same number as ``nftprobe.MAX_PROBES``.
MAX_PIECES: Final = 256


def split_units(
    units: tuple[IPNetwork, ...], entries: Sequence[str | AddressEntry], ctx: Context,
    *, limit: int = MAX_PIECES,
) -> tuple[IPNetwork, ...]:
    """``units`` cut at every prefix boundary of the address ``entries`` that falls
    inside one of them.

    A rule entry matches a unit only when the whole unit lies inside it, so an entry
    covering part of a tag prefix (a Deny of one address of a /30 the host name
    may resolve to) would otherwise match nothing and the traffic look allowed.
    After the cut, every piece is either inside or outside each entry, and each
    piece gets its own verdict.  An address target (/32, /128) is never cut.
    More than ``limit`` pieces raise :class:`NetworkInputError` (see
    :func:`cut_units`)."""
    bounds: set[IPNetwork] = set()
    for entry in entries:
        if isinstance(entry, AddressEntry):
            bounds.update(entry.bounds(ctx))
        else:
            bounds.update(_entry_networks(entry, ctx))
    return cut_units(units, bounds, limit=limit)


def cut_units(units: tuple[IPNetwork, ...], bounds: Iterable[IPNetwork], *,
              limit: int = MAX_PIECES) -> tuple[IPNetwork, ...]:
    """``units`` cut at every prefix of ``bounds`` that lies strictly inside one.

    The shared half of :func:`split_units`, for rule sets whose addresses come as
    prefixes already (the nftables evaluator reads them from the loaded ruleset).
    A piece is halved only while a bound lies strictly inside it, so the work is
    bounded by the pieces made, not by bounds times pieces; past ``limit`` pieces
    the cut stops with a :class:`NetworkInputError` (``--to``) asking for one
    address, since every piece costs a verdict (a 200-address IPv6 Deny would cut a
    /32 into ~19,000 pieces and the evaluation take minutes)."""
    by_version: dict[int, list[IPNetwork]] = {4: [], 6: []}
    for bound in set(bounds):
        by_version[bound.version].append(bound)
    out: list[IPNetwork] = []
    for unit in units:
        inside = [b for b in by_version[unit.version]
                  if b.prefixlen > unit.prefixlen and b.subnet_of(unit)]  # type: ignore[arg-type]
        pieces: list[IPNetwork] = []
        stack: list[tuple[IPNetwork, list[IPNetwork]]] = [(unit, inside)]
        while stack:
            net, within = stack.pop()
            if not within:
                pieces.append(net)
                if len(out) + len(pieces) > limit:
                    raise NetworkInputError(
                        f"the rules cut the target's prefixes into more than {limit} pieces, "
                        "each needing its own verdict; ask about one address "
                        "(--to ADDRESS:PORT)", field="--to")
                continue
            for half in net.subnets(prefixlen_diff=1):
                below = [b for b in within
                         if b.prefixlen > half.prefixlen and b.subnet_of(half)]  # type: ignore[arg-type]
                stack.append((half, below))
        out.extend(sorted(pieces))
    return tuple(out)


def _entry_networks(entry: str, ctx: Context) -> tuple[IPNetwork, ...]:
    """The prefixes an address entry stands for (nothing for ``*`` or what does not
    parse; :func:`match_address` reports those)."""
    try:
        return parse_address(entry, ctx, field_name="", source="").bounds(ctx)
    except NetworkInputError:
        return ()


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def host_matches(host: str, pattern: str) -> bool:
    """``host`` against a name or a ``*.domain`` wildcard (case-insensitive)."""
    return _host_matches(host.lower(), pattern)


def _range(entry: str) -> tuple[IPAddress, IPAddress] | None:
    lo, sep, hi = entry.partition("-")
    if not sep:
        return None
    try:
        return ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
    except ValueError:
        return None


_ANY: Final = "any"
_INTERNET: Final = "internet"
_VNET: Final = "vnet"
_NEVER: Final = "never"
_PREFIXES: Final = "prefixes"
_UNKNOWN_TAG: Final = "unknown tag"


@dataclass(frozen=True)
class AddressEntry:
    """One address entry of a rule (``*``, a CIDR, an address, a range, a tag),
    parsed once: the evaluators check every destination piece against every rule,
    and re-parsing the text for each check made large rule sets slow.

    ``kind`` is how it matches; ``networks`` the prefixes of a CIDR, a range
    (summarized into prefixes, which cover exactly the same addresses) or a tag the
    document defines."""

    text: str
    kind: str
    networks: tuple[IPNetwork, ...] = ()
    field_name: str = ""

    def match(self, unit: IPNetwork, ctx: Context) -> str:
        """Does the entry cover all of ``unit``?  A :class:`Match` value."""
        if self.kind == _ANY:
            return Match.YES
        if self.kind == _INTERNET:
            return Match.NO if ctx.is_vnet(unit) else Match.YES
        if self.kind == _VNET:
            return Match.YES if ctx.is_vnet(unit) else Match.NO
        if self.kind == _UNKNOWN_TAG:
            return self.unknown_tag(ctx)
        first, last = int(unit.network_address), int(unit.broadcast_address)
        return (
            Match.YES
            if any(version == unit.version and lo <= first and last <= hi
                   for version, lo, hi in self.spans)
            else Match.NO
        )

    def unknown_tag(self, ctx: Context) -> str:
        """:data:`Match.UNKNOWN` for a tag the document does not define, with a
        warning naming it and how to settle it.

        Unknown, not "no": the tag may hold the address (``AzureCloud`` holds every
        Azure public address), so the evaluators count it for a Deny and never for an
        Allow (:func:`fail_closed`)."""
        why = ("is not in the service-tag document" if ctx.document is not None
               else "cannot be expanded (no service-tag document was given)")
        ctx.warn(
            f"service tag {self.text!r} ({self.field_name}) {why}: which addresses it "
            "holds is unknown, so a rule naming it is assumed to match a Deny and not an "
            "Allow (to settle it, give --from a service-tag document that defines it, "
            "such as Azure's ServiceTags_Public.json)"
        )
        return Match.UNKNOWN

    @property
    def is_unknown_tag(self) -> bool:
        """A tag the document does not define (see :meth:`unknown_tag`)."""
        return self.kind == _UNKNOWN_TAG

    @cached_property
    def spans(self) -> tuple[tuple[int, int, int], ...]:
        """``networks`` as (version, first, last) integers: with thousands of rules
        and pieces, comparing integers instead of network objects is what keeps an
        evaluation within seconds."""
        return tuple((n.version, int(n.network_address), int(n.broadcast_address))
                     for n in self.networks)

    def bounds(self, ctx: Context) -> tuple[IPNetwork, ...]:
        """Where the entry's coverage starts and ends (for :func:`split_units`)."""
        if self.kind in (_INTERNET, _VNET):
            return ctx.vnet or PRIVATE_RANGES
        return self.networks


def parse_address(entry: str, ctx: Context, *, field_name: str, source: str) -> AddressEntry:
    """Parse an address entry once; a range mixing families or something that starts
    like an address and is not one raises :class:`NetworkInputError` naming
    ``field_name``."""
    e = entry.strip()
    low = e.lower()
    if low in ("*", "any"):
        return AddressEntry(e, _ANY, (), field_name)
    if low == "internet":
        return AddressEntry(e, _INTERNET, (), field_name)
    if low == "virtualnetwork":
        return AddressEntry(e, _VNET, (), field_name)
    if low == "azureloadbalancer":
        return AddressEntry(e, _NEVER, (), field_name)
    if any(c.isdigit() for c in e[:1]) or ":" in e:
        span = _range(e)
        if span is not None:
            lo, hi = span
            if lo.version != hi.version:
                raise NetworkInputError(f"{e!r} mixes IPv4 and IPv6", source=source,
                                        field=field_name)
            if lo > hi:  # type: ignore[operator]
                return AddressEntry(e, _NEVER, (), field_name)
            return AddressEntry(e, _PREFIXES,
                                tuple(ipaddress.summarize_address_range(lo, hi)), field_name)
        try:
            net = ipaddress.ip_network(e, strict=False)
        except ValueError as exc:  # starts like an address but is not one
            raise NetworkInputError(f"{e!r} is not an IPv4 or IPv6 CIDR ({exc})",
                                    source=source, field=field_name) from None
        return AddressEntry(e, _PREFIXES, (net,), field_name)
    prefixes = ctx.tag_prefixes(e)
    if prefixes is None:
        return AddressEntry(e, _UNKNOWN_TAG, (), field_name)
    return AddressEntry(e, _PREFIXES, prefixes, field_name)


def match_address(
    entry: str, unit: IPNetwork, ctx: Context, *, field_name: str, source: str
) -> str:
    """Does address entry ``entry`` (``*``, a CIDR, an address, a range, a tag) cover
    ``unit``?  Returns a :class:`Match` value."""
    return parse_address(entry, ctx, field_name=field_name, source=source).match(unit, ctx)


def match_source(entry: str | AddressEntry, ctx: Context, *, field_name: str, source: str,
                 unit: IPNetwork | None = None) -> str:
    """Does a source entry cover the VM?

    The VM's source address has the family of the destination ``unit`` it connects
    to.  Unknown (:data:`Match.UNKNOWN`, which the evaluators count for a Deny and
    never for an Allow) when the entry is a prefix and the VM's address of that
    family was not given: a ``--vm-ip`` of the other family says nothing about it
    (an IPv4 source prefix never covers IPv6 traffic, but whether an IPv6 prefix
    holds the VM's IPv6 address is unknown), and a warning says so.  Unknown too
    for a service tag the document does not define, whatever the VM's address."""
    parsed = entry if isinstance(entry, AddressEntry) else parse_address(
        entry, ctx, field_name=field_name, source=source)
    if parsed.kind == _UNKNOWN_TAG:
        # unknown whatever the VM's address: the tag's addresses are not known
        return parsed.unknown_tag(ctx)
    if parsed.kind in (_ANY, _VNET):
        return Match.YES
    if parsed.kind == _PREFIXES and len(parsed.networks) == 1 \
            and parsed.networks[0].prefixlen == 0:
        # every address of one family (0.0.0.0/0, ::/0)
        family = parsed.networks[0].version
        return Match.YES if unit is None or unit.version == family else Match.NO
    if unit is None:
        vm = ctx.vm_ips[0] if len(ctx.vm_ips) == 1 else None
    else:
        if parsed.kind == _PREFIXES and all(n.version != unit.version for n in parsed.networks):
            return Match.NO  # no address of the traffic's family: whatever the VM's is
        vm = ctx.vm_address(unit.version)
        if vm is None and ctx.vm_ips:
            given = ", ".join(str(a) for a in ctx.vm_ips)
            ctx.warn(
                f"--vm-ip {given} is not an IPv{unit.version} address: the VM's source "
                f"address for IPv{unit.version} traffic is unknown, so a rule limited to "
                "source addresses is assumed to match a Deny and not an Allow (give "
                f"--vm-ip once more with the VM's IPv{unit.version} address)"
            )
    if vm is None:
        return Match.UNKNOWN
    return parsed.match(ipaddress.ip_network(vm), ctx)


def parse_ports(entries: tuple[str, ...], *, field_name: str,
                source: str) -> tuple[tuple[int, int], ...]:
    """``*``, ``N`` or ``N-M`` entries as (first, last) ranges, parsed once."""
    out: list[tuple[int, int]] = []
    for entry in entries:
        e = entry.strip()
        if e in ("*", "Any", "any"):
            out.append((0, 65535))
            continue
        lo, sep, hi = e.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise NetworkInputError(f"{entry!r} is not *, N or N-M", source=source,
                                    field=field_name) from None
        if not 0 <= first <= last <= 65535:
            raise NetworkInputError(f"{entry!r} is outside 0-65535", source=source,
                                    field=field_name)
        out.append((first, last))
    return tuple(out)


def match_ports(entries: tuple[str, ...], port: int, *, field_name: str, source: str) -> bool:
    """Does any of ``*``, ``N`` or ``N-M`` cover ``port``?"""
    return any(first <= port <= last
               for first, last in parse_ports(entries, field_name=field_name, source=source))


# --- fail closed: rule parts the file cannot tell -------------------------------------
#
# The NSG and Azure Firewall evaluators share these three steps.  Each of the first two
# answers None when the rule surely does not match (the caller stops), () when the
# part surely matches, or what is unknown about it in words; :func:`fail_closed` turns
# the unknowns into the verdict.  One place, so both evaluators fail closed alike
# and say so in the same words.


def match_destinations(entries: Sequence[AddressEntry], unit: IPNetwork,
                       ctx: Context) -> tuple[bool, tuple[str, ...]]:
    """(whether an entry surely covers ``unit``, the service tags that may): the
    destination addresses of one rule, for :func:`destination_unknowns`.  A tag the
    document does not define may hold any address, so it is returned as unknown
    rather than taken as not matching."""
    tags: list[str] = []
    for entry in entries:
        found = entry.match(unit, ctx)
        if found == Match.YES:
            return True, ()
        if found == Match.UNKNOWN:
            tags.append(entry.text)
    return False, tuple(dict.fromkeys(tags))


def _tags_phrase(tags: Sequence[str]) -> str:
    """``service tag 'A'`` or ``service tags 'A', 'B'``."""
    names = ", ".join(repr(t) for t in tags)
    return f"service tag {names}" if len(tags) == 1 else f"service tags {names}"


def destination_unknowns(matched: bool, groups: tuple[str, ...], groups_name: str, *,
                         tags: Sequence[str] = ()) -> tuple[str, ...] | None:
    """The destination part: ``matched`` by the rule's addresses or names, else
    unknown if the rule also names ``groups`` whose members the file does not hold
    (NSG destination application security groups, Azure Firewall
    ``destinationIpGroups``) or service ``tags`` the document does not define
    (:func:`match_destinations`), else no match."""
    if matched:
        return ()
    unknown: list[str] = []
    if groups:
        unknown.append(f"whether the destination is in its {groups_name}")
    if tags:
        unknown.append(f"whether the destination is in {_tags_phrase(tags)}")
    return tuple(unknown) or None


def source_unknowns(sources: Sequence[AddressEntry], unit: IPNetwork, ctx: Context, *,
                    groups: tuple[str, ...], groups_name: str) -> tuple[str, ...] | None:
    """The source part for traffic to ``unit``: matched if a source entry covers the
    VM; else unknown if the rule names source ``groups`` (membership not in the
    file), a service tag the document does not define, or an entry that may hold
    the VM's address that was not given; else no match (the VM is outside every
    source).  Every entry is checked, so each one's warnings are given."""
    src = [match_source(s, ctx, field_name=s.field_name, source="", unit=unit)
           for s in sources]
    if Match.YES in src:
        return ()
    tags = tuple(dict.fromkeys(s.text for s in sources if s.is_unknown_tag))
    in_tags = (f"whether the VM is in {_tags_phrase(tags)}",) if tags else ()
    if groups:
        return (f"whether the VM is in its {groups_name}", *in_tags)
    if any(m == Match.UNKNOWN and not s.is_unknown_tag for s, m in zip(sources, src, strict=True)):
        return (*in_tags, "the VM's address (give --vm-ip)")
    return in_tags or None


def fail_closed(unknown: Sequence[str], *, deny: bool, who: str,
                ctx: Context) -> tuple[bool, str]:
    """(matches, the assumption in words) for a rule matching but for ``unknown``.

    Nothing unknown: it matches, nothing said.  Otherwise a Deny is assumed to match
    and an Allow not to (what cannot be known must never let traffic through), and
    a warning naming the rule (``who``) says so."""
    if not unknown:
        return True, ""
    what = " and ".join(unknown)
    said = (f"{what} unknown; assumed to match this Deny" if deny
            else f"{what} unknown; assumed not to match this Allow")
    ctx.warn(f"{who}: {said}")
    return deny, said
