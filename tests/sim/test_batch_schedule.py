"""Batch schedules: derivation from utilisation, the CSV format, the bundled scenario, and the
rolling evaluation (sim/batch_schedule.py, sim/schedule_eval.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattwheel.domain.errors import TraceError
from wattwheel.forecast.base import History
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.forecast.schedule import JobSchedule
from wattwheel.forecast.scheduled import ScheduleAwareForecaster
from wattwheel.sim.batch_schedule import (
    detect_batch_jobs,
    read_schedule,
    scenario_schedule,
    schedule_from_jobs,
    write_schedule,
)
from wattwheel.sim.scenario import bundled_site, load_scenario
from wattwheel.sim.schedule_eval import domain_history, rolling_scores, tail_scenario


def test_a_step_rise_is_a_job_until_the_level_falls_back() -> None:
    u = np.array([0.30, 0.30, 0.50, 0.50, 0.48, 0.33, 0.30, 0.31])
    jobs = detect_batch_jobs(u, rise_threshold=0.08, max_steps=12)
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.start_row, job.n_rows) == (2, 3)  # 0.33 < 0.30 + 0.20 / 2 ends it
    assert job.size == pytest.approx(np.mean([0.50, 0.50, 0.48]) - 0.30)


def test_small_moves_are_no_jobs_and_durations_are_capped() -> None:
    assert detect_batch_jobs(np.array([0.3, 0.35, 0.3, 0.37]), 0.08) == []
    jobs = detect_batch_jobs(np.array([0.1] + [0.5] * 20), 0.08, max_steps=4)
    assert [(j.start_row, j.n_rows) for j in jobs] == [(1, 4)]


def test_schedule_round_trips_through_csv(tmp_path: Path) -> None:
    jobs = detect_batch_jobs(np.array([0.2, 0.2, 0.4, 0.4, 0.2]), 0.08)
    ts = 300.0 * np.arange(5, dtype=np.float64)
    sched = schedule_from_jobs(jobs, ts, 300.0, 900.0, ["r1", "r2"], [40, 40], 100.0, 350.0)
    assert sched.start_s.tolist() == [600.0]
    assert sched.end_s.tolist() == [1200.0]
    assert sched.submit_s.tolist() == [-300.0]
    assert sched.power_w[0].tolist() == pytest.approx([40 * 250 * 0.2, 40 * 250 * 0.2])
    path = tmp_path / "schedule.csv"
    write_schedule(path, sched)
    back = read_schedule(path)
    assert back.series_ids == ("r1", "r2")
    assert np.allclose(back.power_w, sched.power_w, atol=0.1)
    assert np.array_equal(back.start_s, sched.start_s)


def test_a_bad_schedule_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("job_id,submit_s,start_s,end_s,rack_id,power_w\n0,0,10,20,r1,x\n")
    with pytest.raises(TraceError, match=":2:"):
        read_schedule(path)
    path.write_text("job_id,start_s\n")
    with pytest.raises(TraceError, match="missing"):
        read_schedule(path)
    with pytest.raises(TraceError, match="not found"):
        read_schedule(tmp_path / "nope.csv")


def test_bundled_scenario_has_a_schedule_for_its_domains() -> None:
    site = bundled_site("alibaba-batch")
    scenario = load_scenario(site)
    sched = scenario_schedule(scenario, site.parent / "schedule.csv")
    assert sched.series_ids == scenario.site.domain_names
    assert sched.n_jobs > 100
    assert np.all(sched.start_s - sched.submit_s == 900.0)
    assert np.all(sched.power_w > 0)
    assert (site.parent / "README.md").is_file()


def test_rolling_scores_rewards_knowing_the_jobs() -> None:
    # Base load constant; jobs of 1 kW start every 10 rows for 3 rows, submitted 15 min ahead.
    n, step = 200, 300.0
    ts = step * np.arange(n, dtype=np.float64)
    starts = ts[5::10]
    sched = JobSchedule(
        ("a",), starts - 900.0, starts, starts + 3 * step, np.full((starts.size, 1), 1000.0)
    )
    values = 5000.0 + sched.load_w(ts, step)
    hist = History(ts, ("a",), values)
    plain = rolling_scores(hist, PersistenceForecaster(), 50, (300.0, 600.0))
    known = rolling_scores(
        hist, ScheduleAwareForecaster(PersistenceForecaster(), sched), 50, (300.0, 600.0)
    )
    assert plain.origins == known.origins == n - 2 - 50
    assert all(m > 0.1 for m in plain.mae_kw)
    assert all(m < 1e-9 for m in known.mae_kw)


def test_tail_scenario_keeps_the_site() -> None:
    scenario = load_scenario(bundled_site("alibaba-batch"))
    tail = tail_scenario(scenario, 100)
    assert tail.demand_kw.shape[0] == scenario.demand_kw.shape[0] - 100
    assert tail.timestamps_s[0] == scenario.timestamps_s[100]
    assert tail.trace.n_steps == tail.demand_kw.shape[0]
    assert np.array_equal(tail.site.primary_kw, scenario.site.primary_kw)
    assert domain_history(tail).values.shape == tail.demand_kw.shape
    with pytest.raises(ValueError):
        tail_scenario(scenario, scenario.demand_kw.shape[0])
