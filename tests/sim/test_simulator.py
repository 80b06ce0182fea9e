"""The simulation loop on tiny synthetic traces: deterministic, the DESIGN §2 metric names,
per-domain figures adding up to the site's, a power balance that closes at every step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.control.base import Decision, Observation
from wattwheel.control.registry import POLICIES, make_policy
from wattwheel.domain.metrics import EXTENSIVE, cost_total
from wattwheel.domain.site import SiteParams, parse_site
from wattwheel.domain.trace import Trace
from wattwheel.forecast.base import Forecast, History
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.sim.scenario import Scenario, build_scenario
from wattwheel.sim.simulator import SimResult, Timing, simulate

TINY = (Path(__file__).resolve().parents[1] / "data" / "sites" / "tiny.toml").read_text()
DT_S = 60.0
DESIGN_NAMES = {
    "reserve_energy_kwh", "reserve_activations", "reserve_seconds", "overload_energy_kwh",
    "overload_seconds", "breaker_trips", "capped_energy_kwh", "critical_capped_energy_kwh",
    "shifted_energy_kwh", "deferred_energy_kwh", "kes_losses_kwh", "kes_throughput_kwh",
    "kes_equivalent_cycles", "peak_grid_kw", "max_grid_ramp_kw_per_s", "cost_total", "steps",
    "wall_seconds", "reserve_machine_starts", "reserve_warm_seconds",
}  # fmt: skip


def scenario(a_kw: np.ndarray, b_kw: np.ndarray, text: str = TINY) -> Scenario:
    ts = 1.7e9 + np.arange(a_kw.size) * DT_S
    power_w = np.column_stack([a_kw * 500.0, a_kw * 500.0, b_kw * 1000.0])
    return build_scenario(parse_site(text), Trace(ts, ("a1", "a2", "b1"), power_w))


def wavy(n: int = 48, seed: int = 3) -> Scenario:
    """A swings 70-125 kW (up to 25 kW over its primary), B 40-105 kW."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = 97.0 + 28.0 * np.sin(t / 5.0) + rng.normal(0, 2, n)
    b = 72.0 + 33.0 * np.sin(t / 7.0 + 1.0) + rng.normal(0, 2, n)
    return scenario(np.maximum(a, 0), np.maximum(b, 0))


def run(sc: Scenario, policy: str) -> SimResult:
    forecaster = PersistenceForecaster() if policy == "predictive" else None
    return simulate(sc, make_policy(policy, sc.site), forecaster=forecaster,
                    oracle=policy == "oracle")  # fmt: skip


def without_wall(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if k != "wall_seconds"}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_same_inputs_same_metrics(policy: str) -> None:
    sc = wavy()
    first, second = run(sc, policy), run(sc, policy)
    assert without_wall(first.site_metrics) == without_wall(second.site_metrics)
    for dom in sc.site.domain_names:
        assert without_wall(first.domain_metrics[dom]) == without_wall(second.domain_metrics[dom])
    np.testing.assert_array_equal(first.series["grid_kw"], second.series["grid_kw"])


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_metric_keys_are_exactly_the_design_names(policy: str) -> None:
    res = run(wavy(24), policy)
    assert set(res.site_metrics) == DESIGN_NAMES
    assert set(res.domain_metrics) == {"A", "B"}
    for metrics in res.domain_metrics.values():
        assert set(metrics) == DESIGN_NAMES
    assert res.policy == policy
    assert res.site_metrics["steps"] == 24


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_domains_add_up_to_the_site_and_cost_is_the_weighted_sum(policy: str) -> None:
    sc = wavy()
    res = run(sc, policy)
    for name in EXTENSIVE:
        total = sum(m[name] for m in res.domain_metrics.values())
        assert res.site_metrics[name] == pytest.approx(total, abs=1e-9), name
    assert res.site_metrics["cost_total"] == pytest.approx(
        cost_total(res.site_metrics, sc.site.costs)
    )
    assert res.site_metrics["peak_grid_kw"] == pytest.approx(
        float(res.series["grid_kw"].sum(axis=1).max())
    )


