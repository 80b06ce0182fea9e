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

:class:`OnlineBlendForecaster` (what the shipped models are served with) starts from those fixed
weights and learns them, per horizon, from the components' realised errors on the series' own
past: an online least-squares stacking of the inner forecaster, the local AR and shorter local
ARs (``extra_lags``), shrunk toward the fixed weights, updated only by explicit ``update`` calls
with measured data (the pattern of ``ConformalForecaster``, which passes its updates on).

Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wattwheel.forecast.base import FloatArray, Forecast, Forecaster, History
from wattwheel.forecast.baselines import ARForecaster, LagSums
from wattwheel.forecast.calibration import horizon_steps
from wattwheel.forecast.pending import score_arrived

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
        ar_solve: how the local ARs form their normal equations
            (:class:`~wattwheel.forecast.baselines.ARForecaster` ``solve``; the same
            coefficients to rounding, ``"per_step"`` is the slower way kept for comparison).
    """

    def __init__(
        self,
        inner: Forecaster,
        horizons_s: Sequence[float],
        inner_weight: Sequence[float],
        ar_rows: int = DEFAULT_AR_ROWS,
        ar_lags: int = 24,
        ar_solve: str = "nested",
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
        self.ar_solve = ar_solve

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

    def local_ar_point(
        self, history: History, horizons_s: Sequence[float], sums: LagSums | None = None
    ) -> FloatArray | None:
        """(S, H) points of an AR fitted on the recent past; None if the past is too short.
        ``sums``: shared with the other local ARs fitted on the same rows."""
        return self._local_point(history, horizons_s, self.ar_lags, sums)

    def _local_point(
        self,
        history: History,
        horizons_s: Sequence[float],
        lags: int,
        sums: LagSums | None = None,
    ) -> FloatArray | None:
        steps = horizon_steps(horizons_s, history.step_s)
        rows = min(history.values.shape[0], self.ar_rows)
        if rows < 4 * lags + max(steps) + 1:
            return None
        tail = history.tail(rows)
        ar = ARForecaster(
            lags=lags, max_rows=AR_MAX_SAMPLES, horizons_s=tuple(horizons_s), solve=self.ar_solve
        )
        try:
            ar.fit_point(tail, sums)
            return ar.point_forecast(tail, horizons_s)
        except (ValueError, np.linalg.LinAlgError):
            return None


#: Lags of the extra local ARs the online blend can also weigh (besides ``ar_lags``).
DEFAULT_EXTRA_LAGS: tuple[int, ...] = (6,)
#: Weight of the shipped weights in the online fit, in scored samples (per series and target).
DEFAULT_PRIOR_SAMPLES = 200.0
#: Forgetting factor applied per scored sample batch (one origin): memory of ~10,000 origins.
DEFAULT_FORGET = 0.9999
#: Forecasts kept waiting for their targets.
MAX_PENDING = 4096


@dataclass
class _Pending:
    """The components' points of one forecast, waiting for their targets."""

    issued_at_s: float
    series_ids: tuple[str, ...]
    steps: tuple[int, ...]
    base: FloatArray  # (S, H) the main local AR's point
    diffs: FloatArray  # (S, H, K) each component's point minus ``base``
    done: set[int] = field(default_factory=set)


