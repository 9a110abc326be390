"""The monitor end to end: real swtpm lab VMs, the real agent code, the embedded
server over HTTPS on loopback, SQLite and PostgreSQL.

One module-scoped deployment per database; the tests run in order and build on
each other's VMs (created once: a swtpm VM costs about a second).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from bwdeploy import ADMIN, EVENTLOGS, READER, Deployment, DeploymentFactory
from bwwebhook import WebhookReceiver
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.eventlog.framing import parse_log
from bootwatch.lab import Lab
from bootwatch.protocol.health import HealthReport, HealthStatus, encode_health_report

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

COS93 = EVENTLOGS / "go-tpm-tools/cos-93-amd-sev.bin"
COS101 = EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin"
NO_SB = EVENTLOGS / "go-tpm-tools/ubuntu-2104-no-secure-boot.bin"


SECRET = "webhook-secret-for-tests"


@pytest.fixture(scope="module")
def receiver() -> Any:
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


@pytest.fixture(scope="module")
def dep(deploy: DeploymentFactory, receiver: WebhookReceiver) -> Deployment:
    # 8 s: long enough that a loaded machine (the suite runs in parallel workers) does not
    # make a VM stale between two steps of a test; the stale tests wait for it
    return deploy(stale_after_seconds=8.0, sweep_interval_seconds=0.3,
                  webhooks=(receiver.url,), webhook_secret=SECRET)


@pytest.fixture(scope="module")
def vms(lab: Lab, db: tuple[str, str]) -> dict[str, str]:
    """name -> VM id; names unique per database module."""
    tag = "pg" if db[1] else "sq"
    out = {}
    for name, log in (("web", COS93), ("nosb", NO_SB), ("tamper", COS93), ("idle", COS93),
                      ("quiet", COS93)):
        vm = lab.create_vm(f"{tag}-{name}", log)
        out[name] = vm.vm_id.upper()
    out["_tag"] = tag
    return out


def _name(vms: dict[str, str], short: str) -> str:
    return f"{vms['_tag']}-{short}"


def enable(dep: Deployment, vm_id: str, **body: Any) -> dict[str, Any]:
    with dep.client() as c:
        r = c.post(f"/api/v1/vms/{vm_id}/enable", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())


def test_enable_then_attest_is_healthy_and_learns_a_baseline(dep: Deployment,
                                                             vms: dict[str, str]) -> None:
    v = enable(dep, vms["web"], name=_name(vms, "web"), group="web")
    assert v["state"] == "not_reporting" and v["monitored"] is True
    res = dep.attest(_name(vms, "web"))
    assert res.verdict == "permit", res.reason
    v = dep.vm(vms["web"])
    assert v["state"] == "healthy", v["state_reason"]
    assert [b["origin"] for b in v["baselines"]] == ["learned"]
    # PCRs 8 and 9 (GRUB, kernel) are quoted by default now: the late boot is attested
    assert {"8", "9"} <= set(v["baselines"][0]["pcrs"])
    assert v["open_alerts"] == 0


def test_reboot_into_another_image_raises_baseline_deviation_then_approve_resolves(
    dep: Deployment, vms: dict[str, str], receiver: WebhookReceiver
) -> None:
    name = _name(vms, "web")
    dep.lab.reboot_vm(name, COS101)
    assert dep.attest(name).verdict == "permit"
    v = dep.vm(vms["web"])
    assert v["state"] == "unhealthy"
    (alert,) = [a for a in v["alerts"] if a["status"] == "active"]
    assert alert["reason"] == "baseline_deviation" and alert["severity"] == "medium"
    assert alert["alertType"] == "BOOTWATCH_VM_AttestationFailed"
    pcrs = {d["pcr"] for d in alert["diff"]}
    assert {4, 5, 7} <= pcrs  # the boot loader, the GPT and the SBAT level changed
    grub = [d for d in alert["diff"] if d["pcr"] == 4 and "grub-lakitu.efi" in d["component"]]
    assert grub and grub[0]["new_digest"] and grub[0]["old_digest"]
    sbat = [d for d in alert["diff"] if d["pcr"] == 7 and "SbatLevel" in d["component"]]
    assert sbat and sbat[0]["old_digest"] is None and sbat[0]["change"] == "added"
    # every new digest is the digest of that event in the new boot's log
    with dep.client() as c:
        boot = c.get(f"/api/v1/boots/{v['last_boot']}").json()
    by_index = {e["index"]: e["digest"] for e in boot["events"]}
    assert all(by_index[d["event"]] == d["new_digest"] for d in alert["diff"]
               if d["new_digest"] and d["event"] is not None)
    opened = receiver.wait_for("alert.opened")
    assert opened["alert"]["reason"] == "baseline_deviation"
    assert opened["_delivery_header"] == opened["delivery_id"]
    # a second attestation of the same boot: still one alert, counted
    assert dep.attest(name).verdict == "permit"
    open_alerts = dep.alerts(vm=vms["web"], status="open")
    assert len(open_alerts) == 1 and open_alerts[0]["count"] == 2
    # approve: the alert resolves and the VM is healthy
    with dep.client() as c:
        r = c.post("/api/v1/baselines/approve", json={"vm": name})
        assert r.status_code == 200, r.text
    v = dep.vm(vms["web"])
    assert v["state"] == "healthy", v["state_reason"]
    assert dep.alerts(vm=vms["web"], status="open") == []
    resolved = dep.alerts(vm=vms["web"], status="resolved")
    assert resolved[0]["endTimeUtc"] and "approved" in resolved[0]["status_changed_by"]
    receiver.wait_for("alert.resolved")
    assert receiver.bad_signatures == 0
    # both images are approved variants now (an A/B update): booting back to 93 is healthy
    dep.lab.reboot_vm(name, COS93)
    assert dep.attest(name).verdict == "permit"
    assert dep.vm(vms["web"])["state"] == "healthy"


def test_secure_boot_off_is_denied_and_recommended(dep: Deployment, vms: dict[str, str]) -> None:
    enable(dep, vms["nosb"], name=_name(vms, "nosb"), security_type="trusted-launch")
    res = dep.attest(_name(vms, "nosb"))
    assert res.verdict == "deny"
    v = dep.vm(vms["nosb"])
    assert v["state"] == "unhealthy"
    (alert,) = [a for a in v["alerts"] if a["status"] == "active"]
    assert alert["reason"] == "policy_denied"
    assert "secureboot" in alert["description"]
    rec = {r["key"]: r for r in v["recommendations"]}
    sb = rec["69ad830b-d98c-b1cf-2158-9d69d38c7093"]
    assert sb["status"]["code"] == "Unhealthy" and sb["status"]["cause"] == "SecureBootDisabled"
    assert "Secure Boot" in sb["remediation"]
    assert rec["b7604066-ed76-45f9-a5c1-c97e4812dc55"]["status"]["code"] == "Unhealthy"
    # a suppression rule (Secure Boot off by design) dismisses the alert; the VM stays
    # unhealthy because the facts have not changed
    with dep.client() as c:
        r = c.post("/api/v1/suppressions", json={"vm": vms["nosb"], "reason": "policy_denied",
                                                 "note": "lab image without Secure Boot"})
        assert r.status_code == 200, r.text
    assert dep.alerts(vm=vms["nosb"], status="open") == []
    assert dep.attest(_name(vms, "nosb")).verdict == "deny"
    assert dep.alerts(vm=vms["nosb"], status="open") == []
    assert dep.vm(vms["nosb"])["state"] == "unhealthy"


def test_tampered_log_is_evidence_rejected(dep: Deployment, vms: dict[str, str]) -> None:
    name = _name(vms, "tamper")
    enable(dep, vms["tamper"], name=name)
    assert dep.attest(name).verdict == "permit"
    raw = dep.lab.get_vm(name).log_path.read_bytes()
    # flip one bit of the SHA-256 digest the log claims for the first PCR 4 event
    event = next(e for e in parse_log(raw).events if e.pcr == 4 and 0x000B in e.digests)
    at = raw.find(event.digests[0x000B], event.offset)
    assert at > 0
    log = bytearray(raw)
    log[at] ^= 0x01
    res = dep.attest(name, log=bytes(log))
    assert res.verdict == "refused"
    v = dep.vm(vms["tamper"])
    assert v["state"] == "unhealthy"
    (alert,) = [a for a in v["alerts"] if a["status"] == "active"]
    assert alert["reason"] == "evidence_rejected"
    assert alert["extendedProperties"]["failedCheck"] == "log_replay"


def test_stale_agent_then_back(dep: Deployment, vms: dict[str, str]) -> None:
    name = _name(vms, "idle")
    enable(dep, vms["idle"], name=name)
    assert dep.attest(name).verdict == "permit"
    assert dep.vm(vms["idle"])["state"] == "healthy"
    deadline = time.monotonic() + 20
    while dep.vm(vms["idle"])["state"] != "stale":
        assert time.monotonic() < deadline, "the VM did not go stale"
        time.sleep(0.3)
    (alert,) = dep.alerts(vm=vms["idle"], status="open")
    assert alert["reason"] == "agent_unresponsive"
    assert dep.attest(name).verdict == "permit"
    assert dep.vm(vms["idle"])["state"] == "healthy"
    assert dep.alerts(vm=vms["idle"], status="open") == []


def _report(vm_id: str, status: HealthStatus, token: str | None, **kw: Any) -> bytes:
    return encode_health_report(HealthReport(
        report_id=str(uuid.uuid4()), vm_id=vm_id, health_status=status,
        time=datetime.now(UTC), agent_version="0.1.0", attestation_token=token, **kw))


def test_only_a_verified_report_clears_an_alert(dep: Deployment, vms: dict[str, str]) -> None:
    name = _name(vms, "quiet")
    enable(dep, vms["quiet"], name=name)
    good = dep.attest(name)
    assert good.verdict == "permit" and good.token
    deadline = time.monotonic() + 20
    while not dep.alerts(vm=vms["quiet"], status="open"):
        assert time.monotonic() < deadline, "no agent_unresponsive alert"
        time.sleep(0.3)
    # forged: same claims, signed by a key the service never published
    claims = jwt.decode(good.token, options={"verify_signature": False})
    header = jwt.get_unverified_header(good.token)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": header["kid"]})
    with dep.client(token=None) as c:
        for token in (None, forged):
            r = c.post("/api/v1/reports", content=_report(vms["quiet"], HealthStatus.UNHEALTHY
                                                         if token is None else
                                                         HealthStatus.HEALTHY, token))
            assert r.status_code == 202, r.text
            assert r.json()["verified"] is False
        assert "does not verify" in r.json()["why_unverified"]
        assert dep.alerts(vm=vms["quiet"], status="open"), "a forged report cleared the alert"
        assert dep.vm(vms["quiet"])["state"] == "stale"
        # another VM's genuine token does not count for this VM either
        other = dep.attest(_name(vms, "web"))
        r = c.post("/api/v1/reports", content=_report(vms["quiet"], HealthStatus.HEALTHY,
                                                      other.token))
        assert r.json()["verified"] is False and "not" in r.json()["why_unverified"]
        # the VM's own genuine token, issued before it went stale, shows its boot then,
        # not that it is alive now (a token stays valid for hours and stays on the VM)
        r = c.post("/api/v1/reports", content=_report(vms["quiet"], HealthStatus.HEALTHY,
                                                      good.token))
        assert r.json()["verified"] is False
        assert "more than the stale window" in r.json()["why_unverified"]
        assert dep.alerts(vm=vms["quiet"], status="open"), "an old token cleared the alert"
        # a fresh one clears it
        fresh = dep.attest(name)
        r = c.post("/api/v1/reports", content=_report(vms["quiet"], HealthStatus.HEALTHY,
                                                      fresh.token))
        assert r.json() | {"report_id": ""} == {"report_id": "", "stored": True,
                                                "verified": True, "why_unverified": ""}
    assert dep.alerts(vm=vms["quiet"], status="open") == []
    assert dep.vm(vms["quiet"])["agent_version"] == "0.1.0"


def test_a_vm_is_bound_to_one_provider(dep: Deployment, lab: Lab, vms: dict[str, str]) -> None:
    """The service binds a VM id to one vTPM per provider only: another provider (here a
    custom one) may hold a vTPM enrolled under the same VM id.  Its outcomes must not
    change the VM, nor its tokens count in the VM's reports, until an operator moves the
    VM to it (``vm enable --provider``).  Before the binding, the custom provider's
    rejected evidence raised ``evidence_rejected`` on the VM and its token made a report
    verified."""
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    other = f"other-{vms['_tag']}"
    with dep.service.db.session() as s:
        create_provider(s, dep.service.sealer, other, kind=ProviderKind.CUSTOM,
                        trust_model=TrustModel.AAD)
    name = f"{vms['_tag']}-bound"
    vm_id = lab.create_vm(name, COS93).vm_id.upper()
    enable(dep, vm_id, name=name)
    own = dep.attest(name)                       # the default provider: binds the VM
    assert own.verdict == "permit" and dep.vm(vm_id)["provider"] == "shared"
    raw = lab.get_vm(name).log_path.read_bytes()
    event = next(e for e in parse_log(raw).events if e.pcr == 4 and 0x000B in e.digests)
    log = bytearray(raw)
    log[raw.find(event.digests[0x000B], event.offset)] ^= 0x01
    assert dep.attest(name, log=bytes(log), provider=other).verdict == "refused"
    foreign = dep.attest(name, provider=other)
    assert foreign.verdict == "permit" and foreign.token
    v = dep.vm(vm_id)
    assert (v["state"], v["provider"], v["open_alerts"]) == ("healthy", "shared", 0), v
    with dep.client(token=None) as c:
        r = c.post("/api/v1/reports", content=_report(vm_id, HealthStatus.HEALTHY,
                                                      foreign.token))
        assert r.status_code == 202 and r.json()["verified"] is False, r.text
        assert "bound to provider 'shared'" in r.json()["why_unverified"]
        r = c.post("/api/v1/reports", content=_report(vm_id, HealthStatus.HEALTHY, own.token))
        assert r.json()["verified"] is True, r.text
    # the operator moves the VM: the other provider's outcomes and tokens count now
    assert enable(dep, vm_id, provider=other)["provider"] == other
    moved = dep.attest(name, provider=other)
    assert dep.vm(vm_id)["state"] == "healthy"
    with dep.client(token=None) as c:
        r = c.post("/api/v1/reports", content=_report(vm_id, HealthStatus.HEALTHY,
                                                      moved.token))
        assert r.json()["verified"] is True, r.text
        r = c.post("/api/v1/reports", content=_report(vm_id, HealthStatus.HEALTHY, own.token))
        assert r.json()["verified"] is False, r.text
    assert dep.alerts(vm=vm_id, status="all") == []


def test_bad_reports_name_the_field_and_store_nothing(dep: Deployment,
                                                      vms: dict[str, str]) -> None:
    cases = {
        b"[]": "JSON object",
        b'{"HealthStatus": "Fine"}': "HealthStatus",
        json.dumps({"ReportId": "r", "VmId": "v", "HealthStatus": "Healthy",
                    "Time": "2026-01-01T00:00:00Z", "AgentVersion": "1"}).encode():
            "AttestationToken",
        json.dumps({"ReportId": "r/..", "VmId": "v", "HealthStatus": "PlatformError",
                    "Time": "2026-01-01T00:00:00Z", "AgentVersion": "1"}).encode(): "ReportId",
        json.dumps({"ReportId": "r", "VmId": "v", "HealthStatus": "PlatformError",
                    "Time": "yesterday", "AgentVersion": "1"}).encode(): "Time",
    }
    with dep.client(token=None) as c:
        for body, field in cases.items():
            r = c.post("/api/v1/reports", content=body)
            assert r.status_code == 400, (body, r.text)
            assert field in r.json()["error"]["message"], r.text
        r = c.get("/api/v1/vms", params={"q": "V"})
        assert all(v["vm_id"] != "V" for v in r.json()["items"])


def test_a_platform_error_report_is_recorded_with_its_hop(dep: Deployment,
                                                          vms: dict[str, str]) -> None:
    vm_id = str(uuid.uuid4()).upper()
    enable(dep, vm_id, name=f"{vms['_tag']}-blocked")
    body = _report(vm_id, HealthStatus.PLATFORM_ERROR, None,
                   platform_error_message="TCP connect to https://attest.example:443 failed: "
                   "connection refused", failed_hop=__import__(
                       "bootwatch.protocol.health", fromlist=["FailedHop"]).FailedHop.TCP_CONNECT,
                   failed_target="https://attest.example:443")
    with dep.client(token=None) as c:
        assert c.post("/api/v1/reports", content=body).status_code == 202
    v = dep.vm(vm_id)
    assert v["state"] == "platform_error" and "TCP connect" in v["state_reason"]
    rec = {r["key"]: r for r in v["recommendations"]}
    egress = rec["bootwatch-attestation-egress"]
    assert egress["status"]["code"] == "Unhealthy" and "tcp_connect" in egress["status"][
        "description"]
    # the remediation carries rules generated from this server's own service tag
    assert "AzureAttestation" in egress["remediation"]
    assert "[nsg-json]" in egress["remediation"] and "[nftables]" in egress["remediation"]
    assert rec["e94a7421-fc27-7a4d-e9ba-2ba01384cacd"]["status"]["cause"] == "ProvisioningFailed"


def test_outcome_ingestion_is_idempotent_and_needs_a_token(dep: Deployment) -> None:
    event = {"schema": 1, "event_id": "dup-" + uuid.uuid4().hex, "time": "2026-12-01T00:00:00Z",
             "provider": "shared", "attestation_type": "AzureGuest", "verdict": "deny",
             "reason": "test", "policy_hash": "x", "claimed_vm_id": None, "vm_id": None}
    with dep.client(token=None) as c:
        assert c.post("/api/v1/outcomes", json=event).status_code == 401
    with dep.client(token=READER) as c:
        assert c.post("/api/v1/outcomes", json=event).status_code == 403
    with dep.client() as c:
        assert c.post("/api/v1/outcomes", json=event).json() == {"stored": [True],
                                                                 "refused": []}
        assert c.post("/api/v1/outcomes", json={"events": [event, event]}).json() == {
            "stored": [False, False], "refused": []}
        bad = dict(event, verdict="maybe")
        r = c.post("/api/v1/outcomes", json={"events": [bad]})
        assert r.status_code == 400 and "events[0]" in r.text and "verdict" in r.text


def test_not_enabled_vm_is_recorded_but_never_alerted(dep: Deployment, lab: Lab,
                                                      vms: dict[str, str]) -> None:
    name = f"{vms['_tag']}-unmonitored"
    vm = lab.create_vm(name, NO_SB)
    assert dep.attest(name).verdict == "deny"
    v = dep.vm(vm.vm_id)
    assert v["state"] == "not_monitored" and v["monitored"] is False
    assert dep.alerts(vm=vm.vm_id, status="all") == []


def test_cli_lists_the_exact_json_keys(dep: Deployment, vms: dict[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from bootwatch.cli.main import cli

    monkeypatch.setenv("BOOTWATCH_MONITOR", dep.url)
    monkeypatch.setenv("BOOTWATCH_MONITOR_CA", dep.ca)
    monkeypatch.setenv("BOOTWATCH_MONITOR_TOKEN", ADMIN)
    res = CliRunner().invoke(cli, ["vm", "list", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    row = next(v for v in listed if v["vm_id"] == vms["web"])
    assert {"vm_id", "name", "state", "monitored", "open_alerts", "recommendations"} <= set(row)
    assert {"key", "name", "severity", "status"} <= set(row["recommendations"][0])
    assert {"code", "cause"} <= set(row["recommendations"][0]["status"])
    # needs attention first
    ranks = [["unhealthy", "stale", "platform_error", "not_reporting", "healthy",
              "not_monitored"].index(v["state"]) for v in listed]
    assert ranks == sorted(ranks)
    res = CliRunner().invoke(cli, ["alert", "list", "--status", "all", "--json"])
    assert res.exit_code == 0, res.output
    alerts = json.loads(res.output)
    dev = next(a for a in alerts if a["reason"] == "baseline_deviation")
    assert {"id", "vm_id", "reason", "severity", "status", "count", "diff"} <= set(dev)
    assert {"pcr", "event", "type", "component", "old_digest", "new_digest"} <= set(
        dev["diff"][0])
    # baseline diff exits 1 on a deviating boot, 0 on a matching one
    res = CliRunner().invoke(cli, ["baseline", "diff", vms["web"]])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("MATCHES")


def test_dry_run_names_the_boots_a_stricter_policy_would_deny(dep: Deployment) -> None:
    strict = ("version=1.2;\nauthorizationrules{\n"
              '[type=="x-ms-azurevm-osdistro", value=="Nobody"] => permit();\n};\n')
    with dep.client() as c:
        r = c.post("/api/v1/dry-run", json={"policy": strict, "since_seconds": 3600})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["would_deny"] >= 1 and doc["would_deny"] == len(
            [b for b in doc["boots"] if b["would"] == "deny"])
        permits = [b for b in doc["boots"] if b["verdict"] == "permit"]
        assert permits and all(b["changes"] for b in permits)
        r = c.post("/api/v1/dry-run", json={"policy": "version=1.2; nonsense"})
        assert r.status_code == 400 and "policy" in r.json()["error"]["message"]


def test_writes_need_an_admin_token(dep: Deployment, vms: dict[str, str]) -> None:
    with dep.client(token=None) as c:
        r = c.post(f"/api/v1/vms/{vms['web']}/disable")
        assert r.status_code == 401
    with dep.client(token=READER) as c:
        assert c.get("/api/v1/vms").status_code == 200
        r = c.post("/api/v1/baselines/approve", json={"vm": vms["web"]})
        assert r.status_code == 403
    with dep.client(token="wrong-token") as c:
        assert c.get("/api/v1/vms").status_code == 401


def test_metrics_count_states_and_alerts(dep: Deployment) -> None:
    """The state gauges add up to the VMs the API lists (which states they are in depends
    on the 3 s stale window and the machine's speed; how many does not)."""
    import re

    with dep.client() as c:
        text = c.get("/metrics").text
        listed = len(c.get("/api/v1/vms", params={"limit": 1000}).json()["items"])
    by_state = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^bootwatch_monitor_vms\{state="([a-z_]+)"\} ([0-9.e+]+)$', text, re.M)}
    assert by_state and sum(by_state.values()) == listed, (by_state, listed)
    assert "bootwatch_monitor_open_alerts" in text
    assert 'bootwatch_monitor_outcomes_total{duplicate="false",verdict="permit"}' in text


def test_release_routes_see_the_fleet_agents(deploy: DeploymentFactory, vms: dict[str, str],
                                             tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "release.pem"
    pem.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    d = deploy(release_keys=(str(pem),), stale_after_seconds=3600.0)
    with d.client(token=None) as c:
        assert c.get("/api/v1/agent/releases").status_code == 401
    with d.client() as c:
        r = c.get("/api/v1/agent/releases")
        assert r.status_code == 200, r.text
        # no release published: nothing is offered to a known agent
        r = c.get("/api/v1/agent/releases/offer",
                  params={"vm_id": vms["quiet"], "current": "0.1.0"})
        assert r.status_code == 204, r.text
    assert any(a.vm_id == vms["quiet"] and a.agent_version == "0.1.0"
               for a in d.container.monitor.agents())
    d.server.stop()


def test_the_agent_daemon_reports_to_the_server(dep: Deployment, lab: Lab, vms: dict[str, str],
                                                tmp_path: Any) -> None:
    """`bootwatch agent run --once` against `bootwatch server`: the cycle's report arrives,
    its token verifies, and the VM shows the agent's version (issue 12 joined to 11)."""
    import os
    import subprocess
    import sys

    name = _name(vms, "daemon")
    vm_id = lab.create_vm(name, COS101).vm_id.upper()
    enable(dep, vm_id, name=name)
    cmd = [sys.executable, "-c", "from bootwatch.cli.main import main; main()",
           "agent", "run", "--once", "--lab-vm", name, "--url", dep.url, "--ca", dep.ca,
           "--monitor-url", dep.url, "--monitor-ca", dep.ca, "--state-dir", str(tmp_path)]
    env = dict(os.environ, BOOTWATCH_LAB_DIR=str(lab.root))
    for _ in range(2):  # two cycles: the second sees the state the first left
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    assert dep.relay.flush()
    v = dep.vm(vm_id)
    assert v["state"] == "healthy", v["state_reason"]
    assert v["last_report_status"] == "Healthy" and v["last_report_verified"] is True
    assert v["agent_version"]
    status = json.loads((tmp_path / "status" / "0.status").read_text())
    assert status[0]["status"]["status"] == "success"


# last: it stops the module's deployment
def test_a_restart_loses_no_alert_or_state(dep: Deployment, deploy: DeploymentFactory) -> None:
    from sqlalchemy import select

    from bootwatch.monitor.db import make_engine
    from bootwatch.monitor.models import AlertRow, VmRow

    dep.server.stop()  # stopped first: its sweeper can no longer change anything
    engine = make_engine(dep.settings.db_url, schema=dep.settings.db_schema)
    with engine.connect() as conn:
        before_vms = dict(conn.execute(select(VmRow.vm_id, VmRow.state)).all())
        before_alerts = set(conn.execute(select(AlertRow.id, AlertRow.status)).all())
    engine.dispose()
    assert before_alerts, "the module's tests left no alert to keep"
    again = deploy(data_dir=dep.settings.data_dir, stale_after_seconds=3600.0)
    with again.client() as c:
        after_vms = {v["vm_id"]: v["state"] for v in c.get(
            "/api/v1/vms", params={"limit": 1000}).json()["items"]}
        after_alerts = {(a["id"], a["status"]) for a in c.get(
            "/api/v1/alerts", params={"limit": 1000}).json()["items"]}
    assert after_alerts == before_alerts
    assert after_vms == before_vms
