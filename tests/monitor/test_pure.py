"""The monitor's pure parts as tables: diff alignment, state rules, recommendations,
and the two wire shapes (outcome events, health reports)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from bwdeploy import EVENTLOGS

from bootwatch.attest.outcome import describe_events
from bootwatch.errors import ProtocolError
from bootwatch.eventlog.framing import parse_log
from bootwatch.monitor.diff import diff_boot, differing_pcrs, matches
from bootwatch.monitor.health import StateFacts, compute_state
from bootwatch.monitor.recommendations import VmFacts, evaluate_recommendations
from bootwatch.protocol.health import (
    FailedHop,
    HealthReport,
    HealthStatus,
    decode_health_report,
    encode_health_report,
)
from bootwatch.protocol.monitor import DiffChange, SecurityType, Toggle, VmState
from bootwatch.protocol.outcome import (
    BootEvent,
    BootEventTable,
    OutcomeEvent,
    Verdict,
    decode_outcome,
    encode_outcome,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ev(index: int, pcr: int, type_: str, digest: str, component: str) -> BootEvent:
    return BootEvent(index, pcr, type_, digest, component)


A = ev(1, 4, "EV_EFI_BOOT_SERVICES_APPLICATION", "aa", r"\EFI\BOOT\BOOTX64.EFI")
B = ev(2, 4, "EV_EFI_BOOT_SERVICES_APPLICATION", "bb", r"\EFI\grub.efi")
C = ev(3, 4, "EV_SEPARATOR", "cc", "separator")


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        # same components, one new digest: changed
        ([A, B, C], [A, ev(2, 4, B.type, "b2", B.component), C],
         [(2, DiffChange.CHANGED, "bb", "b2")]),
        # an event added in the middle
        ([A, C], [A, ev(2, 4, B.type, "bb", B.component), ev(3, 4, C.type, "cc", C.component)],
         [(2, DiffChange.ADDED, None, "bb")]),
        # an event removed: the baseline's index is named
        ([A, B, C], [A, ev(2, 4, C.type, "cc", C.component)],
         [(2, DiffChange.REMOVED, "bb", None)]),
        # a replaced component of the same type (new path, new digest) is one change
        ([A, B, C], [A, ev(2, 4, B.type, "b9", r"\EFI\grub2.efi"),
                     ev(3, 4, C.type, "cc", C.component)],
         [(2, DiffChange.CHANGED, "bb", "b9")]),
    ],
)
def test_diff_alignment(old: list[BootEvent], new: list[BootEvent],
                        want: list[tuple[int, DiffChange, str | None, str | None]]) -> None:
    got = diff_boot({4: "old"}, old, {4: "new"}, new)
    assert [(d.event, d.change, d.old_digest, d.new_digest) for d in got] == want
    assert all(d.pcr == 4 for d in got)


def test_a_pcr_the_boot_hides_is_a_deviation() -> None:
    got = diff_boot({4: "x", 7: "y"}, [A], {4: "x"}, [A])
    assert [(d.pcr, d.event, d.change) for d in got] == [(7, None, DiffChange.REMOVED)]
    assert not matches({4: "x", 7: "y"}, {4: "x"})
    # PCRs beyond the baseline's are not compared
    assert matches({4: "x"}, {4: "x", 9: "z"})
    assert differing_pcrs({4: "x", 5: "y"}, {4: "x", 5: "q"}) == (5,)
    assert not matches({}, {4: "x"})  # an empty baseline vouches for nothing


def test_diff_of_two_real_cos_images() -> None:
    def load(name: str) -> tuple[dict[int, str], tuple[BootEvent, ...]]:
        log = parse_log((EVENTLOGS / "go-tpm-tools" / name).read_bytes())
        events = describe_events(log, frozenset(range(10)))
        return {p: "v" + name for p in range(10)}, events

    old_pcrs, old = load("cos-93-amd-sev.bin")
    new_pcrs, new = load("cos-101-amd-sev.bin")
    d = diff_boot(old_pcrs, old, new_pcrs, new)
    # the new SbatLevel is an added PCR 7 event; GRUB's binary changed in PCR 4
    assert any(x.pcr == 7 and x.change is DiffChange.ADDED and "SbatLevel" in x.component
               for x in d)
    assert any(x.pcr == 4 and x.change is DiffChange.CHANGED and "grub" in x.component
               for x in d)
    # PCRs whose events are identical have no entries, though their values "differ" here
    same = {e.pcr for e in old} - {x.pcr for x in d}
    assert all(any(x.pcr == p and x.type == "PCR value" for x in d) or p not in old_pcrs
               for p in same)


def facts(**kw: object) -> StateFacts:
    base: dict[str, object] = dict(
        enabled=True, last_outcome_at=NOW - timedelta(seconds=10), last_verdict=Verdict.PERMIT,
        last_reason="permitted", last_boot_matched=True, open_integrity_alerts=(),
        last_alive_at=NOW - timedelta(seconds=10), last_report_at=None,
        last_report_platform_error=False, last_platform_error="", now=NOW,
        stale_after=timedelta(seconds=60))
    base.update(kw)
    return StateFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "state"),
    [
        ({}, VmState.HEALTHY),
        ({"enabled": False, "last_verdict": Verdict.DENY}, VmState.NOT_MONITORED),
        ({"last_outcome_at": None, "last_alive_at": None, "last_verdict": None},
         VmState.NOT_REPORTING),
        ({"last_verdict": Verdict.DENY}, VmState.UNHEALTHY),
        ({"last_verdict": Verdict.EVIDENCE_REJECTED}, VmState.UNHEALTHY),
        ({"open_integrity_alerts": ("baseline_deviation",)}, VmState.UNHEALTHY),
        ({"last_boot_matched": False}, VmState.UNHEALTHY),
        ({"last_alive_at": NOW - timedelta(seconds=61)}, VmState.STALE),
        # a denial outranks staleness: integrity first
        ({"last_alive_at": NOW - timedelta(hours=1), "last_verdict": Verdict.DENY},
         VmState.UNHEALTHY),
        ({"last_report_platform_error": True, "last_report_at": NOW}, VmState.PLATFORM_ERROR),
        # a platform error older than the last attestation does not count
        ({"last_report_platform_error": True, "last_report_at": NOW - timedelta(minutes=5)},
         VmState.HEALTHY),
        ({"last_outcome_at": None, "last_verdict": None, "last_report_platform_error": True,
          "last_report_at": NOW}, VmState.PLATFORM_ERROR),
    ],
)
def test_state_rules(kw: dict[str, object], state: VmState) -> None:
    got, reason = compute_state(facts(**kw))
    assert got is state, reason
    assert reason


def rec_facts(**kw: object) -> VmFacts:
    base: dict[str, object] = dict(
        enabled=True, state=VmState.HEALTHY, security_type=SecurityType.TRUSTED_LAUNCH,
        secure_boot_setting=Toggle.UNKNOWN, vtpm_setting=Toggle.UNKNOWN,
        measured_secure_boot=True, is_windows=False, last_report_status=None,
        last_failed_hop=None, last_failed_target="", last_platform_error="",
        open_integrity_alerts=0, dbx_missing=None, dbx_current=None, aik_not_after=None,
        now=NOW)
    base.update(kw)
    return VmFacts(**base)  # type: ignore[arg-type]


def codes(f: VmFacts) -> dict[str, tuple[str, str]]:
    return {r.definition.key: (r.code.value, r.cause) for r in evaluate_recommendations(f)}


def test_recommendations_applicability_and_causes() -> None:
    sb, vtpm = "69ad830b-d98c-b1cf-2158-9d69d38c7093", "861bbc73-0a55-8d1d-efc6-e92d9e1176e0"
    linux, win = "e94a7421-fc27-7a4d-e9ba-2ba01384cacd", "874b14bd-b49e-495a-88c6-46acb89b0a33"
    healthy = "b7604066-ed76-45f9-a5c1-c97e4812dc55"
    c = codes(rec_facts())
    assert c[sb] == ("Healthy", "") and c[vtpm] == ("Healthy", "") and c[healthy][0] == "Healthy"
    assert linux in c and win not in c
    assert win in codes(rec_facts(is_windows=True))
    c = codes(rec_facts(measured_secure_boot=False))
    assert c[sb] == ("Unhealthy", "SecureBootDisabled")
    # standard VMs: Secure Boot and vTPM do not apply; vTPM applies to Trusted Launch only
    c = codes(rec_facts(security_type=SecurityType.STANDARD))
    assert c[sb][0] == c[vtpm][0] == "NotApplicable"
    assert codes(rec_facts(security_type=SecurityType.CONFIDENTIAL))[vtpm][0] == "NotApplicable"
    assert codes(rec_facts(vtpm_setting=Toggle.OFF))[vtpm] == ("Unhealthy", "VtpmDisabled")
    # agent: never reported vs platform error; needs SB and vTPM on (Azure Policy's if)
    assert codes(rec_facts(state=VmState.NOT_REPORTING))[linux] == ("Unhealthy", "NotInstalled")
    assert codes(rec_facts(last_report_status=HealthStatus.PLATFORM_ERROR))[linux][1] == (
        "ProvisioningFailed")
    assert codes(rec_facts(secure_boot_setting=Toggle.OFF))[linux][0] == "NotApplicable"
    assert codes(rec_facts(open_integrity_alerts=2))[healthy] == ("Unhealthy", "AttestationFailed")
    assert codes(rec_facts(enabled=False))[healthy][0] == "NotApplicable"
    # ours: dbx, AIK renewal at 90 days, egress on a network hop only
    assert codes(rec_facts(dbx_current=10, dbx_missing=3))["bootwatch-dbx-current"] == (
        "Unhealthy", "DbxOutdated")
    assert codes(rec_facts(dbx_current=10, dbx_missing=0))["bootwatch-dbx-current"][0] == "Healthy"
    assert codes(rec_facts())["bootwatch-dbx-current"][0] == "NotApplicable"
    aik = "bootwatch-aik-renewal"
    assert codes(rec_facts(aik_not_after=NOW + timedelta(days=89)))[aik][0] == "Unhealthy"
    assert codes(rec_facts(aik_not_after=NOW + timedelta(days=91)))[aik][0] == "Healthy"
    egress = "bootwatch-attestation-egress"
    blocked = rec_facts(last_report_status=HealthStatus.PLATFORM_ERROR,
                        last_failed_hop=FailedHop.TCP_CONNECT, egress_rules_text="RULES")
    res = {r.definition.key: r for r in evaluate_recommendations(blocked)}[egress]
    assert res.code.value == "Unhealthy" and "RULES" in res.remediation
    local = rec_facts(last_report_status=HealthStatus.PLATFORM_ERROR,
                      last_failed_hop=FailedHop.LOCAL)
    assert codes(local)[egress][0] == "Healthy"
    # every Unhealthy result says how to fix it
    for f in (blocked, rec_facts(measured_secure_boot=False, vtpm_setting=Toggle.OFF,
                                 open_integrity_alerts=1, dbx_current=1, dbx_missing=1,
                                 aik_not_after=NOW)):
        for r in evaluate_recommendations(f):
            if r.code.value == "Unhealthy":
                assert len(r.remediation) > 40, r.definition.key


def test_outcome_event_round_trip_and_field_errors() -> None:
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={0: "ab", 7: "cd"}, events=(A,), reset_count=3, secure_boot=True,
        claims=(("secureboot", True), ("pcrs", {"pcrs": []})), aik_not_after=NOW)
    assert decode_outcome(encode_outcome(event)) == event
    obj = json.loads(encode_outcome(event))
    for key, value, field in [
        ("verdict", "maybe", "verdict"), ("pcrs", {"40": "ab"}, "pcrs.40"),
        ("pcrs", {"1": "XYZ"}, "pcrs.1"), ("schema", 2, "schema"),
        ("events", [{"index": 1}], "events[0].pcr"), ("vm_id", "a/b", "vm_id"),
        ("time", "noon", "time"), ("secure_boot", "yes", "secure_boot"),
    ]:
        with pytest.raises(ProtocolError, match=field.replace("[", r"\[").replace("]", r"\]")):
            decode_outcome(json.dumps(dict(obj, **{key: value})).encode())
    with pytest.raises(ProtocolError, match="not JSON"):
        decode_outcome(b"[" * 100_000)


def _event_obj(**fields: object) -> dict[str, object]:
    return {"index": 1, "pcr": 4, "type": "EV_EFI_BOOT_SERVICES_APPLICATION",
            "digest": "ab" * 32, "component": "\\EFI\\BOOT\\BOOTX64.EFI", **fields}


def test_outcome_events_lean_checks_fail_as_the_general_ones() -> None:
    """decode_outcome checks a boot's events in one inlined loop (and the text of every
    string once for the whole body); any event it doubts goes through the general
    checks, so a bad event is named exactly as before, and a good one decodes alike."""
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab"}, events=(A,), reset_count=3)
    obj = json.loads(encode_outcome(event))
    good = [_event_obj(), _event_obj(index=2, component="caf\u00e9 \U0001f600 \"q\"")]
    body = json.dumps(dict(obj, events=good)).encode()
    assert b"\\u" in body  # escapes: the per-string text check runs
    decoded = decode_outcome(body)
    assert decoded.events[1].component == "caf\u00e9 \U0001f600 \"q\""
    assert decoded == decode_outcome(json.dumps(dict(obj, events=good),
                                                ensure_ascii=False).encode())
    for bad, field, what in [
        (_event_obj(index=True), "events[1].index", "integer"),
        (_event_obj(index=10**7 + 1), "events[1].index", "integer"),
        (_event_obj(pcr=32), "events[1].pcr", "integer"),
        (_event_obj(type="T" * 65), "events[1].type", "longer than 64"),
        (_event_obj(digest="AB"), "events[1].digest", "lowercase hex"),
        (_event_obj(digest="ab" * 65), "events[1].digest", "lowercase hex"),
        (_event_obj(component="x" * 513), "events[1].component", "longer than 512"),
        (_event_obj(component="a\x00b"), "events[1].component", "NUL"),
        (_event_obj(type="\ud800"), "events[1].type", "surrogate"),
        ({"index": 1}, "events[1].pcr", "required"),
        ([1], "events[1]", "must be an object"),
    ]:
        with pytest.raises(ProtocolError, match=re.escape(f"'{field}' ") + ".*" + what):
            decode_outcome(json.dumps(dict(obj, events=[_event_obj(), bad])).encode())
    # a surrogate encoded in the bytes (json.loads lets it through) is refused too: not UTF-8
    raw = json.dumps(dict(obj, events=[_event_obj(component="SURR")])).encode()
    with pytest.raises(ProtocolError, match="surrogate"):
        decode_outcome(raw.replace(b"SURR", "\ud800".encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\uD800", "\\uDbFf", "\\udc00",
                                    "\\uDFFF"])
def test_an_escape_that_decodes_to_nul_or_a_surrogate_is_still_refused(escape: str) -> None:
    """The whole-body text check skips the per-string one only when no escape can decode
    to NUL or a lone surrogate; every such escape (any case of hex digit) is caught."""
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab"}, events=(A,), reset_count=3)
    obj = json.loads(encode_outcome(event))
    body = json.dumps(dict(obj, events=[_event_obj(), _event_obj(component="x\u2026MARK")]))
    assert decode_outcome(body.encode()).events[1].component == "x\u2026MARK"
    with pytest.raises(ProtocolError, match=re.escape("'events[1].component' ")):
        decode_outcome(body.replace("MARK", escape).encode())


def test_events_decoded_in_the_lean_loop_are_ordinary_frozen_events() -> None:
    """The lean loop fills a BootEvent's fields without its __init__: the result must
    equal, hash and refuse changes like one made by the constructor."""
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab"}, events=(A,), reset_count=3)
    obj = json.loads(encode_outcome(event))
    item = _event_obj(component="ellipsis\u2026")
    decoded = decode_outcome(json.dumps(dict(obj, events=[item])).encode()).events[0]
    made = BootEvent(1, 4, "EV_EFI_BOOT_SERVICES_APPLICATION", "ab" * 32, "ellipsis\u2026")
    assert type(decoded) is BootEvent
    assert decoded == made and hash(decoded) == hash(made) and repr(decoded) == repr(made)
    with pytest.raises(AttributeError):
        decoded.pcr = 7  # type: ignore[misc]


def test_a_shared_event_table_shares_checked_events_and_refuses_what_it_refused() -> None:
    """A decoder's BootEventTable hands out the events it checked before to later
    outcomes with equal events; an event equal in value but not in type (1.0, true) is
    looked up only after its types are checked, so it is still refused, by name."""
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab"}, events=(A,), reset_count=3)
    obj = json.loads(encode_outcome(event))
    items = [_event_obj(index=i, component=f"c{i}\u2026") for i in range(1, 6)]
    table = BootEventTable()
    first = decode_outcome(json.dumps(dict(obj, events=items)).encode(), shared=table)
    second = decode_outcome(json.dumps(dict(obj, event_id="e2", events=items)).encode(),
                            shared=table)
    alone = decode_outcome(json.dumps(dict(obj, events=items)).encode())
    assert first.events == second.events == alone.events and len(table) == 5
    assert all(a is b for a, b in zip(first.events, second.events, strict=True))
    for bad, field, what in [(dict(items[0], index=1.0), "events[0].index", "integer"),
                             (dict(items[0], pcr=True), "events[0].pcr", "integer")]:
        with pytest.raises(ProtocolError, match=re.escape(f"'{field}' ") + ".*" + what):
            decode_outcome(json.dumps(dict(obj, events=[bad])).encode(), shared=table)
    small = BootEventTable(limit=3)
    decode_outcome(json.dumps(dict(obj, events=items)).encode(), shared=small)
    assert len(small) <= 3


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_an_outcome_in_another_encoding_is_refused(encoding: str) -> None:
    """json.loads would read UTF-16 or UTF-32 bytes, where the byte-level text check
    cannot see a NUL or a surrogate: only UTF-8 is read, and the error says where."""
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab"}, events=(A,), reset_count=3)
    obj = json.loads(encode_outcome(event))
    body = json.dumps(dict(obj, events=[_event_obj(component="a\x00b")]))
    with pytest.raises(ProtocolError, match=r"not UTF-8 text at byte|not JSON"):
        decode_outcome(body.encode(encoding), shared=BootEventTable())


@pytest.mark.parametrize("key", ["\u00b2", "\u0661", "\uff11"])
def test_a_pcr_index_must_be_ascii_digits(key: str) -> None:
    """str.isdigit() takes superscripts and other scripts' digits (int() of some raises
    ValueError, of others gives a PCR index): refused by name."""
    event = OutcomeEvent(
        event_id="e1", time=NOW, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h", vm_id="VM-1",
        pcrs={4: "ab"}, events=(A,), reset_count=3)
    obj = json.loads(encode_outcome(event))
    with pytest.raises(ProtocolError, match=re.escape(f"'pcrs.{key}'")):
        decode_outcome(json.dumps(dict(obj, pcrs={key: "ab"})).encode())


def test_health_report_round_trip() -> None:
    r = HealthReport("r-1", "VM-1", HealthStatus.PLATFORM_ERROR, NOW, "0.2.0", boot_counter=4,
                     platform_error_message="TLS handshake failed", failed_hop=FailedHop.TLS,
                     failed_target="https://x:443")
    assert decode_health_report(encode_health_report(r)) == r
    obj = json.loads(encode_health_report(r))
    with pytest.raises(ProtocolError, match="FailedHop"):
        decode_health_report(json.dumps(dict(obj, HealthStatus="Unhealthy")).encode())
    with pytest.raises(ProtocolError, match="BootCounter"):
        decode_health_report(json.dumps(dict(obj, BootCounter=-1)).encode())
    with pytest.raises(ProtocolError, match="larger"):
        decode_health_report(b" " * 70_000)
