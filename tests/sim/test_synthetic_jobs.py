"""The realistic AI-training generator: every documented job event is in the trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattwheel.domain.errors import ConfigError
from wattwheel.sim.synthetic_jobs import JobsLayout, JobSpec, default_jobs, synthesize_jobs
from wattwheel.sim.trace_io import read_trace

D = 600.0
STEP = 0.1
SCENARIO = Path(__file__).resolve().parents[2] / "src/wattwheel/scenarios/ai-training-realistic"


@pytest.fixture(scope="module")
def power_kw() -> np.ndarray:
    trace = synthesize_jobs(JobsLayout(3, 4, D), default_jobs(3, 4, D))
    assert trace.rack_ids == ("gpu01", "gpu02", "gpu03")
    assert trace.step_s == pytest.approx(STEP)
    return trace.power_w / 1000.0


def _window(p: np.ndarray, a_s: float, b_s: float, rack: int) -> np.ndarray:
    return p[int(a_s / STEP) : int(b_s / STEP), rack]


def test_job_start_failure_and_restart_are_idle_then_swinging(power_kw: np.ndarray) -> None:
    # Job A (racks 1-2) starts at 18 s; 4 idle nodes = 8 kW before that, swings after warm-up.
    assert _window(power_kw, 0, 17, 0).mean() == pytest.approx(8.0, abs=0.3)
    running = _window(power_kw, 40, 110, 0)
    assert running.max() > 34.0 and running.min() < 14.0  # ~30 % to ~100 % of 4 x 10 kW
    # It fails at 330 s (all at once: one step from swinging to idle) and restarts 45 s later.
    assert _window(power_kw, 331, 374, 0).max() < 9.5
    assert _window(power_kw, 395, 450, 0).max() > 34.0


def test_iterations_jitter_around_the_period(power_kw: np.ndarray) -> None:
    rack = _window(power_kw, 40, 110, 0)
    high = rack > 25.0
    rises = np.flatnonzero(~high[:-1] & high[1:]) * STEP
    gaps = np.diff(rises)
    gaps = gaps[gaps < 8.0]  # leave out a checkpoint gap
    assert gaps.mean() == pytest.approx(5.0, abs=0.2)
    assert gaps.std() > 0.05  # not a metronome


def test_checkpoint_stall_holds_the_stall_level(power_kw: np.ndarray) -> None:
    rack = _window(power_kw, 40, 320, 0)
    at_stall = np.abs(rack - 12.0) < 1.5
    longest, run = 0, 0
    for flag in at_stall:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    assert longest * STEP >= 9.0  # a 10 s stall; no communication phase lasts that long


def test_racks_of_one_job_are_partially_desynchronised(power_kw: np.ndarray) -> None:
    a, b = _window(power_kw, 40, 320, 0), _window(power_kw, 40, 320, 1)
    assert np.corrcoef(a, b)[0, 1] > 0.8  # one job: the same iterations
    assert np.abs(a - b).max() > 5.0  # but one rack waits while the other still computes


def test_concurrent_jobs_on_the_last_rack_start_and_stop(power_kw: np.ndarray) -> None:
    # B (2 nodes) runs from the start and stops at 480 s; C (2 nodes) starts at 240 s.
    before_c = _window(power_kw, 100, 230, 2).mean()
    both = _window(power_kw, 270, 470, 2).mean()
    after_b = _window(power_kw, 490, 600, 2).mean()
    assert both > before_c + 5.0 and both > after_b + 5.0


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    layout = JobsLayout(2, 2, 120.0, seed=4)
    jobs = default_jobs(2, 2, 120.0)
    a, b = synthesize_jobs(layout, jobs), synthesize_jobs(layout, jobs)
    np.testing.assert_array_equal(a.power_w, b.power_w)
    other = synthesize_jobs(JobsLayout(2, 2, 120.0, seed=5), jobs)
    assert not np.array_equal(a.power_w, other.power_w)


def test_bad_layouts_name_the_key() -> None:
    too_many = JobSpec("X", ((0, 5),), period_s=4.0, comm_s=1.0)
    with pytest.raises(ConfigError, match="nodes"):
        synthesize_jobs(JobsLayout(1, 4, 60.0), [too_many])
    with pytest.raises(ConfigError, match="comm_s"):
        JobSpec("X", ((0, 1),), period_s=1.0, comm_s=1.0)
    with pytest.raises(ConfigError, match="racks"):
        default_jobs(1, 4, 60.0)


def test_bundled_trace_is_the_documented_synthesis(power_kw: np.ndarray) -> None:
    bundled = read_trace(SCENARIO / "trace.csv")
    np.testing.assert_allclose(bundled.power_w / 1000.0, power_kw, atol=1e-9)
    assert (SCENARIO / "trace.csv").stat().st_size < 1e6
