"""Grid-signal metrics on hand-made signals whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wattwheel.domain import grid_signal as gs


def _sine(amplitude: float, freq_hz: float, dt_s: float, duration_s: float = 600.0) -> np.ndarray:
    t = np.arange(int(duration_s / dt_s)) * dt_s
    return 50.0 + amplitude * np.sin(2 * math.pi * freq_hz * t)


def test_ramps_per_feed_and_worst_feed_statistics() -> None:
    # Feed 0 ramps 2 kW per 0.5 s step once (4 kW/s); feed 1 ramps 0.25 kW per step always.
    feed0 = np.array([10.0, 10.0, 12.0, 12.0, 12.0])
    feed1 = np.array([5.0, 5.25, 5.5, 5.75, 6.0])
    grid = np.column_stack([feed0, feed1])
    np.testing.assert_allclose(gs.ramps_kw_per_s(grid, 0.5)[:, 0], [0, 4, 0, 0])
    m = gs.ramp_metrics(grid, 0.5, limit_kw_per_s=1.0)
    assert m["max_grid_ramp_kw_per_s"] == pytest.approx(4.0)
    # worst feed per interval: [0.5, 4, 0.5, 0.5] -> one interval in four over 1 kW/s
    assert m["ramp_over_limit_seconds_share"] == pytest.approx(0.25)
    assert m["p99_grid_ramp_kw_per_s"] == pytest.approx(np.percentile([0.5, 4, 0.5, 0.5], 99))
    assert "ramp_over_limit_seconds_share" not in gs.ramp_metrics(grid, 0.5, None)


def test_ramp_exactly_at_the_limit_is_not_over() -> None:
    grid = np.arange(0.0, 10.0, 0.1)  # 1 kW/s at dt 0.1 s
    assert gs.ramp_metrics(grid, 0.1, 1.0)["ramp_over_limit_seconds_share"] == 0.0
    assert gs.ramp_metrics(grid, 0.1, 0.99)["ramp_over_limit_seconds_share"] == 1.0


def test_bad_step_is_refused() -> None:
    with pytest.raises(ValueError, match="dt_s"):
        gs.ramps_kw_per_s(np.zeros(3), 0.0)


@pytest.mark.parametrize("freq_hz", [0.5, 1.0, 3.0])
def test_in_band_sine_has_half_its_squared_amplitude(freq_hz: float) -> None:
    power = gs.band_power(_sine(4.0, freq_hz, 0.1), 0.1)
    assert power == pytest.approx(4.0**2 / 2, rel=0.02)


def test_out_of_band_sine_and_a_constant_carry_almost_nothing() -> None:
    slow = gs.band_power(_sine(4.0, 0.01, 0.1), 0.1)  # 100 s period: below 0.1 Hz
    assert slow is not None and slow < 1e-3 * 4.0**2 / 2
    assert gs.band_power(np.full(6000, 7.0), 0.1) == pytest.approx(0.0, abs=1e-12)


def test_a_sine_above_nyquist_of_a_coarse_step_gives_no_figure() -> None:
    assert gs.band_edges_hz(1.0) is None
    assert gs.band_power(_sine(4.0, 0.2, 1.0), 1.0) is None
    assert gs.band_edges_hz(0.1) == (0.1, 5.0)
    assert gs.band_edges_hz(0.01) == (0.1, 20.0)


def test_reduction_in_db_of_a_ten_times_smaller_swing_is_20_db() -> None:
    big = gs.band_power(_sine(10.0, 1.0, 0.1), 0.1)
    small = gs.band_power(_sine(1.0, 1.0, 0.1), 0.1)
    assert big is not None and small is not None
    assert gs.band_power_reduction_db(small, big) == pytest.approx(20.0, abs=0.05)
    assert gs.band_power_reduction_db(big, big) == pytest.approx(0.0)
    assert gs.band_power_reduction_db(0.0, big) == pytest.approx(120.0)  # the floor, finite
    assert gs.band_power_reduction_db(1.0, 0.0) == 0.0
