"""Edge cases of the service's management and token plane, each found failing first:
signer uploads, keys sealed at rest, bearer checks, policy resets."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootwatch.service.atrest import load_or_create_key

AUTH = {"Authorization": "Bearer test-admin-token-0123456789"}
Q = "?api-version=2020-10-01"
#: DER of the SubjectPublicKeyInfo algorithm rsaEncryption (OID 1.2.840.113549.1.1.1, NULL)
RSA_SPKI_ALG = bytes.fromhex("06092a864886f70d0101010500")
#: the same with an OID no library knows (1.2.840.113549.1.1.99)
UNKNOWN_SPKI_ALG = bytes.fromhex("06092a864886f70d0101630500")


def _isolated_provider(state: Any, name: str, signer: x509.Certificate) -> None:
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    with state.db.session() as s:
        if s.get(ProviderRow, name) is None:
            create_provider(s, state.sealer, name, kind=ProviderKind.CUSTOM,
                            trust_model=TrustModel.ISOLATED, signers=[signer])


def test_signer_whose_public_key_cannot_be_read_is_refused(
    svc: Any, h: Any, signer1: Any
) -> None:
    """A certificate whose key algorithm is unknown must be refused when it is added: once
    stored, every GET /certificates of the provider answered 500 (the JWK needs its key)."""
    _isolated_provider(svc.state, "iso-oddkey", signer1[1])
    _, cert = h.make_cert("signer with an unknown key algorithm")
    der = cert.public_bytes(serialization.Encoding.DER)
    odd = x509.load_der_x509_certificate(der.replace(RSA_SPKI_ALG, UNKNOWN_SPKI_ALG))
    jws = h.signed_jws({"policyCertificate": {"kty": "RSA", "x5c": [h.x5c(odd)]}}, *signer1)
    with svc.client() as c:
        r = c.post(f"/providers/iso-oddkey/certificates:add{Q}", content=json.dumps(jws),
                   headers=AUTH)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "InvalidParameter"
        assert "public key" in r.json()["error"]["message"]
        r = c.get(f"/providers/iso-oddkey/certificates{Q}")
        assert r.status_code == 200, r.text
        keys = h.unverified_claims(r.json()["token"])["x-ms-policy-certificates"]["keys"]
        assert [k["x5c"][0] for k in keys] == [h.x5c(signer1[1])]


def test_at_rest_key_created_once_by_concurrent_starts(tmp_path: Path) -> None:
    """Processes starting together on a new data dir all get the one key: a process that
    found the file its peer had just created (still empty) stopped with "at_rest_key must
    be 32 bytes", and one that lost the creation race with FileExistsError."""
    def start(d: Path, b: threading.Barrier, keys: list[bytes], errors: list[Exception]) -> None:
        b.wait()
        try:
            keys.append(load_or_create_key("", d))
        except Exception as exc:  # collected, and asserted below
            errors.append(exc)

    for trial in range(20):
        data_dir = tmp_path / f"d{trial}"
        barrier = threading.Barrier(8)
        keys: list[bytes] = []
        errors: list[Exception] = []
        threads = [threading.Thread(target=start, args=(data_dir, barrier, keys, errors))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"trial {trial}: {errors[:2]}"
        assert len(keys) == 8 and len(set(keys)) == 1
        assert load_or_create_key("", data_dir) == keys[0]
        assert (data_dir / "at-rest.key").stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in data_dir.iterdir()) == ["at-rest.key"]


