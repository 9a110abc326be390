"""Enrolment of TPMs that have only an EK certificate: ``POST /enroll/challenge`` and
``POST /enroll/activate`` (wire shapes in :mod:`bootwatch.protocol.enroll`).

Why ``/enroll`` and not MAA's ``/attest/Tpm`` rounds: MAA's round two is a JWS of
Windows platform claims (``att_type`` basic/vbs, NCrypt boot claims) answered with an
attestation *token*; it has no place for a credential blob, an activated secret or an
issued AIK certificate, and MAA's ``aikcert`` type presumes the device already holds an
AIK certificate.  Reusing the path with other bodies would make Azure SDK clients
misread the answers, so ``/attest/Tpm`` keeps answering MAA's round one as before and
enrolment has its own two paths, served under every provider like the rest of the API.

Round one checks, each refused with ``EnrollmentRefused`` naming the check:
``enrollment_enabled`` (EK trust anchors configured), ``ek_certificate`` (chains to an
EK anchor, valid now), ``ek_public`` (restricted decryption key whose key is the
certified one), ``aik_attributes`` (restricted, sign, fixedTPM, fixedParent,
sensitiveDataOrigin, not decrypt), ``aik_name`` (the name of the public area sent),
``vm_id`` (an EK enrols as one VM id, a VM id belongs to one EK).  The answer is
TPM2_MakeCredential for that EK and AIK name and a ``service_context`` sealed under
the at-rest key (challenge id, provider, expiry, the AIK, the EK, the VM id, the
secret), so no round-one state but the challenge id is stored.

Round two checks: ``service_context`` (opens, this provider's, not expired), ``relay``
(the AIK named is the one round one was for), ``replay`` (each challenge is answered
once: the first answer, right or wrong, uses it up, durably, across workers),
``secret`` (constant-time compare), ``vm_id`` (bound now).  Then the provider's AIK CA
issues the certificate; earlier certificates of the same VM are revoked as superseded
(re-enrolment replaces the certificate).

Every attestation checks the provider's revoked AIK certificates
(:meth:`EnrollmentService.attestation_inputs`), and trusts the provider's own AIK CA.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bootwatch.attest.pipeline import ProviderInputs
from bootwatch.errors import BootwatchError, ConfigError, CryptoError
from bootwatch.protocol.enroll import (
    ACTIVATE_PATH,
    CHALLENGE_PATH,
    MAX_ENROLL_BODY,
    ChallengeRequest,
    ChallengeResponse,
    EnrolledAik,
    decode_activate_request,
    decode_challenge_request,
    encode_challenge_response,
    encode_enrolled_aik,
)
from bootwatch.service.aikca import issue_aik_certificate, load_aik_ca
from bootwatch.service.db import utcnow
from bootwatch.service.deps import service_state
from bootwatch.service.errors import ApiError, invalid_parameter
from bootwatch.service.models import (
    AikCaRow,
    AikCertificateRow,
    EnrollChallengeRow,
    EnrolledEkRow,
)
from bootwatch.service.providers import ProviderContext
from bootwatch.service.settings import Settings
from bootwatch.tpm.aik import RevokedAikCertificates, TrustAnchors
from bootwatch.tpm.constants import ObjectAttributes
from bootwatch.tpm.credential import make_credential
from bootwatch.tpm.errors import TpmValueError
from bootwatch.tpm.public import TpmPublic, parse_tpm2b_public

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from bootwatch.service.atrest import Sealer
    from bootwatch.service.changes import ChangeFeed
    from bootwatch.service.db import Database

__all__ = [
    "EnrollmentRefused",
    "EnrollmentService",
    "load_ek_anchors",
    "release_vm",
    "revoke_aik_certificates",
    "router",
]

_CONTEXT_AAD = "enroll-service-context"
_SECRET_BYTES = 32
_MAX_EK_CHAIN = 6
_CACHE_MAX = 1024
AIK_REQUIRED = (ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT
                | ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                | ObjectAttributes.SENSITIVE_DATA_ORIGIN)
_AIK_NAMES = {ObjectAttributes.RESTRICTED: "restricted", ObjectAttributes.SIGN_ENCRYPT: "sign",
              ObjectAttributes.FIXED_TPM: "fixedTPM", ObjectAttributes.FIXED_PARENT: "fixedParent",
              ObjectAttributes.SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin"}


class EnrollmentRefused(ApiError):
    """An enrolment round refused by a named check (MAA body code ``EnrollmentRefused``)."""

    code = "enrollment_refused"

    def __init__(self, check: str, message: str) -> None:
        super().__init__(400, "EnrollmentRefused", f"{check}: {message}")
        self.check = check


def load_ek_anchors(settings: Settings) -> TrustAnchors:
    """The EK CAs named by ``settings.ek_trust_anchors_path`` (file or folder of PEM)."""
    path = settings.ek_trust_anchors_path
    if not path:
        return TrustAnchors(())
    p = Path(path)
    try:
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        blobs = [f.read_bytes() for f in files]
    except OSError as exc:
        raise ConfigError(f"ek_trust_anchors_path {path}: {exc}") from None
    try:
        anchors = TrustAnchors.from_pem(blobs)
    except BootwatchError as exc:
        raise ConfigError(f"ek_trust_anchors_path {path}: {exc}") from None
    if not anchors.certificates:
        raise ConfigError(f"ek_trust_anchors_path {path}: no PEM certificate found")
    return anchors


@dataclass(frozen=True)
class _ProviderTrust:
    expires: float
    ca_cert: x509.Certificate | None
    revoked: RevokedAikCertificates
    anchors: TrustAnchors | None  # the attestation anchors plus the CA (memo)
    base: TrustAnchors | None


class EnrollmentService:
    """Per-app enrolment state: EK anchors, settings, and a bounded per-provider cache
    of (own AIK CA certificate, revoked AIK certificates)."""

    def __init__(self, settings: Settings, db: Database, sealer: Sealer,
                 changes: ChangeFeed) -> None:
        self.settings = settings
        self.db = db
        self.sealer = sealer
        self.changes = changes
        self.ek_anchors = load_ek_anchors(settings)
        self._cache: dict[str, _ProviderTrust] = {}
        self._lock = threading.Lock()
        #: bumped by every forget: a load that a forget overtook is not cached (_trust)
        self._generation = 0
        changes.subscribe(self.forget)  # another replica enrolled or revoked: forget at once

    # --- attestation side ---------------------------------------------------------

    def _trust(self, provider: str) -> _ProviderTrust:
        now = time.monotonic()
        entry = self._cache.get(provider)
        if entry is not None and entry.expires > now:
            return entry
        with self._lock:
            generation = self._generation
        with self.db.session() as s:
            row = s.get(AikCaRow, provider)
            ca = x509.load_der_x509_certificate(row.cert_der) if row is not None else None
            revoked: dict[tuple[bytes, int], str] = {}
            if ca is not None:
                issuer = ca.subject.public_bytes()
                # expired certificates fail the chain anyway: kept out, the set loaded on
                # every cache refresh does not grow with every re-enrolment for ever
                for serial, reason in s.execute(
                    select(AikCertificateRow.serial, AikCertificateRow.revoke_reason).where(
                        AikCertificateRow.provider == provider,
                        AikCertificateRow.revoked_at.is_not(None),
                        AikCertificateRow.not_after > utcnow())):
                    revoked[(issuer, int(serial, 16))] = reason or "revoked"
        entry = _ProviderTrust(now + self.settings.cache_ttl_seconds, ca,
                               RevokedAikCertificates(revoked), None, None)
        with self._lock:
            # a revocation announced while this load ran may not be in what it read:
            # cached, it would stay unseen here for a whole cache TTL
            if generation == self._generation:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[provider] = entry
        return entry

    def invalidate(self, provider: str) -> None:
        """After a write: forget ``provider`` here and tell the other processes."""
        self.forget(provider)
        self.changes.announce(provider)

    def forget(self, provider: str | None) -> None:
        with self._lock:
            self._generation += 1
            if provider is None:
                self._cache.clear()
            else:
                self._cache.pop(provider, None)

    def attestation_inputs(self, provider: str, inputs: ProviderInputs) -> ProviderInputs:
        """``inputs`` plus the provider's own AIK CA as an anchor and its revocations."""
        entry = self._trust(provider)
        if entry.ca_cert is None:
            return inputs
        base = inputs.trust_anchors or TrustAnchors(())
        anchors = entry.anchors
        if anchors is None or entry.base is not base:
            anchors = base.plus(TrustAnchors((entry.ca_cert,)))
            with self._lock:
                if self._cache.get(provider) is entry:
                    self._cache[provider] = replace(entry, anchors=anchors, base=base)
        return replace(inputs, trust_anchors=anchors, revoked_aik=entry.revoked)

    # --- round one ------------------------------------------------------------------

    def challenge(self, ctx: ProviderContext, body: bytes) -> bytes:
        if not self.ek_anchors.certificates:
            raise EnrollmentRefused("enrollment_enabled", "this service has no EK trust "
                                    "anchors (--ek-trust-anchors), so no TPM can enrol")
        req = decode_challenge_request(body)
        now = utcnow()
        self._check_ek_chain(req.unverified_ek_cert, now)
        self._check_ek_public(req)
        _check_aik(req.unverified_aik_pub)
        if not hmac.compare_digest(req.unverified_aik_pub.name, req.claimed_aik_name):
            raise EnrollmentRefused("aik_name", "aik_name is not the name of aik_pub "
                                    f"({req.unverified_aik_pub.name.hex()})")
        ek_key = _ek_key_hash(req.unverified_ek_cert)
        secret = secrets.token_bytes(_SECRET_BYTES)
        try:
            made = make_credential(req.unverified_ek_pub, req.claimed_aik_name, secret)
        except TpmValueError as exc:
            raise EnrollmentRefused("ek_public", str(exc)) from None
        challenge_id = secrets.token_hex(16)
        expires = now + timedelta(seconds=self.settings.enroll_challenge_ttl_seconds)
        with self.db.session() as s:
            _check_binding(s, ctx.name, ek_key, req.claimed_vm_id)
            _check_aik_unbound(s, ctx.name, req.unverified_aik_pub.name.hex(),
                               req.claimed_vm_id)
            # challenges past their expiry can never be answered: drop them as we go, so
            # the table holds at most one TTL's worth of rows
            s.execute(delete(EnrollChallengeRow).where(EnrollChallengeRow.expires_at < now))
            s.add(EnrollChallengeRow(id=challenge_id, provider=ctx.name, expires_at=expires))
        inner = json.dumps({
            "id": challenge_id, "provider": ctx.name, "exp": int(expires.timestamp()),
            "vm_id": req.claimed_vm_id, "aik_pub": _b64(req.unverified_aik_pub.marshal()),
            "ek_key": ek_key,
            "ek_cert_sha256": hashlib.sha256(req.unverified_ek_cert_der).hexdigest(),
            "secret": _b64(secret),
        }).encode()
        sealed = self.sealer.seal(inner, context=_CONTEXT_AAD)
        return encode_challenge_response(ChallengeResponse(
            made.credential_blob, made.encrypted_secret, sealed))

    def _check_ek_chain(self, cert: x509.Certificate, now: datetime) -> None:
        current = cert
        _valid_at(current, now, "the EK certificate")
        _check_ek_leaf(cert)
        anchors = self.ek_anchors.certificates
        anchor_der = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
        for _ in range(_MAX_EK_CHAIN):
            issuer = _issuer_in(current, anchors)
            if issuer is None:
                raise EnrollmentRefused(
                    "ek_certificate", f"no EK trust anchor issued "
                    f"{_subject(current)} (issuer {current.issuer.rfc4514_string()}): this "
                    "TPM's maker is not trusted here (--ek-trust-anchors)")
            _valid_at(issuer, now, "EK issuer")
            try:
                bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
                if not bc.ca:
                    raise EnrollmentRefused("ek_certificate",
                                            f"{_subject(issuer)} is not a CA")
            except x509.ExtensionNotFound:
                pass
            try:
                usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
                if not usage.key_cert_sign:
                    raise EnrollmentRefused("ek_certificate", f"{_subject(issuer)} may not "
                                            "sign certificates (keyUsage lacks keyCertSign)")
            except x509.ExtensionNotFound:
                pass
            if issuer.public_bytes(serialization.Encoding.DER) in anchor_der and (
                    issuer.subject == issuer.issuer or _issuer_in(issuer, anchors) is None):
                return
            current = issuer
        raise EnrollmentRefused("ek_certificate", "EK certificate chain too long")

    @staticmethod
    def _check_ek_public(req: ChallengeRequest) -> None:
        ek = req.unverified_ek_pub
        try:
            key_der = ek.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except BootwatchError as exc:
            raise EnrollmentRefused("ek_public", str(exc)) from None
        cert_der = req.unverified_ek_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if not hmac.compare_digest(key_der, cert_der):
            raise EnrollmentRefused("ek_public", "ek_pub's key is not the key of ek_cert")
        want = ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT | ObjectAttributes.FIXED_TPM
        if not ek.has(want) or ek.has(ObjectAttributes.SIGN_ENCRYPT):
            raise EnrollmentRefused("ek_public", "ek_pub is not a restricted decryption key "
                                    f"(attributes: {', '.join(ek.attribute_names)})")

    # --- round two ------------------------------------------------------------------

    def activate(self, ctx: ProviderContext, body: bytes) -> bytes:
        req = decode_activate_request(body)
        now = utcnow()
        try:
            inner = json.loads(self.sealer.open(req.service_context, context=_CONTEXT_AAD))
            cid, provider, exp = str(inner["id"]), str(inner["provider"]), int(inner["exp"])
            aik_raw = _unb64(inner["aik_pub"])
            secret = _unb64(inner["secret"])
            vm_id, ek_key = str(inner["vm_id"]), str(inner["ek_key"])
            ek_cert_sha256 = str(inner["ek_cert_sha256"])
        except (CryptoError, ValueError, KeyError, TypeError, binascii.Error):
            raise EnrollmentRefused("service_context", "not a service_context this service "
                                    "issued (it does not open)") from None
        if provider != ctx.name:
            raise EnrollmentRefused("service_context", f"issued by provider {provider!r}, "
                                    f"not {ctx.name!r}")
        if now.timestamp() > exp:
            raise EnrollmentRefused("service_context", "the challenge expired; start again "
                                    "with round one")
        aik = parse_tpm2b_public(aik_raw)
        if not hmac.compare_digest(aik.name, req.claimed_aik_name):
            raise EnrollmentRefused("relay", "round two names another key than the AIK the "
                                    "credential was made for: a different TPM or key is "
                                    "answering this challenge")
        with self.db.session() as s:
            used = cast("CursorResult[Any]", s.execute(
                update(EnrollChallengeRow)
                .where(EnrollChallengeRow.id == cid, EnrollChallengeRow.provider == ctx.name,
                       EnrollChallengeRow.used_at.is_(None))
                .values(used_at=now)))
            if used.rowcount != 1:
                raise EnrollmentRefused("replay", "this challenge was already answered; each "
                                        "round one allows one round two")
        # the challenge is used up (committed above) before the secret is compared
        if not hmac.compare_digest(req.claimed_secret, secret):
            raise EnrollmentRefused("secret", "the secret is not the one the credential "
                                    "protected: the AIK is not in the TPM of the certified EK")
        ca_name = None
        with self.db.session() as s:
            _check_binding(s, ctx.name, ek_key, vm_id)
            _check_aik_unbound(s, ctx.name, aik.name.hex(), vm_id)
            if s.get(EnrolledEkRow, (ctx.name, ek_key)) is None:
                s.add(EnrolledEkRow(provider=ctx.name, ek_key_sha256=ek_key, vm_id=vm_id,
                                    created_at=now))
            ca = load_aik_ca(s, self.sealer, ctx.name, now, create=True)
            assert ca is not None
            ca_name = ca.certificate
            cert = issue_aik_certificate(
                ca, aik.public_key(), vm_id=vm_id, ek_cert_sha256=bytes.fromhex(ek_cert_sha256),
                now=now, validity=timedelta(seconds=self.settings.aik_cert_validity_seconds))
            serial = f"{cert.serial_number:x}"
            for old in s.scalars(select(AikCertificateRow).where(
                    AikCertificateRow.provider == ctx.name, AikCertificateRow.vm_id == vm_id,
                    AikCertificateRow.revoked_at.is_(None))):
                old.revoked_at = now
                old.revoke_reason = f"superseded by serial {serial} (re-enrolment)"
            s.add(AikCertificateRow(
                serial=serial, provider=ctx.name, vm_id=vm_id, aik_name=aik.name.hex(),
                ek_cert_sha256=ek_cert_sha256,
                cert_der=cert.public_bytes(serialization.Encoding.DER), issued_at=now,
                not_after=cert.not_valid_after_utc))
        self.invalidate(ctx.name)
        return encode_enrolled_aik(EnrolledAik(
            cert.public_bytes(serialization.Encoding.DER),
            (ca_name.public_bytes(serialization.Encoding.DER),)))


