"""The workload-side lever "GPU power floor on ramp-down" (NVIDIA GB300 NVL72 power smoothing).

The GPUs themselves keep their draw from falling fast: when the work drops (a communication
phase, a checkpoint stall, a job's end or failure), they burn power to stay above a floor that
decays at a set rate. Modelled per rack on its own (local, unlagged) power, as the GPU firmware
does it:

    envelope[t] = max(demand[t], envelope[t-1] - decay_kw_per_s x dt)
    floored[t]  = max(demand[t], floor_fraction x envelope[t])

So the floored draw never falls faster than ``floor_fraction x decay`` (plus the drop from
the envelope to the floor, once), it never lowers demand, and the energy it burns,
``sum(floored - demand) x dt``, is reported (``floor_energy_kwh``): the lever's cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import ConfigError

FloatArray = NDArray[np.float64]
S_PER_H = 3600.0


@dataclass(frozen=True)
class PowerFloor:
    """Floor as a share of the recent peak envelope, and how fast that envelope decays."""

    floor_fraction: float = 0.9
    decay_kw_per_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor_fraction <= 1.0:
            raise ConfigError("floor_fraction", self.floor_fraction, "must be in [0, 1]")
        if not self.decay_kw_per_s > 0:
            raise ConfigError("decay_kw_per_s", self.decay_kw_per_s, "must be > 0 kW/s")


def apply_floor(demand_kw: FloatArray, dt_s: float, floor: PowerFloor) -> FloatArray:
    """(T, R) demand with the floor applied per column (never below the demand)."""
    demand = np.asarray(demand_kw, dtype=np.float64)
    out = demand.copy()
    if demand.shape[0] == 0:
        return out
    step_kw = floor.decay_kw_per_s * dt_s
    envelope = demand[0].copy()
    for t in range(demand.shape[0]):
        envelope = np.maximum(demand[t], envelope - step_kw)
        out[t] = np.maximum(demand[t], floor.floor_fraction * envelope)
    return out


def floor_energy_kwh(demand_kw: FloatArray, floored_kw: FloatArray, dt_s: float) -> float:
    """Energy the floor burned on top of the work's own draw."""
    return float(np.sum(floored_kw - demand_kw) * dt_s / S_PER_H)
