"""The demand history the planning loop hands to the forecaster: per-domain demand (W) on a
regular grid, sampled from the fast loop (the last reading in each grid step), bounded."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numpy.typing import NDArray

from wattwheel.forecast.base import History

FloatArray = NDArray[np.float64]


class DemandHistory:
    """A ring of ``(grid time, demand per domain in W)`` rows, one per ``step_s``.

    A step with no tick (the loop was stalled) is filled with NaN, which forecasters accept as
    a gap; stale domains are recorded as NaN too.
    """

    def __init__(self, series_ids: tuple[str, ...], step_s: float, max_rows: int = 4096) -> None:
        if not (step_s > 0 and math.isfinite(step_s)):
            raise ValueError(f"history step must be > 0 s, got {step_s!r}")
        self.series_ids = series_ids
        self.step_s = step_s
        self._t: deque[float] = deque(maxlen=max_rows)
        self._v: deque[FloatArray] = deque(maxlen=max_rows)

    def __len__(self) -> int:
        return len(self._t)

    def add(self, now_s: float, demand_w: FloatArray) -> None:
        slot = math.floor(now_s / self.step_s) * self.step_s
        if self._t and slot <= self._t[-1]:
            self._v[-1] = demand_w.copy()  # the latest reading of this step wins
            return
        if self._t:
            gap = int(round((slot - self._t[-1]) / self.step_s)) - 1
            for _ in range(min(gap, self._t.maxlen or gap)):
                self._t.append(self._t[-1] + self.step_s)
                self._v.append(np.full(len(self.series_ids), np.nan))
        self._t.append(slot)
        self._v.append(demand_w.copy())

    def history(self) -> History:
        return History(
            np.array(self._t, dtype=float), self.series_ids, np.array(self._v, dtype=float)
        )
