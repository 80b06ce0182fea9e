"""The ramp-up limit at job start in the synthetic jobs, and the bench's lever costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattwheel.domain.errors import WattwheelError
from wattwheel.sim.bench import run_bench
from wattwheel.sim.levers import load_jobs_recipe, with_rampup
from wattwheel.sim.scenario import bundled_site, load_scenario, with_latency
from wattwheel.sim.synthetic_jobs import (
    JobsLayout,
    NodePower,
    default_jobs,
    synthesize_jobs,
    synthesize_jobs_ramped,
)
from wattwheel.sim.trace_io import write_trace

QUIET = NodePower(noise_w=0.0)


def test_ramped_starts_rise_no_faster_than_the_limit_and_cost_delayed_work() -> None:
    layout = JobsLayout(3, 4, 120.0, seed=1)
    jobs = default_jobs(3, 4, 120.0)
    plain = synthesize_jobs_ramped(layout, jobs, QUIET, None)
    ramped = synthesize_jobs_ramped(layout, jobs, QUIET, 1.0)
    assert plain.delayed_work_kwh == 0.0 and plain.starts == 0
    assert ramped.starts == 3  # A's start and restart, C's start (B runs from the start)
    assert ramped.delayed_work_kwh > 0.0 and ramped.delay_s > 0.0
    # The ramp never adds power, and the held-back energy is what the trace lost.
    diff = plain.trace.power_w - ramped.trace.power_w
    assert (diff >= -1e-6).all()
    lost_kwh = diff.sum() * layout.step_s / 3.6e6
    assert lost_kwh == pytest.approx(ramped.delayed_work_kwh, rel=0.02)
    # Job A starts at 3 % of 120 s on racks 0 and 1: from idle, at most 1 kW/s after that.
    start = int(round(0.03 * 120.0 / layout.step_s))
    rack0 = ramped.trace.power_w[start : start + 100, 0] / 1000.0
    rise = rack0 - rack0[0]
    allowed = 1.0 * layout.step_s * np.arange(1, 101) + 0.1
    assert (rise <= allowed).all()
    # Without the lever the same start jumps far faster.
    raw = plain.trace.power_w[start : start + 300, 0] / 1000.0
    assert (np.diff(raw) / layout.step_s).max() > 10.0


def test_no_lever_is_the_plain_synthesis() -> None:
    layout = JobsLayout(3, 4, 60.0, seed=4)
    jobs = default_jobs(3, 4, 60.0)
    a = synthesize_jobs(layout, jobs)
    b = synthesize_jobs_ramped(layout, jobs, None, None).trace
    np.testing.assert_array_equal(a.power_w, b.power_w)


def test_bundled_recipe_reproduces_the_bundled_trace() -> None:
    site = bundled_site("ai-training-realistic")
    recipe = load_jobs_recipe(site)
    assert recipe is not None
    sc = load_scenario(site)
    ramped, cost = with_rampup(sc, recipe)
    assert cost["rampup_starts"] == 3.0 and cost["rampup_delayed_work_kwh"] > 0.0
    assert ramped.demand_kw.shape == sc.demand_kw.shape
    assert ramped.demand_kw.sum() < sc.demand_kw.sum()


def test_rampup_refuses_a_trace_its_recipe_does_not_make(tmp_path: Path) -> None:
    site = bundled_site("ai-training-realistic")
    other = synthesize_jobs(JobsLayout(3, 4, 600.0, seed=9), default_jobs(3, 4, 600.0))
    sc = load_scenario(site, write_trace(other, tmp_path / "t.csv"))
    with pytest.raises(WattwheelError, match="does not reproduce"):
        with_rampup(sc, load_jobs_recipe(site))
    with pytest.raises(WattwheelError, match="job recipe"):
        with_rampup(sc, None)


def test_bench_reports_each_levers_cost(tmp_path: Path) -> None:
    layout = JobsLayout(3, 4, 90.0, seed=5)
    trace = synthesize_jobs(layout, default_jobs(3, 4, 90.0))
    sc = load_scenario(
        bundled_site("ai-training-realistic"), write_trace(trace, tmp_path / "t.csv")
    )
    sc = with_latency(sc, 1.0)
    run = run_bench(sc, ["none", "none+rampup", "converter", "converter+floor"], recipe=layout)
    m = {k: r.site_metrics for k, r in run.results.items()}
    assert m["none+rampup"]["rampup_delayed_work_kwh"] > 0.0
    assert "rampup_delayed_work_kwh" not in m["none"]
    assert m["converter+floor"]["floor_energy_kwh"] > 0.0
    assert m["none"]["kes_cycles_per_day"] == 0.0
    assert m["none"]["kes_power_needed_share_of_rack_peak"] == 0.0
    assert m["converter"]["kes_cycles_per_day"] > 0.0
    assert 0.0 < m["converter"]["kes_power_needed_share_of_rack_peak"] <= 1.0
    assert m["converter"]["kes_losses_kwh"] > 0.0
