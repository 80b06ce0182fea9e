"""The flywheel's power converter as a device with its own sub-second loop. Pure.

The HPMC does not chase each second of an AI-training swing: with its ~1 s measurement
latency it would act on swings long gone. The converter between the feed, the load and the
flywheel regulates the feed's power locally, on its own measurement, every
``control_period_s``; the HPMC only sets its *parameters* (:class:`ConverterSettings`, written
over SunSpec/Modbus, see ``docs/sunspec-flywheel.md``): the ramp limit, a floor and a ceiling
for the feed's draw, and the SoC band the bank must stay in.

The device (:class:`ConverterSpec`, its nameplate):

* it measures the load power ``measurement_latency_s`` late (whole control periods), through a
  first-order low-pass filter of ``bandwidth_hz`` (the sensor and current loop);
* every control period it moves the feed-power reference ``r`` toward a target by at most
  ``ramp_limit x control_period``. The target is the filtered load smoothed again with the
  time constant ``smoothing_s`` (the grid follows the work's mean, not its iterations), plus a
  SoC correction: ``soc_gain_inside`` x rated power per unit of SoC away from the middle of the
  band, and ``soc_gain_outside`` per unit beyond the band's edges; then clipped to
  [floor, ceiling];
* topology ``dc-link`` (a double-conversion stage, the bank on the DC link, e.g. a DC
  flywheel on a UPS bus): the feed draws the rectifier's reference ``r`` and the DC link makes
  the bank supply or absorb ``load - r`` at once. The measurement latency then only delays the
  reference's view of the load (the bank carries the error); the feed sees a jump only when the
  bank is at a power or energy limit;
* topology ``parallel`` (a line-interactive converter beside the load): the bank injects
  ``measured load - r`` and the feed carries the rest, so every load change reaches the feed
  for the measurement latency and the filter's settling time.

Either way the bank power is clipped to what it can do (charge/discharge limits for the step,
never exporting to the grid); whatever it cannot carry lands on the feed, and the reference
restarts from what the feed really draws. Arrays are per domain, shape (D,), kW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import ConfigError

FloatArray = NDArray[np.float64]

TOPOLOGIES = ("dc-link", "parallel")


@dataclass(frozen=True)
class ConverterSpec:
    """The converter's own loop (device nameplate, read-only over Modbus)."""

    control_period_s: float = 0.01
    measurement_latency_s: float = 0.02
    bandwidth_hz: float = 10.0
    topology: str = "dc-link"

    def __post_init__(self) -> None:
        if not self.control_period_s > 0:
            raise ConfigError("control_period_s", self.control_period_s, "must be > 0 s")
        if not self.measurement_latency_s >= 0:
            raise ConfigError("measurement_latency_s", self.measurement_latency_s, "must be >= 0 s")
        if not self.bandwidth_hz > 0:
            raise ConfigError("bandwidth_hz", self.bandwidth_hz, "must be > 0 Hz")
        if self.topology not in TOPOLOGIES:
            raise ConfigError("topology", self.topology, f"one of {TOPOLOGIES}")

    @property
    def latency_periods(self) -> int:
        """The measurement latency in whole control periods (rounded)."""
        return int(round(self.measurement_latency_s / self.control_period_s))

    @property
    def filter_alpha(self) -> float:
        """Per-period gain of the first-order measurement filter."""
        return 1.0 - math.exp(-2.0 * math.pi * self.bandwidth_hz * self.control_period_s)


@dataclass(frozen=True)
class ConverterSettings:
    """What the HPMC sets (per domain, arrays (D,)); the converter holds them until changed."""

    ramp_limit_kw_per_s: FloatArray
    floor_kw: FloatArray
    ceiling_kw: FloatArray
    soc_low: FloatArray
    soc_high: FloatArray
    smoothing_s: float = 30.0
    soc_gain_inside: float = 0.1
    soc_gain_outside: float = 2.0

    def __post_init__(self) -> None:
        if np.any(~(self.ramp_limit_kw_per_s > 0)):
            raise ConfigError("ramp_limit_kw_per_s", self.ramp_limit_kw_per_s, "must be > 0")
        if np.any(self.floor_kw > self.ceiling_kw):
            raise ConfigError("floor_kw", self.floor_kw, "must not exceed ceiling_kw")
        if np.any((self.soc_low < 0) | (self.soc_high > 1) | (self.soc_low > self.soc_high)):
            raise ConfigError("soc_low", self.soc_low, "need 0 <= soc_low <= soc_high <= 1")
        if not self.smoothing_s > 0:
            raise ConfigError("smoothing_s", self.smoothing_s, "must be > 0 s")

    def for_domain(self, i: int) -> ConverterSettings:
        """Domain ``i``'s settings alone (arrays of shape (1,)): what its converter gets."""
        return ConverterSettings(
            self.ramp_limit_kw_per_s[i : i + 1].copy(),
            self.floor_kw[i : i + 1].copy(),
            self.ceiling_kw[i : i + 1].copy(),
            self.soc_low[i : i + 1].copy(),
            self.soc_high[i : i + 1].copy(),
            self.smoothing_s,
            self.soc_gain_inside,
            self.soc_gain_outside,
        )

    def key(self) -> tuple[float, ...]:
        """The values as a tuple (to tell whether a converter needs them written again)."""
        arrays = (self.ramp_limit_kw_per_s, self.floor_kw, self.ceiling_kw)
        bands = (self.soc_low, self.soc_high)
        scalars = (self.smoothing_s, self.soc_gain_inside, self.soc_gain_outside)
        return tuple(float(v) for a in (*arrays, *bands) for v in a) + scalars


