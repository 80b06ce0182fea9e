"""The decomposed planner: price rounds, the repair that balances the cross-shard shifts and
keeps the reserve within its capacity, the merged cost against the site-wide MILP, and the
``predictive`` policy's switch to it above the site's threshold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from wattwheel.control.decomposed import (
    DecomposedPlanner,
    _Shard,
    _weighted_median,
    contiguous_shards,
    solve_decomposed,
)
from wattwheel.control.planner import Plan, PlanInputs, solve_plan
from wattwheel.control.predictive import PredictivePolicy
from wattwheel.domain.site import SiteParams, parse_site, resolve_site

TINY = (Path(__file__).resolve().parents[1] / "data" / "sites" / "tiny.toml").read_text()
DOMAINS_AT = TINY.index("[[domains]]")


def site_of(names: str, site_extra: str = "") -> SiteParams:
    """tiny.toml's costs, flywheels and 50 kW reserve with one 100 kW domain per letter."""
    doms = "".join(
        f'[[domains]]\nname = "{n}"\nracks = ["{n.lower()}1"]\nprimary_capacity_kw = 100\n\n'
        for n in names
    )
    head = TINY[:DOMAINS_AT].replace("[reserve]", site_extra + "\n[reserve]", 1)
    demand = {n: np.array([100.0]) for n in names}
    return resolve_site(parse_site(head + doms), demand)


def inputs(demand_kw: list[list[float]], reserve_blocks: int | None = None) -> PlanInputs:
    d = np.array(demand_kw, dtype=float)
    n = d.shape[0]
    z = np.zeros(n)
    return PlanInputs(
        demand_kw=d,
        noncritical_kw=0.3 * d,
        energy_kwh=z.copy(),
        debt_kwh=z.copy(),
        reserve_on=np.zeros(n, dtype=bool),
        reserve_min_on_left_s=z.copy(),
        reserve_allowed=np.ones(n, dtype=bool),
        fixed_shift_out_kw=np.zeros((n, 1)),
        fixed_shift_in_kw=np.zeros((n, 1)),
        reserve_blocks=reserve_blocks,
    )


def test_contiguous_shards_cover_the_domains_in_order() -> None:
    assert contiguous_shards(7, 3) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError):
        contiguous_shards(0, 3)


