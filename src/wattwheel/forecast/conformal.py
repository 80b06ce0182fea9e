"""Conformal calibration as a wrapper over any forecaster (DESIGN §8: forecasters are
side-effect free; calibration updates are an explicit call).

:class:`ConformalForecaster` wraps any :class:`~wattwheel.forecast.base.Forecaster` (the LSTM, a
baseline, a statsforecast model) in the manner of Darts' conformal models: its quantiles are the
inner forecaster's own, shifted per horizon by the empirical quantiles of the inner forecaster's
past normalised residuals at that level (conformalised quantile regression; a point model repeats
its point at every level, which makes this plain split conformal).

- :meth:`ConformalForecaster.predict` is a pure function of its arguments and of the residual
  pool: it never changes the wrapper or the inner forecaster, so the same call gives the same
  forecast however often and in whatever order it is made.
- :meth:`ConformalForecaster.update` is the explicit online step: it scores the forecasts made at
  earlier :meth:`update` calls whose targets the history now holds, adds their residuals to the
  pool, and forecasts from the history's last row for a later call to score. A caller that
  updates at time t with the history up to t uses only what was measured up to t.
- :meth:`ConformalForecaster.calibrate` replaces the pool with the residuals of rolling-origin
  forecasts over a whole history (a new site's past, the fit part of a backtest).

Any object with an ``update(history, horizons_s)`` method is :class:`OnlineCalibrated`: the
simulator and the live runtime call it after each forecast, and only then.

Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from wattwheel.forecast.base import FloatArray, Forecast, Forecaster, History
from wattwheel.forecast.calibration import (
    SCALE_ROWS,
    ResidualCalibrator,
    apply_offsets,
    horizon_steps,
    series_scale,
)
from wattwheel.forecast.pending import score_arrived

#: Residuals a horizon needs before its offsets are used (below it: the inner quantiles).
MIN_RESIDUALS = 30
#: Forecasts kept waiting for their targets (bounds memory if targets never arrive).
MAX_PENDING = 4096


@runtime_checkable
class OnlineCalibrated(Protocol):
    """A forecaster whose calibration learns from new data through an explicit call."""

    def update(self, history: History, horizons_s: Sequence[float]) -> None:
        """Fold what ``history`` shows about earlier forecasts into the calibration."""
        ...


@runtime_checkable
class PredictsAndUpdates(Protocol):
    """A forecaster that forecasts and updates on the same history in one call."""

    def predict_and_update(self, history: History, horizons_s: Sequence[float]) -> Forecast:
        """``predict`` then ``update`` on ``history``, with the same results as the two calls."""
        ...


def predict_and_learn(
    forecaster: Forecaster, history: History, horizons_s: Sequence[float]
) -> Forecast:
    """A controller's forecast for ``history``, then its calibration's update from it (for an
    :class:`OnlineCalibrated` forecaster; explicit, from measured data only). A forecaster with
    its own ``predict_and_update`` (one inner forecast for both) is asked for that."""
    if isinstance(forecaster, PredictsAndUpdates):
        return forecaster.predict_and_update(history, horizons_s)
    fc = forecaster.predict(history, horizons_s)
    if isinstance(forecaster, OnlineCalibrated):
        forecaster.update(history, horizons_s)
    return fc


@dataclass
class _Pending:
    """An inner forecast issued at an update, waiting for its targets."""

    issued_at_s: float
    series_ids: tuple[str, ...]
    steps: tuple[int, ...]
    scale: FloatArray  # (S,)
    values: FloatArray  # (S, H, Q) inner quantiles, watts
    done: set[int] = field(default_factory=set)


class ConformalForecaster:
    """Conformal intervals over any forecaster. See the module docstring.

    Args:
        inner: the forecaster whose quantiles are calibrated (never modified here).
        window: residuals kept per horizon step (older ones age out: online adaptation).
        min_residuals: residuals a horizon needs before its offsets replace zero.
    """

    def __init__(
        self, inner: Forecaster, window: int = 20_000, min_residuals: int = MIN_RESIDUALS
    ) -> None:
        if min_residuals < 1:
            raise ValueError(f"min_residuals must be at least 1, got {min_residuals}")
        self.inner = inner
        self.name = inner.name
        self.window = window
        self.min_residuals = min_residuals
        self.calibrator: ResidualCalibrator | None = None
        self._step_s: float | None = None
        self._pending: list[_Pending] = []

    # ---------------------------------------------------------------------------- protocol
    def fit(self, history: History) -> None:
        """Fit the inner forecaster; the residual pool starts empty."""
        self.inner.fit(history)
        self.calibrator, self._pending, self._step_s = None, [], None

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        """The inner forecast with each level shifted by its calibrated offset (pure)."""
        raw = self.inner.predict(history, horizons_s, future_exog)
        return self._calibrated(raw, history, horizons_s)

    def predict_and_update(self, history: History, horizons_s: Sequence[float]) -> Forecast:
        """``predict`` then ``update`` on the same history, the inner forecast computed once
        (both need it from the same origin): the same result as the two calls in that order."""
        raw = predict_and_learn(self.inner, history, horizons_s)
        fc = self._calibrated(raw, history, horizons_s)
        self._update(history, horizons_s, raw)
        return fc

    def _calibrated(self, raw: Forecast, history: History, horizons_s: Sequence[float]) -> Forecast:
        cal = self.calibrator
        if cal is None or self._step_s is None or cal.quantiles != raw.quantiles:
            return raw
        self._check_step(history.step_s)
        steps = horizon_steps(horizons_s, history.step_s)
        offsets = np.stack(
            [
                cal.offsets(s)
                if cal.count(s) >= self.min_residuals
                else np.zeros(len(cal.quantiles))
                for s in steps
            ]
        )
        scale = series_scale(history.values[-SCALE_ROWS:])
        values = apply_offsets(raw.values, scale, offsets)
        median = int(np.argmin(np.abs(np.asarray(raw.quantiles) - 0.5)))
        point = raw.point + scale[:, None] * offsets[None, :, median]
        return Forecast(
            raw.issued_at_s, raw.series_ids, raw.horizons_s, raw.quantiles, values, point
        )

    # ------------------------------------------------------------------------ calibration
    def update(self, history: History, horizons_s: Sequence[float]) -> None:
        """Score pending forecasts against ``history``, then forecast from its last row.

        Call it once per planning period with the history up to now; calling it again with the
        same last row only scores (no second forecast from the same origin). An inner forecaster
        that learns online (:class:`OnlineCalibrated`, e.g. the online AR blend) is updated
        too, after the inner forecast this pool scores later was made.
        """
        raw = None
        if isinstance(self.inner, OnlineCalibrated):
            latest = self._pending[-1].issued_at_s if self._pending else -math.inf
            if history.end_s > latest:
                raw = predict_and_learn(self.inner, history, horizons_s)
            else:
                self.inner.update(history, horizons_s)
        self._update(history, horizons_s, raw)

    def _update(self, history: History, horizons_s: Sequence[float], raw: Forecast | None) -> None:
        self._check_step(history.step_s)
        self._step_s = history.step_s
        self._score(history)
        latest = self._pending[-1].issued_at_s if self._pending else -math.inf
        if history.end_s > latest:
            if raw is None:
                raw = self.inner.predict(history, horizons_s)
            self._ensure_calibrator(raw.quantiles)
            self._pending.append(
                _Pending(
                    history.end_s,
                    history.series_ids,
                    horizon_steps(horizons_s, history.step_s),
                    series_scale(history.values[-SCALE_ROWS:]),
                    raw.values,
                )
            )
        self._pending = self._pending[-MAX_PENDING:]

    def calibrate(
        self,
        history: History,
        horizons_s: Sequence[float],
        start: int | None = None,
        stride: int = 1,
    ) -> None:
        """Replace the pool with residuals of forecasts from every ``stride``-th row of
        ``history`` after ``start`` (default: its first quarter is context only)."""
        steps = horizon_steps(horizons_s, history.step_s)
        n_rows = history.values.shape[0]
        first = n_rows // 4 if start is None else max(start, 1)
        origins = range(first, n_rows - max(steps), max(stride, 1))
        if len(origins) == 0:
            raise ValueError(
                f"history too short to calibrate: {n_rows} rows, longest horizon {max(steps)} steps"
            )
        self.calibrator, self._pending, self._step_s = None, [], history.step_s
        for o in origins:
            past = _prefix(history, o + 1)
            raw = self.inner.predict(past, horizons_s)
            cal = self._ensure_calibrator(raw.quantiles)
            scale = series_scale(past.values[-SCALE_ROWS:])
            for h, step in enumerate(steps):
                actual = history.values[o + step]
                cal.add(step, (actual[:, None] - raw.values[:, h, :]) / scale[:, None])

    def count(self, step: int) -> int:
        """Residuals held for a horizon step."""
        return 0 if self.calibrator is None else self.calibrator.count(step)

    # --------------------------------------------------------------------------- internals
    def _ensure_calibrator(self, quantiles: tuple[float, ...]) -> ResidualCalibrator:
        if self.calibrator is None or self.calibrator.quantiles != tuple(quantiles):
            self.calibrator = ResidualCalibrator(quantiles, self.window)
        return self.calibrator

    def _score(self, history: History) -> None:
        cal = self.calibrator
        if cal is None:
            return

        def score(p: _Pending, h: int, step: int, actual: FloatArray) -> None:
            cal.add(step, (actual[:, None] - p.values[:, h, :]) / p.scale[:, None])

        self._pending = score_arrived(self._pending, history, score)

    def _check_step(self, step_s: float) -> None:
        if self._step_s is not None and not math.isclose(step_s, self._step_s, rel_tol=1e-6):
            raise ValueError(
                f"calibrated on a {self._step_s:g} s grid but the history has a {step_s:g} s "
                "step: calibrate a new wrapper at this resolution"
            )


def _prefix(history: History, n: int) -> History:
    return History(
        history.timestamps_s[:n],
        history.series_ids,
        history.values[:n],
        {k: v[:n] for k, v in history.exog.items()},
    )
