"""The recommendation for blocked attestation traffic, with generated rules.

The agent's health report names the network hop that failed
(:class:`~bootwatch.protocol.health.FailedHop`); the monitor turns such a platform
error into the recommendation "Allow outbound attestation traffic" and calls
:func:`remediation_for` for its text.  Pure: the caller passes the service-tag
document it already has (``GET /servicetags`` of the service the VM reports to,
or a file) and the formats the operator chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bootwatch.errors import BootwatchError
from bootwatch.net.rules import RuleFormat, RuleOptions, generate_rules, resolve_options
from bootwatch.net.servicetag import ServiceTagDocument
from bootwatch.protocol.health import FailedHop

__all__ = [
    "DEFAULT_FORMATS",
    "RECOMMENDATION_TITLE",
    "GeneratedRules",
    "Remediation",
    "remediation_for",
]

RECOMMENDATION_TITLE: Final = "Allow outbound attestation traffic"
#: when the operator chose nothing: the NSG rule Azure's docs describe, the host's own
#: firewall and the proxy
DEFAULT_FORMATS: Final = (RuleFormat.NSG_JSON, RuleFormat.NFTABLES, RuleFormat.SQUID)

_WHY: Final = {
    FailedHop.DNS: (
        "The VM could not resolve the attestation service's host name. Allow DNS "
        "(UDP and TCP 53) from the VM to its resolver, and make sure the names below "
        "resolve there."
    ),
    FailedHop.PROXY_CONNECT: (
        "The VM could not open a connection through its proxy to the attestation "
        "service. Allow CONNECT to the service's host names and port on the proxy (squid "
        "rules below), and outbound TCP from the VM to the proxy."
    ),
    FailedHop.TCP_CONNECT: (
        "The VM's TCP connection to the attestation service was dropped or refused: a "
        "network security group, a firewall or the VM's own packet filter blocks it. "
        "Add an outbound allow rule ahead of the blocking rule."
    ),
    FailedHop.TLS: (
        "The TLS handshake with the attestation service failed: a TLS-inspecting "
        "firewall or proxy is in the path, or the VM does not trust the service's "
        "certificate. Exempt the service's host names from TLS inspection."
    ),
    FailedHop.HTTP_STATUS: (
        "Something in the path answered with an HTTP error instead of the attestation "
        "service (a proxy's 403 is the usual case). Allow the service's host names on "
        "the proxy or firewall."
    ),
    FailedHop.TIMEOUT: (
        "The attestation service did not answer in time: packets are being dropped on "
        "the way (a firewall rule that drops silently) or the service is overloaded. "
        "Add an outbound allow rule ahead of the dropping rule."
    ),
}

#: which formats fit which hop first (the others follow in the operator's order)
_FIRST: Final = {
    FailedHop.PROXY_CONNECT: (RuleFormat.SQUID,),
    FailedHop.HTTP_STATUS: (RuleFormat.SQUID, RuleFormat.AZURE_FIREWALL_APPLICATION),
    FailedHop.TLS: (RuleFormat.AZURE_FIREWALL_APPLICATION, RuleFormat.SQUID),
}


@dataclass(frozen=True)
class GeneratedRules:
    """Rules in one format, or why they could not be written for this document."""

    format: RuleFormat
    text: str
    error: str = ""


@dataclass(frozen=True)
class Remediation:
    """The recommendation's title, the hop it is about, and its remediation text."""

    title: str
    hop: FailedHop
    summary: str
    destinations: tuple[str, ...]
    rules: tuple[GeneratedRules, ...]

    @property
    def text(self) -> str:
        """Plain text: why, what to allow, then each format's rules."""
        parts = [self.summary, "", "Allow: " + ", ".join(self.destinations)]
        for r in self.rules:
            parts.append("")
            if r.error:
                parts.append(f"[{r.format.value}] not generated: {r.error}")
            else:
                parts.append(f"[{r.format.value}]")
                parts.append(r.text.rstrip("\n"))
        return "\n".join(parts) + "\n"


def remediation_for(
    document: ServiceTagDocument,
    hop: FailedHop,
    formats: tuple[RuleFormat, ...] = DEFAULT_FORMATS,
    options: RuleOptions | None = None,
    *,
    tag_name: str | None = None,
    failed_target: str = "",
) -> Remediation | None:
    """The remediation for a failed network ``hop``; None for :attr:`FailedHop.LOCAL`
    (not a network problem).  A format the document cannot serve (for example
    application rules without host names) is listed with the reason instead."""
    if hop is FailedHop.LOCAL:
        return None
    opts = options or RuleOptions()
    resolved = resolve_options(document, opts, tag_name=tag_name)
    first = [f for f in _FIRST.get(hop, ()) if f in formats]
    ordered = tuple(dict.fromkeys([*first, *formats]))
    generated = []
    for fmt in ordered:
        try:
            generated.append(GeneratedRules(fmt, generate_rules(document, fmt, opts,
                                                                tag_name=tag_name)))
        except BootwatchError as exc:  # names what the document lacks for this format
            generated.append(GeneratedRules(fmt, "", str(exc)))
    ports = ", ".join(str(p) for p in resolved.ports)
    destinations = (
        f"service tag {resolved.tag.name}",
        *(str(p) for p in resolved.tag.address_prefixes),
        *resolved.fqdns,
        f"TCP port {ports}",
    )
    summary = _WHY[hop]
    if failed_target:
        summary = f"{summary} (failed: {hop.value} to {failed_target})"
    return Remediation(RECOMMENDATION_TITLE, hop, summary, destinations, tuple(generated))
