"""The trace-driven virtual site behind ``wattwheel emulate`` (no sockets: a manual clock)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from wattwheel.adapters.scheduler.requests import RampLimitRequest, ShiftRequest
from wattwheel.control.base import RESERVE_OFF, RESERVE_ON, RESERVE_STARTING
from wattwheel.domain.site import parse_site
from wattwheel.domain.trace import Trace
from wattwheel.emulate.redfish.state import LimitRange, SiteState
from wattwheel.emulate.site import (
    VirtualSite,
    auto_start_step,
    control_app,
    server_shares,
)
from wattwheel.runtime.inventory import default_inventory
from wattwheel.sim.scenario import build_scenario

SITE = """
[site]
name = "v"
servers_per_rack = 4
[reserve]
capacity_kw = 30
start_delay_s = 10
min_on_s = 60
[domain_defaults.kes]
modules = 1
module_power_kw = 10
module_energy_kwh = 1
[domain_defaults.flex]
noncritical_fraction = 0.5
[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100
[[domains]]
name = "B"
racks = ["b1"]
primary_capacity_kw = 100
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(speed: float = 60.0) -> tuple[VirtualSite, Clock]:
    # Step 0: A 80 kW, B 60 kW; step 1: A 120 kW (over), B 60 kW; 5-min steps.
    power = np.array([[80_000.0, 60_000.0], [120_000.0, 60_000.0], [90_000.0, 60_000.0]])
    scenario = build_scenario(
        parse_site(SITE), Trace(np.array([0.0, 300.0, 600.0]), ("a1", "b1"), power)
    )
    inv = default_inventory(scenario.site, 1_000.0, 60_000.0)
    clock = Clock()
    site = VirtualSite(scenario, inv, speed=speed, start_step=0, clock=clock)
    servers = [s.server_id for s in inv.servers]
    racks = {r: [s for s in servers if s.startswith(r)] for r in inv.rack_ids}
    site.redfish = SiteState(servers, site, LimitRange(1_000.0, 60_000.0), racks)
    return site, clock


def test_servers_share_the_rack_trace_power_and_time_is_accelerated() -> None:
    site, clock = make(speed=60.0)
    assert server_shares(4).sum() == pytest.approx(1.0)
    assert site.rack_consumed_w("a1") == pytest.approx(80_000.0, abs=1.0)
    clock.t += 5.0  # 5 s x 60 = one 5-minute trace step
    assert site.rack_consumed_w("a1") == pytest.approx(120_000.0, abs=1.0)
    assert site.replay.step_index() == 1


def test_caps_hold_server_power_and_the_breaker_heats_when_over() -> None:
    site, clock = make()
    clock.t += 5.0
    phys = site.step()
    # (Redfish reports watts to 0.1 W.)
    np.testing.assert_allclose(phys.load_kw, [120.0, 60.0], atol=1e-3)
    np.testing.assert_allclose(phys.grid_kw, [120.0, 60.0], atol=1e-3)
    clock.t += 1.0
    assert site.step().heat[0] > 0 and site.physics.heat[1] == 0
    assert site.redfish is not None
    sid = "a1-s04"
    before = site.consumed_w(sid)
    site.redfish.set_limit(sid, 5_000.0)
    assert before > 5_000.0
    assert site.consumed_w(sid) == pytest.approx(5_000.0)


def test_reserve_starts_after_its_delay_and_keeps_its_minimum_on_time() -> None:
    site, clock = make()
    clock.t += 5.0  # A at 120 kW
    site.command_reserve("A", True, 20.0)
    assert site.reserve_status()["A"]["mode"] == RESERVE_STARTING
    clock.t += 10.0
    phys = site.step()
    assert site.reserve_status()["A"]["mode"] == RESERVE_ON
    assert phys.reserve_kw[0] == pytest.approx(20.0)
    assert phys.grid_kw[0] == pytest.approx(phys.load_kw[0] - 20.0)
    site.command_reserve("A", False, 0.0)
    assert site.reserve_status()["A"]["mode"] == RESERVE_ON  # min on-time not yet served
    clock.t += 60.0
    site.command_reserve("A", False, 0.0)
    assert site.reserve_status()["A"]["mode"] == RESERVE_OFF


def test_a_shift_request_moves_noncritical_load_between_domains() -> None:
    site, clock = make(speed=1.0)
    base_a, base_b = site.rack_consumed_w("a1"), site.rack_consumed_w("b1")
    site.accept_request(ShiftRequest("v", "A", 10_000.0, clock.t, 300.0, clock.t, to_domain="B"))
    assert site.rack_consumed_w("a1") == pytest.approx(base_a - 10_000.0, abs=1.0)
    assert site.rack_consumed_w("b1") == pytest.approx(base_b + 10_000.0, abs=1.0)
    clock.t += 301.0
    assert site.rack_consumed_w("b1") == pytest.approx(base_b, abs=1.0)


def test_auto_start_is_just_before_the_first_sustained_overload() -> None:
    power = np.array([[90.0], [110.0], [90.0], [110.0], [110.0], [110.0], [90.0]]) * 1000
    config = parse_site(SITE.replace('racks = ["b1"]', 'racks = ["b9"]')).rebound(("a1",))
    scenario = build_scenario(config, Trace(np.arange(7) * 300.0, ("a1",), power))
    assert auto_start_step(scenario, lead_steps=2, min_run=3) == 1


async def test_control_endpoints_command_the_reserve_and_take_scheduler_requests() -> None:
    import httpx

    site, _clock = make()
    transport = httpx.ASGITransport(app=control_app(site))
    async with httpx.AsyncClient(transport=transport, base_url="http://site") as http:
        r = await http.post("/reserve/A", json={"on": True, "power_kw": 5})
        assert r.status_code == 200 and r.json()["mode"] == RESERVE_STARTING
        assert (await http.post("/reserve/Z", json={"on": True})).status_code == 404
        assert (await http.post("/reserve/A", json={"on": True, "power_kw": -1})).status_code == 400
        assert (await http.post("/scheduler", content=b"{}")).status_code == 400
        status = (await http.get("/site")).json()
        assert set(status["domains"]) == {"A", "B"}


def test_a_ramp_limit_request_is_recorded_and_the_newest_wins() -> None:
    site, clock = make(speed=1.0)
    first = RampLimitRequest("v", "A", 1000.0, clock.t, 60.0, clock.t)
    assert "recorded" in site.accept_request(first)
    assert "ignored" in site.accept_request(first)  # a redelivery is not newer
    later = RampLimitRequest("v", "A", 2000.0, clock.t, 60.0, clock.t + 1.0)
    site.accept_request(later)
    assert site.ramp_limits["A"].ramp_w_per_s == 2000.0
    assert "unknown domain" in site.accept_request(replace(later, domain="Z"))
