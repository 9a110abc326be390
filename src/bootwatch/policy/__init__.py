"""bootwatch.policy: MAA's claim-rule policy language (1.0, 1.1, 1.2), pure.

Parse (``compile_policy``), evaluate (``evaluate``), hash (``policy_hash``,
``policy_token_hash``) and read or write policy upload documents (plain text or JWS).
No clock, disk or network: text and claims in, typed results out.
"""

from __future__ import annotations

from bootwatch.policy.ast import PolicyAst, SectionKind, Tolerance
from bootwatch.policy.claims import Claim, ClaimIssuer, ClaimValueType, claim_from_json
from bootwatch.policy.compiler import CompiledPolicy, PolicyCompiler, compile_policy
from bootwatch.policy.defaults import default_azureguest_policy
from bootwatch.policy.document import (
    PolicyDocument,
    VerifiedJws,
    parse_policy_document,
    policy_certificate_from_payload,
    sign_policy,
    sign_policy_certificate,
    unsigned_policy_jws,
    verify_signed_jws,
)
from bootwatch.policy.errors import (
    PolicyDocumentError,
    PolicyError,
    PolicyEvaluationError,
    PolicyLimitError,
    PolicyParsingError,
    PolicySignatureError,
    UntrustedSignerError,
)
from bootwatch.policy.evaluator import PROPERTY_DEFAULTS, EvaluationResult, TraceEntry, evaluate
from bootwatch.policy.hashes import policy_hash, policy_token_hash
from bootwatch.policy.limits import DEFAULT_LIMITS, EvaluationLimits

#: Alias matching the public contract's spelling (``limits: EvaluationLimits = DEFAULT``).
DEFAULT = DEFAULT_LIMITS

__all__ = [
    "DEFAULT",
    "DEFAULT_LIMITS",
    "PROPERTY_DEFAULTS",
    "Claim",
    "ClaimIssuer",
    "ClaimValueType",
    "CompiledPolicy",
    "EvaluationLimits",
    "EvaluationResult",
    "PolicyAst",
    "PolicyCompiler",
    "PolicyDocument",
    "PolicyDocumentError",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyLimitError",
    "PolicyParsingError",
    "PolicySignatureError",
    "SectionKind",
    "Tolerance",
    "TraceEntry",
    "UntrustedSignerError",
    "VerifiedJws",
    "claim_from_json",
    "compile_policy",
    "default_azureguest_policy",
    "evaluate",
    "parse_policy_document",
    "policy_certificate_from_payload",
    "policy_hash",
    "policy_token_hash",
    "sign_policy",
    "sign_policy_certificate",
    "unsigned_policy_jws",
    "verify_signed_jws",
]