class OnlineBlendForecaster(ARBlendForecaster):
    """``inner`` and local ARs combined by per-horizon weights learned from their own errors.

    The components are ``inner`` (the LSTM), a local AR with ``ar_lags`` lags (the base) and one
    local AR per ``extra_lags`` entry, each fitted at every call on the last ``ar_rows`` rows of
    the history it is given. The point at horizon step ``s`` is
    ``base + sum_k w_k (component_k - base)``: an online least-squares stacking of the
    components' realised errors, shrunk toward the fixed weights (``inner_weight`` for
    ``inner``, 0 for the extra ARs) with a strength of ``prior_samples`` scored samples, old
    samples discounted by ``forget`` per update, weights clipped to [0, 1]. Before any update
    the forecast is exactly :class:`ARBlendForecaster`'s.

    Side-effect free like :class:`~wattwheel.forecast.conformal.ConformalForecaster`:
    ``predict`` depends on its arguments and the learned sums only; :meth:`update` (explicit,
    from measured data) scores the forecasts made at earlier updates whose targets the history
    now holds, and forecasts from its last row for a later update to score.
    """

    def __init__(
        self,
        inner: Forecaster,
        horizons_s: Sequence[float],
        inner_weight: Sequence[float],
        ar_rows: int = DEFAULT_AR_ROWS,
        ar_lags: int = 24,
        extra_lags: Sequence[int] = DEFAULT_EXTRA_LAGS,
        prior_samples: float = DEFAULT_PRIOR_SAMPLES,
        forget: float = DEFAULT_FORGET,
        ar_solve: str = "nested",
    ) -> None:
        super().__init__(inner, horizons_s, inner_weight, ar_rows, ar_lags, ar_solve)
        if prior_samples <= 0:
            raise ValueError(f"prior_samples must be positive, got {prior_samples}")
        if not 0.0 < forget <= 1.0:
            raise ValueError(f"forget must be in (0, 1], got {forget}")
        if any(lag < 1 for lag in extra_lags):
            raise ValueError(f"lags must be positive, got {list(extra_lags)}")
        self.extra_lags = tuple(int(lag) for lag in extra_lags)
        self.prior_samples = float(prior_samples)
        self.forget = float(forget)
        k = 1 + len(self.extra_lags)
        #: Per horizon step: (K, K) sum of d d^T, (K,) sum of d e, and the sample count.
        self._gram: dict[int, FloatArray] = {}
        self._cross: dict[int, FloatArray] = {}
        self._count: dict[int, float] = {}
        self._k = k
        self._step_s: float | None = None
        self._pending: list[_Pending] = []

    def fit(self, history: History) -> None:
        """Fit the inner forecaster; the learned weights start again from the fixed ones."""
        self.inner.fit(history)
        self._gram, self._cross, self._count = {}, {}, {}
        self._pending, self._step_s = [], None

    # ---------------------------------------------------------------------------- forecast
    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        fc, _ = self._forecast(history, horizons_s, future_exog)
        return fc

    def predict_and_update(self, history: History, horizons_s: Sequence[float]) -> Forecast:
        """``predict`` then ``update`` on the same history, the components computed once."""
        fc, parts = self._forecast(history, horizons_s, None)
        self._update(history, horizons_s, parts)
        return fc

    def update(self, history: History, horizons_s: Sequence[float]) -> None:
        """Score pending forecasts against ``history``, then forecast from its last row (once
        per last row: a second call with the same last row only scores)."""
        self._update(history, horizons_s, None)

    def learned_weights(self, horizons_s: Sequence[float], step_s: float) -> FloatArray:
        """(H, 1 + K) weights now: ``inner``'s, then each extra AR's (the base AR has the rest)."""
        steps = horizon_steps(horizons_s, step_s)
        prior = self.weights_at(horizons_s)
        out = np.zeros((len(steps), self._k))
        out[:, 0] = prior
        learned = [h for h, s in enumerate(steps) if self._count.get(s, 0.0) > 0.0]
        if not learned:
            return out
        # Every learned horizon's small system in one batched solve (the same LAPACK solve per
        # system as one call each); a singular one sends them all through ``_weights``.
        grams = np.stack([self._gram[steps[h]] for h in learned])
        rhs = np.stack([self._cross[steps[h]] for h in learned])
        counts = np.array([self._count[steps[h]] for h in learned])
        mean_diag = np.maximum(np.trace(grams, axis1=1, axis2=2) / (self._k * counts), 1e-12)
        ridge = self.prior_samples * mean_diag
        try:
            w = np.linalg.solve(
                grams + ridge[:, None, None] * np.eye(self._k)[None],
                (rhs + ridge[:, None] * out[learned])[:, :, None],
            )[:, :, 0]
        except np.linalg.LinAlgError:
            return np.stack([self._weights(s, float(p)) for s, p in zip(steps, prior, strict=True)])
        out[learned] = np.clip(w, 0.0, 1.0)
        return out

    def samples(self, step: int) -> float:
        """Scored samples (discounted) behind the weights of a horizon step."""
        return self._count.get(step, 0.0)

    # --------------------------------------------------------------------------- internals
    def _weights(self, step: int, prior_inner: float) -> FloatArray:
        prior = np.zeros(self._k)
        prior[0] = prior_inner
        count = self._count.get(step, 0.0)
        if count <= 0.0:
            return prior
        gram, cross = self._gram[step], self._cross[step]
        mean_diag = max(float(np.trace(gram)) / (self._k * count), 1e-12)
        ridge = self.prior_samples * mean_diag
        try:
            w = np.linalg.solve(gram + ridge * np.eye(self._k), cross + ridge * prior)
        except np.linalg.LinAlgError:
            return prior
        return np.asarray(np.clip(w, 0.0, 1.0), dtype=np.float64)

    def _forecast(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None,
    ) -> tuple[Forecast, tuple[FloatArray, FloatArray] | None]:
        fc = self.inner.predict(history, horizons_s, future_exog)
        sums = LagSums()  # the local ARs are fitted on the same rows: lagged sums once
        base = self.local_ar_point(history, horizons_s, sums)
        if base is None:
            return fc, None
        extras = [self._local_point(history, horizons_s, lags, sums) for lags in self.extra_lags]
        comps = [fc.point, *(base if e is None else e for e in extras)]
        diffs = np.stack([c - base for c in comps], axis=2)  # (S, H, K)
        diffs = np.where(np.isfinite(diffs), diffs, 0.0)
        weights = self.learned_weights(horizons_s, history.step_s)  # (H, K)
        blended = base + np.einsum("shk,hk->sh", diffs, weights)
        point = np.where(np.isfinite(base), blended, fc.point)
        shift = point - fc.point
        out = Forecast(
            issued_at_s=fc.issued_at_s,
            series_ids=fc.series_ids,
            horizons_s=fc.horizons_s,
            quantiles=fc.quantiles,
            values=fc.values + shift[:, :, None],
            point=point,
        )
        return out, (base, diffs)

    def _update(
        self,
        history: History,
        horizons_s: Sequence[float],
        parts: tuple[FloatArray, FloatArray] | None,
    ) -> None:
        if self._step_s is not None and not math.isclose(
            history.step_s, self._step_s, rel_tol=1e-6
        ):
            raise ValueError(
                f"learned on a {self._step_s:g} s grid but the history has a "
                f"{history.step_s:g} s step: start a new forecaster at this resolution"
            )
        self._step_s = history.step_s
        self._score(history)
        latest = self._pending[-1].issued_at_s if self._pending else -math.inf
        if history.end_s > latest:
            if parts is None:
                _, parts = self._forecast(history, horizons_s, None)
            if parts is not None:
                base, diffs = parts
                self._pending.append(
                    _Pending(
                        history.end_s,
                        history.series_ids,
                        horizon_steps(horizons_s, history.step_s),
                        base,
                        diffs,
                    )
                )
        self._pending = self._pending[-MAX_PENDING:]

    def _score(self, history: History) -> None:
        def score(p: _Pending, h: int, step: int, actual: FloatArray) -> None:
            self._learn(step, p.diffs[:, h, :], actual - p.base[:, h])

        self._pending = score_arrived(self._pending, history, score)

    def _learn(self, step: int, diffs: FloatArray, errors: FloatArray) -> None:
        ok = np.isfinite(errors) & np.all(np.isfinite(diffs), axis=1)
        if not ok.any():
            return
        d, e = diffs[ok], errors[ok]
        gram = self._gram.get(step, np.zeros((self._k, self._k)))
        cross = self._cross.get(step, np.zeros(self._k))
        self._gram[step] = self.forget * gram + d.T @ d
        self._cross[step] = self.forget * cross + d.T @ e
        self._count[step] = self.forget * self._count.get(step, 0.0) + float(ok.sum())
