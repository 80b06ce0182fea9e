"""What knowing the workload schedule is worth: forecast error and controller cost, with and
without it, out of sample.

- :func:`rolling_scores`: rolling-origin forecasts from every row after ``first_origin`` with the
  history up to that row only (what a controller has measured), point MAE and 90 % interval
  coverage per horizon. A forecaster that learns online is updated after each origin, from the
  past only, as the simulator does.
- :func:`tail_scenario`: the scenario from a row on (the test part), the site unchanged (its
  capacities stay those the site file resolved on the whole trace: a design choice, no
  information for the controller).

Pure numpy, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wattwheel.forecast.base import FloatArray, Forecaster, History
from wattwheel.forecast.calibration import horizon_steps
from wattwheel.forecast.conformal import OnlineCalibrated
from wattwheel.sim.scenario import Scenario


@dataclass(frozen=True)
class Scores:
    """Per horizon: point MAE (kW) over every series and origin, 90 % interval coverage."""

    horizons_s: tuple[float, ...]
    mae_kw: tuple[float, ...]
    coverage_90: tuple[float, ...]
    origins: int


def domain_history(scenario: Scenario) -> History:
    """The per-domain demand history in watts (what the simulator gives forecasters)."""
    return History(scenario.timestamps_s, scenario.site.domain_names, scenario.demand_kw * 1000.0)


def prefix(history: History, n: int) -> History:
    return History(
        history.timestamps_s[:n],
        history.series_ids,
        history.values[:n],
        {k: v[:n] for k, v in history.exog.items()},
    )


def rolling_scores(
    history: History,
    forecaster: Forecaster,
    first_origin: int,
    horizons_s: Sequence[float],
    stride: int = 1,
) -> Scores:
    """Forecast from every ``stride``-th row from ``first_origin`` on; see the module docstring."""
    steps = horizon_steps(horizons_s, history.step_s)
    n_rows = history.values.shape[0]
    origins = range(max(first_origin, 1), n_rows - max(steps), max(stride, 1))
    if len(origins) == 0:
        raise ValueError("no origin leaves room for the longest horizon")
    err: list[list[FloatArray]] = [[] for _ in steps]
    inside: list[list[FloatArray]] = [[] for _ in steps]
    for o in origins:
        past = prefix(history, o + 1)
        fc = forecaster.predict(past, horizons_s)
        lo, hi = fc.quantile(0.05), fc.quantile(0.95)
        for h, step in enumerate(steps):
            actual = history.values[o + step]
            err[h].append(np.abs(fc.point[:, h] - actual))
            inside[h].append((actual >= lo[:, h]) & (actual <= hi[:, h]))
        if isinstance(forecaster, OnlineCalibrated):
            forecaster.update(past, horizons_s)
    return Scores(
        tuple(float(h) for h in horizons_s),
        tuple(float(np.nanmean(np.concatenate(e))) / 1000.0 for e in err),
        tuple(float(np.mean(np.concatenate(c))) for c in inside),
        len(origins),
    )


def tail_scenario(scenario: Scenario, start_row: int) -> Scenario:
    """The scenario's rows from ``start_row`` on, with the same resolved site."""
    if not 0 <= start_row < scenario.timestamps_s.shape[0] - 1:
        raise ValueError(f"start_row {start_row} leaves fewer than two rows")
    trace = scenario.trace
    sliced = dataclasses.replace(
        trace,
        timestamps_s=trace.timestamps_s[start_row:],
        power_w=trace.power_w[start_row:],
        critical_w=None if trace.critical_w is None else trace.critical_w[start_row:],
        exog={k: v[start_row:] for k, v in trace.exog.items()},
    )
    return dataclasses.replace(
        scenario,
        trace=sliced,
        timestamps_s=scenario.timestamps_s[start_row:],
        demand_kw=scenario.demand_kw[start_row:],
        critical_kw=scenario.critical_kw[start_row:],
    )
