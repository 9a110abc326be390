"""Policy management through HTTPS: get/set/reset, both trust models, signers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt

from bootwatch.policy import default_azureguest_policy, policy_token_hash

POLICY = (
    "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\n"
    'issuancerules\n{\n    => issue(type="bootwatch-test", value=true);\n};\n'
)
AUTH = {"Authorization": "Bearer test-admin-token-0123456789"}
Q = "?api-version=2020-10-01"


def stored_policy_text(h: Any, token: str) -> str:
    import base64

    inner = h.unverified_claims(token)["x-ms-policy"]
    payload = jwt.api_jws.decode_complete(inner, options={"verify_signature": False})["payload"]
    b64 = json.loads(payload)["AttestationPolicy"]
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode()


def unsigned(text: str) -> str:
    from bootwatch.policy import unsigned_policy_jws

    return unsigned_policy_jws(text)


def test_shared_provider_serves_the_default_policy_and_refuses_changes(svc: Any, h: Any) -> None:
    with svc.client() as c:
        r = c.get(f"/policies/azureguest{Q}")
        assert r.status_code == 200, r.text
        assert stored_policy_text(h, r.json()["token"]) == default_azureguest_policy()
        r = c.put(f"/policies/AzureGuest{Q}", content=unsigned(POLICY), headers=AUTH)
        assert r.status_code == 400
        assert r.headers["x-ms-error-code"] == "InvalidOperation"
        assert "shared provider" in r.json()["error"]["message"]
        r = c.post(f"/policies/AzureGuest:reset{Q}", content="eyJhbGciOiJub25lIn0..", headers=AUTH)
        assert r.json()["error"]["code"] == "InvalidOperation"


def test_aad_set_get_reset_unsigned_with_admin_token(svc: Any, h: Any) -> None:
    jws = unsigned(POLICY)
    with svc.client() as c:
        r = c.put(f"/providers/aadp/policies/Tpm{Q}", content=jws, headers=AUTH)
        assert r.status_code == 200, r.text
        claims = h.unverified_claims(r.json()["token"])
        assert claims["x-ms-policy-result"] == "Updated"
        assert claims["x-ms-policy-token-hash"] == policy_token_hash(jws)
        assert claims["exp"] - claims["iat"] == 3600
        assert claims["iss"] == f"{svc.url}/providers/aadp"
        assert "x-ms-policy-signer" not in claims
        r = c.get(f"/providers/aadp/policies/TPM{Q}")
        assert stored_policy_text(h, r.json()["token"]) == POLICY
        r = c.post(
            f"/providers/aadp/policies/Tpm:reset{Q}", content="eyJhbGciOiJub25lIn0..", headers=AUTH
        )
        assert r.status_code == 200, r.text
        # MAA's reset answer has these claims only (SDK recording
        # test_aad_reset_policy_secured); ours added the token hash and signer
        assert set(h.unverified_claims(r.json()["token"])) == {
            "exp", "iat", "iss", "nbf", "x-ms-policy-result"}
        assert h.unverified_claims(r.json()["token"])["x-ms-policy-result"] == "Removed"
        r = c.get(f"/providers/aadp/policies/Tpm{Q}")
        assert stored_policy_text(h, r.json()["token"]) != POLICY


def test_aad_plain_text_policy_and_signed_policy(svc: Any, h: Any, stranger: Any) -> None:
    with svc.client() as c:
        r = c.put(f"/providers/aadp/policies/SgxEnclave{Q}", content=POLICY, headers=AUTH)
        assert r.status_code == 200, r.text
        key, cert = stranger
        from bootwatch.policy import sign_policy

        jws = sign_policy(POLICY, key, cert)
        r = c.put(f"/providers/aadp/policies/SgxEnclave{Q}", content=jws, headers=AUTH)
        assert r.status_code == 200, r.text
        claims = h.unverified_claims(r.json()["token"])
        assert claims["x-ms-policy-signer"]["x5c"] == [h.x5c(cert)]
        r = c.get(f"/providers/aadp/policies/SgxEnclave{Q}")
        assert h.unverified_claims(r.json()["token"])["x-ms-policy-signer"]["x5c"] == [h.x5c(cert)]


def test_aad_write_needs_a_principal(svc: Any) -> None:
    with svc.client() as c:
        r = c.put(f"/providers/aadp/policies/Tpm{Q}", content=unsigned(POLICY))
        assert r.status_code == 401
        assert r.headers["x-ms-error-code"] == "Unauthorized"
        assert "bearer token" in r.json()["error"]["message"]
        r = c.put(
            f"/providers/aadp/policies/Tpm{Q}",
            content=unsigned(POLICY),
            headers={"Authorization": "Bearer wrong-token"},
        )
        assert r.status_code == 401


def test_policy_parsing_error_names_the_place(svc: Any) -> None:
    with svc.client() as c:
        r = c.put(
            f"/providers/aadp/policies/Tpm{Q}",
            content=unsigned("version=1.0; authorizationrules { => permit( };"),
            headers=AUTH,
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "PolicyParsingError"
        assert "line" in r.json()["error"]["message"]


def test_unknown_attestation_type_and_provider(svc: Any) -> None:
    with svc.client() as c:
        r = c.get(f"/policies/Nope{Q}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"
        assert "attestationType" in r.json()["error"]["message"]
        r = c.get(f"/providers/ghost/policies/Tpm{Q}")
        assert r.status_code == 404


def test_isolated_policy_writes_must_be_signed_by_a_signer(
    svc: Any, h: Any, signer1: Any, stranger: Any
) -> None:
    from bootwatch.policy import sign_policy

    with svc.client() as c:
        r = c.put(f"/providers/iso/policies/AzureGuest{Q}", content=unsigned(POLICY), headers=AUTH)
        # an Isolated provider takes only documents signed by one of its signers
        assert r.status_code == 401 and r.json()["error"]["code"] == "Unauthorized", r.text
        r = c.put(
            f"/providers/iso/policies/AzureGuest{Q}",
            content=sign_policy(POLICY, *stranger),
            headers=AUTH,
        )
        assert r.status_code == 401, r.text
        good = sign_policy(POLICY, *signer1)
        r = c.put(f"/providers/iso/policies/AzureGuest{Q}", content=good, headers=AUTH)
        assert r.status_code == 200, r.text
        claims = h.unverified_claims(r.json()["token"])
        assert claims["x-ms-policy-token-hash"] == policy_token_hash(good)
        assert claims["x-ms-policy-signer"]["x5c"] == [h.x5c(signer1[1])]
        # reset: unsigned refused, signed accepted
        r = c.post(
            f"/providers/iso/policies/AzureGuest:reset{Q}",
            content="eyJhbGciOiJub25lIn0..",
            headers=AUTH,
        )
        assert r.status_code == 401
        r = c.post(
            f"/providers/iso/policies/AzureGuest:reset{Q}",
            content=h.signed_jws(None, *signer1),
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        r = c.get(f"/providers/iso/policies/AzureGuest{Q}")
        assert stored_policy_text(h, r.json()["token"]) == default_azureguest_policy()


def _cert_body(h: Any, cert: Any, key_cert: Any, *, as_json_string: bool = True) -> str:
    jws = h.signed_jws({"policyCertificate": {"kty": "RSA", "x5c": [h.x5c(cert)]}}, *key_cert)
    return json.dumps(jws) if as_json_string else jws


def test_isolated_signer_add_remove_and_last_signer(
    svc: Any, h: Any, signer1: Any, signer2: Any, stranger: Any
) -> None:
    from cryptography.hazmat.primitives import hashes

    thumb2 = signer2[1].fingerprint(hashes.SHA1()).hex().upper()
    with svc.client() as c:
        # not signed by a current signer
        r = c.post(
            f"/providers/iso/certificates:add{Q}", content=_cert_body(h, signer2[1], stranger),
            headers=AUTH,
        )
        assert r.status_code == 401, r.text
        r = c.post(
            f"/providers/iso/certificates:add{Q}", content=_cert_body(h, signer2[1], signer1),
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        claims = h.unverified_claims(r.json()["token"])
        assert claims["x-ms-certificate-thumbprint"] == thumb2
        assert claims["x-ms-policycertificates-result"] == "IsPresent"
        r = c.get(f"/providers/iso/certificates{Q}")
        keys = h.unverified_claims(r.json()["token"])["x-ms-policy-certificates"]["keys"]
        assert {k["x5c"][0] for k in keys} == {h.x5c(signer1[1]), h.x5c(signer2[1])}
        # the new signer may now sign; the spec's object body form works too
        body = json.dumps(
            {"policyCertificateToRemove": _cert_body(h, signer1[1], signer2, as_json_string=False)}
        )
        r = c.post(f"/providers/iso/certificates:remove{Q}", content=body, headers=AUTH)
        assert r.status_code == 200, r.text
        assert (
            h.unverified_claims(r.json()["token"])["x-ms-policycertificates-result"] == "IsAbsent"
        )
        # signer2 is the last one now
        r = c.post(
            f"/providers/iso/certificates:remove{Q}", content=_cert_body(h, signer2[1], signer2),
            headers=AUTH,
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "InvalidOperation"
        assert "last policy signer" in r.json()["error"]["message"]
        # restore signer1 for the other tests
        r = c.post(
            f"/providers/iso/certificates:add{Q}", content=_cert_body(h, signer1[1], signer2),
            headers=AUTH,
        )
        assert r.status_code == 200


def test_signer_changes_refused_on_aad_and_shared(svc: Any, h: Any, signer1: Any) -> None:
    with svc.client() as c:
        for prefix in ("/providers/aadp", ""):
            r = c.post(
                f"{prefix}/certificates:add{Q}",
                content=_cert_body(h, signer1[1], signer1),
                headers=AUTH,
            )
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "InvalidOperation"


def test_malformed_management_bodies(svc: Any) -> None:
    with svc.client() as c:
        for body in ('"not a jws"', "{", '{"policyCertificateToAdd": 5}', "a.b"):
            r = c.post(f"/providers/iso/certificates:add{Q}", content=body)
            # no credentials: refused before the body is read
            assert r.status_code == 401, (body, r.text)
            assert r.json()["error"]["code"] == "Unauthorized"
            r = c.post(f"/providers/iso/certificates:add{Q}", content=body, headers=AUTH)
            assert r.status_code == 400, (body, r.text)  # authorised: the body is refused
            assert r.json()["error"]["code"] in ("InvalidParameter", "InvalidOperation")
        r = c.put(f"/providers/aadp/policies/Tpm{Q}", content=b"\xff\xfe", headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"


def test_http_request_to_https_fails(svc: Any) -> None:
    plain = svc.url.replace("https://", "http://")
    try:
        httpx.get(f"{plain}/healthz", timeout=5)
    except httpx.HTTPError:
        return
    raise AssertionError("plain HTTP must not be served on the TLS port")
