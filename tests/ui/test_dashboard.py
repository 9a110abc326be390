"""The dashboard in a real browser (Debian's Chromium via Playwright) against a real
``bootwatch server`` on loopback with swtpm lab VMs (tests/ui/fleet.py).

The order of the tests is the story of issue 14: sign in, see the unhealthy VM
first, open it, read the diff, approve the boot, see the alert resolved; then
acknowledge and dismiss another alert; hostile names stay text; forms without
the CSRF token are refused; the reader role cannot write.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fleet import COS_NEW, COS_OLD, HOSTILE_NAME, READER_TOKEN, Fleet, sign_in

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]


def open_alert(fleet: Fleet, vm: str, reason: str) -> dict[str, Any]:
    items = fleet.api(f"/alerts?status=open&vm={fleet.vm_ids[vm]}&reason={reason}")["items"]
    assert len(items) == 1, items
    return items[0]


def test_sign_in_shows_the_unhealthy_vm_first(context: Any, fleet: Fleet) -> None:
    page = context.new_page()
    page.goto(fleet.url + "/ui")
    assert "/ui/login" in page.url  # not signed in: sent to the sign-in form
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That is not an admin")
    sign_in(page, fleet)
    assert page.get_by_role("heading", level=1).inner_text() == "Fleet overview"
    first = page.locator("table.vms tbody tr").first
    assert first.get_by_role("link").first.inner_text() == "cos"
    assert "unhealthy" in first.inner_text()
    assert "baseline_deviation" in first.inner_text()
    # the chart says the counts to assistive technology too
    chart = page.get_by_role("img", name="VMs by state")
    assert "unhealthy: 1." in chart.locator("desc").text_content()
    assert "healthy: 2." in chart.locator("desc").text_content()


def test_vm_page_diff_then_approve_resolves_the_alert(context: Any, fleet: Fleet) -> None:
    alert = open_alert(fleet, "cos", "baseline_deviation")
    changed = [d for d in alert["diff"] if d["new_digest"]]
    assert changed
    page = context.new_page()
    sign_in(page, fleet)
    page.get_by_role("link", name="cos", exact=True).click()
    page.wait_for_url(re.compile(r".*/ui/vms/"))
    assert "unhealthy" in page.locator("section.state-box").inner_text()
    diff = page.locator("table.diff").first
    text = diff.inner_text()
    for entry in changed:
        assert f"PCR {entry['pcr']}" in text
        assert entry["new_digest"][:16] in text
        assert entry["type"] in text
    assert "EV_EFI_BOOT_SERVICES_APPLICATION" in text or "EV_IPL" in text
    # added / removed / changed are marked in words, not colour only
    marks = {d["change"] for d in alert["diff"]}
    for mark in marks:
        assert mark in text
    approve = page.get_by_role("button", name=re.compile(r"^Approve"))
    approve.first.click()
    page.wait_for_load_state()
    assert "approved as baseline variant" in page.get_by_role("status").first.inner_text()
    assert "healthy" in page.locator("section.state-box h2").inner_text()
    assert "No open alerts." in page.inner_text("main")
    # the alert page says resolved, as the API does
    page.goto(fleet.url + f"/ui/alerts/{alert['id']}")
    assert "resolved" in page.locator("#alert-facts").inner_text()
    assert fleet.api(f"/alerts/{alert['id']}")["status"] == "resolved"
    assert fleet.api(f"/vms/{fleet.vm_ids['cos']}")["state"] == "healthy"


def test_acknowledge_then_dismiss(context: Any, fleet: Fleet) -> None:
    fleet.reboot("cos-b", COS_OLD)
    assert fleet.attest("cos-b") == "permit"
    alert = open_alert(fleet, "cos-b", "baseline_deviation")
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())  # the optional confirm() of ui.js
    sign_in(page, fleet)
    page.get_by_role("link", name="Alerts", exact=True).click()
    row = page.locator("table.alerts tbody tr", has_text="cos-b")
    row.get_by_role("link").first.click()
    page.wait_for_url(re.compile(r".*/ui/alerts/"))
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_load_state()
    assert "in_progress" in page.get_by_role("status").first.inner_text()
    assert "in progress" in page.locator("#alert-facts").inner_text()
    assert fleet.api(f"/alerts/{alert['id']}")["status"] == "in_progress"
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    page.get_by_role("button", name="Dismiss").click()
    page.wait_for_load_state()
    assert "dismissed" in page.locator("#alert-facts").inner_text()
    got = fleet.api(f"/alerts/{alert['id']}")
    assert got["status"] == "dismissed"
    assert got["status_changed_by"] == "admin-token-1"
    # dismissing twice is refused by the monitor, and said so
    fleet.reboot("cos-b", COS_NEW)  # back to its approved boot
    assert fleet.attest("cos-b") == "permit"


def test_hostile_vm_name_is_text(context: Any, fleet: Fleet) -> None:
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, fleet)
    link = page.get_by_role("link", name=HOSTILE_NAME, exact=True)
    assert link.inner_text() == HOSTILE_NAME
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.content()
    link.click()
    page.wait_for_url(re.compile(r".*/ui/vms/"))
    assert page.get_by_role("heading", level=1).inner_text() == HOSTILE_NAME
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    page.goto(fleet.url + "/ui/vms/" + fleet.vm_ids["hostile"].upper())
    assert dialogs == []


def test_post_without_csrf_token_is_refused(context: Any, fleet: Fleet) -> None:
    page = context.new_page()
    sign_in(page, fleet)
    vm_id = fleet.vm_ids["cos"]
    for body in ("", "csrf=wrong-token"):
        r = page.request.post(f"{fleet.url}/ui/vms/{vm_id}/disable", data=body,
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status == 403, body
        assert "CSRF" in r.text()
    assert fleet.api(f"/vms/{vm_id}")["monitored"] is True
    # the sign-in form has its own token (no session exists yet)
    r = page.request.post(f"{fleet.url}/ui/login", data="token=x",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 403


def test_session_cookie_flags(context: Any, fleet: Fleet) -> None:
    page = context.new_page()
    sign_in(page, fleet)
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["bw_session"]
    assert session["httpOnly"] is True
    assert session["secure"] is True  # the server speaks HTTPS
    assert session["sameSite"] == "Strict"
    assert "ui-admin-token" not in session["value"]
    assert page.evaluate("document.cookie") == ""
    page.get_by_role("button", name="Sign out").click()
    page.goto(fleet.url + "/ui")
    assert "/ui/login" in page.url


def test_reader_role_is_read_only(context: Any, fleet: Fleet) -> None:
    page = context.new_page()
    sign_in(page, fleet, READER_TOKEN)
    assert "read-only" in page.locator("header").inner_text()
    page.get_by_role("link", name="cos", exact=True).click()
    page.wait_for_url(re.compile(r".*/ui/vms/"))
    assert page.get_by_role("button", name=re.compile(r"^(Approve|Disable)")).count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(f"{fleet.url}/ui/vms/{fleet.vm_ids['cos']}/disable",
                          data=f"csrf={csrf}",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 403
    assert "read-only" in r.text()


def test_readable_without_javascript_and_by_keyboard(browser: Any, fleet: Fleet) -> None:
    ctx = browser.new_context(ignore_https_errors=True, java_script_enabled=False)
    try:
        page = ctx.new_page()
        page.goto(fleet.url + "/ui/login")
        page.get_by_label("Token").focus()
        page.keyboard.type(READER_TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_url(fleet.url + "/ui")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        for path in ("/ui/alerts?status=", "/ui/recommendations", "/ui/agents",
                     "/ui/suppressions", f"/ui/vms/{fleet.vm_ids['cos']}"):
            page.goto(fleet.url + path)
            assert page.get_by_role("heading", level=1).count() == 1, path
        page.goto(fleet.url + "/ui/recommendations")
        page.get_by_role("link", name=re.compile("Secure Boot should be enabled")).click()
        assert page.get_by_role("heading", level=1).inner_text().startswith("Secure Boot")
    finally:
        ctx.close()


def test_filters_search_and_pages(context: Any, fleet: Fleet) -> None:
    page = context.new_page()
    sign_in(page, fleet)
    page.goto(fleet.url + "/ui?q=cos-")
    names = page.locator("table.vms tbody th a").all_inner_texts()
    assert names == ["cos-b"]
    page.goto(fleet.url + "/ui?q=" + fleet.vm_ids["hostile"][:8])
    assert page.locator("table.vms tbody th a").all_inner_texts() == [HOSTILE_NAME]
    page.goto(fleet.url + "/ui?state=stale")
    assert "No VM matches." in page.inner_text("main")
    r = page.goto(fleet.url + "/ui?state=bogus")
    assert r is not None and r.status == 400
    assert "'state' must be one of" in page.inner_text("main")


def test_a_replayed_attestation_and_the_operators_answer(context: Any, fleet: Fleet) -> None:
    """Last (it adds a VM): a replayed request shows as a quote_replayed alert with both
    quotes; the VM page shows the newest quote, and an admin who knows the vTPM was
    restored accepts it there (the same Monitor method as `vm accept-vtpm-rollback`)."""
    from pathlib import Path

    from bootwatch.agent.client import AttestationClient
    from bootwatch.agent.evidence import collect_evidence

    fleet.add_vm("replayer", COS_NEW)
    with fleet.lab.running("replayer") as vm:
        recorded = collect_evidence(vm.tcti, tcg_log=vm.log_path.read_bytes()).request_body()
    with AttestationClient(fleet.url, ca=Path(fleet.ca)) as client:
        client.attest_azure_guest(recorded)
    assert fleet.relay.flush()
    # a reboot (resetCount advances): the recorded request is of an earlier boot, not two
    # attestations of one boot crossing in flight (which raise nothing)
    fleet.reboot("replayer", COS_NEW)
    assert fleet.attest("replayer") == "permit"
    with AttestationClient(fleet.url, ca=Path(fleet.ca)) as client:
        client.attest_azure_guest(recorded)       # the earlier boot's request again
    assert fleet.relay.flush()
    alert = open_alert(fleet, "replayer", "quote_replayed")
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())  # the optional confirm() of ui.js
    sign_in(page, fleet)
    page.goto(fleet.url + f"/ui/vms/{fleet.vm_ids['replayer']}")
    facts = page.locator("section.state-box").inner_text()
    assert "unhealthy" in facts and "Newest quote" in facts and "TPM reset count" in facts
    assert alert["description"][:60] in page.inner_text("main")
    page.get_by_role("button", name="Accept vTPM rollback").click()
    page.wait_for_load_state()
    assert "vTPM rollback accepted" in page.get_by_role("status").first.inner_text()
    assert fleet.api(f"/alerts/{alert['id']}")["status"] == "resolved"
    assert page.get_by_role("button", name="Accept vTPM rollback").count() == 0
