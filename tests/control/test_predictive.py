"""``predictive`` and ``oracle`` on tiny synthetic traces: pre-charging before a forecast spike,
shifting to a domain with headroom, falling back to reactive without a forecast or a plan, and
never capping critical load nor tripping a breaker when the flywheel and capping suffice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattwheel.control import predictive as predictive_mod
from wattwheel.control.fast_loop import Targets, safety_loop
from wattwheel.control.planner import soc_floor
from wattwheel.control.predictive import PredictivePolicy
from wattwheel.control.registry import make_policy
from wattwheel.control.seed import SeedPolicy
from wattwheel.forecast.base import Forecast
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.sim.scenario import Scenario
from wattwheel.sim.simulator import SimResult, simulate

# Fixture factories from tests/control/conftest.py.
SiteFactory = ObsFactory = ScenarioFactory = Callable[..., Any]

SPIKE = slice(20, 24)
#: The default measurement latency: the only part of a step the fast loop has not yet seen.
LAG_BOUND_S = 1.0
LOW_SOC = ("module_energy_kwh = 1", "module_energy_kwh = 1\ninitial_soc = 0.3")


def spike_scenario(make_scenario: ScenarioFactory) -> Scenario:
    """A flat at 95 kW, then 118 kW for 4 steps (18 kW over: more than its 10 kW flywheel);
    B flat at 50 kW (50 kW of headroom). Flywheels start at SoC 0.3. Lead time 2 steps,
    plan period 2 steps, horizon 6 steps."""
    a = np.full(40, 95.0)
    a[SPIKE] = 118.0
    return make_scenario(a, np.full(40, 50.0), LOW_SOC)


def run(sc: Scenario, policy: str, forecaster: Any = None) -> SimResult:
    return simulate(sc, make_policy(policy, sc.site), forecaster=forecaster,
                    oracle=policy == "oracle")  # fmt: skip


def test_oracle_precharges_before_the_spike(make_scenario: ScenarioFactory) -> None:
    sc = spike_scenario(make_scenario)
    res = run(sc, "oracle")
    soc = res.series["soc"][:, 0]
    floor = float(soc_floor(sc.site)[0])
    # Quiet time: from its first plan on (step 2: the first plan period with a measurement
    # behind it), the planner lets A's bank coast (no charge to make up its standby loss, a
    # few Wh here), above its safety floor and well below full (lower standby loss), where
    # reactive refills to full...
    assert soc[2] >= floor - 1e-9
    np.testing.assert_allclose(soc[2:12], soc[2], atol=0.01)
    assert soc[11] < 0.5
    # ...and charges in the flat steps just before the spike, which only the forecast announces.
    assert soc[SPIKE.start - 1] > floor + 0.15
    assert np.any(res.series["kes_kw"][12 : SPIKE.start, 0] < -1.0)
    # The spike is then covered without capping, and without overload but in the measurement
    # lag: the first second of a spike step, before the fast loop has seen it (at most
    # 118 + 5 kW of charging − 100 = 23 kW over for 1 s).
    lag_s = sc.site.measurement_latency_s
    assert res.site_metrics["overload_seconds"] <= lag_s * 4 + 1e-9
    assert res.site_metrics["overload_energy_kwh"] <= 23.0 * lag_s * 4 / 3600 + 1e-9
    assert res.site_metrics["capped_energy_kwh"] == pytest.approx(0.0, abs=1e-9)
    assert res.site_metrics["critical_capped_energy_kwh"] == 0.0


def test_reactive_cannot_anticipate_and_caps_the_spike(make_scenario: ScenarioFactory) -> None:
    sc = spike_scenario(make_scenario)
    reactive, oracle = run(sc, "reactive"), run(sc, "oracle")
    # Reactive simply refills to full (its SoC does not depend on what is coming) and, with no
    # shift in flight, caps the 8 kW its 10 kW flywheel leaves during the spike - from the
    # moment it measures it, 1 s into the first spike step (a 60 s step: 59/60 of 8 kW).
    assert np.all(np.diff(reactive.series["soc"][:18, 0]) >= -1e-9)
    np.testing.assert_allclose(reactive.series["cap_kw"][SPIKE, 0], [8.0 * 59 / 60, 8, 8, 8])
    assert reactive.site_metrics["shifted_energy_kwh"] == 0.0
    assert oracle.site_metrics["cost_total"] < reactive.site_metrics["cost_total"]


def test_oracle_shifts_load_to_the_domain_with_headroom(make_scenario: ScenarioFactory) -> None:
    sc = spike_scenario(make_scenario)
    res = run(sc, "oracle")
    out_a, in_b = res.series["shift_out_kw"][:, 0], res.series["shift_in_kw"][:, 1]
    # Work leaves A and arrives in B, never the other way, and only around the spike.
    assert res.domain_metrics["A"]["shifted_energy_kwh"] > 0.0
    assert res.domain_metrics["B"]["shifted_energy_kwh"] == 0.0
    np.testing.assert_allclose(out_a, in_b)
    active = np.flatnonzero(out_a > 1e-9)
    lead_steps, horizon_steps = 2, 6
    # A shift takes effect a lead time after it is commanded, and is only commanded once the
    # spike is within the horizon: so it cannot show before spike − horizon + lead... and it is
    # wanted while the spike lasts.
    assert active.min() >= SPIKE.start - horizon_steps + lead_steps
    assert set(range(SPIKE.start, SPIKE.stop)) <= set(active.tolist())
    # B takes it within its own primary capacity.
    assert res.series["grid_kw"][:, 1].max() <= sc.site.primary_kw[1] + 1e-9


RAMP_LIMIT = ("risk_quantile = 0.9", "risk_quantile = 0.9\nmax_grid_ramp_kw_per_s = 0.1")


@pytest.mark.parametrize("ramp", [False, True])
def test_predictive_without_forecast_is_reactive(
    make_scenario: ScenarioFactory, ramp: bool
) -> None:
    a = np.full(40, 95.0)
    a[SPIKE] = 118.0
    sc = make_scenario(a, np.full(40, 50.0), LOW_SOC, *([RAMP_LIMIT] if ramp else []))
    pred, reac = run(sc, "predictive", forecaster=None), run(sc, "reactive")
    for key in ("grid_kw", "kes_kw", "cap_kw", "reserve_kw", "soc", "shift_out_kw"):
        np.testing.assert_array_equal(pred.series[key], reac.series[key], err_msg=key)
    drop = {"wall_seconds", "cost_total"}
    assert {k: v for k, v in pred.site_metrics.items() if k not in drop} == {
        k: v for k, v in reac.site_metrics.items() if k not in drop
    }


def test_predictive_decision_without_forecast_equals_reactive(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    policy = PredictivePolicy(site)
    obs = make_obs(site, (118.0, 60.0), soc=(0.4, 0.9))
    dec, state = policy.decide(obs, policy.initial_state(site), None)
    ref = safety_loop(site, obs, Targets.reactive(2))
    for key in ("kes_kw", "cap_kw", "reserve_on", "reserve_kw", "shift_out_kw", "defer_kw"):
        np.testing.assert_array_equal(getattr(dec, key), getattr(ref, key), err_msg=key)
    assert state.fallbacks == 0


def flat_forecast(
    values_kw: tuple[float, float],
    horizons_s: tuple[float, ...],
    first_kw: tuple[float, float] | None = None,
) -> Forecast:
    """The same forecast at every horizon, or ``first_kw`` for the block starting now."""
    point = np.repeat(np.array(values_kw)[:, None], len(horizons_s), axis=1) * 1000.0
    if first_kw is not None:
        point[:, 0] = np.array(first_kw) * 1000.0
    return Forecast(0.0, ("A", "B"), horizons_s, (0.05, 0.5, 0.95),
                    np.repeat(point[:, :, None], 3, axis=2), point)  # fmt: skip


def test_failed_plan_falls_back_to_reactive(
    make_site: SiteFactory, make_obs: ObsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site()
    policy = PredictivePolicy(site)
    monkeypatch.setattr(predictive_mod, "solve_plan", lambda *args, **kwargs: None)
    obs = make_obs(site, (118.0, 60.0), soc=(0.4, 0.9))
    dec, state = policy.decide(obs, policy.initial_state(site),
                               flat_forecast((130.0, 60.0), policy.horizons_s))  # fmt: skip
    ref = safety_loop(site, obs, Targets.reactive(2))
    np.testing.assert_array_equal(dec.kes_kw, ref.kes_kw)
    np.testing.assert_array_equal(dec.cap_kw, ref.cap_kw)
    np.testing.assert_array_equal(dec.reserve_on, ref.reserve_on)
    assert state.fallbacks == 1
    assert state.plan is None


def test_failed_plans_in_a_run_behave_like_reactive(
    make_scenario: ScenarioFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A is always over its primary, so every plan period needs the MILP (no quiet shortcut);
    # with every solve failing, the run is the reactive run.
    a = np.full(30, 104.0)
    a[10:14] = 118.0
    sc = make_scenario(a, np.full(30, 50.0), LOW_SOC)
    monkeypatch.setattr(predictive_mod, "solve_plan", lambda *args, **kwargs: None)
    oracle, reactive = run(sc, "oracle"), run(sc, "reactive")
    for key in ("kes_kw", "cap_kw", "reserve_kw", "shift_out_kw"):
        np.testing.assert_array_equal(oracle.series[key], reactive.series[key], err_msg=key)


def test_nan_forecast_is_refused_not_planned(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    site = make_site()
    policy = PredictivePolicy(site)
    fc = flat_forecast((float("nan"), 60.0), policy.horizons_s)
    dec, state = policy.decide(make_obs(site, (90.0, 60.0)), policy.initial_state(site), fc)
    assert state.fallbacks == 1
    assert np.all(np.isfinite(dec.kes_kw))


def test_a_plan_sees_a_forecast_spike_and_raises_the_soc_target(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # A at 95 kW now, SoC 0.3; the forecast says 95 kW for the block starting now and 118 kW
    # in every later block. The plan wants more energy in the bank at the end of the first
    # block than it has now.
    site = make_site()
    policy = PredictivePolicy(site)
    obs = make_obs(site, (95.0, 50.0), soc=(0.3, 0.3))
    fc = flat_forecast((118.0, 50.0), policy.horizons_s, first_kw=(95.0, 50.0))
    dec, state = policy.decide(obs, policy.initial_state(site), fc)
    assert state.plan is not None
    assert state.plan.soc_target[0] > 0.3 + 0.05
    assert dec.kes_kw[0] < 0.0  # charging now, within A's 5 kW headroom
    assert dec.kes_kw[0] >= -5.0 - 1e-9


# --- properties over random small traces --------------------------------------------------------

COVERABLE = ("shift_max_fraction_of_peak = 0.2", "shift_max_fraction_of_peak = 0.05")


@st.composite
def coverable_traces(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two domains, 24 steps, demand in [40, 110] kW: at most 10 kW over the 100 kW primary,
    plus at most 5 % of peak shifted in, which capping alone (half of 30 % of demand) covers."""
    n = 24
    level = st.floats(40.0, 110.0, allow_nan=False)
    a = np.array(draw(st.lists(level, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(level, min_size=n, max_size=n)))
    return a, b


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(coverable_traces())
def test_active_policies_never_cap_critical_nor_trip(
    make_scenario: ScenarioFactory, trace: tuple[np.ndarray, np.ndarray]
) -> None:
    sc = make_scenario(trace[0], trace[1], COVERABLE)
    runs = {
        "reactive": run(sc, "reactive"),
        "predictive": run(sc, "predictive", forecaster=PersistenceForecaster()),
        "oracle": run(sc, "oracle"),
    }
    for name, res in runs.items():
        m = res.site_metrics
        assert m["critical_capped_energy_kwh"] == 0.0, name
        assert m["breaker_trips"] == 0.0, name
        # Flywheel + capping cover every excess as soon as it is measured: overload only in
        # the measurement lag at the start of a step (1 s of each 60 s step at most).
        assert m["overload_seconds"] <= LAG_BOUND_S * sc.demand_kw.size + 1e-9, name


# --- forecasts that do not match the site ---------------------------------------------------------


def forecast_for(
    ids: tuple[str, ...],
    values_kw: tuple[float, ...],
    horizons_s: tuple[float, ...],
    first_kw: tuple[float, ...] | None = None,
) -> Forecast:
    point = np.repeat(np.array(values_kw)[:, None], len(horizons_s), axis=1) * 1000.0
    if first_kw is not None:
        point[:, 0] = np.array(first_kw) * 1000.0
    return Forecast(0.0, ids, horizons_s, (0.05, 0.5, 0.95),
                    np.repeat(point[:, :, None], 3, axis=2), point)  # fmt: skip


def test_forecast_rows_are_matched_to_domains_by_name(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    policy = PredictivePolicy(site)
    obs = make_obs(site, (95.0, 50.0), soc=(0.3, 0.3))
    fc = forecast_for(("B", "A"), (50.0, 118.0), policy.horizons_s, first_kw=(50.0, 95.0))
    _, state = policy.decide(obs, policy.initial_state(site), fc)
    # Same as test_a_plan_sees_a_forecast_spike_and_raises_the_soc_target, rows swapped.
    assert state.plan is not None
    assert state.plan.soc_target[0] > 0.3 + 0.05


def test_seed_matches_forecast_rows_by_name(make_site: SiteFactory, make_obs: ObsFactory) -> None:
    site = make_site()
    policy = SeedPolicy(site)
    obs = make_obs(site, (99.0, 50.0), soc=(0.6, 1.0))
    fc = forecast_for(("B", "A"), (50.0, 114.0), (120.0,))
    dec, _ = policy.decide(obs, policy.initial_state(site), fc)
    assert dec.kes_kw[0] == pytest.approx(-4.0)  # as in the hand-checked seed case


def test_forecast_missing_a_domain_falls_back_not_crashes(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    policy = PredictivePolicy(site)
    obs = make_obs(site, (118.0, 60.0), soc=(0.4, 0.9))
    fc = forecast_for(("A",), (130.0,), policy.horizons_s)
    dec, state = policy.decide(obs, policy.initial_state(site), fc)
    ref = safety_loop(site, obs, Targets.reactive(2))
    np.testing.assert_array_equal(dec.kes_kw, ref.kes_kw)
    assert state.fallbacks == 1


def test_flywheel_gives_back_no_more_than_the_load_draws(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()
    obs = make_obs(site, (2.0, 50.0), soc=(1.0, 1.0))
    base = Targets.reactive(2)
    low = Targets(np.array([0.3, 1.0]), base.reserve_arm, base.shift_out_kw, base.shift_in_kw,
                  base.defer_kw, base.repay_kw)  # fmt: skip
    dec = safety_loop(site, obs, low)
    # A draws 2 kW: the flywheel may supply at most that, leaving the grid at >= 0.
    assert 0.0 < dec.kes_kw[0] <= 2.0 + 1e-9


SMALL_CAPS = (
    ("cap_floor_fraction = 0.5", "cap_floor_fraction = 0.8"),
    ("shift_max_fraction_of_peak = 0.2", "shift_max_fraction_of_peak = 0.0"),
)


@st.composite
def spiky_traces(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Both domains near 85 kW with spikes of 1-3 steps up to 115 kW, at least 9 steps apart.
    Capping reaches only 6 % of demand (≤ 6.9 kW), so spikes need the flywheel as well
    (up to 8.1 kW of its 10 kW), and the quiet steps between them let it recharge."""
    n = 36
    out = []
    for _ in range(2):
        base = np.array(draw(st.lists(st.floats(80.0, 90.0), min_size=n, max_size=n)))
        for start in range(2, n - 3, 12):
            at = start + draw(st.integers(0, 5))
            width = draw(st.integers(1, 3))
            base[at : at + width] = draw(st.floats(100.0, 115.0))
        out.append(base)
    return out[0], out[1]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spiky_traces())
def test_flywheel_plus_capping_ride_through_spikes(
    make_scenario: ScenarioFactory, trace: tuple[np.ndarray, np.ndarray]
) -> None:
    sc = make_scenario(trace[0], trace[1], *SMALL_CAPS)
    for name in ("reactive", "predictive", "oracle"):
        forecaster = PersistenceForecaster() if name == "predictive" else None
        m = run(sc, name, forecaster=forecaster).site_metrics
        assert m["critical_capped_energy_kwh"] == 0.0, name
        assert m["breaker_trips"] == 0.0, name
        assert m["overload_seconds"] <= LAG_BOUND_S * sc.demand_kw.size + 1e-9, name
        assert m["kes_throughput_kwh"] > 0.0, name


def banded_forecast(
    mid_kw: tuple[float, float], hi_kw: tuple[float, float], horizons_s: tuple[float, ...]
) -> Forecast:
    """Median ``mid_kw`` and upper quantile ``hi_kw`` at every horizon (lower = median)."""
    n = len(horizons_s)
    mid = np.repeat(np.array(mid_kw)[:, None], n, axis=1) * 1000.0
    hi = np.repeat(np.array(hi_kw)[:, None], n, axis=1) * 1000.0
    values = np.stack([mid, mid, hi], axis=2)
    return Forecast(0.0, ("A", "B"), horizons_s, (0.05, 0.5, 0.95), values, mid)


def test_an_excess_only_the_upper_quantile_sees_keeps_energy_in_the_bank(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # The median says A stays at 90 kW (no excess); its upper quantile says 110 kW (10 kW over
    # its 100 kW feed; the 0.9 risk quantile 107.8 kW). The plan is priced on the median, but
    # the reactive floor refills A's bank for what the risk quantile shows: the safety floor
    # plus the energy of that excess in every block in sight, the feed leaving A no headroom
    # to refill it later. B's upper quantile stays far below its feed: its bank coasts.
    site = make_site()
    policy = PredictivePolicy(site)
    obs = make_obs(site, (90.0, 50.0), soc=(0.5, 0.5))
    fc = banded_forecast((90.0, 50.0), (110.0, 60.0), policy.horizons_s)
    dec, state = policy.decide(obs, policy.initial_state(site), fc)
    assert state.plan is not None
    risk_kw = 90.0 + (0.9 - 0.5) / (0.95 - 0.5) * 20.0
    block_h = site.plan_period_s / 3600.0
    excess_kwh = (risk_kw - 100.0) * block_h * len(policy.horizons_s)
    need = float(soc_floor(site)[0]) + excess_kwh / 0.95 / float(site.kes.capacity_kwh[0])
    assert 0.5 < need < 1.0
    assert dec.soc_target[0] == pytest.approx(need)
    assert dec.kes_kw[0] < 0.0  # A recharges toward it
    assert dec.soc_target[1] <= 0.5 + 1e-9  # B is not recharged: nothing in sight


def forecast_by_block(
    mid_kw: list[float], hi_kw: list[float], horizons_s: tuple[float, ...]
) -> Forecast:
    """A's median and upper quantile per block (B flat at 50 kW, far below its feed)."""
    mid = np.array([mid_kw, [50.0] * len(horizons_s)]) * 1000.0
    hi = np.array([hi_kw, [50.0] * len(horizons_s)]) * 1000.0
    values = np.stack([mid, mid, hi], axis=2)
    return Forecast(0.0, ("A", "B"), horizons_s, (0.05, 0.5, 0.95), values, mid)


@pytest.mark.parametrize("headroom_kw", [40.0, 0.5])
def test_the_floor_looks_as_far_ahead_as_refilling_takes_at_the_forecast_headroom(
    make_site: SiteFactory, make_obs: ObsFactory, headroom_kw: float
) -> None:
    # The risk quantile shows A 12.8 kW over its feed in the last block (6 minutes ahead) and
    # nothing before. A's bank at SoC 0.45 lacks about 0.22 kWh of what that excess needs on
    # top of the safety floor (SoC 0.56). With 40 kW of headroom in the block before it, the
    # bank refills that in one block at its 10 kW limit (0.31 kWh net): it may still coast
    # now. With 0.5 kW of headroom it cannot be refilled later, so it is refilled now.
    site = make_site()
    policy = PredictivePolicy(site)
    assert len(policy.horizons_s) == 3
    before = 100.0 - headroom_kw
    fc = forecast_by_block([95.0, before, 95.0], [95.0, before, 115.0], policy.horizons_s)
    obs = make_obs(site, (95.0, 50.0), soc=(0.45, 0.45))
    dec, state = policy.decide(obs, policy.initial_state(site), fc)
    assert state.plan is not None
    if headroom_kw > 10.0:
        assert dec.soc_target[0] < 0.45  # coasting: the standby loss comes off the rotor
        assert dec.kes_kw[0] >= 0.0
    else:
        assert dec.soc_target[0] == pytest.approx(0.5575, abs=1e-3)
        assert dec.kes_kw[0] < 0.0


def test_a_measured_excess_is_shifted_even_when_the_forecast_misses_it(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    # The forecast says A drops back to 95 kW, but A was measured at 118 kW (18 kW over its
    # feed, more than its 10 kW flywheel) in the last period: the plan made now moves work
    # from A to B (50 kW of headroom) from the first block the shift lead reaches.
    site = make_site()
    policy = PredictivePolicy(site)
    fc = flat_forecast((95.0, 50.0), policy.horizons_s)
    state = policy.initial_state(site)
    _, state = policy.decide(make_obs(site, (118.0, 50.0), soc=(0.3, 0.3)), state, None)
    dec, state = policy.decide(make_obs(site, (118.0, 50.0), soc=(0.3, 0.3)), state, fc)
    assert state.plan is not None
    assert dec.shift_out_kw[0] > 1.0
    assert dec.shift_in_kw[1] == pytest.approx(dec.shift_out_kw[0])
    # Without the measurement the same forecast plans nothing to move.
    fresh = policy.initial_state(site)
    dec0, _ = policy.decide(make_obs(site, (118.0, 50.0), soc=(0.3, 0.3)), fresh, fc)
    assert dec0.shift_out_kw[0] == pytest.approx(0.0)
