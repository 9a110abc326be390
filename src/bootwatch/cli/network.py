"""``bootwatch network``: the service tag, egress rules, and why traffic is blocked.

SOURCE (``--from``) is a service base URL, whose ``/servicetags`` is fetched, or a
file holding a ServiceTags document (bootwatch's, or Azure's own weekly file).
Bad input (a malformed file, an unknown format, a CIDR or URL that does not parse)
is one line naming the file, line or field, and exit 2.  ``explain`` exits 0 when
attestation traffic passes, 1 when it is blocked.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import click

from bootwatch.errors import NetworkInputError, TransportError
from bootwatch.net.rules import (
    NftChainRef,
    RuleFormat,
    RuleOptions,
    generate_nftables_fix,
    generate_rules,
)
from bootwatch.net.servicetag import (
    MAX_DOCUMENT_BYTES,
    ServiceTagDocument,
    decode_document,
    encode_document,
    parse_fqdn,
    parse_prefix,
)
from bootwatch.tlsverify import tls_verify

__all__ = [
    "EXIT_ALLOWED",
    "EXIT_DENIED",
    "EXPLAIN_FORMATS",
    "command",
    "explain_cmd",
    "fqdns_cmd",
    "load_source",
    "remediation_cmd",
    "rule_options",
    "rules_cmd",
    "service_tag_cmd",
]

EXIT_ALLOWED = 0
EXIT_DENIED = 1
EXPLAIN_FORMATS = ("nsg-json", "azure-firewall", "nftables")


def _printable(text: str) -> str:
    """Names from files go to a terminal: no control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)


def load_source(source: str, ca: Path | None) -> ServiceTagDocument:
    """The document from a URL (``SOURCE/servicetags``) or a file."""
    if source.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        import httpx

        parts = urlsplit(source)
        if not parts.hostname:
            raise NetworkInputError(f"{source!r} has no host", field="--from")
        base = source.rstrip("/")
        url = base if base.endswith("/servicetags") else base + "/servicetags"
        verify = tls_verify(str(ca) if ca is not None else "")
        try:
            with httpx.Client(verify=verify, timeout=15.0, trust_env=False) as client, \
                    client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise TransportError(f"GET {url} answered HTTP {resp.status_code}",
                                         step="http_status")
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise NetworkInputError("response is too large", source=url)
        except httpx.ConnectTimeout:
            raise TransportError(f"GET {url}: no TCP connection in time",
                                 step="tcp_connect") from None
        except httpx.TimeoutException:
            raise TransportError(f"GET {url}: no answer in time", step="timeout") from None
        except httpx.ConnectError as exc:
            step = "tls" if "SSL" in str(exc) or "certificate" in str(exc) else "tcp_connect"
            raise TransportError(f"GET {url}: {exc}", step=step) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"GET {url}: {exc}", step="protocol") from None
        return decode_document(body, url)
    from bootwatch.cli._files import read_limited

    return decode_document(read_limited(source, "service-tag document", MAX_DOCUMENT_BYTES),
                           source)


def _source_options(f: Any) -> Any:
    f = click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="PEM CA bundle for an https SOURCE")(f)
    f = click.option("--from", "source", required=True, metavar="SOURCE",
                     help="service base URL (its /servicetags) or a service-tag file")(f)
    return f


@click.group("network")
def command() -> None:
    """Service tag, egress allow rules, and blocked-traffic diagnosis."""


@command.command("service-tag")
@_source_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the document here instead of stdout")
def service_tag_cmd(source: str, ca: Path | None, out: Path | None) -> None:
    """Print the ServiceTags document of SOURCE (checked, re-encoded)."""
    doc = load_source(source, ca)
    text = json.dumps(encode_document(doc), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)


@command.command("fqdns")
@_source_options
@click.option("--tag", default=None, help="tag to use (default AzureAttestation or the only one)")
def fqdns_cmd(source: str, ca: Path | None, tag: str | None) -> None:
    """Print the host names to allow, one per line."""
    doc = load_source(source, ca)
    names = doc.tag_fqdns(doc.tag(tag))
    if not names:
        raise NetworkInputError(
            "the document names no host names (start the service with --public-url "
            "https://NAME)", source=source, field="bootwatch.fqdns")
    for name in names:
        click.echo(name)


