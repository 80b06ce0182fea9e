"""The global LSTM: shapes and units, non-crossing quantiles, calibration, determinism, gaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.forecast.base import Forecaster, History
from wattwheel.forecast.lstm import LSTMConfig, LSTMForecaster
from wattwheel.forecast.lstm_torch import QuantileLSTM

TINY = LSTMConfig(lookback=12, hidden=8, epochs=2, scale_rows=48, max_train_samples=3000)


def _synthetic(
    n_rows: int = 1500, n_series: int = 3, noise_w: float = 10.0, seed: int = 0
) -> History:
    """Daily cycle + Gaussian noise, racks of different size (5-minute grid)."""
    rng = np.random.default_rng(seed)
    ts = 300.0 * np.arange(n_rows)
    size = 1000.0 * (1 + np.arange(n_series))
    cycle = np.sin(2 * np.pi * ts / 86_400.0)[:, None]
    values = size * (1 + 0.1 * cycle) + rng.normal(0, noise_w, size=(n_rows, n_series)) * (
        size / 1000
    )
    return History(ts, tuple(f"rack{i}" for i in range(n_series)), values)


@pytest.fixture(scope="module")
def trained() -> LSTMForecaster:
    model = LSTMForecaster(TINY)
    model.fit(_synthetic())
    return model


def test_protocol_shapes_and_units(trained: LSTMForecaster) -> None:
    assert isinstance(trained, Forecaster)
    hist = _synthetic(seed=5)
    fc = trained.predict(hist, [300, 600, 900])
    assert fc.values.shape == (3, 3, 3) and fc.point.shape == (3, 3)
    assert fc.issued_at_s == hist.end_s
    # Watts, same magnitude as each rack (racks of 1, 2 and 3 kW).
    np.testing.assert_allclose(fc.point[:, 0] / hist.values[-1], 1.0, atol=0.1)
    assert np.all(np.diff(fc.values, axis=2) >= 0)


def test_horizons_between_trained_ones_interpolated_and_beyond_widened(
    trained: LSTMForecaster,
) -> None:
    hist = _synthetic(seed=6)
    fc = trained.predict(hist, [300, 450, 600])
    assert fc.values.shape == (3, 3, 3)
    lo, hi = np.minimum(fc.point[:, 0], fc.point[:, 2]), np.maximum(fc.point[:, 0], fc.point[:, 2])
    assert np.all((fc.point[:, 1] >= lo - 1e-9) & (fc.point[:, 1] <= hi + 1e-9))
    far = trained.predict(hist, [900, 1800])
    width = far.values[:, :, 2] - far.values[:, :, 0]
    np.testing.assert_allclose(width[:, 1] / width[:, 0], np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(far.point[:, 1], far.point[:, 0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), magnitude=st.floats(0.01, 100.0))
def test_quantile_head_never_crosses(seed: int, magnitude: float) -> None:
    """Any weights, any inputs: the levels come out ordered."""
    torch.manual_seed(seed)
    net = QuantileLSTM(7, 6, 5, 3, (0.05, 0.25, 0.5, 0.75, 0.95))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=magnitude)
    out = net(magnitude * torch.randn(16, 6, 7), torch.zeros(16, 0))
    assert torch.all(out[:, :, 1:] >= out[:, :, :-1])


def test_same_seed_same_model() -> None:
    hist = _synthetic(n_rows=600)
    a, b = LSTMForecaster(TINY), LSTMForecaster(TINY)
    a.fit(hist)
    b.fit(hist)
    fa, fb = a.predict(hist, [300, 900]), b.predict(hist, [300, 900])
    np.testing.assert_array_equal(fa.values, fb.values)


def test_nan_and_gaps_in_history(trained: LSTMForecaster) -> None:
    hist = _synthetic(seed=7)
    values = hist.values.copy()
    values[-20:-5, 0] = np.nan  # a gap
    values[-1, 1] = np.nan  # a stale last reading
    gappy = History(hist.timestamps_s, hist.series_ids, values)
    fc = trained.predict(gappy, [300, 600, 900])
    assert np.all(np.isfinite(fc.values))
    np.testing.assert_allclose(fc.point[1, 0] / values[-2, 1], 1.0, atol=0.1)
    values[:, 2] = np.nan
    with pytest.raises(ValueError, match="rack2"):
        trained.predict(History(hist.timestamps_s, hist.series_ids, values), [300])


def test_training_tolerates_gaps() -> None:
    hist = _synthetic(n_rows=600)
    values = hist.values.copy()
    values[100:130, 1] = np.nan
    model = LSTMForecaster(TINY)
    model.fit(History(hist.timestamps_s, hist.series_ids, values))
    assert np.all(np.isfinite(model.predict(hist, [300]).values))


def test_interval_covers_known_gaussian_noise(trained: LSTMForecaster) -> None:
    """White noise around a known cycle: the 90 % interval should cover about 90 %."""
    hist = _synthetic(n_rows=2400, seed=11)
    model = LSTMForecaster(TINY)
    model.state, model.net = trained.state, trained.net
    model.calibrate(History(hist.timestamps_s[:1200], hist.series_ids, hist.values[:1200]))
    hits = []
    for origin in range(1200, 2390, 3):
        past = History(hist.timestamps_s[: origin + 1], hist.series_ids, hist.values[: origin + 1])
        fc = model.predict(past, [300, 900])
        actual = hist.values[[origin + 1, origin + 3]].T
        hits.append((fc.values[:, :, 0] <= actual) & (actual <= fc.values[:, :, 2]))
    assert 0.85 <= float(np.mean(hits)) <= 0.95


def test_predict_never_changes_the_model(trained: LSTMForecaster) -> None:
    """DESIGN §8: the same forecast however often, and in whatever order, it is asked for."""
    hist = _synthetic(n_rows=800, seed=12)
    model = LSTMForecaster(TINY)
    model.state, model.net = trained.state, trained.net
    model.calibrator = trained.calibrator
    before = {s: model.calibrator.count(s) for s in model.calibrator.steps}
    late = model.predict(hist, [300, 900])
    for origin in range(700, 720):
        model.predict(
            History(hist.timestamps_s[:origin], hist.series_ids, hist.values[:origin]), [300]
        )
    assert {s: model.calibrator.count(s) for s in model.calibrator.steps} == before
    np.testing.assert_array_equal(model.predict(hist, [300, 900]).values, late.values)


def test_state_round_trip_predicts_the_same(trained: LSTMForecaster) -> None:
    meta, weights, calib = trained.to_state()
    clone = LSTMForecaster.from_state(meta, weights, calib)
    hist = _synthetic(seed=8)
    frozen = LSTMForecaster.from_state(meta, weights, calib)
    np.testing.assert_allclose(
        clone.predict(hist, [300, 900]).values, frozen.predict(hist, [300, 900]).values
    )


def test_untrained_and_wrong_step_are_clear_errors(trained: LSTMForecaster) -> None:
    hist = _synthetic(n_rows=100)
    with pytest.raises(ValueError, match="not trained"):
        LSTMForecaster(TINY).predict(hist, [300])
    seven_s = History(np.arange(100) * 7.0, hist.series_ids, hist.values)
    with pytest.raises(ValueError, match="7 s step"):
        trained.predict(seven_s, [300])


def test_ten_second_resolution_trains_and_predicts() -> None:
    """Horizons stay minutes: at 10 s they are 30, 60 and 90 steps ahead."""
    rng = np.random.default_rng(4)
    ts = 10.0 * np.arange(1500)
    values = 5000.0 + np.cumsum(rng.normal(0, 20, (1500, 2)), axis=0)
    hist = History(ts, ("a", "b"), values)
    model = LSTMForecaster(LSTMConfig(lookback=16, hidden=4, epochs=1, scale_rows=60))
    model.fit(hist)
    assert model.state is not None and model.state.steps == (30, 60, 90)
    fc = model.predict(hist, [300, 600, 900])
    assert fc.values.shape == (2, 3, 3) and fc.horizons_s == (300.0, 600.0, 900.0)
    assert np.all(np.isfinite(fc.values))


def test_fine_tune_continues_training_and_recalibrates(trained: LSTMForecaster) -> None:
    meta, weights, calib = trained.to_state()
    model = LSTMForecaster.from_state(meta, weights, calib)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}  # type: ignore[union-attr]
    model.fine_tune(_synthetic(n_rows=800, seed=21), epochs=1)
    after = model.net.state_dict()  # type: ignore[union-attr]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert model.state is not None and model.state.epochs_run == trained.state.epochs_run + 1  # type: ignore[union-attr]


def test_finer_history_is_averaged_onto_the_model_grid(trained: LSTMForecaster) -> None:
    """A 5-minute model fed 10 s readings forecasts from their 5-minute block means."""
    coarse = _synthetic(n_rows=200, seed=30)
    fine_values = np.repeat(coarse.values, 30, axis=0)  # each 5-min value held for 30 x 10 s
    fine_ts = coarse.timestamps_s[0] + 10.0 * np.arange(fine_values.shape[0]) - 290.0
    fine = History(fine_ts, coarse.series_ids, fine_values)
    model = LSTMForecaster(trained.config)
    model.state, model.net = trained.state, trained.net
    via_fine = model.predict(fine, [300, 900])
    via_coarse = model.predict(coarse, [300, 900])
    np.testing.assert_allclose(via_fine.values, via_coarse.values, rtol=1e-9)
    assert via_fine.issued_at_s == fine.end_s


def test_coarsen_handles_gaps_and_short_histories() -> None:
    from wattwheel.forecast.lstm import coarsen

    ts = 10.0 * np.arange(7)
    vals = np.array([1.0, 2.0, 3.0, np.nan, 5.0, 7.0, np.nan])[:, None]
    out = coarsen(History(ts, ("a",), vals), k=3, max_blocks=10)
    # Blocks end at the last row: [2, 3, nan] and [5, 7, nan]; the first row is left over.
    np.testing.assert_allclose(out.values[:, 0], [2.5, 6.0])
    np.testing.assert_allclose(out.timestamps_s, [30.0, 60.0])
    short = coarsen(History(ts[:2], ("a",), vals[:2]), k=3, max_blocks=10)
    assert short.values.shape == (2, 1) and short.step_s == 30.0
