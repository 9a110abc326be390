"""A real swtpm lab VM's evidence verifies end to end (collector -> wire -> verifier).

The lab starts each swtpm on free loopback ports for the ``running()`` block
and stops it afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootwatch.agent.evidence import collect_evidence
from bootwatch.attest.evidence import verify_evidence
from bootwatch.lab import Lab
from bootwatch.protocol.azureguest import decode_request
from bootwatch.tpm.aik import TrustAnchors

pytestmark = pytest.mark.swtpm

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
LOG = SHARED / "corpus/eventlogs/go-tpm-tools/rhel8-uefi.bin"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, swtpm_available: None) -> Iterator[Lab]:
    # its own lab (not the session one): this module destroys its VM at the end
    lab = Lab(tmp_path_factory.mktemp("evidence-lab"))
    lab.create_vm("tl-vm", LOG)
    yield lab
    lab.destroy_vm("tl-vm")


def test_lab_vm_evidence_passes_every_check(lab: Lab) -> None:
    with lab.running("tl-vm") as vm:
        collected = collect_evidence(vm.tcti, tcg_log=LOG.read_bytes())
    req = decode_request(collected.request_body())
    anchors = TrustAnchors.from_pem([lab.ca_cert_path.read_bytes()])
    v = verify_evidence(req, trust_anchors=anchors, at=dt.datetime.now(dt.UTC))
    assert v.passed, [(c.name, c.reason_code, c.reason) for c in v.failed]
    assert v.verified_pcrs == dict(collected.pcrs)
    assert v.verified_aik_chain is not None and v.verified_enc_key is not None

    # Without the lab CA the same evidence fails only on the AIK certificate.
    v = verify_evidence(req, trust_anchors=None, at=dt.datetime.now(dt.UTC))
    assert [(c.name, c.reason_code) for c in v.failed] == [("aik_certificate",
                                                             "no_trust_anchors")]


def test_pcr_extended_after_boot_is_not_explained_by_the_log(lab: Lab) -> None:
    with lab.running("tl-vm") as vm:
        vm.extend_pcr(7, b"measured after the log was read")
        collected = collect_evidence(vm.tcti, tcg_log=LOG.read_bytes())
    v = verify_evidence(decode_request(collected.request_body()), trust_anchors=None,
                        at=dt.datetime.now(dt.UTC))
    assert v.check("quote_signature").passed and v.check("pcr_digest").passed
    assert v.check("log_replay").reason_code == "log_pcr_mismatch"
    assert "PCR 7" in v.check("log_replay").reason
    assert v.verified_event_log is None
