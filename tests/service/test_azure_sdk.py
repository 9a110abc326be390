"""The Azure SDK (azure-security-attestation 1.0.0) against the service over HTTPS.

SDK quirks (vtpm-notes.md section 3): a credential object with get_token is
mandatory, the AzureGuest type is passed as a string, retry_total=0 in tests,
signed bodies use alg "RSA256" with jwk.x5c, add/remove bodies are JSON strings.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytest.importorskip("six")
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.security.attestation import (
    AttestationAdministrationClient,
    AttestationClient,
)

POLICY = "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\nissuancerules\n{\n};\n"


class StaticCredential:
    """Any object with get_token works; this one returns the static admin token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def _kw(svc: Any) -> dict[str, Any]:
    return {"connection_verify": svc.ca, "retry_total": 0}


def test_sdk_open_id_metadata_and_signing_certificates(svc: Any, h: Any) -> None:
    client = AttestationClient(svc.url, StaticCredential(h.ADMIN_TOKEN), **_kw(svc))
    meta = client.get_open_id_metadata()
    assert meta["issuer"] == svc.url and meta["jwks_uri"] == f"{svc.url}/certs"
    signers = client.get_signing_certificates()
    assert signers and signers[0].key_id and signers[0].certificates[0].startswith("-----BEGIN")


def test_sdk_get_policy_on_shared_provider(svc: Any, h: Any) -> None:
    from bootwatch.policy import default_azureguest_policy

    admin = AttestationAdministrationClient(svc.url, StaticCredential(h.ADMIN_TOKEN), **_kw(svc))
    policy, _token = admin.get_policy("AzureGuest", validate_issuer=True, issuer=svc.url)
    assert policy == default_azureguest_policy()
    with pytest.raises(HttpResponseError) as exc:
        admin.set_policy("AzureGuest", POLICY)
    assert exc.value.status_code == 400
    assert "InvalidOperation" in str(exc.value)


def test_sdk_aad_set_reset_unsigned_and_signed(svc: Any, h: Any, stranger: Any) -> None:
    url = f"{svc.url}/providers/aadp"
    admin = AttestationAdministrationClient(url, StaticCredential(h.ADMIN_TOKEN), **_kw(svc))
    result, _ = admin.set_policy("AzureGuest", POLICY, validate_issuer=True, issuer=url)
    assert result.policy_resolution == "Updated"
    policy, _ = admin.get_policy("AzureGuest")
    assert policy == POLICY
    key, cert = stranger
    result, _ = admin.set_policy(
        "Tpm", POLICY, signing_key=h.pem(key), signing_certificate=h.pem(cert)
    )
    assert result.policy_resolution == "Updated"
    assert result.policy_signer.certificates[0] == h.pem(cert)
    result, _ = admin.reset_policy("AzureGuest")
    assert result.policy_resolution == "Removed"
    policy, _ = admin.get_policy("AzureGuest")
    assert policy != POLICY
    # without a valid token the SDK call fails with 401
    anon = AttestationAdministrationClient(url, StaticCredential("nope"), **_kw(svc))
    with pytest.raises(HttpResponseError) as exc:
        anon.set_policy("AzureGuest", POLICY)
    assert exc.value.status_code == 401


def test_sdk_isolated_policy_and_signers(svc: Any, h: Any, signer1: Any, signer2: Any) -> None:
    url = f"{svc.url}/providers/iso"
    k1, c1 = h.pem(signer1[0]), h.pem(signer1[1])
    admin = AttestationAdministrationClient(
        url, StaticCredential(h.ADMIN_TOKEN), signing_key=k1, signing_certificate=c1, **_kw(svc)
    )
    result, _ = admin.set_policy("AzureGuest", POLICY)
    assert result.policy_resolution == "Updated"
    assert admin.get_policy("AzureGuest")[0] == POLICY
    result, _ = admin.reset_policy("AzureGuest")
    assert result.policy_resolution == "Removed"

    certs, _ = admin.get_policy_management_certificates()
    assert [c1] in certs
    added, _ = admin.add_policy_management_certificate(h.pem(signer2[1]))
    assert added.certificate_resolution == "IsPresent"
    assert (
        added.certificate_thumbprint
        == signer2[1]
        .fingerprint(__import__("cryptography").hazmat.primitives.hashes.SHA1())
        .hex()
        .upper()
    )
    certs, _ = admin.get_policy_management_certificates()
    assert len(certs) == 2
    removed, _ = admin.remove_policy_management_certificate(h.pem(signer2[1]))
    assert removed.certificate_resolution == "IsAbsent"
    with pytest.raises(HttpResponseError) as exc:
        admin.remove_policy_management_certificate(c1)
    assert exc.value.status_code == 400 and "last policy signer" in str(exc.value)
