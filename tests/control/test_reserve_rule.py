"""The seed's reserve rule in the fast loop (DESIGN §8): a plan only pre-warms the reserve;
it starts when the plan expects it AND measured demand exceeds primary + flywheel + shifts,
or when load is left uncovered after capping (safety wins)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from wattwheel.control.fast_loop import Targets, safety_loop

SiteFactory = ObsFactory = Callable[..., Any]


def armed(n: int = 2) -> Targets:
    return dataclasses.replace(Targets.reactive(n), reserve_arm=np.array([True, False]))


def test_a_plan_alone_only_pre_warms(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    # A at 95 kW of its 100: the plan expects the reserve, the measurement does not need it.
    site = make_site()
    dec = safety_loop(site, make_obs(site, (95.0, 50.0)), armed())
    assert dec.reserve_on.tolist() == [False, False]
    assert dec.reserve_warm is not None and dec.reserve_warm.tolist() == [True, False]


def test_flywheel_covered_excess_does_not_start_it(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # 8 kW over, the 10 kW flywheel covers it: predicted and actual do not both exceed
    # primary + KES, so no start even though the plan armed it.
    site = make_site()
    dec = safety_loop(site, make_obs(site, (108.0, 50.0)), armed())
    assert not dec.reserve_on[0]
    np.testing.assert_allclose(dec.kes_kw[0], 8.0)


def test_predicted_and_actual_excess_beyond_flywheel_starts_it(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # 15 kW over: 10 from the flywheel, 5 beyond primary + KES. Armed by the plan: start (the
    # cap covers the 5 kW until it delivers). Not armed: the cap covers it, no start.
    site = make_site()
    obs = make_obs(site, (115.0, 50.0))
    assert safety_loop(site, obs, armed()).reserve_on.tolist() == [True, False]
    reactive = safety_loop(site, obs, Targets.reactive(2))
    assert reactive.reserve_on.tolist() == [False, False]
    assert reactive.cap_kw[0] > 4.9


def test_safety_starts_it_without_a_plan(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    # 30 kW over: flywheel 10, cap to the floor 19.5, 0.5 kW left: the breaker would heat.
    site = make_site()
    dec = safety_loop(site, make_obs(site, (130.0, 50.0)), Targets.reactive(2))
    assert dec.reserve_on.tolist() == [True, False]
    assert dec.reserve_warm is not None and not dec.reserve_warm.any()
