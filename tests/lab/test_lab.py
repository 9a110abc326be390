"""Lab VMs on real swtpm: PCRs equal the log's replay, certificates chain to the lab CA."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC

from bootwatch.agent.tpm import (
    AIK_CERT_NV_INDEX,
    AIK_HANDLE,
    EK_CERT_NV_INDEX,
    EK_HANDLE,
    nv_read_all,
    open_tpm,
    persistent,
    read_pcrs,
)
from bootwatch.cli.main import cli
from bootwatch.errors import LabError, TpmDeviceError
from bootwatch.eventlog import parse_log, replay
from bootwatch.lab import Lab, LabVm

pytestmark = pytest.mark.swtpm

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
)
EVENTLOGS = SHARED / "corpus" / "eventlogs"
SHA1, SHA256 = int(TPM2_ALG.SHA1), int(TPM2_ALG.SHA256)
AIK_EKU = ObjectIdentifier("2.23.133.8.3")
EK_EKU = ObjectIdentifier("2.23.133.8.1")


def _reset_value(pcr: int, size: int, vm: LabVm) -> bytes:
    if 17 <= pcr <= 22:
        return b"\xff" * size
    if pcr == 0:
        loc = 4 if vm.hcrtm else vm.startup_locality
        return bytes(size - 1) + bytes([loc])
    return bytes(size)


@pytest.mark.parametrize("name", ["rhel8", "alex", "hcrtm", "sha1only"])
def test_vtpm_pcrs_equal_log_replay(lab: Lab, lab_vms: dict[str, LabVm], name: str) -> None:
    vm = lab_vms[name]
    rep = replay(parse_log(vm.log_path.read_bytes()))
    with lab.running(name) as run, open_tpm(run.tcti) as esys:
        for alg, bank, size in ((SHA1, "sha1", 20), (SHA256, "sha256", 32)):
            got = read_pcrs(esys, range(24), bank)
            want = rep.pcrs.get(alg, {})
            for pcr in range(24):
                expected = want.get(pcr, _reset_value(pcr, size, vm))
                assert got[pcr] == expected, f"{name} {bank} PCR{pcr}"
        # Azure-like banks only
        with pytest.raises(TpmDeviceError, match="no sha384 bank"):
            read_pcrs(esys, [0], "sha384")


def test_boot_facts_recorded(lab_vms: dict[str, LabVm]) -> None:
    assert lab_vms["alex"].startup_locality == 3
    assert lab_vms["rhel8"].startup_locality == 0 and not lab_vms["rhel8"].hcrtm
    hc = lab_vms["hcrtm"]
    assert hc.hcrtm
    # the H-CRTM event's digests are not the hash of its data: the VM's log copy says so
    assert len(hc.log_adjustments) == 2
    assert all("EV_EFI_HCRTM_EVENT" in note for note in hc.log_adjustments)
    assert not lab_vms["rhel8"].log_adjustments


def test_rhel8_matches_published_expected_values(lab: Lab, lab_vms: dict[str, LabVm]) -> None:
    """Independent of our replay: go-tpm-tools' transcribed PCR values."""
    expected = json.loads((EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin.expected.json").read_text())
    with lab.running("rhel8") as run, open_tpm(run.tcti) as esys:
        for bank in ("sha1", "sha256"):
            want = {int(k): bytes.fromhex(v) for k, v in expected["pcrs"].get(bank, {}).items()}
            got = read_pcrs(esys, sorted(want), bank)
            for pcr, value in want.items():
                if pcr < 10:  # PCR14 comes from the OS, not the firmware log
                    assert got[pcr] == value, f"{bank} PCR{pcr}"


def _check_chain(leaf: x509.Certificate, lab: Lab, *, ek: bool = False) -> None:
    ca = lab.ek_ca if ek else lab.ca
    leaf.verify_directly_issued_by(ca.issuer_cert)
    ca.issuer_cert.verify_directly_issued_by(ca.root_cert)
    path = lab.ek_ca_cert_path if ek else lab.ca_cert_path
    anchors = x509.load_pem_x509_certificates(path.read_bytes())
    assert anchors == [ca.issuer_cert, ca.root_cert]


def test_ek_and_aik_certificates_chain_to_lab_ca(lab: Lab, lab_vms: dict[str, LabVm]) -> None:
    vm = lab_vms["rhel8"]
    with lab.running("rhel8") as run, open_tpm(run.tcti) as esys:
        ek_der = nv_read_all(esys, EK_CERT_NV_INDEX)
        aik_der = nv_read_all(esys, AIK_CERT_NV_INDEX)
        ek_pub, _, _ = esys.read_public(persistent(esys, EK_HANDLE))
        aik_pub, _, _ = esys.read_public(persistent(esys, AIK_HANDLE))
    ek_cert = x509.load_der_x509_certificate(ek_der)
    aik_cert = x509.load_der_x509_certificate(aik_der)
    assert ek_cert == vm.ek_cert and aik_cert == vm.aik_cert
    _check_chain(ek_cert, lab, ek=True)  # the EK CA plays the TPM's manufacturer
    _check_chain(aik_cert, lab)
    assert lab.ek_ca.root_cert != lab.ca.root_cert
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER

    def key_of(pub: TPM2B_PUBLIC) -> bytes:
        key = serialization.load_pem_public_key(pub.publicArea.to_pem())
        return key.public_bytes(der, spki)

    assert ek_cert.public_key().public_bytes(der, spki) == key_of(ek_pub)
    assert aik_cert.public_key().public_bytes(der, spki) == key_of(aik_pub)
    assert aik_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([AIK_EKU])
    )
    assert ek_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([EK_EKU])
    )
    assert ExtendedKeyUsageOID.SERVER_AUTH not in aik_cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    ).value
    cn = aik_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == vm.vm_id
    # AIK: RSA-2048 restricted signing key with RSASSA-SHA256
    area = aik_pub.publicArea
    assert area.type == TPM2_ALG.RSA and area.parameters.rsaDetail.keyBits == 2048
    assert area.objectAttributes & TPMA_OBJECT.RESTRICTED
    assert area.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT
    assert not area.objectAttributes & TPMA_OBJECT.DECRYPT
    assert area.parameters.rsaDetail.scheme.scheme == TPM2_ALG.RSASSA
    assert area.parameters.rsaDetail.scheme.details.anySig.hashAlg == TPM2_ALG.SHA256


