"""Benchmark: in-process verification of one AzureGuest request vs. just its signature checks.

Run:  python benchmarks/evidence.py [--rounds N]

Verifies the real Trusted Launch request (shared/corpus/maa/azure-guest-vm-derived,
AIK certificate time pinned inside its validity) N times and prints the median
of (a) decode_request + verify_evidence, (b) verify_evidence alone, and (c) only
the two RSA signature verifications it contains (quote and certify), in the
same run, with the ratio of (b) to (c).

With ``--swtpm`` (needs swtpm), it also times the agent side on a real vTPM: a
throw-away lab VM is made from go-tpm-tools/rhel8-uefi.bin, then the median of
``collect_evidence`` (AIK cert + public, quote, ephemeral key, certify, PCRs)
is printed next to the peer ``tpm2_quote`` (tpm2-tools, whole process, the quote
alone) run against the same vTPM in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bootwatch.attest.evidence import verify_evidence
from bootwatch.protocol.azureguest import decode_request
from bootwatch.tpm import parse_tpm2b_public, signature_from_raw, verify_signature

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared"))
REQUEST = SHARED / "corpus/maa/azure-guest-vm-derived/attestation-info.json"
AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _median_ms(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--swtpm", action="store_true", help="also time evidence collection")
    ap.add_argument("--swtpm-rounds", type=int, default=20)
    args = ap.parse_args()
    body = REQUEST.read_bytes()
    req = decode_request(body)
    ti = req.tpm_info
    aik = parse_tpm2b_public(ti.aik_pub)

    def full() -> None:
        v = verify_evidence(decode_request(body), trust_anchors=None, at=AT)
        assert [c.name for c in v.failed] == ["aik_certificate"]

    def evidence_only() -> None:
        verify_evidence(req, trust_anchors=None, at=AT)

    def signatures_only() -> None:
        verify_signature(aik, ti.pcr_quote, signature_from_raw(ti.pcr_signature, aik))
        verify_signature(aik, ti.enc_key_certify_info,
                         signature_from_raw(ti.enc_key_certify_info_signature, aik))

    n = args.rounds
    f = _median_ms(full, n)
    e = _median_ms(evidence_only, n)
    s = _median_ms(signatures_only, n)
    print(f"request: {REQUEST.name} ({len(body)} bytes, log {len(req.tcg_logs)} bytes, "
          f"{len(ti.pcrs)} PCRs), rounds={n}")
    print(f"decode + verify_evidence : {f:8.3f} ms (median)")
    print(f"verify_evidence          : {e:8.3f} ms (median)")
    print(f"2 RSA signature checks   : {s:8.3f} ms (median)")
    print(f"ratio verify_evidence / signatures: {e / s:.1f}x")
    if args.swtpm:
        _collection(args.swtpm_rounds)


def _collection(rounds: int) -> None:
    """Agent-side cost on a real swtpm vTPM, next to tpm2-tools' tpm2_quote."""
    from bootwatch.agent.evidence import collect_evidence
    from bootwatch.lab import Lab

    log = SHARED / "corpus/eventlogs/go-tpm-tools/rhel8-uefi.bin"
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab")
        vm = lab.create_vm("bench", log)
        tcg_log = vm.log_path.read_bytes()
        with lab.running("bench") as run:
            c = _median_ms(lambda: collect_evidence(run.tcti, tcg_log=tcg_log), rounds)
            print(f"collect_evidence on swtpm : {c:8.3f} ms (median of {rounds})")
            if shutil.which("tpm2_quote") is None:
                print("tpm2_quote not installed: no peer figure")
                return
            env = dict(os.environ, TPM2TOOLS_TCTI=run.tcti, TSS2_LOG="all+none")
            out = Path(tmp)

            def peer() -> None:
                subprocess.run(
                    ["tpm2_quote", "-c", "0x81000003", "-l", "sha256:0,1,2,3,4,5,6,7",
                     "-g", "sha256", "-m", str(out / "q.msg"), "-s", str(out / "q.sig")],
                    env=env, check=True, capture_output=True,
                )

            q = _median_ms(peer, rounds)
            print(f"tpm2_quote (peer, quote only, whole process): {q:8.3f} ms (median)")
            print(f"ratio collect_evidence / tpm2_quote: {c / q:.2f}x")


if __name__ == "__main__":
    main()
