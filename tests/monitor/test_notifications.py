"""The monitor's notifications and presentation on SQLite and PostgreSQL: webhook delivery
to receivers on loopback (real HTTP, signatures checked), the Prometheus gauges scraped from
a served monitor, the guest-attestation recommendation's status, and the dashboard's VM page
served over loopback HTTP.

The monitor's state is built through its own write paths (``Monitor.enable``,
``ingest_outcomes``, ``add_suppression``) from outcome events of a real COS event log; a
clock the test moves dates each change, so alerts have distinct start times."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from bwdeploy import EVENTLOGS
from bwservers import ThreadServer, bound_socket
from bwwebhook import WebhookReceiver, serve_http, stop_http
from sqlalchemy import Engine, select

from bootwatch.attest.outcome import describe_events
from bootwatch.errors import ConfigError
from bootwatch.eventlog.framing import parse_log
from bootwatch.monitor import queries
from bootwatch.monitor.app import create_monitor_app
from bootwatch.monitor.container import bootstrap
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.db import as_utc
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import RecommendationRow, VmRow, WebhookDeliveryRow
from bootwatch.monitor.recommendations import ATTESTATION_HEALTHY
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.webhooks import KEEP, MAX_ATTEMPTS, WebhookDispatcher
from bootwatch.protocol.monitor import AlertReason
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, Verdict

COS = EVENTLOGS / "go-tpm-tools" / "cos-101-amd-sev.bin"
SECRET = "notification-test-secret"
ADMIN = "notifications-admin-token-0123456789"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    """The monitor's clock, moved by the test (one minute a change)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


def _images() -> tuple[tuple[dict[int, str], tuple[BootEvent, ...]],
                       tuple[dict[int, str], tuple[BootEvent, ...]]]:
    """Two boots of one VM: the COS log, and the same with another boot loader in PCR 4."""
    events = describe_events(parse_log(COS.read_bytes()), frozenset(range(10)))
    base = {p: f"{p:02x}" * 32 for p in range(10)}
    other = tuple(BootEvent(e.index, e.pcr, e.type, "cd" * 32, e.component + "-v2")
                  if e.pcr == 4 else e for e in events)
    return (base, events), ({**base, 4: "ab" * 32}, other)


IMAGES = _images()


def outcome(vm_id: str, at: datetime, verdict: Verdict = Verdict.PERMIT, *,
            image: int = 0) -> OutcomeEvent:
    pcrs, events = IMAGES[image]
    return OutcomeEvent(
        event_id=uuid.uuid4().hex, time=at, provider="p", attestation_type="AzureGuest",
        verdict=verdict, reason=f"{verdict.value} at {at:%H:%M}", policy_hash="h" * 43,
        deciding_rule="r1" if verdict is Verdict.DENY else None, vm_id=vm_id, pcrs=pcrs,
        events=events, reset_count=1, secure_boot=True,
        claims=(("x-ms-azurevm-is-windows", False),))


def new_vm_id() -> str:
    return str(uuid.uuid4()).upper()


# --- webhooks --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["http://[::1/hook", "http://xn--a.com/"])
def test_a_receiver_url_httpx_cannot_parse_does_not_stop_deliveries_to_the_others(
    engines: list[Engine], receiver: WebhookReceiver, bad: str
) -> None:
    """A stored delivery to a URL httpx cannot parse (``InvalidURL``, no HTTPError; or an
    IDNA ``ValueError``) ended the dispatcher's round and its thread, so the good
    receiver never got its delivery.  Settings refuse such URLs now (below), but a row
    stored before stays: its delivery is a failed attempt like any other."""
    clock = Clock()
    settings = MonitorSettings(webhooks=(receiver.url,), webhook_secret=SECRET)
    monitor = Monitor(engines[0], settings, metrics=MonitorMetrics(), clock=clock)
    vm = new_vm_id()
    monitor.enable(vm, name="hooked")
    monitor.ingest_outcomes([outcome(vm, clock.tick(), Verdict.DENY)])  # alert.opened
    with monitor.write_tx() as s:
        good = s.scalars(select(WebhookDeliveryRow)).one()
        s.add(WebhookDeliveryRow(  # first in line: created earlier
            id=uuid.uuid4().hex, url=bad, body=good.body,
            created_at=good.created_at - timedelta(seconds=1), attempts=0,
            next_attempt_at=good.next_attempt_at, last_error=""))

    delivered = WebhookDispatcher(monitor).deliver_due()

    assert delivered == 1
    assert [d["event"] for d in receiver.deliveries] == ["alert.opened"]
    assert receiver.bad_signatures == 0
    assert receiver.deliveries[0]["_delivery_header"] == receiver.deliveries[0]["delivery_id"]
    with monitor.read() as s:
        row = s.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.url == bad)).one()
        assert row.delivered_at is None and row.attempts == 1 and row.last_error


