"""Baselines: hand-checked point forecasts, horizon conversion, NaN handling, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.forecast.base import Forecaster, History
from wattwheel.forecast.baselines import (
    ARForecaster,
    LagSums,
    PersistenceForecaster,
    SeasonalNaiveForecaster,
)
from wattwheel.forecast.calibration import ResidualCalibrator, horizon_steps


def _history(values: np.ndarray, step_s: float = 300.0) -> History:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    ts = 1_000.0 + step_s * np.arange(values.shape[0])
    ids = tuple(f"r{i}" for i in range(values.shape[1]))
    return History(ts, ids, values)


def test_horizon_steps_round_up_min_one() -> None:
    assert horizon_steps([300, 600, 900], 300) == (1, 2, 3)
    assert horizon_steps([1, 301], 300) == (1, 2)
    assert horizon_steps([300], 10) == (30,)
    with pytest.raises(ValueError, match="positive"):
        horizon_steps([0], 300)


@pytest.mark.parametrize("cls", [PersistenceForecaster, SeasonalNaiveForecaster, ARForecaster])
def test_baselines_implement_protocol(cls: type) -> None:
    assert isinstance(cls(), Forecaster)


def test_persistence_returns_last_value_with_units_and_shapes() -> None:
    rng = np.random.default_rng(0)
    vals = 1000.0 + rng.normal(0, 10, size=(500, 2))
    vals[-1] = [1234.0, 987.0]
    f = PersistenceForecaster()
    fc = f.predict(_history(vals), [300, 600, 900])
    assert fc.values.shape == (2, 3, 3)
    assert fc.point.shape == (2, 3)
    np.testing.assert_allclose(fc.point, [[1234.0] * 3, [987.0] * 3])
    assert fc.horizons_s == (300.0, 600.0, 900.0)
    assert np.all(np.diff(fc.values, axis=2) >= 0)
    assert np.all(fc.values[:, :, 0] < fc.point) and np.all(fc.values[:, :, 2] > fc.point)


def test_persistence_skips_trailing_nan() -> None:
    vals = np.array([[5.0, 1.0], [6.0, np.nan], [np.nan, np.nan]])
    fc = PersistenceForecaster().predict(_history(vals), [300])
    np.testing.assert_allclose(fc.point[:, 0], [6.0, 1.0])


def test_persistence_all_nan_series_is_a_clear_error() -> None:
    vals = np.array([[5.0, np.nan], [6.0, np.nan], [7.0, np.nan]])
    with pytest.raises(ValueError, match="r1"):
        PersistenceForecaster().predict(_history(vals), [300])


def test_persistence_long_gap_at_tail_looks_further_back() -> None:
    vals = np.full((1000, 1), np.nan)
    vals[10, 0] = 42.0
    fc = PersistenceForecaster().predict(_history(vals), [300])
    assert fc.point[0, 0] == 42.0


def test_seasonal_naive_returns_value_one_season_ago() -> None:
    season = 12
    vals = np.arange(100, dtype=np.float64)
    f = SeasonalNaiveForecaster(season_s=season * 300.0)
    fc = f.predict(_history(vals), [300, 600, 13 * 300])
    # Row 112 is 13 steps ahead: two seasons back is row 88.
    np.testing.assert_allclose(fc.point[0], [88.0, 89.0, 88.0])


def test_ar_recovers_ar2_coefficients() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = 0.6 * x[t - 1] + 0.3 * x[t - 2] + rng.normal()
    f = ARForecaster(lags=2)
    f.fit(_history(x))
    _, a1, a2 = f.coef_
    assert a1 == pytest.approx(0.6, abs=0.03)
    assert a2 == pytest.approx(0.3, abs=0.03)


def test_ar_iterates_for_unfitted_horizon() -> None:
    vals = 100.0 + 10 * np.sin(np.arange(2000) / 20.0)
    f = ARForecaster(lags=4, horizons_s=[300])
    f.fit(_history(vals))
    fc = f.predict(_history(vals), [300, 1500])
    truth = 100.0 + 10 * np.sin(np.array([2000, 2004]) / 20.0)
    np.testing.assert_allclose(fc.point[0], truth, atol=0.1)


def test_ar_unfitted_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        ARForecaster().predict(_history(np.ones(100)), [300])


def test_calibrated_interval_covers_random_walk() -> None:
    rng = np.random.default_rng(2)
    vals = 1000.0 + np.cumsum(rng.normal(0, 5.0, size=(6000, 3)), axis=0)
    f = PersistenceForecaster()
    f.fit(_history(vals[:3000]))
    hits = []
    for origin in range(3000, 5990, 7):
        fc = f.predict(_history(vals[:origin]), [300, 900])
        actual = vals[[origin, origin + 2]].T
        hits.append((fc.values[:, :, 0] <= actual) & (actual <= fc.values[:, :, 2]))
    cover = np.mean(hits)
    assert 0.86 <= cover <= 0.94


def test_step_mismatch_after_fit_is_rejected() -> None:
    f = ARForecaster(lags=2)
    f.fit(_history(np.sin(np.arange(500) / 5.0) + 2.0))
    with pytest.raises(ValueError, match="refit"):
        f.predict(_history(np.ones(100), step_s=10.0), [300])


def test_calibrator_window_keeps_the_newest_residuals() -> None:
    cal = ResidualCalibrator((0.05, 0.5, 0.95), window=100)
    cal.add(1, np.arange(70, dtype=np.float64))
    cal.add(1, np.arange(70, 150, dtype=np.float64))
    assert cal.count(1) == 100
    rows = np.asarray(cal.state()["1"])
    np.testing.assert_array_equal(rows[:, 0], np.arange(50, 150))
    assert cal.offsets(1)[1] == pytest.approx(99.5)
    # Conformal rank at 0.95 with n = 100: ceil(101 * 0.95) = 96th smallest = 145.
    assert cal.offsets(1)[2] == 145.0


def test_seasonal_naive_shorter_than_a_season_still_has_an_interval() -> None:
    rng = np.random.default_rng(3)
    vals = 100.0 + rng.normal(0, 1.0, size=(50, 1))
    fc = SeasonalNaiveForecaster(season_s=86_400.0).predict(_history(vals), [300])
    assert fc.values[0, 0, 2] > fc.values[0, 0, 0]


def test_predict_is_pure_and_update_is_the_explicit_online_step() -> None:
    rng = np.random.default_rng(5)
    vals = 1000.0 + np.cumsum(rng.normal(0, 5.0, size=(2000, 2)), axis=0)
    f = PersistenceForecaster()
    first = f.predict(_history(vals[:1000]), [300, 600])
    # An unfitted forecaster calibrates a throw-away pool from the history it is given.
    assert f.calibrator.steps == () and first.values[0, 0, 2] > first.values[0, 0, 0]
    for end in range(1000, 1100):
        f.predict(_history(vals[:end]), [300, 600])
    assert f.calibrator.steps == ()
    np.testing.assert_array_equal(f.predict(_history(vals[:1000]), [300, 600]).values, first.values)
    f.update(_history(vals[:1000]), [300, 600])
    n1 = f.calibrator.count(1)
    assert n1 > 0 and f.calibrator.count(2) > 0
    f.update(_history(vals[:1010]), [300, 600])
    assert f.calibrator.count(1) == n1 + 10 * 2  # ten new rows x two series


def test_seasonal_naive_unfitted_predict_leaves_it_unfitted() -> None:
    f = SeasonalNaiveForecaster(season_s=3000.0)
    f.predict(_history(np.arange(100.0)), [300])
    assert f._season_steps == 0


def _ar_data(rows: int, series: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((rows, series))
    for t in range(2, rows):
        x[t] = 0.7 * x[t - 1] - 0.2 * x[t - 2] + rng.normal(size=series)
    return 1000.0 + 50.0 * np.arange(1, series + 1) + 20.0 * x


def test_ar_nested_solve_matches_the_per_step_normal_equations() -> None:
    """The lagged-product sums give the same coefficients and forecasts as a Gram matrix per
    step, for direct steps that are not contiguous and several series of different levels."""
    hist = _history(_ar_data(800, 3, seed=3))
    horizons = [300.0, 900.0, 3000.0]  # steps 1, 3, 10
    nested = ARForecaster(lags=6, horizons_s=horizons)
    per_step = ARForecaster(lags=6, horizons_s=horizons, solve="per_step")
    nested.fit_point(hist)
    per_step.fit_point(hist)
    assert sorted(nested.coefs) == [1, 3, 10]
    for step, coef in per_step.coefs.items():
        np.testing.assert_allclose(nested.coefs[step], coef, rtol=1e-7, atol=1e-9)
    asked = [300.0, 600.0, 900.0, 3000.0]  # 600 s iterates the one-step model
    np.testing.assert_allclose(
        nested.point_forecast(hist, asked), per_step.point_forecast(hist, asked), rtol=1e-10
    )


def test_ar_nested_solve_falls_back_where_the_samples_are_not_nested() -> None:
    """A missing target, or a ``max_rows`` cut, takes the per-step path: the same numbers."""
    values = _ar_data(600, 2, seed=4)
    values[300, 1] = np.nan
    for hist, max_rows in ((_history(values), 200_000), (_history(_ar_data(600, 2, 5)), 500)):
        nested = ARForecaster(lags=4, horizons_s=[300.0, 900.0], max_rows=max_rows)
        per_step = ARForecaster(
            lags=4, horizons_s=[300.0, 900.0], max_rows=max_rows, solve="per_step"
        )
        nested.fit_point(hist)
        per_step.fit_point(hist)
        for step, coef in per_step.coefs.items():
            np.testing.assert_array_equal(nested.coefs[step], coef)


def test_ar_unknown_solve_is_rejected() -> None:
    with pytest.raises(ValueError, match="solve"):
        ARForecaster(solve="qr")


def test_ar_fits_of_two_orders_share_lagged_sums_on_the_same_rows() -> None:
    """An AR(6) fitted after an AR(10) on the same rows takes the AR(10)'s lagged sums: the
    same coefficients as on its own; on other rows the sums are not taken."""
    hist = _history(_ar_data(700, 3, seed=6))
    other = _history(_ar_data(700, 3, seed=7))
    horizons = [300.0, 600.0, 900.0]
    sums = LagSums()
    ARForecaster(lags=10, horizons_s=horizons).fit_point(hist, sums)
    assert sums.cum is not None and sums.cum.shape == (701, 13)
    for rows in (hist, other):  # the AR(10)'s rows, then other rows (recomputed)
        shared, alone = (ARForecaster(lags=6, horizons_s=horizons) for _ in range(2))
        shared.fit_point(rows, sums)
        alone.fit_point(rows)
        for step, coef in alone.coefs.items():
            np.testing.assert_allclose(shared.coefs[step], coef, rtol=1e-12, atol=1e-12)
    assert sums.cum.shape == (701, 9)  # recomputed on the other rows, as wide as AR(6) needs
