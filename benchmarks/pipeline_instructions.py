"""Pipeline cost in instructions (callgrind), for before/after comparisons on a busy machine.

    python benchmarks/pipeline_instructions.py [--against TREE] [--rounds 30]

Wall-clock figures on this machine kind move 2-3x with other jobs; instruction counts
do not (``valgrind --tool=callgrind`` counts the same for the same binary and inputs
whatever else runs).  This runs the in-process AzureGuest pipeline
(:func:`bootwatch.attest.pipeline.attest_azure_guest`: decode, quote/certify/AIK
chain, log replay, claims, policy, RS256, RSAES wrap) on one real request from a lab
VM (swtpm, the Azure Trusted Launch log), under callgrind, for each source tree:

* ``repeat boot``: the VM's boot seen before (the verifier's caches hold its log);
* ``new boot``: a boot not seen before (log parse, replay and boot facts computed;
  the AIK and Secure Boot certificates known).

Each figure is (instructions with N rounds - instructions with 0 rounds) / N, so
start-up and imports cancel out; the signing key is loaded from one file for every
run (generating one would make the counts differ).  ``--against TREE`` measures
another checkout too (``git worktree add /tmp/before REV``) and prints the ratio.
A tree older than the verifier caches (before ecbcb06) is driven through its
module-level caches instead.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: the child: runs the pipeline ``rounds`` times in ``mode`` for the tree on sys.path
CHILD = r'''
import sys, pathlib
from dataclasses import replace
from datetime import UTC, datetime
tree, mode, work = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[4])
rounds = int(sys.argv[3])
sys.path.insert(0, str(tree / "src"))
import jwt
from cryptography.hazmat.primitives import serialization
from bootwatch.attest.claims import dbx_reference_from_json
from bootwatch.attest.pipeline import ProviderInputs, attest_azure_guest
from bootwatch.policy import compile_policy, default_azureguest_policy, policy_hash
from bootwatch.tpm.aik import TrustAnchors
body = (work / "request.bin").read_bytes()
key = serialization.load_pem_private_key((work / "key.pem").read_bytes(), None)
text = default_azureguest_policy()
dbx = work / "dbx.json"
inputs = ProviderInputs(
    issuer="https://127.0.0.1", policy=compile_policy(text), policy_hash=policy_hash(text),
    sign=lambda c: jwt.encode(dict(c), key, algorithm="RS256", headers={"kid": "k"}),
    trust_anchors=TrustAnchors.from_pem([(work / "anchors.pem").read_bytes()]),
    dbx_reference=dbx_reference_from_json(dbx.read_bytes(), source="dbx_info_msft_latest.json"))
now = datetime.now(UTC)
try:
    from bootwatch.attest.caches import VerifierCaches
    from bootwatch.lru import BoundedLru
    caches = VerifierCaches()
    def run(new_boot):
        c = replace(caches, logs=BoundedLru(4), boot_facts=BoundedLru(4)) if new_boot else caches
        return attest_azure_guest(body, provider=inputs, now=now, caches=c)
except ImportError:  # a tree from before the verifier caches: module-level caches
    from bootwatch.attest.facts import clear_boot_facts_cache
    def run(new_boot):
        if new_boot:
            clear_boot_facts_cache()
        return attest_azure_guest(body, provider=inputs, now=now)
assert run(False).verdict.value == "permit", "the benchmark request must be permitted"
run(True); run(False)
for _ in range(rounds):
    run(mode == "new")
'''


def prepare(work: Path, corpus: Path) -> None:
    """One real request, its lab CA, a signing key and the DBX data, shared by all runs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    sys.path.insert(0, str(REPO / "benchmarks"))
    from service import collect_request  # the same request benchmarks/service.py uses

    body, ca = collect_request(work / "lab", corpus)
    (work / "request.bin").write_bytes(body)
    (work / "anchors.pem").write_bytes(Path(ca).read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (work / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (work / "dbx.json").write_bytes(
        (corpus / "secureboot" / "dbx_info_msft_latest.json").read_bytes())
    (work / "child.py").write_text(CHILD)


def callgrind_instructions(*argv: str) -> int:
    """Instructions ``python ARGV`` executes under callgrind (SystemExit if it fails)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         *argv], capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({' '.join(argv)}):\n{out.stderr[-2000:]}")
    return int(found.group(1))


def instructions(work: Path, tree: Path, mode: str, rounds: int) -> int:
    return callgrind_instructions(str(work / "child.py"), str(tree), mode, str(rounds),
                                  str(work))


def per_round(work: Path, tree: Path, rounds: int) -> dict[str, float]:
    base = instructions(work, tree, "repeat", 0)
    return {mode: (instructions(work, tree, mode, rounds) - base) / rounds
            for mode in ("repeat", "new")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", type=Path, help="another source tree to compare with")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        prepare(work, args.corpus)
        this = per_round(work, REPO, args.rounds)
        other = per_round(work, args.against, args.rounds) if args.against else None
    for mode, label in (("repeat", "repeat boot"), ("new", "new boot")):
        line = f"{label:12s} {this[mode] / 1e6:8.2f} M instructions per attestation"
        if other is not None:
            line += (f"   against {args.against}: {other[mode] / 1e6:8.2f} M "
                     f"(ratio {this[mode] / other[mode]:.3f})")
        print(line)


if __name__ == "__main__":
    main()
