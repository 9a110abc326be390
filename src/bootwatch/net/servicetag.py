"""The service-tag document: Azure's ServiceTags JSON format for bootwatch's endpoints.

Azure publishes, per cloud, a file ``{changeNumber, cloud, values: [{name, id,
properties: {changeNumber, region, regionId, platform, systemService,
addressPrefixes, networkFeatures}}]}`` (monitoring-facts section 3).  Firewall
tooling already reads that file, so the service publishes its own endpoints in the
same shape, under the tag name ``AzureAttestation`` by default (drop-in) or another
name (``Bootwatch``).  Rule generators and the NSG evaluator read it back.

The ServiceTags format has no place for host names or ports, which proxies and
application rules need, so bootwatch adds one top-level key, ``bootwatch``:
``{"fqdns": [...], "ports": [...]}``.  Consumers of Azure's format ignore unknown
top-level keys; a document without it (Azure's own file) still parses.

Everything here is pure: building, encoding, strict decoding (every bad field is
named by its JSON path) and the change-number rule.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from bootwatch.errors import NetworkInputError

__all__ = [
    "AZURE_ATTESTATION",
    "AZURE_ATTESTATION_FQDNS",
    "DEFAULT_NETWORK_FEATURES",
    "MAX_DOCUMENT_BYTES",
    "IPNetwork",
    "ServiceTag",
    "ServiceTagDocument",
    "build_document",
    "decode_document",
    "encode_document",
    "load_json",
    "next_change_number",
    "parse_fqdn",
    "parse_prefix",
    "require_printable_ascii",
    "sorted_prefixes",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: the tag Azure's docs tell operators to allow for guest attestation
AZURE_ATTESTATION: Final = "AzureAttestation"
#: what the docs say to allow when a firewall filters by name ("*.attest.azure.net",
#: Trusted Launch portal doc, monitoring-facts section 3); used only for Azure's own
#: AzureAttestation entries, which carry no host names
AZURE_ATTESTATION_FQDNS: Final = ("*.attest.azure.net",)
#: Azure's file lists these for tags usable everywhere (API, NSG, UDR, Firewall)
DEFAULT_NETWORK_FEATURES: Final = ("API", "NSG", "UDR", "FW")
#: Azure's whole public-cloud file is ~4 MB; refuse anything far larger
MAX_DOCUMENT_BYTES: Final = 32 * 1024 * 1024
_MAX_VALUES: Final = 20_000
#: Azure's public file (4.1 MB in 2026) holds an estimated 120,000 prefixes, more than the
#: 100,000 allowed before; the document's byte limit bounds the memory either way
_MAX_PREFIXES: Final = 1_000_000
# used with fullmatch only: ``$`` also matches before a final "\n", which would let
# a line break through into squid configs, nft files and firewall targets
_TAG_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,79}")
_FQDN_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class ServiceTag:
    """One entry of ``values``: a tag and the prefixes it stands for."""

    name: str
    id: str
    change_number: int
    region: str
    region_id: int
    platform: str
    system_service: str
    address_prefixes: tuple[IPNetwork, ...]
    network_features: tuple[str, ...]


@dataclass(frozen=True)
class ServiceTagDocument:
    """A whole ServiceTags document plus bootwatch's ``fqdns`` and ``ports``."""

    change_number: int
    cloud: str
    values: tuple[ServiceTag, ...]
    fqdns: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()

    def tag(self, name: str | None = None) -> ServiceTag:
        """The entry named ``name``; without a name, ``AzureAttestation`` if present,
        else the only global entry.  A :class:`NetworkInputError` lists the names."""
        if name is not None:
            for value in self.values:
                if value.name == name:
                    return value
            raise NetworkInputError(
                f"no tag {name!r} in the document (it has {_names(self.values)})", field="--tag"
            )
        for value in self.values:
            if value.name == AZURE_ATTESTATION:
                return value
        global_ = [v for v in self.values if not v.region]
        if len(global_) == 1:
            return global_[0]
        raise NetworkInputError(
            f"the document has {len(self.values)} tags; choose one with --tag "
            f"({_names(self.values)})",
            field="--tag",
        )

    def tag_fqdns(self, tag: ServiceTag) -> tuple[str, ...]:
        """Host names to allow for ``tag``: the document's own, else the documented
        ``*.attest.azure.net`` for Azure's AzureAttestation entries."""
        if self.fqdns:
            return self.fqdns
        if tag.name.split(".")[0] == AZURE_ATTESTATION:
            return AZURE_ATTESTATION_FQDNS
        return ()


def _names(values: tuple[ServiceTag, ...]) -> str:
    names = [v.name for v in values[:8]]
    more = f", ... {len(values) - 8} more" if len(values) > 8 else ""
    return ", ".join(names) + more if names else "none"


