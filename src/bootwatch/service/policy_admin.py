"""Policy and policy-signer management: the rules of both trust models.

* Shared providers: every write is refused (``InvalidOperation``): their
  policies are the fixed defaults.
* AAD providers: the caller must be an authorised principal (checked by
  :func:`bootwatch.service.auth.require_policy_writer`); the policy may be
  sent unsigned (``alg: none`` JWS or plain text) or signed, in which case the
  signature is checked against the certificate the JWS carries and that
  certificate is reported as ``x-ms-policy-signer``.  Signer management is
  not available (MAA: Isolated mode only).
* Isolated providers: every policy write, reset and signer change must come
  from an authorised principal (as in the AAD model: MAA requires one in every
  trust model) *and* be a JWS signed by one of the provider's current signers;
  the last signer cannot be removed.  Signed documents cannot be replayed
  (:func:`_refuse_replay`): a policy document is bound to its attestation type
  (a ``x-ms-attestation-type`` claim, when present, must name it; a document
  already applied to another type is refused), and a document identical to a
  superseded one, or whose ``iat`` is older than the current policy's, is
  refused unless the caller asks for it with ``allowRollback=true``.  Signer
  add/remove JWSs are treated the same way.  The history records the principal
  (``changed_by``, ``added_by``, ``removed_by``) and whether a write was a
  rollback.

Every refusal is a domain error (``InputError``, ``PolicySignatureError``,
``OperationRefusedError``, ``RollbackRefusedError``); the HTTP edge
(:func:`bootwatch.service.errors.maa_code_for`) turns it into MAA's status and code.

Results are ``PolicyResult`` / ``PolicyCertificatesModificationResult`` JWTs
signed by the provider's token key, valid for one hour (as MAA's).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bootwatch import encoding
from bootwatch.encoding import b64url_decode
from bootwatch.errors import (
    InputError,
    OperationRefusedError,
    PolicySignatureError,
    ProtocolError,
    RollbackRefusedError,
)
from bootwatch.policy import (
    compile_policy,
    parse_policy_document,
    policy_token_hash,
    unsigned_policy_jws,
    verify_signed_jws,
)
from bootwatch.protocol.jsonread import read_json
from bootwatch.service.db import utcnow
from bootwatch.service.keys import cert_jwk
from bootwatch.service.models import PolicyRow, ProviderRow, SignerRow
from bootwatch.service.providers import ProviderContext, TrustModel, canonical_type
from bootwatch.x509read import CertificateFieldError, read_all_fields

if TYPE_CHECKING:
    from bootwatch.service.auth import Principal
    from bootwatch.service.state import ServiceState

__all__ = [
    "CERT_CLAIMS",
    "MAX_SIGNERS",
    "RESULT_LIFETIME",
    "TYPE_CLAIMS",
    "embedded_certificate",
    "get_certificates",
    "get_policy",
    "modify_signers",
    "reset_policy",
    "result_token",
    "set_policy",
    "sha1_thumbprint",
]

RESULT_LIFETIME = timedelta(hours=1)
#: claim names seen for the certificate in signer add/remove bodies: the SDK
#: and spec 2025-06-01 (policyCertificate), the troubleshooting guide
#: (x-ms-policyCertificate, maa-policyCertificate), spec examples (aas-...)
CERT_CLAIMS = (
    "policyCertificate",
    "x-ms-policyCertificate",
    "maa-policyCertificate",
    "aas-policyCertificate",
)
MAX_SIGNERS = 64
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def sha1_thumbprint(cert: x509.Certificate) -> str:
    """MAA's x-ms-certificate-thumbprint of ``cert`` (see :mod:`bootwatch.encoding`)."""
    return encoding.sha1_thumbprint(cert.public_bytes(serialization.Encoding.DER), upper=True)


def result_token(ctx: ProviderContext, claims: dict[str, Any]) -> str:
    now = utcnow()
    body = {
        "iss": ctx.issuer,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + RESULT_LIFETIME).timestamp()),
        **claims,
    }
    return ctx.token_signer.sign(body)


def _refuse_shared(ctx: ProviderContext, what: str) -> None:
    if ctx.is_shared:
        raise OperationRefusedError(
            f"provider {ctx.name!r} is a shared provider: its {what} is fixed and cannot be changed"
        )


def _b64url_json(part: str, what: str) -> dict[str, Any]:
    try:
        raw = b64url_decode(part)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{what} is not base64url JSON: {exc}") from exc
    try:
        value = read_json(raw, field=what) if raw else {}
    except ProtocolError as exc:
        raise InputError(f"{what} is not base64url JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{what} is not a JSON object")
    return value


