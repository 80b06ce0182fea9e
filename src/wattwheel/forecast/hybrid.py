"""A forecaster combined with a local linear AR fitted on the past it is given.

:class:`ARBlendForecaster` wraps any forecaster (the shipped LSTM): at each ``predict`` it fits
an AR (:class:`~wattwheel.forecast.baselines.ARForecaster`, pooled over the series) on the last
``ar_rows`` rows of the history it is asked about, and returns the point
``w_h * inner + (1 - w_h) * ar`` per horizon, the inner forecaster's quantiles shifted by the
same amount. The weights ``w_h`` are fixed numbers of the model (chosen on a validation split of
its training data, ``metadata.json`` ``ar_blend``), never fitted on the series being forecast.

Side-effect free: the AR is a local variable of each call, so ``predict`` depends only on its
arguments and never changes the wrapper or the inner forecaster. Online calibration stays with
:class:`~wattwheel.forecast.conformal.ConformalForecaster`, which can wrap this one.

Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wattwheel.forecast.base import FloatArray, Forecast, Forecaster, History
from wattwheel.forecast.baselines import ARForecaster
from wattwheel.forecast.calibration import horizon_steps

#: Rows of the past the local AR is fitted on, by default.
DEFAULT_AR_ROWS = 2016
#: At most this many (row, series) samples in the pooled local fit (the most recent rows): keeps a
#: call cheap with many racks; 25 coefficients need far fewer.
AR_MAX_SAMPLES = 50_000


class ARBlendForecaster:
    """``inner`` pulled toward a local AR by fixed per-horizon weights.

    Args:
        inner: the forecaster whose quantiles are kept (shifted).
        horizons_s: the horizons the weights are given at (seconds).
        inner_weight: per horizon, the weight of ``inner``'s point in [0, 1] (1 = inner only);
            other horizons interpolate linearly (clamped at the ends).
        ar_rows: rows of the past the AR is fitted on (the most recent).
        ar_lags: lags of the AR.
    """

    def __init__(
        self,
        inner: Forecaster,
        horizons_s: Sequence[float],
        inner_weight: Sequence[float],
        ar_rows: int = DEFAULT_AR_ROWS,
        ar_lags: int = 24,
    ) -> None:
        if len(horizons_s) != len(inner_weight) or not horizons_s:
            raise ValueError("one weight per horizon is needed")
        if any(not 0.0 <= w <= 1.0 for w in inner_weight):
            raise ValueError(f"weights must be in [0, 1], got {list(inner_weight)}")
        order = np.argsort(np.asarray(horizons_s, dtype=np.float64))
        self.inner = inner
        self.name = inner.name
        self.horizons_s = tuple(float(horizons_s[i]) for i in order)
        self.inner_weight = tuple(float(inner_weight[i]) for i in order)
        self.ar_rows = ar_rows
        self.ar_lags = ar_lags

    def fit(self, history: History) -> None:
        self.inner.fit(history)

    def weights_at(self, horizons_s: Sequence[float]) -> FloatArray:
        """(H,) inner weights at ``horizons_s``."""
        weights = np.interp(
            np.asarray(horizons_s, dtype=np.float64),
            np.asarray(self.horizons_s),
            np.asarray(self.inner_weight),
        )
        return np.asarray(weights, dtype=np.float64)

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        fc = self.inner.predict(history, horizons_s, future_exog)
        weights = self.weights_at(horizons_s)
        if np.all(weights >= 1.0):
            return fc
        ar_point = self.local_ar_point(history, horizons_s)
        if ar_point is None:
            return fc
        blended = weights[None, :] * fc.point + (1.0 - weights[None, :]) * ar_point
        point = np.where(np.isfinite(ar_point), blended, fc.point)
        shift = point - fc.point
        return Forecast(
            issued_at_s=fc.issued_at_s,
            series_ids=fc.series_ids,
            horizons_s=fc.horizons_s,
            quantiles=fc.quantiles,
            values=fc.values + shift[:, :, None],
            point=point,
        )

    def local_ar_point(self, history: History, horizons_s: Sequence[float]) -> FloatArray | None:
        """(S, H) points of an AR fitted on the recent past; None if the past is too short."""
        steps = horizon_steps(horizons_s, history.step_s)
        rows = min(history.values.shape[0], self.ar_rows)
        if rows < 4 * self.ar_lags + max(steps) + 1:
            return None
        tail = history.tail(rows)
        ar = ARForecaster(lags=self.ar_lags, max_rows=AR_MAX_SAMPLES, horizons_s=tuple(horizons_s))
        try:
            ar.fit_point(tail)
            return ar.point_forecast(tail, horizons_s)
        except (ValueError, np.linalg.LinAlgError):
            return None
