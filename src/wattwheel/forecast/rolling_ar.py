"""An AR baseline that is only ever fitted on the past it has been shown.

:class:`RollingARForecaster` is the :class:`~wattwheel.forecast.baselines.ARForecaster` for a
controller without a trained model: it has no parameters before it runs, and at each explicit
``update`` (the simulator's online step, after a forecast, with the measured past only) it refits
its point model on the most recent ``fit_rows`` rows of that past, every ``refit_rows`` new rows.
Until the past is long enough for a fit it forecasts persistence. Its quantiles are calibrated
online from its own past residuals, as every baseline's are.

``predict`` stays side-effect free (DESIGN §8): only ``update`` changes the model.
Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wattwheel.forecast.base import FloatArray, History
from wattwheel.forecast.baselines import ARForecaster, IntArray
from wattwheel.forecast.calibration import horizon_steps

#: Rows of the past each refit uses (the most recent): a week of 5-minute rows.
DEFAULT_FIT_ROWS = 2016
#: New rows between two refits: a day of 5-minute rows.
DEFAULT_REFIT_ROWS = 288
#: At most this many (row, series) samples in one pooled fit.
FIT_MAX_SAMPLES = 50_000


class RollingARForecaster(ARForecaster):
    """AR refitted online on the recent past; persistence until a fit is possible.

    Args:
        fit_rows: rows of the past a refit uses (the most recent).
        refit_rows: new rows between two refits.
        lags: AR lags.
    """

    name = "ar"

    def __init__(
        self,
        fit_rows: int = DEFAULT_FIT_ROWS,
        refit_rows: int = DEFAULT_REFIT_ROWS,
        lags: int = 24,
        **kwargs: Any,
    ) -> None:
        super().__init__(lags=lags, max_rows=FIT_MAX_SAMPLES, **kwargs)
        if refit_rows < 1:
            raise ValueError(f"refit_rows must be at least 1, got {refit_rows}")
        self.fit_rows = fit_rows
        self.refit_rows = refit_rows
        #: end time (s) of the last history the point model was fitted on; None before a fit
        self.fitted_through_s: float | None = None

    def _points(self, filled: FloatArray, origins: IntArray, step: int) -> FloatArray:
        if not self.coefs:  # not fitted yet: persistence
            return np.asarray(filled[origins], dtype=np.float64)
        return super()._points(filled, origins, step)

    def update(self, history: History, horizons_s: Sequence[float] = ()) -> None:
        """Refit the point model on the recent past when one is due, then calibrate online."""
        if self._refit_due(history):
            self._refit(history, horizons_s)
        super().update(history, horizons_s)

    def _refit_due(self, history: History) -> bool:
        if self.fitted_through_s is None:
            return True
        new_rows = round((history.end_s - self.fitted_through_s) / history.step_s)
        return new_rows >= self.refit_rows

    def _refit(self, history: History, horizons_s: Sequence[float]) -> None:
        rows = min(history.values.shape[0], self.fit_rows)
        longest = max(horizon_steps(horizons_s, history.step_s), default=1)
        if rows < 4 * self.lags + longest + 1:
            return  # too short: keep the previous model (or persistence)
        if len(horizons_s):
            self.horizons_s = tuple(float(h) for h in horizons_s)  # direct models for them
        try:
            self.fit_point(history.tail(rows))
        except (ValueError, np.linalg.LinAlgError):
            return
        self.fitted_through_s = history.end_s