def rule_options(source_cidr: str | None, priority: int | None, name: str | None,
                 ports: tuple[int, ...], destination: str | None,
                 fqdns: tuple[str, ...]) -> RuleOptions:
    """RuleOptions from the command line (each value checked, the option named)."""
    use_tag = None
    if destination is not None:
        if destination not in ("tag", "prefixes"):
            raise NetworkInputError(f"{destination!r} is not tag or prefixes",
                                    field="--destination")
        use_tag = destination == "tag"
    return RuleOptions(
        source=parse_prefix(source_cidr, field="--source") if source_cidr else None,
        priority=priority,
        name=name,
        ports=ports,
        use_tag=use_tag,
        fqdns=tuple(parse_fqdn(f, field="--fqdn") for f in fqdns),
    )


def _rule_option_decorators(f: Any) -> Any:
    for opt in reversed([
        click.option("--source", "source_cidr", default=None, metavar="CIDR",
                     help="only traffic from these VMs (default any)"),
        click.option("--priority", type=int, default=None,
                     help="NSG 100-4096 / firewall collection 100-65000 (default 100)"),
        click.option("--name", default=None, help="rule name (default Allow<Tag>Outbound)"),
        click.option("--port", "ports", type=int, multiple=True,
                     help="destination port (repeatable; default the document's, else 443)"),
        click.option("--tag", default=None,
                     help="tag to use (default AzureAttestation or the only one)"),
        click.option("--destination", default=None, metavar="tag|prefixes",
                     help="NSG/firewall destination: the tag name or its prefixes "
                     "(default: the tag for AzureAttestation, prefixes otherwise)"),
        click.option("--fqdn", "fqdns", multiple=True,
                     help="host name to allow (repeatable; default the document's)"),
    ]):
        f = opt(f)
    return f


@command.command("rules")
@click.option("--format", "fmt", required=True, metavar="F",
              help="nsg-json, azure-firewall-network, azure-firewall-application, nftables, "
              "iptables, ip6tables or squid")
@click.option("--into", "into", multiple=True, metavar="FAMILY:TABLE:CHAIN",
              help="nftables only: insert the rules first in this existing output chain of "
              "yours (repeatable; each base chain on the hook gives its own verdict, so name "
              "every chain that drops) instead of declaring inet filter output")
@_source_options
@_rule_option_decorators
def rules_cmd(fmt: str, into: tuple[str, ...], source: str, ca: Path | None,
              source_cidr: str | None, priority: int | None, name: str | None,
              ports: tuple[int, ...], tag: str | None, destination: str | None,
              fqdns: tuple[str, ...]) -> None:
    """Write egress allow rules for attestation traffic in format F."""
    rule_format = RuleFormat.parse(fmt)
    options = rule_options(source_cidr, priority, name, ports, destination, fqdns)
    if into and rule_format is not RuleFormat.NFTABLES:
        raise NetworkInputError("--into applies to --format nftables only", field="--into")
    chains = tuple(_chain_ref(c) for c in into)
    doc = load_source(source, ca)
    if chains:
        click.echo(generate_nftables_fix(doc, chains, options, tag_name=tag), nl=False)
        return
    click.echo(generate_rules(doc, rule_format, options, tag_name=tag), nl=False)


