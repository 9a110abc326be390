"""bootwatch.tpm: TPM 2.0 structures and the checks on them (pure: bytes in, typed values out).

Modules: ``public`` (TPM2B_PUBLIC, names), ``attest`` (TPMS_ATTEST quote and
certify), ``signature`` (raw AzureGuest signatures, TPMT_SIGNATURE, RSASSA /
RSAPSS / ECDSA verification), ``pcr`` (selections, quote digest, PolicyPCR
digest), ``aik`` (AIK certificate chains), ``marshal`` (bounds-checked reader)
and ``errors``.  Every malformed structure raises
:class:`bootwatch.errors.TpmStructureError` naming structure, field and offset.
"""

from bootwatch.tpm.aik import TrustAnchors, VerifiedAikChain, verify_aik_certificate
from bootwatch.tpm.attest import CertifyInfo, ClockInfo, QuoteInfo, TpmsAttest, parse_tpms_attest
from bootwatch.tpm.constants import ObjectAttributes, TpmAlg, TpmSt
from bootwatch.tpm.pcr import PcrSelection, policy_pcr_digest, quote_pcr_digest
from bootwatch.tpm.public import (
    TpmPublic,
    parse_public_or_read_public,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from bootwatch.tpm.signature import (
    TpmSignature,
    parse_tpmt_signature,
    signature_from_raw,
    verify_signature,
)

__all__ = [
    "CertifyInfo",
    "ClockInfo",
    "ObjectAttributes",
    "PcrSelection",
    "QuoteInfo",
    "TpmAlg",
    "TpmPublic",
    "TpmSignature",
    "TpmSt",
    "TpmsAttest",
    "TrustAnchors",
    "VerifiedAikChain",
    "parse_public_or_read_public",
    "parse_tpm2b_public",
    "parse_tpms_attest",
    "parse_tpmt_public",
    "parse_tpmt_signature",
    "policy_pcr_digest",
    "quote_pcr_digest",
    "signature_from_raw",
    "verify_aik_certificate",
    "verify_signature",
]
