"""Policy runs in parallel processes give the serial results, and bench.json says how it ran."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from wattwheel.domain.trace import Trace
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.sim.bench import (
    BASELINE,
    ForecasterSpec,
    _expected_length,
    bench_payload,
    run_bench,
)
from wattwheel.sim.scenario import Scenario, build_scenario, bundled_site, load_scenario

POLICIES = ["none", "reactive", "seed", "predictive", "oracle"]


def _head(sc: Scenario, n: int) -> Scenario:
    t = sc.trace
    return build_scenario(sc.config, Trace(t.timestamps_s[:n], t.rack_ids, t.power_w[:n]))


def _without_wall(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "wall_seconds"}


@pytest.mark.slow  # ~22 s: six policy runs twice
def test_parallel_runs_equal_the_serial_ones_in_metrics_and_series() -> None:
    sc = _head(load_scenario(bundled_site()), 200)
    # A picklable spec other than the default, as `wattwheel bench --model persistence` builds.
    spec = ForecasterSpec("persistence", functools.partial(PersistenceForecaster), {})
    serial = run_bench(sc, POLICIES, spec, workers=1)
    parallel = run_bench(sc, POLICIES, spec, workers=2)
    assert serial.workers == 1 and parallel.workers == 2
    # predictive with a model also runs the same controller on the baseline.
    assert (
        list(parallel.results)
        == list(serial.results)
        == [*POLICIES[:4], "predictive+persistence", "oracle"]
    )
    for name, one in serial.results.items():
        other = parallel.results[name]
        assert _without_wall(one.site_metrics) == _without_wall(other.site_metrics), name
        for dom in sc.site.domain_names:
            assert _without_wall(one.domain_metrics[dom]) == _without_wall(
                other.domain_metrics[dom]
            ), (name, dom)
        assert one.series.keys() == other.series.keys()
        for key, values in one.series.items():
            np.testing.assert_array_equal(values, other.series[key], err_msg=f"{name} {key}")
    assert parallel.forecaster_names == serial.forecaster_names
    assert parallel.forecaster_training == serial.forecaster_training


def test_bench_json_has_per_step_time_per_policy_and_the_workers() -> None:
    sc = _head(load_scenario(bundled_site()), 120)
    run = run_bench(sc, ["none", "reactive"], BASELINE, workers=2)
    payload = bench_payload(run)
    steps = sc.demand_kw.shape[0]
    for name in ("none", "reactive"):
        timing = payload["timing"][name]
        assert timing["ms_per_step"] == 1e3 * timing["wall_seconds"] / steps
        assert timing["ms_per_step"] > 0.0
    assert payload["settings"]["bench_workers"] == 2
    assert payload["settings"]["bench_wall_seconds"] > 0.0
    # More workers than runs: one per run.
    assert run_bench(sc, ["none"], workers=4).workers == 1


def test_parallel_bench_submits_the_longest_runs_first() -> None:
    """The demo's runs in submission order: the trained-model predictive run first, the fast
    loop alone and the offline optimum last (a stable sort: ties keep the plan's order)."""
    trained = ForecasterSpec("lstm", PersistenceForecaster)
    plan = [
        ("none", None),
        ("reactive", None),
        ("seed", trained),
        ("predictive", trained),
        ("predictive+persistence", BASELINE),
        ("oracle", None),
        ("optimum", None),
    ]
    order = [name for name, spec in sorted(plan, key=lambda p: _expected_length(*p))]
    assert order == [
        "predictive",
        "oracle",
        "seed",
        "predictive+persistence",
        "none",
        "reactive",
        "optimum",
    ]