def embedded_certificate(compact: str) -> x509.Certificate | None:
    """The certificate a JWS carries in ``x5c`` or ``jwk.x5c`` (self-asserted)."""
    parts = compact.split(".")
    if len(parts) != 3:
        raise InputError(f"expected a compact JWS with 3 parts, got {len(parts)}")
    header = _b64url_json(parts[0], "JWS header")
    chain = header.get("x5c")
    jwk = header.get("jwk")
    if chain is None and isinstance(jwk, dict):
        chain = jwk.get("x5c")
    if not chain:
        return None
    if not isinstance(chain, list) or not isinstance(chain[0], str):
        raise InputError("JWS header x5c must be a list of base64 certificates")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"JWS header x5c[0] is not a DER certificate: {exc}") from exc


def _is_unsigned(compact: str) -> bool:
    header = _b64url_json(compact.split(".")[0], "JWS header")
    return str(header.get("alg", "")).lower() == "none"


def _precheck_jws(compact: str, what: str) -> dict[str, Any]:
    """Read a compact JWS's header and payload with the depth-limited JSON reader before
    the policy layer (PyJWT) parses them: a deeply nested header or payload is answered
    400 naming the limit, never a RecursionError.  Returns the (unverified) payload."""
    parts = compact.split(".")
    if len(parts) != 3:
        raise InputError(f"{what}: expected a compact JWS with 3 parts, got {len(parts)}")
    _b64url_json(parts[0], f"{what} header")
    return _b64url_json(parts[1], f"{what} payload") if parts[1] else {}


def _signers_for(ctx: ProviderContext, compact: str) -> tuple[x509.Certificate, ...]:
    """Certificates a signed JWS may verify against under the provider's trust model."""
    if ctx.trust_model is TrustModel.ISOLATED:
        return ctx.signers
    cert = embedded_certificate(compact)
    return (cert,) if cert is not None else ()


#: payload claims that bind a signed policy document to one attestation type
TYPE_CLAIMS = ("x-ms-attestation-type", "AttestationType")


def _iat(payload: dict[str, Any]) -> int | None:
    """The document's ``iat`` (seconds since the epoch), if it carries one."""
    value = payload.get("iat")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def _stored_payload(jws: str) -> dict[str, Any]:
    try:
        return _precheck_jws(jws, "stored policy")
    except InputError:  # stored by an older version: nothing to compare
        return {}


def _check_type_claim(payload: dict[str, Any], attestation_type: str) -> None:
    for name in TYPE_CLAIMS:
        if name in payload:
            value = payload[name]
            if not isinstance(value, str) or value.lower() != attestation_type.lower():
                raise InputError(
                    f"the signed document is bound to attestation type {value!r} (claim "
                    f"{name!r}); it cannot be applied to {attestation_type}"
                )


def _refuse_replay(
    s: Session,
    ctx: ProviderContext,
    attestation_type: str,
    token_hash: str,
    payload: dict[str, Any],
    *,
    allow_rollback: bool,
) -> bool:
    """Isolated providers: refuse a replayed policy (or reset) document.

    Returns True when the write is a rollback the caller asked for, False for a new
    document; raises 409 ``RollbackRefused`` otherwise.  Rules (see the module doc):
    the document must not have been applied to another attestation type, must not be
    identical to a superseded version of this type, and must not carry an ``iat``
    older than the current version's.  ``allowRollback=true`` overrides the last two
    and the cross-type rule for unbound documents (an explicit type claim never).
    """
    _check_type_claim(payload, attestation_type)
    rows = list(
        s.scalars(
            select(PolicyRow)
            .where(PolicyRow.provider == ctx.name)
            .order_by(PolicyRow.id)
        )
    )
    of_type = [r for r in rows if r.attestation_type == attestation_type]
    current = of_type[-1] if of_type else None
    reasons: list[str] = []
    other = sorted({r.attestation_type for r in rows
                    if r.token_hash == token_hash and r.attestation_type != attestation_type})
    if other:
        reasons.append(
            f"this exact signed document was applied to attestation type {other[0]} of "
            f"provider {ctx.name!r}; a signed policy document is bound to its type"
        )
    superseded = [r for r in of_type[:-1] if r.token_hash == token_hash]
    if superseded and (current is None or current.token_hash != token_hash):
        reasons.append(
            f"this exact signed document was the {attestation_type} policy until "
            f"{superseded[-1].created_at:%Y-%m-%d %H:%M:%S} UTC and has been superseded"
        )
    new_iat = _iat(payload)
    cur_iat = _iat(_stored_payload(current.jws)) if current is not None else None
    if new_iat is not None and cur_iat is not None and new_iat < cur_iat:
        reasons.append(
            f"its iat ({new_iat}) is older than the current {attestation_type} policy's "
            f"({cur_iat})"
        )
    if not reasons:
        return False
    if allow_rollback:
        return True
    raise RollbackRefusedError(
        "replayed policy document refused: " + "; ".join(reasons)
        + ". To apply an earlier document deliberately, repeat the request with the query "
        "parameter allowRollback=true",
    )


