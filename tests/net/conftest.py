"""Fixtures for the network tests: service-tag documents and scratch namespaces.

``netns`` gives a :class:`~bootwatch.net.netns.NamespaceSet` whose namespaces have
names unique to this run; every namespace it made is deleted when the test ends,
also when it failed.  ``vm_svc`` builds the end-to-end topology: a "vm" and a "svc"
namespace joined by a veth pair (10.x.y.1/30 and .2/30, inside the namespaces only),
loopback up in both.  The tools (ip, nft, iptables-restore, squid) are required:
scripts/setup installs them; a missing one fails the test (set
BOOTWATCH_SKIP_NETNS=1 to skip instead on a machine without root or namespaces).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootwatch.net.netns import NamespaceSet, Netns

TOOLS = ("ip", "nft", "iptables-restore", "squid")


def require_netns() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    problem = ""
    if missing:
        problem = f"{', '.join(missing)} not installed (run scripts/setup)"
    elif os.geteuid() != 0:
        problem = "network namespaces need root"
    if not problem:
        return
    if os.environ.get("BOOTWATCH_SKIP_NETNS") == "1":
        pytest.skip(problem)
    pytest.fail(problem)


@pytest.fixture
def netns() -> Iterator[NamespaceSet]:
    require_netns()
    nsset = NamespaceSet()
    try:
        yield nsset
    finally:
        errors = nsset.close()
        assert not errors, errors


@dataclass
class VmSvc:
    vm: Netns
    svc: Netns
    vm_ip: str
    svc_ip: str


@pytest.fixture
def vm_svc(netns: NamespaceSet) -> VmSvc:
    """Two namespaces joined by a veth pair on a random private /30."""
    b, c = random.randint(0, 255), random.randint(0, 63) * 4
    vm_ip, svc_ip = f"10.{b}.{c}.1", f"10.{b}.{c}.2"
    vm, svc = netns.add("vm"), netns.add("svc")
    netns.link(vm, f"{vm_ip}/30", svc, f"{svc_ip}/30")
    return VmSvc(vm, svc, vm_ip, svc_ip)


def write_doc(path: Path, prefixes: list[str], *, name: str = "Bootwatch",
              fqdns: list[str] | None = None, ports: list[int] | None = None) -> Path:
    body = {
        "changeNumber": 4,
        "cloud": "Public",
        "values": [{"name": name, "id": name, "properties": {
            "changeNumber": 4, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": name, "addressPrefixes": prefixes,
            "networkFeatures": ["API", "NSG", "UDR", "FW"]}}],
        "bootwatch": {"fqdns": fqdns or [], "ports": ports or []},
    }
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def doc_file(tmp_path: Path) -> Path:
    return write_doc(tmp_path / "servicetags.json", ["10.20.0.2/32", "2001:db8:20::/64"],
                     fqdns=["att.example.com", "*.attest.example.org"], ports=[8443])


#: Azure's own shape for the AzureAttestation tag, with the regional entry the facts
#: file quotes (monitoring-facts section 3: AzureAttestation.eastus =
#: 20.62.129.148/30, 40.71.15.204/30; the global entry's prefixes abridged to those)
AZURE_FILE = {
    "changeNumber": 312,
    "cloud": "Public",
    "values": [
        {"name": "AzureAttestation", "id": "AzureAttestation", "properties": {
            "changeNumber": 12, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": "AzureAttestation",
            "addressPrefixes": ["20.62.129.148/30", "40.71.15.204/30"],
            "networkFeatures": ["API", "NSG", "UDR", "FW"]}},
        {"name": "AzureAttestation.eastus", "id": "AzureAttestation.eastus", "properties": {
            "changeNumber": 3, "region": "eastus", "regionId": 1, "platform": "Azure",
            "systemService": "AzureAttestation",
            "addressPrefixes": ["20.62.129.148/30", "40.71.15.204/30"],
            "networkFeatures": ["API", "NSG", "UDR", "FW"]}},
    ],
}


@pytest.fixture
def azure_file(tmp_path: Path) -> Path:
    path = tmp_path / "ServiceTags_Public.json"
    path.write_text(json.dumps(AZURE_FILE))
    return path


def squid_conf(tmp_path: Path, snippet: str) -> Path:
    """A minimal squid.conf around a generated snippet, for ``squid -k parse``."""
    conf = tmp_path / "squid.conf"
    conf.write_text(
        "http_port 127.0.0.1:3128\n"
        f"pid_filename {tmp_path}/squid.pid\n"
        f"cache_log {tmp_path}/cache.log\n"
        "access_log none\n"
        f"{snippet}"
        "http_access deny all\n"
    )
    return conf
