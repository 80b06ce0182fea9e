"""LSTM input features: gap filling, scales, windows, calendar."""

from __future__ import annotations

import numpy as np

from wattwheel.forecast.features import (
    calendar_features,
    last_scale,
    prepare,
    rolling_scale,
    targets,
    windows,
)
from wattwheel.forecast.fill import forward_fill


def test_forward_fill_and_leading_backfill() -> None:
    vals = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [5.0, 3.0]])
    out = forward_fill(vals)
    np.testing.assert_array_equal(out, [[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [5.0, 3.0]])


def test_rolling_scale_is_mean_abs_change_and_last_scale_matches() -> None:
    rng = np.random.default_rng(0)
    filled = 1000 + np.cumsum(rng.normal(0, 3, (500, 4)), axis=0)
    full = rolling_scale(filled, 50)
    expected = np.abs(np.diff(filled[-51:], axis=0)).mean(axis=0)
    np.testing.assert_allclose(full[-1], expected)
    np.testing.assert_allclose(last_scale(filled, 50)[-1], full[-1])
    np.testing.assert_allclose(last_scale(filled[:20], 50)[-1], rolling_scale(filled[:20], 50)[-1])


def test_calendar_features_cycle_daily_and_weekly() -> None:
    cal = calendar_features(np.array([0.0, 86_400.0, 6 * 3600.0]))
    np.testing.assert_allclose(cal[0, :2], cal[1, :2], atol=1e-12)
    np.testing.assert_allclose(cal[2, :2], [1.0, 0.0], atol=1e-12)


def test_windows_and_targets_are_relative_to_the_last_value() -> None:
    ts = 300.0 * np.arange(10)
    vals = np.arange(10, dtype=np.float64)[:, None] * 2.0
    vals[7, 0] = np.nan
    arrays = prepare(ts, vals, {}, (), {}, scale_rows=5)
    x = windows(arrays, np.array([8]), np.array([0]), lookback=4)
    assert x.shape == (1, 4, 7)
    scale = arrays.scale[8, 0]
    # rows 5, 6, 7 (gap: filled with row 6), 8 relative to row 8 = 16
    np.testing.assert_allclose(x[0, :, 0], (np.array([10.0, 12.0, 12.0, 16.0]) - 16.0) / scale)
    np.testing.assert_array_equal(x[0, :, 2], [1, 1, 0, 1])
    y = targets(arrays, vals, np.array([6]), np.array([0]), (1, 2))
    assert np.isnan(y[0, 0]) and y[0, 1] == (16.0 - 12.0) / arrays.scale[6, 0]