class StallingReceiver:
    """Answers 200 at once, announces a 10 MB body, sends 10 bytes of it, then stalls
    (until closed): a receiver that would hold a reader of its answer."""

    def __init__(self) -> None:
        self.posts = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts += 1
                self.send_response(200)
                self.send_header("Content-Length", str(10 * 1024 * 1024))
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.wfile.flush()
                outer.release.wait(30)

            def log_message(self, *args: Any) -> None:
                pass

        self.http, base = serve_http(Handler, threaded=True)
        self.url = f"{base}/hook"

    def close(self) -> None:
        self.release.set()
        stop_http(self.http)


def test_a_receiver_answer_is_judged_by_its_status_and_its_body_never_read(
    engines: list[Engine]
) -> None:
    """Before, the dispatcher read the answer's body: a receiver announcing a large body
    and trickling it held the dispatcher until the read timeout, and the delivery was
    counted failed (and posted again) although the receiver had answered 200."""
    stalling = StallingReceiver()
    try:
        clock = Clock()
        settings = MonitorSettings(webhooks=(stalling.url,), webhook_secret=SECRET)
        monitor = Monitor(engines[0], settings, metrics=MonitorMetrics(), clock=clock)
        vm = new_vm_id()
        monitor.enable(vm, name="stalled")
        monitor.ingest_outcomes([outcome(vm, clock.tick(), Verdict.DENY)])
        dispatcher = WebhookDispatcher(monitor, timeout=2.0)
        try:
            assert dispatcher.deliver_due() == 1
        finally:
            dispatcher.stop()
        with monitor.read() as s:
            row = s.scalars(select(WebhookDeliveryRow)).one()
            assert row.delivered_at is not None and row.last_error == ""
        assert stalling.posts == 1
    finally:
        stalling.close()


def test_a_failing_receiver_gets_one_attempt_a_round_and_the_others_all_theirs(
    engines: list[Engine], receiver: WebhookReceiver
) -> None:
    """Five deliveries wait for a receiver that answers 503 and five for a good one:
    before, each round posted all five to the failing receiver (a dead one, timing out,
    held the round for five timeouts before the good receiver's turn)."""
    down = WebhookReceiver(SECRET, status=503)
    try:
        clock = Clock()
        settings = MonitorSettings(webhooks=(down.url, receiver.url), webhook_secret=SECRET)
        monitor = Monitor(engines[0], settings, metrics=MonitorMetrics(), clock=clock)
        for _ in range(5):
            vm = new_vm_id()
            monitor.enable(vm, name=f"vm-{vm[:8]}")
            monitor.ingest_outcomes([outcome(vm, clock.tick(), Verdict.DENY)])
        dispatcher = WebhookDispatcher(monitor)
        try:
            assert dispatcher.deliver_due() == 5
        finally:
            dispatcher.stop()
        assert len(down.deliveries) == 1 and len(receiver.deliveries) == 5
        with monitor.read() as s:
            waiting = s.scalars(select(WebhookDeliveryRow).where(
                WebhookDeliveryRow.url == down.url)).all()
            assert sorted(r.attempts for r in waiting) == [0, 0, 0, 0, 1]
    finally:
        down.close()


