"""The runtime's scheduler requests follow the hook's semantics (DESIGN §8): one order per
(source, target) pair that replaces the previous one, lasting the plan period in force, booked
in the ledger only once the scheduler has it."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
import pytest
from test_loop import build

from wattwheel.control.base import Decision, Observation
from wattwheel.control.simple import ReactivePolicy
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.fakes import FakeScheduler
from wattwheel.runtime.loop import Runtime

LEAD_S = 300.0  # the test site's shift lead time (the default)


class ShiftingPolicy:
    """Reactive, plus a shift of ``level_kw`` from A to B chosen by the test."""

    name = "shifting"
    forecast_period_s = 0.0

    def __init__(self, site: SiteParams) -> None:
        self.inner = ReactivePolicy(site)
        self.level_kw = 0.0

    def initial_state(self, site: SiteParams) -> Any:
        return None

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        dec, _ = self.inner.decide(obs, state, forecast)
        out, inn = np.array([self.level_kw, 0.0]), np.array([0.0, self.level_kw])
        return dataclasses.replace(dec, shift_out_kw=out, shift_in_kw=inn), None


async def tick(rt: Runtime) -> None:
    await rt.tick()
    await asyncio.gather(*list(rt.actuator.background))


async def test_shift_orders_replace_per_pair_and_are_booked_once_delivered() -> None:
    rt, clock, _bmc, _caps, _fly = build()
    policy = ShiftingPolicy(rt.site)
    rt.policy = policy
    sched = FakeScheduler()
    rt.actuator.scheduler = sched
    period = rt.plan_period_s

    # The test site allows shifts of up to 5 kW (5 % of a 100 kW peak).
    policy.level_kw = 5.0
    await tick(rt)
    [(now, orders, _defer)] = sched.requests
    assert [(o.pair, o.kw, o.end_s - o.start_s) for o in orders] == [((0, 1), 5.0, period)]
    assert orders[0].start_s == pytest.approx(now + LEAD_S)
    clock.advance(1.0)
    await tick(rt)
    assert len(sched.requests) == 1  # same level, still in force: nothing to send
    np.testing.assert_allclose(
        rt.ledger.shifts_now(clock.now_s() + LEAD_S), ([5.0, 0.0], [0.0, 5.0])
    )

    policy.level_kw = 2.0  # a new level replaces the pair's order: 2 kW in force, not 7
    clock.advance(1.0)
    await tick(rt)
    assert sched.requests[-1][1][0].kw == 2.0
    np.testing.assert_allclose(
        rt.ledger.shifts_now(clock.now_s() + LEAD_S), ([2.0, 0.0], [0.0, 2.0])
    )

    sched.down = True  # undelivered: not booked, and due again next tick
    policy.level_kw = 3.0
    clock.advance(1.0)
    await tick(rt)
    np.testing.assert_allclose(rt.ledger.shifts_now(clock.now_s() + LEAD_S)[0], [2.0, 0.0])
    sched.down = False
    clock.advance(1.0)
    await tick(rt)
    assert sched.requests[-1][1][0].kw == 3.0
    np.testing.assert_allclose(rt.ledger.shifts_now(clock.now_s() + LEAD_S)[0], [3.0, 0.0])

    policy.level_kw = 0.0  # no longer wanted: a 0 kW order ends it
    clock.advance(1.0)
    await tick(rt)
    assert sched.requests[-1][1][0].kw == 0.0
    np.testing.assert_allclose(rt.ledger.shifts_now(clock.now_s() + LEAD_S)[0], [0.0, 0.0])

    # Renewal: a level held longer than half a period goes out again (same pair, later revision).
    policy.level_kw = 4.0
    clock.advance(1.0)
    await tick(rt)
    sent = len(sched.requests)
    clock.advance(period / 2 + 1.0)
    await tick(rt)
    assert len(sched.requests) == sent + 1
    renewed = sched.requests[-1][1][0]
    assert renewed.kw == 4.0 and renewed.revision > sched.requests[-2][1][0].revision