def test_budgets_sum_to_the_reserve_capacity_in_every_block() -> None:
    site = site_of("ABCD")
    # Peak excess over the first two blocks: 60, 20, 0 (its 80 kW over is beyond them), 20.
    inp = inputs([[160, 100, 90], [110, 120, 90], [90, 90, 180], [120, 90, 90]], reserve_blocks=2)
    planner = DecomposedPlanner(site, shard_size=1)
    use = np.array([[40.0, 0.0, 0.0], [30.0, 10.0, 0.0], [0.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    budgets = planner._budgets(inp, use, 50.0)
    np.testing.assert_allclose(budgets.sum(axis=0), 50.0)
    # Block 0 asked for 70 of 50 kW: scaled down; block 1 asked 20: the 30 left go by excess.
    np.testing.assert_allclose(budgets[:, 0], [40 * 50 / 70, 30 * 50 / 70, 0, 0])
    np.testing.assert_allclose(budgets[:, 1], [30 * 0.6, 10 + 30 * 0.2, 0, 10 + 30 * 0.2])


def test_every_domain_over_at_once_never_plans_more_reserve_than_it_has() -> None:
    # Each domain 40 kW over for three blocks: 160 kW against a 50 kW reserve.
    site = site_of("ABCD")
    inp = inputs([[140.0, 140.0, 140.0, 90.0]] * 4)
    planner = DecomposedPlanner(site, shard_size=1)
    plan, info = planner.solve_with_info(inp, 1)
    assert plan is not None and info.reserve_kw is not None and info.repaired
    assert np.all(info.reserve_kw.sum(axis=0) <= 50.0 + 1e-6)
    mono = solve_plan(site, inp, 1)
    assert mono is not None
    # The merged cost is the site-wide objective at a feasible point: never below the optimum.
    assert plan.expected_cost >= mono.expected_cost - 1e-6
    # Planned with a budget of 20 kW of it (a shard process's), the shards keep within that.
    small, info_small = planner.solve_with_info(inp, 1, reserve_kw=20.0)
    assert small is not None and info_small.reserve_kw is not None
    assert np.all(info_small.reserve_kw.sum(axis=0) <= 20.0 + 1e-6)
    assert small.expected_cost >= plan.expected_cost - 1e-6


def test_cross_shard_shifts_balance_and_cost_no_less_than_the_site_wide_optimum() -> None:
    site = site_of("ABCD")  # tiny.toml: shifts up to 20 % of a 100 kW peak = 20 kW
    inp = inputs(
        [
            [130.0, 130.0, 125.0, 120.0],
            [125.0, 130.0, 120.0, 115.0],
            [70.0, 75.0, 80.0, 80.0],
            [80.0, 70.0, 85.0, 90.0],
        ]
    )
    plan, info = DecomposedPlanner(site, shard_size=2).solve_with_info(inp, 1)
    mono = solve_plan(site, inp, 1)
    assert plan is not None and mono is not None and info.exchange_kw is not None
    # {A, B} is over and {C, D} under: work crosses shards, exports = imports in every block.
    np.testing.assert_allclose(info.exchange_kw.sum(axis=0), 0.0, atol=1e-6)
    assert info.exchange_kw[0, 1:].min() > 1.0
    assert plan.shift_out_kw.sum() == pytest.approx(plan.shift_in_kw.sum(), abs=1e-6)
    assert plan.expected_cost >= mono.expected_cost - 1e-6
    # Without cross-shard shifts (one domain's worth of shifts at most inside each shard) the
    # over shard would have to cap: the exchange is what brings the cost near the optimum.
    alone = [
        solve_plan(dataclasses.replace(site_of(n)), inputs([row]), 1)
        for n, row in zip("ABCD", inp.demand_kw.tolist(), strict=True)
    ]
    assert all(p is not None for p in alone)
    assert plan.expected_cost < sum(p.expected_cost for p in alone if p is not None)


def test_the_repair_keeps_the_cheapest_candidate_schedule() -> None:
    site = site_of("ABCDEF")
    inp = inputs(
        [
            [130.0, 135.0, 125.0, 120.0],
            [125.0, 130.0, 120.0, 115.0],
            [120.0, 125.0, 130.0, 110.0],
            [80.0, 70.0, 85.0, 90.0],
            [95.0, 90.0, 95.0, 92.0],
            [70.0, 75.0, 80.0, 80.0],
        ]
    )
    mono = solve_plan(site, inp, 1)
    assert mono is not None
    costs = []
    for n in (1, 2, 3):
        planner = DecomposedPlanner(site, shard_size=2, rounds=3, candidates=n)
        plan, info = planner.solve_with_info(inp, 1)
        assert plan is not None and info.exchange_kw is not None
        np.testing.assert_allclose(info.exchange_kw.sum(axis=0), 0.0, atol=1e-6)
        # The value LP, the price rounds, then one repair round per candidate.
        assert len(info.solve_s) == 1 + info.rounds + (n if info.rounds > 1 else 1)
        assert plan.expected_cost >= mono.expected_cost - 1e-6
        costs.append(plan.expected_cost)
    # Each candidate set holds the one before: the kept plan never costs more.
    assert costs[1] <= costs[0] + 1e-9 and costs[2] <= costs[1] + 1e-9


def test_weighted_median_is_where_the_weights_below_reach_half() -> None:
    values = np.array([[0.3, 0.0], [0.1, 0.2], [0.2, 0.1]])
    # Block 0 sorted 0.1 (w 1), 0.2 (w 1), 0.3 (w 2): half of 4 is reached at 0.2. Block 1
    # sorted 0.0 (w 2), 0.1, 0.2: at 0.0 already.
    np.testing.assert_allclose(_weighted_median(values, np.array([2.0, 1.0, 1.0])), [0.2, 0.0])


def test_a_shards_export_value_is_what_a_kw_sent_away_saves_it() -> None:
    # Two shards of two domains, no reserve. {A, B}: both 20 kW over primary in blocks 1-3,
    # more than their flywheels cover (nothing to shift to inside the shard), so a kW sent
    # away in those blocks saves it capping about as much; {C, D}: far below primary with full
    # flywheels, a kW sent away saves it nothing.
    site = site_of("ABCD")
    inp = dataclasses.replace(
        inputs([[90.0, 120.0, 120.0, 120.0]] * 2 + [[60.0] * 4] * 2),
        energy_kwh=site.kes.capacity_kwh.copy(),
        reserve_allowed=np.zeros(4, dtype=bool),
    )
    planner = DecomposedPlanner(site, shard_size=2)
    cap_kw_block = site.costs["capped_energy_kwh"] * site.plan_period_s / 3600.0
    over = _Shard(planner.sub_sites[0], _cut(inp, 0, 2), 1).export_values()
    under = _Shard(planner.sub_sites[1], _cut(inp, 2, 4), 1).export_values()
    assert over is not None and under is not None
    assert np.all(over[1:] > 0.5 * cap_kw_block) and np.all(over[1:] <= cap_kw_block + 1e-9)
    np.testing.assert_allclose(under[1:], 0.0, atol=1e-9)
    # The price search starts between them and the over shard sends work to the other.
    plan, info = planner.solve_with_info(inp, 1)
    mono = solve_plan(site, inp, 1)
    assert plan is not None and mono is not None and info.exchange_kw is not None
    assert info.exchange_kw[0, 1:].min() > 1.0
    assert plan.expected_cost <= 1.02 * mono.expected_cost


def _cut(inp: PlanInputs, a: int, b: int) -> PlanInputs:
    return PlanInputs(
        **{
            f.name: (v[a:b] if isinstance(v, np.ndarray) else v)
            for f in dataclasses.fields(inp)
            for v in [getattr(inp, f.name)]
        }
    )


def plans_equal(a: Plan, b: Plan) -> None:
    assert a.expected_cost == pytest.approx(b.expected_cost, rel=1e-9, abs=1e-9)
    for name in ("soc_target", "shift_out_kw", "shift_in_kw", "defer_kw", "repay_kw"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-9)
    np.testing.assert_array_equal(a.reserve_arm, b.reserve_arm)
    np.testing.assert_array_equal(a.reserve_prewarm, b.reserve_prewarm)


@pytest.mark.parametrize(
    "demand",
    [[90.0, 110.0, 140.0, 130.0, 90.0], [130.0, 130.0, 95.0, 95.0, 95.0], [50.0] * 5],
)
def test_on_a_one_shard_site_the_plan_is_the_monolithic_one(demand: list[float]) -> None:
    one = site_of("A")
    inp = inputs([demand], reserve_blocks=3)
    mono = solve_plan(one, inp, 1)
    dec = solve_decomposed(one, inp, 1)
    assert mono is not None and dec is not None
    plans_equal(dec, mono)


def test_predictive_plans_decomposed_only_above_the_sites_threshold() -> None:
    inp = inputs([[130.0, 125.0, 120.0], [125.0, 120.0, 115.0], [70.0] * 3, [80.0] * 3])
    default = PredictivePolicy(site_of("ABCD"))
    assert default.site.plan_decompose_above_domains == 24 and default.decomposed is None
    mono = default.solve(inp)
    site = site_of("ABCD", "plan_decompose_above_domains = 3\nplan_shard_domains = 2\n")
    policy = PredictivePolicy(site)
    assert policy.decomposed is not None and policy.decomposed.shards == [(0, 2), (2, 4)]
    plan = policy.solve(inp)
    expected = DecomposedPlanner(site, 2, site.plan_price_rounds).solve(inp, policy.lead_blocks)
    assert plan is not None and expected is not None and mono is not None
    plans_equal(plan, expected)
    assert plan.expected_cost >= mono.expected_cost - 1e-6
