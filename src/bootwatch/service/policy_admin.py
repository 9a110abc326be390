"""Policy and policy-signer management: the rules of both trust models.

* Shared providers: every write is refused (``InvalidOperation``): their
  policies are the fixed defaults.
* AAD providers: the caller must be an authorised principal (checked by
  :func:`bootwatch.service.auth.require_policy_writer`); the policy may be
  sent unsigned (``alg: none`` JWS or plain text) or signed, in which case the
  signature is checked against the certificate the JWS carries and that
  certificate is reported as ``x-ms-policy-signer``.  Signer management is
  not available (MAA: Isolated mode only).
* Isolated providers: every policy write, reset and signer change must be a
  JWS signed by one of the provider's current signers; the last signer
  cannot be removed.

Results are ``PolicyResult`` / ``PolicyCertificatesModificationResult`` JWTs
signed by the provider's token key, valid for one hour (as MAA's).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select

from bootwatch.errors import PolicySignatureError
from bootwatch.policy import (
    compile_policy,
    parse_policy_document,
    policy_token_hash,
    unsigned_policy_jws,
    verify_signed_jws,
)
from bootwatch.service.db import utcnow
from bootwatch.service.errors import invalid_operation, invalid_parameter, unauthorized
from bootwatch.service.keys import cert_jwk
from bootwatch.service.models import PolicyRow, SignerRow
from bootwatch.service.providers import ProviderContext, TrustModel, canonical_type

if TYPE_CHECKING:
    from bootwatch.service.auth import Principal
    from bootwatch.service.state import ServiceState

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


def sha1_thumbprint(cert: x509.Certificate) -> str:
    """MAA's x-ms-certificate-thumbprint: hex SHA-1 of the DER certificate."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier, not security


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
        raise invalid_operation(
            f"provider {ctx.name!r} is a shared provider: its {what} is fixed and cannot be changed"
        )


def _b64url_json(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw) if raw else {}
    except (binascii.Error, ValueError) as exc:
        raise invalid_parameter(f"{what} is not base64url JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid_parameter(f"{what} is not a JSON object")
    return value


def embedded_certificate(compact: str) -> x509.Certificate | None:
    """The certificate a JWS carries in ``x5c`` or ``jwk.x5c`` (self-asserted)."""
    parts = compact.split(".")
    if len(parts) != 3:
        raise invalid_parameter(f"expected a compact JWS with 3 parts, got {len(parts)}")
    header = _b64url_json(parts[0], "JWS header")
    chain = header.get("x5c")
    jwk = header.get("jwk")
    if chain is None and isinstance(jwk, dict):
        chain = jwk.get("x5c")
    if not chain:
        return None
    if not isinstance(chain, list) or not isinstance(chain[0], str):
        raise invalid_parameter("JWS header x5c must be a list of base64 certificates")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise invalid_parameter(f"JWS header x5c[0] is not a DER certificate: {exc}") from exc


def _is_unsigned(compact: str) -> bool:
    header = _b64url_json(compact.split(".")[0], "JWS header")
    return str(header.get("alg", "")).lower() == "none"


def _signers_for(ctx: ProviderContext, compact: str) -> tuple[x509.Certificate, ...]:
    """Certificates a signed JWS may verify against under the provider's trust model."""
    if ctx.trust_model is TrustModel.ISOLATED:
        return ctx.signers
    cert = embedded_certificate(compact)
    return (cert,) if cert is not None else ()


def set_policy(
    state: ServiceState,
    ctx: ProviderContext,
    attestation_type: str,
    body: str,
    principal: Principal | None,
) -> str:
    """PUT /policies/{type}: store a new policy version; returns the result JWT."""
    t = canonical_type(attestation_type)
    _refuse_shared(ctx, f"{t} policy")
    body = body.strip()
    if not body:
        raise invalid_parameter("the request body is empty: send the policy text or a policy JWS")
    isolated = ctx.trust_model is TrustModel.ISOLATED
    # AAD: a signed upload is verified against the certificate it carries (self-asserted
    # signer, reported back); Isolated: the signer must be, or chain to, a current signer
    doc = parse_policy_document(
        body, trusted_signers=ctx.signers if isolated else (), require_signed=isolated
    )
    if not doc.text.strip():
        raise invalid_parameter(
            "the uploaded policy is empty; use POST /policies/{type}:reset for the default"
        )
    compile_policy(doc.text)
    changed_by = (
        principal.name
        if principal is not None
        else (sha1_thumbprint(doc.signer) if doc.signer is not None else "anonymous")
    )
    with state.db.session() as s:
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
                changed_by=changed_by[:255],
                created_at=utcnow(),
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
    principal: Principal | None,
) -> str:
    """POST /policies/{type}:reset: back to the default; body = JWS with an empty payload."""
    t = canonical_type(attestation_type)
    _refuse_shared(ctx, f"{t} policy")
    compact = body.strip()
    if compact.startswith('"'):
        compact = _json_string(compact)
    signer: x509.Certificate | None = None
    if not compact:
        if ctx.trust_model is TrustModel.ISOLATED:
            raise unauthorized("isolated provider: a reset must be a JWS signed by a policy signer")
        compact = "eyJhbGciOiJub25lIn0.."
    parts = compact.split(".")
    if len(parts) != 3:
        raise invalid_parameter(
            f"reset body: expected a compact JWS with 3 parts, got {len(parts)}"
        )
    payload = _b64url_json(parts[1], "reset JWS payload") if parts[1] else {}
    if payload.get("AttestationPolicy"):
        raise invalid_parameter("reset body: the JWS payload must not carry a policy")
    if _is_unsigned(compact):
        if ctx.trust_model is TrustModel.ISOLATED:
            raise unauthorized("isolated provider: a reset must be a JWS signed by a policy signer")
    else:
        trusted = _signers_for(ctx, compact)
        if not trusted:
            raise unauthorized("signed reset JWS carries no certificate (x5c or jwk.x5c)")
        signer = verify_signed_jws(compact, trusted).signer
    token_hash = policy_token_hash(compact)
    changed_by = (
        principal.name
        if principal is not None
        else (sha1_thumbprint(signer) if signer is not None else "anonymous")
    )
    with state.db.session() as s:
        s.add(
            PolicyRow(
                provider=ctx.name,
                attestation_type=t,
                text=None,
                jws=compact,
                token_hash=token_hash,
                signer_der=signer.public_bytes(serialization.Encoding.DER) if signer else None,
                changed_by=f"reset by {changed_by}"[:255],
                created_at=utcnow(),
            )
        )
    state.providers.invalidate(ctx.name)
    claims: dict[str, Any] = {"x-ms-policy-result": "Removed", "x-ms-policy-token-hash": token_hash}
    if signer is not None:
        claims["x-ms-policy-signer"] = cert_jwk(signer)
    return result_token(ctx, claims)


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
        value = json.loads(text)
    except ValueError as exc:
        raise invalid_parameter(f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, str):
        raise invalid_parameter("body must be a JSON string holding a JWS")
    return value.strip()


