"""The dashboard in headless Chromium (Playwright, Debian's /usr/bin/chromium): served by uvicorn
with a LiveState fed by a fake producer, it renders demand vs capacity with the forecast band,
KES SoC, reserve state, rack caps and the decision log, live over SSE. Saves a screenshot (and
docs/dashboard.png when WATTWHEEL_SAVE_SCREENSHOT=1)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from api_support import OPERATOR, TOKENS, VIEWER, ServerThread, auth, feed

from wattwheel.adapters.store import MemoryStore
from wattwheel.api import create_app
from wattwheel.runtime.state import LiveState, Overrides

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.service


def _producer(state: LiveState, store: MemoryStore, stop: threading.Event) -> None:
    t0 = time.time() - 120
    for k in range(120):  # a 2-minute history at 1 s ticks, so the chart has a shape
        feed(state, store, t0 + k, k)
    while not stop.wait(1.0):
        k += 1
        feed(state, store, time.time(), k)


def test_dashboard_renders_live_data(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    state, store, stop = LiveState(["row-a", "row-b"]), MemoryStore(), threading.Event()
    app = create_app(state, store, Overrides(), TOKENS, anonymous_read=True, site_name="demo")
    producer = threading.Thread(target=_producer, args=(state, store, stop), daemon=True)
    with ServerThread(app) as srv, sync_api.sync_playwright() as pw:
        producer.start()
        pin = {"scope": "rack", "target": "row-a-r0", "cap_kw": 100.0, "reason": "hot aisle"}
        deadline = time.monotonic() + 10
        while not state.racks() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.post(f"{srv.url}/api/v1/overrides/cap", json=pin, headers=auth(OPERATOR))
        assert r.status_code == 201
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.url + "/")
            page.wait_for_function(
                "() => { const p = document.querySelector('#domain-row-a path.demand-line');"
                " return p && Number(p.dataset.points) >= 20; }",
                timeout=20_000,
            )
            page.wait_for_selector("#decisions tr.decision-row", timeout=10_000)
            page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
            first = page.inner_text("#domain-row-a .demand")
            page.wait_for_function(
                f"() => document.querySelector('#domain-row-a .demand').textContent !== '{first}'",
                timeout=10_000,
            )  # live: the value changes as the producer ticks
            card = page.inner_text("#domain-row-a")
            assert "kW" in card and "of 500 kW primary" in card and "62 %" in card
            assert page.inner_text("#domain-row-a .reserve") == "off"
            band = page.get_attribute("#domain-row-a path.forecast-band", "d")
            assert band and band.count("L") >= 5
            assert page.locator("#domain-row-b path.capacity-line").count() == 1
            assert "tick" in page.inner_text("#decisions tbody")
            assert "row-a-r0" in page.inner_text("#racks tbody")
            page.wait_for_function(
                "() => document.querySelector('#racks tbody').textContent.includes('100.00')",
                timeout=10_000,
            )  # the pinned cap arrives with the next status poll
            assert "olga pinned rack row-a-r0 at 100 kW" in page.inner_text("#events")
            assert "rack row-a-r0 pinned at 100.0 kW — olga: hot aisle" in page.inner_text(
                "#overrides"
            )
            assert errors == []
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("WATTWHEEL_SAVE_SCREENSHOT") == "1":
                (REPO / "docs").mkdir(exist_ok=True)
                shutil.copy(shot, REPO / "docs" / "dashboard.png")
        finally:
            browser.close()
            stop.set()
            producer.join(5)


def test_dashboard_keeps_tokens_out_of_urls() -> None:
    """With tokens required, the page opened as ``/#token=...`` drops the hash at once, keeps
    the token in sessionStorage only and sends it in the Authorization header, never in a URL;
    without a token it asks for one."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    state, store, stop = LiveState(["row-a", "row-b"]), MemoryStore(), threading.Event()
    app = create_app(state, store, Overrides(), TOKENS, site_name="demo")
    producer = threading.Thread(target=_producer, args=(state, store, stop), daemon=True)
    with ServerThread(app) as srv, sync_api.sync_playwright() as pw:
        producer.start()
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            urls: list[str] = []
            authorized: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.on(
                "request",
                lambda r: (
                    authorized.append(r.url)
                    if r.headers.get("authorization") == f"Bearer {VIEWER}"
                    else None
                ),
            )
            page.goto(f"{srv.url}/#token={VIEWER}")
            page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
            page.wait_for_selector("#decisions tr.decision-row", timeout=10_000)
            assert VIEWER not in page.url
            assert page.evaluate("() => sessionStorage.getItem('wattwheel_token')") == VIEWER
            assert page.evaluate("() => localStorage.getItem('wattwheel_token')") is None
            assert not [u for u in urls if VIEWER in u]
            assert any(u.endswith("/api/v1/stream") for u in authorized)
            assert any(u.endswith("/api/v1/status") for u in authorized)
            # A new tab has no token: the page asks for one instead of failing silently.
            fresh = browser.new_page()
            fresh.goto(srv.url + "/")
            fresh.wait_for_selector("#token-form", state="visible", timeout=10_000)
            fresh.fill("#token-input", VIEWER)
            fresh.click("#token-form button")
            fresh.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
        finally:
            browser.close()
            stop.set()
            producer.join(5)