def _chain_ref(text: str) -> NftChainRef:
    """``FAMILY:TABLE:CHAIN`` (generate_nftables_fix checks the family and the names)."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise NetworkInputError(f"{_printable(text)} is not FAMILY:TABLE:CHAIN "
                                "(for example inet:filter:output)", field="--into")
    return NftChainRef(*parts)


@command.command("remediation")
@click.option("--hop", required=True,
              help="the failed hop: dns, proxy_connect, tcp_connect, tls, http_status, timeout")
@click.option("--format", "formats", multiple=True, metavar="F",
              help="rule format to include (repeatable; default nsg-json, nftables, squid)")
@_source_options
@_rule_option_decorators
def remediation_cmd(hop: str, formats: tuple[str, ...], source: str, ca: Path | None,
                    source_cidr: str | None, priority: int | None, name: str | None,
                    ports: tuple[int, ...], tag: str | None, destination: str | None,
                    fqdns: tuple[str, ...]) -> None:
    """Print the "Allow outbound attestation traffic" remediation for a failed hop."""
    from bootwatch.net.remediation import DEFAULT_FORMATS, remediation_for
    from bootwatch.protocol.health import FailedHop

    try:
        failed = FailedHop(hop)
    except ValueError:
        raise NetworkInputError(
            f"{hop!r} is not one of {', '.join(h.value for h in FailedHop)}", field="--hop"
        ) from None
    chosen = tuple(RuleFormat.parse(f) for f in formats) or DEFAULT_FORMATS
    options = rule_options(source_cidr, priority, name, ports, destination, fqdns)
    result = remediation_for(load_source(source, ca), failed, chosen, options, tag_name=tag)
    if result is None:
        click.echo("not a network problem (the TPM, the event log or the agent failed)")
        return
    click.echo(f"{result.title}\n")
    click.echo(result.text, nl=False)


@command.command("explain")
@click.option("--rules", "rules_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="the rule set: an NSG (az network nsg show, or a list of rules), an "
              "Azure Firewall (az network firewall show) or an nftables file")
@click.option("--format", "fmt", default="nsg-json", show_default=True,
              help="nsg-json, azure-firewall or nftables")
@click.option("--to", "to", required=True, metavar="URL_OR_IP[:PORT]",
              help="where attestation traffic goes")
@click.option("--from", "source", default=None, metavar="SOURCE",
              help="service-tag document (URL or file): expands tags, names hosts")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--vm-ip", "vm_ips", multiple=True, metavar="IP",
              help="the VM's address (source of the traffic); give it twice, IPv4 and "
              "IPv6, for a dual-stack VM")
@click.option("--vnet", "vnets", multiple=True, metavar="CIDR",
              help="the virtual network's prefixes (VirtualNetwork; default private ranges)")
@click.option("--tag", default=None, help="tag of the document the traffic goes to")
@click.option("--json", "as_json", is_flag=True, help="print the verdict as JSON")
@click.pass_context
def explain_cmd(ctx: click.Context, rules_file: Path, fmt: str, to: str, source: str | None,
                ca: Path | None, vm_ips: tuple[str, ...], vnets: tuple[str, ...], tag: str | None,
                as_json: bool) -> None:
    """Does attestation traffic pass RULES?  Exit 0 allowed, 1 denied, 2 bad input."""
    from bootwatch.cli._files import read_limited
    from bootwatch.net.matching import Context
    from bootwatch.net.target import parse_target

    if fmt not in EXPLAIN_FORMATS:
        raise NetworkInputError(f"unknown format {fmt!r} (one of {', '.join(EXPLAIN_FORMATS)})",
                                field="--format")
    target = parse_target(to)
    vm_addresses = []
    for vm_ip in vm_ips:
        try:
            vm_addresses.append(ipaddress.ip_address(vm_ip))
        except ValueError:
            raise NetworkInputError(f"{vm_ip!r} is not an IP address", field="--vm-ip") from None
    vnet = tuple(parse_prefix(v, field="--vnet") for v in vnets)
    doc = load_source(source, ca) if source else None
    if doc is not None and tag is not None:
        doc.tag(tag)  # names the tags when it is not there
    data = read_limited(rules_file, "rules file", 16 * 1024 * 1024)
    # one address per family (Context refuses two of one family)
    context = Context(doc, target, None, vnet, tag, more_vm_ips=tuple(vm_addresses))
    name = str(rules_file)
    if fmt == "nsg-json":
        result = _explain_nsg(data, name, context, tag)
    elif fmt == "azure-firewall":
        result = _explain_firewall(data, name, context, tag)
    else:
        result = _explain_nftables(rules_file, context, tag)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_explanation(result)
    ctx.exit(EXIT_ALLOWED if result["allowed"] else EXIT_DENIED)


def _fix_document(ctx_doc: ServiceTagDocument | None, target: Any) -> ServiceTagDocument:
    """The document the fix is generated from: the published one, else the target."""
    from bootwatch.net.servicetag import build_document

    if ctx_doc is not None:
        if target.address is None:
            return ctx_doc
        net = ipaddress.ip_network(target.address)
        if any(net.version == p.version and net.subnet_of(p)  # type: ignore[arg-type]
               for v in ctx_doc.values for p in v.address_prefixes):
            return ctx_doc
    net = ipaddress.ip_network(target.address)
    return build_document("AttestationService", (net,), 1, ports=(target.port,))


def _explain_nsg(data: bytes, name: str, context: Any, tag: str | None) -> dict[str, Any]:
    from bootwatch.net.nsg import evaluate_nsg, free_priority_below, parse_nsg

    rules, notes = parse_nsg(data, name)
    ev = evaluate_nsg(rules, context, name)
    result: dict[str, Any] = {
        "allowed": ev.allowed,
        "rule": {"name": ev.rule.name, "priority": ev.rule.priority},
        "format": "nsg-json",
        "to": str(context.target),
        "where": ev.rule.where,
        "destinations": [
            {"prefix": str(u.destination), "allowed": u.allowed,
             "rule": {"name": u.rule.name, "priority": u.rule.priority}, "notes": list(u.notes)}
            for u in ev.units
        ],
        "added_default_rules": notes,
        "warnings": list(ev.warnings),
        "fix": None,
    }
    if not ev.allowed:
        doc = _fix_document(context.document, context.target)
        families = 1
        if doc is context.document:
            fix_tag = doc.tag(tag)
            families = len({p.version for p in fix_tag.address_prefixes}) or 1
        priority = free_priority_below(ev.rules, ev.rule.priority, families)
        if priority is None:
            result["fix_note"] = (f"no free priority below {ev.rule.priority}: change or remove "
                                  f"{ev.rule.name}")
        else:
            result["fix"] = json.loads(generate_rules(
                doc, RuleFormat.NSG_JSON,
                RuleOptions(priority=priority, ports=(context.target.port,)),
                tag_name=tag if doc is context.document else None))
            result["fix_format"] = "nsg-json"
    return result


def _explain_firewall(data: bytes, name: str, context: Any, tag: str | None) -> dict[str, Any]:
    from bootwatch.net.firewall import evaluate_firewall, parse_firewall

    rules = parse_firewall(data, name)
    ev = evaluate_firewall(rules, context, name)
    priority = None if ev.rule.kind == "default" else ev.rule.priority
    result: dict[str, Any] = {
        "allowed": ev.allowed,
        "rule": {"name": ev.rule.label if ev.rule.kind != "default" else ev.rule.name,
                 "priority": priority},
        "format": "azure-firewall",
        "to": str(context.target),
        "where": ev.rule.where,
        "destinations": [
            {"prefix": str(u), "allowed": r.action == "Allow",
             "rule": {"name": r.label, "priority": None if r.kind == "default" else r.priority}}
            for u, r in ev.per_destination
        ],
        "warnings": list(ev.warnings),
        "fix": None,
    }
    if not ev.allowed:
        used = {r.priority for r in rules if r.kind == "network"}
        limit = min(ev.rule.priority, 65001)
        free = next((p for p in range(min(limit - 1, 65000), 99, -1) if p not in used), None)
        if free is None:
            result["fix_note"] = f"no free collection priority below {limit}"
        else:
            doc = _fix_document(context.document, context.target)
            result["fix"] = json.loads(generate_rules(
                doc, RuleFormat.AZURE_FIREWALL_NETWORK,
                RuleOptions(priority=free, ports=(context.target.port,)),
                tag_name=tag if doc is context.document else None))
            result["fix_format"] = "azure-firewall-network"
    return result


def _explain_nftables(rules_file: Path, context: Any, tag: str | None) -> dict[str, Any]:
    """Probe one address of each destination piece.

    A host name stands for the tag's prefixes; a probe tests one address, so the
    prefixes are first cut wherever an address, prefix or range of the ruleset
    begins or ends (as the NSG and firewall evaluators cut at their rules'
    entries).  Each piece is then inside or outside every one of them, and its
    first address speaks for all of it: a ``drop`` of one address inside a /30 is
    found instead of hidden behind the /30's first address."""
    from bootwatch.net.matching import cut_units, destination_units
    from bootwatch.net.nftprobe import (
        MAX_PROBES,
        probe_nftables_many,
        probe_source,
        ruleset_prefixes,
    )

    if not rules_file.is_file():
        raise NetworkInputError("no such file", source=str(rules_file))
    units = destination_units(context)
    if context.target.address is None:  # an address target is one /32 or /128 already
        # one probe per piece: refuse past the probe cap before cutting any further
        units = cut_units(units, ruleset_prefixes(rules_file), limit=MAX_PROBES)
    per: list[dict[str, Any]] = []
    first_denied = None
    addresses = [u.network_address for u in units]
    verdicts = probe_nftables_many(rules_file, addresses, context.target.port,
                                   vm_ips=context.vm_ips)
    if context.vm_ips:
        for version in sorted({a.version for a in addresses}):
            if context.vm_address(version) is None:
                context.warn(
                    f"no IPv{version} --vm-ip: the IPv{version} probes came from "
                    f"{probe_source(version)}, so a rule matching the VM's IPv{version} "
                    "source address was not tested (give --vm-ip once per family)")
    for unit, verdict in zip(units, verdicts, strict=True):
        per.append({"prefix": str(unit), "allowed": verdict.allowed,
                    "rule": {"name": verdict.name, "priority": None}})
        if not verdict.allowed and first_denied is None:
            first_denied = verdict
    deciding = first_denied or verdicts[0]
    result: dict[str, Any] = {
        "allowed": first_denied is None,
        "rule": {"name": deciding.name, "priority": None},
        "format": "nftables",
        "to": str(context.target),
        "where": f"{deciding.table} {deciding.chain}".strip(),
        "rule_text": deciding.rule,
        "destinations": per,
        "trace": list(deciding.trace),
        "warnings": list(context.warnings),
        "fix": None,
    }
    if first_denied is not None:
        _nftables_fix(result, rules_file, addresses, verdicts, context, tag)
    return result


