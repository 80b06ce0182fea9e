"""The live loop with in-package fakes: hand-checkable ticks and every fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np
import pytest

from wattwheel.control.registry import make_policy
from wattwheel.domain.site import SiteParams, parse_site, resolve_site
from wattwheel.forecast.base import History
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.fakes import (
    FakeCapActuator,
    FakeFlywheel,
    FakeOutletActuator,
    FakeRackTelemetry,
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
servers_per_rack = 4

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


def make_site() -> SiteParams:
    config = parse_site(SITE)
    return resolve_site(config, {"A": np.array([100.0]), "B": np.array([100.0])})


# Servers s01, s02 are critical (half of 4); s03 has priority 1, s04 priority 3.
A_SERVERS = {"a1-s01": 35_000.0, "a1-s02": 35_000.0, "a1-s03": 30_000.0, "a1-s04": 30_000.0}
B_SERVERS = {"b1-s01": 20_000.0, "b1-s02": 20_000.0, "b1-s03": 20_000.0, "b1-s04": 20_000.0}


def build(
    policy: str = "reactive",
    flywheel_a: FakeFlywheel | None = None,
    extra_sources: dict[str, object] | None = None,
    forecaster: PersistenceForecaster | None = None,
    outlets: FakeOutletActuator | None = None,
    config: RuntimeConfig | None = None,
    real_monotonic: bool = True,
) -> tuple[Runtime, FakeClock, FakeServerTelemetry, FakeCapActuator, FakeFlywheel]:
    site = make_site()
    clock = FakeClock(real_monotonic=real_monotonic)
    servers = {sid: ("a1", w) for sid, w in A_SERVERS.items()}
    servers.update({sid: ("b1", w) for sid, w in B_SERVERS.items()})
    bmc = FakeServerTelemetry(servers, now_s=clock.now_s())
    caps = FakeCapActuator()
    fly_a = flywheel_a or FakeFlywheel(soc=1.0, max_discharge_w=20_000.0, max_charge_w=20_000.0)
    fly_b = FakeFlywheel(soc=1.0, max_discharge_w=20_000.0, max_charge_w=20_000.0)
    sources: dict[str, object] = {"bmc": bmc, **(extra_sources or {})}
    devices = Devices(
        telemetry=sources,  # type: ignore[arg-type]
        caps=caps,
        outlets=outlets,
        flywheels={"A": fly_a, "B": fly_b},
    )
    inv = default_inventory(site, min_cap_w=1_000.0, max_cap_w=50_000.0)
    rt = Runtime(
        site,
        make_policy(policy, site),
        devices,
        inv,
        clock,
        LiveState(site.domain_names),
        Overrides(),
        forecaster=forecaster,
        config=config or RuntimeConfig(device_timeout_s=0.2),
    )
    return rt, clock, bmc, caps, fly_a


async def test_over_capacity_discharges_kes_then_caps_only_noncritical() -> None:
    rt, _clock, _bmc, caps, fly_a = build()
    report = await rt.tick()
    # A: 130 kW on a 100 kW feed. KES gives its 20 kW, capping the other 10 (allowed: up to
    # half of the 60 kW non-critical load). B: 80 kW, within its feed, nothing to do.
    np.testing.assert_allclose(report.observation.demand_kw, [130.0, 80.0])
    np.testing.assert_allclose(report.observation.critical_kw, [70.0, 40.0])
    assert report.decision.kes_kw[0] == pytest.approx(20.0)
    assert -1.0 < report.decision.kes_kw[1] <= 0.0  # at most topping up standby losses
    np.testing.assert_allclose(report.decision.cap_kw, [10.0, 0.0], atol=1e-9)
    assert fly_a.setpoints_w == [pytest.approx(20_000.0)]
    # Budget for A's servers: 120 kW. Critical s01/s02 keep their 70 kW, uncapped; s04
    # (priority 3) gets its 30 kW before s03 (priority 1), which gets the last 20 kW.
    assert caps.caps_w == {"a1-s03": pytest.approx(20_000.0), "a1-s04": pytest.approx(30_000.0)}
    assert not any(sid.startswith("b1") for sid in caps.caps_w)
    rec = rt.state.recent_decisions(2)
    assert {r.domain_id for r in rec} == {"A", "B"}
    assert "over primary by 30.0 kW" in next(r.reason for r in rec if r.domain_id == "A")


async def test_caps_are_lifted_when_the_excess_goes_away() -> None:
    rt, clock, bmc, caps, _ = build()
    await rt.tick()
    assert caps.caps_w
    for sid in A_SERVERS:
        bmc.demand_w[sid] = ("a1", 20_000.0)
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    report = await rt.tick()
    assert report.decision.cap_kw[0] == 0.0
    assert caps.caps_w == {}


async def test_capped_servers_do_not_hide_their_demand() -> None:
    rt, clock, bmc, caps, _ = build()
    await rt.tick()
    bmc.caps_w = dict(caps.caps_w)  # the BMCs now hold s03 at 20 kW: the PDU reads 120 kW
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    report = await rt.tick()
    # The loop still sees 130 kW of demand behind its own caps and keeps them.
    assert report.observation.demand_kw[0] == pytest.approx(130.0)
    assert report.decision.cap_kw[0] == pytest.approx(10.0)


async def test_missing_forecast_means_reactive_behaviour() -> None:
    rt, clock, bmc, _, _ = build(policy="predictive")
    reactive, _, _, _, _ = build(policy="reactive")
    first = await rt.tick()
    # No forecast was ever made: the predictive policy acts exactly like the reactive one.
    ref = await reactive.tick()
    np.testing.assert_allclose(first.decision.kes_kw, ref.decision.kes_kw)
    np.testing.assert_allclose(first.decision.cap_kw, ref.decision.cap_kw)
    assert first.mode == "normal"  # within the grace period after start
    clock.advance(2 * 60.0 + 1.0)
    bmc.now_s = clock.now_s()
    later = await rt.tick()
    assert later.mode == "reactive-fallback"
    assert rt.state.mode == "reactive-fallback"


async def test_planning_loop_feeds_a_forecast_to_the_policy() -> None:
    rt, clock, bmc, _, _ = build(
        policy="predictive",
        forecaster=PersistenceForecaster(horizons_s=(60.0, 120.0, 180.0)),
        config=RuntimeConfig(device_timeout_s=0.2, history_step_s=1.0),
    )
    for _ in range(5):
        await rt.tick()
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    fc = await rt.plan_once()
    assert fc is not None
    assert fc.series_ids == ("A", "B")
    # Persistence: the point forecast is the last demand, in W.
    np.testing.assert_allclose(fc.point[:, 0], [130_000.0, 80_000.0])
    report = await rt.tick()
    assert report.mode == "normal"
    snap = rt.state.domain("A")
    assert snap is not None and len(snap.forecast) == 3


async def test_a_slow_device_does_not_delay_the_tick_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = FakeRackTelemetry({"b1": 80_000.0}, delay_s=5.0)
    rt, clock, bmc, _, _ = build(extra_sources={"slow-pdu": slow})
    caplog.set_level(logging.DEBUG, logger="wattwheel.runtime.devices")
    for _ in range(3):
        started = time.perf_counter()
        report = await rt.tick()
        assert time.perf_counter() - started < 1.0  # timeout 0.2 s, not the device's 5 s
        np.testing.assert_allclose(report.observation.demand_kw, [130.0, 80.0])
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "slow-pdu" in r.message
    ]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG and "slow-pdu" in r.message]
    assert len(warnings) == 1 and len(debugs) == 2
    assert rt.state.errors["device"] == 3
    assert sum(1 for e in rt.state.recent_events() if e.kind == "device.fault") == 1


async def test_stale_telemetry_flags_the_domain_and_holds_its_caps() -> None:
    rt, clock, _bmc, caps, _ = build()
    await rt.tick()
    held = dict(caps.caps_w)
    clock.advance(30.0)  # no fresh reading from the BMCs for 30 s (max age 5 s)
    report = await rt.tick()
    assert report.observation.stale is not None and report.observation.stale.all()
    np.testing.assert_allclose(report.observation.demand_kw, [130.0, 80.0])  # last good
    assert caps.caps_w == held
    assert rt.state.domain("A").stale  # type: ignore[union-attr]


async def test_unreachable_flywheel_floats_and_the_loop_caps_instead() -> None:
    dead = FakeFlywheel(dead=True)
    rt, _, _, caps, _ = build(flywheel_a=dead)
    report = await rt.tick()
    # Nothing expected from the bank: 30 kW over, capped 30 kW (the most allowed).
    assert report.observation.kes_max_discharge_kw[0] == 0.0
    assert report.decision.kes_kw[0] == 0.0
    assert report.decision.cap_kw[0] == pytest.approx(30.0)
    assert rt.state.errors["device"] >= 1
    assert set(caps.caps_w) == {"a1-s03", "a1-s04"}


async def test_malformed_readings_are_rejected_counted_and_ignored() -> None:
    bad = FakeRackTelemetry({"a1": float("nan"), "nowhere": 1.0})
    rt, clock, _, _, _ = build(extra_sources={"bad": bad})
    bad.now_s = clock.now_s()
    report = await rt.tick()
    np.testing.assert_allclose(report.observation.demand_kw, [130.0, 80.0])
    assert rt.state.errors["input"] == 2
    assert rt.view.rejected == {"nan": 1, "unknown": 1}


async def test_operator_pin_and_maintenance_reach_the_decision() -> None:
    rt, clock, bmc, caps, _ = build()
    now = clock.now_s()
    # A domain pin is the most the domain may draw: A demands 130 kW, pinned at 110 kW.
    rt.overrides.pin_cap("A", "domain", 110.0, "op", "test", now)
    report = await rt.tick()
    assert report.decision.cap_kw[0] == pytest.approx(20.0)
    assert sum(caps.caps_w.values()) == pytest.approx(110_000.0 - 70_000.0)  # critical: 70 kW
    rt.overrides.set_maintenance("op", "test", now)
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    report = await rt.tick()
    assert report.mode == "maintenance" and rt.state.mode == "maintenance"


async def test_breaker_heating_with_load_uncovered_sheds_noncritical_outlets_only() -> None:
    outlets = FakeOutletActuator()
    rt, clock, bmc, _, _ = build(flywheel_a=FakeFlywheel(dead=True), outlets=outlets)
    rt.ledger.heat[0] = 0.9  # the feed has been overloaded for a while
    # No flywheel and the reserve forbidden: after capping 30 kW nothing is left but shedding.
    rt.overrides.set_reserve("A", "forbid", "op", "test", clock.now_s())
    bmc.demand_w["a1-s01"] = ("a1", 45_000.0)  # 140 kW: 10 kW uncovered after capping
    report = await rt.tick()
    assert report.decision.cap_kw[0] == pytest.approx(30.0)
    assert not report.decision.reserve_on[0]
    assert report.shed, "uncovered load on a hot breaker must be shed"
    critical = {s.outlet for s in rt.inv.servers if s.critical}
    assert not set(report.shed) & critical
    assert outlets.off == set(report.shed)
    # Lowest priority first: s03 (priority 1) carries 30 kW, enough for the 10 kW.
    assert report.shed == ["a1/3"]


async def test_maintenance_mode_still_sheds_to_protect_a_hot_breaker() -> None:
    outlets = FakeOutletActuator()
    rt, clock, bmc, _, _ = build(flywheel_a=FakeFlywheel(dead=True), outlets=outlets)
    rt.ledger.heat[0] = 0.9
    rt.overrides.set_reserve("A", "forbid", "op", "test", clock.now_s())
    rt.overrides.set_maintenance("op", "UPS swap", clock.now_s())
    bmc.demand_w["a1-s01"] = ("a1", 45_000.0)  # 140 kW: 10 kW uncovered after capping
    report = await rt.tick()
    assert report.mode == "maintenance"
    assert report.shed == ["a1/3"] and outlets.off == {"a1/3"}


async def test_a_rack_pin_never_caps_critical_servers() -> None:
    # a1: critical s01 + s02 draw 70 kW; a 50 kW pin cannot be met without capping them, so
    # they stay uncapped and the non-critical servers go to their minimum caps.
    rt, clock, _, caps, _ = build()
    rt.overrides.pin_cap("a1", "rack", 50.0, "op", "test", clock.now_s())
    await rt.tick()
    critical = {s.server_id for s in rt.inv.servers if s.critical}
    assert not critical & set(caps.caps_w)
    noncritical = [s for s in rt.inv.servers if not s.critical and s.rack_id == "a1"]
    assert all(caps.caps_w[s.server_id] == s.min_cap_w for s in noncritical)


async def test_a_wiring_problem_shows_as_degraded_mode_until_cleared() -> None:
    rt, clock, bmc, _, _ = build()
    assert (await rt.tick()).mode == "normal"
    rt.state.set_degraded("device_map", "device map changed")
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    assert (await rt.tick()).mode == "degraded" and rt.state.mode == "degraded"
    assert any(e.kind == "mode" and "degraded" in e.message for e in rt.state.recent_events(5))
    rt.overrides.set_maintenance("op", "test", clock.now_s())  # an operator's mode wins
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    assert (await rt.tick()).mode == "maintenance"
    rt.overrides.clear("maintenance", "site")
    rt.state.set_degraded("device_map", None)
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    assert (await rt.tick()).mode == "normal"


async def test_no_shedding_while_the_breaker_is_cool() -> None:
    outlets = FakeOutletActuator()
    rt, clock, bmc, _, _ = build(flywheel_a=FakeFlywheel(dead=True), outlets=outlets)
    rt.overrides.set_reserve("A", "forbid", "op", "test", clock.now_s())
    bmc.demand_w["a1-s01"] = ("a1", 45_000.0)
    report = await rt.tick()
    assert report.shed == [] and outlets.off == set()


async def test_run_ticks_on_the_clock_and_flushes_to_the_sink() -> None:
    class Sink:
        def __init__(self) -> None:
            self.decisions: list[object] = []
            self.telemetry: list[object] = []
            self.events: list[object] = []

        def write_telemetry(self, samples: object) -> None:
            self.telemetry.extend(samples)  # type: ignore[call-overload]

        def write_forecast(self, forecast: object) -> None:
            pass

        def write_decisions(self, records: object) -> None:
            self.decisions.extend(records)  # type: ignore[call-overload]

        def write_event(self, event: object) -> None:
            self.events.append(event)

    rt, clock, bmc, _, _ = build()
    sink = Sink()
    rt.sink = sink
    reads = 0
    read = bmc.read

    async def counted_read() -> list[object]:
        nonlocal reads
        reads += 1
        return await read()  # type: ignore[return-value]

    bmc.read = counted_read  # type: ignore[assignment,method-assign]
    running = asyncio.ensure_future(rt.run(ticks=3))
    # Drive the fake clock one control period at a time, in lockstep: only once every task
    # (loop, pollers, flusher: 6 sleepers here) is parked on the clock again, or a loaded
    # machine's slow tick sees two periods pass at once and the poller read less often.
    parked = 6
    while not running.done():
        deadline = time.monotonic() + 30.0
        while clock.n_sleepers < parked and not running.done():
            assert time.monotonic() < deadline, f"{clock.n_sleepers} of {parked} tasks parked"
            await asyncio.sleep(0.005)
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
        await asyncio.sleep(0.005)
    await running
    assert len(sink.decisions) == 3 * 2
    # Each tick stored the full reads that arrived before it (the poller runs on its own
    # schedule, and may read again while the loop winds down): never less, never invented.
    assert len(sink.telemetry) % 8 == 0 and 3 * 8 <= len(sink.telemetry) <= reads * 8
    assert any(getattr(e, "kind", "") == "start" for e in sink.events)
    assert rt.state.latency().count == 3


async def test_a_failing_store_is_counted_and_the_loop_goes_on() -> None:
    class DeadSink:
        def write_telemetry(self, samples: object) -> None:
            raise ConnectionError("database down")

        write_forecast = write_decisions = write_event = write_telemetry

    rt, _, _, _, _ = build()
    rt.sink = DeadSink()
    await rt.tick()
    await rt.flush()
    await rt.tick()
    assert rt.state.errors["store"] == 1
    assert rt.state.latency().count == 2


def test_fake_clock_wakes_sleepers_in_order() -> None:
    async def scenario() -> list[str]:
        clock = FakeClock(0.0)
        woke: list[str] = []

        async def sleeper(name: str, s: float) -> None:
            await clock.sleep(s)
            woke.append(name)

        tasks = [
            asyncio.ensure_future(sleeper("late", 5.0)),
            asyncio.ensure_future(sleeper("early", 1.0)),
        ]
        await asyncio.sleep(0)
        clock.advance(2.0)
        await asyncio.sleep(0)
        assert woke == ["early"]
        clock.advance(3.0)
        await asyncio.gather(*tasks)
        return woke

    assert asyncio.run(scenario()) == ["early", "late"]


async def test_a_slow_planner_does_not_hold_the_tick() -> None:
    class SlowPlanner:
        """Reactive, except that planning on a forecast takes 0.4 s."""

        name = "slow"
        forecast_period_s = 60.0
        horizons_s = (60.0,)

        def __init__(self, site: SiteParams) -> None:
            self.inner = make_policy("reactive", site)
            self.plans = 0

        def initial_state(self, site: SiteParams) -> int:
            return 0

        def decide(self, obs: object, state: int, forecast: object) -> tuple[object, int]:
            if forecast is not None:
                time.sleep(0.4)
                self.plans += 1
            decision, _ = self.inner.decide(obs, None, None)  # type: ignore[arg-type]
            return decision, state + (forecast is not None)

    rt, clock, bmc, _, _ = build(config=RuntimeConfig(device_timeout_s=0.2, plan_in_tick_s=0.05))
    policy = SlowPlanner(rt.site)
    rt.policy = policy  # type: ignore[assignment]
    rt.decider.policy_state = 0
    rt.decider.fresh_forecast = object()  # type: ignore[assignment]
    started = time.perf_counter()
    await rt.tick()
    assert time.perf_counter() - started < 0.3  # acted reactively, planning goes on
    await asyncio.sleep(0.5)
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    await rt.tick()
    assert policy.plans == 1 and rt.decider.policy_state == 1  # the finished plan was adopted


async def test_an_instance_that_does_not_lead_a_domain_commands_nothing_there() -> None:
    rt, _, _, caps, fly_a = build()
    rt.commandable = lambda: {"B"}  # another instance leads A
    report = await rt.tick()
    assert report.decision.cap_kw[0] > 0  # it still decides (and shows) what A needs...
    assert fly_a.setpoints_w == [] and caps.caps_w == {}  # ...but writes nothing to A
    rt.commandable = lambda: {"A", "B"}
    await rt.tick()
    assert fly_a.setpoints_w and set(caps.caps_w) == {"a1-s03", "a1-s04"}


async def test_database_outage_loses_no_acknowledged_row() -> None:
    from wattwheel.adapters.store import BufferedStore, MemoryStore

    inner = MemoryStore()
    store = BufferedStore(inner, retry_initial_s=0.0, retry_max_s=0.0)
    rt, clock, bmc, _, _ = build()
    rt.sink = store
    inner.available = False  # the database goes down
    for _ in range(3):
        await rt.tick()
        await rt.flush()
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    assert store.pending_items > 0 and rt.state.latency().count == 3
    inner.available = True  # back
    await rt.tick()
    await rt.flush()
    assert inner.counts()["decisions"] == 4 * 2  # every tick's rows, in order, none lost
    assert inner.counts()["telemetry"] == 4 * 8


async def test_a_refused_cap_is_not_counted_as_in_force_and_is_retried() -> None:
    rt, clock, bmc, caps, _ = build()
    caps.dead = True
    await rt.tick()
    assert caps.writes == 2 and np.isnan(rt.view.caps_w).all()
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    report = await rt.tick()
    assert caps.writes == 4  # asked again
    assert report.observation.demand_kw[0] == pytest.approx(130.0)  # nothing held back
    caps.dead = False
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    await rt.tick()
    assert set(caps.caps_w) == {"a1-s03", "a1-s04"}


async def test_pollers_on_their_own_thread_feed_the_ticks_and_stop_with_the_loop() -> None:
    import threading

    from wattwheel.runtime.clock import SystemClock

    site = make_site()
    pdus = FakeRackTelemetry({"a1": 90_000.0, "b1": 80_000.0})
    clock = SystemClock()

    class Stamped:
        async def read(self) -> list[object]:
            pdus.now_s = clock.now_s()
            return await pdus.read()  # type: ignore[return-value]

    rt = Runtime(
        site,
        make_policy("reactive", site),
        Devices(telemetry={"pdus": Stamped()}),  # type: ignore[dict-item]
        default_inventory(site, 1_000.0, 50_000.0),
        clock,
        config=RuntimeConfig(control_period_s=0.05, poll_in_thread=True),
    )
    await rt.run(ticks=20)
    assert rt.state.telemetry_ingested > 0
    snap = rt.state.domain("A")
    assert snap is not None and snap.demand_kw == pytest.approx(90.0)
    assert not any(t.name == "wattwheel-pollers" for t in threading.enumerate())


async def test_a_rack_pin_limits_the_rack_and_the_tick_stays_normal() -> None:
    rt, clock, _bmc, caps, fly_a = build()
    # Rack b1 (80 kW, 40 kW critical) may draw at most 60 kW.
    rt.overrides.pin_cap("b1", "rack", 60.0, "op", "hot aisle", clock.now_s())
    report = await rt.tick()
    assert report.mode == "normal" and rt.state.tick_failures == 0
    b1_caps = {sid: w for sid, w in caps.caps_w.items() if sid.startswith("b1")}
    assert set(b1_caps) == {"b1-s03", "b1-s04"}  # never the critical servers
    assert sum(b1_caps.values()) == pytest.approx(60_000.0 - 40_000.0)
    assert fly_a.setpoints_w == [pytest.approx(20_000.0)]  # the rest of the tick went on
    assert len(rt.state.recent_decisions(2)) == 2


async def test_a_tick_that_raises_acts_on_the_reactive_loop_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wattwheel.api.metrics import StateCollector
    from wattwheel.runtime import actuate

    real_plan_caps = actuate.plan_caps

    def broken(inv, demand_w, cap_kw, pins=None, guessed=None):  # type: ignore[no-untyped-def]
        if pins:
            raise ValueError("operands could not be broadcast together")
        return real_plan_caps(inv, demand_w, cap_kw, pins, guessed)

    monkeypatch.setattr(actuate, "plan_caps", broken)
    rt, clock, bmc, caps, fly_a = build()
    rt.overrides.pin_cap("b1", "rack", 60.0, "op", "hot aisle", clock.now_s())
    for _ in range(3):
        report = await rt.tick()
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    # Every tick still commanded the flywheel and A's reactive caps, and recorded decisions.
    assert report.mode == "tick-fallback" and rt.state.mode == "tick-fallback"
    assert len(fly_a.setpoints_w) == 3
    assert caps.caps_w == {"a1-s03": pytest.approx(20_000.0), "a1-s04": pytest.approx(30_000.0)}
    assert {r.mode for r in rt.state.recent_decisions(6)} == {"tick-fallback"}
    assert rt.state.tick_failures == 3
    kinds = [e.kind for e in rt.state.recent_events()]
    assert "tick.fault" in kinds
    assert any("-> tick-fallback" in e.message for e in rt.state.recent_events())
    metrics = {
        (s.name, tuple(s.labels.items())): s.value
        for m in StateCollector(rt.state, rt.overrides).collect()
        for s in m.samples
    }
    assert metrics[("wattwheel_tick_failures_total", ())] == 3.0
    assert metrics[("wattwheel_mode", (("mode", "tick-fallback"),))] == 1.0
    # The cause goes away: the next tick is normal again.
    rt.overrides.clear("pin_cap", "b1")
    report = await rt.tick()
    assert rt.state.mode == "normal"


async def test_a_failing_tick_keeps_the_period(monkeypatch: pytest.MonkeyPatch) -> None:
    rt, clock, bmc, _, fly_a = build(real_monotonic=False)  # the schedule in virtual time

    async def boom(*args: object, **kwargs: object) -> object:
        raise RuntimeError("decider bug")

    monkeypatch.setattr(rt.decider, "decide", boom)
    running = asyncio.ensure_future(rt.run(ticks=5))
    while not running.done():  # drive the fake clock: one control period at a time
        await asyncio.sleep(0.01)
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    await running
    assert rt.state.tick_failures == 5 and rt.state.mode == "tick-fallback"
    stamps = sorted({r.timestamp_s for r in rt.state.recent_decisions(100)})
    assert len(stamps) == 5 and np.allclose(np.diff(stamps), 1.0)  # one decision per period
    assert len(fly_a.setpoints_w) >= 5  # the reactive loop commanded the flywheel each tick


async def test_a_background_task_that_crashes_is_restarted_and_shown() -> None:
    class BrokenSource:
        """A telemetry adapter with a bug: returns None instead of a list."""

        async def read(self) -> None:
            return None

    from wattwheel.api.routes import status_route
    from wattwheel.runtime.state import jsonable

    rt, clock, bmc, _, _ = build(extra_sources={"broken": BrokenSource()})
    running = asyncio.ensure_future(rt.run(ticks=4))
    while not running.done():
        await asyncio.sleep(0.01)
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    await running
    tasks = {t["name"]: t for t in rt.state.tasks()} if rt.state.tasks else {}
    assert tasks["poller:broken"]["restarts"] >= 1
    assert "TypeError" in str(tasks["poller:broken"]["last_error"])
    assert tasks["poller:bmc"]["restarts"] == 0 and tasks["planner"]["restarts"] == 0
    assert rt.state.errors["task"] >= 1
    assert any(e.kind == "task.crash" for e in rt.state.recent_events())
    assert rt.state.latency().count == 4  # the ticks went on

    class Ctx:
        state, overrides, site_name = rt.state, rt.overrides, "t"

        @staticmethod
        def clock() -> float:
            return clock.now_s()

        @staticmethod
        def store_health() -> dict[str, float]:
            return {}

    shown = jsonable(status_route(Ctx)()["tasks"])  # type: ignore[arg-type]
    assert any(t["name"] == "poller:broken" and t["restarts"] >= 1 for t in shown)


class _RecordingPersistence(PersistenceForecaster):
    """Persistence that records its explicit calibration updates."""

    def __init__(self) -> None:
        super().__init__(horizons_s=(60.0, 120.0, 180.0))
        self.updates: list[float] = []

    def update(self, history: History, horizons_s: Sequence[float] = ()) -> None:
        self.updates.append(history.end_s)
        super().update(history, horizons_s)


async def test_the_planning_loop_updates_calibration_explicitly_after_forecasting() -> None:
    fc_model = _RecordingPersistence()
    rt, clock, bmc, _, _ = build(
        policy="predictive",
        forecaster=fc_model,
        config=RuntimeConfig(device_timeout_s=0.2, history_step_s=1.0),
    )
    for _ in range(5):
        await rt.tick()
        clock.advance(1.0)
        bmc.now_s = clock.now_s()
    fc = await rt.plan_once()
    assert fc is not None
    assert fc_model.updates == [fc.issued_at_s]  # once per forecast, with the same history


async def test_samples_their_source_stored_are_used_but_not_stored_again() -> None:
    from wattwheel.adapters.store import MemoryStore

    store = MemoryStore()
    rt, clock, bmc, _, _ = build()
    rt.sink = store
    await rt.tick()
    await rt.flush()
    per_tick = store.counts()["telemetry"]
    assert per_tick == 8
    bmc.stores_samples = True  # e.g. MQTT behind a durable store: stored before its PUBACK
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    report = await rt.tick()
    await rt.flush()
    assert store.counts()["telemetry"] == per_tick  # not stored a second time...
    assert rt.state.telemetry_ingested == 2 * per_tick  # ...but used
    assert report.observation.demand_kw[0] > 0
