"""Which power readings the controller may believe (DESIGN §8 "Telemetry trust").

Real SCADA does not take every number on the wire at face value, and neither do we:

- **Plausibility.** A rack cannot draw more than its rating (``rack_rating_kw`` in the site
  file); a server or outlet not more than the rack it is in. A timestamp more than the
  allowed clock skew in the future is a clock error or a forgery, not a reading.
- **Meter of record.** Each rack's own meter (its PDU, read over SNMP/Redfish from the device
  itself) is the feed meter the other sources are checked against: the sum of the rack's BMC
  readings, its outlets, and what anyone on the MQTT broker says about it. While the meter is
  fresh the rack's demand is the meter's reading; a source that disagrees with it by more than
  the tolerance is flagged, and changes nothing, so it can neither lower the controller's
  view of demand (a half-draw spoof cannot lift caps from an overloaded feed) nor raise it
  (a 2x spoof cannot start the reserve). A domain's demand is the sum of its racks, so a
  domain's racks never sum past its feed meters.
- **No meter, never lower.** When a rack's meter is silent, its demand is the *highest* of
  the fresh plausible sources: one source under-reading (or lying low) cannot hide load.

Pure functions on numpy arrays; the runtime's telemetry view applies them every tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: A timestamp this far ahead of the reader's clock is refused (seconds).
DEFAULT_MAX_FUTURE_S = 5.0


@dataclass(frozen=True)
class TrustRules:
    """How far sources may disagree before one is flagged.

    Attributes:
        tolerance: relative disagreement with the meter tolerated (0.1: 10 %); readings are
            taken at different instants and BMCs do not see PSU losses or fans.
        tolerance_floor_w: absolute disagreement always tolerated (W), for nearly idle racks.
        max_future_s: clock skew tolerated for timestamps ahead of the reader's clock (s).
    """

    tolerance: float = 0.10
    tolerance_floor_w: float = 500.0
    max_future_s: float = DEFAULT_MAX_FUTURE_S

    def __post_init__(self) -> None:
        if not (0 <= self.tolerance < 10 and self.tolerance_floor_w >= 0):
            raise ValueError("tolerance must be in [0, 10) and tolerance_floor_w >= 0")
        if not 0 <= self.max_future_s <= 3600:
            raise ValueError("max_future_s must be in [0, 3600] s")


def plausible(
    power_w: FloatArray,
    timestamp_s: FloatArray,
    limit_w: FloatArray,
    now_s: float,
    rules: TrustRules,
) -> BoolArray:
    """Per reading: finite, not negative, at most ``limit_w``, not beyond the allowed skew
    in the future. (Staleness is the reader's business: an old reading is true, just late.)"""
    return (
        np.isfinite(power_w)
        & np.isfinite(timestamp_s)
        & (power_w >= 0)
        & (power_w <= limit_w)
        & (timestamp_s - now_s <= rules.max_future_s)
    )


def disagrees(meter_w: FloatArray, other_w: FloatArray, rules: TrustRules) -> BoolArray:
    """Where both are known, whether ``other_w`` is farther from the meter than tolerated."""
    band = np.maximum(rules.tolerance * np.abs(meter_w), rules.tolerance_floor_w)
    both = np.isfinite(meter_w) & np.isfinite(other_w)
    return both & (np.abs(np.nan_to_num(other_w) - np.nan_to_num(meter_w)) > band)


def rack_demand_w(meter_w: FloatArray, fallbacks_w: FloatArray) -> FloatArray:
    """Per rack: the meter's reading where it is known, else the highest known fallback
    (``fallbacks_w`` has shape (K, R), NaN where a source has nothing fresh), else NaN."""
    fallbacks = np.asarray(fallbacks_w, dtype=float).reshape(-1, len(meter_w))
    known = np.isfinite(fallbacks).any(axis=0)
    highest = np.where(known, np.nanmax(np.where(known, fallbacks, 0.0), axis=0), np.nan)
    return np.where(np.isfinite(meter_w), meter_w, highest)
