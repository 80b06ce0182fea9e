"""The online AR blend: weights learned from realised errors by explicit updates, pure predict,
the same forecast as the fixed blend before any update, wiring through the conformal wrapper."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from wattwheel.adapters.model_artifact import load_forecaster, shipped_model_dir
from wattwheel.forecast.backtest import learn_on_past
from wattwheel.forecast.base import FloatArray, Forecast, History
from wattwheel.forecast.calibration import horizon_steps
from wattwheel.forecast.conformal import ConformalForecaster, predict_and_learn
from wattwheel.forecast.hybrid import ARBlendForecaster, OnlineBlendForecaster

HORIZONS_S = (300.0, 600.0, 900.0)


class Flat:
    """Always forecasts 1,000 W with a +-10 W band (a bad model of the series below)."""

    name = "flat"

    def fit(self, history: History) -> None:
        pass

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        point = np.full((len(history.series_ids), len(horizons_s)), 1000.0)
        values = np.stack([point - 10.0, point, point + 10.0], axis=2)
        return Forecast(
            history.end_s, history.series_ids, tuple(horizons_s), (0.05, 0.5, 0.95), values, point
        )


def _ar_series(n_rows: int = 1500, seed: int = 0) -> History:
    """Two AR(1) series around 5 kW."""
    rng = np.random.default_rng(seed)
    values = np.empty((n_rows, 2))
    values[0] = 5000.0
    for t in range(1, n_rows):
        values[t] = 5000.0 + 0.8 * (values[t - 1] - 5000.0) + rng.normal(0, 50.0, 2)
    return History(300.0 * np.arange(n_rows), ("a", "b"), values)


def _past(history: History, o: int) -> History:
    return History(history.timestamps_s[: o + 1], history.series_ids, history.values[: o + 1])


def test_before_any_update_it_is_the_fixed_blend() -> None:
    history = _ar_series()
    fixed = ARBlendForecaster(Flat(), HORIZONS_S, [0.7, 0.7, 0.7], ar_rows=1000)
    online = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.7, 0.7, 0.7], ar_rows=1000)
    a, b = fixed.predict(history, HORIZONS_S), online.predict(history, HORIZONS_S)
    np.testing.assert_allclose(b.point, a.point)
    np.testing.assert_allclose(b.values, a.values)


def test_updates_move_the_weight_off_a_bad_model_and_cut_the_error() -> None:
    history = _ar_series(seed=1)
    fixed = ARBlendForecaster(Flat(), HORIZONS_S, [0.8, 0.8, 0.8], ar_rows=1000)
    online = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.8, 0.8, 0.8], ar_rows=1000)
    start_weights = online.learned_weights(HORIZONS_S, 300.0)
    assert learn_on_past(online, history, HORIZONS_S, 1200, stride=2) > 0
    learned = online.learned_weights(HORIZONS_S, 300.0)
    np.testing.assert_allclose(start_weights[:, 0], 0.8)
    assert np.all(learned[:, 0] < 0.3)  # the flat model gets little weight
    assert online.samples(1) > 100
    err_fixed, err_online = [], []
    for o in range(1210, 1490, 7):
        past = _past(history, o)
        actual = history.values[o + 1]
        err_fixed.append(np.abs(fixed.predict(past, HORIZONS_S).point[:, 0] - actual))
        err_online.append(np.abs(online.predict(past, HORIZONS_S).point[:, 0] - actual))
    assert float(np.mean(err_online)) < 0.5 * float(np.mean(err_fixed))


def test_predict_is_pure_and_predict_and_update_equals_the_two_calls() -> None:
    history = _ar_series(seed=2)
    a = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.5, 0.5, 0.5], ar_rows=800)
    b = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.5, 0.5, 0.5], ar_rows=800)
    for o in range(1000, 1100, 3):
        past = _past(history, o)
        first = a.predict(past, HORIZONS_S)
        again = a.predict(past, HORIZONS_S)
        np.testing.assert_array_equal(first.values, again.values)
        a.update(past, HORIZONS_S)
        a.update(past, HORIZONS_S)  # the same last row again: scores only, no second forecast
        both = b.predict_and_update(past, HORIZONS_S)
        np.testing.assert_allclose(both.values, first.values)
    np.testing.assert_allclose(
        a.learned_weights(HORIZONS_S, 300.0), b.learned_weights(HORIZONS_S, 300.0)
    )
    assert a.samples(1) > 0


def test_the_conformal_wrapper_passes_its_updates_on() -> None:
    history = _ar_series(seed=3)
    blend = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.9, 0.9, 0.9], ar_rows=800)
    wrapped = ConformalForecaster(blend)
    for o in range(1000, 1200, 2):
        predict_and_learn(wrapped, _past(history, o), HORIZONS_S)
    assert blend.samples(1) > 0
    assert blend.learned_weights(HORIZONS_S, 300.0)[0, 0] < 0.5
    plain = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.9, 0.9, 0.9], ar_rows=800)
    other = ConformalForecaster(plain)
    for o in range(1000, 1200, 2):
        other.update(_past(history, o), HORIZONS_S)
    np.testing.assert_allclose(
        plain.learned_weights(HORIZONS_S, 300.0), blend.learned_weights(HORIZONS_S, 300.0)
    )


def test_a_changed_step_is_refused() -> None:
    history = _ar_series()
    blend = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.5, 0.5, 0.5], ar_rows=800)
    blend.update(history, HORIZONS_S)
    coarse = History(600.0 * np.arange(1500), history.series_ids, history.values)
    with pytest.raises(ValueError, match="grid"):
        blend.update(coarse, HORIZONS_S)


def test_shipped_models_are_served_with_the_online_blend() -> None:
    served = load_forecaster(shipped_model_dir(), online=True)
    assert isinstance(served, ConformalForecaster)
    assert isinstance(served.inner, OnlineBlendForecaster)
    assert served.inner.extra_lags == (6,)


def test_learned_weights_batched_equal_each_horizon_solved_alone() -> None:
    """``learned_weights`` solves every horizon's system in one batch: the same weights as
    ``_weights`` one horizon at a time, for learned horizons and an unlearned one."""
    blend = OnlineBlendForecaster(Flat(), HORIZONS_S, [0.6, 0.6, 0.6], ar_rows=800)
    hist = _ar_series()
    for o in range(900, 1500, 3):
        blend.update(_past(hist, o), HORIZONS_S)
    asked = (*HORIZONS_S, 7200.0)  # 24 steps: never scored
    steps = horizon_steps(asked, hist.step_s)
    assert blend.samples(steps[0]) > 0 and blend.samples(steps[-1]) == 0
    prior = blend.weights_at(asked)
    alone = np.stack([blend._weights(s, float(p)) for s, p in zip(steps, prior, strict=True)])
    np.testing.assert_array_equal(blend.learned_weights(asked, hist.step_s), alone)
