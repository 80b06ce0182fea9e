"""The AR blend: fixed weights, a local AR per call, pure predict, wiring from metadata.json."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from wattwheel.adapters.model_artifact import (
    ModelArtifactError,
    load_forecaster,
    shipped_model_dir,
)
from wattwheel.forecast.base import FloatArray, Forecast, History
from wattwheel.forecast.baselines import ARForecaster
from wattwheel.forecast.conformal import ConformalForecaster
from wattwheel.forecast.hybrid import ARBlendForecaster

HORIZONS_S = (300.0, 600.0, 900.0)


class Flat:
    """Always forecasts 1,000 W with a +-10 W band."""

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
    """Two AR(1) series around 5 kW (mean-reverting: the AR beats a flat 1 kW by far)."""
    rng = np.random.default_rng(seed)
    values = np.empty((n_rows, 2))
    values[0] = 5000.0
    for t in range(1, n_rows):
        values[t] = 5000.0 + 0.8 * (values[t - 1] - 5000.0) + rng.normal(0, 50.0, 2)
    return History(300.0 * np.arange(n_rows), ("a", "b"), values)


def test_weight_one_is_the_inner_forecast() -> None:
    history = _ar_series()
    blend = ARBlendForecaster(Flat(), HORIZONS_S, [1.0, 1.0, 1.0])
    fc = blend.predict(history, HORIZONS_S)
    np.testing.assert_array_equal(fc.point, 1000.0)


def test_weight_zero_is_an_ar_fitted_on_the_recent_past_with_the_inner_band() -> None:
    history = _ar_series()
    blend = ARBlendForecaster(Flat(), HORIZONS_S, [0.0, 0.0, 0.0], ar_rows=1000)
    fc = blend.predict(history, HORIZONS_S)
    ar = ARForecaster(horizons_s=HORIZONS_S)
    ar.fit(history.tail(1000))
    expected = ar.predict(history.tail(1000), HORIZONS_S).point
    np.testing.assert_allclose(fc.point, expected)
    np.testing.assert_allclose(fc.values[:, :, 2] - fc.point, 10.0)
    np.testing.assert_allclose(fc.point - fc.values[:, :, 0], 10.0)


def test_weights_interpolate_between_horizons_and_mix_the_points() -> None:
    history = _ar_series()
    blend = ARBlendForecaster(Flat(), (300.0, 900.0), [1.0, 0.0])
    np.testing.assert_allclose(blend.weights_at(HORIZONS_S), [1.0, 0.5, 0.0])
    half = blend.predict(history, HORIZONS_S).point[:, 1]
    ar_only = ARBlendForecaster(Flat(), HORIZONS_S, [0.0] * 3).predict(history, HORIZONS_S)
    np.testing.assert_allclose(half, 0.5 * 1000.0 + 0.5 * ar_only.point[:, 1])


def test_predict_is_pure_and_a_short_past_falls_back_to_the_inner_forecast() -> None:
    history = _ar_series()
    blend = ARBlendForecaster(Flat(), HORIZONS_S, [0.5, 0.5, 0.5])
    first = blend.predict(history, HORIZONS_S)
    blend.predict(history.tail(500), HORIZONS_S)
    again = blend.predict(history, HORIZONS_S)
    np.testing.assert_array_equal(first.values, again.values)
    assert np.all(np.abs(first.point - 1000.0) > 100.0)
    short = blend.predict(history.tail(50), HORIZONS_S)
    np.testing.assert_array_equal(short.point, 1000.0)


def test_blend_beats_the_worse_of_its_parts_in_a_backtest() -> None:
    history = _ar_series(seed=1)
    blend = ARBlendForecaster(Flat(), HORIZONS_S, [0.2, 0.2, 0.2])
    errors = []
    for o in range(1200, 1490, 10):
        past = History(history.timestamps_s[: o + 1], history.series_ids, history.values[: o + 1])
        fc = blend.predict(past, HORIZONS_S)
        errors.append(np.abs(fc.point[:, 0] - history.values[o + 1]))
    assert float(np.mean(errors)) < 1000.0  # flat alone is ~4,000 W off


def test_invalid_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="one weight per horizon"):
        ARBlendForecaster(Flat(), HORIZONS_S, [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ARBlendForecaster(Flat(), HORIZONS_S, [0.5, 1.5, 0.5])


def _copy_shipped(tmp_path: Path, blend: object) -> Path:
    target = tmp_path / "model"
    shutil.copytree(shipped_model_dir(), target)
    meta = target / "metadata.json"
    document = json.loads(meta.read_text())
    document.pop("ar_blend", None)
    if blend is not None:
        document["ar_blend"] = blend
    meta.write_text(json.dumps(document))
    return target


def test_metadata_ar_blend_wraps_the_loaded_model(tmp_path: Path) -> None:
    plain = load_forecaster(_copy_shipped(tmp_path / "a", None), online=False)
    assert not isinstance(plain, ARBlendForecaster)
    section = {"horizons_s": [300, 600, 900], "inner_weight": [0.25, 0.5, 0.75], "ar_rows": 500}
    blended = load_forecaster(_copy_shipped(tmp_path / "b", section), online=True)
    assert isinstance(blended, ConformalForecaster)
    inner = blended.inner
    assert isinstance(inner, ARBlendForecaster)
    assert inner.inner_weight == (0.25, 0.5, 0.75)
    assert inner.ar_rows == 500


def test_a_bad_ar_blend_section_names_the_problem(tmp_path: Path) -> None:
    bad = _copy_shipped(tmp_path, {"horizons_s": [300], "inner_weight": [2.0]})
    with pytest.raises(ModelArtifactError, match="ar_blend"):
        load_forecaster(bad)
