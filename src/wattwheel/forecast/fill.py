"""Gap handling for forecaster inputs: forward-fill NaN readings with the last finite value."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def forward_fill(values: FloatArray) -> FloatArray:
    """(T, S) copy with each NaN replaced by the last finite value above it.

    Leading NaNs (before a series' first finite value) are back-filled with that first value;
    a column with no finite value at all stays NaN (callers decide whether that is an error).
    """
    vals = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(vals)
    if finite.all():
        return vals.copy()
    n_rows = vals.shape[0]
    idx = np.where(finite, np.arange(n_rows)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    first = np.argmax(finite, axis=0)
    idx = np.where(idx < 0, first[None, :], idx)
    return np.take_along_axis(vals, idx, axis=0)


def tail_filled(values: FloatArray, rows: int, series_ids: tuple[str, ...]) -> FloatArray:
    """The last ``rows`` rows of a (T, S) array, forward-filled, looking further back only for
    series whose tail starts with a gap.

    Raises:
        ValueError: a series has no finite value anywhere in ``values``.
    """
    rows = max(1, min(rows, values.shape[0]))
    tail = np.array(values[-rows:], dtype=np.float64)
    head_missing = ~np.isfinite(tail[0])
    if head_missing.any():
        # Seed the first row from the last finite reading before the tail (rare: long gaps).
        for col in np.flatnonzero(head_missing):
            earlier = values[:-rows, col] if values.shape[0] > rows else values[:0, col]
            finite_idx = np.flatnonzero(np.isfinite(earlier))
            if finite_idx.size:
                tail[0, col] = earlier[finite_idx[-1]]
    filled = forward_fill(tail)
    empty = ~np.isfinite(filled[-1])
    if empty.any():
        names = ", ".join(repr(series_ids[i]) for i in np.flatnonzero(empty)[:5])
        raise ValueError(f"no finite value in the history of series {names}: cannot forecast")
    return filled