def _check_aik(aik: TpmPublic) -> None:
    missing = [n for bit, n in _AIK_NAMES.items() if not aik.has(bit)]
    if missing:
        raise EnrollmentRefused("aik_attributes", "the AIK is not " + ", ".join(missing) +
                                f" (attributes: {', '.join(aik.attribute_names)}); an AIK must "
                                "be a restricted signing key that never leaves its TPM")
    if aik.has(ObjectAttributes.DECRYPT):
        raise EnrollmentRefused("aik_attributes", "the AIK is also a decryption key")


def _check_binding(s: Session, provider: str, ek_key: str, vm_id: str) -> None:
    bound = s.get(EnrolledEkRow, (provider, ek_key))
    if bound is not None and bound.revoked_at is not None:
        # found in review: revoking a VM's certificates only marked them, and the same TPM
        # enrolled again at once and was issued a fresh one
        raise EnrollmentRefused("vm_id", f"the enrolment of this TPM (VM {bound.vm_id}) was "
                                f"revoked by the operator ({bound.revoke_reason or 'revoked'});"
                                " it enrols again only once the VM id is released "
                                "(bootwatch provider release-vm)")
    if bound is not None and bound.vm_id != vm_id:
        raise EnrollmentRefused("vm_id", f"this TPM enrolled as VM {bound.vm_id}; it cannot "
                                f"take VM id {vm_id}")
    other = s.scalar(select(EnrolledEkRow).where(EnrolledEkRow.provider == provider,
                                                 EnrolledEkRow.vm_id == vm_id))
    if other is not None and other.ek_key_sha256 != ek_key:
        raise EnrollmentRefused("vm_id", f"VM id {vm_id} is enrolled by another TPM: a TPM "
                                "may not ask for another VM's id")


