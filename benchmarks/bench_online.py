"""Continuous learning replayed in accelerated time on series the shipped model never saw.

The 5-minute shipped model (``dcutil-300s-lstm``) was trained on data-center-wide CPU
utilisation of Alibaba, Google ClusterData and Azure (its ``metadata.json``); this replays
Google's measured PDU power (cell a, PDUs 6, 7, 8; the ``cella-oversub`` trace) through the
same rules ``serve --learn`` applies (``wattwheel.forecast.online``):

- every origin (5 min) each model version on the lineup (live, shadow, predecessor) forecasts
  from the rows up to it; its error at the first horizon is scored when the target arrives;
- every ``--finetune-every-days`` (or at once when the drift test fires), if no shadow is on
  trial, the live model is fine-tuned (torch) on the last ``--train-days`` of stored history and
  put on trial as the shadow: scored only on origins after its training data;
- every hour the promotion and rollback rules run on the scoreboard.

Prints ``{"shipped_mae", "weekly_mae": [...], "promotions", "rollbacks", ...}`` with ``--json``:
MAE in kW at the first horizon (5 min), ``weekly_mae`` of the live model (whatever version was
live at each origin) per 7 days of replay, ``shipped_weekly_mae`` of the shipped model on the
same origins.

    python benchmarks/bench_online.py --json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wattwheel.adapters.model_artifact import load_model, shipped_model_for_step
from wattwheel.forecast.backtest import rolling_origin
from wattwheel.forecast.base import History
from wattwheel.forecast.lstm import LSTMForecaster
from wattwheel.forecast.online import (
    LearningRules,
    Lineup,
    Scoreboard,
    drift_check,
    first_horizon_errors,
    offer,
    step,
)
from wattwheel.sim.trace_io import read_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "src/wattwheel/scenarios/cella-oversub/trace.csv"
DAY_S = 86400.0


def _prefix(history: History, start: int, end: int) -> History:
    return History(history.timestamps_s[start:end], history.series_ids, history.values[start:end])


def _score(model: LSTMForecaster, history: History, lo: int, hi: int) -> tuple[Any, Any, Any]:
    """Errors (W) and interval misses at the first horizon for origins lo..hi-1."""
    horizon_s = model.config.horizons_s[0]
    run = rolling_origin(model, _prefix(history, 0, hi + 1), (horizon_s,), start=lo)
    err, miss = first_horizon_errors(run)
    return history.timestamps_s[run.origins], err, miss


def replay(args: argparse.Namespace) -> dict[str, Any]:
    trace = read_trace(args.trace)
    history = History.from_trace(trace)
    step_s = history.step_s
    shipped_dir = shipped_model_for_step(step_s)
    if shipped_dir is None:
        raise SystemExit(f"no shipped model at {step_s:g} s")
    rows_per_day = round(DAY_S / step_s)
    n_rows = history.values.shape[0]
    if args.days:
        n_rows = min(n_rows, round(args.days * rows_per_day))
    rules = LearningRules(
        margin=args.margin,
        min_origins=args.min_origins,
        window=args.window,
        rollback_margin=args.margin,
        max_shadow_origins=args.max_shadow_origins,
    )
    models: dict[str, LSTMForecaster] = {"v0": load_model(shipped_dir, backend="torch")}
    trained_until = {"v0": -math.inf}
    lineup = Lineup("v0", anchor="v0")
    board = Scoreboard()
    live_err: dict[float, float] = {}
    shipped_err: dict[float, float] = {}
    misses: list[float] = []
    events: list[dict[str, Any]] = []
    counts = {"promote": 0, "rollback": 0, "reject": 0, "drift": 0, "finetunes": 0}
    finetune_s: list[float] = []
    warm = rows_per_day  # the model's volatility scale reads a day of history
    cycle = max(1, round(args.cycle_s / step_s))
    every = round(args.finetune_every_days * rows_per_day)
    last_ft = warm + round(args.first_finetune_days * rows_per_day) - every
    drift_pending = False
    t0 = time.perf_counter()
    for lo in range(warm, n_rows - 1, cycle):
        hi = min(lo + cycle, n_rows - 1)  # origins lo..hi-1; their targets arrive by row hi
        on_lineup = {lineup.live, lineup.shadow, lineup.predecessor, "v0"} - {None}
        for version in sorted(v for v in on_lineup if v is not None):
            ts, err, miss = _score(models[version], history, lo, hi)
            keep = ts > trained_until[version]
            board.add(version, ts[keep], err[keep])
            if version == lineup.live:
                live_err.update(zip(ts.tolist(), err.tolist(), strict=True))
                misses.extend(miss.tolist())
            if version == "v0":
                shipped_err.update(zip(ts.tolist(), err.tolist(), strict=True))
        now_s = float(history.timestamps_s[hi])
        lineup, verdict = step(lineup, board, rules, now_s)
        if verdict is not None:
            counts[verdict.transition] += 1
            events.append(
                {
                    "day": round((now_s - history.timestamps_s[warm]) / DAY_S, 2),
                    "transition": verdict.transition,
                    "version": verdict.version,
                    "against": verdict.against,
                    "reason": verdict.reason,
                }
            )
            if verdict.transition == "rollback":
                misses.clear()
        check = drift_check(misses, rules)
        if check.drift and not drift_pending:
            counts["drift"] += 1
            drift_pending = True
            events.append(
                {
                    "day": round((now_s - history.timestamps_s[warm]) / DAY_S, 2),
                    "transition": "drift",
                    "reason": f"miss rate {check.miss_rate:.3f} over {check.n} (z {check.z:.1f})",
                }
            )
        due = hi - last_ft >= every or drift_pending
        if lineup.shadow is None and due and hi >= warm + rows_per_day:
            parent = models[lineup.live]
            child = copy.deepcopy(parent)
            start = max(0, hi + 1 - round(args.train_days * rows_per_day))
            t_ft = time.perf_counter()
            child.fine_tune(_prefix(history, start, hi + 1), epochs=args.epochs)
            finetune_s.append(time.perf_counter() - t_ft)
            version = f"v{len(models)}"
            models[version] = child
            trained_until[version] = now_s
            lineup = offer(lineup, version)
            counts["finetunes"] += 1
            last_ft, drift_pending = hi, False
            misses.clear()
            if args.progress:
                print(
                    f"day {(hi - warm) / rows_per_day:5.1f}: fine-tuned {version} from "
                    f"{lineup.live} in {finetune_s[-1]:.0f} s",
                    file=sys.stderr,
                )
    origins = sorted(live_err)
    first = origins[0]
    week_of = {o: int((o - first) // (7 * DAY_S)) for o in origins}
    weeks = sorted(set(week_of.values()))

    def weekly(book: dict[float, float]) -> list[float]:
        out = []
        for w in weeks:
            vals = [book[o] for o in origins if week_of[o] == w and math.isfinite(book[o])]
            out.append(round(float(np.mean(vals)) / 1000.0, 4))
        return out

    # persistence on the same origins, for scale: |y(o + 1 step) - y(o)|, mean over series
    row_of = {float(t): i for i, t in enumerate(history.timestamps_s)}
    persistence_err = {
        o: float(np.nanmean(np.abs(history.values[row_of[o] + 1] - history.values[row_of[o]])))
        for o in origins
    }
    shipped_vals = [v for v in shipped_err.values() if math.isfinite(v)]
    live_weekly = weekly(live_err)
    shipped_weekly = weekly(shipped_err)
    return {
        "shipped_mae": round(float(np.mean(shipped_vals)) / 1000.0, 4),
        "weekly_mae": live_weekly,
        "promotions": counts["promote"],
        "rollbacks": counts["rollback"],
        "shipped_weekly_mae": shipped_weekly,
        "persistence_weekly_mae": weekly(persistence_err),
        "live_mae": round(
            float(np.mean([v for v in live_err.values() if math.isfinite(v)])) / 1000.0, 4
        ),
        "final_week_live_not_worse": live_weekly[-1] <= shipped_weekly[-1],
        "rejections": counts["reject"],
        "drift_alarms": counts["drift"],
        "finetunes": counts["finetunes"],
        "finetune_s_median": round(float(np.median(finetune_s)), 1) if finetune_s else None,
        "final_live": lineup.live,
        "events": events,
        "settings": {
            "trace": str(args.trace),
            "series": list(history.series_ids),
            "step_s": step_s,
            "days_replayed": round((n_rows - warm) / rows_per_day, 2),
            "shipped_model": shipped_dir.name,
            "horizon_s": models["v0"].config.horizons_s[0],
            "rules": vars(rules),
            "finetune_every_days": args.finetune_every_days,
            "train_days": args.train_days,
            "epochs": args.epochs,
            "wall_s": round(time.perf_counter() - t0, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", type=Path, default=TRACE)
    p.add_argument("--days", type=float, default=0.0, help="replay only the first N days")
    p.add_argument("--finetune-every-days", type=float, default=2.0)
    p.add_argument("--first-finetune-days", type=float, default=2.0)
    p.add_argument("--train-days", type=float, default=14.0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--cycle-s", type=float, default=3600.0, help="rule check period")
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--min-origins", type=int, default=288)
    p.add_argument("--max-shadow-origins", type=int, default=576)
    p.add_argument("--window", type=int, default=2016)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = replay(args)
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
