"""Input windows for the global LSTM, built the same way for training and for prediction.

Per series and origin row ``o`` (the last observed row), with ``L`` = lookback:

- ``scale[o]``: the series' mean absolute one-step change over the ``scale_rows`` rows up to
  ``o`` (a volatility scale, so racks of any size and resolution look alike to the model);
- per step ``t`` in ``o-L+1..o``: ``(y[t] - y[o]) / scale`` (level relative to the last value),
  ``(y[t] - y[t-1]) / scale`` (change), a mask (1 = measured, 0 = forward-filled gap),
  sin/cos of time of day and day of week, and the standardised exogenous columns;
- the target at ``h`` steps ahead: ``(y[o+h] - y[o]) / scale`` (the change the model predicts:
  a persistence residual).

Pure numpy, timestamps passed in: no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.forecast.fill import forward_fill

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
#: Base channels per step: relative level, change, mask, 4 calendar.
N_BASE_CHANNELS = 7
#: Normalised inputs are clipped so one absurd spike cannot blow up the network.
CLIP = 50.0


@dataclass(frozen=True)
class SeriesArrays:
    """Per-row arrays of a (T, S) history prepared once for window extraction."""

    filled: FloatArray  # (T, S) forward-filled values
    mask: FloatArray  # (T, S) 1 where measured
    scale: FloatArray  # (T, S) rolling volatility scale per origin
    calendar: FloatArray  # (T, 4)
    exog: FloatArray  # (T, S, E) standardised exogenous columns (E may be 0)


def calendar_features(timestamps_s: FloatArray) -> FloatArray:
    """(T, 4): sin/cos of time of day and of day of week (epoch seconds, UTC)."""
    day = 2 * np.pi * (timestamps_s % DAY_S) / DAY_S
    week = 2 * np.pi * (timestamps_s % WEEK_S) / WEEK_S
    return np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=1)


def rolling_scale(filled: FloatArray, scale_rows: int) -> FloatArray:
    """(T, S) mean |one-step change| over the last ``scale_rows`` rows up to each row.

    Floored at 1e-3 of the series' level (and 1e-6 absolute) so a flat series stays finite.
    """
    diffs = np.abs(np.diff(filled, axis=0, prepend=filled[:1]))
    csum = np.cumsum(diffs, axis=0)
    rows = np.arange(filled.shape[0])
    start = np.maximum(rows - scale_rows, 0)
    window_sum = csum - np.where(rows[:, None] - scale_rows >= 0, csum[start], 0.0)
    count = np.minimum(rows, scale_rows).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(count[:, None] > 0, window_sum / np.maximum(count[:, None], 1), 0.0)
    floor = np.maximum(1e-3 * np.abs(filled), 1e-6)
    return np.maximum(scale, floor)


def last_scale(filled: FloatArray, scale_rows: int) -> FloatArray:
    """(T, S) array repeating the last row of :func:`rolling_scale` (computed alone)."""
    tail = filled[-(scale_rows + 1) :]
    count = tail.shape[0] - 1
    if count > 0:
        scale = np.abs(np.diff(tail, axis=0)).sum(axis=0) / count
    else:
        scale = np.zeros(filled.shape[1])
    scale = np.maximum(scale, np.maximum(1e-3 * np.abs(filled[-1]), 1e-6))
    return np.broadcast_to(scale, filled.shape)


def prepare(
    timestamps_s: FloatArray,
    values: FloatArray,
    exog: Mapping[str, FloatArray],
    exog_names: Sequence[str],
    exog_stats: Mapping[str, tuple[float, float]],
    scale_rows: int,
    last_scale_only: bool = False,
) -> SeriesArrays:
    """Fill gaps and compute the per-row arrays for :func:`windows`.

    ``last_scale_only`` computes the scale of the last row only (and repeats it): enough for
    prediction, where the last row is the only origin, and much cheaper.
    """
    raw = np.asarray(values, dtype=np.float64)
    filled = forward_fill(raw)
    mask = np.isfinite(raw).astype(np.float64)
    ex = np.zeros((*raw.shape, len(exog_names)))
    for k, name in enumerate(exog_names):
        if name not in exog:
            raise ValueError(f"exogenous column {name!r} is missing (the model was trained on it)")
        mean, std = exog_stats[name]
        col = forward_fill(np.asarray(exog[name], dtype=np.float64))
        ex[:, :, k] = np.nan_to_num((col - mean) / std)
    return SeriesArrays(
        filled=filled,
        mask=mask,
        scale=last_scale(filled, scale_rows)
        if last_scale_only
        else rolling_scale(filled, scale_rows),
        calendar=calendar_features(np.asarray(timestamps_s, dtype=np.float64)),
        exog=ex,
    )


def windows(arrays: SeriesArrays, origins: IntArray, series: IntArray, lookback: int) -> FloatArray:
    """(N, L, C) input windows for (origin row, series column) pairs.

    Rows before the start of the history repeat the first row (with mask 0).
    """
    offs = np.arange(-lookback + 1, 1)
    rows = origins[:, None] + offs[None, :]  # (N, L)
    clamped = np.maximum(rows, 0)
    cols = series[:, None]
    level = arrays.filled[clamped, cols]
    prev = arrays.filled[np.maximum(clamped - 1, 0), cols]
    last = arrays.filled[origins, series][:, None]
    scale = arrays.scale[origins, series][:, None]
    rel = np.clip((level - last) / scale, -CLIP, CLIP)
    change = np.clip((level - prev) / scale, -CLIP, CLIP)
    mask = np.where(rows >= 0, arrays.mask[clamped, cols], 0.0)
    parts = [rel[..., None], change[..., None], mask[..., None], arrays.calendar[clamped]]
    if arrays.exog.shape[2]:
        parts.append(arrays.exog[clamped, cols])
    return np.concatenate(parts, axis=2)


def targets(
    arrays: SeriesArrays,
    raw: FloatArray,
    origins: IntArray,
    series: IntArray,
    steps: Sequence[int],
) -> FloatArray:
    """(N, H) normalised changes ``(y[o+h] - y[o]) / scale[o]``; NaN where unmeasured."""
    last = arrays.filled[origins, series]
    scale = arrays.scale[origins, series]
    cols = [(raw[origins + h, series] - last) / scale for h in steps]
    return np.stack(cols, axis=1)


def future_exog_at(
    arrays: SeriesArrays, origins: IntArray, series: IntArray, steps: Sequence[int]
) -> FloatArray:
    """(N, H * E) standardised exogenous values at the target rows (known-future columns)."""
    n_exog = arrays.exog.shape[2]
    if n_exog == 0:
        return np.zeros((origins.shape[0], 0))
    last_row = arrays.exog.shape[0] - 1
    cols = [arrays.exog[np.minimum(origins + h, last_row), series] for h in steps]
    return np.concatenate(cols, axis=1)
