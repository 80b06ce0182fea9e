"""The forecasting contract shared by the controller, the simulator and the live runtime.

A :class:`History` is what a forecaster sees: a regular grid of past values per series (NaN
allowed: gaps and stale sensors are the forecaster's problem to handle, not a crash). A
:class:`Forecast` is what it returns: per series and horizon, a point value and named quantiles,
in the same units as the history (watts for power).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.trace import Trace

FloatArray = NDArray[np.float64]

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.95)
DEFAULT_HORIZONS_MIN: tuple[int, ...] = (5, 10, 15)


@dataclass(frozen=True)
class History:
    """Past values per series on a regular grid.

    Attributes:
        timestamps_s: (T,) epoch seconds, increasing, regular step.
        series_ids: S names, column order of ``values``.
        values: (T, S), NaN where a reading is missing.
        exog: optional exogenous columns, name -> (T, S) (workload schedule, weather, alerts).
    """

    timestamps_s: FloatArray
    series_ids: tuple[str, ...]
    values: FloatArray
    exog: Mapping[str, FloatArray] = field(default_factory=dict)

    @property
    def step_s(self) -> float:
        return float(self.timestamps_s[1] - self.timestamps_s[0])

    @property
    def end_s(self) -> float:
        return float(self.timestamps_s[-1])

    def tail(self, n: int) -> History:
        """The last ``n`` rows (views)."""
        return History(
            self.timestamps_s[-n:],
            self.series_ids,
            self.values[-n:],
            {k: v[-n:] for k, v in self.exog.items()},
        )

    @staticmethod
    def from_trace(trace: Trace) -> History:
        return History(trace.timestamps_s, trace.rack_ids, trace.power_w, dict(trace.exog))


@dataclass(frozen=True)
class Forecast:
    """Point and quantile forecasts, issued at ``issued_at_s`` for ``issued_at_s + horizon``.

    Attributes:
        series_ids: S names.
        horizons_s: H horizons in seconds after ``issued_at_s``.
        quantiles: Q levels in (0, 1), increasing.
        values: (S, H, Q) quantile values, non-decreasing along Q.
        point: (S, H) point forecast (the median unless the model says otherwise).
    """

    issued_at_s: float
    series_ids: tuple[str, ...]
    horizons_s: tuple[float, ...]
    quantiles: tuple[float, ...]
    values: FloatArray
    point: FloatArray

    def rows_for(self, series_ids: tuple[str, ...]) -> Forecast | None:
        """This forecast with rows in ``series_ids`` order; None if one of them is missing."""
        if self.series_ids == series_ids:
            return self
        index = {s: i for i, s in enumerate(self.series_ids)}
        if any(s not in index for s in series_ids):
            return None
        rows = [index[s] for s in series_ids]
        return Forecast(
            self.issued_at_s,
            series_ids,
            self.horizons_s,
            self.quantiles,
            self.values[rows],
            self.point[rows],
        )

    def quantile(self, q: float) -> FloatArray:
        """(S, H) values at level ``q``, interpolated linearly between stored levels."""
        qs = np.asarray(self.quantiles)
        if q <= qs[0]:
            return self.values[:, :, 0]
        if q >= qs[-1]:
            return self.values[:, :, -1]
        j = int(np.searchsorted(qs, q))
        w = float((q - qs[j - 1]) / (qs[j] - qs[j - 1]))
        lower, upper = self.values[:, :, j - 1], self.values[:, :, j]
        return np.asarray((1 - w) * lower + w * upper, dtype=np.float64)


@runtime_checkable
class Forecaster(Protocol):
    """Anything that can be fitted on history and predict quantiles at given horizons."""

    name: str

    def fit(self, history: History) -> None:
        """Learn from past data (may be a no-op for baselines)."""
        ...

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        """Forecast each series ``horizons_s`` after the last row of ``history``.

        ``future_exog`` holds known-future columns (name -> (H, S)) aligned with ``horizons_s``.
        """
        ...
