"""Every sample policy of the MAA docs: it parses (or fails where INDEX.md says the doc has a
typo), and gives the documented result on the documented input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootwatch.errors import PolicyEvaluationError, PolicyParsingError
from bootwatch.policy import Claim, ClaimIssuer, ClaimValueType, compile_policy, evaluate

svc = Claim.service

#: Whole policies -> the named leniencies each relies on (empty: follows the grammar).
PARSES = {
    "author-sign-policy__step3-deny-1.0.txt": set(),
    "author-sign-policy__step4-authorization-1.0.txt": set(),
    "author-sign-policy__step5-issuance-1.0.txt": set(),
    "claim-rule-functions__sample-secure-boot-1.2.txt": {"single-equals-in-condition"},
    "policy-examples__sgx-default-signed.decoded-policy.txt": set(),
    "policy-examples__sgx-default-unsigned.decoded-policy.txt": set(),
    "policy-v1.0__sample-tpm-1.0.txt": set(),
    "policy-v1.1__sample-tpm-1.1.txt": set(),
    "policy-v1.2__sample-tpm-1.2.txt": {"single-equals-in-condition", "positional-claim-type"},
    "tpm-attestation-concepts__secureboot-hvci-malicious-driver-1.2.txt": {
        "single-equals-in-condition",
        "unknown-escape-kept",
    },
    "tpm-sample-policies__boot-properties-1.2.txt": set(),
    "tpm-sample-policies__drivers-loaded-1.2.txt": set(),
    "tpm-sample-policies__issue-all-incoming-claims-1.2.txt": set(),
    "tpm-sample-policies__key-attestation-1.2.txt": {"issue-in-authorizationrules"},
    "tpm-sample-policies__linux-firmware-keys-ima-1.2.txt": set(),
    "tpm-sample-policies__minimal-1.0.txt": set(),
    "tpm-sample-policies__pcr-allowlist-1.2.txt": set(),
    "tpm-sample-policies__system-guard-1.2.txt": set(),
    "tpm-sample-policies__vbs-enclave-1.2.txt": set(),
    "tpm-sample-policies__windows-security-claims-1.2.txt": set(),
}

#: Whole policies with a typo INDEX.md lists -> (line, column, words in the message).
FAILS = {
    # missing ';' after permit() (INDEX: "Missing ; after a rule")
    "author-sign-policy__sample-1.0.txt": (5, 1, "expected ';'"),
    # curly quote (INDEX: "Curly quotes"); 'Version=' is accepted (named leniency)
    "policy-examples__sgx-default-1.0.txt": (4, 11, "'”'"),
    # issuancerules block ends with '}' and no ';' (INDEX: "Missing ; after a section's }")
    "tpm-attestation-concepts__secure-boot-minimal-1.0.txt": (12, 2, "expected ';'"),
}


def test_every_whole_policy_is_classified(policies_dir: Path) -> None:
    whole = {
        p.name
        for p in policies_dir.glob("*.txt")
        if p.read_text(encoding="utf-8").lstrip().lower().startswith("version")
        and "syntax" not in p.name
    }
    assert whole == set(PARSES) | set(FAILS)


@pytest.mark.parametrize("name", sorted(PARSES))
def test_sample_parses(pc, name: str) -> None:
    compiled = compile_policy(pc.read(name))
    assert {t.name for t in compiled.tolerances} == PARSES[name]


@pytest.mark.parametrize("name", sorted(FAILS))
def test_sample_with_typo_fails_at_the_typo(pc, name: str) -> None:
    line, column, words = FAILS[name]
    with pytest.raises(PolicyParsingError) as info:
        compile_policy(pc.read(name))
    assert (info.value.line, info.value.column) == (line, column)
    assert words in str(info.value)


def test_corrected_typos_parse(pc) -> None:
    """Fixing exactly the reported spot makes each failing sample valid."""
    fixed = (
        pc.read("author-sign-policy__sample-1.0.txt")
        .replace("permit()\n", "permit();\n")
        .replace("issue(claim=c)\n", "issue(claim=c);\n")
    )
    assert compile_policy(fixed).version == "1.0"
    fixed = pc.read("policy-examples__sgx-default-1.0.txt").replace("”", '"')
    assert {t.name for t in compile_policy(fixed).tolerances} == {"version-keyword-case"}
    fixed = pc.read("tpm-attestation-concepts__secure-boot-minimal-1.0.txt").rstrip() + ";\n"
    assert compile_policy(fixed).version == "1.0"


# --- author-sign-policy.md -------------------------------------------------------------------


def test_step3_unconditional_deny(pc) -> None:
    result = evaluate(compile_policy(pc.read("author-sign-policy__step3-deny-1.0.txt")), [])
    assert not result.permitted
    assert result.deciding_rule == "line 4: =>deny();"
    assert result.issued == ()


def test_step4_permits_only_with_secure_boot(pc) -> None:
    policy = compile_policy(pc.read("author-sign-policy__step4-authorization-1.0.txt"))
    assert evaluate(policy, [svc("secureBootEnabled", True)]).permitted
    assert not evaluate(policy, [svc("secureBootEnabled", False)]).permitted
    # the rule tests the issuer: the same claim sent by the client does not count
    assert not evaluate(policy, [Claim.custom("secureBootEnabled", True)]).permitted


def test_step5_outgoing_claim(pc) -> None:
    policy = compile_policy(pc.read("author-sign-policy__step5-issuance-1.0.txt"))
    result = evaluate(policy, [svc("secureBootEnabled", True)])
    # [type="SecurityLevelValue", value=100, valueType="Integer", issuer="AttestationPolicy"]
    expected = pc.read("author-sign-policy__step5-expected-outgoing-claim.txt")
    assert 'valueType="Integer"' in expected and 'issuer="AttestationPolicy"' in expected
    assert result.issued == (
        Claim("SecurityLevelValue", 100, ClaimValueType.INTEGER, ClaimIssuer.ATTESTATION_POLICY),
    )


# --- policy-examples.md (SGX default) -----------------------------------------------------------


def test_sgx_default_issues_enclave_claims(pc) -> None:
    policy = compile_policy(pc.read("policy-examples__sgx-default-signed.decoded-policy.txt"))
    incoming = [
        svc("$is-debuggable", False),
        svc("$sgx-mrsigner", "ab" * 32),
        svc("$svn", 3),
        svc("$tee-future", "x"),
    ]
    result = evaluate(policy, incoming)
    assert result.permitted
    assert [(c.type, c.value) for c in result.issued] == [
        ("is-debuggable", False),
        ("sgx-mrsigner", "ab" * 32),
        ("svn", 3),
        ("tee-future", "x"),
    ]
    assert not evaluate(policy, [svc("$svn", 3)]).permitted


# --- TPM 1.0 / 1.1 samples ----------------------------------------------------------------------

SIX = [
    "aikValidated",
    "secureBootEnabled",
    "bootDebuggingDisabled",
    "vbsEnabled",
    "notWinPE",
    "notSafeMode",
]


def test_minimal_10_platform_attested(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__minimal-1.0.txt"))
    good = [svc(n, True) for n in SIX]
    result = evaluate(policy, good)
    assert result.permitted and [(c.type, c.value) for c in result.issued] == [
        ("PlatformAttested", True)
    ]
    bad = [svc(n, n != "vbsEnabled") for n in SIX]
    assert evaluate(policy, bad).issued == ()


def test_v11_properties_and_both_outcomes(pc) -> None:
    policy = compile_policy(pc.read("policy-v1.1__sample-tpm-1.1.txt"))
    rest = [svc(n, True) for n in ("secureBootEnabled", "bootDebuggingDisabled", "notSafeMode")]
    result = evaluate(policy, [svc("aikValidated", False), *rest])
    assert result.properties["required_pcr_mask"] == 15
    assert result.properties["require_valid_aik_cert"] is False
    assert result.properties["report_validity_in_minutes"] == 1440
    assert result.properties["omit_x5c"] is False
    assert [(c.type, c.value) for c in result.issued] == [("PlatformAttested", False)]
    result = evaluate(policy, [svc("aikValidated", True), *rest])
    assert [(c.type, c.value) for c in result.issued] == [("PlatformAttested", True)]


def test_vbs_enclave(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__vbs-enclave-1.2.txt"))
    claims = [
        svc("vsmReportPresent", True),
        svc("enclaveAuthorId", "A" * 43),
        svc("enclaveImageId", "AQEAAAAAAAAAAAAAAAAAAA"),
        svc("enclaveSvn", 0),
    ]
    assert evaluate(policy, claims).permitted
    claims[3] = svc("enclaveSvn", -1)
    assert not evaluate(policy, claims).permitted


# --- 1.2 samples over a synthetic event log claim ---------------------------------------------

EFI_GLOBAL = "8BE4DF61-93CA-11D2-AA0D-00E098032B8C"


def _events(secure_boot: str | None, *, windows: bool = True) -> Claim:
    events: list[dict[str, object]] = []
    seq = 0

    def add(pcr: int, etype: str, data: dict[str, object]) -> None:
        nonlocal seq
        events.append(
            {"EventSeq": seq, "PcrIndex": pcr, "EventTypeString": etype, "ProcessedData": data}
        )
        seq += 1

    if secure_boot is not None:
        add(
            7,
            "EV_EFI_VARIABLE_DRIVER_CONFIG",
            {"VariableGuid": EFI_GLOBAL, "UnicodeName": "SecureBoot", "VariableData": secure_boot},
        )
    for name in ("PK", "KEK", "db", "dbx"):
        add(
            7,
            "EV_EFI_VARIABLE_DRIVER_CONFIG",
            {"VariableGuid": EFI_GLOBAL, "UnicodeName": name, "VariableData": "oVkUrQ"},
        )
    add(
        1,
        "EV_EFI_VARIABLE_BOOT",
        {"VariableGuid": EFI_GLOBAL, "UnicodeName": "BootOrder", "VariableData": "AAA"},
    )
    if windows:
        add(
            12,
            "EV_EVENT_TAG",
            {
                "EVENT_TRUSTBOUNDARY": {
                    "EVENT_BOOTDEBUGGING": False,
                    "EVENT_CODEINTEGRITY": True,
                    "EVENT_VBS_VSM_REQUIRED": True,
                    "EVENT_VBS_MANDATORY_ENFORCEMENT": True,
                    "EVENT_BITLOCKER_UNLOCK": {"Value": 0},
                    "EVENT_SAFEMODE": False,
                    "EVENT_WINPE": False,
                }
            },
        )
        add(
            13,
            "EV_EVENT_TAG",
            {
                "EVENT_TRUSTBOUNDARY": {
                    "EVENT_LOADEDMODULE_AGGREGATION": [
                        {
                            "EVENT_FILEPATH": "\\Windows\\System32\\drivers\\WdBoot.sys",
                            "EVENT_IMAGEVALIDATED": True,
                            "EVENT_MODULE_SVN": 1,
                        }
                    ]
                }
            },
        )
        add(12, "EV_SEPARATOR", {})
    return svc("events", json.dumps({"Events": events}))


def _issued(result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {c.type: c.value for c in result.issued}


@pytest.mark.parametrize(
    "name",
    [
        "claim-rule-functions__sample-secure-boot-1.2.txt",
        "tpm-sample-policies__windows-security-claims-1.2.txt",
    ],
)
def test_secure_boot_from_events(pc, name: str) -> None:
    policy = compile_policy(pc.read(name))
    assert _issued(evaluate(policy, [_events("AQ")]))["secureBootEnabled"] is True
    assert _issued(evaluate(policy, [_events("AA")]))["secureBootEnabled"] is False
    # no SecureBoot variable at all: the ! rule gives the default
    assert _issued(evaluate(policy, [_events(None)]))["secureBootEnabled"] is False


def test_v12_sample_platform_attested(pc) -> None:
    """ELAM rules read 'boolProperties', which this sample never adds (INDEX.md), so
    WindowsDefenderElamDriverLoaded is false and PlatformAttested is never issued."""
    policy = compile_policy(pc.read("policy-v1.2__sample-tpm-1.2.txt"))
    result = evaluate(policy, [_events("AQ")])
    added = {c.type: c.value for c in result.incoming if c.issuer is ClaimIssuer.ATTESTATION_POLICY}
    assert added["secureBootEnabled"] is True
    assert added["WindowsDefenderElamDriverLoaded"] is False
    assert result.issued == ()
    # with the missing claim supplied, the equals_ignore_case query finds WdBoot.sys
    bool_props = Claim(
        "boolProperties",
        json.dumps(
            [
                {
                    "EVENT_LOADEDMODULE_AGGREGATION": [
                        {
                            "EVENT_FILEPATH": "\\WINDOWS\\system32\\drivers\\wdboot.sys",
                            "EVENT_IMAGEVALIDATED": True,
                        }
                    ]
                }
            ]
        ),
        ClaimValueType.STRING,
        ClaimIssuer.ATTESTATION_POLICY,
    )
    result = evaluate(policy, [_events("AQ"), bool_props])
    assert _issued(result) == {"PlatformAttested": True}


def test_boot_properties_sample(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__boot-properties-1.2.txt"))
    result = evaluate(policy, [_events("AQ"), svc("aikValidated", True)])
    assert _issued(result) == {
        "aikValidated": True,
        "SecureBootEnabled": True,
        "CodeIntegrityEnabled": True,
        "BitlockerStatus": False,
        "ELAMDriverLoaded": True,
    }


def test_linux_sample_defaults_and_values(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__linux-firmware-keys-ima-1.2.txt"))
    result = evaluate(policy, [_events("AQ", windows=False), svc("aikValidated", True)])
    issued = _issued(result)
    assert issued["secureBootEnabled"] is True
    assert issued["platformKey"] == "oVkUrQ"
    assert issued["bootOrder"] == "AAA"
    # no IMA events: kernelVersionsFound is "[]" (so the ! default does not fire) and
    # JsonToClaimValue of an empty array is an empty set, so nothing is issued
    assert "kernelVersions" not in issued


def test_issue_all_incoming_claims(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__issue-all-incoming-claims-1.2.txt"))
    events = _events("AQ")
    result = evaluate(policy, [events, svc("bootEvents", "[]")])
    assert _issued(result) == {"outputBootEvents": "[]", "outputEvents": events.value}


def test_pcr_allowlist_against_the_trusted_launch_example(pc) -> None:
    """INDEX.md: the derived Trusted Launch VM's PCR1 differs from the golden value, so the
    sample does not permit it; with the golden values it does."""
    policy = compile_policy(pc.read("tpm-sample-policies__pcr-allowlist-1.2.txt"))
    derived = json.loads((pc.dir.parent / "azure-guest-vm-derived" / "pcrs.json").read_text())

    def pcrs(hexes: dict[str, str]) -> Claim:
        doc = {"PCRs": [{"Index": int(i), "Digests": {"SHA256": h}} for i, h in hexes.items()]}
        return Claim.service("pcrs", json.dumps(doc), read_only=True)

    result = evaluate(policy, [pcrs(derived["pcrs_hex"])])
    assert not result.permitted and result.deciding_rule is None
    added = {c.type: c.value for c in result.incoming if c.type.endswith("Validated")}
    assert added == {
        "pcr0Validated": False,
        "pcr1Validated": False,
        "pcr2Validated": True,
        "pcr3Validated": True,
    }
    golden = {
        "0": "4c833b1c361fceffd8dc0f81eec76081b71e1a0eb2193caed0b6e1c7735ec33e",
        "1": "8c25e3be6ad6f5bd33c9ae40d5d5461e88c1a7366df0c9ee5c7e5ff40d3d1d0e",
        "2": derived["pcrs_hex"]["2"],
        "3": derived["pcrs_hex"]["3"],
    }
    result = evaluate(policy, [pcrs(golden)])
    assert result.permitted
    assert result.deciding_rule is not None and result.deciding_rule.startswith("line 10: ")


def test_key_attestation_sample(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__key-attestation-1.2.txt"))
    key = {"jwk": {"kty": "RSA"}, "info": {"tpm_certify": {"obj_attr": 50, "name_alg": 11}}}
    result = evaluate(policy, [svc("x-ms-tpm-request-key", json.dumps(key))])
    assert result.permitted
    key["info"]["tpm_certify"]["obj_attr"] = 0x72  # type: ignore[index]
    assert not evaluate(policy, [svc("x-ms-tpm-request-key", json.dumps(key))]).permitted


def test_system_guard_without_drtm_event(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__system-guard-1.2.txt"))
    assert _issued(evaluate(policy, [_events("AQ")])) == {"drtmMleValid": False}


def test_drivers_loaded_sample(pc) -> None:
    policy = compile_policy(pc.read("tpm-sample-policies__drivers-loaded-1.2.txt"))
    issued = _issued(evaluate(policy, [_events("AQ")]))
    assert json.loads(issued["alldriverloads"]) == ["\\Windows\\System32\\drivers\\WdBoot.sys"]
    # lower-case 'events[?' and PcrIndex == '13' match nothing (INDEX.md)
    assert issued["DriverLoadPolicy"] == "null"


def test_concepts_sample_bare_jmespath_number_is_an_evaluation_error(pc) -> None:
    """'PcrIndex == 12' (bare number) is not JMESPath; bootwatch reports the rule."""
    policy = compile_policy(
        pc.read("tpm-attestation-concepts__secureboot-hvci-malicious-driver-1.2.txt")
    )
    with pytest.raises(PolicyEvaluationError) as info:
        evaluate(policy, [_events("AQ")])
    assert str(info.value).startswith("line 17: ")
    assert "JmesPath" in str(info.value)
