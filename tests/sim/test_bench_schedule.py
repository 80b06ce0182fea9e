"""``bench`` with a batch schedule: predictive+schedule plans on the forecast plus the known jobs'
load (sim/bench.py ``run_bench(schedule=...)``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from wattwheel.sim.batch_schedule import scenario_schedule
from wattwheel.sim.bench import run_bench
from wattwheel.sim.scenario import bundled_site, load_scenario


def test_predictive_plans_with_the_known_jobs() -> None:
    site = bundled_site("alibaba-batch")
    full = load_scenario(site)
    rows = 240  # 20 hours
    scenario = dataclasses.replace(
        full,
        timestamps_s=full.timestamps_s[:rows],
        demand_kw=full.demand_kw[:rows],
        critical_kw=full.critical_kw[:rows],
    )
    schedule = scenario_schedule(full, site.parent / "schedule.csv")
    run = run_bench(scenario, ["reactive", "predictive"], None, None, schedule)
    assert list(run.results) == ["reactive", "predictive", "predictive+schedule"]
    assert run.forecaster_names["predictive+schedule"] == "persistence+schedule"
    assert "schedule" in run.forecaster_training["predictive+schedule"]
    plain = run.results["predictive"].series
    known = run.results["predictive+schedule"].series
    # The first-horizon point forecast each plan got: persistence's last value, and with the
    # schedule the last value less the known jobs' load at that row plus their load at the
    # target (every job there was submitted 15 min ahead, so known at the issue time), give or
    # take the conformal wrapper's median offset (0.1 kW typically, on rows of ~16 kW).
    issued = np.isfinite(plain["fc_mid_kw"][:, 0])
    targets = plain["fc_target_s"][issued, 0]
    step = scenario.dt_s
    expected = (schedule.load_w(targets, step) - schedule.load_w(targets - step, step)) / 1000.0
    diff = known["fc_mid_kw"][issued] - plain["fc_mid_kw"][issued]
    assert np.median(np.abs(diff - expected)) < 0.2
    starting = expected > 0.5  # a job of more than 0.5 kW starts at the target
    assert starting.sum() >= 5
    assert np.all(diff[starting] > expected[starting] - 0.5)
    assert np.isfinite(run.results["predictive+schedule"].site_metrics["cost_total"])
