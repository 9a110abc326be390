"""The ServiceTags document model: build, encode, strict decode, change numbers;
``--to`` targets; rule options that do not fit the document."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bootwatch.errors import NetworkInputError
from bootwatch.net.rules import RuleFormat, RuleOptions, generate_rules
from bootwatch.net.servicetag import (
    build_document,
    decode_document,
    encode_document,
    next_change_number,
)
from bootwatch.net.target import parse_target

from .conftest import AZURE_FILE

N = ipaddress.ip_network


def test_round_trip_and_order() -> None:
    doc = build_document("Bootwatch", (N("2001:db8::/48"), N("192.0.2.0/24"), N("10.0.0.1/32")),
                         7, fqdns=("att.example.com",), ports=(443,))
    body = encode_document(doc)
    props = body["values"][0]["properties"]
    assert props["addressPrefixes"] == ["10.0.0.1/32", "192.0.2.0/24", "2001:db8::/48"]
    assert body["changeNumber"] == props["changeNumber"] == 7
    assert decode_document(json.dumps(body).encode(), "x") == doc


def test_change_number_rule() -> None:
    a = (N("10.0.0.1/32"), N("2001:db8::/48"))
    assert next_change_number(None, None, a) == 1
    assert next_change_number(a, 5, tuple(reversed(a))) == 5
    assert next_change_number(a, 5, a[:1]) == 6


def test_azure_file_and_discovery_api_shapes() -> None:
    doc = decode_document(json.dumps(AZURE_FILE).encode(), "ServiceTags_Public.json")
    assert doc.tag().name == "AzureAttestation"  # the global one by default
    assert doc.tag("AzureAttestation.eastus").region == "eastus"
    assert doc.tag_fqdns(doc.tag()) == ("*.attest.azure.net",)
    # the Discovery API writes change numbers as strings
    discovery = json.loads(json.dumps(AZURE_FILE))
    discovery["changeNumber"] = "312"
    discovery["values"][0]["properties"]["changeNumber"] = "12"
    assert decode_document(json.dumps(discovery).encode(), "api").tag().change_number == 12
    with pytest.raises(NetworkInputError, match=r"--tag: no tag 'Storage'"):
        doc.tag("Storage")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["values"][1]["properties"].update(addressPrefixes=["20.62.129.149/30"]),
     r"x.json: values\[1\].properties.addressPrefixes\[0\]: '20.62.129.149/30'"),
    (lambda d: d["values"][0]["properties"].update(changeNumber=-1),
     r"values\[0\].properties.changeNumber: must be an integer >= 0"),
    (lambda d: d.update(values={}), r"values: must be a JSON list"),
    (lambda d: d.update(bootwatch={"fqdns": ["bad_host!"]}), r"bootwatch.fqdns\[0\]"),
    (lambda d: d.update(bootwatch={"ports": [70000]}), r"bootwatch.ports\[0\]"),
    (lambda d: d["values"][0].pop("name"), r"values\[0\].name: is required"),
])
def test_decode_names_the_field(mutate, message) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(json.dumps(AZURE_FILE))
    mutate(body)
    with pytest.raises(NetworkInputError, match=message):
        decode_document(json.dumps(body).encode(), "x.json")


def test_decode_syntax_and_size() -> None:
    with pytest.raises(NetworkInputError, match=r"^x.json:3: column 1: not JSON"):
        decode_document(b'{\n"values":\n}', "x.json")
    with pytest.raises(NetworkInputError, match="not UTF-8"):
        decode_document(b'{"a": "\xff"}', "x.json")
    with pytest.raises(NetworkInputError, match="NaN is not valid JSON"):
        decode_document(b'{"changeNumber": NaN}', "x.json")


@pytest.mark.parametrize(("text", "host", "port"), [
    ("https://att.example.com", "att.example.com", 443),
    ("http://att.example.com/x", "att.example.com", 80),
    ("https://10.0.0.4:8443/attest", "10.0.0.4", 8443),
    ("10.0.0.4", "10.0.0.4", 443),
    ("10.0.0.4:9000", "10.0.0.4", 9000),
    ("[2001:db8::4]:8443", "2001:db8::4", 8443),
    ("2001:db8::4", "2001:db8::4", 443),
    ("ATT.Example.com:444", "att.example.com", 444),
])
def test_targets(text: str, host: str, port: int) -> None:
    t = parse_target(text)
    assert (t.host, t.port) == (host, port)


@pytest.mark.parametrize(("text", "message"), [
    ("https:///x", "has no host"),
    ("ftp://h", "only http and https"),
    ("10.0.0.4:0", "port '0' is not 1-65535"),
    ("[2001:db8::4", r"expected \[IPv6\]:PORT"),
    ("bad host", "is not a host name"),
    ("", "is empty"),
])
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(NetworkInputError, match=message):
        parse_target(text)


def test_rule_options_checked() -> None:
    doc = decode_document(json.dumps(AZURE_FILE).encode(), "azure")
    with pytest.raises(NetworkInputError, match="--priority: 5000 is outside 100-4096"):
        generate_rules(doc, RuleFormat.NSG_JSON, RuleOptions(priority=5000))
    with pytest.raises(NetworkInputError, match="--name"):
        generate_rules(doc, RuleFormat.NSG_JSON, RuleOptions(name="bad name"))
    with pytest.raises(NetworkInputError, match="no IPv6 prefixes"):
        generate_rules(doc, RuleFormat.IP6TABLES)
    with pytest.raises(NetworkInputError, match="of the --source family"):
        generate_rules(doc, RuleFormat.NFTABLES, RuleOptions(source=N("2001:db8::/32")))
    with pytest.raises(NetworkInputError, match="unknown format 'pf'"):
        RuleFormat.parse("pf")


def test_explain_nftables_bad_file(tmp_path: Path) -> None:
    from .conftest import require_netns

    require_netns()
    bad = tmp_path / "bad.nft"
    bad.write_text("table inet filter {\n  chain output {\n"
                   "    type filter hook outptu priority 0;\n  }\n}\n")
    out = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "network", "explain",
                          "--rules", str(bad), "--format", "nftables", "--to", "10.0.0.2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith(f"bootwatch: error: {bad}: nft refused the rules: {bad}:3:")
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_document_the_size_of_azures_public_file_loads() -> None:
    """Azure's ServiceTags_Public.json is 4.1 MB (a public mirror's copy, change 374): at
    about 33 bytes a prefix line, some 120,000 prefixes (an estimate); the loader refused
    more than 100,000, so the advice to settle an unknown tag with ``--from`` Azure's file
    could not be followed.
    A document of the same shape with 150,000 prefixes in 3,000 tags loads whole."""
    values = [{"name": f"Tag{i}", "id": f"Tag{i}", "properties": {
        "changeNumber": 1, "region": "", "regionId": 0, "platform": "Azure",
        "systemService": f"Tag{i}", "networkFeatures": ["API", "NSG", "UDR", "FW"],
        "addressPrefixes": [str(ipaddress.ip_network((0x0A000000 + (i * 50 + j) * 4, 30)))
                            for j in range(50)]}} for i in range(3000)]
    data = json.dumps({"changeNumber": 374, "cloud": "Public", "values": values},
                      indent=2).encode()
    doc = decode_document(data, "ServiceTags_Public.json")
    assert sum(len(t.address_prefixes) for t in doc.values) == 150_000