def test_a_dead_receivers_backlog_does_not_crowd_the_others_out_of_a_round(
    engines: list[Engine], receiver: WebhookReceiver
) -> None:
    """150 deliveries wait for a dead receiver, all older than the good receiver's one:
    a round took the 100 oldest due rows across receivers, so it held only the dead
    receiver's (one attempt, the rest skipped) and the good receiver never got its
    delivery while the backlog lasted (found in review)."""
    dead = "http://127.0.0.1:9/hook"  # discard port: connection refused
    settings = MonitorSettings(webhooks=(dead, receiver.url), webhook_secret=SECRET)
    monitor = Monitor(engines[0], settings, metrics=MonitorMetrics())
    old = datetime.now(UTC) - timedelta(hours=1)
    with monitor.write_tx() as s:
        for i in range(150):
            s.add(WebhookDeliveryRow(id=f"dead-{i:03d}", url=dead, body="{}",
                                     created_at=old + timedelta(seconds=i), attempts=0,
                                     next_attempt_at=old, delivered_at=None, last_error=""))
        s.add(WebhookDeliveryRow(id="good-000", url=receiver.url, body='{"n": 1}',
                                 created_at=old + timedelta(minutes=30), attempts=0,
                                 next_attempt_at=old, delivered_at=None, last_error=""))
    dispatcher = WebhookDispatcher(monitor)
    try:
        assert dispatcher.deliver_due() == 1
    finally:
        dispatcher.stop()
    assert len(receiver.deliveries) == 1
    with monitor.read() as s:
        attempted = s.scalars(select(WebhookDeliveryRow.id).where(
            WebhookDeliveryRow.url == dead, WebhookDeliveryRow.attempts > 0)).all()
    assert attempted == ["dead-000"]  # the dead one's oldest, once


def test_configured_receivers_go_before_receivers_no_longer_configured(
    engines: list[Engine], receiver: WebhookReceiver
) -> None:
    """Rows for a URL no longer in --webhook (written before the URL changed) are still
    delivered, after the configured receivers' (a stale receiver that hangs held a
    configured one's delivery behind it, in URL order; found in review)."""
    stale = WebhookReceiver(SECRET)
    try:
        settings = MonitorSettings(webhooks=(receiver.url,), webhook_secret=SECRET)
        monitor = Monitor(engines[0], settings, metrics=MonitorMetrics())
        old = datetime.now(UTC) - timedelta(hours=1)
        with monitor.write_tx() as s:
            for i in range(3):
                # "HTTP://" sorts before every "http://" URL: URL order would serve it first
                s.add(WebhookDeliveryRow(id=f"stale-{i}", url=stale.url.replace("http", "HTTP", 1),
                                         body='{"event": "x"}',
                                         created_at=old + timedelta(seconds=i), attempts=0,
                                         next_attempt_at=old, delivered_at=None,
                                         last_error=""))
            s.add(WebhookDeliveryRow(id="good-0", url=receiver.url, body='{"event": "y"}',
                                     created_at=old + timedelta(minutes=5), attempts=0,
                                     next_attempt_at=old, delivered_at=None, last_error=""))
        dispatcher = WebhookDispatcher(monitor)
        try:
            assert dispatcher.deliver_due() == 4
        finally:
            dispatcher.stop()
        assert [d["_delivery_header"] for d in stale.deliveries] == [
            "stale-0", "stale-1", "stale-2"]
        assert receiver.deliveries[0]["_received_at"] < stale.deliveries[0]["_received_at"]
    finally:
        stale.close()


def test_a_receiver_trickling_its_answer_is_cut_off_and_the_others_served(
    engines: list[Engine], receiver: WebhookReceiver
) -> None:
    """A receiver that answers its headers a byte at a time, each within the read
    timeout, held the dispatcher's round for ever (found in review): a delivery is cut
    off after 2 x timeout in all, and the round goes on to the other receivers."""
    from bwtrickle import Trickler

    slow = Trickler(gap=0.1, lasts=60, head=True)
    try:
        slow_url = f"http://127.0.0.1:{slow.port}/hook"
        settings = MonitorSettings(webhooks=(slow_url, receiver.url), webhook_secret=SECRET)
        monitor = Monitor(engines[0], settings, metrics=MonitorMetrics())
        old = datetime.now(UTC) - timedelta(hours=1)
        with monitor.write_tx() as s:
            for rid, url in (("slow-0", slow_url), ("good-0", receiver.url)):
                s.add(WebhookDeliveryRow(id=rid, url=url, body='{"event": "x"}',
                                         created_at=old, attempts=0, next_attempt_at=old,
                                         delivered_at=None, last_error=""))
        dispatcher = WebhookDispatcher(monitor, timeout=0.5)
        try:
            assert dispatcher.deliver_due() == 1
        finally:
            dispatcher.stop()
        with monitor.read() as s:
            row = s.get(WebhookDeliveryRow, "slow-0")
            assert row is not None and row.last_error == "no answer within 1 s"
        assert len(receiver.deliveries) == 1
        assert slow.sent < 100  # cut off at 1 s, not after the trickle's 60 s
    finally:
        slow.close()


