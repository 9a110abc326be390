"""GET /servicetags: the service's endpoints in Azure's ServiceTags format, with a
change number kept in the database (SQLite and PostgreSQL) that moves only when
the advertised prefixes change; and the CLI reading it over HTTPS."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bootwatch.errors import ConfigError
from bootwatch.net.servicetag import decode_document
from bootwatch.service.servicetag import advertised_prefixes, service_fqdns, service_ports
from bootwatch.service.settings import Settings


def _doc(svc: Any) -> dict[str, Any]:
    with svc.client() as c:
        r = c.get("/servicetags")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_document_shape_and_defaults(service_factory: Any) -> None:
    svc = service_factory(service_tag_name="BwShape")
    body = _doc(svc)
    assert list(body) == ["changeNumber", "cloud", "values", "bootwatch"]
    assert body["cloud"] == "Public"
    (value,) = body["values"]
    assert value["name"] == value["id"] == "BwShape"
    props = value["properties"]
    assert list(props) == ["changeNumber", "region", "regionId", "platform", "systemService",
                           "addressPrefixes", "networkFeatures"]
    # default: the address the service listens on
    assert props["addressPrefixes"] == ["127.0.0.1/32"]
    assert props["region"] == "" and props["regionId"] == 0
    assert props["networkFeatures"] == ["API", "NSG", "UDR", "FW"]
    assert body["bootwatch"]["ports"] == [svc.settings.port]
    # and our own decoder reads it back
    doc = decode_document(json.dumps(body).encode(), "GET /servicetags")
    assert doc.tag().name == "BwShape"


def test_change_number_moves_only_with_prefixes(service_factory: Any) -> None:
    first = service_factory(service_tag_name="BwChange",
                            advertise_prefixes=("192.0.2.0/24", "2001:db8::/48"))
    n1 = _doc(first)["changeNumber"]
    assert n1 == 1
    # same prefixes in another order, another FQDN: the number stays
    again = service_factory(service_tag_name="BwChange",
                            advertise_prefixes=("2001:db8::/48", "192.0.2.0/24"),
                            public_base_url="https://att.example.com")
    body = _doc(again)
    assert body["changeNumber"] == 1
    assert body["values"][0]["properties"]["addressPrefixes"] == ["192.0.2.0/24",
                                                                  "2001:db8::/48"]
    assert body["bootwatch"] == {"fqdns": ["att.example.com"], "ports": [443]}
    changed = service_factory(service_tag_name="BwChange", advertise_prefixes=("192.0.2.0/24",))
    body = _doc(changed)
    assert body["changeNumber"] == 2
    assert body["values"][0]["properties"]["changeNumber"] == 2
    # the tag name AzureAttestation (default) is independent of this one
    other = service_factory()
    assert _doc(other)["values"][0]["name"] == "AzureAttestation"


def test_cli_reads_the_service(service_factory: Any) -> None:
    svc = service_factory(service_tag_name="Bootwatch", advertise_prefixes=("198.51.100.7/32",),
                          public_base_url="https://att.example.net:8443")
    run = [sys.executable, "-m", "bootwatch.cli.main", "network"]
    out = subprocess.run([*run, "fqdns", "--from", svc.url, "--ca", svc.ca],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["att.example.net"]
    out = subprocess.run([*run, "rules", "--format", "nsg-json", "--from", svc.url,
                          "--ca", svc.ca], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (rule,) = json.loads(out.stdout)
    assert rule["properties"]["destinationAddressPrefix"] == "198.51.100.7/32"
    assert rule["properties"]["destinationPortRange"] == "8443"
    # without the CA the TLS step is named, exit 2
    out = subprocess.run([*run, "service-tag", "--from", svc.url], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("bootwatch: error: tls:") and "Traceback" not in out.stderr


def test_settings_to_document_inputs() -> None:
    s = Settings(host="10.1.2.3", port=9443, allowed_hosts=("att.example.org", "10.9.9.9"))
    assert [str(p) for p in advertised_prefixes(s)] == ["10.1.2.3/32"]
    assert service_fqdns(s) == ("att.example.org",)
    assert service_ports(s) == (9443,)
    with pytest.raises(ConfigError, match=r"--advertise-prefix: '10\.0\.0\.1/24'"):
        advertised_prefixes(Settings(advertise_prefixes=("10.0.0.1/24",)))


def test_allowed_host_that_is_no_dns_name_does_not_stop_the_service(
        service_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    # a container network's alias with an underscore: the service answers for it, and the
    # service tag leaves it out (no egress rule can filter on it) instead of refusing to start
    with caplog.at_level("WARNING", logger="bootwatch.service.servicetag"):
        svc = service_factory(service_tag_name="BwUnderscore",
                              allowed_hosts=("my_svc", "att.example.org"))
    assert _doc(svc)["bootwatch"]["fqdns"] == ["att.example.org"]
    assert any("'my_svc' left out" in r.getMessage() for r in caplog.records)
    with svc.client() as c:
        r = c.get("/.well-known/openid-configuration", headers={"Host": "my_svc"})
    assert r.status_code == 200, r.text
