"""The attestation outcome event (service -> monitor), versioned.

The monitor never imports the verifier: everything it needs from one
attestation crosses this boundary as an :class:`OutcomeEvent`.  The event is
built by the service after the verdict (see ``bootwatch.attest.outcome``) and
handed to an event sink (in-process or HTTP); the monitor decodes it with
:func:`decode_outcome` and nothing else.

What a field may be trusted for is in its name: ``vm_id``, ``pcrs`` and
``events`` come only from evidence that verified (quote signature, PCR digest
and log replay), while ``claimed_vm_id`` is what a request that did *not*
verify said about itself: enough to attribute an ``evidence_rejected`` alert
to a VM, never enough to make it healthy.

Versioning: ``schema`` is 1.  A decoder refuses a higher major version rather
than guess; new optional fields may be added within a version (unknown keys
are ignored, so an older monitor keeps working behind a newer service).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from bootwatch.errors import ProtocolError
from bootwatch.protocol.jsonread import storable_text, text_problem
from bootwatch.protocol.verdict import Verdict

__all__ = [
    "MAX_OUTCOME_BYTES",
    "MAX_OUTCOME_EVENTS",
    "MAX_OUTCOME_TEXT",
    "SCHEMA_VERSION",
    "BootEvent",
    "BootEventTable",
    "OutcomeEvent",
    "RevokedItem",
    "Verdict",
    "decode_outcome",
    "encode_outcome",
    "outcome_to_json",
]

SCHEMA_VERSION: Final = 1
#: largest encoded event accepted (a 200-event boot is ~60 KB)
MAX_OUTCOME_BYTES: Final = 2 * 1024 * 1024
#: most events an outcome carries (the pipeline refuses a boot measuring more into its
#: quoted PCRs: bootwatch.attest.pipeline)
MAX_OUTCOME_EVENTS: Final = 4096
_MAX_EVENTS: Final = MAX_OUTCOME_EVENTS
#: longest text field (reason, deciding rule, component); encode_outcome clips longer
MAX_OUTCOME_TEXT: Final = 4000
_MAX_TEXT: Final = MAX_OUTCOME_TEXT
#: longest issuer URL carried (the monitor's column holds this many characters)
_MAX_ISSUER: Final = 512
#: counters the monitor keeps in 32-bit integer columns (DBX counts): a larger value is
#: refused here, not by the database
_MAX_STORED_INT: Final = 2**31 - 1
#: a TPM's resetCount and restartCount are UINT32 (and, quoted by a key outside the
#: endorsement and platform hierarchies, offset by a per-key constant: any UINT32 value)
_MAX_UINT32: Final = 2**32 - 1
#: TPMS_CLOCK_INFO.clock is a UINT64 of milliseconds (the monitor stores it offset)
_MAX_CLOCK: Final = 2**64 - 1
#: a TPM name: nameAlg (2 bytes) and its digest, up to SHA-512 (66 bytes, 132 hex digits)
_AIK_RE: Final = re.compile(r"^(?:[0-9a-f]{2}){0,66}\Z")
_HEX_RE: Final = re.compile(r"^[0-9a-f]{0,128}\Z")
_ID_RE: Final = re.compile(r"^[A-Za-z0-9._:@-]{1,128}\Z")


@dataclass(frozen=True)
class BootEvent:
    """One event of a quoted PCR, from a log whose replay matched the quote.

    ``digest`` is the lowercase hex digest in the quoted bank (``pcr_bank``
    of the outcome); ``component`` is a decoded one-line description (file or
    device path of a boot application, variable name, GRUB command, kernel
    command line, SIPA flags).
    """

    index: int
    pcr: int
    type: str
    digest: str
    component: str


@dataclass(frozen=True)
class RevokedItem:
    """A boot component of this boot that the current DBX data revokes."""

    event: int
    component: str
    digest: str
    reason: str


@dataclass(frozen=True)
class OutcomeEvent:
    """One answered attestation (see the module docstring for trust)."""

    event_id: str
    time: datetime
    provider: str
    attestation_type: str
    verdict: Verdict
    reason: str
    policy_hash: str
    failed_check: str | None = None
    deciding_rule: str | None = None
    vm_id: str | None = None
    claimed_vm_id: str | None = None
    pcr_bank: str = "sha256"
    pcrs: Mapping[int, str] = field(default_factory=dict)
    events: tuple[BootEvent, ...] = ()
    reset_count: int | None = None
    restart_count: int | None = None
    secure_boot: bool | None = None
    #: the incoming claims the policy saw (for policy dry runs), as JSON values
    claims: tuple[tuple[str, Any], ...] = ()
    revoked: tuple[RevokedItem, ...] = ()
    #: current DBX revocations (image hashes) missing from the measured dbx, of how many
    dbx_missing: int | None = None
    dbx_current: int | None = None
    #: notAfter of the AIK certificate that verified (for the renewal recommendation)
    aik_not_after: datetime | None = None
    #: the issuer of the provider's tokens as this attestation reached it (its ``iss``):
    #: the monitor accepts a report's token for a VM only from its provider's issuer
    issuer: str = ""
    #: the quote's TPMS_CLOCK_INFO.clock (milliseconds the TPM has run), verified with the
    #: quote: with ``reset_count`` it orders a TPM's quotes (the monitor's quote freshness)
    tpm_clock: int | None = None
    #: the TPM name (nameAlg || digest, hex) of the AIK that signed the verified quote
    aik: str = ""
    #: the ``jti`` of the token a permit issued (sealed to the quoted boot's ephemeral
    #: key): a verified report carrying that token proves the VM could open it, so its
    #: PCRs were still the quoted ones (the monitor's token proof)
    token_id: str = ""
    schema: int = SCHEMA_VERSION

    @property
    def subject_vm_id(self) -> str | None:
        """The VM this outcome is about: the verified id, else the claimed one."""
        return self.vm_id or self.claimed_vm_id


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome_to_json(event: OutcomeEvent) -> dict[str, Any]:
    """The event as a JSON object (the wire form, before serialisation)."""
    return {
        "schema": event.schema,
        "event_id": event.event_id,
        "time": _time(event.time),
        "provider": event.provider,
        "attestation_type": event.attestation_type,
        "verdict": event.verdict.value,
        "reason": event.reason,
        "policy_hash": event.policy_hash,
        "failed_check": event.failed_check,
        "deciding_rule": event.deciding_rule,
        "vm_id": event.vm_id,
        "claimed_vm_id": event.claimed_vm_id,
        "pcr_bank": event.pcr_bank,
        "pcrs": {str(k): v for k, v in sorted(event.pcrs.items())},
        "events": [
            {"index": e.index, "pcr": e.pcr, "type": e.type, "digest": e.digest,
             "component": e.component}
            for e in event.events
        ],
        "reset_count": event.reset_count,
        "restart_count": event.restart_count,
        "secure_boot": event.secure_boot,
        "claims": [[k, v] for k, v in event.claims],
        "revoked": [
            {"event": r.event, "component": r.component, "digest": r.digest, "reason": r.reason}
            for r in event.revoked
        ],
        "dbx_missing": event.dbx_missing,
        "dbx_current": event.dbx_current,
        "aik_not_after": _time(event.aik_not_after) if event.aik_not_after else None,
        "issuer": event.issuer,
        "tpm_clock": event.tpm_clock,
        "aik": event.aik,
        "token_id": event.token_id or None,
    }


def _clip_text(text: str | None) -> str | None:
    if text is None:
        return None
    text = storable_text(text)
    if len(text) <= MAX_OUTCOME_TEXT:
        return text
    return text[: MAX_OUTCOME_TEXT - 1] + "…"


def encode_outcome(event: OutcomeEvent) -> bytes:
    """Compact JSON bytes of the event, always within what :func:`decode_outcome` takes.

    Why: the service encodes, a separate monitor decodes, and an outcome it refuses is
    dropped (poison), so a VM's changed boot would go unseen.  A reason or deciding rule
    is made storable (NUL and lone surrogates become U+FFFD) and clipped past
    MAX_OUTCOME_TEXT (marked with "…"); event descriptions are made storable where they
    are built, once per log (bootwatch.attest.outcome.describe_events); an event with more than
    MAX_OUTCOME_EVENTS events (the pipeline refuses such boots first) or larger than
    MAX_OUTCOME_BYTES encoded goes without its events and claims, and its reason says so:
    the monitor still sees the verdict and the quoted PCR values, so a changed boot still
    deviates from its baseline."""
    reason, rule = _clip_text(event.reason) or "", _clip_text(event.deciding_rule)
    if reason != event.reason or rule != event.deciding_rule:
        event = replace(event, reason=reason, deciding_rule=rule)
    body = json.dumps(outcome_to_json(event), separators=(",", ":")).encode()
    if len(event.events) > MAX_OUTCOME_EVENTS or len(body) > MAX_OUTCOME_BYTES:
        note = (f"events and claims left out: {len(event.events)} events, {len(body)} bytes "
                f"encoded, over the limits of {MAX_OUTCOME_EVENTS} events and "
                f"{MAX_OUTCOME_BYTES} bytes")
        # revoked components stay (each raises revoked_boot_component), as many as fit
        lean = replace(event, events=(), claims=(), revoked=event.revoked[:MAX_OUTCOME_EVENTS],
                       reason=_clip_text(f"{event.reason}; {note}" if event.reason else note)
                       or "")
        body = json.dumps(outcome_to_json(lean), separators=(",", ":")).encode()
    return body


# --- decoding: strict, every error names the field ------------------------------


def _fail(where: str, what: str) -> ProtocolError:
    return ProtocolError(f"outcome event: field '{where}' {what}")


def _str(obj: Mapping[str, Any], key: str, where: str = "", *, optional: bool = False,
         limit: int = _MAX_TEXT) -> str | None:
    name = where or key
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise _fail(name, "is required")
    if not isinstance(value, str):
        raise _fail(name, "must be a string")
    if len(value) > limit:
        raise _fail(name, f"is longer than {limit} characters")
    problem = text_problem(value)
    if problem is not None:
        raise _fail(name, problem)
    return value


def _int(obj: Mapping[str, Any], key: str, where: str = "", *, optional: bool = False,
         lo: int = 0, hi: int = 2**63 - 1) -> int | None:
    name = where or key
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise _fail(name, "is required")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(name, f"must be an integer in {lo}..{hi}")
    return value


def _when(obj: Mapping[str, Any], key: str, *, optional: bool = False) -> datetime | None:
    text = _str(obj, key, optional=optional, limit=40)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(key, "is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise _fail(key, "must carry a time zone")
    return value


def _hex(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise _fail(where, "must be lowercase hex of at most 64 bytes")
    return value


def _aik(value: Any) -> str:
    if not isinstance(value, str) or not _AIK_RE.fullmatch(value):
        raise _fail("aik", "must be a TPM name in lowercase hex (at most 66 bytes)")
    return value


def _ident(obj: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = _str(obj, key, optional=optional, limit=128)
    if value is not None and not _ID_RE.fullmatch(value):
        raise _fail(key, "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return value


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"outcome event: {name} is not valid JSON")


def decode_outcome(body: bytes, *, shared: BootEventTable | None = None) -> OutcomeEvent:
    """Decode and check an encoded event; :class:`ProtocolError` names the bad field.
    ``shared``: a decoder's table of boot events checked before (:class:`BootEventTable`):
    events equal to one in it are shared rather than checked and built again."""
    if len(body) > MAX_OUTCOME_BYTES:
        raise ProtocolError(f"outcome event: larger than {MAX_OUTCOME_BYTES} bytes")
    # strict UTF-8 first: json.loads would take UTF-16 or UTF-32 bytes too (and let
    # encoded surrogates through), which the byte-level text check cannot see into
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"outcome event: not UTF-8 text at byte {exc.start} ({exc.reason}); "
                            "another encoding or an encoded surrogate is refused") from None
    span = _events_span(text) if shared is not None else None
    if shared is not None and span is not None:
        known = _decode_known(text, span, shared)
        if known is not None:
            return known
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"outcome event: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("outcome event: must be a JSON object")
    event = outcome_from_json(obj, plain_text=_plain_text(body), shared=shared)
    if shared is not None and span is not None:
        _remember_events(text, span, shared)
    return event


#: how an encoded event's top-level ``events`` member starts (``encode_outcome``'s form)
_EVENTS_MEMBER: Final = '"events":['
#: stands in for a remembered events array while the rest of a body is parsed: a number
#: spelled so (``float`` would read it as -0.0) is recognised by the parser's hook
_STAND_IN: Final = "-0e-0"
#: :data:`_UNSAFE_ESCAPE_RE` for text rather than bytes
_UNSAFE_ESCAPE_TEXT_RE: Final = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")
#: an events array shorter than this is decoded, not remembered (no time to save)
_MIN_REMEMBERED: Final = 1024


def _events_span(text: str) -> tuple[int, int] | None:
    """Where the text of the ``events`` array may be, as the service writes it: from the
    ``[`` of the first ``"events":[`` to the first ``}]`` after it.

    Nothing is assumed from this: the span is a key into remembered arrays (each a
    complete JSON array, decoded in full when remembered; a JSON value ends where its own
    text ends, so a body holding one at this position holds that array there), and
    :func:`_decode_known` checks by parsing that the position is the top-level member."""
    at = text.find(_EVENTS_MEMBER)
    if at < 0:
        return None
    start = at + len(_EVENTS_MEMBER) - 1
    close = text.find("}]", start)
    return None if close < 0 else (start, close + 2)


class _StandIn:
    """Parses the rest of a body, counting the stand-ins it meets."""

    __slots__ = ("seen",)
    MARK: Final = object()

    def __init__(self) -> None:
        self.seen = 0

    def number(self, spelled: str) -> Any:
        if spelled == _STAND_IN:
            self.seen += 1
            return _StandIn.MARK
        return float(spelled)


def _decode_known(text: str, span: tuple[int, int],
                  table: BootEventTable) -> OutcomeEvent | None:
    """The event, when its events array is one ``table`` remembered; else None (and the
    general route decodes it, naming what is wrong if anything is).

    Why: a JetStream ingester's messages are mostly VMs of a few images sending the same
    events array (10 of an event's 11 KB); parsing it and looking its events up again
    was two thirds of decoding a message.  The rest of the body is parsed with a
    stand-in where the array was: only when the stand-in is met once, as the whole of
    the top-level ``events`` member (the last of that name, as JSON reads a repeated
    one), is the remembered decoding used; every other field is checked as always."""
    start, end = span
    events = table._arrays.get(text[start:end])
    if events is None:
        return None
    rest = text[:start] + "[" + _STAND_IN + "]" + text[end:]
    stand_in = _StandIn()
    try:
        obj = json.loads(rest, parse_constant=_reject_constant, parse_float=stand_in.number)
        if not (isinstance(obj, dict) and stand_in.seen == 1
                and (member := obj.get("events")) is not None and type(member) is list
                and len(member) == 1 and member[0] is _StandIn.MARK):
            return None
        return outcome_from_json(obj, known_events=events)
    except (ValueError, RecursionError, ProtocolError):
        return None


def _remember_events(text: str, span: tuple[int, int], table: BootEventTable) -> None:
    """Remember the events array at ``span`` with its decoding, when it is one: parsed
    and checked on its own, as :func:`outcome_from_json` checks an events member."""
    start, end = span
    raw = text[start:end]
    if len(raw) < _MIN_REMEMBERED or raw in table._arrays:
        return
    try:
        items = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError, ProtocolError):
        return  # the span ended inside the array (a "}]" in a string): not remembered
    if not isinstance(items, list) or not items or len(items) > _MAX_EVENTS:
        return
    events = _events_lean(items, _UNSAFE_ESCAPE_TEXT_RE.search(raw) is None, table)
    if events is None:
        return
    if table._array_chars + len(raw) > table.array_chars:
        table._arrays.clear()
        table._array_chars = 0
    table._arrays[raw] = events
    table._array_chars += len(raw)


def _plain_text(body: bytes) -> bool:
    """True when no string in the JSON ``body`` (UTF-8: :func:`decode_outcome` refuses
    anything else, encoded surrogates included) can hold NUL or a UTF-16 surrogate: no
    ``\\u`` escape decodes to one (``\\u0000``, ``\\uD800``-``\\uDFFF``).  Then the
    per-string text check of each event can be skipped.

    Why escapes are looked at rather than refused outright: the service shortens long
    component descriptions with an ellipsis, which its ASCII JSON writes as ``\\u2026``,
    so most real events hold some escape.  A raw NUL cannot occur (JSON strings refuse
    control characters), and an escaped backslash followed by ``u0000`` only makes the
    check say no when it need not (then every string is checked: still correct)."""
    return _UNSAFE_ESCAPE_RE.search(body) is None


#: a JSON escape that decodes to NUL or to a UTF-16 surrogate (any case of hex digits)
_UNSAFE_ESCAPE_RE: Final = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")
_MAX_INDEX: Final = 10**7


class BootEventTable:
    """Boot events already checked, by their exact field values, for a decoder to share.

    Why: every VM booting the same image sends the same 50-200 events in every outcome,
    and checking and building each one again was most of decoding a message (88 of about
    120 us for a 46-event COS boot; 30 us with the events shared).  An event is looked
    up only after its fields' types are checked (so ``1.0`` or ``true`` never matches a
    stored ``1``); one found was checked in full when it was stored, and its strings
    hold no NUL or surrogate (checked, or proven absent for its whole message), so an
    equal one needs no check.  The events are frozen, so sharing them is safe.

    It also remembers whole events arrays by their exact text (as :func:`decode_outcome`
    found them), so that a message carrying one again is decoded without parsing it
    (:func:`_decode_known`).

    Bounded: emptied when it holds :attr:`limit` events; the arrays are emptied when
    their text would exceed :attr:`array_chars` characters.  Owned by its caller (a
    JetStream ingester keeps one); not for concurrent use by several threads."""

    __slots__ = ("_array_chars", "_arrays", "_events", "array_chars", "limit")

    def __init__(self, limit: int = 16_384, array_chars: int = 4_000_000) -> None:
        self.limit = limit
        self.array_chars = array_chars
        self._events: dict[tuple[int, int, str, str, str], BootEvent] = {}
        self._arrays: dict[str, tuple[BootEvent, ...]] = {}
        self._array_chars = 0

    def __len__(self) -> int:
        return len(self._events)


def _events_lean(items: list[Any], plain_text: bool,
                 table: BootEventTable | None) -> tuple[BootEvent, ...] | None:
    """The events when every one of them passes every check of the general loop in
    :func:`outcome_from_json`, else None (that loop then names the first bad field).

    Why: an event is five fields checked by five calls, and a boot has 50-200 events:
    the general loop was three quarters of decoding an outcome (about 200 of 277 us for
    a 46-event, 11 KB event).  The same checks, inlined; the text check of the strings
    is done once for the whole body (``plain_text``) when it can be; events seen before
    come from ``table`` (:class:`BootEventTable`) when one is given."""
    out = []
    hexre = _HEX_RE.fullmatch
    new = object.__new__
    known = table._events if table is not None else {}
    for item in items:
        if type(item) is not dict:
            return None
        index, pcr = item.get("index"), item.get("pcr")
        typ, digest, comp = item.get("type"), item.get("digest"), item.get("component")
        if not (type(index) is int and type(pcr) is int and type(typ) is str
                and type(digest) is str and type(comp) is str):
            return None
        key = (index, pcr, typ, digest, comp)
        ev = known.get(key)
        if ev is None:
            if not (0 <= index <= _MAX_INDEX and 0 <= pcr <= 31 and len(typ) <= 64
                    and hexre(digest) is not None and len(comp) <= 512):
                return None
            if not plain_text and (text_problem(typ) is not None
                                   or text_problem(comp) is not None):
                return None
            # a frozen dataclass's __init__ sets each field through object.__setattr__
            # (most of this loop's time): the instance's dict is filled directly instead,
            # which makes the same object (tests/monitor/test_pure.py compares them)
            ev = new(BootEvent)
            ev.__dict__.update(index=index, pcr=pcr, type=typ, digest=digest, component=comp)
            if len(known) >= (table.limit if table is not None else _MAX_EVENTS):
                known.clear()
            known[key] = ev
        out.append(ev)
    return tuple(out)


def outcome_from_json(obj: Mapping[str, Any], *, plain_text: bool = False,
                      shared: BootEventTable | None = None,
                      known_events: tuple[BootEvent, ...] | None = None) -> OutcomeEvent:
    """Check a decoded JSON object (see :func:`decode_outcome`); ``plain_text``: the
    caller knows no string in it holds NUL or a surrogate (:func:`_plain_text`);
    ``shared``: boot events checked before, to share (:class:`BootEventTable`);
    ``known_events``: the events, already checked (the object's own ``events`` member is
    then not read; only :func:`_decode_known` gives them)."""
    schema = _int(obj, "schema", lo=1, hi=1000)
    if schema != SCHEMA_VERSION:
        raise _fail("schema", f"is {schema}; this monitor reads version {SCHEMA_VERSION}")
    verdict_text = _str(obj, "verdict", limit=32) or ""
    try:
        verdict = Verdict(verdict_text)
    except ValueError:
        raise _fail("verdict", "must be one of " + ", ".join(v.value for v in Verdict)) from None
    pcrs_raw = obj.get("pcrs") or {}
    if not isinstance(pcrs_raw, dict) or len(pcrs_raw) > 32:
        raise _fail("pcrs", "must be an object of at most 32 PCRs")
    pcrs: dict[int, str] = {}
    for key, value in pcrs_raw.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < 32):
            raise _fail(f"pcrs.{key}", "is not a PCR index 0-31")
        pcrs[int(key)] = _hex(value, f"pcrs.{key}")
    events_raw = (obj.get("events") or []) if known_events is None else []
    if not isinstance(events_raw, list) or len(events_raw) > _MAX_EVENTS:
        raise _fail("events", f"must be a list of at most {_MAX_EVENTS} events")
    lean = _events_lean(events_raw, plain_text, shared) if known_events is None else known_events
    events: list[BootEvent] = list(lean) if lean is not None else []
    for i, item in enumerate(events_raw if lean is None else ()):
        where = f"events[{i}]"
        if not isinstance(item, dict):
            raise _fail(where, "must be an object")
        events.append(
            BootEvent(
                index=_int(item, "index", f"{where}.index", hi=10**7) or 0,
                pcr=_int(item, "pcr", f"{where}.pcr", hi=31) or 0,
                type=_str(item, "type", f"{where}.type", limit=64) or "",
                digest=_hex(item.get("digest"), f"{where}.digest"),
                component=_str(item, "component", f"{where}.component", limit=512) or "",
            )
        )
    claims_raw = obj.get("claims") or []
    if not isinstance(claims_raw, list) or len(claims_raw) > 1000:
        raise _fail("claims", "must be a list of at most 1000 [type, value] pairs")
    claims: list[tuple[str, Any]] = []
    for i, pair in enumerate(claims_raw):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise _fail(f"claims[{i}]", "must be a [type, value] pair")
        claims.append((pair[0], pair[1]))
    revoked_raw = obj.get("revoked") or []
    if not isinstance(revoked_raw, list) or len(revoked_raw) > _MAX_EVENTS:
        raise _fail("revoked", "must be a list")
    revoked: list[RevokedItem] = []
    for i, item in enumerate(revoked_raw):
        where = f"revoked[{i}]"
        if not isinstance(item, dict):
            raise _fail(where, "must be an object")
        revoked.append(
            RevokedItem(
                # -1: the revoked image's event is not among the carried ones
                event=_int(item, "event", f"{where}.event", lo=-1, hi=10**7) or 0,
                component=_str(item, "component", f"{where}.component", limit=512) or "",
                digest=_hex(item.get("digest"), f"{where}.digest"),
                reason=_str(item, "reason", f"{where}.reason") or "",
            )
        )
    secure_boot = obj.get("secure_boot")
    if secure_boot is not None and not isinstance(secure_boot, bool):
        raise _fail("secure_boot", "must be true, false or null")
    when = _when(obj, "time")
    assert when is not None  # required above
    return OutcomeEvent(
        event_id=_ident(obj, "event_id") or "",
        time=when,
        provider=_str(obj, "provider", limit=128) or "",
        attestation_type=_str(obj, "attestation_type", limit=32) or "",
        verdict=verdict,
        reason=_str(obj, "reason") or "",
        policy_hash=_str(obj, "policy_hash", limit=128) or "",
        failed_check=_str(obj, "failed_check", optional=True, limit=64),
        deciding_rule=_str(obj, "deciding_rule", optional=True),
        vm_id=_ident(obj, "vm_id", optional=True),
        claimed_vm_id=_ident(obj, "claimed_vm_id", optional=True),
        pcr_bank=_str(obj, "pcr_bank", optional=True, limit=16) or "sha256",
        pcrs=pcrs,
        events=known_events if known_events is not None else tuple(events),
        reset_count=_int(obj, "reset_count", optional=True, hi=_MAX_UINT32),
        restart_count=_int(obj, "restart_count", optional=True, hi=_MAX_UINT32),
        secure_boot=secure_boot,
        claims=tuple(claims),
        revoked=tuple(revoked),
        dbx_missing=_int(obj, "dbx_missing", optional=True, hi=_MAX_STORED_INT),
        dbx_current=_int(obj, "dbx_current", optional=True, hi=_MAX_STORED_INT),
        aik_not_after=_when(obj, "aik_not_after", optional=True),
        issuer=_str(obj, "issuer", optional=True, limit=_MAX_ISSUER) or "",
        tpm_clock=_int(obj, "tpm_clock", optional=True, hi=_MAX_CLOCK),
        aik=_aik(obj.get("aik") or ""),
        token_id=_ident(obj, "token_id", optional=True) or "",
        schema=schema,
    )