@dataclass
class ConverterState:
    """The loop's memory per domain: measurement delay line, filter, smoother, reference."""

    delay: FloatArray  # (latency_periods, D), oldest first
    filtered_kw: FloatArray
    smoothed_kw: FloatArray
    reference_kw: FloatArray

    @staticmethod
    def start(spec: ConverterSpec, load_kw: FloatArray) -> ConverterState:
        """A converter that has been carrying ``load_kw`` steadily."""
        load = np.asarray(load_kw, dtype=np.float64)
        return ConverterState(
            np.tile(load, (spec.latency_periods, 1)), load.copy(), load.copy(), load.copy()
        )


@dataclass(frozen=True)
class ConverterStep:
    """What the converter did over a run of control periods (means over them, kW)."""

    kes_kw: FloatArray
    grid_kw: FloatArray
    peak_kes_kw: FloatArray = field(default_factory=lambda: np.zeros(0))


def run(
    spec: ConverterSpec,
    settings: ConverterSettings,
    state: ConverterState,
    load_kw: FloatArray,
    periods: int,
    soc: FloatArray,
    rated_kw: FloatArray,
    max_discharge_kw: FloatArray,
    max_charge_kw: FloatArray,
) -> ConverterStep:
    """Run ``periods`` control periods on a load that stays at ``load_kw`` over them (the
    simulator's step), updating ``state``. ``max_*_kw`` are the bank's limits for the run."""
    load = np.asarray(load_kw, dtype=np.float64)
    dt = spec.control_period_s
    alpha = spec.filter_alpha
    beta = min(dt / settings.smoothing_s, 1.0)
    step_kw = settings.ramp_limit_kw_per_s * dt
    mid = 0.5 * (settings.soc_low + settings.soc_high)
    outside = np.maximum(settings.soc_low - soc, 0.0) - np.maximum(soc - settings.soc_high, 0.0)
    correction = rated_kw * (
        settings.soc_gain_inside * (mid - soc) + settings.soc_gain_outside * outside
    )
    kes_sum = np.zeros_like(load)
    grid_sum = np.zeros_like(load)
    peak = np.zeros_like(load)
    for _ in range(periods):
        if state.delay.shape[0]:
            measured = state.delay[0].copy()
            state.delay[:-1] = state.delay[1:]
            state.delay[-1] = load
        else:
            measured = load
        state.filtered_kw += alpha * (measured - state.filtered_kw)
        state.smoothed_kw += beta * (state.filtered_kw - state.smoothed_kw)
        target = np.clip(state.smoothed_kw + correction, settings.floor_kw, settings.ceiling_kw)
        ref = np.clip(target, state.reference_kw - step_kw, state.reference_kw + step_kw)
        ref = np.maximum(ref, 0.0)
        # dc-link: the feed draws the reference; parallel: the bank acts on its measurement.
        want = load - ref if spec.topology == "dc-link" else state.filtered_kw - ref
        # Never export: the bank supplies at most what the load draws.
        kes = np.clip(want, -max_charge_kw, np.minimum(max_discharge_kw, np.maximum(load, 0.0)))
        grid = load - kes
        # What the bank could not carry is on the feed: the reference restarts from there.
        state.reference_kw = np.where(np.abs(kes - want) > 1e-9, grid, ref)
        kes_sum += kes
        grid_sum += grid
        peak = np.maximum(peak, np.abs(kes))
    n = max(periods, 1)
    return ConverterStep(kes_sum / n, grid_sum / n, peak)
