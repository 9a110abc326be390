"""ORM tables of the service (SQLAlchemy 2 declarative).

The schema changes only through the Alembic migrations in
``bootwatch/service/migrations``; these classes must match the newest one.
Times are stored as timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AikCaRow",
    "AikCertificateRow",
    "AttestationRecordRow",
    "Base",
    "EnrollChallengeRow",
    "EnrolledEkRow",
    "PolicyRow",
    "ProviderRow",
    "ServiceTagRow",
    "SignerRow",
    "SigningKeyRow",
]


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ProviderRow(Base):
    """One attestation provider (shared or custom)."""

    __tablename__ = "providers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: "shared" or "custom"
    kind: Mapped[str] = mapped_column(String(16))
    #: "aad" or "isolated"
    trust_model: Mapped[str] = mapped_column(String(16))
    #: host name this provider answers at (besides /providers/NAME), if any
    hostname: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    attest_auth_required: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyRow(Base):
    """One stored policy version; the newest row per (provider, type) is current.

    ``text`` NULL means "reset to the default".
    """

    __tablename__ = "policies"
    __table_args__ = (Index("ix_policies_provider_type", "provider", "attestation_type", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(ForeignKey("providers.name", ondelete="CASCADE"))
    attestation_type: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the compact JWS as uploaded (also for unsigned uploads, alg none)
    jws: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(64))
    #: DER of the certificate that signed the upload, if signed
    signer_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: the authorised principal that made the change (its name)
    changed_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: True when the write re-applied an earlier document (``allowRollback=true``)
    rollback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SignerRow(Base):
    """A trusted policy signer of an Isolated provider (history kept via removed_at)."""

    __tablename__ = "signers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(ForeignKey("providers.name", ondelete="CASCADE"))
    #: hex SHA-1 of the DER certificate, upper case (MAA's x-ms-certificate-thumbprint)
    thumbprint: Mapped[str] = mapped_column(String(40), index=True)
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the authorised principals that added / removed it (None: created with the provider)
    added_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: x-ms-policy-token-hash of the signed JWS that added / removed it (replay detection)
    added_jws_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removed_jws_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SigningKeyRow(Base):
    """A token-signing key of a provider; private key AES-GCM encrypted at rest."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(
        ForeignKey("providers.name", ondelete="CASCADE"), index=True
    )
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    #: nonce (12 bytes) || AES-256-GCM ciphertext+tag of the PKCS#8 DER private key
    private_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: True for the one key that signs new tokens
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: after this instant the key is no longer published in /certs (NULL = while active)
    retire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AttestationRecordRow(Base):
    """One attestation request and its outcome."""

    __tablename__ = "attestation_records"
    __table_args__ = (
        Index("ix_records_provider_time", "provider", "created_at"),
        Index("ix_records_client_id", "client", "id"),
        Index(
            "ix_records_outcome_pending", "id",
            sqlite_where=text("outcome_event IS NOT NULL"),
            postgresql_where=text("outcome_event IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attestation_type: Mapped[str] = mapped_column(String(32))
    vm_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    #: "permit", "deny" or "error"
    verdict: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    policy_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    evidence_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    #: the address the request came from (the evidence quota is per client)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: size of ``evidence`` while it is kept (None once dropped or purged)
    evidence_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the encoded outcome event until the relay delivered it (the outbox, migration 0005)
    outcome_event: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: the id the answer named (``x-bootwatch-request-id``) and the outcome event's id
    request_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)


class ServiceTagRow(Base):
    """The last published service-tag document per tag name (migration 0002_service_tag).

    Kept so the change number survives restarts and is shared by every worker and
    every node on one database: it increases only when the prefixes change.
    """

    __tablename__ = "service_tags"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    change_number: Mapped[int] = mapped_column(Integer)
    #: canonical JSON list of the prefixes (sorted, IPv4 first)
    prefixes: Mapped[str] = mapped_column(Text)
    #: the whole document as last published (JSON)
    document: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AikCaRow(Base):
    """A provider's AIK-issuing CA; private key AES-GCM encrypted at rest (as signing keys)."""

    __tablename__ = "aik_cas"

    provider: Mapped[str] = mapped_column(
        ForeignKey("providers.name", ondelete="CASCADE"), primary_key=True
    )
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    #: nonce (12 bytes) || AES-256-GCM ciphertext+tag of the PKCS#8 DER private key
    private_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AikCertificateRow(Base):
    """An AIK certificate a provider issued on enrolment (revocation kept on the row)."""

    __tablename__ = "aik_certificates"
    __table_args__ = (Index("ix_aik_certificates_provider_vm", "provider", "vm_id"),)

    #: certificate serial number, lower-case hex
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(ForeignKey("providers.name", ondelete="CASCADE"))
    vm_id: Mapped[str] = mapped_column(String(64))
    aik_name: Mapped[str] = mapped_column(String(132))
    ek_cert_sha256: Mapped[str] = mapped_column(String(64))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class EnrolledEkRow(Base):
    """The VM id an EK (by the SHA-256 of its public key) enrolled with: one each way."""

    __tablename__ = "enrolled_eks"
    __table_args__ = (UniqueConstraint("provider", "vm_id", name="uq_enrolled_eks_provider_vm"),)

    provider: Mapped[str] = mapped_column(
        ForeignKey("providers.name", ondelete="CASCADE"), primary_key=True
    )
    ek_key_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    vm_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: set when an operator revoked the VM's AIK certificates: the TPM may not enrol
    #: again until the VM id is released (0008)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class EnrollChallengeRow(Base):
    """A round-one challenge; ``used_at`` is set by the one round two it may answer."""

    __tablename__ = "enroll_challenges"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(ForeignKey("providers.name", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