#: TCG's EK certificate purpose (tcg-kp-EKCertificate)
_EK_CERTIFICATE_EKU = x509.ObjectIdentifier("2.23.133.8.1")


def _check_ek_leaf(cert: x509.Certificate) -> None:
    """The leaf must be an EK certificate, not any certificate an EK anchor signed.

    Found in review: a maker's CA that also issued, say, a TLS certificate let its key
    (which lives outside any TPM) play an EK: the client decrypted the credential in
    software and got an AIK certificate for a software key.  So: not a CA; keyUsage, when
    present, allows keyEncipherment (RSA) or keyAgreement (ECC) as an EK is used; an
    extendedKeyUsage, when present, names tcg-kp-EKCertificate."""
    subject = _subject(cert)
    ext = cert.extensions
    try:
        if ext.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise EnrollmentRefused("ek_certificate", f"{subject} is a CA certificate, not "
                                    "an EK certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = ext.get_extension_for_class(x509.KeyUsage).value
        is_rsa = isinstance(cert.public_key(), rsa.RSAPublicKey)
        if not (usage.key_encipherment if is_rsa else usage.key_agreement):
            raise EnrollmentRefused(
                "ek_certificate", f"{subject}'s keyUsage lacks "
                f"{'keyEncipherment' if is_rsa else 'keyAgreement'}: not an EK certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        if _EK_CERTIFICATE_EKU not in purposes:
            raise EnrollmentRefused("ek_certificate", f"{subject}'s extendedKeyUsage does "
                                    "not name tcg-kp-EKCertificate (2.23.133.8.1): not an EK "
                                    "certificate")
    except x509.ExtensionNotFound:
        pass


def _check_aik_unbound(s: Session, provider: str, aik_name: str, vm_id: str) -> None:
    """One AIK, one VM id: a TPM with two EK certificates (RSA and ECC, as makers ship and
    swtpm makes) could bind each to its own VM id and have one AIK certified for both, so
    every quote it signed passed as either VM (found in review)."""
    other = s.scalar(select(AikCertificateRow.vm_id).where(
        AikCertificateRow.provider == provider, AikCertificateRow.aik_name == aik_name,
        AikCertificateRow.vm_id != vm_id, AikCertificateRow.revoked_at.is_(None)).limit(1))
    if other is not None:
        raise EnrollmentRefused("aik_pub", f"this AIK is certified for VM {other}; one AIK "
                                "is certified for one VM id only")


def _ek_key_hash(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _issuer_in(cert: x509.Certificate, anchors: tuple[x509.Certificate, ...]
               ) -> x509.Certificate | None:
    for cand in anchors:
        if cand.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(cand)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return cand
    return None


def _valid_at(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        raise EnrollmentRefused(
            "ek_certificate", f"{what} {_subject(cert)} is valid from "
            f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()}"
            f", not now ({now.isoformat()})")


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return base64.b64decode(value, validate=True)


def revoke_aik_certificates(s: Session, provider: str, *, serial: str | None,
                            vm_id: str | None, reason: str, now: datetime) -> list[str]:
    """Revoke the provider's AIK certificate ``serial``, or every unrevoked one of
    ``vm_id``; returns the serials revoked (an empty list when nothing matched)."""
    q = select(AikCertificateRow).where(AikCertificateRow.provider == provider,
                                        AikCertificateRow.revoked_at.is_(None))
    if serial is not None:
        q = q.where(AikCertificateRow.serial == serial.lower().removeprefix("0x"))
    if vm_id is not None:
        q = q.where(AikCertificateRow.vm_id == vm_id.upper())
    out = []
    vm_ids: set[str] = set()
    for row in s.scalars(q):
        row.revoked_at = now
        row.revoke_reason = reason
        out.append(row.serial)
        vm_ids.add(row.vm_id)
    if vm_id is not None:
        vm_ids.add(vm_id.upper())
    # the VM's TPM may not simply enrol again and get a fresh certificate: its enrolment
    # is revoked too, until an operator releases the VM id (release_vm)
    for ek in s.scalars(select(EnrolledEkRow).where(EnrolledEkRow.provider == provider,
                                                   EnrolledEkRow.vm_id.in_(sorted(vm_ids)),
                                                   EnrolledEkRow.revoked_at.is_(None))):
        ek.revoked_at = now
        ek.revoke_reason = reason
    return out


def release_vm(s: Session, provider: str, vm_id: str) -> bool:
    """Forget which TPM enrolled as ``vm_id`` (revoked or not), so the VM id can enrol
    again: the same TPM after a revocation was resolved, or a new one (a rebuilt VM).
    Its certificates stay as they are.  False when nothing was bound."""
    rows = list(s.scalars(select(EnrolledEkRow).where(EnrolledEkRow.provider == provider,
                                                      EnrolledEkRow.vm_id == vm_id.upper())))
    for row in rows:
        s.delete(row)
    return bool(rows)


def _json_body_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise invalid_parameter(f"Content-Type: must be application/json, not {ctype[:60]!r}")


async def _body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_ENROLL_BODY:
        raise invalid_parameter(f"body: {len(body)} bytes, over {MAX_ENROLL_BODY}")
    return body


def router() -> APIRouter:
    """``POST /enroll/challenge`` and ``POST /enroll/activate``."""
    from bootwatch.service.attestation import _admit

    r = APIRouter()

    def _svc(request: Request) -> EnrollmentService:
        return service_state(request).enrollment

    @r.post(CHALLENGE_PATH)
    async def challenge(request: Request) -> Response:
        ctx = await _admit(request)
        _json_body_type(request)
        body = await _body(request)
        out = await run_in_threadpool(_svc(request).challenge, ctx, body)
        return Response(out, media_type="application/json")

    @r.post(ACTIVATE_PATH)
    async def activate(request: Request) -> Response:
        ctx = await _admit(request)
        _json_body_type(request)
        body = await _body(request)
        out = await run_in_threadpool(_svc(request).activate, ctx, body)
        return Response(out, media_type="application/json")

    return r


