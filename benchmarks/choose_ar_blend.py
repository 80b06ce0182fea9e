"""Choose a model's AR-blend weights on the validation split of its own training data.

For each training trace of a model directory, the time tail the LSTM held out when it was
trained (``val_fraction`` of the rows, the same split as ``wattwheel train``) is backtested from
every ``--stride``-th row: the LSTM's point and the point of a local AR fitted on the last
``--ar-rows`` rows before the origin (what :class:`~wattwheel.forecast.hybrid.ARBlendForecaster`
does at each forecast). Per horizon, the LSTM weight in 0, 0.05, ..., 1 with the lowest MAE over
all those origins is chosen; ``--write`` stores them in ``metadata.json`` as ``ar_blend``. The
series a model is benched on never enter.

    .venv/bin/python benchmarks/choose_ar_blend.py --model DIR --trace TRAIN.csv ... [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wattwheel.adapters.model_artifact import load_model
from wattwheel.forecast.backtest import rolling_origin
from wattwheel.forecast.base import History
from wattwheel.forecast.hybrid import DEFAULT_AR_ROWS, ARBlendForecaster
from wattwheel.sim.trace_io import read_trace

GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--trace", type=Path, nargs="+", required=True, help="training traces")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--ar-rows", type=int, default=DEFAULT_AR_ROWS)
    parser.add_argument("--write", action="store_true", help="store the weights in the model")
    args = parser.parse_args()
    lstm = load_model(args.model)
    horizons_s = list(lstm.config.horizons_s)
    ar_only = ARBlendForecaster(lstm, horizons_s, [0.0] * len(horizons_s), ar_rows=args.ar_rows)
    lstm_pts, ar_pts, actual = [], [], []
    for path in args.trace:
        history = History.from_trace(read_trace(path))
        start = int(history.values.shape[0] * (1 - lstm.config.val_fraction))
        a = rolling_origin(lstm, history, horizons_s, start, args.stride)
        b = rolling_origin(ar_only, history, horizons_s, start, args.stride)
        lstm_pts.append(a.point.reshape(-1, len(horizons_s)))
        ar_pts.append(b.point.reshape(-1, len(horizons_s)))
        actual.append(a.actual.reshape(-1, len(horizons_s)))
        print(f"{path.name}: {a.origins.size} origins from row {start}", flush=True)
    lp, ap, y = (np.concatenate(x) for x in (lstm_pts, ar_pts, actual))
    weights = []
    for h, horizon in enumerate(horizons_s):
        ok = np.isfinite(y[:, h]) & np.isfinite(ap[:, h])
        maes = [
            float(np.mean(np.abs(y[ok, h] - (w * lp[ok, h] + (1 - w) * ap[ok, h])))) for w in GRID
        ]
        best = int(np.argmin(maes))
        weights.append(float(GRID[best]))
        print(
            f"horizon {horizon:g} s: MAE lstm {maes[-1] / 1e3:.4f} kW, local AR {maes[0] / 1e3:.4f}"
            f" kW, best LSTM weight {GRID[best]:.2f} -> {maes[best] / 1e3:.4f} kW"
        )
    blend = {
        "horizons_s": horizons_s,
        "inner_weight": weights,
        "ar_rows": args.ar_rows,
        "ar_lags": 24,
        "chosen_on": "validation tail (val_fraction) of the training traces "
        + ", ".join(p.name for p in args.trace)
        + f", every {args.stride} rows (benchmarks/choose_ar_blend.py)",
    }
    print(json.dumps(blend))
    if args.write:
        meta = args.model / "metadata.json"
        document = json.loads(meta.read_text())
        document["ar_blend"] = blend
        meta.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote ar_blend into {meta}")


if __name__ == "__main__":
    main()
