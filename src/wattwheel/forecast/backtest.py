"""Rolling-origin evaluation of any Forecaster, and the per-horizon scores of DESIGN §3.

At each origin ``o`` (every ``stride`` rows from ``start``) the forecaster sees only rows
``0..o`` and forecasts ``horizons_s`` ahead; scores compare with the measured values at those
rows (NaN actuals are skipped). Forecasting never changes a forecaster; with ``update`` set, a
forecaster with online calibration (:class:`~wattwheel.forecast.conformal.OnlineCalibrated`) is
updated explicitly after each origin with the rows up to it, as it would be in operation.

Scores per horizon, in the series' units (watts for power):
``mae``, ``rmse``, ``mase`` (MAE over the in-sample one-step naive MAE), ``pinball`` (mean over
the quantile levels), ``coverage_90`` (share of actuals in [q05, q95]), ``width_90`` and
``winkler_90`` (width plus 2/alpha times the miss, alpha = 0.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.forecast.base import Forecaster, History
from wattwheel.forecast.calibration import horizon_steps
from wattwheel.forecast.conformal import OnlineCalibrated

FloatArray = NDArray[np.float64]

METRICS = ("mae", "rmse", "mase", "pinball", "coverage_90", "width_90", "winkler_90")
ALPHA_90 = 0.1


@dataclass(frozen=True)
class BacktestRun:
    """Forecasts and actuals from one rolling-origin pass.

    Attributes:
        origins: (N,) row index of each forecast origin.
        quantiles: Q levels.
        values: (N, S, H, Q) forecast quantiles.
        point: (N, S, H) point forecasts.
        actual: (N, S, H) measured values at the targets (NaN where missing).
    """

    origins: NDArray[np.int64]
    quantiles: tuple[float, ...]
    values: FloatArray
    point: FloatArray
    actual: FloatArray


def rolling_origin(
    forecaster: Forecaster,
    history: History,
    horizons_s: Sequence[float],
    start: int,
    stride: int = 1,
    on_origin: Callable[[int, int], None] | None = None,
    update: bool = False,
) -> BacktestRun:
    """Forecast from every ``stride``-th row in ``[start, T - max_step)``."""
    steps = np.array(horizon_steps(horizons_s, history.step_s), dtype=np.int64)
    n_rows = history.values.shape[0]
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    origins = np.arange(max(start, 1), n_rows - int(steps.max()), stride, dtype=np.int64)
    if origins.size == 0:
        raise ValueError(
            f"no forecast origin: {n_rows} rows, start {start}, longest horizon {steps.max()} steps"
        )
    values, points = [], []
    for i, o in enumerate(origins):
        past = History(
            history.timestamps_s[: o + 1],
            history.series_ids,
            history.values[: o + 1],
            {k: v[: o + 1] for k, v in history.exog.items()},
        )
        # Exogenous columns are known ahead (schedules, forecasts): pass their target values.
        future = {k: v[o + steps] for k, v in history.exog.items()} if history.exog else None
        fc = forecaster.predict(past, horizons_s, future)
        if update and isinstance(forecaster, OnlineCalibrated):
            forecaster.update(past, horizons_s)
        values.append(fc.values)
        points.append(fc.point)
        if on_origin is not None:
            on_origin(i + 1, origins.size)
    actual = np.stack([history.values[origins + s] for s in steps], axis=2)
    return BacktestRun(
        origins=origins,
        quantiles=tuple(float(q) for q in fc.quantiles),
        values=np.stack(values),
        point=np.stack(points),
        actual=actual,
    )


def learn_on_past(
    forecaster: Forecaster,
    history: History,
    horizons_s: Sequence[float],
    end: int,
    stride: int = 1,
) -> int:
    """Update an :class:`OnlineCalibrated` forecaster at every ``stride``-th row up to ``end``
    (inclusive) with the rows up to each, as it would have been in operation over that past
    (e.g. the online AR blend's weights over a backtest's fit part). Returns the updates made
    (0 for a forecaster that does not learn online)."""
    if not isinstance(forecaster, OnlineCalibrated):
        return 0
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    done = 0
    for o in range(end % stride, end + 1, stride):
        if o < 1:
            continue
        forecaster.update(
            History(
                history.timestamps_s[: o + 1],
                history.series_ids,
                history.values[: o + 1],
                {k: v[: o + 1] for k, v in history.exog.items()},
            ),
            horizons_s,
        )
        done += 1
    return done


def naive_scale(values: FloatArray) -> float:
    """In-sample MAE of the one-step naive forecast (the MASE denominator)."""
    diffs = np.abs(np.diff(values, axis=0))
    finite = diffs[np.isfinite(diffs)]
    return float(finite.mean()) if finite.size else float("nan")


def score(run: BacktestRun, mase_scale: float) -> dict[str, list[float]]:
    """Per-horizon scores (lists aligned with the horizons)."""
    qs = np.asarray(run.quantiles)
    ok = np.isfinite(run.actual)
    err = np.where(ok, run.actual - run.point, np.nan)
    mae = _mean(np.abs(err))
    diff = run.actual[..., None] - run.values
    pin = np.maximum(qs * diff, (qs - 1) * diff).mean(axis=3)
    lo = run.values[..., _level_index(qs, ALPHA_90 / 2)]
    hi = run.values[..., _level_index(qs, 1 - ALPHA_90 / 2)]
    inside = (run.actual >= lo) & (run.actual <= hi)
    width = hi - lo
    miss = np.maximum(lo - run.actual, 0) + np.maximum(run.actual - hi, 0)
    winkler = width + (2 / ALPHA_90) * miss
    out = {
        "mae": mae,
        "rmse": np.sqrt(_mean(err**2)),
        "mase": mae / mase_scale,
        "pinball": _mean(np.where(ok, pin, np.nan)),
        "coverage_90": _mean(np.where(ok, inside.astype(np.float64), np.nan)),
        "width_90": _mean(np.where(ok, width, np.nan)),
        "winkler_90": _mean(np.where(ok, winkler, np.nan)),
    }
    return {k: [float(x) for x in v] for k, v in out.items()}


def _mean(a: FloatArray) -> FloatArray:
    """Mean over origins and series, per horizon, ignoring NaN."""
    return np.asarray(np.nanmean(a.reshape(-1, a.shape[-1]), axis=0), dtype=np.float64)


def _level_index(qs: FloatArray, level: float) -> int:
    j = int(np.argmin(np.abs(qs - level)))
    if abs(qs[j] - level) > 1e-9:
        raise ValueError(f"the forecast has no {level} quantile (it has {tuple(qs)})")
    return j
