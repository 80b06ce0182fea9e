"""The planning MILP on one-domain cases whose optimum is worked out by hand (PyPSA-style:
assert the objective). Blocks are the 120 s plan period: 1 kW over one block = 1/30 kWh."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.control.planner import Plan, PlanInputs, soc_floor, solve_plan
from wattwheel.domain.site import SiteParams, parse_site, resolve_site

ONE = """
[site]
name = "one"
plan_period_s = 120
horizon_min = 6

[reserve]
capacity_kw = 50
start_delay_s = {delay}
min_on_s = 120

[costs]
reserve_energy_kwh = 1.0
reserve_activations = 5.0
reserve_seconds = {reserve_s}

[domain_defaults.kes]
modules = {modules}
module_power_kw = 5
module_energy_kwh = 1

[domain_defaults.flex]
noncritical_fraction = 0.0
shift_max_fraction_of_peak = 0.0

[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = 100
"""


def one_domain(delay: float = 0.0, reserve_s: float = 0.0, modules: int = 0) -> SiteParams:
    """No flywheel (unless asked), nothing cappable or shiftable: only the reserve or an
    overload can meet demand above the 100 kW primary."""
    text = ONE.format(delay=delay, reserve_s=reserve_s, modules=modules)
    return resolve_site(parse_site(text), {"A": np.array([120.0])})


def plan(site: SiteParams, demand_kw: list[float], soc: float = 0.0) -> Plan:
    d = np.array([demand_kw], dtype=float)
    z = np.zeros(1)
    inputs = PlanInputs(
        demand_kw=d,
        noncritical_kw=0.0 * d,
        energy_kwh=soc * site.kes.capacity_kwh,
        debt_kwh=z,
        reserve_on=np.zeros(1, dtype=bool),
        reserve_min_on_left_s=z,
        reserve_allowed=np.ones(1, dtype=bool),
        fixed_shift_out_kw=np.zeros((1, 1)),
        fixed_shift_in_kw=np.zeros((1, 1)),
    )
    result = solve_plan(site, inputs, lead_blocks=0)
    assert result is not None
    return result


def test_reserve_covers_a_forecast_excess_at_the_cheapest_cost() -> None:
    # 10 kW over in blocks 1 and 2: one start (5) + 10 kW · 2 blocks · 1/30 h · 1/kWh = 0.6667.
    # Overloading instead would cost 1 per kW-block: 20. Optimum 5.6667.
    p = plan(one_domain(), [90.0, 110.0, 110.0, 90.0])
    assert p.expected_cost == pytest.approx(5 + 20 / 30, rel=2e-3)


def test_an_excess_now_arms_the_reserve_now() -> None:
    # Over in blocks 0..2: one start + 10 kW · 3 blocks / 30 = 6.0.
    p = plan(one_domain(), [110.0, 110.0, 110.0, 90.0])
    assert bool(p.reserve_arm[0])
    assert p.expected_cost == pytest.approx(6.0, rel=2e-3)


def test_a_full_block_start_delay_arms_one_block_ahead() -> None:
    # Delay = plan period: a start delivers nothing in its own block, so the reserve must start
    # in block 0 to cover block 1. Running costs 0.001/s: 3 blocks · 120 s · 0.001 = 0.36;
    # total 5 + 0.6667 + 0.36 = 6.0267.
    p = plan(one_domain(delay=120.0, reserve_s=0.001), [90.0, 110.0, 110.0, 90.0])
    assert bool(p.reserve_arm[0])
    assert p.expected_cost == pytest.approx(5 + 20 / 30 + 0.36, rel=2e-3)


def test_a_half_block_start_delay_also_arms_ahead() -> None:
    # Starting in block 1 leaves 10 kW uncovered for 60 s (avg 5 kW over the block, penalised
    # at ≥ 1 per kW-block = 5), far dearer than running one more block (0.12).
    p = plan(one_domain(delay=60.0, reserve_s=0.001), [90.0, 110.0, 110.0, 90.0])
    assert bool(p.reserve_arm[0])


def test_a_charged_flywheel_replaces_the_reserve() -> None:
    # 2 × 5 kW modules, 2 kWh, full: 5 kW over for two blocks needs 5 · 2/30 = 0.33 kWh at the
    # bus — well within the bank — so no start (5) is worth it.
    site = one_domain(modules=2)
    p = plan(site, [100.0, 105.0, 105.0, 100.0], soc=1.0)
    assert not bool(p.reserve_arm[0])
    assert p.expected_cost < 1.0


def test_soc_floor_covers_rated_power_over_start_delay_and_one_period() -> None:
    # 10 kW for (60 s delay + 120 s period) = 0.5 kWh of a 2 kWh bank = 0.25; with delay
    # 300 s: 10 · 420/3600 / 2 = 0.5833; clipped to [0.25, 0.9].
    assert soc_floor(one_domain(delay=60.0, modules=2))[0] == pytest.approx(0.25)
    assert soc_floor(one_domain(delay=300.0, modules=2))[0] == pytest.approx(10 * 420 / 3600 / 2)
    assert soc_floor(one_domain(delay=3600.0, modules=2))[0] == pytest.approx(0.9)


def test_a_two_block_start_delay_arms_two_blocks_ahead() -> None:
    # Delay 240 s = 2 blocks: to deliver in block 2 the reserve must start in block 0.
    p = plan(one_domain(delay=240.0, reserve_s=0.001), [90.0, 90.0, 110.0, 110.0])
    assert bool(p.reserve_arm[0])


def test_the_shared_reserve_is_one_machine_started_once() -> None:
    """Two domains over their feeds in the same blocks share one reserve machine: the plan
    pays one start and one machine's running time, not one per domain."""
    text = ONE.format(delay=0.0, reserve_s=0.0, modules=0).replace(
        "primary_capacity_kw = 100\n",
        'primary_capacity_kw = 100\n\n[[domains]]\nname = "B"\nracks = ["b1"]\n'
        "primary_capacity_kw = 100\n",
    )
    site = resolve_site(parse_site(text), {"A": np.array([120.0]), "B": np.array([120.0])})
    d = np.array([[110.0, 110.0, 100.0], [110.0, 110.0, 100.0]])
    z = np.zeros(2)
    inputs = PlanInputs(
        demand_kw=d,
        noncritical_kw=0.0 * d,
        energy_kwh=z,
        debt_kwh=z,
        reserve_on=np.zeros(2, dtype=bool),
        reserve_min_on_left_s=z,
        reserve_allowed=np.ones(2, dtype=bool),
        fixed_shift_out_kw=np.zeros((2, 1)),
        fixed_shift_in_kw=np.zeros((2, 1)),
    )
    result = solve_plan(site, inputs, lead_blocks=0)
    assert result is not None
    # 10 kW in each domain for two 120 s blocks at 1 USD/kWh, and one start at 5.
    assert result.expected_cost == pytest.approx(2 * 2 * 10 / 30 + 5.0, abs=1e-6)
    assert result.reserve_arm.all()