def _nftables_fix(result: dict[str, Any], rules_file: Path, addresses: list[Any],
                  verdicts: Any, context: Any, tag: str | None) -> None:
    """The fix for the chains that dropped, not a fixed ``inet filter output``.

    An accept in one base chain does not override a drop in another, so the rule
    goes first into each chain a probe was dropped in (``NftVerdict.table`` and
    ``chain``).  When a chain dropped by its policy, every other output base chain
    with policy drop needs the rule too (the trace stops at the first drop and
    names one); those are read from the loaded ruleset and named."""
    from bootwatch.net.nftprobe import output_drop_chains

    chains: dict[NftChainRef, None] = {}
    by_policy = False
    versions: set[int] = set()
    for address, verdict in zip(addresses, verdicts, strict=True):
        if verdict.allowed:
            continue
        family, _, table = verdict.table.partition(" ")
        chains[NftChainRef(family, table, verdict.chain)] = None
        by_policy = by_policy or verdict.rule.startswith("policy ")
        versions.add(address.version)
    # an ip (ip6) table sees IPv4 (IPv6) traffic only
    seen_by = {"inet": versions, "ip": versions & {4}, "ip6": versions & {6}}
    notes = []
    if by_policy:
        dropping = [NftChainRef(*c) for c in output_drop_chains(rules_file)
                    if seen_by.get(c[0])]
        for ref in dropping:
            chains.setdefault(ref, None)
        if len(dropping) > 1:
            notes.append("several output base chains drop by policy ("
                         + ", ".join(str(c) for c in dropping)
                         + "): every one of them needs the rule")
    notes.append("after loading the fix, run explain again: a later chain may drop too")
    doc = _fix_document(context.document, context.target)
    try:
        result["fix"] = generate_nftables_fix(
            doc, tuple(chains), RuleOptions(ports=(context.target.port,)),
            tag_name=tag if doc is context.document else None)
    except NetworkInputError as exc:
        notes.insert(0, f"no fix written: {exc}")
    else:
        result["fix_format"] = "nftables"
    result["fix_note"] = "; ".join(notes)


