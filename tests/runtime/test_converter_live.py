"""Live: the HPMC writes the converter loop's parameters (policy ``converter``), on change only,
and only to the domains it leads (issue 10)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from wattwheel.control.registry import make_policy
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.fakes import (
    FakeCapActuator,
    FakeFlywheel,
    FakeScheduler,
    FakeServerTelemetry,
)
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig
from wattwheel.runtime.state import LiveState, Overrides

SITE = """
[site]
name = "t"
plan_period_s = 60
horizon_min = 3
servers_per_rack = 2
max_grid_ramp_kw_per_s = 1.0

[reserve]
capacity_kw = 50
start_delay_s = 10
min_on_s = 60

[domain_defaults.kes]
modules = 1
module_power_kw = 20
module_energy_kwh = 1

[domain_defaults.flex]
noncritical_fraction = 0.5
cap_floor_fraction = 0.5

[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100

[[domains]]
name = "B"
racks = ["b1"]
primary_capacity_kw = 100
"""


def _site() -> SiteParams:
    return resolve_site(parse_site(SITE), {"A": np.array([100.0]), "B": np.array([100.0])})


def _build(
    leads: tuple[str, ...] = ("A", "B"),
) -> tuple[Runtime, FakeClock, FakeServerTelemetry, FakeFlywheel, FakeFlywheel]:
    site = _site()
    clock = FakeClock(real_monotonic=True)
    servers = {"a1-s01": ("a1", 20_000.0), "a1-s02": ("a1", 20_000.0)}
    servers.update({"b1-s01": ("b1", 15_000.0), "b1-s02": ("b1", 15_000.0)})
    bmc = FakeServerTelemetry(servers, now_s=clock.now_s())
    fly_a, fly_b = FakeFlywheel(soc=0.5), FakeFlywheel(soc=0.5)
    devices = Devices(
        telemetry={"bmc": bmc},  # type: ignore[dict-item]
        caps=FakeCapActuator(),
        flywheels={"A": fly_a, "B": fly_b},
    )
    rt = Runtime(
        site,
        make_policy("converter", site),
        devices,
        default_inventory(site, min_cap_w=1_000.0, max_cap_w=50_000.0),
        clock,
        LiveState(site.domain_names),
        Overrides(),
        config=RuntimeConfig(device_timeout_s=0.5),
    )
    rt.commandable = lambda: set(leads)
    return rt, clock, bmc, fly_a, fly_b


async def test_the_converter_gets_its_parameters_once_and_again_when_they_change() -> None:
    rt, clock, bmc, fly_a, fly_b = _build()
    await rt.tick()
    assert len(fly_a.converter_settings) == 1 and len(fly_b.converter_settings) == 1
    a = fly_a.converter_settings[0]
    assert a.ramp_limit_kw_per_s[0] == pytest.approx(1.0)
    assert a.ceiling_kw[0] == pytest.approx(40.0)  # the most the HPMC has seen A draw
    assert (a.soc_low[0], a.soc_high[0]) == (0.3, 0.7)
    # The bank's own setpoint is left at 0: the converter's loop decides its power.
    assert fly_a.setpoints_w[-1] == 0.0
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    await rt.tick()
    assert len(fly_a.converter_settings) == 1  # unchanged: not written again
    bmc.demand_w["a1-s01"] = ("a1", 30_000.0)
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    await rt.tick()
    assert len(fly_a.converter_settings) == 2
    assert fly_a.converter_settings[-1].ceiling_kw[0] == pytest.approx(50.0)
    assert len(fly_b.converter_settings) == 1


async def test_a_domain_another_instance_leads_gets_no_parameters() -> None:
    rt, _clock, _bmc, fly_a, fly_b = _build(leads=("A",))
    await rt.tick()
    assert len(fly_a.converter_settings) == 1
    assert fly_b.converter_settings == []


async def test_converter_rampup_asks_the_scheduler_for_the_job_start_ramp_and_renews_it() -> None:
    site = _site()
    clock = FakeClock(real_monotonic=True)
    bmc = FakeServerTelemetry({"a1-s01": ("a1", 20_000.0)}, now_s=clock.now_s())
    scheduler = FakeScheduler()
    rt = Runtime(
        site,
        make_policy("converter+rampup", site),
        Devices(telemetry={"bmc": bmc}, scheduler=scheduler),  # type: ignore[dict-item]
        default_inventory(site, min_cap_w=1_000.0, max_cap_w=50_000.0),
        clock,
        LiveState(site.domain_names),
        Overrides(),
        config=RuntimeConfig(device_timeout_s=0.5),
    )

    async def tick_at(t: float) -> None:
        clock.advance(t - clock.now_s())
        bmc.now_s = clock.now_s()
        await rt.tick()
        await asyncio.gather(*list(rt.actuator.background))

    start = clock.now_s()
    await tick_at(start)
    assert len(scheduler.ramp_limits) == 1
    _, levels, duration = scheduler.ramp_limits[0]
    assert levels == {"A": 1.0, "B": 1.0} and duration == site.plan_period_s
    await tick_at(start + 1.0)
    assert len(scheduler.ramp_limits) == 1  # still in force: not sent again
    await tick_at(start + site.plan_period_s / 2 + 1.0)
    assert len(scheduler.ramp_limits) == 2  # renewed before it lapses


async def test_plain_converter_asks_the_scheduler_for_nothing() -> None:
    site = _site()
    clock = FakeClock(real_monotonic=True)
    bmc = FakeServerTelemetry({"a1-s01": ("a1", 20_000.0)}, now_s=clock.now_s())
    scheduler = FakeScheduler()
    rt = Runtime(
        site,
        make_policy("converter", site),
        Devices(telemetry={"bmc": bmc}, scheduler=scheduler),  # type: ignore[dict-item]
        default_inventory(site, min_cap_w=1_000.0, max_cap_w=50_000.0),
        clock,
        LiveState(site.domain_names),
        Overrides(),
        config=RuntimeConfig(device_timeout_s=0.5),
    )
    await rt.tick()
    await asyncio.gather(*list(rt.actuator.background))
    assert scheduler.ramp_limits == []