def test_vm_id_given_is_used(lab: Lab, lab_vms: dict[str, LabVm]) -> None:
    vm = lab.create_vm("withid", EVENTLOGS / "go-tpm-tools/debian-10.bin",
                       vm_id="9a1f1a43-6f4b-4b27-8d5e-0f2c8a3b7e11")
    try:
        assert vm.vm_id == "9a1f1a43-6f4b-4b27-8d5e-0f2c8a3b7e11"
        _check_chain(vm.aik_cert, lab)
    finally:
        lab.destroy_vm("withid")


def test_state_survives_stop_and_reboot_replays(lab: Lab, lab_vms: dict[str, LabVm]) -> None:
    with lab.running("sha1only") as run:
        before = run.read_pcrs([7, 8])
        run.extend_pcr(8, b"kernel command line")
        port = int(run.tcti.rsplit("=", 1)[1])
        changed = run.read_pcrs([8])[8]
        assert changed != before[8]
    # swtpm stopped: nothing listens any more
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with lab.running("sha1only") as run:
        assert run.read_pcrs([8])[8] == changed  # volatile state kept across stop/start
        run.reboot()
        assert run.read_pcrs([7, 8]) == before  # a reboot replays the log again


def test_nested_running_shares_one_swtpm(lab: Lab, lab_vms: dict[str, LabVm]) -> None:
    with lab.running("rhel8") as outer, lab.running("rhel8") as inner:
        assert outer.tcti == inner.tcti


