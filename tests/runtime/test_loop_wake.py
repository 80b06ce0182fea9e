"""The fast loop wakes on telemetry, within bounds (issue 11): a tick as soon as readings land,
at most one tick more per period, never two ticks closer than the minimum interval, and with
nothing arriving still one tick per period; a shard's phase sets where in the period it ticks.
All on the fake clock: the times asserted are the clock's, exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from sites import one_domain_site
from wattwheel.adapters.ports import MqttTelemetry
from wattwheel.control.registry import make_policy
from wattwheel.domain.telemetry import PowerSample
from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.inventory import default_inventory
from wattwheel.runtime.loop import Devices, Runtime, RuntimeConfig, TickReport
from wattwheel.runtime.shards import shard_phase_s, split_shards
from wattwheel.runtime.state import LiveState

START = 1_700_000_000.0  # a whole second: phases are read off the wall clock
STEP = 0.05


def _runtime(config: RuntimeConfig, mqtt: MqttTelemetry | None = None) -> tuple[Runtime, FakeClock]:
    site = one_domain_site("wake", servers_per_rack=2)
    clock = FakeClock(START)
    telemetry = {"mqtt": mqtt} if mqtt is not None else {}
    rt = Runtime(
        site,
        make_policy("reactive", site),
        Devices(telemetry=telemetry),  # type: ignore[arg-type]
        default_inventory(site, 100.0, 2_000.0),
        clock,
        LiveState(site.domain_names),
        config=config,
    )
    return rt, clock


async def _run(
    rt: Runtime, clock: FakeClock, until_s: float, at: dict[float, Callable[[], object]]
) -> list[tuple[float, int]]:
    """Run the loop on the fake clock in steps of STEP until ``until_s`` (relative), calling
    ``at[t]`` at time t; returns each tick's start (relative, rounded) and what it ingested."""
    starts: list[tuple[float, int]] = []
    tick = rt.tick

    async def recorded() -> TickReport:
        before = rt.state.telemetry_ingested
        t = round(clock.now_s() - START, 6)
        report = await tick()
        starts.append((t, rt.state.telemetry_ingested - before))
        return report

    rt.tick = recorded  # type: ignore[method-assign]
    running = asyncio.ensure_future(rt.run())
    k = 0
    try:
        while k * STEP <= until_s + 1e-9:
            for _ in range(40):  # let every task run up to its next sleep on the clock
                await asyncio.sleep(0)
            for t, action in at.items():
                if abs(t - k * STEP) < 1e-6:
                    action()
            for _ in range(40):
                await asyncio.sleep(0)
            k += 1
            clock.advance(START + k * STEP - clock.now_s())
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    return starts


def _times(starts: list[tuple[float, int]]) -> list[float]:
    return [round(t, 3) for t, _ in starts]


async def test_telemetry_wakes_the_tick_within_its_bounds() -> None:
    rt, clock = _runtime(
        RuntimeConfig(control_period_s=1.0, wake_on_telemetry=True, wake_min_interval_s=0.2)
    )
    arrived = rt.telemetry_arrived
    at = {
        0.1: arrived,  # 0.1 after a tick: waits for the minimum interval (0.2)
        0.3: arrived,  # one early tick spent in this period: the next one at 1.0, not 1.2
        1.05: arrived,
        1.1: arrived,  # a burst: one tick for all three, the minimum interval after 1.0
        1.15: arrived,
        4.5: arrived,  # quiet since 2.2: at once
    }
    ticks = _times(await _run(rt, clock, 5.6, at))
    assert ticks == [0.0, 0.2, 1.0, 1.2, 2.2, 3.2, 4.2, 4.5, 5.5]
    gaps = np.diff(ticks)
    assert gaps.min() >= 0.2 - 1e-9  # never faster than the minimum interval
    assert gaps.max() <= 1.0 + 1e-9  # the period stays the upper bound
    # at most one tick more per period: never three tick starts within one period
    assert all(ticks[i + 2] - ticks[i] >= 1.0 - 1e-9 for i in range(len(ticks) - 2))
    assert rt.early_ticks == 4  # 0.2, 1.0, 1.2 and 4.5


async def test_without_wake_on_telemetry_arrivals_change_nothing() -> None:
    rt, clock = _runtime(RuntimeConfig(control_period_s=1.0))
    at = {0.1: rt.telemetry_arrived, 1.3: rt.telemetry_arrived}
    assert _times(await _run(rt, clock, 3.1, at)) == [0.0, 1.0, 2.0, 3.0]
    assert rt.early_ticks == 0


async def test_a_phase_sets_where_in_the_period_the_loop_ticks() -> None:
    rt, clock = _runtime(RuntimeConfig(control_period_s=1.0, phase_s=0.35))
    assert _times(await _run(rt, clock, 3.5, {})) == [0.35, 1.35, 2.35, 3.35]


async def test_samples_pushed_to_a_source_are_acted_on_at_once() -> None:
    """serve's MQTT path: the ingester hands samples to the source's buffer, which wakes its
    poller (polled every 5 s otherwise), whose read wakes the tick: the tick right after the
    push takes the sample, not the one a period later."""
    mqtt = MqttTelemetry()
    rt, clock = _runtime(
        RuntimeConfig(control_period_s=1.0, wake_on_telemetry=True, poll_period_s={"mqtt": 5.0}),
        mqtt,
    )

    pushed: list[asyncio.Future[None]] = []

    def push() -> None:
        sample = PowerSample("mqtt:a1", "a1", None, clock.now_s(), 50_000.0, "rack")
        pushed.append(asyncio.ensure_future(mqtt.sink([sample])))

    starts = await _run(rt, clock, 2.1, {0.6: push})
    assert starts == [(0.0, 0), (0.6, 1), (1.6, 0)]


def test_shard_phases_spread_the_shards_over_the_period() -> None:
    names = [spec.split("=")[0] for spec in split_shards([f"d{i}" for i in range(20)], 10)]
    phases = sorted(shard_phase_s(n, 1.0, names) for n in names)
    np.testing.assert_allclose(phases, np.arange(10) / 10)
    lone = shard_phase_s("other", 1.0)
    assert 0.0 <= lone < 1.0 and lone == shard_phase_s("other", 1.0)
