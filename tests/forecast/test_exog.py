"""Exogenous inputs: as-of alignment of feeds, and a known-ahead schedule the LSTM uses."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.forecast.base import History
from wattwheel.forecast.exog import align_asof, feed_to_exog
from wattwheel.forecast.lstm import LSTMConfig, LSTMForecaster


def test_align_asof_takes_latest_value_at_or_before() -> None:
    feed_ts = np.array([100.0, 0.0, 250.0])
    feed = np.array([2.0, 1.0, np.nan])
    out = align_asof(feed_ts, feed, np.array([-10.0, 0.0, 50.0, 100.0, 300.0]))
    np.testing.assert_array_equal(out, [np.nan, 1.0, 1.0, 2.0, 2.0])


def test_feed_to_exog_site_wide_and_per_rack() -> None:
    grid = np.array([0.0, 10.0, 20.0])
    site = feed_to_exog(np.array([0.0, 15.0]), {"temp_c": np.array([20.0, 25.0])}, grid, ("a", "b"))
    np.testing.assert_array_equal(site["temp_c"], [[20, 20], [20, 20], [25, 25]])
    per = feed_to_exog(
        np.array([0.0, 0.0]), {"sched_w": np.array([5.0, 7.0])}, grid, ("a", "b", "c"), ["b", "a"]
    )
    np.testing.assert_array_equal(per["sched_w"][0], [7.0, 5.0, np.nan])


def _scheduled(n_rows: int = 1600, seed: int = 0) -> History:
    """A rack whose load follows a schedule known ahead: +300 W when sched = 1."""
    rng = np.random.default_rng(seed)
    ts = 300.0 * np.arange(n_rows)
    # On/off blocks that switch with probability 0.15 per step (many transitions to learn from).
    flips = rng.random((n_rows, 2)) < 0.15
    sched = (np.cumsum(flips, axis=0) % 2).astype(np.float64)
    values = 1000.0 + 300.0 * sched + rng.normal(0, 5, (n_rows, 2))
    return History(ts, ("a", "b"), values, {"sched": sched})


def test_lstm_uses_a_known_ahead_schedule() -> None:
    cfg = LSTMConfig(
        lookback=8, hidden=16, epochs=6, scale_rows=48, lr=1e-2, max_train_samples=2000
    )
    model = LSTMForecaster(cfg)
    model.fit(_scheduled(n_rows=1000))
    assert model.state is not None and model.state.exog_names == ("sched",)
    hist = _scheduled(seed=1)
    values, sched = hist.values.copy(), hist.exog["sched"].copy()
    values[-20:] = 1000.0 + np.random.default_rng(2).normal(0, 5, (20, 2))
    sched[-20:] = 0.0  # calm lately, like the training data between blocks
    calm = History(hist.timestamps_s, hist.series_ids, values, {"sched": sched})
    off = model.predict(calm, [300], {"sched": np.zeros((1, 2))})
    on = model.predict(calm, [300], {"sched": np.ones((1, 2))})
    # The schedule says +300 W next step: the forecast must move up clearly (a tiny model).
    assert np.all(on.point - off.point > 30.0)
    held = model.predict(calm, [300])  # no future given: the last (off) value is held
    np.testing.assert_allclose(held.point, off.point)


def test_future_exog_with_wrong_rows_is_rejected() -> None:
    cfg = LSTMConfig(lookback=8, hidden=4, epochs=1, scale_rows=48, max_train_samples=500)
    model = LSTMForecaster(cfg)
    model.fit(_scheduled(n_rows=400))
    with pytest.raises(ValueError, match="one per horizon"):
        model.predict(_scheduled(n_rows=100), [300, 600], {"sched": np.zeros((5, 2))})