def test_bad_inputs_are_lab_errors(lab: Lab, lab_vms: dict[str, LabVm], tmp_path: Path) -> None:
    with pytest.raises(LabError, match="invalid VM name"):
        lab.create_vm("../evil", EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin")
    with pytest.raises(LabError, match="already exists"):
        lab.create_vm("rhel8", EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin")
    with pytest.raises(LabError, match="cannot be replayed"):
        lab.create_vm("bogus", EVENTLOGS / "keylime/binary_bios_measurements-bogus")
    assert not (lab.root / "vms" / "bogus").exists()
    with pytest.raises(LabError, match="cannot read"):
        lab.create_vm("missing", tmp_path / "nope.bin")
    with pytest.raises(LabError, match="no lab VM named"):
        lab.get_vm("nosuchvm")


def test_cli_create_list_destroy(tmp_path: Path, swtpm_available: None) -> None:
    runner = CliRunner()
    root = tmp_path / "clilab"
    base = ["lab", "--lab-dir", str(root)]
    res = runner.invoke(cli, [*base, "ca"])
    assert res.exit_code == 0, res.output
    ca_path = Path(res.output.strip())
    assert ca_path == root / "ca" / "trust-anchors.pem" and ca_path.is_file()
    log = EVENTLOGS / "go-tpm-tools/glinux-alex.bin"
    res = runner.invoke(cli, [*base, "vm", "create", "cli-vm", "--log", str(log)])
    assert res.exit_code == 0, res.output
    assert "locality 3" in res.output
    res = runner.invoke(cli, [*base, "vm", "list", "--json"])
    listed = json.loads(res.output)
    assert [v["name"] for v in listed] == ["cli-vm"] and listed[0]["startup_locality"] == 3
    res = runner.invoke(cli, [*base, "vm", "list"])
    assert res.output.startswith("cli-vm\t")
    res = runner.invoke(cli, [*base, "vm", "destroy", "cli-vm"])
    assert res.exit_code == 0 and not (root / "vms" / "cli-vm").exists()
    assert Lab(root).list_vms() == []
    res = runner.invoke(cli, [*base, "vm", "list"])
    assert res.exit_code == 0 and res.output.startswith(f"no lab VMs in {root}")


def _request_os(root: Path, vm: str, *extra: str) -> tuple[str, str, int, int]:
    from bootwatch.protocol.azureguest import decode_request

    runner = CliRunner()
    out = root / f"{vm}-req.json"
    res = runner.invoke(cli, ["agent", "evidence", "--lab-dir", str(root), "--lab-vm", vm,
                              "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    req = decode_request(out.read_bytes())
    return req.os_type, req.os_distro, req.os_version_major, req.os_version_minor


def test_lab_vm_reports_the_os_of_its_image(tmp_path: Path, swtpm_available: None) -> None:
    """A COS VM's evidence says COS (from its log), not the lab host's /etc/os-release."""
    runner = CliRunner()
    root = tmp_path / "oslab"
    base = ["lab", "--lab-dir", str(root), "vm", "create"]
    res = runner.invoke(cli, [*base, "cos", "--log",
                              str(EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin")])
    assert res.exit_code == 0, res.output
    assert "OS: Container-Optimized OS 101 (derived from the log" in res.output
    assert _request_os(root, "cos") == ("Linux", "Container-Optimized OS", 101, 0)
    listed = json.loads(runner.invoke(cli, ["lab", "--lab-dir", str(root), "vm", "list",
                                            "--json"]).output)
    assert listed[0]["os"] == "Container-Optimized OS 101"
    assert "grub-lakitu" in listed[0]["os_source"]
    given = tmp_path / "os-release"
    given.write_text('NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n')
    res = runner.invoke(cli, [*base, "fed", "--log",
                              str(EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin"),
                              "--os-release", str(given)])
    assert res.exit_code == 0, res.output
    assert _request_os(root, "fed") == ("Linux", "Fedora Linux", 40, 0)
    # an explicit --os-release on the agent still wins
    assert _request_os(root, "cos", "--os-release", str(given))[1] == "Fedora Linux"
    bad = tmp_path / "bad-os-release"
    bad.write_text("hello\n")
    res = runner.invoke(cli, [*base, "bad", "--log",
                              str(EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin"),
                              "--os-release", str(bad)])
    assert res.exit_code != 0 and "no NAME= line" in str(res.exception or res.output)
    assert not (root / "vms" / "bad").exists()


def test_default_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bootwatch.lab import default_lab_root

    monkeypatch.delenv("BOOTWATCH_LAB_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_lab_root() == tmp_path / "xdg" / "bootwatch" / "lab"
    monkeypatch.setenv("BOOTWATCH_LAB_DIR", str(tmp_path / "x"))
    assert default_lab_root() == tmp_path / "x"


def test_swtpm_ports_come_from_below_the_ephemeral_range() -> None:
    """Client ports in TIME_WAIT fill the ephemeral range during a fleet run; the pair a
    lab swtpm listens on is drawn below it, and both ports are free when handed out."""
    import socket

    from bootwatch.lab.swtpm import _ephemeral_range, _free_port_pair

    low, high = _ephemeral_range()
    assert 1024 < low < high
    for _ in range(20):
        port = _free_port_pair()
        assert port + 1 < low
        for p in (port, port + 1):
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))