def test_the_wavy_trace_exercises_every_mechanism() -> None:
    # Guard against a vacuous suite: under `none` the excess goes to the reserve and overloads
    # during its start; reactive uses the flywheel and caps.
    sc = wavy()
    none, reactive = run(sc, "none"), run(sc, "reactive")
    assert none.site_metrics["reserve_activations"] >= 1
    assert none.site_metrics["overload_energy_kwh"] > 0
    assert reactive.site_metrics["kes_throughput_kwh"] > 0
    assert reactive.site_metrics["capped_energy_kwh"] > 0
    assert reactive.site_metrics["overload_energy_kwh"] < none.site_metrics["overload_energy_kwh"]


def test_none_runs_on_a_site_without_flywheels() -> None:
    res = run(wavy(), "none")
    np.testing.assert_allclose(res.series["soc"], 0.0)
    assert res.site_metrics["kes_losses_kwh"] == 0.0


def test_predictive_records_solver_times() -> None:
    sc = wavy()
    res = run(sc, "oracle")
    # At most one solve per plan period (120 s = 2 steps) over 48 steps; quiet periods (all
    # under primary over the horizon) are planned in closed form, without the solver.
    assert 0 < len(res.solver_seconds) <= 24
    assert all(s >= 0 for s in res.solver_seconds)
    assert run(sc, "reactive").solver_seconds == []


def test_progress_reports_the_last_step() -> None:
    seen: list[int] = []
    sc = wavy(30)
    simulate(sc, make_policy("reactive", sc.site), progress=seen.append)
    assert seen[0] == 1 and seen[-1] == 30


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.floats(0.0, 160.0), min_size=12, max_size=12),
    st.lists(st.floats(0.0, 160.0), min_size=12, max_size=12),
    st.sampled_from(sorted(POLICIES)),
)
def test_power_balance_closes_every_step(a: list[float], b: list[float], policy: str) -> None:
    """grid = demand − shifted out + shifted in − capped − deferred + repaid − KES − reserve."""
    res = run(scenario(np.array(a), np.array(b)), policy)
    s = res.series
    expected = (
        s["demand_kw"] - s["shift_out_kw"] + s["shift_in_kw"] - s["cap_kw"] - s["defer_kw"]
        + s["repay_kw"] - s["kes_kw"] - s["reserve_kw"]
    )  # fmt: skip
    np.testing.assert_allclose(s["grid_kw"], expected, atol=1e-9)
    assert np.all((s["soc"] >= 0.0) & (s["soc"] <= 1.0))
    assert res.site_metrics["critical_capped_energy_kwh"] == 0.0 or policy == "none"


class SpyForecaster:
    """Persistence that records what history it was shown."""

    name = "spy"

    def __init__(self) -> None:
        self.inner = PersistenceForecaster()
        self.seen: list[tuple[float, int]] = []

    def fit(self, history: History) -> None:
        self.inner.fit(history)

    def predict(
        self, history: History, horizons_s: Sequence[float], future_exog: Any = None
    ) -> Forecast:
        self.seen.append((history.end_s, history.values.shape[0]))
        return self.inner.predict(history, horizons_s)


class SpyPolicy:
    """Reactive decisions; records the forecasts and observation times it gets."""

    name = "spy"
    uses_kes = True

    def __init__(self, site: SiteParams) -> None:
        self.inner = make_policy("reactive", site)
        self.forecast_period_s = 120.0
        self.horizons_s = (120.0, 240.0)
        self.got: list[tuple[float, Forecast | None]] = []

    def initial_state(self, site: SiteParams) -> Any:
        return None

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        self.got.append((obs.now_s, forecast))
        return self.inner.decide(obs, state, None)


def test_the_forecaster_never_sees_the_future() -> None:
    sc = wavy(20)
    spy = SpyForecaster()
    policy = SpyPolicy(sc.site)
    simulate(sc, policy, forecaster=spy)
    times = [t for t, fc in policy.got if fc is not None]
    # Every plan period (2 steps) from the first with a measurement behind it, with the
    # history measured 1 s before (the default latency): every step before now, not now's.
    assert times == [float(sc.timestamps_s[t]) for t in range(2, 20, 2)]
    for (end_s, rows), now_s in zip(spy.seen, times, strict=True):
        assert end_s == now_s - DT_S
        assert rows == int((now_s - sc.timestamps_s[0]) / DT_S)


