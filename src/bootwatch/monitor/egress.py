"""The "Allow outbound attestation traffic" remediation, from a service-tag document.

The monitor names the rules an operator must add when an agent reports a failed
network hop.  The rules are generated (``bootwatch.net``) from the attestation
service's own service-tag document: the embedded server publishes it in-process;
a separate monitor fetches it once at start-up from ``--service-url`` (the
service's ``GET /servicetags``).  Generation happens when a VM's facts change,
never with a network call inside a monitor transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from bootwatch.errors import ConfigError
from bootwatch.httpread import BodyTooLarge, read_bounded
from bootwatch.net.remediation import remediation_for
from bootwatch.net.rules import RuleFormat
from bootwatch.net.servicetag import ServiceTagDocument, decode_document
from bootwatch.protocol.health import FailedHop
from bootwatch.tlsverify import tls_verify

__all__ = ["advisor", "fetch_service_tags"]

_MAX_DOC = 1024 * 1024


def advisor(document: ServiceTagDocument,
            formats: tuple[str, ...]) -> Callable[[FailedHop, str], str]:
    """A function the monitor calls with the failed hop and target."""
    try:
        chosen = tuple(RuleFormat(f) for f in formats)
    except ValueError as exc:
        raise ConfigError(f"--egress-format: {exc}") from None

    def text(hop: FailedHop, target: str) -> str:
        rem = remediation_for(document, hop, chosen, failed_target=target)
        return rem.text if rem is not None else ""

    return text


def fetch_service_tags(service_url: str, *, ca: str = "",
                       timeout: float = 10.0) -> ServiceTagDocument:
    """The service's published document (ConfigError naming the URL when unreachable,
    larger than 1 MiB or slower than ``timeout`` in all)."""
    url = service_url.rstrip("/") + "/servicetags"
    try:
        with httpx.Client(verify=tls_verify(ca), timeout=timeout) as client:
            body = read_bounded(client, url, limit=_MAX_DOC, timeout=timeout)
    except (httpx.HTTPError, BodyTooLarge) as exc:
        raise ConfigError(f"--service-url: cannot read {url}: {exc}") from None
    return decode_document(body, url)
