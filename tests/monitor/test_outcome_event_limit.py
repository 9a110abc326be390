"""A boot measuring more events than an outcome carries is refused, not monitored blind.

Found in an audit: a lab VM rebooted into its log plus 4,200 small PCR 9 events (a GRUB
configuration running 4,200 commands; the request, 974 KB, stays under the service's
1 MiB) was permitted; the outcome's 4,200 events were more than a standalone monitor
decodes (4,096), so the relay dropped it as poison and the VM stayed healthy on its old
boot, kept alive by its agent's verified reports.  Now the pipeline refuses such a boot
(``evidence_rejected``, failed check ``event_count``) and the monitor raises the alert.

Real swtpm lab VM, the real agent's attestation, the service's relay posting encoded
outcomes over HTTPS to the monitor's ``/api/v1/outcomes`` as ``service run --events
https://MONITOR`` does (so the monitor decodes them as a standalone one), both databases.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from bwdeploy import ADMIN, EVENTLOGS

from bootwatch.eventlog.framing import parse_log
from bootwatch.protocol.outcome import MAX_OUTCOME_EVENTS
from bootwatch.service.events import HttpEventSink

pytestmark = pytest.mark.swtpm

BASE = EVENTLOGS / "go-tpm-tools/cos-93-amd-sev.bin"
_HASH = {4: hashlib.sha1, 11: hashlib.sha256, 12: hashlib.sha384}


def _grown_log(n: int) -> bytes:
    """The base log and ``n`` EV_IPL events of 2 bytes in PCR 9, in every bank."""
    raw = BASE.read_bytes()
    algs = [a.alg_id for a in parse_log(raw).algorithms]
    out = bytearray(raw)
    for _ in range(n):
        data = b"x\x00"
        digests = b"".join(struct.pack("<H", a) + _HASH[a](data).digest() for a in algs)
        out += struct.pack("<III", 9, 0x0D, len(algs)) + digests
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


@pytest.mark.parametrize("extra", [MAX_OUTCOME_EVENTS - 200, MAX_OUTCOME_EVENTS + 104])
def test_a_boot_over_the_event_limit_is_refused_and_alerted(
        deploy: Any, lab: Any, tmp_path: Path, extra: int) -> None:
    dep = deploy()
    # as `service run --events https://MONITOR`: encoded, posted, decoded by the monitor
    dep.relay._sink = HttpEventSink(dep.url, token=ADMIN, ca=dep.ca)
    name = f"big{extra}-{uuid.uuid4().hex[:8]}"
    vm_id = lab.create_vm(name, BASE).vm_id.upper()
    with dep.client() as c:
        assert c.post(f"/api/v1/vms/{vm_id}/enable", json={"name": name}).status_code == 200
    assert dep.attest(name).verdict == "permit"
    assert dep.vm(vm_id)["state"] == "healthy"
    grown = tmp_path / "grown.bin"
    grown.write_bytes(_grown_log(extra))
    lab.reboot_vm(name, grown)
    result = dep.attest(name)
    alerts = {a["reason"] for a in dep.alerts(vm=vm_id, status="open")}
    vm = dep.vm(vm_id)
    if extra <= MAX_OUTCOME_EVENTS:
        # within the limit: permitted, carried, and the change is seen
        assert result.verdict == "permit"
        assert vm["state"] == "unhealthy" and alerts == {"baseline_deviation"}
    else:
        # the agent is answered with MAA's error for rejected evidence, naming the limit
        assert result.verdict == "refused", result
        assert "more than the 4096 bootwatch explains" in result.reason
        assert vm["state"] == "unhealthy" and "evidence_rejected" in alerts
