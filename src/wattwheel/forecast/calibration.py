"""Conformal calibration of forecast quantiles from past residuals, per horizon.

Residuals are stored *normalised* by a per-series scale (the series' mean absolute level), so
racks of different size share one pool and a forecaster calibrated on some racks transfers to
others. For a quantile level ``q`` the calibrated offset is the empirical ``q``-quantile of
``(actual - predicted_q) / scale`` over a rolling window of recent residuals (split-conformal
style: the outer levels use the finite-sample ``ceil((n+1)q)/n`` rank, so an interval between
two levels covers at least their difference on exchangeable data). Point forecasters predict
the same value at every level; a quantile model (the LSTM) gives one prediction per level and
the offsets then correct its own quantiles (conformalised quantile regression per level).

Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Rows used for the per-series scale (a day at 5-minute resolution).
SCALE_ROWS = 288
#: A scale below this (watts) is treated as 1 W, so an idle rack does not divide by zero.
MIN_SCALE = 1e-6


def horizon_steps(horizons_s: Sequence[float], step_s: float) -> tuple[int, ...]:
    """Horizons in seconds to whole grid steps: rounded up, at least one step."""
    if not step_s > 0:
        raise ValueError(f"the history step must be positive, got {step_s!r} s")
    steps = []
    for h in horizons_s:
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"forecast horizons must be positive seconds, got {h!r}")
        # The small tolerance keeps 300.0000001 / 300 from becoming two steps.
        steps.append(max(1, math.ceil(h / step_s - 1e-9)))
    return tuple(steps)


def series_scale(values: FloatArray, rows: int = SCALE_ROWS) -> FloatArray:
    """(S,) mean absolute finite value over the last ``rows`` rows of a (T, S) array.

    A series with no finite value in that window, or a level of ~0, gets scale 1.
    """
    tail = np.abs(values[-rows:])
    finite = np.isfinite(tail)
    count = finite.sum(axis=0)
    total = np.where(finite, tail, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = total / count
    return np.where((count > 0) & (scale > MIN_SCALE), scale, 1.0)


class _Ring:
    """A fixed-capacity (capacity, Q) buffer that overwrites its oldest rows."""

    def __init__(self, capacity: int, n_q: int) -> None:
        self.data = np.empty((capacity, n_q))
        self.size = 0
        self.pos = 0

    def extend(self, rows: FloatArray) -> None:
        cap = self.data.shape[0]
        rows = rows[-cap:]
        n = rows.shape[0]
        first = min(n, cap - self.pos)
        self.data[self.pos : self.pos + first] = rows[:first]
        self.data[: n - first] = rows[first:]
        self.pos = (self.pos + n) % cap
        self.size = min(self.size + n, cap)

    def rows(self) -> FloatArray:
        """The stored rows, oldest first."""
        if self.size < self.data.shape[0]:
            return self.data[: self.size]
        return np.concatenate([self.data[self.pos :], self.data[: self.pos]])


class ResidualCalibrator:
    """Rolling pools of normalised residuals, one per horizon step, giving quantile offsets.

    Offsets are recomputed once the pool has taken in 1 % of its window since the last
    computation (or at once while the pool is small), so an online update on every forecast
    costs a copy, not a sort.

    Args:
        quantiles: Q increasing levels in (0, 1).
        window: residuals kept per horizon (the oldest are dropped: online adaptation).
    """

    def __init__(self, quantiles: Sequence[float], window: int = 20_000) -> None:
        qs = np.asarray(quantiles, dtype=np.float64)
        if qs.ndim != 1 or qs.size == 0 or np.any((qs <= 0) | (qs >= 1)):
            raise ValueError(f"quantiles must be levels in (0, 1), got {tuple(quantiles)!r}")
        if np.any(np.diff(qs) <= 0):
            raise ValueError(f"quantiles must be strictly increasing, got {tuple(quantiles)!r}")
        if window < 1:
            raise ValueError(f"calibration window must be at least 1, got {window}")
        self.quantiles = tuple(float(q) for q in qs)
        self.window = window
        self._pools: dict[int, _Ring] = {}
        self._offsets: dict[int, FloatArray] = {}
        self._fresh: dict[int, int] = {}

    @property
    def steps(self) -> tuple[int, ...]:
        """Horizon steps that have at least one residual."""
        return tuple(sorted(self._pools))

    def count(self, step: int) -> int:
        pool = self._pools.get(step)
        return 0 if pool is None else pool.size

    def add(self, step: int, residuals: FloatArray) -> None:
        """Append normalised residuals for ``step``: shape (N,) (point model) or (N, Q)."""
        res = np.asarray(residuals, dtype=np.float64)
        if res.ndim == 1:
            res = np.repeat(res[:, None], len(self.quantiles), axis=1)
        if res.ndim != 2 or res.shape[1] != len(self.quantiles):
            n_q = len(self.quantiles)
            raise ValueError(f"residuals must be (N,) or (N, {n_q}), got {res.shape}")
        res = res[np.all(np.isfinite(res), axis=1)]
        if res.shape[0] == 0:
            return
        pool = self._pools.get(step)
        if pool is None:
            pool = self._pools[step] = _Ring(self.window, len(self.quantiles))
        pool.extend(res)
        self._fresh[step] = self._fresh.get(step, 0) + res.shape[0]

    def offsets(self, step: int) -> FloatArray:
        """(Q,) normalised offsets to add at each level; zeros when nothing is known yet."""
        pool = self._pools.get(step)
        if pool is None:
            return np.zeros(len(self.quantiles))
        cached = self._offsets.get(step)
        if cached is not None and self._fresh.get(step, 0) < max(1, pool.size // 100):
            return cached
        data = pool.data[: pool.size]
        out = np.array([_conformal_quantile(data[:, j], q) for j, q in enumerate(self.quantiles)])
        self._offsets[step] = out
        self._fresh[step] = 0
        return out

    def offsets_for(self, steps: Iterable[int]) -> FloatArray:
        """(H, Q) offsets for several horizon steps."""
        return np.stack([self.offsets(s) for s in steps])

    def state(self) -> dict[str, list[list[float]]]:
        """Plain-data snapshot, oldest residuals first (for saving next to a model)."""
        return {str(k): v.rows().tolist() for k, v in self._pools.items()}

    def load_state(self, state: dict[str, list[list[float]]]) -> None:
        self._pools, self._offsets, self._fresh = {}, {}, {}
        for key, rows in state.items():
            self.add(int(key), np.asarray(rows, dtype=np.float64).reshape(-1, len(self.quantiles)))


def _conformal_quantile(residuals: FloatArray, q: float) -> float:
    """The ``q`` empirical quantile, with the split-conformal finite-sample rank at the tails.

    Above the median the ``ceil((n+1)q)``-th smallest residual, below it the
    ``floor((n+1)q)``-th, clipped to the sample (1-based ranks).
    """
    n = residuals.shape[0]
    if q == 0.5:
        return float(np.median(residuals))
    rank = math.ceil((n + 1) * q) if q > 0.5 else math.floor((n + 1) * q)
    k = min(max(rank, 1), n) - 1
    return float(np.partition(residuals, k)[k])


def apply_offsets(
    quantile_points: FloatArray, scale: FloatArray, offsets: FloatArray
) -> FloatArray:
    """Calibrated (S, H, Q) quantiles, non-decreasing along Q.

    Args:
        quantile_points: (S, H, Q) raw predictions per level (a point model repeats its point).
        scale: (S,) per-series scale the residuals were normalised by.
        offsets: (H, Q) normalised offsets from :meth:`ResidualCalibrator.offsets_for`.
    """
    out = quantile_points + scale[:, None, None] * offsets[None, :, :]
    # Calibration per level can cross when pools are tiny; sorting keeps the contract.
    return np.maximum.accumulate(out, axis=2)
