"""OpenID metadata, /certs, token verification with PyJWT, key rotation,
encryption at rest, migrations, attestation records."""

from __future__ import annotations

import ssl
from datetime import timedelta
from typing import Any

import httpx
import jwt
from sqlalchemy import select, text

Q = "?api-version=2020-10-01"


def verify_with_discovery(base_url: str, token: str, ca: str) -> dict[str, Any]:
    """What a relying party does: discovery document -> jwks_uri -> key by kid -> RS256."""
    tls = ssl.create_default_context(cafile=ca)
    meta = httpx.get(f"{base_url}/.well-known/openid-configuration", verify=tls).json()
    jwks = httpx.get(meta["jwks_uri"], verify=tls).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    return jwt.decode(
        token,
        key.key,
        algorithms=meta["id_token_signing_alg_values_supported"],
        issuer=meta["issuer"],
    )


def test_openid_configuration_and_certs(svc: Any) -> None:
    with svc.client() as c:
        for prefix in ("", "/providers/aadp", "/providers/iso"):
            r = c.get(f"{prefix}/.well-known/openid-configuration{Q}")
            assert r.status_code == 200
            assert r.headers["x-ms-maa-service-version"] == svc.settings.service_version
            meta = r.json()
            base = svc.url + prefix
            assert meta["issuer"] == base
            assert meta["jwks_uri"] == f"{base}/certs"
            assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
            assert meta["response_types_supported"] == ["token", "none"]
            # no token revocation endpoint exists, so none is advertised (AIK certificates
            # are revoked with `bootwatch provider revoke-aik`, see docs/enrollment.md)
            assert "revocation_endpoint" not in meta
            assert "x-ms-azurevm-dbvalidated" in meta["claims_supported"]
            keys = c.get(f"{prefix}/certs").json()["keys"]
            assert keys and all(
                k["kty"] == "RSA" and k["alg"] == "RS256" and k["use"] == "sig" and k["x5c"]
                for k in keys
            )
        # each provider has its own key
        kids = {
            c.get(f"{p}/certs").json()["keys"][0]["kid"]
            for p in ("", "/providers/aadp", "/providers/iso")
        }
        assert len(kids) == 3


def test_signing_certificate_names_the_provider(svc: Any) -> None:
    import base64

    from cryptography import x509

    with svc.client() as c:
        key = c.get("/providers/iso/certs").json()["keys"][0]
    cert = x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0]))
    assert "iso" in cert.subject.rfc4514_string()
    assert cert.issuer == cert.subject


