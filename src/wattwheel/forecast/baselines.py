"""Baseline forecasters behind the :class:`~wattwheel.forecast.base.Forecaster` protocol.

Each baseline makes a point forecast per series and horizon; its quantiles come from
:mod:`wattwheel.forecast.calibration` (empirical quantiles of its own past residuals at that
horizon, normalised per series). ``predict`` reads only the tail of the history it is given, so it
stays fast when called every simulated step with a growing history, and it is side-effect free
(DESIGN §8): the residual pools change only at ``fit`` and at the explicit ``update`` call, which
folds the rows that arrived since the previous update into them (online calibration). A horizon
with no residual yet is calibrated for that one call from the recent history it was given.

- :class:`PersistenceForecaster`: the last finite value (the controller's default).
- :class:`SeasonalNaiveForecaster`: the value one season (default one day) before the target.
- :class:`ARForecaster`: linear autoregression on lags, least squares, one direct model per
  configured horizon (pooled across series after per-series normalisation).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.forecast.base import (
    DEFAULT_HORIZONS_MIN,
    DEFAULT_QUANTILES,
    FloatArray,
    Forecast,
    History,
)
from wattwheel.forecast.calibration import (
    SCALE_ROWS,
    ResidualCalibrator,
    apply_offsets,
    horizon_steps,
    series_scale,
)
from wattwheel.forecast.fill import forward_fill, tail_filled

IntArray = NDArray[np.int64]

DEFAULT_HORIZONS_S: tuple[float, ...] = tuple(60.0 * m for m in DEFAULT_HORIZONS_MIN)

#: How :class:`ARForecaster` forms its normal equations (see its docstring).
AR_SOLVES: tuple[str, ...] = ("nested", "per_step")


class CalibratedPointForecaster:
    """Shared machinery: horizons to steps, residual calibration, explicit update, pure predict.

    Subclasses define :meth:`context_rows` (rows of history a point forecast reads),
    :meth:`_fit_point` (learn parameters, may be a no-op) and :meth:`_points`.

    Args:
        quantiles: levels returned by ``predict``.
        horizons_s: horizons calibrated by ``fit`` (others are calibrated on first use).
        calibration_rows: how many recent rows a first-use calibration looks back over.
        calibration_window: residuals kept per horizon (older ones age out).
    """

    name = "point"

    def __init__(
        self,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        horizons_s: Sequence[float] = DEFAULT_HORIZONS_S,
        calibration_rows: int = 4032,
        calibration_window: int = 20_000,
    ) -> None:
        self.quantiles = tuple(float(q) for q in quantiles)
        self.horizons_s = tuple(float(h) for h in horizons_s)
        self.calibration_rows = calibration_rows
        self.calibrator = ResidualCalibrator(self.quantiles, calibration_window)
        self._step_s: float | None = None
        self._seen_end_s: float | None = None

    # --- subclass hooks -------------------------------------------------------------------
    def context_rows(self) -> int:
        """Rows of history (ending at the origin) one point forecast needs."""
        return 1

    def min_origin_rows(self) -> int:
        """Rows before an origin for its forecast to count in calibration."""
        return self.context_rows()

    def _fit_point(self, filled: FloatArray, raw: FloatArray) -> None:
        """Learn point-model parameters from a forward-filled (T, S) history."""

    def _points(self, filled: FloatArray, origins: IntArray, step: int) -> FloatArray:
        """(N, S) point forecasts ``step`` rows after each origin row of ``filled``."""
        raise NotImplementedError

    def _points_at(self, filled: FloatArray, origin: int, steps: Sequence[int]) -> FloatArray:
        """(S, H) point forecasts ``steps`` rows after the row ``origin`` of ``filled``."""
        at = np.array([origin], dtype=np.int64)
        return np.stack([self._points(filled, at, s)[0] for s in steps], axis=1)

    # --- protocol ---------------------------------------------------------------------------
    def fit(self, history: History) -> None:
        """Fit the point model and calibrate residual quantiles at ``horizons_s``."""
        _check_history(history)
        raw = np.asarray(history.values, dtype=np.float64)
        filled = forward_fill(raw)
        self._step_s = history.step_s
        self._fit_point(filled, raw)
        self.calibrator = ResidualCalibrator(self.quantiles, self.calibrator.window)
        steps = horizon_steps(self.horizons_s, history.step_s)
        self._add_residuals(raw, filled, steps, first_row=0)
        self._seen_end_s = history.end_s

    def update(self, history: History, horizons_s: Sequence[float] = ()) -> None:
        """Online calibration (explicit): add residuals for rows newer than the last update, and
        calibrate any of ``horizons_s`` that has no residuals yet over the recent history."""
        _check_history(history)
        step_s = history.step_s
        self._check_step(step_s)
        steps = horizon_steps(horizons_s, step_s) if len(horizons_s) else ()
        known = set(self.calibrator.steps)
        fresh = sorted(set(steps) - known)
        n_rows = history.values.shape[0]
        seen = self._seen_end_s
        new_rows = 0 if seen is None else round((history.end_s - seen) / step_s)
        new_rows = min(max(new_rows, 0), self.calibration_rows)
        if fresh:
            rows = min(n_rows, self.calibration_rows + max(fresh) + self.context_rows())
            raw, filled = self._tail(history, rows)
            self._add_residuals(raw, filled, fresh, first_row=0)
        if known and new_rows:
            rows = min(n_rows, new_rows + max(known) + self.context_rows() + SCALE_ROWS)
            raw, filled = self._tail(history, rows)
            self._add_residuals(raw, filled, sorted(known), first_row=rows - new_rows)
        self._seen_end_s = history.end_s

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        """Point forecasts plus calibrated quantiles, (S, H, Q) in the history's units.

        Pure: a horizon with no residual in the pool is calibrated, for this call only, over the
        last ``calibration_rows`` rows of ``history``."""
        _check_history(history)
        steps = horizon_steps(horizons_s, history.step_s)
        self._check_step(history.step_s)
        offsets = self._offsets(history, steps)
        raw, filled = self._tail(history, max(self.context_rows(), SCALE_ROWS))
        point = self._points_at(filled, filled.shape[0] - 1, steps)
        scale = series_scale(raw)
        q_points = np.repeat(point[:, :, None], len(self.quantiles), axis=2)
        values = apply_offsets(q_points, scale, offsets)
        return Forecast(
            issued_at_s=history.end_s,
            series_ids=history.series_ids,
            horizons_s=tuple(float(h) for h in horizons_s),
            quantiles=self.quantiles,
            values=values,
            point=point,
        )

    def fit_point(self, history: History) -> None:
        """Fit the point model only (no residual calibration): for a caller that uses
        :meth:`point_forecast` alone, e.g. the local AR of
        :class:`~wattwheel.forecast.hybrid.ARBlendForecaster`."""
        _check_history(history)
        raw = np.asarray(history.values, dtype=np.float64)
        self._step_s = history.step_s
        self._fit_point(forward_fill(raw), raw)

    def point_forecast(self, history: History, horizons_s: Sequence[float]) -> FloatArray:
        """(S, H) point forecasts from the last row of ``history`` (pure, no quantiles)."""
        _check_history(history)
        steps = horizon_steps(horizons_s, history.step_s)
        self._check_step(history.step_s)
        _, filled = self._tail(history, max(self.context_rows(), SCALE_ROWS))
        return self._points_at(filled, filled.shape[0] - 1, steps)

    # --- internals --------------------------------------------------------------------------
    def _offsets(self, history: History, steps: Sequence[int]) -> FloatArray:
        """(H, Q) offsets: from the pool, or from a throw-away pool over the recent history for
        steps the pool does not hold."""
        missing = sorted({s for s in steps if self.calibrator.count(s) == 0})
        if not missing:
            return self.calibrator.offsets_for(steps)
        scratch = ResidualCalibrator(self.quantiles, self.calibrator.window)
        rows = min(
            history.values.shape[0], self.calibration_rows + max(missing) + self.context_rows()
        )
        raw, filled = self._tail(history, rows)
        self._add_residuals(raw, filled, missing, first_row=0, into=scratch)
        return np.stack([(scratch if s in missing else self.calibrator).offsets(s) for s in steps])

    def _check_step(self, step_s: float) -> None:
        if self._step_s is not None and not math.isclose(step_s, self._step_s, rel_tol=1e-6):
            raise ValueError(
                f"{self.name} was fitted on a {self._step_s:g} s grid but the history has a "
                f"{step_s:g} s step: refit it on this resolution"
            )

    def _tail(self, history: History, rows: int) -> tuple[FloatArray, FloatArray]:
        raw = np.asarray(history.values[-rows:], dtype=np.float64)
        return raw, tail_filled(history.values, rows, history.series_ids)

    def _add_residuals(
        self,
        raw: FloatArray,
        filled: FloatArray,
        steps: Sequence[int],
        first_row: int,
        into: ResidualCalibrator | None = None,
    ) -> None:
        """Residuals of forecasts whose target rows are ``first_row..`` of ``raw``."""
        pool = self.calibrator if into is None else into
        scale = series_scale(raw)
        n_rows = raw.shape[0]
        for step in steps:
            start = max(first_row, self.min_origin_rows() - 1 + step)
            if start >= n_rows:
                continue
            targets = np.arange(start, n_rows, dtype=np.int64)
            points = self._points(filled, targets - step, step)
            pool.add(step, ((raw[targets] - points) / scale).ravel())


class PersistenceForecaster(CalibratedPointForecaster):
    """Tomorrow looks like now: the last finite value at every horizon."""

    name = "persistence"

    def _points(self, filled: FloatArray, origins: IntArray, step: int) -> FloatArray:
        return filled[origins]


class SeasonalNaiveForecaster(CalibratedPointForecaster):
    """The value one season before the target time (default season: one day).

    Args:
        season_s: season length in seconds (a whole number of grid steps).
    """

    name = "seasonal_naive"

    def __init__(self, season_s: float = 86_400.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not season_s > 0:
            raise ValueError(f"season_s must be positive, got {season_s!r}")
        self.season_s = float(season_s)
        self._season_steps = 0

    def context_rows(self) -> int:
        return max(self._season_steps, 1)

    def min_origin_rows(self) -> int:
        # Before a full season exists the forecast falls back to the oldest row; calibrate
        # those forecasts too, or a history shorter than a season would give no interval.
        return 1

    def _fit_point(self, filled: FloatArray, raw: FloatArray) -> None:
        pass

    def fit(self, history: History) -> None:
        _check_history(history)
        self._season_steps = max(1, round(self.season_s / history.step_s))
        super().fit(history)

    def update(self, history: History, horizons_s: Sequence[float] = ()) -> None:
        _check_history(history)
        if self._season_steps == 0:
            self._season_steps = max(1, round(self.season_s / history.step_s))
        super().update(history, horizons_s)

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        _check_history(history)
        if self._season_steps == 0:
            # Never fitted: a throw-away copy knows the season at this step (predict is pure).
            bound = copy.copy(self)
            bound._season_steps = max(1, round(self.season_s / history.step_s))
            return CalibratedPointForecaster.predict(bound, history, horizons_s, future_exog)
        return super().predict(history, horizons_s, future_exog)

    def _points(self, filled: FloatArray, origins: IntArray, step: int) -> FloatArray:
        m = self._season_steps
        back = m * math.ceil(step / m)
        # Before one full season of history exists, fall back to the oldest row available.
        rows = np.maximum(origins + step - back, 0)
        return filled[rows]


class ARForecaster(CalibratedPointForecaster):
    """Linear autoregression ``z[t+h] = c_h + sum_i a_{h,i} z[t-i]`` with z = power / scale.

    One direct least-squares model per horizon in ``horizons_s`` (fitted at ``fit``); other
    horizons iterate the one-step model. Pooled across series, so it fits a global model.

    The direct models' samples are nested: the model ``s`` steps ahead uses every origin with a
    target ``s`` rows later, so a longer step's origins are a prefix of a shorter one's. With
    ``solve="nested"`` (default) a fit forms every step's normal equations from one pass over
    the rows (window sums of lagged products ``z[t] z[t - k]``, read off cumulative sums) and
    solves them in one batch: O(rows x (lags + steps)) instead of a Gram matrix of
    O(rows x lags^2) per step. ``solve="per_step"`` builds each step's design matrix and Gram
    matrix (the same equations summed in another order: the coefficients agree to rounding);
    it is also what a fit with missing targets or with more origins than ``max_rows`` allows
    uses, where the samples are not nested.

    Args:
        lags: number of lags p.
        max_rows: at most this many training rows (the most recent) go into the fit.
        ridge: a tiny ridge term for numerical stability.
        solve: ``"nested"`` or ``"per_step"`` (see above).
    """

    name = "ar"

    def __init__(
        self,
        lags: int = 24,
        max_rows: int = 200_000,
        ridge: float = 1e-6,
        solve: str = "nested",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if lags < 1:
            raise ValueError(f"AR needs at least one lag, got {lags}")
        if solve not in AR_SOLVES:
            raise ValueError(f"solve must be one of {', '.join(AR_SOLVES)}, got {solve!r}")
        self.lags = lags
        self.max_rows = max_rows
        self.ridge = ridge
        self.solve = solve
        self.coefs: dict[int, FloatArray] = {}
        self._sums: LagSums | None = None  # only during ``fit_point(history, sums)``

    @property
    def coef_(self) -> FloatArray:
        """One-step coefficients ``[c, a_1, ..., a_p]`` (normalised units)."""
        if 1 not in self.coefs:
            raise ValueError("ARForecaster is not fitted: call fit(history) first")
        return self.coefs[1]

    def context_rows(self) -> int:
        return self.lags

    def fit_point(self, history: History, sums: LagSums | None = None) -> None:
        """Fit the point model only; ``sums``: lagged-product sums to take from (and leave for)
        other fits on the same rows, e.g. ARs of other orders on the same history."""
        self._sums = sums
        try:
            super().fit_point(history)
        finally:
            self._sums = None

    def _fit_point(self, filled: FloatArray, raw: FloatArray) -> None:
        if self._step_s is None:
            raise ValueError("ARForecaster.fit needs the history step")
        z = filled / series_scale(raw, rows=raw.shape[0])
        steps = sorted({1, *horizon_steps(self.horizons_s, self._step_s)})
        n_rows, keep = z.shape[0], max(1, self.max_rows // z.shape[1])
        if self.solve == "nested" and self._nested(raw, steps, keep):
            self.coefs = self._solve_nested(z, steps)
            return
        # One design matrix over every origin some step uses; each step solves on its slice
        # (the same rows as a design of its own, built once instead of once per step).
        first = max(self.lags - 1, n_rows - steps[-1] - keep)
        x_all = _design(z, np.arange(first, max(n_rows - 1, first), dtype=np.int64), self.lags)
        self.coefs = {s: self._solve(z, raw, s, x_all, first) for s in steps}

    def _nested(self, raw: FloatArray, steps: Sequence[int], keep: int) -> bool:
        """Whether every step's origins are a prefix of the one-step model's: all of them kept
        (no ``max_rows`` cut), every target finite, and enough of them for the longest step."""
        origins = raw.shape[0] - self.lags  # the one-step model's
        if origins > keep or origins + 1 - max(steps) < self.lags + 1:
            return False
        return bool(np.isfinite(raw[self.lags :]).all())

    def _solve_nested(self, z: FloatArray, steps: Sequence[int]) -> dict[int, FloatArray]:
        """Every step's coefficients from sums of lagged products (see the class docstring).

        The model ``s`` steps ahead uses the origins ``o = p - 1 .. T - 1 - s`` (p lags, T
        rows). Its normal equations, pooled over the series, are window sums of
        ``z[t] z[t - k]`` (lag ``k`` < p + the longest step) and of ``z[t]``: entry
        (i, j) of the lags' Gram matrix is the sum of ``z[t] z[t - |i - j|]`` over
        ``t = o - min(i, j)``; the right-hand side's entry i the sum of ``z[t] z[t - s - i]``
        over ``t = o + s``. One cumulative sum per lag gives every window of every step."""
        p, n_rows = self.lags, z.shape[0]
        cum, level = self._lag_sums(z, p + max(steps))
        n_series = float(z.shape[1])
        first = p - 1
        i, j = np.indices((p, p))
        lag, near = np.abs(i - j), np.minimum(i, j)
        lags = np.arange(p)
        ordered = np.asarray(steps, dtype=np.int64)
        last = n_rows - 1 - ordered  # each step's last origin, (J,)
        gram = np.empty((len(steps), p + 1, p + 1))
        gram[:, 0, 0] = n_series * (last - first + 1)
        ends = last[:, None] - lags[None, :] + 1  # (J, p)
        gram[:, 0, 1:] = level[ends] - level[first - lags][None, :]
        gram[:, 1:, 0] = gram[:, 0, 1:]
        gram[:, 1:, 1:] = (
            cum[last[:, None, None] - near[None] + 1, lag[None]] - cum[first - near, lag][None]
        )
        gram += self.ridge * np.eye(p + 1)[None]
        cross = np.empty((len(steps), p + 1))
        cross[:, 0] = level[n_rows] - level[first + ordered]
        shifted = ordered[:, None] + lags[None, :]  # (J, p)
        cross[:, 1:] = cum[n_rows, shifted] - cum[first + ordered[:, None], shifted]
        coefs = np.linalg.solve(gram, cross[:, :, None])[:, :, 0]
        return {int(s): np.asarray(coefs[k], dtype=np.float64) for k, s in enumerate(ordered)}

    def _lag_sums(self, z: FloatArray, width: int) -> tuple[FloatArray, FloatArray]:
        """Those of ``self._sums`` if they were taken on the same ``z`` and are wide enough,
        else computed (and left there)."""
        sums = self._sums
        if (
            sums is not None
            and sums.z is not None
            and sums.cum is not None
            and sums.level is not None
            and sums.cum.shape[1] >= width
            and sums.z.shape == z.shape
            and np.array_equal(sums.z, z)
        ):
            return sums.cum, sums.level
        cum, level = lag_sums(z, width)
        if sums is not None:
            sums.z, sums.cum, sums.level = z, cum, level
        return cum, level

    def _solve(
        self, z: FloatArray, raw: FloatArray, step: int, x_all: FloatArray, first: int
    ) -> FloatArray:
        n_rows = z.shape[0]
        origins = np.arange(self.lags - 1, n_rows - step, dtype=np.int64)
        if origins.size < self.lags + 1:
            raise ValueError(
                f"history too short for AR({self.lags}) at {step} steps ahead: "
                f"{n_rows} rows, need at least {2 * self.lags + step + 1}"
            )
        origins = origins[-max(1, self.max_rows // z.shape[1]) :]
        x = x_all[origins[0] - first : origins[-1] - first + 1]  # (N, S, p+1)
        y = z[origins + step]
        ok = np.isfinite(raw[origins + step])
        if ok.all():  # a view, not a copy
            xf, yf = x.reshape(-1, x.shape[2]), y.reshape(-1)
        else:
            xf, yf = x[ok], y[ok]
        gram = xf.T @ xf + self.ridge * np.eye(xf.shape[1])
        return np.asarray(np.linalg.solve(gram, xf.T @ yf), dtype=np.float64)

    def _points(self, filled: FloatArray, origins: IntArray, step: int) -> FloatArray:
        if not self.coefs:
            raise ValueError("ARForecaster is not fitted: call fit(history) first")
        scale = series_scale(filled)
        z = filled / scale
        coef = self.coefs.get(step)
        if coef is not None:
            return np.asarray(_design(z, origins, self.lags) @ coef * scale, dtype=np.float64)
        return self._iterate(z, origins, step) * scale

    def _points_at(self, filled: FloatArray, origin: int, steps: Sequence[int]) -> FloatArray:
        direct = [s for s in steps if s in self.coefs]
        if self.solve != "nested" or len(direct) < 2:
            return super()._points_at(filled, origin, steps)
        # One design row and one product for every direct step (``_points`` step by step
        # computes the same numbers); other steps iterate the one-step model as there.
        scale = series_scale(filled)
        z = filled / scale
        at = np.array([origin], dtype=np.int64)
        row = _design(z, at, self.lags)[0]  # (S, 1 + lags)
        direct_points = row @ np.stack([self.coefs[s] for s in direct], axis=1) * scale[:, None]
        column = {s: j for j, s in enumerate(direct)}
        return np.stack(
            [
                direct_points[:, column[s]] if s in column else self._iterate(z, at, s)[0] * scale
                for s in steps
            ],
            axis=1,
        )

    def _iterate(self, z: FloatArray, origins: IntArray, step: int) -> FloatArray:
        """Recursive multi-step forecast with the one-step model."""
        one = self.coefs[1]
        idx = np.maximum(origins[:, None] - np.arange(self.lags)[None, :], 0)
        window = z[idx]  # (N, p, S), newest first
        window = np.moveaxis(window, 1, 2)  # (N, S, p)
        nxt = window[:, :, 0]
        for _ in range(step):
            nxt = one[0] + window @ one[1:]
            window = np.concatenate([nxt[:, :, None], window[:, :, :-1]], axis=2)
        return np.asarray(nxt, dtype=np.float64)


@dataclass
class LagSums:
    """Cumulative sums of one history's normalised lagged products (:func:`lag_sums`), kept
    for the next :meth:`ARForecaster.fit_point` on the same rows: AR fits of several orders on
    one history (the online blend's AR(24) and AR(6)) compute them once. Filled by the first
    fit that needs them; a fit on other rows, or needing more lags, computes its own."""

    z: FloatArray | None = None
    cum: FloatArray | None = None
    level: FloatArray | None = None


def lag_sums(z: FloatArray, width: int) -> tuple[FloatArray, FloatArray]:
    """For a (T, S) array: ``cum[t, k]``, the sum over rows ``u < t`` and series of
    ``z[u] z[u - k]`` (0 where ``u < k``), for lags ``k < width``, shape (T + 1, width); and
    ``level[t]``, the sum over rows ``u < t`` and series of ``z[u]``, shape (T + 1,)."""
    padded = np.concatenate([np.zeros((width - 1, z.shape[1])), z])
    back = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)[:, :, ::-1]
    prod = np.matmul(z[:, None, :], back)[:, 0, :]  # (T, width): sum over series
    cum = np.concatenate([np.zeros((1, width)), np.cumsum(prod, axis=0)])
    level = np.concatenate([[0.0], np.cumsum(z.sum(axis=1))])
    return cum, level


def _design(z: FloatArray, origins: IntArray, lags: int) -> FloatArray:
    """(N, S, 1 + lags) rows ``[1, z[o], z[o-1], ..., z[o-lags+1]]``; early rows clamp to 0."""
    idx = np.maximum(origins[:, None] - np.arange(lags)[None, :], 0)  # (N, p)
    lagged = np.moveaxis(z[idx], 1, 2)  # (N, S, p)
    ones = np.ones((*lagged.shape[:2], 1))
    return np.concatenate([ones, lagged], axis=2)


def _check_history(history: History) -> None:
    values = history.values
    if values.ndim != 2 or values.shape != (history.timestamps_s.shape[0], len(history.series_ids)):
        raise ValueError(
            f"history values must be (T, S) = ({history.timestamps_s.shape[0]}, "
            f"{len(history.series_ids)}), got {values.shape}"
        )
    if values.shape[0] < 2:
        raise ValueError("a history needs at least two rows to have a time step")
