"""The pure telemetry-trust rules: plausibility, disagreement with the meter, and the
"never lower, never let a spoof raise" choice of a rack's demand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattwheel.domain.telemetry_trust import TrustRules, disagrees, plausible, rack_demand_w

RULES = TrustRules(tolerance=0.1, tolerance_floor_w=500.0, max_future_s=5.0)
NAN = float("nan")


def test_plausible_bounds_power_and_future_timestamps() -> None:
    power = np.array([1000.0, -1.0, NAN, 2e6, 1000.0, 1000.0, 1000.0])
    ts = np.array([100.0, 100.0, 100.0, 100.0, 105.0, 105.1, np.inf])
    limit = np.full(7, 1e6)
    assert plausible(power, ts, limit, 100.0, RULES).tolist() == [
        True,  # fine
        False,  # negative
        False,  # NaN
        False,  # above the rack's rating
        True,  # 5 s ahead: within the skew
        False,  # beyond it
        False,  # not a time
    ]


def test_disagreement_needs_both_and_a_margin() -> None:
    meter = np.array([100_000.0, 100_000.0, 100_000.0, NAN, 1000.0])
    other = np.array([109_000.0, 120_000.0, 50_000.0, 1.0, 1400.0])
    # 9 % off: agrees; +20 %, -50 %: disagree; no meter: nothing to say; 400 W < floor.
    assert disagrees(meter, other, RULES).tolist() == [False, True, True, False, False]


def test_the_meter_wins_over_any_other_source() -> None:
    meter = np.array([122_000.0, 50_000.0])
    fallbacks = np.array([[61_000.0, 100_000.0], [NAN, 240_000.0]])  # half-draw / 2x spoofs
    assert rack_demand_w(meter, fallbacks).tolist() == [122_000.0, 50_000.0]


def test_without_a_meter_the_highest_source_counts_and_none_is_nan() -> None:
    meter = np.array([NAN, NAN, NAN])
    fallbacks = np.array([[40_000.0, NAN, NAN], [45_000.0, 7.0, NAN]])
    got = rack_demand_w(meter, fallbacks)
    assert got[:2].tolist() == [45_000.0, 7.0] and np.isnan(got[2])


def test_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        TrustRules(tolerance=-0.1)
    with pytest.raises(ValueError, match="max_future_s"):
        TrustRules(max_future_s=-1.0)


_watts = st.floats(0.0, 2e6, allow_nan=False) | st.just(NAN)


@given(st.lists(st.tuples(_watts, _watts, _watts), min_size=1, max_size=20))
def test_a_disagreeing_source_never_lowers_nor_raises_a_metered_rack(
    racks: list[tuple[float, float, float]],
) -> None:
    meter, a, b = (np.array(col) for col in zip(*racks, strict=True))
    demand = rack_demand_w(meter, np.stack([a, b]))
    metered = np.isfinite(meter)
    assert np.array_equal(demand[metered], meter[metered])  # exactly the meter
    # Unmetered: never below any known source (no source can hide load).
    for source in (a, b):
        known = ~metered & np.isfinite(source)
        assert np.all(demand[known] >= source[known])
