"""The live system end to end, as a user runs it: ``wattwheel emulate`` + ``wattwheel serve`` on
the default scenario (cella-oversub) with a Mosquitto started here. Within 60 s the API returns
live decisions, ``/metrics`` exposes demand, capacity, KES SoC, reserve state and loop latency,
and the dashboard renders with data (screenshot when Chromium is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_procs import processes, start, start_emulate

from services import Mosquitto, free_port

pytestmark = pytest.mark.service

CHROMIUM = "/usr/bin/chromium"
VIEWER = "e2e-viewer-token-0123"
OPERATOR = "e2e-operator-token-0123"
MUST_SHOW_S = 60.0


@pytest.fixture
def live_system(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[str, Path, float]]:
    """(API base URL, device map, time serve was started) for a running emulate + serve."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"viewer:viewer:{VIEWER}\nop:operator:{OPERATOR}\n")
    logs = [tmp_path / "emulate.log", tmp_path / "serve.log"]
    with processes(logs) as procs:
        emulate, devices = start_emulate(
            tmp_path, ["--speed", "60", "--mqtt-url", f"127.0.0.1:{mosquitto.port}"], logs[0], 30
        )
        procs.append(emulate)
        port = free_port()
        started = time.monotonic()
        serve = ["serve", "--devices", str(devices), "--port", str(port)]
        serve += ["--db", f"sqlite:///{tmp_path / 'live.db'}", "--token-file", str(tokens)]
        serve += ["--plan-period", "10", "--history-step", "1"]
        procs.append(start(serve, logs[1], tmp_path))
        yield f"http://127.0.0.1:{port}", devices, started


def _metric(text: str, name: str, labels: str = "") -> list[float]:
    pattern = re.compile(
        rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$", re.M
    )
    return [float(m.group(2)) for m in pattern.finditer(text)]


def test_emulate_and_serve_show_live_decisions_metrics_and_dashboard(
    live_system: tuple[str, Path, float], tmp_path: Path
) -> None:
    url, devices, started = live_system
    auth = {"Authorization": f"Bearer {VIEWER}"}
    decisions: list[dict[str, object]] = []
    with httpx.Client(timeout=5.0) as http:
        while time.monotonic() - started < MUST_SHOW_S:
            try:
                r = http.get(f"{url}/api/v1/decisions", params={"limit": 30}, headers=auth)
                if r.status_code == 200:
                    decisions = r.json()["decisions"]
                    ticks = {d["timestamp_s"] for d in decisions}
                    if len(ticks) >= 5:
                        break
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.5)
        assert len({d["timestamp_s"] for d in decisions}) >= 5, "no live decisions within 60 s"
        assert {d["domain_id"] for d in decisions} == {"pdu6", "pdu7", "pdu8"}
        assert all(d["policy"] == "predictive" and d["reason"] for d in decisions)
        newest = max(float(str(d["timestamp_s"])) for d in decisions)
        assert abs(newest - time.time()) < 10, "decisions are not live"

        # Until every rack has been read once (a slow SNMP or Redfish first answer on a busy
        # machine) a domain is stale and the loop holds it safe; within the 60 s it is measured.
        domains: list[dict[str, Any]] = []
        while time.monotonic() - started < MUST_SHOW_S:
            domains = http.get(f"{url}/api/v1/domains", headers=auth).json()["domains"]
            if domains and not any(d["stale"] for d in domains):
                break
            time.sleep(0.5)
        assert domains and not any(d["stale"] for d in domains), f"still unmeasured: {domains}"
        # The emulated PDUs draw ~700 kW each; the feeds are the p97 of the trace.
        assert all(500 < d["demand_kw"] < 1000 and d["primary_kw"] > 500 for d in domains), domains
        assert all(0.0 <= d["kes_soc"] <= 1.0 for d in domains)

        metrics = http.get(f"{url}/metrics", headers=auth).text
        for name in (
            "wattwheel_demand_kw",
            "wattwheel_capacity_kw",
            "wattwheel_kes_soc",
            "wattwheel_reserve_state",
        ):
            values = _metric(metrics, name, 'domain="pdu6"')
            assert values, f"{name} missing from /metrics"
        assert _metric(metrics, "wattwheel_demand_kw", 'domain="pdu7"')[0] > 500
        assert _metric(metrics, "wattwheel_loop_latency_seconds_count")[0] >= 5
        assert _metric(metrics, "wattwheel_telemetry_ingested_total")[0] > 0

        # The emulator replays from just before the trace's first sustained overload: the
        # controller must answer it through the real devices (flywheel setpoints over Modbus,
        # caps over Redfish) and the emulated flywheel must actually discharge.
        status_url = json.loads(devices.read_text())["site_status_url"]
        acted, discharged = False, False
        while time.monotonic() - started < MUST_SHOW_S and not (acted and discharged):
            rows = http.get(f"{url}/api/v1/decisions", params={"limit": 60}, headers=auth)
            acted = acted or any(
                float(d["kes_kw"]) > 0 or float(d["cap_kw"]) > 0 for d in rows.json()["decisions"]
            )
            status = http.get(status_url).json()
            discharged = discharged or any(d["kes_kw"] > 0 for d in status["domains"].values())
            time.sleep(0.5)
        assert acted, "no decision discharged the flywheel or capped load within 60 s"
        assert discharged, "the emulated flywheel never discharged"
        assert all(d["trips"] == 0 for d in status["domains"].values())

    _screenshot(url, tmp_path)


def _screenshot(url: str, tmp_path: Path) -> None:
    # Everything above has passed; without a browser only the dashboard check is left out.
    if not Path(CHROMIUM).exists():
        warnings.warn(
            "chromium not installed at /usr/bin/chromium: dashboard not checked", stacklevel=2
        )
        return
    try:
        from playwright import sync_api
    except ImportError:
        warnings.warn("playwright not installed: dashboard not checked", stacklevel=2)
        return
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/#token={VIEWER}")
            page.wait_for_function(
                "() => { const p = document.querySelector('#domain-pdu6 path.demand-line');"
                " return p && Number(p.dataset.points) >= 3; }",
                timeout=20_000,
            )
            page.wait_for_selector("#decisions tr.decision-row", timeout=10_000)
            assert "kW" in page.inner_text("#domain-pdu6")
            shot = tmp_path / "live-dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("WATTWHEEL_SAVE_SCREENSHOT") == "1":
                repo = Path(__file__).resolve().parents[2]
                shutil.copy(shot, repo / "docs" / "live-dashboard.png")
        finally:
            browser.close()
