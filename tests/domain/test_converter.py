"""The flywheel converter's own loop: ramp-limited feed, latency, limits, never exporting."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.domain import converter
from wattwheel.domain.converter import ConverterSettings, ConverterSpec, ConverterState
from wattwheel.domain.errors import ConfigError

BIG = np.array([1e6])


def _settings(ramp: float = 1.0, ceiling: float = 1e6, floor: float = 0.0) -> ConverterSettings:
    return ConverterSettings(
        ramp_limit_kw_per_s=np.array([ramp]),
        floor_kw=np.array([floor]),
        ceiling_kw=np.array([ceiling]),
        soc_low=np.array([0.3]),
        soc_high=np.array([0.7]),
    )


def _trace(
    spec: ConverterSpec,
    settings: ConverterSettings,
    loads: list[float],
    periods: int = 1,
    limit: np.ndarray = BIG,
) -> tuple[np.ndarray, np.ndarray]:
    """Feed and bank power per call, on a load given per call of ``periods`` periods."""
    state = ConverterState.start(spec, np.array([loads[0]]))
    grid, kes = [], []
    for load in loads:
        out = converter.run(
            spec,
            settings,
            state,
            np.array([load]),
            periods,
            np.array([0.5]),
            np.array([50.0]),
            limit,
            limit,
        )
        grid.append(float(out.grid_kw[0]))
        kes.append(float(out.kes_kw[0]))
    return np.array(grid), np.array(kes)


def test_dc_link_feed_ramps_at_most_the_limit_through_a_load_step() -> None:
    spec = ConverterSpec(control_period_s=0.01, measurement_latency_s=0.03)
    grid, kes = _trace(spec, _settings(ramp=1.0), [20.0] * 10 + [45.0] * 500)
    ramps = np.abs(np.diff(grid)) / 0.01
    assert ramps.max() <= 1.0 + 1e-9
    # The bank carried the jump at once: load - feed.
    assert kes[10] == pytest.approx(45.0 - grid[10])
    assert kes[10] > 24.0


def test_parallel_feed_sees_the_jump_for_the_measurement_latency() -> None:
    spec = ConverterSpec(control_period_s=0.01, measurement_latency_s=0.03, topology="parallel")
    grid, _ = _trace(spec, _settings(ramp=1.0), [20.0] * 10 + [45.0] * 100)
    # For the three periods before the converter has measured it, the feed takes the step.
    assert grid[10:13] == pytest.approx([45.0] * 3, abs=1e-6)
    # Then the bank takes over and the feed comes back down toward its ramp-limited reference.
    assert grid[40] < 30.0


def test_a_longer_latency_or_lower_bandwidth_costs_the_parallel_feed_more() -> None:
    loads = [20.0] * 10 + [45.0] * 100
    fast = _trace(
        ConverterSpec(measurement_latency_s=0.01, topology="parallel"), _settings(), loads
    )
    slow = _trace(
        ConverterSpec(measurement_latency_s=0.05, topology="parallel"), _settings(), loads
    )
    soft = _trace(
        ConverterSpec(measurement_latency_s=0.01, bandwidth_hz=2.0, topology="parallel"),
        _settings(),
        loads,
    )
    excess = lambda g: float(np.sum(g - 20.0))  # noqa: E731
    assert excess(slow[0]) > excess(fast[0])
    assert excess(soft[0]) > excess(fast[0])


def test_bank_at_its_power_limit_leaves_the_rest_on_the_feed() -> None:
    spec = ConverterSpec(measurement_latency_s=0.0)
    grid, kes = _trace(spec, _settings(), [20.0, 45.0, 45.0], limit=np.array([10.0]))
    assert kes[1] == pytest.approx(10.0)
    assert grid[1] == pytest.approx(35.0)
    # The reference restarts from what the feed really draws: no step back down.
    assert grid[2] == pytest.approx(35.0, abs=0.02)


def test_never_exports_and_respects_ceiling_and_floor() -> None:
    spec = ConverterSpec(measurement_latency_s=0.0)
    # The load drops to nothing: the bank may charge but never pushes power into the grid.
    grid, kes = _trace(spec, _settings(ramp=1000.0), [30.0] * 5 + [0.0] * 50)
    assert (kes <= 1e-9 + np.maximum(np.array([30.0] * 5 + [0.0] * 50), 0.0)).all()
    assert (grid >= -1e-9).all()
    # A ceiling below the load: the bank supplies the rest (within its limits).
    grid, _ = _trace(spec, _settings(ramp=1000.0, ceiling=25.0), [30.0] * 200)
    assert grid[-1] == pytest.approx(25.0, abs=1e-6)
    grid, _ = _trace(spec, _settings(ramp=1000.0, floor=10.0), [5.0] * 200)
    assert grid[-1] == pytest.approx(10.0, abs=1e-6)


def test_soc_outside_the_band_pulls_the_reference_back() -> None:
    spec = ConverterSpec(measurement_latency_s=0.0)
    state = ConverterState.start(spec, np.array([20.0]))
    args = (np.array([50.0]), BIG, BIG)
    low = converter.run(
        spec, _settings(ramp=1e3), state, np.array([20.0]), 50, np.array([0.1]), *args
    )
    state = ConverterState.start(spec, np.array([20.0]))
    high = converter.run(
        spec, _settings(ramp=1e3), state, np.array([20.0]), 50, np.array([0.9]), *args
    )
    assert low.kes_kw[0] < 0.0  # recharging: the feed draws more than the load
    assert high.kes_kw[0] > 0.0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"control_period_s": 0.0}, "control_period_s"),
        ({"measurement_latency_s": -0.01}, "measurement_latency_s"),
        ({"bandwidth_hz": 0.0}, "bandwidth_hz"),
        ({"topology": "series"}, "topology"),
    ],
)
def test_bad_spec_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ConverterSpec(**kwargs)  # type: ignore[arg-type]


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="floor_kw"):
        _settings(floor=50.0, ceiling=10.0)
    with pytest.raises(ConfigError, match="ramp_limit"):
        _settings(ramp=0.0)