def set_policy(
    state: ServiceState,
    ctx: ProviderContext,
    attestation_type: str,
    body: str,
    principal: Principal,
    *,
    allow_rollback: bool = False,
) -> str:
    """PUT /policies/{type}: store a new policy version; returns the result JWT."""
    t = canonical_type(attestation_type)
    _refuse_shared(ctx, f"{t} policy")
    body = body.strip()
    if not body:
        raise InputError("the request body is empty: send the policy text or a policy JWS")
    isolated = ctx.trust_model is TrustModel.ISOLATED
    payload: dict[str, Any] = {}
    if body.count(".") == 2 and _COMPACT_JWS.fullmatch(body):
        payload = _precheck_jws(body, "policy JWS")
    # AAD: a signed upload is verified against the certificate it carries (self-asserted
    # signer, reported back); Isolated: the signer must be, or chain to, a current signer
    doc = parse_policy_document(
        body, trusted_signers=ctx.signers if isolated else (), require_signed=isolated
    )
    if not doc.text.strip():
        raise InputError(
            "the uploaded policy is empty; use POST /policies/{type}:reset for the default"
        )
    compile_policy(doc.text)
    with state.db.session() as s:
        if isolated:  # the replay check and the insert as one step across replicas
            _lock_provider(s, ctx.name)
            _recheck_signers(ctx, _current_signers(s, ctx.name),
                             lambda fresh: parse_policy_document(
                                 body, trusted_signers=fresh, require_signed=True))
        rollback = (
            _refuse_replay(s, ctx, t, doc.token_hash, payload, allow_rollback=allow_rollback)
            if isolated
            else False
        )
        s.add(
            PolicyRow(
                provider=ctx.name,
                attestation_type=t,
                text=doc.text,
                jws=doc.jws or unsigned_policy_jws(doc.text),
                token_hash=doc.token_hash,
                signer_der=doc.signer.public_bytes(serialization.Encoding.DER)
                if doc.signer is not None
                else None,
                changed_by=principal.name[:255],
                created_at=utcnow(),
                rollback=rollback,
            )
        )
    state.providers.invalidate(ctx.name)
    claims: dict[str, Any] = {
        "x-ms-policy-result": "Updated",
        "x-ms-policy-token-hash": doc.token_hash,
    }
    if doc.signer is not None:
        claims["x-ms-policy-signer"] = cert_jwk(doc.signer)
    return result_token(ctx, claims)


def reset_policy(
    state: ServiceState,
    ctx: ProviderContext,
    attestation_type: str,
    body: str,
    principal: Principal,
    *,
    allow_rollback: bool = False,
) -> str:
    """POST /policies/{type}:reset: back to the default; body = JWS with an empty payload."""
    t = canonical_type(attestation_type)
    _refuse_shared(ctx, f"{t} policy")
    compact = body.strip()
    if compact.startswith('"'):
        compact = _json_string(compact)
    signer: x509.Certificate | None = None
    isolated = ctx.trust_model is TrustModel.ISOLATED
    if not compact:
        if isolated:
            raise PolicySignatureError(
                "isolated provider: a reset must be a JWS signed by a policy signer")
        compact = "eyJhbGciOiJub25lIn0.."
    payload = _precheck_jws(compact, "reset body")
    if payload.get("AttestationPolicy"):
        raise InputError("reset body: the JWS payload must not carry a policy")
    if _is_unsigned(compact):
        if isolated:
            raise PolicySignatureError(
                "isolated provider: a reset must be a JWS signed by a policy signer")
        # RFC 7515 (unsecured JWS) and policy uploads (parse_policy_document): an alg
        # 'none' document has an empty signature; one with a signature part is malformed,
        # and its token hash would be recorded as if it were a well-formed reset
        if not compact.endswith("."):
            raise InputError("reset body: a JWS with alg 'none' must have an empty signature")
    else:
        trusted = _signers_for(ctx, compact)
        if not trusted:
            raise PolicySignatureError("signed reset JWS carries no certificate (x5c or jwk.x5c)")
        signer = verify_signed_jws(compact, trusted).signer
    token_hash = policy_token_hash(compact)
    with state.db.session() as s:
        if isolated:  # the replay check and the insert as one step across replicas
            _lock_provider(s, ctx.name)
            _recheck_signers(ctx, _current_signers(s, ctx.name),
                             lambda fresh: verify_signed_jws(compact, fresh))
        rollback = (
            _refuse_replay(s, ctx, t, token_hash, payload, allow_rollback=allow_rollback)
            if isolated
            else False
        )
        s.add(
            PolicyRow(
                provider=ctx.name,
                attestation_type=t,
                text=None,
                jws=compact,
                token_hash=token_hash,
                signer_der=signer.public_bytes(serialization.Encoding.DER) if signer else None,
                changed_by=principal.name[:255],
                created_at=utcnow(),
                rollback=rollback,
            )
        )
    state.providers.invalidate(ctx.name)
    # MAA's answer carries the result and nothing else (the SDK recording
    # test_aad_reset_policy_secured: exp, iat, iss, nbf, x-ms-policy-result); the hash and
    # signer of the reset token stay in the history row
    return result_token(ctx, {"x-ms-policy-result": "Removed"})