def sorted_prefixes(prefixes: list[IPNetwork] | tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
    """Deduplicated, IPv4 before IPv6, each family in address order (Azure's order)."""
    unique = set(prefixes)
    v4 = sorted(p for p in unique if isinstance(p, ipaddress.IPv4Network))
    v6 = sorted(p for p in unique if isinstance(p, ipaddress.IPv6Network))
    return (*v4, *v6)


def parse_prefix(text: str, *, field: str, source: str | None = None) -> IPNetwork:
    """A CIDR (a bare address means /32 or /128); host bits set is an error (strict)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise NetworkInputError(
            f"{text!r} is not an IPv4 or IPv6 CIDR ({exc})", field=field, source=source
        ) from None


def require_printable_ascii(text: str, *, field: str, source: str | None = None,
                            what: str = "a name") -> None:
    """Refuse a name holding anything but printable ASCII (space to ``~``).

    Names end up, one per line, in squid configs, nft and iptables files, the
    ``fqdns`` output and Azure Firewall ``targetFqdns``: a line break or another
    control character would start a line the tool obeys, or hide text on a terminal.
    The error names the field and the first bad character's position."""
    for i, c in enumerate(text):
        if not " " <= c <= "~":
            raise NetworkInputError(
                f"{text!r} is not {what}: character {i + 1} (U+{ord(c):04X}) is not "
                "printable ASCII", field=field, source=source)


def parse_fqdn(text: str, *, field: str, source: str | None = None) -> str:
    """A host name, optionally with a leading ``*.`` wildcard; lowercased.  Anything
    but printable ASCII is refused before the surrounding spaces are stripped, so a
    trailing line break is an error rather than silently dropped."""
    require_printable_ascii(text, field=field, source=source, what="a host name")
    name = text.strip().lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    labels = bare.split(".")
    if not bare or len(name) > 253 or not all(_FQDN_LABEL_RE.fullmatch(lab) for lab in labels):
        raise NetworkInputError(f"{text!r} is not a host name", field=field, source=source)
    return name


def next_change_number(
    previous_prefixes: tuple[IPNetwork, ...] | None,
    previous_number: int | None,
    prefixes: tuple[IPNetwork, ...],
) -> int:
    """The change number for ``prefixes``: 1 the first time, unchanged while the
    prefix set is the same, one more when it differs (Azure increments it on change)."""
    if previous_number is None or previous_prefixes is None:
        return 1
    if set(previous_prefixes) == set(prefixes):
        return previous_number
    return previous_number + 1


def build_document(
    tag_name: str,
    prefixes: tuple[IPNetwork, ...],
    change_number: int,
    *,
    fqdns: tuple[str, ...] = (),
    ports: tuple[int, ...] = (),
    cloud: str = "Public",
) -> ServiceTagDocument:
    """The document for one global tag (region "" and regionId 0, as Azure writes
    ``AzureAttestation``, which "can be regional: No")."""
    require_printable_ascii(tag_name, field="tag name", what="a tag name")
    if not _TAG_NAME_RE.fullmatch(tag_name):
        raise NetworkInputError(
            f"{tag_name!r}: a tag name is a letter then up to 79 of A-Z a-z 0-9 _ . -",
            field="tag name",
        )
    if change_number < 1:
        raise NetworkInputError("must be at least 1", field="changeNumber")
    tag = ServiceTag(
        name=tag_name,
        id=tag_name,
        change_number=change_number,
        region="",
        region_id=0,
        platform="Azure",
        system_service=tag_name,
        address_prefixes=sorted_prefixes(prefixes),
        network_features=DEFAULT_NETWORK_FEATURES,
    )
    return ServiceTagDocument(
        change_number=change_number,
        cloud=cloud,
        values=(tag,),
        fqdns=tuple(dict.fromkeys(fqdns)),
        ports=tuple(dict.fromkeys(ports)),
    )


def encode_document(doc: ServiceTagDocument) -> dict[str, Any]:
    """The JSON object (keys and order as Azure's file)."""
    out: dict[str, Any] = {
        "changeNumber": doc.change_number,
        "cloud": doc.cloud,
        "values": [
            {
                "name": v.name,
                "id": v.id,
                "properties": {
                    "changeNumber": v.change_number,
                    "region": v.region,
                    "regionId": v.region_id,
                    "platform": v.platform,
                    "systemService": v.system_service,
                    "addressPrefixes": [str(p) for p in v.address_prefixes],
                    "networkFeatures": list(v.network_features),
                },
            }
            for v in doc.values
        ],
    }
    if doc.fqdns or doc.ports:
        out["bootwatch"] = {"fqdns": list(doc.fqdns), "ports": list(doc.ports)}
    return out


# --- decoding -----------------------------------------------------------------


class _Reader:
    """Typed field access that names the JSON path of whatever is wrong."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> NetworkInputError:
        return NetworkInputError(message, source=self.source, field=path)

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be a JSON object")
        return value

    def lst(self, value: Any, path: str, limit: int) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, "must be a JSON list")
        if len(value) > limit:
            raise self.fail(path, f"has more than {limit} entries")
        return value

    def text(self, obj: dict[str, Any], key: str, path: str, *, default: str | None = None) -> str:
        value = obj.get(key, default)
        if value is None:
            raise self.fail(f"{path}.{key}", "is required")
        if not isinstance(value, str) or len(value) > 256:
            raise self.fail(f"{path}.{key}", "must be a string of at most 256 characters")
        return value

    def number(
        self, obj: dict[str, Any], key: str, path: str, *, default: int | None = None
    ) -> int:
        """An integer; a decimal string is accepted too, because the Discovery API
        (``Microsoft.Network/serviceTags``) writes change numbers as strings."""
        value = obj.get(key, default)
        if isinstance(value, str) and value.isdecimal() and len(value) < 19:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise self.fail(f"{path}.{key}", "must be an integer >= 0")
        return value


def decode_document(data: bytes, source: str) -> ServiceTagDocument:
    """Decode a ServiceTags document (Azure's file, the Discovery API's body, or
    bootwatch's); a :class:`NetworkInputError` names ``source``, the line of a JSON
    syntax error or the JSON path of a bad field."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise NetworkInputError(
            f"larger than {MAX_DOCUMENT_BYTES} bytes: not a service-tag document", source=source
        )
    root = load_json(data, source)
    r = _Reader(source)
    top = r.obj(root, "$")
    values_raw = r.lst(top.get("values"), "values", _MAX_VALUES)
    values: list[ServiceTag] = []
    total = 0
    for i, item in enumerate(values_raw):
        path = f"values[{i}]"
        entry = r.obj(item, path)
        props = r.obj(entry.get("properties"), f"{path}.properties")
        ppath = f"{path}.properties"
        raw_prefixes = r.lst(props.get("addressPrefixes"), f"{ppath}.addressPrefixes",
                             _MAX_PREFIXES)
        total += len(raw_prefixes)
        if total > _MAX_PREFIXES:
            raise r.fail(f"{ppath}.addressPrefixes", f"more than {_MAX_PREFIXES} prefixes in all")
        prefixes = []
        for j, p in enumerate(raw_prefixes):
            if not isinstance(p, str):
                raise r.fail(f"{ppath}.addressPrefixes[{j}]", "must be a string")
            prefixes.append(parse_prefix(p, field=f"{ppath}.addressPrefixes[{j}]", source=source))
        features = r.lst(props.get("networkFeatures", []), f"{ppath}.networkFeatures", 16)
        if not all(isinstance(f, str) for f in features):
            raise r.fail(f"{ppath}.networkFeatures", "must be a list of strings")
        name = r.text(entry, "name", path)
        values.append(
            ServiceTag(
                name=name,
                id=r.text(entry, "id", path, default=name),
                change_number=r.number(props, "changeNumber", ppath, default=0),
                region=r.text(props, "region", ppath, default=""),
                region_id=r.number(props, "regionId", ppath, default=0),
                platform=r.text(props, "platform", ppath, default="Azure"),
                system_service=r.text(props, "systemService", ppath, default=""),
                address_prefixes=tuple(prefixes),
                network_features=tuple(features),
            )
        )
    fqdns: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    if "bootwatch" in top:
        extra = r.obj(top["bootwatch"], "bootwatch")
        raw_fqdns = r.lst(extra.get("fqdns", []), "bootwatch.fqdns", 256)
        fqdns = tuple(
            parse_fqdn(f, field=f"bootwatch.fqdns[{i}]", source=source)
            if isinstance(f, str)
            else _raise(r.fail(f"bootwatch.fqdns[{i}]", "must be a string"))
            for i, f in enumerate(raw_fqdns)
        )
        raw_ports = r.lst(extra.get("ports", []), "bootwatch.ports", 64)
        for i, port in enumerate(raw_ports):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise r.fail(f"bootwatch.ports[{i}]", "must be a TCP port 1-65535")
        ports = tuple(raw_ports)
    return ServiceTagDocument(
        change_number=r.number(top, "changeNumber", "$", default=0),
        cloud=r.text(top, "cloud", "$", default=""),
        values=tuple(values),
        fqdns=fqdns,
        ports=ports,
    )


def _raise(exc: NetworkInputError) -> str:
    raise exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def load_json(data: bytes, source: str) -> Any:
    """Parse JSON bytes; a syntax error names ``source``, line and column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NetworkInputError(
            f"not UTF-8 (byte offset {exc.start}: {exc.reason})", source=source
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise NetworkInputError(
            f"column {exc.colno}: not JSON: {exc.msg}", source=source, line=exc.lineno
        ) from None
    except (ValueError, RecursionError) as exc:
        raise NetworkInputError(f"not JSON: {exc}", source=source) from None
