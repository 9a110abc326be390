"""``bootwatch monitor run``'s app (create_monitor_app) serves the dashboard too:
sign-in, the security headers, CSRF refusals and the package's own static files."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from bootwatch.monitor.app import create_monitor_app
from bootwatch.monitor.container import bootstrap
from bootwatch.monitor.settings import MonitorSettings

ADMIN = "monitor-admin-token-0123456789"


def test_monitor_app_serves_the_dashboard(tmp_path: Path) -> None:
    container = bootstrap(MonitorSettings(data_dir=tmp_path, admin_tokens=(ADMIN,)))
    vm_id = container.monitor.enable("8d0e8c8a-7d3b-4c1e-9a51-0f6f4f7c2b10", name="a&b")
    client = TestClient(create_monitor_app(container), base_url="https://127.0.0.1")
    try:
        r = client.get("/ui", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        page = client.get("/ui/login")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        bad = client.post("/ui/login", data={"token": "nope", "csrf": csrf.group(1)})
        assert bad.status_code == 401
        page = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        r = client.post("/ui/login", data={"token": ADMIN, "csrf": csrf.group(1)},
                        follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
        assert ADMIN not in cookie
        overview = client.get("/ui")
        assert overview.status_code == 200
        assert "a&amp;b" in overview.text and "a&b<" not in overview.text
        assert client.post(f"/ui/vms/{vm_id}/disable", data={}).status_code == 403
        session_csrf = re.search(r'name="csrf" value="([^"]+)"', overview.text)
        assert session_csrf is not None
        r = client.post(f"/ui/vms/{vm_id}/disable", data={"csrf": session_csrf.group(1)},
                        follow_redirects=False)
        assert r.status_code == 303
        with container.monitor.read() as session:
            from sqlalchemy import select

            from bootwatch.monitor.models import VmRow

            assert session.scalars(select(VmRow.state)).all() == ["not_monitored"]
        css = client.get("/ui/static/ui.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert client.get("/ui/static/../app.py").status_code == 404
        assert client.get("/api/v1/agents", headers={"Authorization": f"Bearer {ADMIN}"}
                          ).json() == {"versions": [{"version": "", "vms": 1, "monitored": 0}]}
    finally:
        client.close()
        container.stop()
