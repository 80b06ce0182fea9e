"""The statsforecast adapter: mapping of intervals to quantiles (with a fake model), and the
real AutoETS when statsforecast is installed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from wattwheel.forecast.base import Forecaster, History
from wattwheel.forecast.statsforecast_adapter import (
    StatsForecastForecaster,
    autoets_factory,
    statsforecast_available,
)


class FakeModel:
    """Mean = last value + 1 per step; intervals +-2 per level-percent/10 (known answers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []

    def forecast(self, y: np.ndarray, h: int, level: list[int]) -> dict[str, Any]:
        self.calls.append((h, level))
        mean = y[-1] + np.arange(1, h + 1, dtype=np.float64)
        out: dict[str, Any] = {"mean": mean}
        for lv in level:
            out[f"lo-{lv}"] = mean - lv / 10
            out[f"hi-{lv}"] = mean + lv / 10
        return out


def _history() -> History:
    values = np.array([[10.0, 100.0], [11.0, np.nan], [12.0, np.nan]])
    return History(300.0 * np.arange(3), ("a", "b"), values)


def test_intervals_map_to_quantiles_at_the_right_steps() -> None:
    fake = FakeModel()
    f = StatsForecastForecaster("fake", lambda: fake, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95))
    assert isinstance(f, Forecaster)
    fc = f.predict(_history(), [300, 900])
    assert fake.calls[0] == (3, [50, 90])
    np.testing.assert_allclose(fc.point, [[13.0, 15.0], [101.0, 103.0]])  # NaN tail filled
    np.testing.assert_allclose(fc.values[0, 1], [15 - 9, 15 - 5, 15, 15 + 5, 15 + 9])


def test_non_integer_level_rejected() -> None:
    with pytest.raises(ValueError, match="non-integer"):
        StatsForecastForecaster("x", FakeModel, quantiles=(0.333, 0.5))


@pytest.mark.skipif(not statsforecast_available(), reason="statsforecast is not installed")
def test_real_autoets_forecasts() -> None:
    rng = np.random.default_rng(0)
    values = 1000 + np.cumsum(rng.normal(0, 5, (600, 1)), axis=0)
    hist = History(300.0 * np.arange(600), ("a",), values)
    fc = StatsForecastForecaster("autoets", autoets_factory(288)).predict(hist, [300, 900])
    assert fc.values.shape == (1, 2, 3)
    assert np.all(np.diff(fc.values, axis=2) >= 0)
    assert abs(fc.point[0, 0] - values[-1, 0]) < 50
