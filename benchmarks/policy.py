"""Policy engine benchmark: parse time of the largest sample policy, and evaluation time of
the default AzureGuest policy over a realistic azurevm claim set (~30 claims).

Run: python benchmarks/policy.py   (reads the sample policies from ../shared or $BOOTWATCH_SHARED)

There is no open-source MAA policy engine to run side by side; the ratio printed is against
the 100 us per-evaluation target of issue 4.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from _load import MachineLoad

from bootwatch.policy import (
    Claim,
    PolicyCompiler,
    default_azureguest_policy,
    evaluate,
)
from bootwatch.policy.parser import parse_policy

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared"))
POLICIES = SHARED / "corpus" / "maa" / "policies"


def _azurevm_claims() -> list[Claim]:
    """The incoming claims of a healthy Trusted Launch VM (names from maa-protocol.md 3)."""
    svc = Claim.service
    booleans = [
        "secureboot",
        "x-ms-azurevm-attestation-protocol-ver",
        "x-ms-azurevm-bootdebug-enabled",
        "x-ms-azurevm-debuggersdisabled",
        "x-ms-azurevm-default-securebootkeysvalidated",
        "x-ms-azurevm-dbvalidated",
        "x-ms-azurevm-dbxvalidated",
        "x-ms-azurevm-elam-enabled",
        "x-ms-azurevm-flightsigning-enabled",
        "x-ms-azurevm-hvci-policy",
        "x-ms-azurevm-hypervisordebug-enabled",
        "x-ms-azurevm-is-windows",
        "x-ms-azurevm-kerneldebug-enabled",
        "x-ms-azurevm-signingdisabled",
        "x-ms-azurevm-testsigning-enabled",
        "x-ms-azurevm-vmid-present",
    ]
    claims = [svc(name, not name.endswith("-enabled")) for name in booleans]
    claims += [
        svc("x-ms-attestation-type", "azurevm"),
        svc("x-ms-azurevm-osbuild", "NotApplication"),
        svc("x-ms-azurevm-osdistro", "Microsoft"),
        svc("x-ms-azurevm-ostype", "Windows"),
        svc("x-ms-azurevm-osversion-major", 10),
        svc("x-ms-azurevm-osversion-minor", 0),
        svc("x-ms-azurevm-vmid", "2DEDC52A-6832-46CE-9910-E8C9980BF5A7"),
        svc("x-ms-azurevm-pcrs", "0,1,2,3,4,5,6,7,11,12,13,14"),
        svc("x-ms-isolation-tee", "{}"),
        svc("x-ms-policy-hash", "wm9mHlvTU82e8UqoOy1Yj1FBRSNkfe99-69IYDq9eWs"),
        svc("x-ms-runtime", "{}"),
        svc("x-ms-ver", "1.0"),
        Claim.custom("nonce", "1234"),
        Claim.custom("client-payload", "{}"),
    ]
    return claims


def _best_per_call(fn, number: int, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main() -> None:
    load = MachineLoad()
    largest = max(
        POLICIES.glob("*.txt"),
        key=lambda p: (
            p.stat().st_size
            if p.read_text(encoding="utf-8").lstrip().lower().startswith("version")
            else 0
        ),
    )
    text = largest.read_text(encoding="utf-8")
    parse_policy(text)  # build the lark parser once (grammar load, LALR tables)
    parse = _best_per_call(lambda: parse_policy(text), 50)
    print(f"parse  {largest.name} ({len(text)} chars): {parse * 1e3:.2f} ms per parse")

    default = default_azureguest_policy()
    claims = _azurevm_claims()
    compiler = PolicyCompiler()  # what a service's provider store owns
    compiled = compiler.compile(default)
    result = evaluate(compiled, claims)
    assert result.permitted, result.reason
    cached = _best_per_call(lambda: evaluate(compiler.compile(default), claims), 5000)
    bare = _best_per_call(lambda: evaluate(compiled, claims), 5000)
    print(
        f"eval   default AzureGuest policy, {len(claims)} claims, PolicyCompiler hit: "
        f"{cached * 1e6:.1f} us per evaluation ({cached * 1e6 / 100:.2f} x the 100 us target)"
    )
    print(f"eval   same, CompiledPolicy held by the caller: {bare * 1e6:.1f} us per evaluation")
    print(load.report())


if __name__ == "__main__":
    main()