def test_a_latency_longer_than_a_step_hides_more_history() -> None:
    # 90 s of latency on 60 s steps: at step t the newest step measured is t − 2; the fast
    # loop acts on step t − 1's demand (for the first 30 s of the step, on t − 2's decision).
    sc = wavy(12)
    spy = SpyForecaster()
    policy = SpyPolicy(sc.site)
    simulate(sc, policy, forecaster=spy, measurement_latency_s=90.0)
    planned = [now_s for now_s, fc in policy.got if fc is not None]
    assert len(planned) == len(spy.seen) > 0
    for (end_s, _), now_s in zip(spy.seen, planned, strict=True):
        assert end_s == now_s - 2 * DT_S
    timing = Timing.of(90.0, DT_S)
    assert (timing.fast_lag_steps, timing.lag_s, timing.plan_lag_steps) == (1, 30.0, 2)
    assert Timing.of(1.0, 300.0) == Timing(0, 1.0, 1)
    assert Timing.of(1.0, 1.0) == Timing(1, 0.0, 1)
    assert Timing.of(0.0, 60.0) == Timing(0, 0.0, 1)
    with pytest.raises(ValueError, match="latency"):
        Timing.of(-1.0, 60.0)


def test_the_fast_loop_sees_demand_one_latency_late() -> None:
    sc = wavy(10)
    seen: list[float] = []

    class Recorder(SpyPolicy):
        def decide(
            self, obs: Observation, state: Any, forecast: Forecast | None
        ) -> tuple[Decision, Any]:
            seen.append(float(obs.demand_kw[0]))
            return super().decide(obs, state, forecast)

    simulate(sc, Recorder(sc.site))
    np.testing.assert_allclose(seen, sc.demand_kw[:, 0])  # 1 s < a step: this step's demand
    seen.clear()
    simulate(sc, Recorder(sc.site), measurement_latency_s=60.0)
    np.testing.assert_allclose(seen, np.r_[sc.demand_kw[0, 0], sc.demand_kw[:-1, 0]])


def plan_at(sc: Scenario, step: int) -> Any:
    """The plan ``predictive`` (persistence forecasts) holds after deciding at ``step``."""
    policy = make_policy("predictive", sc.site)
    got: dict[str, Any] = {}
    decide = policy.decide
    when = float(sc.timestamps_s[step])

    def spy(obs: Observation, state: Any, fc: Forecast | None) -> Any:
        dec, new_state = decide(obs, state, fc)
        if abs(obs.now_s - when) < 1e-6:
            got["plan"] = new_state.plan
        return dec, new_state

    policy.decide = spy  # type: ignore[method-assign]
    simulate(sc, policy, forecaster=PersistenceForecaster())
    return got["plan"]


def test_a_plan_never_depends_on_the_demand_it_will_meet() -> None:
    """Issue 9 item 1: two traces equal up to step t − 1 and different from t on give the
    same plan at t (shift levels, SoC target, reserve arming): what a plan decides at t is
    made from measurements before t and forecasts, never from step t's demand. (The fast
    loop's decision at t does see step t's demand, 1 s late.)"""
    base = wavy(30)
    t = 12  # a plan step (plan period 2 steps)
    a, b = base.demand_kw[:, 0].copy(), base.demand_kw[:, 1].copy()
    a2, b2 = a.copy(), b.copy()
    a2[t:] += 40.0
    b2[t:] -= 30.0
    first, second = plan_at(scenario(a, b), t), plan_at(scenario(a2, b2), t)
    assert first is not None and second is not None
    np.testing.assert_allclose(first.soc_target, second.soc_target)
    np.testing.assert_allclose(first.shift_out_kw, second.shift_out_kw)
    np.testing.assert_allclose(first.shift_in_kw, second.shift_in_kw)
    np.testing.assert_array_equal(first.reserve_arm, second.reserve_arm)
    # ...while a change one step earlier (measured by then) does move the plan.
    a3 = a.copy()
    a3[t - 1 :] += 40.0
    third = plan_at(scenario(a3, b), t)
    assert not np.allclose(first.soc_target, third.soc_target) or not np.allclose(
        first.shift_out_kw, third.shift_out_kw
    )


