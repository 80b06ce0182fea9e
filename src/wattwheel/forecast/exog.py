"""Exogenous inputs: external feeds aligned onto a trace's time grid.

Two ways to give the forecaster extra columns:

1. **Per-rack columns in the trace file** (``timestamp, rack_id, power_w, <name>...``): they
   arrive in ``Trace.exog`` / ``History.exog`` as (T, S) arrays, e.g. a workload schedule
   ``sched_w`` (the power the scheduler has planned for the rack).
2. **Feed files** (weather, grid alerts, a site-wide schedule), CSV with a header::

       timestamp,<name>[,<name>...]            # one value per time, for every rack
       timestamp,rack_id,<name>[,<name>...]    # or per rack

   ``timestamp`` in epoch seconds (the trace's time base) or ISO 8601; values numeric, empty =
   unknown. Rows need not be on the trace grid nor regular: each grid time takes the latest feed
   value at or before it (an as-of join; NaN before the first). Read by ``wattwheel train/backtest
   --exog FILE``.

The LSTM treats every exogenous column as *known ahead* (a schedule, a weather forecast, an
announced grid alert): in training it sees the column at the target time; at prediction time
pass ``future_exog`` (name -> (H, S), aligned with the horizons), otherwise the last known value
is held. Do not feed it a column that is only known after the fact.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def align_asof(feed_ts: FloatArray, feed_values: FloatArray, grid_ts: FloatArray) -> FloatArray:
    """(T,) latest finite feed value at or before each grid time (NaN before the first).

    Args:
        feed_ts: (N,) feed timestamps, seconds (any order).
        feed_values: (N,) values, NaN = unknown.
        grid_ts: (T,) trace timestamps, seconds.
    """
    order = np.argsort(feed_ts, kind="stable")
    ts, vals = np.asarray(feed_ts)[order], np.asarray(feed_values, dtype=np.float64)[order]
    keep = np.isfinite(vals) & np.isfinite(ts)
    ts, vals = ts[keep], vals[keep]
    idx = np.searchsorted(ts, grid_ts, side="right") - 1
    out = np.full(grid_ts.shape[0], np.nan)
    ok = idx >= 0
    out[ok] = vals[idx[ok]]
    return out


def feed_to_exog(
    feed_ts: FloatArray,
    columns: Mapping[str, FloatArray],
    grid_ts: FloatArray,
    series_ids: Sequence[str],
    feed_series: Sequence[str] | None = None,
) -> dict[str, FloatArray]:
    """Feed columns as History exog arrays (name -> (T, S)).

    With ``feed_series`` (the rack id of each feed row) each rack gets its own rows; racks the
    feed does not mention get NaN. Without it every rack gets the same column.
    """
    out: dict[str, FloatArray] = {}
    for name, values in columns.items():
        if feed_series is None:
            col = align_asof(feed_ts, values, grid_ts)
            out[name] = np.repeat(col[:, None], len(series_ids), axis=1)
            continue
        racks = np.asarray(feed_series)
        arr = np.full((grid_ts.shape[0], len(series_ids)), np.nan)
        for j, rack in enumerate(series_ids):
            mine = racks == rack
            if mine.any():
                arr[:, j] = align_asof(feed_ts[mine], np.asarray(values)[mine], grid_ts)
        out[name] = arr
    return out
