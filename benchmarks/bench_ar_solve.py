"""The demo's forecasting policies with the local ARs' old and new normal equations, in one run.

``wattwheel demo`` serves the shipped LSTM through :class:`~wattwheel.forecast.hybrid.
OnlineBlendForecaster`, which fits a local AR(24) and AR(6) on the last week at every plan.
``ARForecaster(solve="per_step")`` is how those fits were made before (a design matrix and a
Gram matrix per horizon step: 12 per AR on the demo's hour of 5-minute blocks);
``solve="nested"`` (the default now) reads every step's normal equations off cumulative sums of
lagged products. Each policy here (``seed`` and ``predictive``, the demo's runs that use the
LSTM) runs on the default scenario once with each, the two runs side by side in two processes
(so they share the machine's load), and the JSON line gives each run's wall time per simulated
step and its site metrics, and whether every metric agrees.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ar_solve.py [--steps 8928] [--json]

``--points`` instead compares the two solves' local AR(24) and AR(6) point forecasts on the
bundled traces of the shipped models' held-out backtests (README "Forecasting": Google's PDUs
at 5 minutes, ``alibaba-fast`` at 10 s, ``ai-training`` at 1 s), with each model's blend
horizons and 2,016 rows of past, at 60 origins spread over each trace: the largest difference.

The other demo policies do not call a forecaster (or are fed the true future) and run the
same code either way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from wattwheel.adapters.model_artifact import load_forecaster, shipped_model_for_step
from wattwheel.forecast.base import History
from wattwheel.forecast.baselines import ARForecaster
from wattwheel.forecast.conformal import ConformalForecaster
from wattwheel.forecast.hybrid import AR_MAX_SAMPLES, DEFAULT_AR_ROWS, ARBlendForecaster
from wattwheel.sim.bench import run_policy
from wattwheel.sim.scenario import Scenario, bundled_site, load_scenario
from wattwheel.sim.trace_io import read_trace

SOLVES = ("per_step", "nested")
POLICIES = ("predictive", "seed")
COMPARED = (
    "cost_total",
    "capped_energy_kwh",
    "shifted_energy_kwh",
    "kes_losses_kwh",
    "reserve_energy_kwh",
    "overload_energy_kwh",
    "breaker_trips",
)


def _scenario(steps: int) -> Scenario:
    sc = load_scenario(bundled_site())
    n = min(steps, sc.demand_kw.shape[0])
    return Scenario(
        sc.config, sc.site, sc.trace, sc.timestamps_s[:n], sc.demand_kw[:n], sc.critical_kw[:n]
    )


def _run(policy: str, solve: str, steps: int) -> dict[str, Any]:
    sc = _scenario(steps)
    model = shipped_model_for_step(sc.dt_s)
    if model is None:
        raise SystemExit(f"no shipped model for a {sc.dt_s:g} s step")
    forecaster = load_forecaster(model)
    assert isinstance(forecaster, ConformalForecaster)
    blend = forecaster.inner
    assert isinstance(blend, ARBlendForecaster)
    blend.ar_solve = solve
    started = time.perf_counter()
    res = run_policy(sc, policy, forecaster)
    wall = time.perf_counter() - started
    m = res.site_metrics
    return {
        "ms_per_step": round(1e3 * m["wall_seconds"] / m["steps"], 3),
        "wall_seconds": round(wall, 2),
        "metrics": {k: m[k] for k in COMPARED},
    }


POINT_CASES = (
    ("google-pdus (cella-oversub)", "cella-oversub", (300.0, 600.0, 900.0)),
    ("alibaba-fast", "alibaba-fast", (30.0, 60.0, 120.0, 300.0)),
    ("ai-training", "ai-training", (15.0, 30.0, 60.0, 120.0)),
)


def _points() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, scenario, horizons in POINT_CASES:
        history = History.from_trace(read_trace(bundled_site(scenario).parent / "trace.csv"))
        n_rows = history.values.shape[0]
        worst, fits = 0.0, 0
        for end in np.linspace(300, n_rows, 60).astype(int):
            past = History(history.timestamps_s[:end], history.series_ids, history.values[:end])
            past = past.tail(min(int(end), DEFAULT_AR_ROWS))
            for lags in (24, 6):
                got = []
                for solve in SOLVES:
                    ar = ARForecaster(
                        lags=lags, max_rows=AR_MAX_SAMPLES, horizons_s=horizons, solve=solve
                    )
                    ar.fit_point(past)
                    got.append(ar.point_forecast(past, horizons))
                worst = max(worst, float(np.max(np.abs(got[0] - got[1]))))
                fits += 1
        out[label] = {"fits": fits, "max_abs_diff_w": worst}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8928, help="steps of the month (all)")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--json", action="store_true", help="one JSON line only")
    parser.add_argument("--points", action="store_true", help="compare AR points only")
    args = parser.parse_args()
    if args.points:
        print(json.dumps(_points()))
        return
    policies = [p for p in args.policies.split(",") if p]
    out: dict[str, Any] = {"steps": min(args.steps, 8928), "policies": {}}
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        for policy in policies:
            runs = {s: pool.submit(_run, policy, s, args.steps) for s in SOLVES}
            got = {s: f.result() for s, f in runs.items()}
            before, after = got["per_step"], got["nested"]
            out["policies"][policy] = {
                "before_per_step_solve": before,
                "after_nested_solve": after,
                "speedup": round(before["ms_per_step"] / after["ms_per_step"], 2),
                "same_metrics": all(
                    abs(before["metrics"][k] - after["metrics"][k]) <= 1e-6 for k in COMPARED
                ),
            }
            if not args.json:
                print(policy, json.dumps(out["policies"][policy]), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