def test_token_verifies_with_pyjwt_from_discovery_only(svc: Any) -> None:
    with svc.client() as c:
        token = c.get(f"/providers/aadp/policies/AzureGuest{Q}").json()["token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["jku"] == f"{svc.url}/providers/aadp/certs"
    claims = verify_with_discovery(f"{svc.url}/providers/aadp", token, svc.ca)
    assert claims["iss"] == f"{svc.url}/providers/aadp"
    assert "x-ms-policy" in claims


def test_api_version_empty_is_invalid(svc: Any) -> None:
    with svc.client() as c:
        r = c.get("/certs?api-version=")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "InvalidParameter"
    assert r.headers["x-ms-error-code"] == "InvalidParameter"


def test_a_key_published_ahead_signs_only_from_its_start(svc: Any) -> None:
    """A rotation with ``ahead``: the new key is in /certs at once (every replica and
    verifier can learn it) while the old key goes on signing; from the start instant the
    new one signs, and the old one stays published for the overlap after it."""
    from bootwatch.service.db import utcnow
    from bootwatch.service.keys import rotate_key
    from bootwatch.service.models import SigningKeyRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    state = svc.state
    with state.db.session() as s:  # a provider of its own: svc is shared by the module
        create_provider(s, state.sealer, "ahead", kind=ProviderKind.CUSTOM,
                        trust_model=TrustModel.AAD)
    base = f"{svc.url}/providers/ahead"
    with svc.client() as c:
        old_kid = jwt.get_unverified_header(
            c.get(f"/providers/ahead/policies/Tpm{Q}").json()["token"])["kid"]
    now = utcnow()
    with state.db.session() as s:
        new_kid, retired = rotate_key(s, state.sealer, "ahead", now, timedelta(hours=1),
                                      ahead=timedelta(minutes=10))
    assert retired == [old_kid]
    state.providers.invalidate("ahead")
    with svc.client() as c:
        kids = {k["kid"] for k in c.get("/providers/ahead/certs").json()["keys"]}
        waiting = c.get(f"/providers/ahead/policies/Tpm{Q}").json()["token"]
    assert kids == {old_kid, new_kid}
    assert jwt.get_unverified_header(waiting)["kid"] == old_kid
    verify_with_discovery(base, waiting, svc.ca)
    # the start comes (moved to the past here): the new key signs, the old one is still
    # published until start + overlap
    with state.db.session() as s:
        new_row = s.get(SigningKeyRow, new_kid)
        old_row = s.get(SigningKeyRow, old_kid)
        assert new_row is not None and old_row is not None and old_row.retire_at is not None
        assert abs((old_row.retire_at.replace(tzinfo=now.tzinfo) - now)
                   - timedelta(minutes=70)) < timedelta(seconds=5)
        new_row.created_at = utcnow()  # after the old key was made, before the next load
    state.providers.invalidate("ahead")
    with svc.client() as c:
        started = c.get(f"/providers/ahead/policies/Tpm{Q}").json()["token"]
        kids = {k["kid"] for k in c.get("/providers/ahead/certs").json()["keys"]}
    assert jwt.get_unverified_header(started)["kid"] == new_kid
    assert kids == {old_kid, new_kid}
    verify_with_discovery(base, started, svc.ca)
    verify_with_discovery(base, waiting, svc.ca)


def test_key_rotation_keeps_old_kid_during_overlap(svc: Any, service_factory: Any) -> None:
    from bootwatch.service.db import utcnow
    from bootwatch.service.keys import rotate_key
    from bootwatch.service.models import SigningKeyRow

    base = f"{svc.url}/providers/aadp"
    with svc.client() as c:
        old_token = c.get(f"/providers/aadp/policies/Tpm{Q}").json()["token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    state = svc.state
    with state.db.session() as s:
        new_kid, retired = rotate_key(s, state.sealer, "aadp", utcnow(), timedelta(hours=1))
    assert retired == [old_kid]
    state.providers.invalidate("aadp")
    with svc.client() as c:
        kids = [k["kid"] for k in c.get("/providers/aadp/certs").json()["keys"]]
        assert set(kids) == {old_kid, new_kid}
        new_token = c.get(f"/providers/aadp/policies/Tpm{Q}").json()["token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    # tokens from before the rotation still verify during the overlap
    verify_with_discovery(base, old_token, svc.ca)
    verify_with_discovery(base, new_token, svc.ca)
    # after the overlap the old key is gone from /certs
    with state.db.session() as s:
        row = s.get(SigningKeyRow, old_kid)
        assert row is not None
        row.retire_at = utcnow() - timedelta(seconds=1)
    state.providers.invalidate("aadp")
    with svc.client() as c:
        kids = [k["kid"] for k in c.get("/providers/aadp/certs").json()["keys"]]
    assert kids == [new_kid]
    with state.db.session() as s:
        assert s.scalar(select(SigningKeyRow.active).where(SigningKeyRow.kid == new_kid))


def test_private_keys_are_encrypted_at_rest(svc: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    state = svc.state
    signer = state.providers.context("shared", "https://x").token_signer
    der = signer.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with state.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT kid, private_key_enc FROM signing_keys")).all()
    assert rows
    for _kid, blob in rows:
        blob = bytes(blob)
        assert der not in blob and pem not in blob and b"PRIVATE KEY" not in blob
        assert der[40:72] not in blob  # no fragment of the key material either


def test_at_rest_key_file_is_created_0600_and_wrong_key_fails(tmp_path: Any) -> None:
    import pytest

    from bootwatch.errors import ConfigError, CryptoError
    from bootwatch.service.atrest import Sealer, load_or_create_key

    key = load_or_create_key("", tmp_path)
    path = tmp_path / "at-rest.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key("", tmp_path) == key
    blob = Sealer(key).seal(b"secret", context="kid1")
    assert Sealer(key).open(blob, context="kid1") == b"secret"
    with pytest.raises(CryptoError, match="kid2"):
        Sealer(key).open(blob, context="kid2")
    with pytest.raises(CryptoError):
        Sealer(bytes(32)).open(blob, context="kid1")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key("", tmp_path)
    with pytest.raises(ConfigError):
        load_or_create_key("tooshort", tmp_path)


def test_migrations_ran_on_this_backend(svc: Any, backend: Any) -> None:
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from bootwatch.service.db import alembic_config, current_revision, run_migrations

    engine = svc.state.db.engine
    assert engine.dialect.name == ("sqlite" if backend.name == "sqlite" else "postgresql")
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and current_revision(engine) == head
    run_migrations(engine)  # idempotent
    tables = set(inspect(engine).get_table_names())
    assert {"providers", "policies", "signers", "signing_keys", "attestation_records",
            "aik_cas", "aik_certificates", "enrolled_eks", "enroll_challenges"} <= tables
    if backend.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_policy_history_is_kept(svc: Any) -> None:
    from bootwatch.service.models import PolicyRow

    auth = {"Authorization": "Bearer test-admin-token-0123456789"}
    policy = "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\nissuancerules\n{\n};\n"
    with svc.client() as c:
        for _ in range(2):
            assert (
                c.put(
                    f"/providers/aadp/policies/OpenEnclave{Q}", content=policy, headers=auth
                ).status_code
                == 200
            )
    with svc.state.db.session() as s:
        rows = s.scalars(
            select(PolicyRow).where(
                PolicyRow.provider == "aadp", PolicyRow.attestation_type == "OpenEnclave"
            )
        ).all()
    assert len(rows) >= 2 and all(r.changed_by == "admin" for r in rows)


def test_attestation_records_and_evidence_purge(svc: Any) -> None:
    from bootwatch.service.db import utcnow
    from bootwatch.service.models import AttestationRecordRow
    from bootwatch.service.records import (
        AttestationRecord,
        Verdict,
        purge_expired_evidence,
        store_record,
    )

    state = svc.state
    rec = AttestationRecord(
        provider="shared",
        attestation_type="AzureGuest",
        verdict=Verdict.DENY,
        reason="secureboot is false",
        vm_id="vm-1",
        policy_hash="abc",
        evidence=b'{"AttestationInfo": "..."}',
    )
    old = store_record(state.db, state.settings, rec, now=utcnow() - timedelta(days=30))
    fresh = store_record(state.db, state.settings, rec)
    assert purge_expired_evidence(state.db) >= 1
    with state.db.session() as s:
        assert s.get(AttestationRecordRow, old).evidence is None
        row = s.get(AttestationRecordRow, fresh)
        assert row.evidence == rec.evidence and row.verdict == "deny" and row.vm_id == "vm-1"


def test_record_writer_batches_flushes_and_overflows(svc: Any) -> None:
    from sqlalchemy import func

    from bootwatch.service.models import AttestationRecordRow
    from bootwatch.service.records import AttestationRecord, RecordWriter, Verdict

    state = svc.state

    def count(vm: str) -> int:
        with state.db.session() as s:
            return int(s.scalar(select(func.count()).where(AttestationRecordRow.vm_id == vm)) or 0)

    writer = RecordWriter(state.db, state.settings, max_queued=50)
    recs = [AttestationRecord("shared", "AzureGuest", Verdict.PERMIT, vm_id="batch-vm",
                              evidence=b"x" * 10) for _ in range(120)]
    for rec in recs:
        writer.submit(rec)
    assert writer.flush(timeout=30)
    assert count("batch-vm") == 120  # whatever did not fit the queue was written in place
    # every submit is answered by its commit; close() writes what is still queued
    slow = RecordWriter(state.db, state.settings)
    commits = [slow.submit(AttestationRecord("shared", "AzureGuest", Verdict.DENY,
                                             vm_id="close-vm")) for _ in range(7)]
    slow.close(timeout=30)
    assert all(c.wait_sync(5) and c.error is None for c in commits)
    assert count("close-vm") == 7
    assert writer.queued == 0 and slow.queued == 0
    writer.close()
    # a full queue: the record is written synchronously, and counted
    from bootwatch.service.metrics import Metrics

    full = RecordWriter(state.db, state.settings, max_queued=0, metrics=Metrics.create())
    for _ in range(3):
        full.submit(AttestationRecord("shared", "AzureGuest", Verdict.EVIDENCE_REJECTED,
                                      vm_id="full-vm"))
    assert count("full-vm") == 3  # no flush needed: nothing was queued
    assert full.metrics.records_overflow._value.get() == 3
