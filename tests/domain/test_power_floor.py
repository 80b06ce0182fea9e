"""The GPU power floor on ramp-down: never below the work, slow decay, energy accounted."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.power_floor import PowerFloor, apply_floor, floor_energy_kwh


def test_a_drop_is_held_at_the_floor_and_decays_at_the_set_rate() -> None:
    demand = np.array([[30.0]] * 3 + [[10.0]] * 40)  # a 20 kW drop (a job fails), dt = 1 s
    out = apply_floor(demand, 1.0, PowerFloor(floor_fraction=0.9, decay_kw_per_s=1.0))
    assert out[2, 0] == 30.0
    assert out[3, 0] == pytest.approx(0.9 * 29.0)  # envelope one step down, 90 % of it
    falls = -np.diff(out[3:, 0])
    assert falls.max() <= 0.9 * 1.0 + 1e-12  # never faster than floor x decay after that
    assert out[-1, 0] == pytest.approx(10.0)  # down to the work once the envelope has decayed
    assert np.all(out >= demand)


def test_rises_pass_through_and_energy_counts_only_the_burned_part() -> None:
    demand = np.array([[10.0, 5.0], [40.0, 5.0], [10.0, 5.0]])
    out = apply_floor(demand, 0.5, PowerFloor(floor_fraction=1.0, decay_kw_per_s=2.0))
    np.testing.assert_allclose(out[:, 0], [10.0, 40.0, 39.0])
    np.testing.assert_allclose(out[:, 1], 5.0)
    assert floor_energy_kwh(demand, out, 0.5) == pytest.approx(29.0 * 0.5 / 3600)


def test_no_floor_changes_nothing() -> None:
    demand = np.array([[30.0], [1.0], [20.0]])
    np.testing.assert_array_equal(apply_floor(demand, 1.0, PowerFloor(floor_fraction=0.0)), demand)


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("floor_fraction", {"floor_fraction": 1.5}),
        ("decay_kw_per_s", {"decay_kw_per_s": 0.0}),
    ],
)
def test_bad_parameters_name_the_key(key: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=key):
        PowerFloor(**kwargs)