def test_an_abandoned_delivery_is_logged_and_counted(
    engines: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = WebhookReceiver(SECRET, status=503)
    try:
        clock = Clock()
        settings = MonitorSettings(webhooks=(receiver.url + "?token=s3cret",),
                                   webhook_secret=SECRET)
        metrics = MonitorMetrics()
        monitor = Monitor(engines[0], settings, metrics=metrics, clock=clock)
        vm = new_vm_id()
        monitor.enable(vm, name="abandoned")
        monitor.ingest_outcomes([outcome(vm, clock.tick(), Verdict.DENY)])
        with monitor.write_tx() as s:
            row = s.scalars(select(WebhookDeliveryRow)).one()
            row.attempts = MAX_ATTEMPTS - 1
            delivery = row.id
        dispatcher = WebhookDispatcher(monitor)
        try:
            with caplog.at_level("ERROR"):
                assert dispatcher.deliver_due() == 0
            assert dispatcher.deliver_due() == 0  # no further attempt
        finally:
            dispatcher.stop()
        records = [r for r in caplog.records if r.getMessage() == "webhook delivery abandoned"]
        assert len(records) == 1
        assert records[0].__dict__["delivery"] == delivery
        assert records[0].__dict__["receiver"] == f"http://127.0.0.1:{receiver.http.server_port}"
        assert "s3cret" not in repr(records[0].__dict__)
        text = metrics.exposition().decode()
        assert re.search(r'result="abandoned"\} 1\.0', text), text
        assert len(receiver.deliveries) == 1
    finally:
        receiver.close()


def test_old_deliveries_made_or_given_up_are_pruned_and_waiting_ones_kept(
    engines: list[Engine]
) -> None:
    settings = MonitorSettings(webhooks=("http://127.0.0.1:9/hook",), webhook_secret=SECRET)
    monitor = Monitor(engines[0], settings, metrics=MonitorMetrics())
    now = datetime.now(UTC)
    old = now - KEEP - timedelta(days=1)
    rows = {  # id: (created, delivered, attempts)
        "old-delivered": (old, old, 1), "old-abandoned": (old, None, MAX_ATTEMPTS),
        "old-waiting": (old, None, 3), "new-delivered": (now, now, 1)}
    with monitor.write_tx() as s:
        for rid, (created, delivered, attempts) in rows.items():
            s.add(WebhookDeliveryRow(id=rid, url="http://127.0.0.1:9/hook", body="{}",
                                     created_at=created, attempts=attempts,
                                     next_attempt_at=now + timedelta(hours=1),
                                     delivered_at=delivered, last_error=""))
    dispatcher = WebhookDispatcher(monitor)
    try:
        assert dispatcher.prune() == 2
    finally:
        dispatcher.stop()
    with monitor.read() as s:
        left = set(s.scalars(select(WebhookDeliveryRow.id)))
    # a delivery still being retried is never pruned, however old
    assert left == {"old-waiting", "new-delivered"}


@pytest.mark.parametrize("bad", ["http://[::1/hook", "http://xn--a.com/", "http://:80/x",
                                 "https://host:80a/"])
def test_settings_refuse_a_webhook_url_no_client_can_parse(bad: str) -> None:
    with pytest.raises(ConfigError, match="--webhook"):
        MonitorSettings(webhooks=(bad,), webhook_secret=SECRET)


# --- metrics ---------------------------------------------------------------------------


@pytest.fixture
def served(engines: list[Engine]) -> Iterator[tuple[str, Any]]:
    """The monitor app on its own over loopback HTTP (its threads started by the
    lifespan), on one of the test's databases: (URL, container)."""
    container = bootstrap(MonitorSettings(admin_tokens=(ADMIN,)), engine=engines[0])
    server = ThreadServer(create_monitor_app(container), bound_socket()).start()
    try:
        yield f"http://127.0.0.1:{server.port}", container
    finally:
        server.stop()


def _gauges(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics").raise_for_status().text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            if fam.name in ("bootwatch_monitor_vms", "bootwatch_monitor_open_alerts")
            for s in fam.samples}


def test_gauges_go_to_zero_when_the_last_vm_leaves_a_state(
    served: tuple[str, Any]
) -> None:
    """Disabling the only unhealthy VM resolves its alert: the scrape must then say 0
    unhealthy VMs and 0 open policy_denied alerts, not leave the series out (Prometheus
    shows "no data" for it, and a scraper that keeps last values shows the old 1)."""
    url, container = served
    vm = new_vm_id()
    container.monitor.enable(vm, name="gauged")
    container.monitor.ingest_outcomes([outcome(vm, datetime.now(UTC), Verdict.DENY)])
    unhealthy = ("bootwatch_monitor_vms", (("state", "unhealthy"),))
    denied = ("bootwatch_monitor_open_alerts",
              (("reason", "policy_denied"), ("severity", "medium")))
    before = _gauges(url)
    assert before[unhealthy] == 1 and before[denied] == 1

    container.monitor.disable(vm)

    after = _gauges(url)
    assert after.get(unhealthy) == 0
    assert after.get(denied) == 0
    assert after.get(("bootwatch_monitor_vms", (("state", "not_monitored"),))) == 1


# --- recommendations --------------------------------------------------------------------


def _rec(monitor: Monitor, vm: str, key: str) -> Any:
    """The stored recommendation row (its columns, read while the session is open)."""
    with monitor.read() as s:
        return s.execute(select(*RecommendationRow.__table__.columns).where(
            RecommendationRow.vm_id == vm, RecommendationRow.key == key)).one()


def test_a_suppressed_denial_leaves_the_attestation_status_recommendation_unhealthy(
    engines: list[Engine]
) -> None:
    """Suppression rules silence alerts, not facts (docs/monitor.md): a denied VM in a
    suppressed group is ``unhealthy``, and "guest attestation status should be healthy"
    must say Unhealthy, dated at the denial.  It said Healthy, "the last attestation was
    permitted and matches an approved baseline"."""
    clock = Clock()
    monitor = Monitor(engines[0], MonitorSettings(stale_after_seconds=3600),
                      metrics=MonitorMetrics(), clock=clock)
    vm = new_vm_id()
    monitor.enable(vm, name="sb-off-by-design", group="lab")
    monitor.add_suppression(vm=None, group="lab", reason=AlertReason.POLICY_DENIED,
                            note="Secure Boot off by design")
    monitor.ingest_outcomes([outcome(vm, clock.tick())])
    assert _rec(monitor, vm, ATTESTATION_HEALTHY.key).code == "Healthy"

    denied_at = clock.tick()
    monitor.ingest_outcomes([outcome(vm, denied_at, Verdict.DENY)])

    with monitor.read() as s:
        state, open_alerts = s.execute(
            select(VmRow.state, VmRow.open_alerts).where(VmRow.vm_id == vm)).one()
    assert (state, open_alerts) == ("unhealthy", 0)
    rec = _rec(monitor, vm, ATTESTATION_HEALTHY.key)
    assert (rec.code, rec.cause) == ("Unhealthy", "AttestationFailed"), rec.description
    assert rec.remediation
    assert as_utc(rec.status_changed) == denied_at


# --- dashboard ---------------------------------------------------------------------------


def _signed_in(url: str) -> httpx.Client:
    """A client signed in to the dashboard with the admin token, as a browser does."""
    client = httpx.Client(base_url=url, follow_redirects=False)
    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and csrf is not None, page.text
    r = client.post("/ui/login", data={"csrf": csrf.group(1), "token": ADMIN, "next": ""})
    assert r.status_code == 303 and "bw_session" in client.cookies, r.text
    return client


def _flapping_vm(monitor: Monitor) -> str:
    """A VM with 51 alerts: a deviation opened first and still open, then 50 policy
    denials each opened and resolved (one ingestion each, so each change is dated)."""
    vm = new_vm_id()
    monitor.enable(vm, name=f"flapping-{vm[:8]}")
    monitor.ingest_outcomes([outcome(vm, datetime.now(UTC))])            # the baseline
    monitor.ingest_outcomes([outcome(vm, datetime.now(UTC), image=1)])   # deviation opened
    for _ in range(50):
        monitor.ingest_outcomes([outcome(vm, datetime.now(UTC), Verdict.DENY, image=1)])
        monitor.ingest_outcomes([outcome(vm, datetime.now(UTC), image=1)])
    return vm


def test_vm_page_shows_an_open_alert_older_than_its_50_newest_alerts(
    served: tuple[str, Any]
) -> None:
    """A deviation stays open while a policy denial opens and resolves 50 times: the VM
    page listed its open alerts from the 50 newest only, so it said "No open alerts" (and
    offered no approve button) for a VM that is unhealthy with an active deviation."""
    url, container = served
    monitor = container.monitor
    vm = _flapping_vm(monitor)
    deviation = queries.list_alerts(monitor, vm=vm, status="open")["items"]
    assert [a["reason"] for a in deviation] == ["baseline_deviation"]
    # the API's VM detail (GET /api/v1/vms/{vm}): the 50 newest, then the older open one
    r = httpx.get(f"{url}/api/v1/vms/{vm}", timeout=30)
    assert r.status_code == 200, r.text
    listed = r.json()["alerts"]
    assert len(listed) == 51 and listed[-1]["id"] == deviation[0]["id"]
    assert all(a["status"] == "resolved" for a in listed[:50])

    client = _signed_in(url)
    try:
        page = client.get(f"/ui/vms/{vm}")
    finally:
        client.close()
    assert page.status_code == 200
    open_section = page.text.split('id="alerts-h"', 1)[1].split('id="diff-h"', 1)[0]
    assert "No open alerts" not in open_section
    assert f'/ui/alerts/{deviation[0]["id"]}"' in open_section
    assert f"/ui/vms/{vm}/approve" in open_section


def test_alerts_pager_keeps_the_any_status_filter(served: tuple[str, Any]) -> None:
    """The alert list filtered to any status, 51 alerts: page 2 must hold the 51st (the
    oldest, the open deviation).  The "next page" link dropped the empty status filter,
    and no status means "open": page 2 was the open alerts from offset 50, none."""
    url, container = served
    vm = _flapping_vm(container.monitor)
    oldest = queries.list_alerts(container.monitor, vm=vm, status="open")["items"][0]["id"]

    client = _signed_in(url)
    try:
        first = client.get("/ui/alerts", params={"status": "", "vm": vm})
        assert first.status_code == 200
        assert first.text.count('<th scope="row"><a href="/ui/alerts/') == 50
        nxt = re.search(r'<a href="([^"]+)" rel="next">', first.text)
        assert nxt is not None, "no next page link"
        second = client.get(nxt.group(1).replace("&amp;", "&"))
    finally:
        client.close()
    assert second.status_code == 200
    assert second.text.count('<th scope="row"><a href="/ui/alerts/') == 1
    assert f'<a href="/ui/alerts/{oldest}">' in second.text


def test_dashboard_refuses_nul_in_addresses_and_forms_with_a_400(
    served: tuple[str, Any]
) -> None:
    """NUL in a path, query or form value: PostgreSQL cannot hold it, and its DataError
    made the dashboard answer 503 "the monitor cannot answer now" (the API refuses the
    same input with a 400 naming the parameter)."""
    url, container = served
    client = _signed_in(url)
    try:
        for path, name in (("/ui/vms/a%00b", "ref"), ("/ui/alerts/%00", "alert_id"),
                           ("/ui/recommendations/%00", "key"), ("/ui?q=%00", "q"),
                           ("/ui?group=%00", "group"), ("/ui/alerts?vm=%00", "vm"),
                           ("/ui/alerts?severity=%00", "severity")):
            r = client.get(path)
            assert r.status_code == 400, (path, r.status_code, r.text[-600:])
            assert f"&#39;{name}&#39; must not contain NUL characters" in r.text, path
        page = client.get("/ui/suppressions")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        r = client.post("/ui/suppressions", data={"csrf": csrf.group(1), "group": "a\x00b",
                                                   "reason": "", "note": ""})
        assert r.status_code == 303
        after = client.get(r.headers["location"])
    finally:
        client.close()
    assert "&#39;group&#39; must not contain NUL characters" in after.text
    assert queries.list_suppressions(container.monitor)["items"] == []
