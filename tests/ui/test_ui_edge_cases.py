"""Edges of the dashboard's forms over real HTTP on loopback (``bootwatch monitor run``'s
app under uvicorn, SQLite): a number past 64 bits in a form or a path answered a 500
JSON body instead of the dashboard's page with a message naming the field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bwservers import ThreadServer, bound_socket

from bootwatch.monitor.app import create_monitor_app
from bootwatch.monitor.container import bootstrap
from bootwatch.monitor.settings import MonitorSettings

ADMIN = "ui-edge-admin-token-0123456789abcdef"
VM = "8D0E8C8A-7D3B-4C1E-9A51-0F6F4F7C2B10"
HUGE = "99999999999999999999"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


@pytest.fixture
def signed_in(tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    """An admin's dashboard session and its CSRF token."""
    container = bootstrap(MonitorSettings(data_dir=tmp_path, admin_tokens=(ADMIN,)))
    container.monitor.enable(VM, name="web")
    server = ThreadServer(create_monitor_app(container), bound_socket()).start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10,
                          follow_redirects=True)
    try:
        form = client.get("/ui/login")
        r = client.post("/ui/login", data={"token": ADMIN, "csrf": _csrf(form.text)})
        assert r.status_code == 200 and "web" in r.text
        yield client, _csrf(r.text)
    finally:
        client.close()
        server.stop()


def test_huge_numbers_in_dashboard_forms_get_a_message_not_a_500(
        signed_in: tuple[httpx.Client, str]) -> None:
    client, csrf = signed_in
    r = client.post(f"/ui/vms/{VM}/approve", data={"csrf": csrf, "boot": HUGE})
    assert r.status_code == 200 and "text/html" in r.headers["content-type"], r.text
    assert "&#39;boot&#39; must be a number" in r.text
    r = client.post(f"/ui/suppressions/{HUGE}/remove", data={"csrf": csrf})
    assert r.status_code == 200 and "suppression rule&#39;s id must be a number" in r.text, \
        r.text
    r = client.get(f"/ui/vms/{VM}", params={"boot": HUGE})
    assert r.status_code == 400 and "&#39;boot&#39;" in r.text, r.text
