"""The power trace value type: a regular grid of timestamps x racks, in watts.

Long-format files (``timestamp, rack_id, power_w`` [, ``critical_w``, exogenous columns...])
are read by :mod:`wattwheel.sim.trace_io`; this module only holds and checks the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import TraceError

FloatArray = NDArray[np.float64]

#: Readings above this are treated as absurd (a wrong unit, a corrupt sensor): 100 MW per rack.
ABSURD_RACK_POWER_W = 1e8


@dataclass(frozen=True)
class Trace:
    """Power per rack on a regular time grid.

    Attributes:
        timestamps_s: (T,) epoch seconds, strictly increasing, regular step.
        rack_ids: R rack identifiers, column order of ``power_w``.
        power_w: (T, R) measured power in watts.
        critical_w: (T, R) critical (never capped or moved) part of the power, or None when the
            site file's non-critical share applies.
        exog: extra per-rack columns, name -> (T, R) array (calendar features are derived, not
            stored; workload schedules, weather, grid alerts go here).
    """

    timestamps_s: FloatArray
    rack_ids: tuple[str, ...]
    power_w: FloatArray
    critical_w: FloatArray | None = None
    exog: Mapping[str, FloatArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_trace_arrays(self.timestamps_s, self.rack_ids, self.power_w, self.critical_w)

    @property
    def n_steps(self) -> int:
        return int(self.timestamps_s.shape[0])

    @property
    def step_s(self) -> float:
        """The grid step in seconds."""
        if self.n_steps < 2:
            raise TraceError("a trace needs at least two timestamps to have a step")
        return float(self.timestamps_s[1] - self.timestamps_s[0])

    def rack_index(self, rack_id: str) -> int:
        try:
            return self.rack_ids.index(rack_id)
        except ValueError:
            raise TraceError(
                f"rack {rack_id!r} is not in the trace (it has {len(self.rack_ids)} racks: "
                f"{', '.join(self.rack_ids[:8])}{'...' if len(self.rack_ids) > 8 else ''})"
            ) from None

    def window(self, start: int, stop: int) -> Trace:
        """Rows ``start:stop`` (views, no copy)."""
        crit = None if self.critical_w is None else self.critical_w[start:stop]
        exog = {k: v[start:stop] for k, v in self.exog.items()}
        return Trace(
            self.timestamps_s[start:stop], self.rack_ids, self.power_w[start:stop], crit, exog
        )

    def select(self, rack_ids: Sequence[str]) -> Trace:
        """Only these racks, in this order."""
        idx = [self.rack_index(r) for r in rack_ids]
        crit = None if self.critical_w is None else self.critical_w[:, idx]
        exog = {k: v[:, idx] for k, v in self.exog.items()}
        return Trace(self.timestamps_s, tuple(rack_ids), self.power_w[:, idx], crit, exog)


def validate_trace_arrays(
    timestamps_s: FloatArray,
    rack_ids: tuple[str, ...],
    power_w: FloatArray,
    critical_w: FloatArray | None,
) -> None:
    """Raise TraceError naming the first problem found."""
    if timestamps_s.ndim != 1:
        raise TraceError("timestamps must be one-dimensional")
    if power_w.shape != (timestamps_s.shape[0], len(rack_ids)):
        raise TraceError(
            f"power_w has shape {power_w.shape}, "
            f"expected ({timestamps_s.shape[0]}, {len(rack_ids)})"
        )
    if len(set(rack_ids)) != len(rack_ids):
        raise TraceError("rack ids are not unique")
    _check_time_grid(timestamps_s)
    _check_power("power_w", power_w, timestamps_s, rack_ids)
    if critical_w is not None:
        if critical_w.shape != power_w.shape:
            raise TraceError("critical_w must have the same shape as power_w")
        _check_power("critical_w", critical_w, timestamps_s, rack_ids)
        over = critical_w > power_w + 1e-9
        if over.any():
            t, r = np.argwhere(over)[0]
            raise TraceError(
                f"critical_w exceeds power_w for rack {rack_ids[r]!r} at t={timestamps_s[t]:.0f}"
            )


def _check_time_grid(timestamps_s: FloatArray) -> None:
    if not np.all(np.isfinite(timestamps_s)):
        raise TraceError("timestamps contain NaN or infinity")
    if timestamps_s.shape[0] < 2:
        return
    diffs = np.diff(timestamps_s)
    if np.any(diffs == 0):
        i = int(np.argmax(diffs == 0))
        raise TraceError(f"duplicate timestamp {timestamps_s[i]:.0f} (row {i + 1})")
    if np.any(diffs < 0):
        i = int(np.argmax(diffs < 0))
        raise TraceError(
            f"timestamps out of order: {timestamps_s[i + 1]:.0f} after {timestamps_s[i]:.0f} "
            f"(row {i + 1})"
        )
    step = diffs[0]
    irregular = np.abs(diffs - step) > 1e-6 * max(step, 1.0)
    if irregular.any():
        i = int(np.argmax(irregular))
        raise TraceError(
            f"irregular time step: {diffs[i]:.3f} s at row {i + 1}, expected {step:.3f} s "
            "(gaps must be filled or the trace resampled before simulation)"
        )


def _check_power(
    name: str, values: FloatArray, timestamps_s: FloatArray, rack_ids: tuple[str, ...]
) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        t, r = np.argwhere(bad)[0]
        raise TraceError(
            f"{name} is NaN or infinite for rack {rack_ids[r]!r} at t={timestamps_s[t]:.0f} "
            f"({int(bad.sum())} bad values in all)"
        )
    for what, mask in (
        ("negative", values < 0),
        ("absurd (> 100 MW)", values > ABSURD_RACK_POWER_W),
    ):
        if mask.any():
            t, r = np.argwhere(mask)[0]
            raise TraceError(
                f"{name} is {what} for rack {rack_ids[r]!r} at t={timestamps_s[t]:.0f}: "
                f"{values[t, r]!r} W"
            )
