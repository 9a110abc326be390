"""The AzureGuest attestation pipeline: request bytes in, verdict and sealed token out.

decode (protocol) -> verify evidence (tpm: quote, certify, AIK chain, log
replay) -> boot facts (eventlog: PCR 7 variables, boot images, SIPA) ->
``azurevm`` claims -> provider policy -> token claims -> RS256 signature ->
sealed envelope to the certified vTPM key.

Pure: the clock, the provider's keys, policy and configuration come in as
:class:`ProviderInputs`; the function touches no network, disk or settings,
so the service, the benchmark and the tests all run exactly this code.
Every failure is an :class:`AttestationOutcome` that names what failed (the
evidence check and its reason, or the deciding policy rule); only a bug
raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootwatch.attest.caches import VerifierCaches
from bootwatch.attest.claims import (
    DEFAULT_TEMPLATES,
    AzureVmClaims,
    DbxReference,
    SecureBootTemplate,
    derive_azurevm_claims,
)
from bootwatch.attest.evidence import Check, EvidenceVerification, verify_evidence
from bootwatch.attest.facts import (
    VerifiedBoot,
    enc_key_jwk,
    is_described_event,
    os_info_of,
    pcrs_claim,
    policy_claims,
    verified_boot,
    vm_id_from_aik_certificate,
)
from bootwatch.attest.token import (
    IssuedClaim,
    assemble_token_claims,
    validity_from_properties,
)
from bootwatch.errors import BootwatchError, InputError, PolicyError
from bootwatch.policy.compiler import CompiledPolicy
from bootwatch.policy.evaluator import EvaluationResult, evaluate
from bootwatch.protocol.azureguest import (
    AzureGuestRequest,
    UnverifiedAzureGuestRequest,
    decode_request,
)
from bootwatch.protocol.envelope import SealedEnvelope, seal
from bootwatch.protocol.outcome import MAX_OUTCOME_EVENTS
from bootwatch.protocol.verdict import Verdict
from bootwatch.tpm.aik import RevokedAikCertificates, TrustAnchors
from bootwatch.tpm.public import parse_public_or_read_public


@dataclass(frozen=True)
class ProviderInputs:
    """Everything provider-specific the pipeline needs, passed in by the service.

    ``sign`` turns a claims mapping into a compact RS256 JWS (the provider's
    token signer, which sets ``kid`` and ``jku``).  ``policy`` is a compiled
    policy of :mod:`bootwatch.policy`.  ``require_aik_certificate``: when set
    (the default), an AIK certificate that does not chain to
    ``trust_anchors`` makes the request invalid.
    """

    issuer: str
    policy: CompiledPolicy
    policy_hash: str
    sign: Callable[[Mapping[str, Any]], str]
    trust_anchors: TrustAnchors | None
    policy_signer: Mapping[str, Any] | None = None
    templates: tuple[SecureBootTemplate, ...] = DEFAULT_TEMPLATES
    dbx_reference: DbxReference | None = None
    require_aik_certificate: bool | None = None
    #: AIK certificates the provider revoked (checked on every attestation)
    revoked_aik: RevokedAikCertificates | None = None


@dataclass(frozen=True)
class CheckResult:
    """One evidence check as the outcome reports it."""

    name: str
    passed: bool
    reason_code: str
    reason: str


@dataclass(frozen=True)
class AttestationOutcome:
    """The verdict and everything needed to answer, record and explain it."""

    verdict: Verdict
    reason: str
    policy_hash: str
    failed_check: str | None = None
    deciding_rule: str | None = None
    checks: tuple[CheckResult, ...] = ()
    azurevm: AzureVmClaims | None = None
    token_claims: Mapping[str, Any] | None = None
    token: str | None = None
    envelope: SealedEnvelope | None = None
    vm_id: str | None = None
    #: the evidence verification (None when the request did not decode); read only its
    #: ``verified_*`` fields, which are set only for checks that passed
    evidence: EvidenceVerification | None = None
    #: the verified boot facts (None unless every evidence check passed)
    boot: VerifiedBoot | None = None
    #: the VM id the request *claimed* (its AIK certificate's subject, not validated):
    #: lets a monitor attribute rejected evidence to a VM, never to trust it
    claimed_vm_id: str | None = None

    @property
    def permitted(self) -> bool:
        return self.verdict is Verdict.PERMIT


#: checks decided after the policy (its require_valid_aik_cert property), not before
_OPTIONAL_CHECKS = frozenset({"aik_certificate"})


def attest_azure_guest(
    request_body: bytes,
    *,
    provider: ProviderInputs,
    now: datetime,
    jti: str | None = None,
    caches: VerifierCaches | None = None,
) -> AttestationOutcome:
    """Run one AzureGuest attestation (see the module docstring).

    ``caches``: what the caller's verifier may reuse between attestations
    (:class:`~bootwatch.attest.caches.VerifierCaches`; None computes everything).
    """
    ph = provider.policy_hash
    try:
        request = decode_request(request_body)
    except InputError as exc:
        return AttestationOutcome(
            Verdict.EVIDENCE_REJECTED, f"request: {exc}", ph, failed_check="request"
        )

    try:
        evidence = verify_evidence(request, trust_anchors=provider.trust_anchors, at=now,
                                   revoked_aik=provider.revoked_aik, caches=caches)
    except InputError as exc:
        return AttestationOutcome(
            Verdict.EVIDENCE_REJECTED, f"evidence: {exc}", ph, failed_check="evidence",
        )
    checks = tuple(
        CheckResult(str(c.name), bool(c.passed), str(c.reason_code), str(c.reason))
        for c in evidence.checks
    )
    # the AIK certificate check is decided after the policy (require_valid_aik_cert)
    failed = [c for c in checks if not c.passed and c.name not in _OPTIONAL_CHECKS]
    if failed:
        first = failed[0]
        return AttestationOutcome(
            Verdict.EVIDENCE_REJECTED,
            f"evidence check '{first.name}' failed ({first.reason_code}): {first.reason}",
            ph,
            failed_check=first.name,
            checks=checks,
            evidence=evidence,
            claimed_vm_id=_claimed_vm_id(request, evidence),
        )

    try:
        boot: VerifiedBoot = verified_boot(
            evidence, request, with_events=_policy_reads(provider.policy, "events"),
            caches=caches,
        )
        azurevm = derive_azurevm_claims(
            secure_boot=boot.secure_boot,
            windows=boot.windows,
            templates=provider.templates,
            dbx_reference=provider.dbx_reference,
            os_info=os_info_of(request),
            attested_pcrs=boot.attested_pcrs,
            protocol_version=boot.protocol_version,
            enc_key_jwk=enc_key_jwk(boot.enc_key),
            client_payload=boot.client_payload,
            vm_id=boot.vm_id,
        )
    except InputError as exc:
        return AttestationOutcome(
            Verdict.EVIDENCE_REJECTED, f"evidence: {exc}", ph, failed_check="boot_state",
            checks=checks,
            evidence=evidence, claimed_vm_id=_claimed_vm_id(request, evidence),
        )

    log = evidence.verified_event_log
    if log is not None and len(log.events) > MAX_OUTCOME_EVENTS:
        # every measured event of a quoted PCR goes to the monitor with the outcome, and
        # the monitor takes at most MAX_OUTCOME_EVENTS: a boot with more (a GRUB
        # configuration running thousands of commands) would be permitted, its outcome
        # refused by a standalone monitor, and the VM left healthy on its old boot (found
        # in an audit).  Real logs carry about 200.  Counted only past the cheap bound.
        quoted = frozenset(boot.attested_pcrs)
        measured = sum(1 for ev in log.events if is_described_event(ev, quoted))
        if measured > MAX_OUTCOME_EVENTS:
            return AttestationOutcome(
                Verdict.EVIDENCE_REJECTED,
                f"evidence: the event log measures {measured} events into the quoted PCRs, "
                f"more than the {MAX_OUTCOME_EVENTS} bootwatch explains to its monitor; a "
                "boot measuring that many (thousands of GRUB commands, say) is refused, "
                "not monitored blind",
                ph, failed_check="event_count", checks=checks, evidence=evidence,
                claimed_vm_id=_claimed_vm_id(request, evidence))

    incoming = policy_claims(azurevm, events=boot.events, pcrs=pcrs_claim(boot))
    try:
        result = evaluate(provider.policy, incoming)
    except PolicyError as exc:
        return AttestationOutcome(
            Verdict.DENY,
            f"policy evaluation failed: {exc}",
            ph,
            checks=checks,
            azurevm=azurevm,
            vm_id=boot.vm_id, evidence=evidence, boot=boot,
        )
    if not result.permitted:
        rule = result.deciding_rule
        why = f"denied by rule {rule}" if rule else "denied: no authorization rule permitted"
        return AttestationOutcome(
            Verdict.DENY, why, ph, deciding_rule=rule, checks=checks, azurevm=azurevm,
            vm_id=boot.vm_id, evidence=evidence, boot=boot,
        )

    props = result.properties
    require_aik = (
        provider.require_aik_certificate
        if provider.require_aik_certificate is not None
        else bool(props.get("require_valid_aik_cert", True))
    )
    missing = _missing_required_pcrs(result, boot.attested_pcrs)
    if missing:
        return AttestationOutcome(
            Verdict.DENY,
            f"the policy's required_pcr_mask requires PCR {', '.join(map(str, missing))} in "
            f"the quote, which covers PCR {', '.join(map(str, boot.attested_pcrs))}",
            ph, checks=checks, azurevm=azurevm, vm_id=boot.vm_id, evidence=evidence,
            boot=boot,
        )
    aik_failed = [c for c in checks if c.name in _OPTIONAL_CHECKS and not c.passed]
    if require_aik and aik_failed:
        first = aik_failed[0]
        return AttestationOutcome(
            Verdict.EVIDENCE_REJECTED,
            f"evidence check '{first.name}' failed ({first.reason_code}): {first.reason}",
            ph, failed_check=first.name, checks=checks, azurevm=azurevm, vm_id=boot.vm_id,
            evidence=evidence, boot=boot,
        )
    try:
        # only what the policy set itself: the evaluator's TPM default lifetime (1440 min)
        # is not MAA's azurevm default (8 hours)
        validity = validity_from_properties(
            {name: props[name] for name in result.explicit_properties}
        )
    except PolicyError as exc:
        return AttestationOutcome(
            Verdict.DENY, str(exc), ph, checks=checks, azurevm=azurevm, vm_id=boot.vm_id,
            evidence=evidence, boot=boot,
        )
    issued = [IssuedClaim(c.type, c.value) for c in result.issued]
    body = assemble_token_claims(
        issuer=provider.issuer,
        now=now,
        azurevm=azurevm.claims,
        issued=issued,
        policy_hash=ph,
        policy_signer=provider.policy_signer,
        validity=validity,
        jti=jti,
    )
    jws = provider.sign(body)
    envelope = seal(jws, boot.enc_key)
    return AttestationOutcome(
        Verdict.PERMIT,
        "permitted",
        ph,
        deciding_rule=result.deciding_rule,
        checks=checks,
        azurevm=azurevm,
        token_claims=body,
        token=jws,
        envelope=envelope,
        vm_id=boot.vm_id, evidence=evidence, boot=boot,
    )


def _policy_reads(policy: CompiledPolicy, claim: str) -> bool:
    """Whether the policy text mentions ``claim`` at all (conservative: a mention in a
    comment or string also counts)."""
    return claim in policy.text


def _missing_required_pcrs(result: EvaluationResult, attested: Sequence[int]) -> list[int]:
    """PCRs an explicit ``required_pcr_mask`` asks for that the quote does not cover.

    MAA's TPM default mask (0xFFFFFF, every PCR) is not applied to azurevm requests, which
    quote PCR 0-7 (Linux) or 0-7 and 11-14 (Windows); a mask the policy sets is enforced.
    """
    if "required_pcr_mask" not in result.explicit_properties:
        return []
    mask = result.properties.get("required_pcr_mask")
    if not isinstance(mask, int) or isinstance(mask, bool):
        # the evaluator refuses such a mask; should one reach here, fail closed (every
        # PCR, MAA's default) rather than silently enforce no coverage at all
        mask = 0xFFFFFF
    have = set(attested)
    return [pcr for pcr in range(24) if mask >> pcr & 1 and pcr not in have]


__all__ = [
    "AttestationOutcome",
    "CheckResult",
    "ProviderInputs",
    "Verdict",
    "attest_azure_guest",
]


def _claimed_vm_id(request: AzureGuestRequest | UnverifiedAzureGuestRequest,
                   evidence: EvidenceVerification | None) -> str | None:
    """The VM id the request's AIK certificate names (its chain not validated), only when
    the quote's signature verified with AikPub and the certificate is for that key.

    Why: the monitor attributes an ``evidence_rejected`` outcome to this id.  Read from
    any certificate at all, a junk request naming a victim's VM id, its signature
    verifying nothing, was attributed to the victim (found in review)."""
    aik_cert_der = request.tpm_info.aik_cert
    if not aik_cert_der or evidence is None:
        return None
    try:
        if not evidence.check(Check.QUOTE_SIGNATURE).passed:
            return None
        cert = x509.load_der_x509_certificate(aik_cert_der)
        aik = parse_public_or_read_public(request.tpm_info.aik_pub).public_key()
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*spki) != aik.public_bytes(*spki):
            return None
        return vm_id_from_aik_certificate(cert)
    except (ValueError, TypeError, KeyError, BootwatchError):
        return None
