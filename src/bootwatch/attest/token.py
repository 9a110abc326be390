"""Assembly of the ``azurevm`` token claims (maa-protocol sections 2.7, 2.8 and 3).

Kept apart from the pipeline so the exact token shape is testable with a
fixed clock: ``iss`` is the provider's base URL, ``iat = nbf = now``, ``exp``
is 8 hours later unless the policy set ``report_validity_in_minutes``; the
``x-ms-azurevm-*`` claims are issued whatever the issuance rules say (the
shared provider's policy has empty issuance rules, yet its tokens carry
them); claims the policy issues are added, but can never replace a claim the
service owns.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bootwatch.errors import PolicyEvaluationError
from bootwatch.policy.evaluator import MAX_VALIDITY_MINUTES as POLICY_MAX_VALIDITY_MINUTES
from bootwatch.protocol import token as t

__all__ = [
    "DEFAULT_VALIDITY",
    "MAX_VALIDITY_MINUTES",
    "VALIDITY_PROPERTY",
    "IssuedClaim",
    "assemble_token_claims",
    "new_jti",
    "validity_from_properties",
]

#: the lifetime MAA gives azurevm tokens (exp - iat = 28800 in every sample)
DEFAULT_VALIDITY = timedelta(hours=8)
#: the policy property that overrides it (maa-protocol 2.4)
VALIDITY_PROPERTY = "report_validity_in_minutes"
#: bounds we accept for that property: 1 minute .. the policy engine's bound (one year),
#: one constant, so a policy the engine accepts never denies every attestation here
MAX_VALIDITY_MINUTES = POLICY_MAX_VALIDITY_MINUTES


@dataclass(frozen=True)
class IssuedClaim:
    """A claim the policy's issuance rules issued: its type and JSON value."""

    type: str
    value: Any


def new_jti() -> str:
    """64 hex characters, like MAA's ``jti``."""
    return secrets.token_hex(32)


def validity_from_properties(properties: Mapping[str, Any]) -> timedelta:
    """The token lifetime: the policy's ``report_validity_in_minutes`` or 8 hours."""
    raw = properties.get(VALIDITY_PROPERTY)
    if raw is None:
        return DEFAULT_VALIDITY
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise PolicyEvaluationError(f"{VALIDITY_PROPERTY}: expected an integer, got {raw!r}")
    try:
        minutes = int(raw)
    except ValueError:
        raise PolicyEvaluationError(
            f"{VALIDITY_PROPERTY}: expected an integer, got {raw!r}"
        ) from None
    if not 1 <= minutes <= MAX_VALIDITY_MINUTES:
        raise PolicyEvaluationError(
            f"{VALIDITY_PROPERTY}: {minutes} is outside 1..{MAX_VALIDITY_MINUTES}"
        )
    return timedelta(minutes=minutes)


def assemble_token_claims(
    *,
    issuer: str,
    now: datetime,
    azurevm: Mapping[str, Any],
    issued: Sequence[IssuedClaim],
    policy_hash: str,
    policy_signer: Mapping[str, Any] | None,
    validity: timedelta = DEFAULT_VALIDITY,
    jti: str | None = None,
) -> dict[str, Any]:
    """The JWT body, keys sorted like MAA's tokens."""
    iat = int(now.timestamp())
    service: dict[str, Any] = {
        t.ISS: issuer,
        t.IAT: iat,
        t.NBF: iat,
        t.EXP: iat + int(validity.total_seconds()),
        t.JTI: jti if jti is not None else new_jti(),
        t.VER: "1.0",
        t.ATTESTATION_TYPE: t.AZUREVM,
        t.POLICY_HASH: policy_hash,
    }
    if policy_signer is not None:
        service[t.POLICY_SIGNER] = dict(policy_signer)
    service.update(azurevm)
    extra: dict[str, list[Any]] = {}
    for claim in issued:
        if claim.type in service:
            continue
        extra.setdefault(claim.type, []).append(claim.value)
    body = dict(service)
    for name, values in extra.items():
        body[name] = values[0] if len(values) == 1 else values
    return dict(sorted(body.items()))
