"""Verify AzureGuest TPM evidence: which of its claims hold, check by check.

Joins bootwatch.tpm (quote, certify, keys, AIK chain) and bootwatch.eventlog
(the log that must explain the quoted PCRs).  Every check is reported with a
stable reason code and a sentence a person can act on; nothing is raised for
bad evidence (only programming errors escape).  Values are exposed as
``verified_*`` only when every check they rest on passed, so later layers
cannot mistake a reported value for an attested one.

Checks (in order): ``quote_signature``, ``quote_structure``, ``quote_nonce``,
``pcr_digest``, ``log_replay``, ``enc_key_certified``, ``enc_key_attributes``,
``enc_key_pcr_policy``, ``aik_certificate``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from bootwatch.attest.caches import ParsedLog, Unbound, VerifierCaches
from bootwatch.errors import EventLogError, TpmStructureError
from bootwatch.eventlog import (
    EventType,
    LogFormat,
    PcrStatus,
    PcrVerification,
    Replay,
    UnverifiedEventLog,
    parse_log,
    replay,
    verify_pcrs,
)
from bootwatch.eventlog.replay import initial_pcr_value
from bootwatch.protocol.azureguest import AzureGuestRequest, UnverifiedAzureGuestRequest
from bootwatch.tpm.aik import (
    RevokedAikCertificates,
    TrustAnchors,
    VerifiedAikChain,
    verify_aik_certificate,
)
from bootwatch.tpm.attest import ClockInfo, TpmsAttest, parse_tpms_attest
from bootwatch.tpm.constants import (
    OBJECT_ATTRIBUTE_NAMES,
    TPM_GENERATED_VALUE,
    ObjectAttributes,
    TpmAlg,
    TpmSt,
    alg_name,
)
from bootwatch.tpm.errors import AikCertificateError, SignatureError, TpmValueError
from bootwatch.tpm.pcr import PcrSelection, policy_pcr_digest, quote_pcr_digest
from bootwatch.tpm.public import (
    RsaParms,
    TpmPublic,
    parse_public_or_read_public,
    parse_tpm2b_public,
)
from bootwatch.tpm.signature import signature_from_raw, verify_signature

__all__ = [
    "AIK_REQUIRED",
    "ENC_KEY_FORBIDDEN",
    "ENC_KEY_REQUIRED",
    "REPORTED_BANK",
    "SIPA_PCRS",
    "Check",
    "EvidenceCheck",
    "EvidenceVerification",
    "verify_evidence",
]

#: The bank AzureGuest reports PCR values from.
REPORTED_BANK = TpmAlg.SHA256


class Check(enum.StrEnum):
    """Names of the evidence checks (stable: used in JSON and by policies)."""

    QUOTE_SIGNATURE = "quote_signature"
    QUOTE_STRUCTURE = "quote_structure"
    QUOTE_NONCE = "quote_nonce"
    PCR_DIGEST = "pcr_digest"
    LOG_REPLAY = "log_replay"
    ENC_KEY_CERTIFIED = "enc_key_certified"
    ENC_KEY_ATTRIBUTES = "enc_key_attributes"
    ENC_KEY_PCR_POLICY = "enc_key_pcr_policy"
    AIK_CERTIFICATE = "aik_certificate"


#: Attributes the ephemeral key must have, and must not have (maa-protocol 1.3).
ENC_KEY_REQUIRED = (
    ObjectAttributes.DECRYPT
    | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.NO_DA
)
#: sign would let the key sign; userWithAuth would let it be used with its
#: (empty) password instead of the PCR policy; restricted keys cannot RSA_Decrypt.
ENC_KEY_FORBIDDEN = (
    ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.USER_WITH_AUTH | ObjectAttributes.RESTRICTED
)
#: An AIK must be a restricted signing key inside the TPM: only then does the
#: TPM refuse to sign outside data that starts with TPM_GENERATED_VALUE.
AIK_REQUIRED = (
    ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED | ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
)


@dataclass(frozen=True)
class EvidenceCheck:
    """One check: its name, whether it passed, a stable reason code and a human reason."""

    name: str
    passed: bool
    reason_code: str
    reason: str


@dataclass(frozen=True)
class EvidenceVerification:
    """The outcome of :func:`verify_evidence`.

    ``verified_*`` fields are None unless every check they depend on passed:

    * ``verified_pcrs``, ``verified_clock``, ``verified_firmware_version``:
      quote_signature, quote_structure, quote_nonce, pcr_digest;
    * ``verified_event_log``, ``verified_replay``: those plus log_replay
      (the replay holds the reported SHA-256 bank only: no other bank is
      compared with a quote, so none is replayed; but in every bank the log
      declares, each data-bound event's digest was checked against its data,
      so a forged SHA-1 or SHA-384 digest fails log_replay too);
    * ``verified_enc_key``: quote_signature, pcr_digest, enc_key_certified,
      enc_key_attributes, enc_key_pcr_policy;
    * ``verified_aik_chain``: aik_certificate (independent of the rest).
    """

    checks: tuple[EvidenceCheck, ...]
    unverified_reported_pcrs: Mapping[int, bytes]
    unverified_replayed_pcrs: Mapping[int, bytes] | None = None
    pcr_verification: PcrVerification | None = None
    verified_pcrs: Mapping[int, bytes] | None = None
    verified_pcr_selection: tuple[PcrSelection, ...] | None = None
    verified_clock: ClockInfo | None = None
    verified_firmware_version: int | None = None
    verified_event_log: UnverifiedEventLog | None = None
    verified_replay: Replay | None = None
    verified_aik_pub: TpmPublic | None = None
    verified_enc_key: TpmPublic | None = None
    verified_aik_chain: VerifiedAikChain | None = None
    workarounds: tuple[str, ...] = field(default=())
    #: SHA-256 of the request's TcgLogs bytes (identifies the bytes, attests nothing)
    event_log_sha256: bytes = b""

    @property
    def passed(self) -> bool:
        """True when every check passed (aik_certificate included)."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[EvidenceCheck, ...]:
        """The checks that failed, in order."""
        return tuple(c for c in self.checks if not c.passed)

    def check(self, name: str) -> EvidenceCheck:
        """The check called ``name`` (KeyError if there is none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def verified_reset_count(self) -> int | None:
        """TPM reset count (boots since the TPM was cleared) from the verified quote."""
        return self.verified_clock.reset_count if self.verified_clock else None

    @property
    def verified_restart_count(self) -> int | None:
        """TPM restart count (resumes since the last reset) from the verified quote."""
        return self.verified_clock.restart_count if self.verified_clock else None


def _ok(name: Check, reason: str) -> EvidenceCheck:
    return EvidenceCheck(name.value, True, "ok", reason)


def _fail(name: Check, code: str, reason: str) -> EvidenceCheck:
    return EvidenceCheck(name.value, False, code, reason)


def _skipped(name: Check, what: str) -> EvidenceCheck:
    return EvidenceCheck(name.value, False, "prerequisite_failed", f"not checked: {what}")


#: (bit, TCG name) of TPMA_OBJECT as plain ints, in bit order
_ATTRIBUTE_BITS = tuple((int(bit), n) for bit, n in OBJECT_ATTRIBUTE_NAMES.items())


def _attrs(bits: int) -> str:
    """TCG names of the set bits, comma-separated (a function of the 32-bit value alone)."""
    return ", ".join(n for bit, n in _ATTRIBUTE_BITS if bits & bit)


#: replay findings that leave an event's meaning unmeasured: its data is not what was
#: hashed, or (a variable event hashed over its data only) its name and GUID are not
_UNBOUND_FINDINGS = frozenset({"digest_mismatch", "variable_name_not_measured"})


def _unbound_events(log: UnverifiedEventLog, rep: Replay) -> Unbound:
    """Every event whose data does not hash to its digest where it must, in any PCR and
    any bank the log declares (the replay checks them all, see :func:`_parsed_log`), and
    every extending event with no digest of the reported bank (the quote never saw it).

    A pure function of the log: each request keeps the ones in its quoted PCRs.
    """
    pcr_of = {e.index: e.pcr for e in log.events}
    out = [(f.event, pcr_of[f.event], f.message) for f in rep.findings
           if f.code in _UNBOUND_FINDINGS and f.event is not None and f.event in pcr_of]
    # A record without a digest of the quoted bank is never extended into it (the replay
    # skips it), so the quote vouches for nothing in its data, which the facts still read.
    bank = alg_name(REPORTED_BANK)
    out += [(ex.event_index, ex.pcr, f"the record has no {bank} digest, so the quoted {bank} "
                                     "bank never measured it")
            for ex in rep.extends if REPORTED_BANK not in ex.digests]
    out += [(event, pcr_of[event], message)
            for event, message in _unbound_sipa_events(log, set(SIPA_PCRS))]
    return tuple(out)


def _parsed_log(digest: bytes, raw: bytes, caches: VerifierCaches | None) -> ParsedLog:
    """``parse_log``, the reported bank's ``replay`` of ``raw`` (whose SHA-256 is
    ``digest``) and its unbound events (:func:`_unbound_events`); kept in ``caches``
    (a log that does not frame is never kept: its error is recomputed)."""
    if caches is None:
        return _parse_and_replay(raw)
    return caches.logs.get_or_compute(digest, lambda: _parse_and_replay(raw))


def _parse_and_replay(raw: bytes) -> ParsedLog:
    log = parse_log(raw)
    # only the reported bank is compared with the quote, so only it is replayed; but the
    # digests of data-bound events are checked in every bank the log declares (and
    # Python can hash), so no bank carries a digest that disagrees with its event's data
    rep = replay(log, banks=(REPORTED_BANK,), data_banks=tuple(a.alg_id for a in log.algorithms))
    # may be shared between requests (a verifier's cache): hand out read-only views only
    rep = dataclasses.replace(
        rep,
        pcrs=MappingProxyType({a: MappingProxyType(dict(v)) for a, v in rep.pcrs.items()}),
        initial=MappingProxyType({a: MappingProxyType(dict(v)) for a, v in rep.initial.items()}),
    )
    return (log, rep, _unbound_events(log, rep))


class _Run:
    """State of one verification (kept private: only the result is public)."""

    def __init__(self, request: AzureGuestRequest | UnverifiedAzureGuestRequest,
                 expected_nonce: bytes, caches: VerifierCaches | None) -> None:
        self.request = request
        self.caches = caches
        self.ti = request.tpm_info
        self.nonce = expected_nonce
        self.checks: dict[Check, EvidenceCheck] = {}
        self.aik: TpmPublic | None = None
        self.aik_usable = False  # parsed, and a restricted signing key
        self.quote: TpmsAttest | None = None
        self.reported: dict[int, bytes] = dict(self.ti.pcrs)
        self.log_digest = hashlib.sha256(request.tcg_logs).digest()

    def passed(self, *names: Check) -> bool:
        return all(self.checks[n].passed for n in names)

    # --- AIK and quote ------------------------------------------------------

    def quote_signature(self) -> None:
        name = Check.QUOTE_SIGNATURE
        try:
            self.aik = parse_public_or_read_public(
                self.ti.aik_pub, self.caches.aik_publics if self.caches is not None else None)
        except TpmStructureError as exc:
            self.checks[name] = _fail(name, "aik_pub_malformed", f"AikPub cannot be read: {exc}")
            return
        missing = AIK_REQUIRED & ~self.aik.object_attributes
        if missing:
            self.checks[name] = _fail(
                name, "aik_not_restricted_signing",
                f"AikPub is not a restricted signing key of the TPM (lacks {_attrs(missing)}); "
                "its signature would not prove the TPM produced the quote")
            return
        self.aik_usable = True
        try:
            sig = signature_from_raw(self.ti.pcr_signature, self.aik)
            verify_signature(self.aik, self.ti.pcr_quote, sig)
        except SignatureError as exc:
            self.checks[name] = _fail(name, exc.reason_code,
                                      f"PcrSignature over PcrQuote: {exc}")
            return
        self.checks[name] = _ok(
            name, f"PcrQuote is signed by AikPub ({alg_name(sig.sig_alg)}/"
            f"{alg_name(sig.hash_alg)})")

    def quote_structure(self) -> None:
        name = Check.QUOTE_STRUCTURE
        try:
            q = parse_tpms_attest(self.ti.pcr_quote)
        except TpmStructureError as exc:
            self.checks[name] = _fail(name, "quote_malformed", f"PcrQuote: {exc}")
            return
        if q.magic != TPM_GENERATED_VALUE:
            self.checks[name] = _fail(name, "quote_bad_magic",
                                      f"PcrQuote magic is 0x{q.magic:08x}, not TPM_GENERATED_VALUE "
                                      f"0x{TPM_GENERATED_VALUE:08x}: not produced by a TPM")
            return
        if q.type != TpmSt.ATTEST_QUOTE:
            self.checks[name] = _fail(name, "quote_wrong_type",
                                      f"PcrQuote is attestation type 0x{q.type:04x}, not a quote "
                                      "(TPM_ST_ATTEST_QUOTE 0x8018)")
            return
        self.quote = q
        self.checks[name] = _ok(name, "PcrQuote is a TPM-generated TPMS_ATTEST of type quote")

    def quote_nonce(self) -> None:
        name = Check.QUOTE_NONCE
        if self.quote is None:
            self.checks[name] = _skipped(name, "the quote cannot be used")
            return
        if not hmac.compare_digest(self.quote.extra_data, self.nonce):
            self.checks[name] = _fail(
                name, "nonce_mismatch",
                f"quote qualifying data is {self.quote.extra_data.hex() or '(empty)'}, expected "
                f"{self.nonce.hex() or '(empty)'}: the quote is not fresh for this request")
            return
        self.checks[name] = _ok(name, "quote qualifying data equals the expected nonce"
                                + (" (empty)" if not self.nonce else ""))

    def pcr_digest(self) -> None:
        name = Check.PCR_DIGEST
        q = self.quote.quote if self.quote is not None else None
        if q is None:
            self.checks[name] = _skipped(name, "the quote cannot be used")
            return
        reported_set = tuple(sorted(self.reported))
        if tuple(sorted(self.ti.pcr_set)) != reported_set:
            self.checks[name] = _fail(
                name, "pcr_set_mismatch",
                f"PcrSet {list(self.ti.pcr_set)} differs from the PCRs reported in PCRs "
                f"{list(reported_set)}")
            return
        sels = q.pcr_selections
        banks = [s for s in sels if s.pcrs]
        if len(banks) != 1 or banks[0].hash_alg != REPORTED_BANK or banks[0].pcrs != reported_set:
            quoted = "; ".join(f"{alg_name(s.hash_alg)} {list(s.pcrs)}" for s in banks)
            self.checks[name] = _fail(
                name, "pcr_selection_mismatch",
                f"the quote selects {quoted or 'nothing'}, the request reports "
                f"{alg_name(REPORTED_BANK)} {list(reported_set)}")
            return
        hash_alg = TpmAlg.SHA256
        if self.aik is not None and self.aik.parameters.scheme.hash_alg is not None:
            hash_alg = TpmAlg(self.aik.parameters.scheme.hash_alg)
        try:
            want = quote_pcr_digest(hash_alg, sels, {REPORTED_BANK: self.reported})
        except TpmValueError as exc:
            self.checks[name] = _fail(name, "pcr_value_malformed", f"reported PCRs: {exc}")
            return
        if not hmac.compare_digest(want, q.pcr_digest):
            self.checks[name] = _fail(
                name, "pcr_digest_mismatch",
                f"the digest of the reported PCR values ({want.hex()}) is not the quoted "
                f"pcrDigest ({q.pcr_digest.hex()}): the reported PCRs are not the quoted ones")
            return
        self.checks[name] = _ok(name, f"reported PCRs {list(reported_set)} hash to the quoted "
                                "pcrDigest")

    # --- event log ------------------------------------------------------------

    def log_replay(self) -> tuple[UnverifiedEventLog | None, Replay | None,
                                  PcrVerification | None]:
        name = Check.LOG_REPLAY
        try:
            log, rep, all_unbound = _parsed_log(self.log_digest, self.request.tcg_logs,
                                                self.caches)
        except EventLogError as exc:
            self.checks[name] = _fail(name, "log_malformed", f"TcgLogs cannot be read: {exc}")
            return None, None, None
        ver = verify_pcrs(log, {REPORTED_BANK: self.reported}, replayed=rep)
        bad = ver.mismatched
        if bad:
            desc = "; ".join(
                f"PCR {r.pcr}: {r.reason or 'replay differs'}"
                + (f" (first suspect event {r.suspect_event})" if r.suspect_event is not None
                   else "")
                for r in bad)
            self.checks[name] = _fail(name, "log_pcr_mismatch",
                                      f"the log replays to other values than reported: {desc}")
            return log, rep, ver
        # never extended is explained only at the reset value: zero, but all 0xFF for
        # PCRs 17-22 (and 00..0<locality> for PCR 0), as the replay starts them
        uncovered = [r for r in ver.results if r.status is PcrStatus.NOT_COVERED
                     and not hmac.compare_digest(r.expected, initial_pcr_value(
                         r.pcr, len(r.expected), locality=rep.startup_locality,
                         hcrtm=rep.hcrtm, ccel=log.format is LogFormat.CCEL))]
        if uncovered:
            self.checks[name] = _fail(
                name, "log_pcr_not_covered",
                "the log does not explain PCR "
                + ", ".join(str(r.pcr) for r in uncovered)
                + " (never extended in the log, yet not at its reset value)")
            return log, rep, ver
        # The PCR values only vouch for the digests.  The facts (Secure Boot variables,
        # db/dbx, SIPA flags) are read from the event *data*, so every event in a quoted
        # PCR whose data must hash to its digest has to do so in the quoted bank, or a VM
        # could rewrite e.g. its SecureBoot variable and keep the digests.
        quoted = self.reported
        unbound = [u for u in all_unbound if u[1] in quoted]
        if unbound:
            event, pcr, message = unbound[0]
            self.checks[name] = _fail(
                name, "log_data_digest_mismatch",
                f"event {event} in PCR {pcr}: {message}; the event data is not what "
                "was measured, so it cannot be trusted"
                + (f" ({len(unbound) - 1} more such events)" if len(unbound) > 1 else ""))
            return log, rep, ver
        extra = (f" (named workarounds: {', '.join(ver.workarounds_applied)})"
                 if ver.workarounds_applied else "")
        self.checks[name] = _ok(name, f"the {alg_name(REPORTED_BANK)} replay of the log "
                                f"({len(log.events)} events) equals every reported PCR{extra}")
        return log, rep, ver

    # --- ephemeral key --------------------------------------------------------

    def enc_key(self) -> TpmPublic | None:
        cert_name, attr_name, pol_name = (Check.ENC_KEY_CERTIFIED, Check.ENC_KEY_ATTRIBUTES,
                                          Check.ENC_KEY_PCR_POLICY)
        try:
            key = parse_tpm2b_public(self.ti.enc_key_pub)
        except TpmStructureError as exc:
            for n in (cert_name, attr_name, pol_name):
                self.checks[n] = _fail(n, "enc_key_malformed", f"EncKeyPub cannot be read: {exc}")
            return None
        self.checks[cert_name] = self._certified(key)
        self.checks[attr_name] = self._attributes(key)
        self.checks[pol_name] = self._policy(key)
        return key

    def _certified(self, key: TpmPublic) -> EvidenceCheck:
        name = Check.ENC_KEY_CERTIFIED
        try:
            c = parse_tpms_attest(self.ti.enc_key_certify_info)
        except TpmStructureError as exc:
            return _fail(name, "certify_malformed", f"EncKeyCertifyInfo: {exc}")
        if c.magic != TPM_GENERATED_VALUE:
            return _fail(name, "certify_bad_magic",
                         f"EncKeyCertifyInfo magic is 0x{c.magic:08x}, not TPM_GENERATED_VALUE")
        if c.certify is None:
            return _fail(name, "certify_wrong_type",
                         f"EncKeyCertifyInfo is attestation type 0x{c.type:04x}, not a certify "
                         "(TPM_ST_ATTEST_CERTIFY 0x8017)")
        if self.aik is None or not self.aik_usable:
            return _skipped(name, "AikPub is not a usable restricted signing key")
        try:
            sig = signature_from_raw(self.ti.enc_key_certify_info_signature, self.aik)
            verify_signature(self.aik, self.ti.enc_key_certify_info, sig)
        except SignatureError as exc:
            code = "certify_" + exc.reason_code
            return _fail(name, code, f"EncKeyCertifyInfoSignature: {exc}")
        if not hmac.compare_digest(c.certify.name, key.name):
            return _fail(name, "certify_name_mismatch",
                         f"the AIK certified the object {c.certify.name.hex()}, not EncKeyPub "
                         f"({key.name.hex()})")
        return _ok(name, "the AIK certified EncKeyPub (certified name equals its name)")

    def _attributes(self, key: TpmPublic) -> EvidenceCheck:
        name = Check.ENC_KEY_ATTRIBUTES
        if not isinstance(key.parameters, RsaParms):
            return _fail(name, "enc_key_not_rsa",
                         f"EncKeyPub is {alg_name(key.type)}, the sealed response needs RSA")
        attrs = int(key.object_attributes)
        if attrs & ObjectAttributes.SIGN_ENCRYPT:
            return _fail(name, "enc_key_sign_allowed",
                         "EncKeyPub may sign (sign attribute set); it must be decrypt-only")
        forbidden = attrs & ENC_KEY_FORBIDDEN
        if forbidden:
            return _fail(name, "enc_key_attribute_forbidden",
                         f"EncKeyPub has {_attrs(forbidden)}: userWithAuth would allow use "
                         "without the PCR policy, restricted forbids RSA_Decrypt")
        missing = ENC_KEY_REQUIRED & ~attrs
        if missing:
            return _fail(name, "enc_key_attribute_missing",
                         f"EncKeyPub lacks {_attrs(int(missing))}")
        return _ok(name, f"EncKeyPub attributes: {_attrs(attrs)}")

    def _policy(self, key: TpmPublic) -> EvidenceCheck:
        name = Check.ENC_KEY_PCR_POLICY
        if not key.auth_policy:
            return _fail(name, "enc_key_no_policy",
                         "EncKeyPub has no authPolicy: it is not bound to the attested PCRs")
        q = self.quote.quote if self.quote is not None else None
        if q is None or not self.checks[Check.PCR_DIGEST].passed:
            return _skipped(name, "the quoted PCR values are not verified")
        try:
            want = policy_pcr_digest(q.pcr_selections, {REPORTED_BANK: self.reported},
                                     policy_hash_alg=key.name_alg)
        except TpmValueError as exc:
            return _fail(name, "enc_key_policy_mismatch", f"cannot compute PolicyPCR: {exc}")
        if not hmac.compare_digest(want, key.auth_policy):
            return _fail(name, "enc_key_policy_mismatch",
                         f"EncKeyPub authPolicy {key.auth_policy.hex()} is not PolicyPCR over the "
                         f"attested PCRs ({want.hex()})")
        return _ok(name, "EncKeyPub authPolicy is PolicyPCR over the attested PCR values")

    # --- AIK certificate --------------------------------------------------------

    def aik_certificate(self, anchors: TrustAnchors | None, at: datetime,
                        revoked: RevokedAikCertificates | None = None,
                        ) -> VerifiedAikChain | None:
        name = Check.AIK_CERTIFICATE
        if self.aik is None:
            self.checks[name] = _skipped(name, "AikPub cannot be read")
            return None
        try:
            chain = verify_aik_certificate(self.ti.aik_cert, self.aik,
                                           anchors or TrustAnchors(()), at=at,
                                           revoked=revoked,
                                           cache=self.caches.aik if self.caches else None)
        except AikCertificateError as exc:
            self.checks[name] = _fail(name, exc.reason_code, str(exc))
            return None
        self.checks[name] = _ok(name, "AIK certificate chains to a trust anchor: "
                                + " <- ".join(chain.subjects))
        return chain


def verify_evidence(
    request: AzureGuestRequest | UnverifiedAzureGuestRequest,
    *,
    trust_anchors: TrustAnchors | None,
    at: datetime,
    expected_nonce: bytes = b"",
    revoked_aik: RevokedAikCertificates | None = None,
    caches: VerifierCaches | None = None,
) -> EvidenceVerification:
    """Run every evidence check on an AzureGuest request (see the module docstring).

    ``at`` is the time the AIK certificate must be valid at (passed in: this
    layer reads no clock); ``expected_nonce`` the quote's qualifying data
    (empty for AzureGuest, which has no challenge round); ``revoked_aik`` the AIK
    certificates the provider revoked (``aik_cert_revoked``); ``caches`` what the
    caller's verifier may reuse (:mod:`bootwatch.attest.caches`; None: nothing).
    """
    run = _Run(request, expected_nonce, caches)
    run.quote_signature()
    run.quote_structure()
    run.quote_nonce()
    run.pcr_digest()
    log, rep, ver = run.log_replay()
    key = run.enc_key()
    chain = run.aik_certificate(trust_anchors, at, revoked_aik)

    quote_ok = run.passed(Check.QUOTE_SIGNATURE, Check.QUOTE_STRUCTURE, Check.QUOTE_NONCE,
                          Check.PCR_DIGEST)
    log_ok = quote_ok and run.passed(Check.LOG_REPLAY)
    key_ok = run.passed(Check.QUOTE_SIGNATURE, Check.PCR_DIGEST, Check.ENC_KEY_CERTIFIED,
                        Check.ENC_KEY_ATTRIBUTES, Check.ENC_KEY_PCR_POLICY)
    q = run.quote
    replayed = None
    if rep is not None:
        bank = rep.pcrs.get(REPORTED_BANK, {})
        replayed = {p: bank[p] for p in sorted(run.reported) if p in bank}
    return EvidenceVerification(
        checks=tuple(run.checks[c] for c in Check),
        unverified_reported_pcrs=dict(sorted(run.reported.items())),
        unverified_replayed_pcrs=replayed,
        pcr_verification=ver,
        verified_pcrs=dict(sorted(run.reported.items())) if quote_ok else None,
        verified_pcr_selection=q.quote.pcr_selections if quote_ok and q and q.quote else None,
        verified_clock=q.clock_info if quote_ok and q else None,
        verified_firmware_version=q.firmware_version if quote_ok and q else None,
        verified_event_log=log if log_ok else None,
        verified_replay=rep if log_ok else None,
        verified_aik_pub=run.aik if run.passed(Check.QUOTE_SIGNATURE) else None,
        verified_enc_key=key if key_ok else None,
        verified_aik_chain=chain,
        workarounds=tuple(ver.workarounds_applied) if ver is not None else (),
        event_log_sha256=run.log_digest,
    )


#: PCRs whose EV_EVENT_TAG events carry Windows SIPA records (boot flags the claims read).
SIPA_PCRS = frozenset({12, 13, 14})


def _unbound_sipa_events(log: UnverifiedEventLog, quoted: set[int]) -> list[tuple[int, str]]:
    """EV_EVENT_TAG events in quoted SIPA PCRs whose data is not what was measured.

    Windows measures the SIPA record itself (the digest is the hash of the event data;
    every tag event of the real Azure Trusted Launch log checks).  The replay does not
    require this of every EV_EVENT_TAG, because systemd-boot's tag events (e.g. "Linux
    initrd" in PCR 9 of the Fedora 37 corpus log) measure the initrd, not the data.
    """
    out: list[tuple[int, str]] = []
    for event in log.events:
        if (event.event_type != int(EventType.EV_EVENT_TAG) or event.pcr not in SIPA_PCRS
                or event.pcr not in quoted):
            continue
        digest = event.digests.get(REPORTED_BANK)
        if digest is None or not hmac.compare_digest(
                hashlib.sha256(event.data).digest(), digest):
            out.append((event.index, "EV_EVENT_TAG: the sha256 digest is not the hash of the "
                                     "SIPA record data"))
    return out
