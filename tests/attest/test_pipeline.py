"""The whole pipeline on the real Azure Trusted Launch request (fixed clock, generated key)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import jwt
import pytest
from attest_corpus import AZURE, SECUREBOOT, azure_request_body
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.attest.claims import dbx_reference_from_json
from bootwatch.attest.pipeline import ProviderInputs, Verdict, attest_azure_guest
from bootwatch.policy import default_azureguest_policy
from bootwatch.policy.compiler import compile_policy
from bootwatch.policy.hashes import policy_hash
from bootwatch.protocol import token as t
from bootwatch.tpm.aik import TrustAnchors

#: inside the AIK certificate's validity (2024-02-07 .. 2025-10-30)
AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _sign(claims):  # type: ignore[no-untyped-def]
    return jwt.encode(dict(claims), KEY, algorithm="RS256", headers={"kid": "k", "typ": "JWT"})


def _inputs(text: str | None = None, **kw) -> ProviderInputs:  # type: ignore[no-untyped-def]
    text = text or default_azureguest_policy()
    dbx = dbx_reference_from_json((SECUREBOOT / "dbx_info_msft_latest.json").read_bytes(),
                                  source="dbx_info_msft_latest.json")
    base = dict(issuer="https://bw.test", policy=compile_policy(text),
                policy_hash=policy_hash(text), sign=_sign, trust_anchors=TrustAnchors(()),
                dbx_reference=dbx,
                require_aik_certificate=False)
    base.update(kw)
    return ProviderInputs(**base)


def test_real_azure_request_is_permitted() -> None:
    out = attest_azure_guest(azure_request_body(), provider=_inputs(), now=AT, jti="00" * 32)
    assert out.verdict is Verdict.PERMIT, out.reason
    assert out.token is not None and out.envelope is not None
    claims = jwt.decode(out.token, KEY.public_key(), algorithms=["RS256"],
                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert claims == out.token_claims
    assert claims["iss"] == "https://bw.test" and claims["jti"] == "00" * 32
    assert claims["exp"] - claims["iat"] == 28800
    assert claims[t.ATTESTATION_TYPE] == "azurevm" and claims[t.VER] == "1.0"
    assert claims[t.POLICY_HASH] == policy_hash(default_azureguest_policy())
    assert claims[t.SECUREBOOT] is True and claims[t.DBX_VALIDATED] is True
    assert claims[t.RUNTIME]["keys"][0]["kid"] == t.EPHEMERAL_KEY_KID
    # the OpenID metadata advertises exactly the azurevm claims the token carries
    issued = {k for k in claims if k.startswith(t.PREFIX) or k in (t.SECUREBOOT, t.RUNTIME)}
    advertised = set(t.CLAIMS_SUPPORTED)
    assert issued <= advertised, issued - advertised
    # (the vmid comes from an AIK certificate that chains to an anchor: none here)
    assert {c for c in advertised if c.startswith(t.PREFIX)} <= issued | {t.VMID}
    by_name = {c.name: c for c in out.checks}
    assert by_name["aik_certificate"].passed is False  # no issuer CA is public
    assert all(c.passed for n, c in by_name.items() if n != "aik_certificate")


def test_aik_certificate_required_by_default() -> None:
    out = attest_azure_guest(azure_request_body(), provider=_inputs(require_aik_certificate=True),
                             now=AT)
    assert out.verdict is Verdict.EVIDENCE_REJECTED and out.failed_check == "aik_certificate"
    assert "aik_certificate" in out.reason and out.token is None


def test_deny_names_the_rule() -> None:
    policy = """version=1.0;
authorizationrules {
  [type=="x-ms-azurevm-is-windows", value==true] => deny();
  => permit();
};
issuancerules { };"""
    out = attest_azure_guest(azure_request_body(), provider=_inputs(policy), now=AT)
    assert out.verdict is Verdict.DENY and out.token is None
    assert out.deciding_rule is not None and "x-ms-azurevm-is-windows" in out.deciding_rule
    assert "x-ms-azurevm-is-windows" in out.reason


def test_issued_claims_and_validity_property() -> None:
    policy = """version=1.1;
configurationrules { => issueproperty(type="report_validity_in_minutes", value=60); };
authorizationrules { => permit(); };
issuancerules {
  c:[type=="secureboot"] => issue(type="sb-copy", value=c.value);
};"""
    out = attest_azure_guest(azure_request_body(), provider=_inputs(policy), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason
    assert out.token_claims is not None
    assert out.token_claims["sb-copy"] is True
    assert out.token_claims["exp"] - out.token_claims["iat"] == 3600


def test_tampered_request_is_invalid_with_check_named() -> None:
    body = json.loads(azure_request_body())
    inner = json.loads(base64.urlsafe_b64decode(body["AttestationInfo"] + "=="))
    pcrs = inner["TpmInfo"]["PCRs"]
    pcrs[0]["Digest"] = base64.b64encode(b"\x00" * 32).decode()
    token = base64.urlsafe_b64encode(json.dumps(inner).encode()).rstrip(b"=").decode()
    out = attest_azure_guest(json.dumps({"AttestationInfo": token}).encode(),
                             provider=_inputs(), now=AT)
    assert out.verdict is Verdict.EVIDENCE_REJECTED
    assert out.failed_check == "pcr_digest", out.reason


@pytest.mark.parametrize("body", [b"", b"{}", b"not json", b'{"AttestationInfo": "@@"}'])
def test_malformed_requests(body: bytes) -> None:
    out = attest_azure_guest(body, provider=_inputs(), now=AT)
    assert out.verdict is Verdict.EVIDENCE_REJECTED and out.failed_check == "request"
    assert out.reason.startswith("request: ")


def test_policy_property_decides_aik_requirement() -> None:
    strict = attest_azure_guest(azure_request_body(),
                                provider=_inputs(require_aik_certificate=None), now=AT)
    assert strict.verdict is Verdict.EVIDENCE_REJECTED and strict.failed_check == "aik_certificate"
    lenient = """version=1.1;
