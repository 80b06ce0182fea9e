"""Capacity search: limits, the bracketing search, the driver (dedup, cache, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.domain.errors import ConfigError
from wattwheel.sim.capacity import (
    SEARCH_LIMIT,
    BracketSearch,
    Cache,
    Candidate,
    CapacityInputs,
    CapacitySettings,
    Limit,
    PointKey,
    capacity_payload,
    evaluate,
    inputs_digest,
    make_inputs,
    parse_limits,
    run_capacity,
    violated,
)
from wattwheel.sim.scenario import Scenario, build_scenario, bundled_site, load_site_config
from wattwheel.sim.trace_io import read_trace


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    site = bundled_site()
    trace = read_trace(site.parent / "trace.csv")
    return build_scenario(load_site_config(site), trace.window(0, 288))  # one day


def test_parse_limits() -> None:
    assert parse_limits("noncritical_capped_pct<=1, reserve_hours_per_year <= 50") == (
        Limit("noncritical_capped_pct", 1.0),
        Limit("reserve_hours_per_year", 50.0),
    )
    assert parse_limits("overload_energy_kwh<=0") == (Limit("overload_energy_kwh", 0.0),)
    for bad, why in (
        ("capped>=1", "NAME<=NUMBER"),
        ("watts<=3", "unknown limit"),
        ("reserve_hours_per_year<=-1", ">= 0"),
        ("reserve_hours_per_year<=nan", ">= 0"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_limits(bad)


def test_hard_limits_always_apply_first() -> None:
    metrics = {
        "breaker_trips": 1.0,
        "critical_capped_energy_kwh": 0.0,
        "reserve_hours_per_year": 80.0,
    }
    limits = (Limit("reserve_hours_per_year", 50.0),)
    assert violated(metrics, limits) == ["breaker_trips", "reserve_hours_per_year"]
    assert violated({**metrics, "breaker_trips": 0.0}, ()) == []


def _run_search(search: BracketSearch, threshold: int) -> list[int]:
    asked = []
    while (n := search.next()) is not None:
        asked.append(n)
        search.record(n, [] if n <= threshold else ["x"])
    return asked


@settings(max_examples=200, deadline=None)
@given(
    baseline=st.integers(1, 500),
    threshold=st.integers(0, 2000),
    step=st.integers(1, 50),
    resolution=st.integers(1, 5),
)
def test_search_finds_the_boundary(
    baseline: int, threshold: int, step: int, resolution: int
) -> None:
    upper = 3 * baseline
    search = BracketSearch(baseline, step, upper, resolution)
    asked = _run_search(search, threshold)
    n, binding, _ = search.outcome()
    assert len(asked) == len(set(asked))  # never asks twice
    assert all(0 < a <= upper for a in asked)
    if threshold >= upper:
        assert (n, binding) == (upper, SEARCH_LIMIT)
    else:
        assert n <= threshold < n + resolution  # within the resolution, never above
        assert binding == "x"
    # A bracket, not a grid: logarithmically many simulations.
    span = max(upper, 2)
    assert len(asked) <= 2 * int(np.ceil(np.log2(span))) + 3


def test_search_records_only_what_it_asked() -> None:
    search = BracketSearch(100, 5, 300)
    assert search.next() == 100
    with pytest.raises(ValueError, match="was asked"):
        search.record(101, [])


class CountingExecutor:
    """Answers from a rule (feasible up to ``threshold[policy]``), counts what it ran."""

    def __init__(self, threshold: dict[str, int]) -> None:
        self.threshold = threshold
        self.queue: list[Candidate] = []
        self.ran: list[Candidate] = []

    def submit(self, cand: Candidate) -> None:
        self.queue.append(cand)

    def wait(self) -> tuple[Candidate, dict[str, float]]:
        cand = self.queue.pop()  # out of order on purpose
        self.ran.append(cand)
        over = cand.servers > self.threshold[cand.policy] + 10 * cand.kes_fraction
        return cand, {
            "breaker_trips": 0.0,
            "critical_capped_energy_kwh": 0.0,
            "noncritical_capped_pct": 2.0 if over else 0.0,
        }

    def close(self) -> None:
        pass


def _settings(policies: tuple[str, ...]) -> CapacitySettings:
    return CapacitySettings(
        policies=policies,
        kes_fractions=(0.0, 0.1),
        limits=(Limit("noncritical_capped_pct", 1.0),),
        servers_per_rack=40,
        growth="traces",
        baseline_servers=120,
        step=6,
        upper=360,
        resolution=1,
    )


def test_driver_shares_flywheel_free_searches_and_resumes_from_cache(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = make_inputs(scenario, (0.0, 0.1), None, 40, "traces")
    sets = _settings(("none", "reactive"))
    ex = CountingExecutor({"none": 110, "reactive": 130})
    cache = Cache(tmp_path / "cache", inputs_digest(inputs, "-"))
    res = run_capacity(inputs, sets, ex, cache)
    assert res[PointKey("none", 0.0)].max_servers == 110
    assert res[PointKey("none", 0.1)].max_servers == 110
    assert res[PointKey("reactive", 0.0)].max_servers == 130
    assert res[PointKey("reactive", 0.1)].max_servers == 131
    assert res[PointKey("reactive", 0.1)].binding == "noncritical_capped_pct"
    # `none` has no flywheel: one search's simulations serve every flywheel size.
    assert all(c.kes_fraction == 0.0 for c in ex.ran if c.policy == "none")
    assert len(ex.ran) == len(set(ex.ran))
    # A second run finds every candidate in the cache and simulates nothing.
    again = CountingExecutor({"none": 0, "reactive": 0})
    res2 = run_capacity(inputs, sets, again, Cache(tmp_path / "cache", cache.digest))
    assert again.ran == [] and res2 == res
    # A damaged cache file is recomputed, not trusted.
    victim = sorted((tmp_path / "cache").glob("*.json"))[0]
    victim.write_text("{not json")
    third = CountingExecutor({"none": 110, "reactive": 130})
    assert run_capacity(inputs, sets, third, Cache(tmp_path / "cache", cache.digest)) == res
    assert len(third.ran) == 1
    # Different inputs (another growth method, model or simulator code) never reuse them.
    other = make_inputs(scenario, (0.0, 0.1), None, 40, "naive")
    assert inputs_digest(other, "-") != cache.digest
    assert inputs_digest(inputs, "lstm abc") != cache.digest
    monkeypatch.setattr("wattwheel.sim.capacity.code_fingerprint", lambda: "edited")
    assert inputs_digest(inputs, "-") != cache.digest


def test_payload_shape(scenario: Scenario, tmp_path: Path) -> None:
    inputs = make_inputs(scenario, (0.0, 0.1), None, 40, "traces")
    sets = _settings(("reactive",))
    res = run_capacity(inputs, sets, CountingExecutor({"reactive": 125}), Cache(None, "x"))
    payload = capacity_payload(res, sets, {"trace": {"path": "t.csv", "days": 1.0}})
    point = payload["policies"]["reactive"]["kes_fraction"]["0.1"]
    assert point["max_servers"] == 126
    assert point["extra_servers_pct"] == pytest.approx(5.0)
    assert point["binding"] == "noncritical_capped_pct"
    assert payload["limits"]["user"] == {"noncritical_capped_pct": 1.0}
    assert payload["limits"]["hard"] == {"breaker_trips": 0.0, "critical_capped_energy_kwh": 0.0}
    json.dumps(payload)


def test_flywheel_sizes_resolve_against_the_baseline_peak(scenario: Scenario) -> None:
    inputs: CapacityInputs = make_inputs(scenario, (0.0, 0.05, 0.1), None, 40, "traces")
    peak = scenario.demand_kw.max(axis=0)
    for f in (0.05, 0.1):
        np.testing.assert_allclose(inputs.kes_sites[f].kes.rated_power_kw, f * peak)
        minutes = 60 * inputs.kes_sites[f].kes.capacity_kwh / inputs.kes_sites[f].kes.rated_power_kw
        np.testing.assert_allclose(minutes, 10.0)  # the site file's minutes at rated power
    assert not inputs.kes_sites[0.0].kes.rated_power_kw.any()
    np.testing.assert_array_equal(inputs.kes_sites[0.1].primary_kw, scenario.site.primary_kw)


def test_evaluate_runs_a_whole_simulation(scenario: Scenario) -> None:
    inputs = make_inputs(scenario, (0.05,), None, 40, "traces")
    base = evaluate(inputs, Candidate("none", 0.05, 120))
    more = evaluate(inputs, Candidate("none", 0.05, 150))
    assert base["steps"] == more["steps"] == 288
    year_factor = 365.25
    assert base["reserve_hours_per_year"] == pytest.approx(
        base["reserve_seconds"] / 3600 * year_factor
    )
    assert more["reserve_hours_per_year"] > base["reserve_hours_per_year"]
    assert more["peak_grid_kw"] >= base["peak_grid_kw"]
    assert "wall_seconds" not in base