def _print_explanation(result: dict[str, Any]) -> None:
    rule = result["rule"]
    prio = f", priority {rule['priority']}" if rule["priority"] is not None else ""
    where = f", {result['where']}" if result.get("where") else ""
    verdict = "ALLOWED" if result["allowed"] else "DENIED"
    click.echo(f"{verdict}: TCP to {result['to']} is decided by {_printable(rule['name'])}"
               f"{prio}{_printable(where)}")
    if result.get("rule_text") and result["rule_text"] != rule["name"]:
        click.echo(f"  rule: {_printable(result['rule_text'])}")
    if len(result["destinations"]) > 1:
        for d in result["destinations"]:
            state = "allowed" if d["allowed"] else "denied"
            click.echo(f"  {d['prefix']}: {state} by {_printable(d['rule']['name'])}")
    for note in result.get("added_default_rules", []):
        click.echo(f"  note: {note}")
    for warning in result["warnings"]:
        click.echo(f"  warning: {_printable(warning)}")
    if result["fix"] is not None:
        fix = result["fix"]
        text = fix if isinstance(fix, str) else json.dumps(fix, indent=2) + "\n"
        click.echo(f"fix ({result['fix_format']}): add this rule\n{text}", nl=False)
    if result.get("fix_note"):
        click.echo(f"fix: {_printable(result['fix_note'])}")