def _management_jws(body: str, field: str) -> str:
    """The JWS of a signer add/remove body: a JSON string (the Azure SDK), an object
    ``{field: jws}`` (spec 2025-06-01), or the bare JWS."""
    text = body.strip()
    if not text:
        raise invalid_parameter("the request body is empty: send the signed JWS")
    if text.startswith('"'):
        return _json_string(text)
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise invalid_parameter(f"body is not valid JSON: {exc}") from exc
        value = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            raise invalid_parameter(f"body object must have a string field {field!r}")
        return value.strip()
    return text


def _certificate_from_payload(payload: dict[str, Any]) -> x509.Certificate:
    for name in CERT_CLAIMS:
        jwk = payload.get(name)
        if jwk is None:
            continue
        if not isinstance(jwk, dict):
            raise invalid_parameter(f"claim {name!r} must be a JWK object")
        chain = jwk.get("x5c")
        if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
            raise invalid_parameter(f"claim {name!r}: the JWK must carry x5c with a certificate")
        try:
            return x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise invalid_parameter(
                f"claim {name!r}: x5c[0] is not a DER certificate: {exc}"
            ) from exc
    raise invalid_parameter(f"the JWS payload carries none of the claims {', '.join(CERT_CLAIMS)}")


def modify_signers(state: ServiceState, ctx: ProviderContext, body: str, *, add: bool) -> str:
    """POST /certificates:add or :remove (Isolated providers only)."""
    field = "policyCertificateToAdd" if add else "policyCertificateToRemove"
    _refuse_shared(ctx, "set of policy signers")
    if ctx.trust_model is not TrustModel.ISOLATED:
        raise invalid_operation(
            f"provider {ctx.name!r} uses the AAD trust model: policy signers exist only in "
            "the Isolated model"
        )
    compact = _management_jws(body, field)
    if _is_unsigned(compact):
        raise unauthorized("signer changes must be a JWS signed by a current policy signer")
    try:
        verified = verify_signed_jws(compact, ctx.signers)
    except PolicySignatureError as exc:
        raise unauthorized(f"signer change refused: {exc}") from exc
    payload = verified.payload
    if not isinstance(payload, dict):
        raise invalid_parameter("the JWS payload is not a JSON object")
    cert = _certificate_from_payload(payload)
    thumb = sha1_thumbprint(cert)
    now = utcnow()
    with state.db.session() as s:
        current = list(
            s.scalars(
                select(SignerRow).where(
                    SignerRow.provider == ctx.name, SignerRow.removed_at.is_(None)
                )
            )
        )
        present = [r for r in current if r.thumbprint == thumb]
        if add:
            if not present:
                if len(current) >= MAX_SIGNERS:
                    raise invalid_operation(f"a provider may have at most {MAX_SIGNERS} signers")
                s.add(
                    SignerRow(
                        provider=ctx.name,
                        thumbprint=thumb,
                        cert_der=cert.public_bytes(serialization.Encoding.DER),
                        added_at=now,
                    )
                )
            result = "IsPresent"
        else:
            if present and len(current) == len(present):
                raise invalid_operation(
                    f"certificate {thumb} is the last policy signer of {ctx.name!r} and "
                    "cannot be removed"
                )
            for r in present:
                r.removed_at = now
            result = "IsAbsent"
    state.providers.invalidate(ctx.name)
    return result_token(
        ctx,
        {"x-ms-certificate-thumbprint": thumb, "x-ms-policycertificates-result": result},
    )
