"""What the workload schedule is worth on the ``alibaba-batch`` scenario (issue 9 item 8, issue 13).

Split: the first ``--fit-days`` (2) days fit the forecasters; everything after is the test part,
which no forecaster was fitted on. On the test part:

- **forecast**: rolling origins at every 5-minute row, MAE (kW, per domain and origin) and 90 %
  interval coverage at 5, 10 and 15 minutes, for persistence and AR(24), each without and with
  the schedule (``with_known_jobs``: the inner model forecasts the load less the known jobs, the
  known jobs' load is added at each target time, and a conformal wrapper calibrates the sum
  online; the forecasters without the schedule get the same conformal wrapper). Only jobs
  submitted by the forecast's last measured row are used (each job is submitted ``lead`` before
  it starts, 15 min in ``schedule.csv``). Intervals are calibrated online from the test part's
  past only.
- **controller**: ``predictive`` on the test part with each of those forecasters (built fresh and
  fitted on the fit part per run), plus ``reactive`` and ``oracle`` for reference: site
  ``cost_total`` and the reserve/capping figures.

    .venv/bin/python benchmarks/bench_schedule.py [--json out/bench_schedule.json]

The shipped 5-minute LSTM (``dcutil-300s-lstm``) was trained on this very Alibaba series, so
it is not used here (its figures would be in-sample). ``--model DIR`` adds an LSTM that never
saw it, used as trained (no refit), e.g. one trained the shipped way on the Google 2019 and
Azure v2 300 s files only (README "Forecasting" gives the commands).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wattwheel.adapters.model_artifact import load_forecaster, training_summary
from wattwheel.forecast.base import Forecaster, History
from wattwheel.forecast.baselines import ARForecaster, PersistenceForecaster
from wattwheel.forecast.conformal import ConformalForecaster
from wattwheel.forecast.schedule import JobSchedule
from wattwheel.forecast.scheduled import with_known_jobs
from wattwheel.sim.batch_schedule import scenario_schedule
from wattwheel.sim.bench import run_policy
from wattwheel.sim.scenario import bundled_site, load_scenario
from wattwheel.sim.schedule_eval import domain_history, prefix, rolling_scores, tail_scenario

HORIZONS_S = (300.0, 600.0, 900.0)
METRICS = (
    "cost_total",
    "reserve_energy_kwh",
    "reserve_activations",
    "capped_energy_kwh",
    "overload_energy_kwh",
    "breaker_trips",
    "critical_capped_energy_kwh",
)


def builders(
    schedule: JobSchedule, model: Path | None = None
) -> dict[str, Callable[[], Forecaster]]:
    out: dict[str, Callable[[], Forecaster]] = {
        "persistence": lambda: ConformalForecaster(PersistenceForecaster()),
        "persistence+schedule": lambda: with_known_jobs(PersistenceForecaster(), schedule),
        "ar": lambda: ConformalForecaster(ARForecaster()),
        "ar+schedule": lambda: with_known_jobs(ARForecaster(), schedule),
    }
    if model is not None:
        out["lstm"] = lambda: load_forecaster(model)
        out["lstm+schedule"] = lambda: with_known_jobs(load_forecaster(model), schedule)
    return out


def fresh(build: Callable[[], Forecaster], name: str, fit_part: History) -> Forecaster:
    """A new forecaster; the baselines are fitted on the fit part, a trained model is used as
    it is (never retrained here)."""
    fc = build()
    if not name.startswith("lstm"):
        fc.fit(fit_part)
    return fc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="alibaba-batch")
    p.add_argument("--fit-days", type=float, default=2.0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip-sim", action="store_true")
    p.add_argument("--skip-forecast", action="store_true", help="only the controller part")
    p.add_argument(
        "--size-errors",
        default="",
        help="also score the forecasters with each job's power off by a relative error drawn "
        "from N(0, e) (seed 0), for each e given (comma-separated, e.g. 0.3): a scheduler's "
        "requested sizes are not the measured ones (forecast only)",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="also an LSTM model directory (one that never saw Alibaba's series, e.g. trained "
        "on the Google and Azure 300 s files only), with and without the schedule",
    )
    p.add_argument(
        "--other-leads-min",
        default="0,5",
        help="also score the forecasters with every job submitted this many minutes before it "
        "starts (forecast only; the file's own lead is used for everything else)",
    )
    a = p.parse_args()
    site_path = bundled_site(a.scenario)
    scenario = load_scenario(site_path)
    schedule = scenario_schedule(scenario, site_path.parent / "schedule.csv")
    history = domain_history(scenario)
    fit_rows = int(round(a.fit_days * 86_400 / scenario.dt_s))
    fit_part = prefix(history, fit_rows)
    out: dict[str, Any] = {
        "scenario": a.scenario,
        "fit_rows": fit_rows,
        "test_rows": int(history.values.shape[0] - fit_rows),
        "horizons_min": [h / 60 for h in HORIZONS_S],
        "jobs": schedule.n_jobs,
        "lead_min": float((schedule.start_s - schedule.submit_s).min() / 60),
        "forecast": {},
        "controller": {},
    }
    if a.model is not None:
        out["model"] = training_summary(a.model)
    for name, build in builders(schedule, a.model).items():
        if a.skip_forecast:
            break
        fc = fresh(build, name, fit_part)
        s = rolling_scores(history, fc, fit_rows, HORIZONS_S)
        out["forecast"][name] = {
            "mae_kw": [round(x, 4) for x in s.mae_kw],
            "coverage_90": [round(x, 3) for x in s.coverage_90],
            "origins": s.origins,
        }
        print(f"{name:22s} MAE kW {s.mae_kw}  cov90 {s.coverage_90}", flush=True)
    for lead_min in [float(x) for x in a.other_leads_min.split(",") if x.strip()]:
        moved = dataclasses.replace(schedule, submit_s=schedule.start_s - 60.0 * lead_min)
        for name, build in builders(moved, a.model).items():
            if not name.endswith("+schedule"):
                continue
            fc = fresh(build, name, fit_part)
            s = rolling_scores(history, fc, fit_rows, HORIZONS_S)
            key = f"{name}(lead {lead_min:g} min)"
            out["forecast"][key] = {
                "mae_kw": [round(x, 4) for x in s.mae_kw],
                "coverage_90": [round(x, 3) for x in s.coverage_90],
                "origins": s.origins,
            }
            print(f"{key:34s} MAE kW {s.mae_kw}  cov90 {s.coverage_90}", flush=True)
    for err in [float(x) for x in a.size_errors.split(",") if x.strip()]:
        rng = np.random.default_rng(0)
        factor = np.clip(1.0 + rng.normal(0.0, err, schedule.n_jobs), 0.1, None)
        noisy = dataclasses.replace(schedule, power_w=schedule.power_w * factor[:, None])
        for name, build in builders(noisy, a.model).items():
            if not name.endswith("+schedule"):
                continue
            fc = fresh(build, name, fit_part)
            s = rolling_scores(history, fc, fit_rows, HORIZONS_S)
            key = f"{name}(size error {err:g})"
            out["forecast"][key] = {
                "mae_kw": [round(x, 4) for x in s.mae_kw],
                "coverage_90": [round(x, 3) for x in s.coverage_90],
                "origins": s.origins,
            }
            print(f"{key:34s} MAE kW {s.mae_kw}  cov90 {s.coverage_90}", flush=True)
    if not a.skip_sim:
        test = tail_scenario(scenario, fit_rows)
        runs: list[tuple[str, str | None]] = [("reactive", None), ("oracle", None)]
        made = builders(schedule, a.model)
        runs += [("predictive", n) for n in made]
        for policy, fname in runs:
            sim_fc = None if fname is None else fresh(made[fname], fname, fit_part)
            t0 = time.perf_counter()
            res = run_policy(test, policy, sim_fc)
            key = policy if fname is None else f"{policy}[{fname}]"
            row = {m: round(float(res.site_metrics.get(m, float("nan"))), 3) for m in METRICS}
            out["controller"][key] = row
            print(f"{key:34s} {row}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
