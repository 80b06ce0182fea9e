"""Cap pins as an operator sets them on the live system (``wattwheel emulate`` + ``wattwheel
serve`` on the default scenario, a Mosquitto started here): a rack pin below the critical load
the rack carries is refused with 409 naming that load; a pin above it is accepted, the
controller plans the rack's caps to add up to the pin ("the most this rack may draw") and the
loop keeps ticking in mode ``normal``. (Whether the draw then follows depends on the emulated
BMCs taking the caps in time; the measured draw is printed, not asserted.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_procs import processes, start, start_emulate

from services import Mosquitto, free_port

pytestmark = pytest.mark.service

VIEWER = "pins-viewer-token-0123"
OPERATOR = "pins-operator-token-0123"
RACK = "cella_pdu7"


@pytest.fixture
def live(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[str]:
    (tmp_path / "tokens").write_text(f"v:viewer:{VIEWER}\no:operator:{OPERATOR}\n")
    logs = [tmp_path / "emulate.log", tmp_path / "serve.log"]
    with processes(logs) as procs:
        emulate, devices = start_emulate(
            tmp_path, ["--speed", "60", "--mqtt-url", f"127.0.0.1:{mosquitto.port}"], logs[0]
        )
        procs.append(emulate)
        port = free_port()
        serve = ["serve", "--devices", str(devices), "--port", str(port)]
        serve += ["--db", f"sqlite:///{tmp_path / 'live.db'}"]
        serve += ["--token-file", str(tmp_path / "tokens"), "--policy", "reactive"]
        procs.append(start(serve, logs[1], tmp_path))
        yield f"http://127.0.0.1:{port}"


def _get(url: str, path: str) -> Any:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {VIEWER}"}, timeout=5).json()


def _rack(url: str) -> dict[str, Any] | None:
    try:
        racks = _get(url, "/api/v1/racks")["racks"]
    except (httpx.TransportError, KeyError):
        return None
    return next((r for r in racks if r["rack_id"] == RACK and r["power_kw"] > 0), None)


def _pin(url: str, cap_kw: float) -> httpx.Response:
    body = {"scope": "rack", "target": RACK, "cap_kw": cap_kw, "reason": "e2e pin", "ttl_s": 600}
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    return httpx.post(url + "/api/v1/overrides/cap", json=body, headers=headers, timeout=5)


def test_rack_pins_on_the_live_system(live: str) -> None:
    deadline = time.monotonic() + 90
    rack = _rack(live)
    while rack is None and time.monotonic() < deadline:
        time.sleep(0.5)
        rack = _rack(live)
    assert rack is not None, "no rack reading within 90 s"
    draw_kw = float(rack["power_kw"])
    # 70 % of the default site's servers are critical: a pin at half the draw would cap them.
    r = _pin(live, round(0.5 * draw_kw))
    assert r.status_code == 409, r.text
    assert f"rack {RACK} carries" in r.json()["detail"]
    assert "of critical load" in r.json()["detail"]
    # 5 % below the draw: non-critical capping alone can meet it.
    pin_kw = round(0.95 * draw_kw)
    assert _pin(live, pin_kw).status_code == 201
    ticks0 = _get(live, "/api/v1/status")["loop_latency_ms"]["count"]
    planned = None
    deadline = time.monotonic() + 30
    while planned is None and time.monotonic() < deadline:
        time.sleep(1.0)
        rack = _rack(live)
        if rack is not None and rack["pinned_cap_kw"] == pin_kw and rack["cap_kw"] is not None:
            planned = float(rack["cap_kw"])
    deadline = time.monotonic() + 20
    status = _get(live, "/api/v1/status")
    while status["loop_latency_ms"]["count"] <= ticks0 + 5 and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _get(live, "/api/v1/status")
    print(
        f"\nrack {RACK}: draw {draw_kw:.1f} kW, pin {pin_kw} kW, planned caps {planned} kW, "
        f"draw now {rack and rack['power_kw']} kW"
    )
    assert planned is not None and planned <= pin_kw + 0.5, rack
    assert status["mode"] == "normal", status
    assert status["loop_latency_ms"]["count"] > ticks0 + 5