def get_policy(ctx: ProviderContext, attestation_type: str) -> str:
    """GET /policies/{type}: PolicyResult JWT whose x-ms-policy is the stored policy JWS."""
    policy = ctx.policy(attestation_type)
    claims: dict[str, Any] = {"x-ms-policy": policy.stored_jws}
    if policy.signer_jwk is not None:
        claims["x-ms-policy-signer"] = policy.signer_jwk
    return result_token(ctx, claims)


def get_certificates(ctx: ProviderContext) -> str:
    """GET /certificates: the policy signers as x-ms-policy-certificates (JWKS)."""
    keys = [cert_jwk(c, kid=sha1_thumbprint(c)) for c in ctx.signers]
    return result_token(ctx, {"x-ms-policy-certificates": {"keys": keys}})


def _json_string(text: str) -> str:
    try:
        value = read_json(text, field="(body)")
    except ProtocolError as exc:
        raise InputError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, str):
        raise InputError("body must be a JSON string holding a JWS")
    return value.strip()


def _management_jws(body: str, field: str) -> str:
    """The JWS of a signer add/remove body: a JSON string (the Azure SDK), an object
    ``{field: jws}`` (spec 2025-06-01), or the bare JWS."""
    text = body.strip()
    if not text:
        raise InputError("the request body is empty: send the signed JWS")
    if text.startswith('"'):
        return _json_string(text)
    if text.startswith("{"):
        try:
            obj = read_json(text, field="(body)")
        except ProtocolError as exc:
            raise InputError(f"body is not valid JSON: {exc}") from exc
        value = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            raise InputError(f"body object must have a string field {field!r}")
        return value.strip()
    return text


def _certificate_from_payload(payload: dict[str, Any]) -> x509.Certificate:
    for name in CERT_CLAIMS:
        jwk = payload.get(name)
        if jwk is None:
            continue
        if not isinstance(jwk, dict):
            raise InputError(f"claim {name!r} must be a JWK object")
        chain = jwk.get("x5c")
        if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
            raise InputError(f"claim {name!r}: the JWK must carry x5c with a certificate")
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InputError(
                f"claim {name!r}: x5c[0] is not a DER certificate: {exc}"
            ) from exc
        # cryptography decodes names, extensions and the key lazily: a signer whose key
        # cannot be read would be stored, and every later GET /certificates (which
        # publishes its JWK) would fail with a 500; refuse it here with a 400 instead
        try:
            read_all_fields(cert)
        except CertificateFieldError as exc:
            raise InputError(f"claim {name!r}: x5c[0]: {exc}") from None
        return cert
    raise InputError(f"the JWS payload carries none of the claims {', '.join(CERT_CLAIMS)}")


def _recheck_signers(ctx: ProviderContext, current: Sequence[SignerRow],
                     verify: Callable[[tuple[x509.Certificate, ...]], object]) -> None:
    """Under the provider's lock, ``current`` its signers as the database has them: when
    they are no longer the ones the request was verified against (cached, up to the
    cache TTL old, or a change through another replica not yet heard of), verify it
    again against them.  A signer just removed elsewhere must not authorise a change in
    the staleness window."""
    if {r.thumbprint for r in current} != {sha1_thumbprint(c) for c in ctx.signers}:
        verify(tuple(x509.load_der_x509_certificate(r.cert_der) for r in current))


