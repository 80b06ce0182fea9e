"""The decomposed planner: the reserve budgets the shards plan with, and its plan on one domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattwheel.control.decomposed import (
    contiguous_shards,
    reserve_budgets_kw,
    shard_problems,
    solve_decomposed,
    transfers_kw,
)
from wattwheel.control.planner import Plan, PlanInputs, solve_plan
from wattwheel.domain.site import SiteParams, parse_site, resolve_site

TINY = (Path(__file__).resolve().parents[1] / "data" / "sites" / "tiny.toml").read_text()
DOMAINS_AT = TINY.index("[[domains]]")


def site_of(names: str) -> SiteParams:
    """tiny.toml's costs, flywheels and 50 kW reserve with one 100 kW domain per letter."""
    doms = "".join(
        f'[[domains]]\nname = "{n}"\nracks = ["{n.lower()}1"]\nprimary_capacity_kw = 100\n\n'
        for n in names
    )
    demand = {n: np.array([100.0]) for n in names}
    return resolve_site(parse_site(TINY[:DOMAINS_AT] + doms), demand)


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


def test_budgets_split_the_reserve_by_forecast_excess_and_sum_to_its_capacity() -> None:
    site = site_of("ABCD")
    # Peak excess over the first two blocks: 60, 20, 0 (its 80 kW over is beyond them), 20.
    inp = inputs([[160, 100, 90], [110, 120, 90], [90, 90, 180], [120, 90, 90]], reserve_blocks=2)
    shards = contiguous_shards(4, 1)
    budgets = reserve_budgets_kw(site, inp, shards)
    assert budgets == pytest.approx([50 * 60 / 100, 50 * 20 / 100, 0.0, 50 * 20 / 100])
    problems = shard_problems(site, inp, shards)
    caps = [sub.reserve.capacity_kw for sub, _ in problems]
    assert sum(caps) == pytest.approx(site.reserve.capacity_kw)
    assert [sub.domain_names for sub, _ in problems] == [("A",), ("B",), ("C",), ("D",)]
    # Two shards of two: A+B peak together at 80 kW over (block 0: 60 + 10), C+D at 20.
    pair = reserve_budgets_kw(site, inp, contiguous_shards(4, 2))
    assert pair == pytest.approx([50 * 70 / 90, 50 * 20 / 90])


def test_every_domain_over_primary_at_once_cannot_take_more_than_the_reserve() -> None:
    # Each domain 40 kW over for three blocks: 160 kW against a 50 kW reserve. Each shard may
    # plan at most its budget, so whatever the shards arm, together they cannot exceed 50 kW;
    # the rest is capped or overloaded, and the cost says so.
    site = site_of("ABCD")
    inp = inputs([[140.0, 140.0, 140.0, 90.0]] * 4)
    shards = contiguous_shards(4, 1)
    problems = shard_problems(site, inp, shards)
    assert [sub.reserve.capacity_kw for sub, _ in problems] == pytest.approx([12.5] * 4)
    alone = solve_plan(problems[0][0], problems[0][1], 1)
    whole_reserve = solve_plan(site_of("A"), inputs([[140.0, 140.0, 140.0, 90.0]]), 1)
    assert alone is not None and whole_reserve is not None
    # With only its 12.5 kW the domain pays for more capping/overload than with 50 kW.
    assert alone.expected_cost > whole_reserve.expected_cost + 1.0
    plan = solve_decomposed(site, inp, 1, shards)
    assert plan is not None
    assert plan.expected_cost == pytest.approx(4 * alone.expected_cost, rel=1e-6)


def test_transfers_balance_every_block_from_the_lead_time_within_the_shift_limits() -> None:
    site = site_of("ABC")  # tiny.toml: shifts up to 20 % of a 100 kW peak = 20 kW
    inp = inputs([[130.0, 130.0, 105.0], [80.0, 90.0, 60.0], [95.0, 70.0, 100.0]])
    export, imp = transfers_kw(site, inp, 1, contiguous_shards(3, 1))
    assert export[:, 0] == pytest.approx([0, 0, 0]) and imp[:, 0] == pytest.approx([0, 0, 0])
    np.testing.assert_allclose(export.sum(axis=0), imp.sum(axis=0))
    # Block 1: A wants 20 (its limit), B has 10 and C 20 (its limit) of room: 20 go, 1/3 to B.
    assert export[:, 1] == pytest.approx([20, 0, 0])
    assert imp[:, 1] == pytest.approx([0, 20 / 3, 40 / 3])
    # Block 2: A wants 5; the room is B's 20 (its limit) and C's 0.
    assert export[:, 2] == pytest.approx([5, 0, 0]) and imp[:, 2] == pytest.approx([0, 5, 0])
    # In one shard of all three, shifts are the MILP's own: no transfers.
    one_shard = transfers_kw(site, inp, 1, contiguous_shards(3, 3))
    assert not one_shard[0].any() and not one_shard[1].any()
    # Shards {A, B} and {C}: block 1 nets A's 20 against B's 10 of room, 10 go to C.
    export2, imp2 = transfers_kw(site, inp, 1, contiguous_shards(3, 2))
    assert export2[:, 1] == pytest.approx([10, 0, 0]) and imp2[:, 1] == pytest.approx([0, 0, 10])
    plan = solve_decomposed(site, inp, 1)
    assert plan is not None
    assert plan.shift_out_kw.sum() == pytest.approx(plan.shift_in_kw.sum())


def plans_equal(a: Plan, b: Plan) -> None:
    assert a.expected_cost == pytest.approx(b.expected_cost, rel=1e-9, abs=1e-9)
    for field in ("soc_target", "shift_out_kw", "shift_in_kw", "defer_kw", "repay_kw"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-9)
    np.testing.assert_array_equal(a.reserve_arm, b.reserve_arm)
    np.testing.assert_array_equal(a.reserve_prewarm, b.reserve_prewarm)


@pytest.mark.parametrize(
    "demand",
    [[90.0, 110.0, 140.0, 130.0, 90.0], [130.0, 130.0, 95.0, 95.0, 95.0], [50.0] * 5],
)
def test_on_a_one_domain_site_the_plan_is_the_monolithic_one(demand: list[float]) -> None:
    one = site_of("A")
    inp = inputs([demand], reserve_blocks=3)
    mono = solve_plan(one, inp, 1)
    dec = solve_decomposed(one, inp, 1)
    assert mono is not None and dec is not None
    plans_equal(dec, mono)
