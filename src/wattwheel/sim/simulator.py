"""The simulation loop: replay a trace through the plant and a policy, deterministically.

Information model (DESIGN §8 "Information"). Demand is measured with a latency of
``measurement_latency_s`` (L, the site file's, 1 s by default) and taken as constant over each
trace step. At the start of step t:

* forecasts (and everything a plan decides: shifts, deferrals, reserve arming, SoC targets)
  are made from the history measured up to ``ts[t] - L`` - for L <= one step, every step
  before t, never step t itself;
* the fast loop acts on the demand it measured L seconds earlier: step t's own demand when
  L < one step (it then applies for the step after its first L seconds; the plant holds the
  previous outputs during those - see :mod:`wattwheel.sim.plant`), an earlier step's when
  L is one step or more.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import Policy
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast, Forecaster, History
from wattwheel.forecast.conformal import predict_and_learn
from wattwheel.sim.plant import Plant
from wattwheel.sim.scenario import Scenario

FloatArray = NDArray[np.float64]
Progress = Callable[[int], None]


@dataclass
class SimResult:
    """Metrics (site and per domain) and the time series behind the report."""

    policy: str
    site_metrics: dict[str, float]
    domain_metrics: dict[str, dict[str, float]]
    series: dict[str, FloatArray] = field(default_factory=dict)
    solver_seconds: list[float] = field(default_factory=list)


def without_kes(site: SiteParams) -> SiteParams:
    """The same site with every flywheel module out of service (for the ``none`` policy)."""
    return dataclasses.replace(site, kes=site.kes.with_faults(site.kes.modules))


@dataclass(frozen=True)
class Timing:
    """Where a step's information comes from, for a measurement latency on a trace step.

    Attributes:
        fast_lag_steps: the fast loop at step t acts on step ``t - fast_lag_steps``'s demand.
        lag_s: for how long at the start of each step the previous outputs stay in force.
        plan_lag_steps: the newest step a plan at step t may see is ``t - plan_lag_steps``.
    """

    fast_lag_steps: int
    lag_s: float
    plan_lag_steps: int

    @staticmethod
    def of(latency_s: float, dt_s: float) -> Timing:
        if not math.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f"measurement latency must be a finite number >= 0: {latency_s}")
        ratio = latency_s / dt_s
        whole = int(math.floor(ratio + 1e-9))
        lag_s = max(latency_s - whole * dt_s, 0.0)
        if lag_s < 1e-9 * dt_s:
            lag_s = 0.0
        return Timing(whole, lag_s, max(int(math.ceil(ratio - 1e-9)), 1))


def simulate(
    scenario: Scenario,
    policy: Policy,
    forecaster: Forecaster | None = None,
    oracle: bool = False,
    progress: Progress | None = None,
    measurement_latency_s: float | None = None,
) -> SimResult:
    """Run ``policy`` over the whole trace. ``oracle`` (or a policy whose ``oracle`` attribute
    is true) feeds the policy the true future instead of the forecaster's output (from the
    same decision time as a forecaster's). ``measurement_latency_s`` overrides the site's."""
    oracle = oracle or bool(getattr(policy, "oracle", False))
    site = scenario.site if getattr(policy, "uses_kes", True) else without_kes(scenario.site)
    dt = scenario.dt_s
    latency = site.measurement_latency_s if measurement_latency_s is None else measurement_latency_s
    timing = Timing.of(latency, dt)
    # The flywheel converter the site is equipped with (its own loop; default nameplate).
    plant = Plant(site, dt, timing.lag_s, getattr(policy, "converter_spec", None))
    state = policy.initial_state(site)
    n_steps, n_dom = scenario.demand_kw.shape
    rec = _Recorder(n_steps, n_dom)
    horizons = tuple(getattr(policy, "horizons_s", ()))
    period_steps = (
        max(int(round(policy.forecast_period_s / dt)), 1) if policy.forecast_period_s else 0
    )
    history = _domain_history(scenario)
    started = time.perf_counter()
    for t in range(n_steps):
        demand, critical = scenario.demand_kw[t], scenario.critical_kw[t]
        seen = max(t - timing.fast_lag_steps, 0)
        obs = plant.observe(
            float(scenario.timestamps_s[t]), scenario.demand_kw[seen], scenario.critical_kw[seen]
        )
        fresh = None
        known = t - timing.plan_lag_steps  # the newest step a plan may see
        if period_steps and t % period_steps == 0 and horizons and known >= 0:
            # Horizons count from the newest measurement; a plan's blocks start at step t.
            ahead = tuple(h + (t - known - 1) * dt for h in horizons)
            if oracle:
                fresh = _oracle_forecast(scenario, known, ahead)
            elif forecaster is not None and known >= 1:  # a history has two rows at least
                past = _prefix(history, known + 1)
                # The one place calibration learns: explicitly, from the past only.
                fresh = predict_and_learn(forecaster, past, ahead)
        skipped = getattr(state, "skipped", None)
        t0 = time.perf_counter()
        decision, state = policy.decide(obs, state, fresh)
        # Time the planning calls that really solved (not the closed-form quiet ones).
        rec.solver(
            time.perf_counter() - t0,
            fresh is not None and skipped is not None and state.skipped == skipped,
        )
        record = plant.step(demand, critical, decision)
        rec.store(t, record, fresh, site.primary_kw, demand)
        if progress is not None and (t % 500 == 0 or t == n_steps - 1):
            progress(t + 1)
    wall = time.perf_counter() - started
    capacity = site.kes.capacity_kwh
    weights = site.costs
    dom = plant.metrics.domain_metrics(capacity, weights, wall)
    return SimResult(
        policy=policy.name,
        site_metrics=plant.metrics.site_metrics(capacity, weights, wall),
        domain_metrics={name: dom[i] for i, name in enumerate(site.domain_names)},
        series=rec.series(scenario),
        solver_seconds=rec.solver_seconds,
    )


def _domain_history(scenario: Scenario) -> History:
    return History(scenario.timestamps_s, scenario.site.domain_names, scenario.demand_kw * 1000.0)


def _prefix(history: History, n: int) -> History:
    return History(
        history.timestamps_s[:n],
        history.series_ids,
        history.values[:n],
        {k: v[:n] for k, v in history.exog.items()},
    )


def _oracle_forecast(scenario: Scenario, t: int, horizons_s: tuple[float, ...]) -> Forecast:
    """The true future as a (degenerate) quantile forecast issued at step ``t``: at each
    horizon, the worst demand over the block that ends there (watts, like a real
    forecaster's output)."""
    dt = scenario.dt_s
    demand = scenario.demand_kw
    n = demand.shape[0]
    vals = []
    prev = t
    for h in horizons_s:
        end = min(t + max(int(round(h / dt)), 1), n - 1)
        lo = min(prev + 1, end)
        vals.append(demand[lo : end + 1].max(axis=0) * 1000.0)
        prev = end
    point = np.stack(vals, axis=1)
    values = np.repeat(point[:, :, None], 3, axis=2)
    return Forecast(
        float(scenario.timestamps_s[t]),
        scenario.site.domain_names,
        horizons_s,
        (0.05, 0.5, 0.95),
        values,
        point,
    )


class _Recorder:
    def __init__(self, n_steps: int, n_dom: int) -> None:
        shape = (n_steps, n_dom)
        self.arrays: dict[str, FloatArray] = {
            k: np.zeros(shape)
            for k in (
                "grid_kw",
                "kes_kw",
                "reserve_kw",
                "cap_kw",
                "shift_out_kw",
                "shift_in_kw",
                "defer_kw",
                "repay_kw",
                "soc",
                "reserve_mode",
                "trips",
                "fc_lo_kw",
                "fc_mid_kw",
                "fc_hi_kw",
                "fc_target_s",
            )
        }
        self.solver_seconds: list[float] = []

    def solver(self, seconds: float, planned: bool) -> None:
        if planned:
            self.solver_seconds.append(seconds)

    def store(
        self, t: int, rec: Any, forecast: Forecast | None, primary: FloatArray, demand: FloatArray
    ) -> None:
        a = self.arrays
        for k in (
            "grid_kw",
            "kes_kw",
            "reserve_kw",
            "cap_kw",
            "shift_out_kw",
            "shift_in_kw",
            "defer_kw",
            "repay_kw",
            "soc",
            "reserve_mode",
            "trips",
        ):
            a[k][t] = getattr(rec, k if k != "soc" else "soc")
        if forecast is not None:
            # The first-horizon band of a forecast issued at this step, and the time it is for
            # (issued_at + horizon): the report plots the band there, against what happened.
            a["fc_lo_kw"][t] = forecast.values[:, 0, 0] / 1000.0
            a["fc_mid_kw"][t] = forecast.point[:, 0] / 1000.0
            a["fc_hi_kw"][t] = forecast.values[:, 0, -1] / 1000.0
            a["fc_target_s"][t] = forecast.issued_at_s + forecast.horizons_s[0]
        else:
            for k in ("fc_lo_kw", "fc_mid_kw", "fc_hi_kw", "fc_target_s"):
                a[k][t] = np.nan

    def series(self, scenario: Scenario) -> dict[str, FloatArray]:
        out = dict(self.arrays)
        out["timestamps_s"] = scenario.timestamps_s
        out["demand_kw"] = scenario.demand_kw
        return out
