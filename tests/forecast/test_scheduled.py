"""The workload schedule as a known additive component (forecast/schedule.py, scheduled.py)."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.forecast.base import History
from wattwheel.forecast.baselines import ARForecaster, PersistenceForecaster
from wattwheel.forecast.schedule import JobSchedule
from wattwheel.forecast.scheduled import ScheduleAwareForecaster

STEP = 300.0


def _schedule(submit: float, start: float, end: float, watts: float) -> JobSchedule:
    return JobSchedule(
        ("a", "b"),
        np.array([submit]),
        np.array([start]),
        np.array([end]),
        np.array([[watts, 0.0]]),
    )


def _flat_history(rows: int, level: float = 1000.0) -> History:
    ts = STEP * np.arange(rows, dtype=np.float64)
    return History(ts, ("a", "b"), np.full((rows, 2), level))


def test_load_counts_the_covered_part_of_each_step() -> None:
    sched = _schedule(0.0, 450.0, 1200.0, 600.0)
    load = sched.load_w(STEP * np.arange(5, dtype=np.float64), STEP)
    # [0,300) nothing; [300,600) half; [600,900) and [900,1200) whole; [1200,1500) nothing.
    assert load[:, 0].tolist() == [0.0, 300.0, 600.0, 600.0, 0.0]
    assert np.all(load[:, 1] == 0.0)


def test_a_job_is_known_only_once_submitted() -> None:
    sched = _schedule(1000.0, 2000.0, 3000.0, 500.0)
    assert sched.known_at(999.0).n_jobs == 0
    assert sched.known_at(1000.0).n_jobs == 1


def test_schedule_validates_shapes_and_order() -> None:
    with pytest.raises(ValueError, match="end after"):
        _schedule(0.0, 10.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="power_w"):
        JobSchedule(("a",), np.zeros(1), np.zeros(1), np.ones(1), np.zeros((1, 2)))


def test_grouped_sums_racks_and_for_series_fills_missing_with_zero() -> None:
    sched = JobSchedule(
        ("r1", "r2", "r3"), np.zeros(1), np.zeros(1), np.ones(1), np.array([[1.0, 2.0, 4.0]])
    )
    dom = sched.grouped({"row-a": ["r1", "r2"], "row-b": ["r3"]})
    assert dom.series_ids == ("row-a", "row-b")
    assert dom.power_w.tolist() == [[3.0, 4.0]]
    assert dom.for_series(["row-b", "zzz"]).power_w.tolist() == [[4.0, 0.0]]


def test_known_future_job_raises_the_forecast_from_its_start() -> None:
    hist = _flat_history(40)
    end = hist.end_s
    # Starts at the second target row (end + 600 s) and runs for two rows.
    wrapped = ScheduleAwareForecaster(
        PersistenceForecaster(), _schedule(end - 60.0, end + 600.0, end + 1200.0, 800.0)
    )
    fc = wrapped.predict(hist, (300.0, 600.0, 900.0, 1200.0))
    plain = PersistenceForecaster().predict(hist, (300.0, 600.0, 900.0, 1200.0))
    assert np.allclose(fc.point[0] - plain.point[0], [0.0, 800.0, 800.0, 0.0])
    assert np.allclose(fc.point[1], plain.point[1])
    # Every quantile moves with the point.
    assert np.allclose(fc.values[0, 1] - plain.values[0, 1], 800.0)


def test_a_job_submitted_after_the_last_row_is_not_used() -> None:
    hist = _flat_history(40)
    end = hist.end_s
    late = ScheduleAwareForecaster(
        PersistenceForecaster(), _schedule(end + 1.0, end + 300.0, end + 900.0, 800.0)
    )
    plain = PersistenceForecaster().predict(hist, (300.0, 600.0))
    assert np.allclose(late.predict(hist, (300.0, 600.0)).point, plain.point)


def test_a_running_job_is_removed_from_the_history_and_its_end_is_forecast() -> None:
    # The job ran over the last 5 rows and ends one row after the history: persistence on the
    # base load (1000 W) plus the job where it still runs.
    hist = _flat_history(40)
    end = hist.end_s
    values = hist.values.copy()
    values[-5:, 0] += 500.0
    hist = History(hist.timestamps_s, hist.series_ids, values)
    sched = _schedule(0.0, end - 4 * STEP, end + 2 * STEP, 500.0)
    fc = ScheduleAwareForecaster(PersistenceForecaster(), sched).predict(hist, (300.0, 600.0))
    assert np.allclose(fc.point[0], [1500.0, 1000.0])


def test_predict_is_side_effect_free_and_update_reaches_the_inner_model() -> None:
    rng = np.random.default_rng(0)
    ts = STEP * np.arange(300, dtype=np.float64)
    hist = History(ts, ("a", "b"), 1000.0 + rng.normal(0, 50, (300, 2)).cumsum(axis=0))
    sched = _schedule(0.0, ts[250], ts[260], 400.0)
    wrapped = ScheduleAwareForecaster(ARForecaster(lags=4), sched)
    wrapped.fit(History(ts[:200], hist.series_ids, hist.values[:200]))
    inner = wrapped.inner
    assert isinstance(inner, ARForecaster)
    count = inner.calibrator.count(1)
    first = wrapped.predict(hist, (300.0, 600.0))
    again = wrapped.predict(hist, (300.0, 600.0))
    assert np.array_equal(first.values, again.values)
    assert inner.calibrator.count(1) == count
    wrapped.update(hist, (300.0, 600.0))
    assert inner.calibrator.count(1) > count
    assert wrapped.name == "ar+schedule"


def test_calibrating_the_sum_covers_jobs_known_only_at_their_start() -> None:
    # Jobs submitted when they start: a forecast cannot know the next one. Calibrated on the
    # base load alone the intervals miss those surprises; calibrated as a whole they cover.
    from wattwheel.forecast.scheduled import with_known_jobs
    from wattwheel.sim.schedule_eval import rolling_scores

    rng = np.random.default_rng(1)
    n, jobs = 900, 80
    ts = STEP * np.arange(n, dtype=np.float64)
    starts = np.sort(rng.choice(ts[10:-10], size=jobs, replace=False))
    sched = JobSchedule(
        ("a",), starts.copy(), starts, starts + 3 * STEP, rng.uniform(800, 1500, (jobs, 1))
    )
    values = 5000.0 + rng.normal(0, 100, (n, 1)) + sched.load_w(ts, STEP)
    hist = History(ts, ("a",), values)
    base_only = rolling_scores(
        hist, ScheduleAwareForecaster(PersistenceForecaster(), sched), 200, (300.0,)
    )
    whole = rolling_scores(hist, with_known_jobs(PersistenceForecaster(), sched), 200, (300.0,))
    assert base_only.coverage_90[0] < 0.86, base_only.coverage_90
    assert 0.86 <= whole.coverage_90[0] <= 0.94, whole.coverage_90
