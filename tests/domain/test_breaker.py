"""Inverse-time breaker model: curve points, log-log interpolation, heating to a trip, cooling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wattwheel.domain import breaker as br

# The site file's default curve (UL 489-like): 110 % 4 h, 135 % 1 h, 200 % 2 min, 600 % 50 ms.
CURVE = br.BreakerParams(
    pickup_ratio=1.0,
    curve_ratio=(1.1, 1.35, 2.0, 6.0),
    curve_seconds=(14400.0, 3600.0, 120.0, 0.05),
    cooling_tau_s=900.0,
)


def allowed(ratio: float) -> float:
    return float(br.allowed_seconds(CURVE, np.array([ratio]))[0])


@pytest.mark.parametrize(
    ("ratio", "seconds"), [(1.1, 14400.0), (1.35, 3600.0), (2.0, 120.0), (6.0, 0.05)]
)
def test_allowed_time_at_curve_points(ratio: float, seconds: float) -> None:
    assert allowed(ratio) == pytest.approx(seconds)


def test_no_trip_at_or_below_pickup() -> None:
    assert math.isinf(allowed(1.0))
    assert math.isinf(allowed(0.5))


def test_outside_the_curve_the_end_points_apply() -> None:
    # Above pickup but below the first point: the first point's 4 h; beyond the last: 50 ms.
    assert allowed(1.05) == pytest.approx(14400.0)
    assert allowed(10.0) == pytest.approx(0.05)


def test_log_log_interpolation() -> None:
    # At the geometric mean of 1.35 and 2.0 (1.6431677), log-log interpolation gives the
    # geometric mean of 3600 s and 120 s: sqrt(432000) = 657.267 s.
    assert allowed(math.sqrt(1.35 * 2.0)) == pytest.approx(math.sqrt(3600.0 * 120.0))
    # At 150 %: fraction ln(1.5/1.35)/ln(2/1.35) = 0.268063 of the way in log space:
    # 3600 · (120/3600)^0.268063 = 1446.57 s.
    assert allowed(1.5) == pytest.approx(1446.57, rel=1e-5)


def test_sustained_135_percent_trips_in_about_an_hour() -> None:
    heat = np.zeros(1)
    dt_s = 10.0
    elapsed = 0.0
    while not br.tripped(heat)[0]:
        heat = br.step_heat(CURVE, heat, np.array([1.35]), dt_s)
        elapsed += dt_s
        assert elapsed < 7200, "no trip after 2 h at 135 %"
    # 1/3600 of the budget per second → 3600 s (±1 step of float rounding).
    assert elapsed == pytest.approx(3600.0, abs=dt_s)


def test_half_an_hour_at_135_percent_does_not_trip() -> None:
    heat = br.step_heat(CURVE, np.zeros(1), np.array([1.35]), 1800.0)
    assert heat[0] == pytest.approx(0.5)
    assert not br.tripped(heat)[0]


def test_cooling_below_pickup_decays_exponentially() -> None:
    # One time constant (900 s) at 90 %: 0.5 · e^-1 = 0.1839397.
    heat = br.step_heat(CURVE, np.array([0.5]), np.array([0.9]), 900.0)
    assert heat[0] == pytest.approx(0.5 * math.exp(-1.0))


def test_heat_remembers_a_recent_overload() -> None:
    # 30 min at 135 % (heat ½), 15 min cool (½e^-1 = 0.184), then 135 % again: the trip comes
    # after (1 − 0.184)·3600 = 2938 s, sooner than from cold.
    heat = br.step_heat(CURVE, np.zeros(1), np.array([1.35]), 1800.0)
    heat = br.step_heat(CURVE, heat, np.array([0.8]), 900.0)
    left_s = (1.0 - heat[0]) * 3600.0
    assert left_s == pytest.approx((1 - 0.5 * math.exp(-1)) * 3600.0)
    heat = br.step_heat(CURVE, heat, np.array([1.35]), left_s + 1.0)
    assert br.tripped(heat)[0]