configurationrules { => issueproperty(type="require_valid_aik_cert", value=false); };
authorizationrules { => permit(); };
issuancerules { };"""
    out = attest_azure_guest(azure_request_body(),
                             provider=_inputs(lenient, require_aik_certificate=None), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason


def test_signed_policy_puts_the_signer_in_the_token() -> None:
    signer = {"kty": "RSA", "x5c": ["MIIB"], "kid": "signer-1"}
    out = attest_azure_guest(azure_request_body(), provider=_inputs(policy_signer=signer), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason
    assert out.token_claims is not None
    assert out.token_claims[t.POLICY_SIGNER] == signer


def test_events_claim_only_for_policies_that_read_it() -> None:
    reads = """version=1.2;
authorizationrules {
  c:[type=="events", issuer=="AttestationService"] => add(type="n",
    value=JsonToClaimValue(JmesPath(c.value, "length(Events)")));
  [type=="n", value==34] => permit();
};
issuancerules { };"""
    out = attest_azure_guest(azure_request_body(), provider=_inputs(reads), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason
    # 34 = every record of the log, the Spec ID header included (events_claim drops none)
    # without "events" in its text a policy does not get the claim (it is costly to build)
    blind = """version=1.2;
authorizationrules { c:[type=="pcrs"] => permit(); };
issuancerules { };"""
    assert attest_azure_guest(azure_request_body(), provider=_inputs(blind), now=AT).permitted


def _mask_policy(mask: int) -> str:
    return f"""version=1.1;
configurationrules {{
  => issueproperty(type="required_pcr_mask", value={mask});
}};
authorizationrules {{ => permit(); }};
issuancerules {{ }};"""


def test_explicit_required_pcr_mask_is_enforced() -> None:
    # the real request quotes PCR 0-7 and 11-14: a mask asking for PCR 8 and 9 is refused
    out = attest_azure_guest(azure_request_body(), provider=_inputs(_mask_policy(0x3FF)),
                             now=AT)
    assert out.verdict is Verdict.DENY and out.token is None
    assert "required_pcr_mask requires PCR 8, 9" in out.reason
    # a mask the quote covers is fine
    ok = attest_azure_guest(azure_request_body(), provider=_inputs(_mask_policy(0x78FF)),
                            now=AT)
    assert ok.verdict is Verdict.PERMIT, ok.reason


def test_tpm_default_mask_is_not_applied_to_azurevm() -> None:
    # without an explicit mask the TPM default (0xFFFFFF) would refuse every azurevm quote
    out = attest_azure_guest(azure_request_body(), provider=_inputs(), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason


def test_maas_issue_all_incoming_claims_sample_is_permitted() -> None:
    """MAA's published sample issues ``events`` as ``outputEvents``; the pipeline made
    ``events`` read-only (maa-protocol 2.3 documents only ``pcrs`` so), and the sample
    denied every attestation (found in review)."""
    sample = (AZURE.parent / "policies" /
              "tpm-sample-policies__issue-all-incoming-claims-1.2.txt").read_text("utf-8")
    out = attest_azure_guest(azure_request_body(), provider=_inputs(sample), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason
    assert out.token_claims is not None and out.token_claims["outputEvents"]


def test_a_token_lifetime_the_policy_engine_accepts_is_issued() -> None:
    """``report_validity_in_minutes`` up to one year passed the policy engine, but the token
    code capped it at 30 days and denied every attestation (found in review)."""
    days_90 = 90 * 24 * 60
    text = default_azureguest_policy().replace(
        "version=1.0;", "version=1.1;\nconfigurationrules { => issueproperty("
        f'type="report_validity_in_minutes", value={days_90}); }};', 1)
    out = attest_azure_guest(azure_request_body(), provider=_inputs(text), now=AT)
    assert out.verdict is Verdict.PERMIT, out.reason
    assert out.token_claims is not None
    assert out.token_claims["exp"] - out.token_claims["iat"] == days_90 * 60
    too_long = text.replace(str(days_90), str(367 * 24 * 60))
    out = attest_azure_guest(azure_request_body(), provider=_inputs(too_long), now=AT)
    assert out.verdict is Verdict.DENY and "one year" in out.reason, out.reason