def test_the_oracle_forecast_is_the_worst_true_demand_of_each_block() -> None:
    sc = wavy(20)
    policy = SpyPolicy(sc.site)
    simulate(sc, policy, oracle=True)
    now_s, fc = next((t, f) for t, f in policy.got if f is not None and t > sc.timestamps_s[0])
    assert fc is not None
    t = int((now_s - sc.timestamps_s[0]) / DT_S)
    # Issued from the newest measured step (t − 1), like a forecaster's: horizon 120 s covers
    # steps t..t+1 (the plan's first block), horizon 240 s steps t+2..t+3 (in W).
    assert fc.issued_at_s == float(sc.timestamps_s[t - 1])
    np.testing.assert_allclose(fc.point[:, 0], sc.demand_kw[t : t + 2].max(axis=0) * 1000)
    np.testing.assert_allclose(fc.point[:, 1], sc.demand_kw[t + 2 : t + 4].max(axis=0) * 1000)
    assert fc.series_ids == sc.site.domain_names


NO_SHIFT = TINY.replace("shift_max_fraction_of_peak = 0.2", "shift_max_fraction_of_peak = 0.0")
RAMP = NO_SHIFT.replace("risk_quantile = 0.9", "risk_quantile = 0.9\nmax_grid_ramp_kw_per_s = 0.1")


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 1.0, 3.0, 50.0, 95.0, 120.0]), min_size=16, max_size=16),
    st.lists(st.sampled_from([0.0, 2.0, 60.0, 110.0]), min_size=16, max_size=16),
    st.sampled_from(sorted(POLICIES)),
    st.booleans(),
)
def test_the_flywheel_never_exports(
    a: list[float], b: list[float], policy: str, ramp: bool
) -> None:
    """Near-idle domains next to busy ones, with and without a ramp limit: the grid draw is
    never negative (the bank supplies the load, it does not feed the utility)."""
    res = run(scenario(np.array(a), np.array(b), RAMP if ramp else NO_SHIFT), policy)
    assert res.series["grid_kw"].min() >= -1e-9


class UpdatingSpy(SpyForecaster):
    """A spy with an explicit calibration update: records each call in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, float]] = []

    def predict(
        self, history: History, horizons_s: Sequence[float], future_exog: Any = None
    ) -> Forecast:
        self.calls.append(("predict", history.end_s))
        return super().predict(history, horizons_s, future_exog)

    def update(self, history: History, horizons_s: Sequence[float]) -> None:
        self.calls.append(("update", history.end_s))


def test_calibration_is_updated_explicitly_after_each_forecast_from_the_past_only() -> None:
    sc = wavy(20)
    spy = UpdatingSpy()
    simulate(sc, SpyPolicy(sc.site), forecaster=spy)
    # Each plan step t sees the history measured up to the step before it (1 s latency).
    ends = [float(sc.timestamps_s[t - 1]) for t in range(2, 20, 2)]
    assert spy.calls == [(kind, e) for e in ends for kind in ("predict", "update")]


def test_bench_results_do_not_depend_on_the_order_of_the_runs() -> None:
    """A fresh forecaster per run: predictive's result is the same first or after seed."""
    from wattwheel.sim.bench import run_bench

    sc = wavy(96)
    first = run_bench(sc, ["predictive", "seed"]).results["predictive"].site_metrics
    after = run_bench(sc, ["seed", "predictive"]).results["predictive"].site_metrics
    for key in ("cost_total", "kes_losses_kwh", "capped_energy_kwh", "shifted_energy_kwh"):
        assert first[key] == after[key], key


def test_the_report_places_each_forecast_band_at_its_target_time() -> None:
    from wattwheel.sim.report import _forecast_band

    sc = wavy(20)
    res = simulate(sc, make_policy("predictive", sc.site), forecaster=PersistenceForecaster())
    s = res.series
    issued = np.isfinite(s["fc_target_s"][:, 0])
    rows = np.flatnonzero(issued)
    assert rows.size > 0
    # Issued at step t from the history up to step t - 1 (1 s latency): the first horizon
    # counts from that step's time.
    horizon_s = make_policy("predictive", sc.site).horizons_s[0]
    issued_s = s["timestamps_s"][rows] - DT_S
    np.testing.assert_allclose(s["fc_target_s"][rows, 0], issued_s + horizon_s)
    t_fc, lo, hi = _forecast_band(s, slice(0, 20), 0)
    t0 = s["timestamps_s"][0]
    np.testing.assert_allclose(t_fc, (issued_s + horizon_s - t0) / 3600.0)
    assert np.all(lo <= hi)
