"""Metrics: the DESIGN §2 names, the cost as a weighted sum, per-domain vs site figures."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.domain.metrics import METRIC_NAMES, MetricsAccumulator, cost_total

DESIGN_NAMES = {
    "reserve_energy_kwh", "reserve_activations", "reserve_seconds", "overload_energy_kwh",
    "overload_seconds", "breaker_trips", "capped_energy_kwh", "critical_capped_energy_kwh",
    "shifted_energy_kwh", "deferred_energy_kwh", "kes_losses_kwh", "kes_throughput_kwh",
    "kes_equivalent_cycles", "peak_grid_kw", "max_grid_ramp_kw_per_s", "cost_total", "steps",
    "wall_seconds",
    # DESIGN §8: the shared reserve metered as one machine (and its pre-warmed time).
    "reserve_machine_starts", "reserve_warm_seconds",
}  # fmt: skip


def test_metric_names_are_exactly_the_design_names() -> None:
    assert set(METRIC_NAMES) == DESIGN_NAMES
    assert len(METRIC_NAMES) == len(DESIGN_NAMES)


def test_cost_is_the_weighted_sum_and_ignores_bookkeeping() -> None:
    metrics = {"reserve_energy_kwh": 2.0, "breaker_trips": 1.0, "steps": 100.0}
    weights = {"reserve_energy_kwh": 3.0, "breaker_trips": 1000.0, "steps": 5.0}
    # 3·2 + 1000·1; steps carries no cost.
    assert cost_total(metrics, weights) == pytest.approx(1006.0)


def test_accumulator_per_domain_and_site() -> None:
    acc = MetricsAccumulator(2)
    acc.add("kes_throughput_kwh", np.array([4.0, 0.0]))
    acc.observe_grid(np.array([10.0, 20.0]), 60.0)
    acc.observe_grid(np.array([70.0, 15.0]), 60.0)
    dom = acc.domain_metrics(np.array([2.0, 0.0]), {"kes_throughput_kwh": 1.0}, 0.5)
    # 4 kWh through a 2 kWh bank = 1 equivalent full cycle; an empty bank has none.
    assert dom[0]["kes_equivalent_cycles"] == pytest.approx(1.0)
    assert dom[1]["kes_equivalent_cycles"] == 0.0
    # Ramp (70 − 10)/60 = 1 kW/s in A, 5/60 in B; peaks 70 and 20.
    assert dom[0]["max_grid_ramp_kw_per_s"] == pytest.approx(1.0)
    assert dom[1]["max_grid_ramp_kw_per_s"] == pytest.approx(5 / 60)
    assert [d["peak_grid_kw"] for d in dom] == [70.0, 20.0]
    site = acc.site_metrics(np.array([2.0, 0.0]), {"kes_throughput_kwh": 1.0}, 0.5)
    # The site peak is the peak of the sum (85), not the sum of peaks (90).
    assert site["peak_grid_kw"] == pytest.approx(85.0)
    assert site["kes_equivalent_cycles"] == pytest.approx(1.0)
    assert site["cost_total"] == pytest.approx(4.0)
    assert site["steps"] == 2.0
    assert set(site) == DESIGN_NAMES
    assert set(dom[0]) == DESIGN_NAMES
