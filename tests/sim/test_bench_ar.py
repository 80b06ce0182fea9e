"""``predictive+ar``: the controller on an AR fitted online, only ever on the measured past."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wattwheel.control.base import Decision, Observation
from wattwheel.control.registry import make_policy
from wattwheel.domain.site import SiteParams, parse_site
from wattwheel.domain.trace import Trace
from wattwheel.forecast.base import Forecast, History
from wattwheel.forecast.rolling_ar import RollingARForecaster
from wattwheel.sim.bench import run_bench
from wattwheel.sim.report import write_report
from wattwheel.sim.scenario import Scenario, build_scenario
from wattwheel.sim.simulator import simulate

TINY = (Path(__file__).resolve().parents[1] / "data" / "sites" / "tiny.toml").read_text()
DT_S = 60.0


def wavy(n: int, seed: int = 3) -> Scenario:
    """A swings 70-125 kW, B 40-105 kW (as in test_simulator)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = np.maximum(97.0 + 28.0 * np.sin(t / 5.0) + rng.normal(0, 2, n), 0)
    b = np.maximum(72.0 + 33.0 * np.sin(t / 7.0 + 1.0) + rng.normal(0, 2, n), 0)
    ts = 1.7e9 + np.arange(n) * DT_S
    power_w = np.column_stack([a * 500.0, a * 500.0, b * 1000.0])
    return build_scenario(parse_site(TINY), Trace(ts, ("a1", "a2", "b1"), power_w))


def test_predictive_ar_runs_beside_persistence_with_its_training_data_named(
    tmp_path: Path,
) -> None:
    sc = wavy(160)
    run = run_bench(sc, ["reactive", "predictive+persistence", "predictive+ar", "oracle"])
    assert list(run.results) == ["reactive", "predictive+persistence", "predictive+ar", "oracle"]
    assert run.forecaster_names["predictive+ar"] == "ar"
    assert run.forecaster_names["predictive+persistence"] == "persistence"
    assert run.forecaster_training["predictive+ar"]["model"] == "ar"
    data = run.forecaster_training["predictive+ar"]["training_data"]
    assert data["files"] == [] and "past only" in data["source"]
    out = tmp_path / "report.html"
    write_report(out, sc.site, run.results, "ar", run.forecaster_training)
    assert "the benched trace&#x27;s past only" in out.read_text()
    m = run.results["predictive+ar"].site_metrics
    assert m["breaker_trips"] == 0 and m["critical_capped_energy_kwh"] == 0


class SpyAR(RollingARForecaster):
    """The rolling AR, recording the end of every history it predicts from or fits on."""

    def __init__(self, log: list[tuple[str, float]]) -> None:
        super().__init__(fit_rows=200, refit_rows=10, lags=4)
        self.log = log

    def predict(
        self, history: History, horizons_s: Sequence[float], future_exog: Any = None
    ) -> Forecast:
        self.log.append(("predict", history.end_s))
        return super().predict(history, horizons_s, future_exog)

    def fit_point(self, history: History) -> None:
        self.log.append(("fit", history.end_s))
        super().fit_point(history)


class LoggingPolicy:
    """The predictive controller, logging when each decision is made."""

    def __init__(self, site: SiteParams, log: list[tuple[str, float]]) -> None:
        self.inner = make_policy("predictive", site)
        self.name = "predictive+ar"
        self.uses_kes = True
        self.forecast_period_s = self.inner.forecast_period_s
        self.horizons_s = self.inner.horizons_s
        self.log = log

    def initial_state(self, site: SiteParams) -> Any:
        return self.inner.initial_state(site)

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        self.log.append(("decide", obs.now_s))
        return self.inner.decide(obs, state, forecast)


def test_the_ar_is_fitted_and_forecasts_only_from_before_each_decision() -> None:
    sc = wavy(120)
    log: list[tuple[str, float]] = []
    ar = SpyAR(log)
    simulate(sc, LoggingPolicy(sc.site, log), forecaster=ar)
    fits = [end for kind, end in log if kind == "fit"]
    assert len(fits) >= 2, "the AR never refitted"  # it did learn, more than once
    assert ar.coefs and ar.fitted_through_s is not None
    pending: list[float] = []
    checked = 0
    for kind, t_s in log:
        if kind == "decide":
            # Everything the forecaster saw before this decision ended before it was made.
            assert all(end < t_s for end in pending), (pending, t_s)
            checked += len(pending)
            pending = []
        else:
            pending.append(t_s)
    assert checked == sum(1 for kind, _ in log if kind != "decide")
