"""Fixtures for the dashboard's browser tests.

One fleet per module (tests/ui/fleet.py: real swtpm VMs, the real embedded
server over HTTPS on loopback, SQLite) and Debian's Chromium driven by
Playwright for Python.  The browser is never downloaded: it is launched from
``/usr/bin/chromium`` (``scripts/setup`` installs the Debian package).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Fleet, build_demo_fleet, running_fleet

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, corpus: Path, lab: Any,
          ) -> Iterator[Fleet]:
    """The session lab's folder (whose swtpms the root conftest stops) holds this
    module's VMs in a sub-folder of their own."""
    work = tmp_path_factory.mktemp("ui")
    with running_fleet(work, corpus, lab.root / f"ui-{uuid.uuid4().hex[:8]}") as f:
        build_demo_fleet(f)
        yield f


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per UI test module, closed after its last test: Playwright's sync API
    keeps an event loop running in the main thread while it is open, and later tests that
    call ``asyncio.run`` (tests/scale's JetStream ones) cannot run beside it."""
    if not os.path.exists(CHROMIUM) and shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed (run scripts/setup)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (no cookies) that accepts the server's development CA."""
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        ctx.close()