@pytest.mark.parametrize("signature", ["c2ln", "AAAA"])
def test_unsigned_reset_must_have_an_empty_signature(
    svc: Any, signature: str
) -> None:
    """An ``alg: none`` reset with a signature part is malformed (RFC 7515: an unsecured
    JWS has an empty signature; a policy upload is held to that already): it was accepted
    and its token hash recorded as if it were the SDK's reset."""
    with svc.client() as c:
        r = c.post(f"/providers/aadp/policies/OpenEnclave:reset{Q}",
                   content=f"eyJhbGciOiJub25lIn0..{signature}", headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "InvalidParameter"
    assert "empty signature" in r.json()["error"]["message"]


def test_unknown_bearer_kids_do_not_refetch_the_issuer_every_time(
    service_factory: Any, h: Any
) -> None:
    """A bearer token's ``kid`` is the caller's choice, and any anonymous caller reaches the
    check (it runs before the provider's own refusals): a JWKS refetch for every unknown
    ``kid`` made the service fetch the issuer's discovery document and keys once per
    request (two outbound requests, each up to 5 s of a worker thread).  It refetches at
    most once per ``JWKS_REFETCH_INTERVAL`` seconds."""
    import time
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from fastapi import FastAPI

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = FastAPI()
    issuer: dict[str, str] = {}
    fetches: list[str] = []

    @app.get("/.well-known/openid-configuration")
    def meta() -> dict[str, Any]:
        fetches.append("meta")
        return {"issuer": issuer["iss"], "jwks_uri": issuer["iss"] + "/keys"}

    @app.get("/keys")
    def keys() -> dict[str, Any]:
        fetches.append("keys")
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk["kid"] = "k1"
        return {"keys": [jwk]}

    with h.ThreadServer(app) as idp:
        issuer["iss"] = f"http://127.0.0.1:{idp.port}"
        svc = service_factory(oidc_issuer=issuer["iss"])

        def bearer(kid: str) -> dict[str, str]:
            claims = {"iss": issuer["iss"], "sub": "u", "aud": "https://attest.azure.net",
                      "roles": ["Attestation.Contributor"],
                      "exp": int(time.time()) + 600}
            token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
            return {"Authorization": f"Bearer {token}"}

        with svc.client() as c:
            r = c.put(f"/policies/Tpm{Q}", content="x", headers=bearer("k1"))
            # authenticated, then refused because the default provider is shared
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidOperation"
            assert fetches == ["meta", "keys"]
            for _ in range(10):
                r = c.put(f"/policies/Tpm{Q}", content="x", headers=bearer(uuid.uuid4().hex))
                assert r.status_code == 401, r.text
                assert "not in the issuer's JWKS" in r.json()["error"]["message"]
            # the first unknown kid may refetch (a key the issuer just added); no more
            assert len(fetches) <= 4, fetches
            # the known key still verifies without a fetch
            r = c.put(f"/policies/Tpm{Q}", content="x", headers=bearer("k1"))
            assert r.json()["error"]["code"] == "InvalidOperation"
            assert len(fetches) <= 4, fetches


def test_a_database_error_answers_503_without_its_sql_or_the_request_data(
    svc: Any, backend: Any, h: Any
) -> None:
    """A failed policy write answered 503 with the database error whole: the SQL and its
    parameters, which hold the uploaded policy and the principal, went into the answer's
    message and the log (docs/service.md: logs never carry bodies).  The answer names an
    incident; the log line with that incident has the SQL, without its parameters."""
    h.refuse_provider_inserts(svc.state, backend, "policies", "dbfail")
    marker = "secret-marker-7f3a"
    policy = (
        "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\n"
        f'issuancerules\n{{\n    => issue(type="{marker}", value=true);\n}};\n'
    )
    with h.service_log() as records, svc.client() as c:
        r = c.put(f"/providers/dbfail/policies/Tpm{Q}", content=policy, headers=AUTH)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "ServiceUnavailable"
    message = r.json()["error"]["message"]
    assert "INSERT" not in message and "policies" not in message and marker not in message
    incident = message.split("incident ")[1].split(")")[0]
    failed = [rec for rec in records if getattr(rec, "incident", None) == incident]
    assert len(failed) == 1
    reason = str(getattr(failed[0], "reason", ""))
    assert "INSERT INTO policies" in reason
    assert marker not in reason and "test-admin-token" not in reason


def test_bearer_tokens_of_an_issuer_ending_in_a_slash(service_factory: Any, h: Any) -> None:
    """Entra ID's v1 tokens (those for ``https://attest.azure.net``) carry
    ``iss: https://sts.windows.net/TENANT/``, with the trailing slash, and so does that
    issuer's discovery document.  The verifier dropped the slash from the configured
    issuer and then required ``iss`` to equal what was left, so no such token verified."""
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from fastapi import FastAPI

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = FastAPI()
    issuer: dict[str, str] = {}

    @app.get("/tenant/.well-known/openid-configuration")
    def meta() -> dict[str, Any]:
        return {"issuer": issuer["iss"], "jwks_uri": issuer["iss"] + "discovery/keys"}

    @app.get("/tenant/discovery/keys")
    def keys() -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk["kid"] = "k1"
        return {"keys": [jwk]}

    with h.ThreadServer(app) as idp:
        issuer["iss"] = f"http://127.0.0.1:{idp.port}/tenant/"
        svc = service_factory(oidc_issuer=issuer["iss"])

        def bearer(iss: str) -> dict[str, str]:
            claims = {"iss": iss, "sub": "u", "aud": "https://attest.azure.net",
                      "roles": ["Attestation.Contributor"],
                      "exp": int(time.time()) + 600}
            token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
            return {"Authorization": f"Bearer {token}"}

        with svc.client() as c:
            r = c.put(f"/policies/Tpm{Q}", content="x", headers=bearer(issuer["iss"]))
            # authenticated, then refused because the default provider is shared
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "InvalidOperation"
            r = c.put(f"/policies/Tpm{Q}", content="x",
                      headers=bearer(f"http://127.0.0.1:{idp.port}/other/"))
            assert r.status_code == 401 and "issuer" in r.json()["error"]["message"].lower()


def test_an_ec_policy_signer_is_published_as_an_ec_jwk(svc: Any, h: Any, signer1: Any) -> None:
    """Isolated signers may be CA certificates with EC keys (a signed policy's leaf is
    RSA, its CA need not be).  GET /certificates published every signer as
    ``kty: RSA`` without ``n``/``e``: not a valid JWK (RFC 7517/7518), refused by JWK
    readers.  An EC signer is ``kty: EC`` with ``crv``, ``x`` and ``y``."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    _isolated_provider(svc.state, "iso-ec", signer1[1])
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC policy signer CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    jws = h.signed_jws({"policyCertificate": {"kty": "EC", "x5c": [h.x5c(cert)]}}, *signer1)
    with svc.client() as c:
        r = c.post(f"/providers/iso-ec/certificates:add{Q}", content=json.dumps(jws),
                   headers=AUTH)
        assert r.status_code == 200, r.text
        r = c.get(f"/providers/iso-ec/certificates{Q}")
    assert r.status_code == 200, r.text
    keys = h.unverified_claims(r.json()["token"])["x-ms-policy-certificates"]["keys"]
    by_x5c = {k["x5c"][0]: k for k in keys}
    assert by_x5c[h.x5c(signer1[1])]["kty"] == "RSA"
    jwk = by_x5c[h.x5c(cert)]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert "n" not in jwk and "e" not in jwk
    import jwt

    public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_public_url_and_a_provider_host_name_issue_that_providers_tokens(
    service_factory: Any, h: Any
) -> None:
    """With ``--public-url`` a provider reached by its own host name issued its tokens as
    the default provider: ``iss`` was the public URL itself and ``jku`` that URL's
    ``/certs``, the shared provider's keys, where the token's ``kid`` is not.  Its tokens
    name a URL under the public one that reaches that provider and publishes its key."""
    from urllib.parse import urlparse

    import jwt

    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    def setup(state: Any) -> None:
        with state.db.session() as s:
            if s.get(ProviderRow, "hostedpub") is None:
                create_provider(s, state.sealer, "hostedpub", kind=ProviderKind.CUSTOM,
                                trust_model=TrustModel.AAD, hostname="hostedpub.example")

    public = "https://attest.example.test"
    svc = service_factory(setup, public_base_url=public)
    with svc.client() as c:
        shared_iss = c.get(f"/.well-known/openid-configuration{Q}").json()["issuer"]
        assert shared_iss == public
        r = c.get(f"/policies/Tpm{Q}", headers={"Host": "hostedpub.example"})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        header = jwt.get_unverified_header(token)
        claims = h.unverified_claims(token)
        assert claims["iss"] != shared_iss
        assert header["jku"] == claims["iss"] + "/certs"
        assert header["jku"].startswith(public + "/")
        meta = c.get(f"/.well-known/openid-configuration{Q}",
                     headers={"Host": "hostedpub.example"}).json()
        assert meta["issuer"] == claims["iss"]
        # the jku, reached through the public URL (this service), publishes the token's key
        keys = c.get(urlparse(header["jku"]).path + Q).json()["keys"]
    assert header["kid"] in {k["kid"] for k in keys}


@pytest.mark.parametrize("case", ["meta_list", "uri_number", "keys_list", "keys_not_list"])
def test_an_issuer_answering_json_of_the_wrong_shape_is_a_503_not_a_500(
    service_factory: Any, h: Any, case: str,
) -> None:
    """The discovery document or key set as JSON of another shape (a list, a number where
    a URL belongs) raised TypeError or AttributeError past the fetch's error handling: a
    500.  It is the issuer being unusable: 503, naming what was wrong."""
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from fastapi import FastAPI

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = FastAPI()
    issuer: dict[str, str] = {}

    @app.get("/.well-known/openid-configuration")
    def meta() -> Any:
        if case == "meta_list":
            return [issuer["iss"]]
        return {"issuer": issuer["iss"],
                "jwks_uri": 42 if case == "uri_number" else issuer["iss"] + "/keys"}

    @app.get("/keys")
    def keys() -> Any:
        return [] if case == "keys_list" else {"keys": {"k1": {}}}

    with h.ThreadServer(app) as idp:
        issuer["iss"] = f"http://127.0.0.1:{idp.port}"
        svc = service_factory(oidc_issuer=issuer["iss"])
        claims = {"iss": issuer["iss"], "sub": "u", "aud": "https://attest.azure.net",
                  "roles": ["Attestation.Contributor"], "exp": int(time.time()) + 600}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        with svc.client() as c:
            r = c.put(f"/policies/Tpm{Q}", content="x",
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503, r.text
        assert "OpenID issuer" in r.json()["error"]["message"]
