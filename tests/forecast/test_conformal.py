"""The conformal wrapper: pure predict, explicit update, coverage over a miscalibrated model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from wattwheel.forecast.base import FloatArray, Forecast, Forecaster, History
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.forecast.conformal import ConformalForecaster, OnlineCalibrated, predict_and_learn


class TooNarrow:
    """Persistence with a fixed +-1 W band: far too narrow for a random walk of sd 5 W."""

    name = "narrow"

    def fit(self, history: History) -> None:
        pass

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        last = history.values[-1]
        point = np.repeat(last[:, None], len(horizons_s), axis=1)
        values = np.stack([point - 1.0, point, point + 1.0], axis=2)
        return Forecast(
            history.end_s, history.series_ids, tuple(horizons_s), (0.05, 0.5, 0.95), values, point
        )


def _walk(n_rows: int = 3000, n_series: int = 3, seed: int = 0, step_s: float = 300.0) -> History:
    rng = np.random.default_rng(seed)
    values = 5000.0 + np.cumsum(rng.normal(0, 5.0, (n_rows, n_series)), axis=0)
    return History(step_s * np.arange(n_rows), tuple(f"r{i}" for i in range(n_series)), values)


def _prefix(h: History, n: int) -> History:
    return History(h.timestamps_s[:n], h.series_ids, h.values[:n])


def test_wrapper_is_a_forecaster_and_online_calibrated() -> None:
    wrapped = ConformalForecaster(TooNarrow())
    assert isinstance(wrapped, Forecaster) and isinstance(wrapped, OnlineCalibrated)
    assert isinstance(PersistenceForecaster(), OnlineCalibrated)


def test_online_updates_bring_coverage_to_nominal() -> None:
    hist = _walk()
    wrapped = ConformalForecaster(TooNarrow())
    raw_hits, hits = [], []
    for end in range(50, 2990):
        past = _prefix(hist, end)
        fc = wrapped.predict(past, [300, 900])
        wrapped.update(past, [300, 900])
        if end >= 1000:
            actual = hist.values[[end, end + 2]].T
            raw = TooNarrow().predict(past, [300, 900])
            raw_hits.append((raw.values[..., 0] <= actual) & (actual <= raw.values[..., 2]))
            hits.append((fc.values[..., 0] <= actual) & (actual <= fc.values[..., 2]))
    assert float(np.mean(raw_hits)) < 0.3
    assert 0.86 <= float(np.mean(hits)) <= 0.94


def test_predict_is_pure_whatever_the_call_order() -> None:
    hist = _walk(n_rows=600)
    wrapped = ConformalForecaster(TooNarrow(), min_residuals=5)
    for end in range(100, 400):
        wrapped.update(_prefix(hist, end), [300])
    counts = wrapped.count(1)
    a = wrapped.predict(_prefix(hist, 400), [300, 600])
    for end in range(400, 600):  # forecasts from "the future" and the past, in any order
        wrapped.predict(_prefix(hist, end), [300])
        wrapped.predict(_prefix(hist, 1000 - end), [300])
    assert wrapped.count(1) == counts
    np.testing.assert_array_equal(wrapped.predict(_prefix(hist, 400), [300, 600]).values, a.values)


class Counting(TooNarrow):
    def __init__(self) -> None:
        self.calls = 0

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        self.calls += 1
        return super().predict(history, horizons_s, future_exog)


def test_predict_and_learn_equals_predict_then_update_with_one_inner_forecast() -> None:
    hist = _walk(n_rows=400)
    apart, together = ConformalForecaster(Counting(), 5), ConformalForecaster(Counting(), 5)
    for end in range(50, 400):
        past = _prefix(hist, end)
        a = apart.predict(past, [300, 900])
        apart.update(past, [300, 900])
        b = predict_and_learn(together, past, [300, 900])
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.point, b.point)
    assert together.count(1) == apart.count(1) > 0
    assert together.inner.calls * 2 == apart.inner.calls  # type: ignore[attr-defined]
    # A forecaster without online calibration is only asked for its forecast.
    plain = Counting()
    predict_and_learn(plain, _prefix(hist, 100), [300])
    assert plain.calls == 1


def test_update_scores_each_origin_once_and_forgets_series_changes() -> None:
    hist = _walk(n_rows=200)
    wrapped = ConformalForecaster(TooNarrow())
    for end in range(100, 110):
        wrapped.update(_prefix(hist, end), [300])
        wrapped.update(_prefix(hist, end), [300])  # same origin again: scored, not re-issued
    assert wrapped.count(1) == 9 * 3  # forecasts from rows 100..108 have their target
    other = History(hist.timestamps_s[:120], ("x", "y", "z"), hist.values[:120])
    wrapped.update(other, [300])
    assert wrapped.count(1) == 9 * 3


def test_fine_readings_are_scored_at_the_forecast_target() -> None:
    """Forecasts every 100 s of a 10 s series, 5 minutes ahead: scored 30 rows later."""
    hist = _walk(n_rows=3000, step_s=10.0)
    wrapped = ConformalForecaster(TooNarrow())
    for end in range(2000, 2100, 10):
        wrapped.update(_prefix(hist, end), [300])
    assert wrapped.count(30) == 3 * 7  # issued at rows 2000..2060 have their target in view


def test_calibrate_replaces_the_pool_and_a_step_change_is_an_error() -> None:
    hist = _walk(n_rows=400)
    wrapped = ConformalForecaster(TooNarrow())
    wrapped.calibrate(hist, [300, 600], start=100, stride=2)
    assert wrapped.count(1) == 3 * len(range(100, 398, 2))
    fc = wrapped.predict(hist, [300])
    assert fc.values[0, 0, 2] - fc.values[0, 0, 0] > 2.0
    with pytest.raises(ValueError, match="10 s step"):
        wrapped.predict(_walk(n_rows=100, step_s=10.0), [300])
