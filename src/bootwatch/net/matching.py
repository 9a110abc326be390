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
- a service tag the document does not define is reported as a warning and does
  not match;
- an unknown source (no ``--vm-ip``) or a rule limited to source ports is assumed
  to match a Deny and not an Allow (fail closed), and said so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from bootwatch.errors import NetworkInputError
from bootwatch.net.servicetag import IPNetwork, ServiceTagDocument, parse_prefix
from bootwatch.net.target import IPAddress, Target

__all__ = [
    "PRIVATE_RANGES",
    "Context",
    "Match",
    "cut_units",
    "destination_units",
    "host_matches",
    "match_address",
    "match_ports",
    "match_source",
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
    says which one a host-name target stands for (None: the document's default)."""

    document: ServiceTagDocument | None
    target: Target
    vm_ip: IPAddress | None = None
    vnet: tuple[IPNetwork, ...] = ()
    tag: str | None = None
    warnings: list[str] = field(default_factory=list)

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


def split_units(
    units: tuple[IPNetwork, ...], entries: list[str], ctx: Context
) -> tuple[IPNetwork, ...]:
    """``units`` cut at every prefix boundary of the address ``entries`` that falls
    inside one of them.

    A rule entry matches a unit only when the whole unit lies inside it, so an entry
    covering part of a tag prefix (a Deny of one address of a /30 the host name
    may resolve to) would otherwise match nothing and the traffic look allowed.
    After the cut, every piece is either inside or outside each entry, and each
    piece gets its own verdict.  An address target (/32, /128) is never cut."""
    bounds: set[IPNetwork] = set()
    for entry in entries:
        bounds.update(_entry_networks(entry, ctx))
    return cut_units(units, bounds)


def cut_units(units: tuple[IPNetwork, ...], bounds: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """``units`` cut at every prefix of ``bounds`` that lies strictly inside one.

    The shared half of :func:`split_units`, for rule sets whose addresses come as
    prefixes already (the nftables evaluator reads them from the loaded ruleset)."""
    bounds = set(bounds)
    out: list[IPNetwork] = []
    for unit in units:
        pieces = [unit]
        for bound in bounds:
            if bound.version != unit.version or bound.prefixlen <= unit.prefixlen:
                continue
            next_pieces: list[IPNetwork] = []
            for piece in pieces:
                if piece != bound and bound.subnet_of(piece):  # type: ignore[arg-type]
                    next_pieces.extend(piece.address_exclude(bound))  # type: ignore[arg-type]
                    next_pieces.append(bound)
                else:
                    next_pieces.append(piece)
            pieces = next_pieces
        out.extend(sorted(pieces))
    return tuple(out)


def _entry_networks(entry: str, ctx: Context) -> tuple[IPNetwork, ...]:
    """The prefixes an address entry stands for (nothing for ``*`` or what does not
    parse; :func:`match_address` reports those)."""
    e = entry.strip()
    low = e.lower()
    if low in ("*", "any", "azureloadbalancer"):
        return ()
    if low in ("internet", "virtualnetwork"):
        return ctx.vnet or PRIVATE_RANGES
    if any(c.isdigit() for c in e[:1]) or ":" in e:
        span = _range(e)
        if span is not None:
            lo, hi = span
            if lo.version != hi.version or lo > hi:  # type: ignore[operator]
                return ()
            return tuple(ipaddress.summarize_address_range(lo, hi))
        try:
            return (ipaddress.ip_network(e, strict=False),)
        except ValueError:
            return ()
    return ctx.tag_prefixes(e) or ()


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


def match_address(
    entry: str, unit: IPNetwork, ctx: Context, *, field_name: str, source: str
) -> str:
    """Does address entry ``entry`` (``*``, a CIDR, an address, a range, a tag) cover
    ``unit``?  Returns a :class:`Match` value."""
    e = entry.strip()
    low = e.lower()
    if low in ("*", "any"):
        return Match.YES
    if low == "internet":
        return Match.NO if ctx.is_vnet(unit) else Match.YES
    if low == "virtualnetwork":
        return Match.YES if ctx.is_vnet(unit) else Match.NO
    if low == "azureloadbalancer":
        return Match.NO
    if any(c.isdigit() for c in e[:1]) or ":" in e:
        span = _range(e)
        if span is not None:
            lo, hi = span
            if lo.version != hi.version:
                raise NetworkInputError(f"{e!r} mixes IPv4 and IPv6", source=source,
                                        field=field_name)
            first, last = unit.network_address, unit.broadcast_address
            if lo.version != unit.version:
                return Match.NO
            return Match.YES if lo <= first and last <= hi else Match.NO  # type: ignore[operator]
        try:
            net = ipaddress.ip_network(e, strict=False)
        except ValueError:
            net = None
        if net is not None:
            if net.version != unit.version:
                return Match.NO
            return Match.YES if unit.subnet_of(net) else Match.NO  # type: ignore[arg-type]
        # starts like an address but is not one
        parse_prefix(e, field=field_name, source=source)
    prefixes = ctx.tag_prefixes(e)
    if prefixes is None:
        ctx.warn(
            f"service tag {e!r} ({field_name}) is not in the service-tag document: "
            "treated as not matching"
        )
        return Match.NO
    return (
        Match.YES
        if any(unit.version == p.version and unit.subnet_of(p) for p in prefixes)  # type: ignore[arg-type]
        else Match.NO
    )


def match_source(entry: str, ctx: Context, *, field_name: str, source: str,
                 unit: IPNetwork | None = None) -> str:
    """Does a source entry cover the VM?  Unknown without ``--vm-ip`` for a prefix."""
    low = entry.strip().lower()
    if low in ("*", "any", "virtualnetwork"):
        return Match.YES
    if low in ("0.0.0.0/0", "::/0"):
        # every address of one family; the VM's source address has the family of the
        # destination ``unit`` it connects to
        family = 4 if low == "0.0.0.0/0" else 6
        return Match.YES if unit is None or unit.version == family else Match.NO
    if ctx.vm_ip is None:
        return Match.UNKNOWN
    return match_address(entry, ipaddress.ip_network(ctx.vm_ip), ctx, field_name=field_name,
                         source=source)


def match_ports(entries: tuple[str, ...], port: int, *, field_name: str, source: str) -> bool:
    """Does any of ``*``, ``N`` or ``N-M`` cover ``port``?"""
    for entry in entries:
        e = entry.strip()
        if e in ("*", "Any", "any"):
            return True
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
        if first <= port <= last:
            return True
    return False
