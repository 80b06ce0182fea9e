"""ai-training-realistic with the flywheel converter's own loop and a 1 s HPMC latency."""

from __future__ import annotations

from pathlib import Path

from wattwheel.sim.bench import run_bench
from wattwheel.sim.scenario import bundled_site, load_scenario, with_latency
from wattwheel.sim.synthetic_jobs import JobsLayout, default_jobs, synthesize_jobs
from wattwheel.sim.trace_io import write_trace


def test_converter_holds_the_ramp_limit_with_a_1s_hpmc_where_parallel_does_not(
    tmp_path: Path,
) -> None:
    trace = synthesize_jobs(JobsLayout(3, 4, 120.0, seed=3), default_jobs(3, 4, 120.0))
    sc = load_scenario(
        bundled_site("ai-training-realistic"), write_trace(trace, tmp_path / "t.csv")
    )
    sc = with_latency(sc, 1.0)
    run = run_bench(sc, ["none", "converter", "converter-parallel"])
    none = run.results["none"].site_metrics
    conv = run.results["converter"].site_metrics
    par = run.results["converter-parallel"].site_metrics
    assert none["ramp_over_limit_seconds_share"] > 0.5
    assert conv["ramp_over_limit_seconds_share"] <= 0.001
    assert conv["peak_grid_kw"] <= none["peak_grid_kw"]
    assert conv["grid_band_power_reduction_db"] >= 20.0
    assert conv["kes_losses_kwh"] > 0.0
    # The same loop beside the load (parallel) lets each swing through for its latency.
    assert par["ramp_over_limit_seconds_share"] > 0.1


def test_the_converter_keeps_regulating_while_the_hpmc_has_not_measured_yet(
    tmp_path: Path,
) -> None:
    # 1.05 s: not a whole number of 100 ms steps, so every step starts with a 50 ms lag part
    # in which the HPMC's new parameters have not arrived; the converter does not wait.
    trace = synthesize_jobs(JobsLayout(3, 4, 60.0, seed=3), default_jobs(3, 4, 60.0))
    sc = load_scenario(
        bundled_site("ai-training-realistic"), write_trace(trace, tmp_path / "t.csv")
    )
    run = run_bench(with_latency(sc, 1.05), ["none", "converter"])
    conv = run.results["converter"].site_metrics
    assert conv["ramp_over_limit_seconds_share"] <= 0.001
    assert conv["max_grid_ramp_kw_per_s"] <= 1.0 + 1e-6


def test_hpmc_sets_parameters_and_leaves_the_bank_to_the_converter() -> None:
    import dataclasses

    import numpy as np

    from wattwheel.control.converter_policy import ConverterPolicy
    from wattwheel.sim.plant import Plant

    sc = load_scenario(bundled_site("ai-training-realistic"))
    policy = ConverterPolicy(sc.site)
    plant = Plant(sc.site, sc.dt_s)
    state = policy.initial_state(sc.site)
    obs = plant.observe(0.0, sc.demand_kw[0], sc.critical_kw[0])
    dec, state = policy.decide(obs, state, None)
    assert dec.converter is not None
    assert (dec.kes_kw == 0).all()
    assert (dec.converter.ramp_limit_kw_per_s == sc.site.max_grid_ramp_kw_per_s).all()
    np.testing.assert_allclose(dec.converter.ceiling_kw, sc.demand_kw[0])
    # The ceiling only rises with what the HPMC has measured, never above primary capacity.
    high = dataclasses.replace(obs, demand_kw=np.full(sc.site.n_domains, 1e3))
    dec, state = policy.decide(high, state, None)
    np.testing.assert_allclose(dec.converter.ceiling_kw, sc.site.primary_kw)
    dec, _ = policy.decide(obs, state, None)
    assert dec.converter is not None
    np.testing.assert_allclose(dec.converter.ceiling_kw, sc.site.primary_kw)
