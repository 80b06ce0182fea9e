"""Inverse-time breaker trip model (thermal accumulator).

The trip curve maps an overload ratio r = draw / rating to the time a breaker tolerates it,
e.g. modelled on UL 489: 135 % within an hour, 200 % within minutes, near-instantaneous at
several times rating. Between curve points we interpolate log-log; below the first point (but
above pickup) the first point's time applies; above the last, the last.

A sustained overload accumulates "heat" h += dt / t_allowed(r); below pickup, heat decays with
time constant ``cooling_tau_s``. The breaker trips when h reaches 1; after a trip (an outage) the
simulator counts it and the breaker is reclosed cold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class BreakerParams:
    pickup_ratio: float
    curve_ratio: tuple[float, ...]
    curve_seconds: tuple[float, ...]
    cooling_tau_s: float


def allowed_seconds(params: BreakerParams, ratio: FloatArray) -> FloatArray:
    """Seconds an overload of ``ratio`` may last before a trip (inf at or below pickup)."""
    log_r = np.log(np.asarray(params.curve_ratio))
    log_t = np.log(np.asarray(params.curve_seconds))
    clipped = np.clip(ratio, params.curve_ratio[0], params.curve_ratio[-1])
    t = np.exp(np.interp(np.log(clipped), log_r, log_t))
    return np.where(ratio > params.pickup_ratio, t, np.inf)


def step_heat(
    params: BreakerParams, heat: FloatArray, ratio: FloatArray, dt_s: float | FloatArray
) -> FloatArray:
    """Advance the thermal state by ``dt_s`` (scalar or per breaker) at overload ``ratio``."""
    heating = heat + dt_s / allowed_seconds(params, ratio)
    cooling = heat * np.exp(-dt_s / params.cooling_tau_s)
    return np.where(ratio > params.pickup_ratio, heating, cooling)


def tripped(heat: FloatArray) -> NDArray[np.bool_]:
    return heat >= 1.0