def _current_signers(s: Session, provider: str) -> list[SignerRow]:
    return list(s.scalars(select(SignerRow).where(
        SignerRow.provider == provider, SignerRow.removed_at.is_(None)).order_by(SignerRow.id)))


def _lock_provider(s: Session, name: str) -> None:
    """Take the provider's row lock for the rest of the transaction (a write of nothing:
    a row lock on PostgreSQL, the write lock on SQLite).  Two replicas removing two
    different signers at once each saw the other's signer still there, so both removals
    passed the "not the last signer" check and left the provider with none (and an
    Isolated provider without signers can never be changed again)."""
    s.execute(update(ProviderRow).where(ProviderRow.name == name)
              .values(kind=ProviderRow.kind))


def modify_signers(
    state: ServiceState,
    ctx: ProviderContext,
    body: str,
    principal: Principal,
    *,
    add: bool,
    allow_rollback: bool = False,
) -> str:
    """POST /certificates:add or :remove (Isolated providers only).

    A signed add (remove) JWS that was applied before as an add (a remove) and would
    change the signer set again, e.g. re-add a signer removed since, is a replay:
    refused (409 ``RollbackRefused``) unless ``allow_rollback``.
    """
    field = "policyCertificateToAdd" if add else "policyCertificateToRemove"
    _refuse_shared(ctx, "set of policy signers")
    if ctx.trust_model is not TrustModel.ISOLATED:
        raise OperationRefusedError(
            f"provider {ctx.name!r} uses the AAD trust model: policy signers exist only in "
            "the Isolated model"
        )
    compact = _management_jws(body, field)
    _precheck_jws(compact, "signer change JWS")
    if _is_unsigned(compact):
        raise PolicySignatureError("signer changes must be a JWS signed by a current policy signer")
    try:
        verified = verify_signed_jws(compact, ctx.signers)
    except PolicySignatureError as exc:
        raise PolicySignatureError(f"signer change refused: {exc}") from exc
    payload = verified.payload
    if not isinstance(payload, dict):
        raise InputError("the JWS payload is not a JSON object")
    cert = _certificate_from_payload(payload)
    thumb = sha1_thumbprint(cert)
    jws_hash = policy_token_hash(compact)
    who = principal.name[:255]
    now = utcnow()
    with state.db.session() as s:
        _lock_provider(s, ctx.name)

        def again(fresh: tuple[x509.Certificate, ...]) -> None:
            try:
                verify_signed_jws(compact, fresh)
            except PolicySignatureError as exc:
                raise PolicySignatureError(f"signer change refused: {exc}") from exc

        rows = list(s.scalars(select(SignerRow).where(SignerRow.provider == ctx.name)
                              .order_by(SignerRow.id)))
        current = [r for r in rows if r.removed_at is None]
        _recheck_signers(ctx, current, again)
        present = [r for r in current if r.thumbprint == thumb]
        changes = (add and not present) or (not add and bool(present))
        # the same operation only: MAA's add and remove bodies have the same shape (the
        # Azure SDK sends byte-identical JWSs to add and later remove a certificate), so
        # the URL names the operation and a body cannot be bound to one
        seen = [r for r in rows if jws_hash == (r.added_jws_hash if add else r.removed_jws_hash)]
        if changes and seen and not allow_rollback:
            raise RollbackRefusedError(
                f"replayed signer change refused: this exact signed JWS was applied before "
                f"(certificate {thumb}); sign a new one, or repeat the request with the "
                "query parameter allowRollback=true to apply it deliberately",
            )
        if add:
            if not present:
                if len(current) >= MAX_SIGNERS:
                    raise OperationRefusedError(
                        f"a provider may have at most {MAX_SIGNERS} signers")
                s.add(
                    SignerRow(
                        provider=ctx.name,
                        thumbprint=thumb,
                        cert_der=cert.public_bytes(serialization.Encoding.DER),
                        added_at=now,
                        added_by=who,
                        added_jws_hash=jws_hash,
                    )
                )
            result = "IsPresent"
        else:
            if present and len(current) == len(present):
                raise OperationRefusedError(
                    f"certificate {thumb} is the last policy signer of {ctx.name!r} and "
                    "cannot be removed"
                )
            for r in present:
                r.removed_at = now
                r.removed_by = who
                r.removed_jws_hash = jws_hash
            result = "IsAbsent"
    state.providers.invalidate(ctx.name)
    return result_token(
        ctx,
        {"x-ms-certificate-thumbprint": thumb, "x-ms-policycertificates-result": result},
    )
