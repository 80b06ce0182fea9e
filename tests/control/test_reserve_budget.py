"""Reserve budgets for shard processes: the coordinator's split (hand-computed), the shards'
fallback when the coordinator is silent, and the policies keeping within a budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import wattwheel.control.predictive as predictive_mod
from control.conftest import ObsFactory, SiteFactory
from control.test_predictive import flat_forecast
from wattwheel.control.base import reserve_capacity_kw
from wattwheel.control.fast_loop import Targets, default_soc_target, safety_loop
from wattwheel.control.planner import Plan, PlanInputs, solve_plan
from wattwheel.control.predictive import PredictivePolicy
from wattwheel.control.reserve_budget import (
    BudgetGrant,
    BudgetSeen,
    ShardSummary,
    compute_budgets,
    effective_budget,
    observe,
    static_shares_kw,
    summarize,
)
from wattwheel.control.simple import NonePolicy
from wattwheel.domain.site import SiteParams


def _summary(shard: str, need_kw: float, critical_over_kw: float = 0.0) -> ShardSummary:
    return ShardSummary(shard, 100.0, critical_over_kw, (need_kw,), (0.0,), need_kw, 300.0, 0.0)


def test_static_shares_follow_the_rated_load_and_sum_to_the_capacity() -> None:
    shares = static_shares_kw(90.0, {"s0": 200.0, "s1": 100.0})
    assert shares == pytest.approx({"s0": 60.0, "s1": 30.0})
    assert static_shares_kw(90.0, {"a": 0.0, "b": 0.0}) == pytest.approx({"a": 45.0, "b": 45.0})
    assert static_shares_kw(90.0, {}) == {}


def test_budgets_go_to_critical_load_first_then_in_proportion_to_forecast_excess() -> None:
    static = {"s0": 30.0, "s1": 30.0, "s2": 30.0}
    summaries = {
        "s0": _summary("s0", need_kw=40.0, critical_over_kw=10.0),
        "s1": _summary("s1", need_kw=10.0),
        "s2": _summary("s2", need_kw=0.0),
    }
    b = compute_budgets(90.0, static, summaries)
    # 10 kW of critical load to s0 first; the other 80 split 40:10:0.
    assert b.budgets_kw == pytest.approx({"s0": 10.0 + 64.0, "s1": 16.0, "s2": 0.0})
    assert sum(b.budgets_kw.values()) == pytest.approx(90.0)
    assert set(b.basis.values()) == {"summary"}


def test_critical_load_over_the_capacity_is_shared_in_proportion() -> None:
    static = {"s0": 45.0, "s1": 45.0}
    summaries = {
        "s0": _summary("s0", 200.0, critical_over_kw=120.0),
        "s1": _summary("s1", 100.0, critical_over_kw=60.0),
    }
    b = compute_budgets(90.0, static, summaries)
    assert b.budgets_kw == pytest.approx({"s0": 60.0, "s1": 30.0})


def test_a_shard_without_a_summary_is_held_at_its_static_share() -> None:
    static = {"s0": 60.0, "s1": 30.0}
    b = compute_budgets(90.0, static, {"s0": _summary("s0", 500.0)})
    assert b.budgets_kw == pytest.approx({"s0": 60.0, "s1": 30.0})
    assert b.basis == {"s0": "summary", "s1": "static"}
    # Nobody expects an excess: the live shards split by static share; none: all static.
    none_over = compute_budgets(90.0, static, {"s0": _summary("s0", 0), "s1": _summary("s1", 0)})
    assert none_over.budgets_kw == pytest.approx(static)
    assert compute_budgets(90.0, static, {}).budgets_kw == pytest.approx(static)
    # A summary of a shard the coordinator does not know is ignored.
    assert compute_budgets(90.0, static, {"x": _summary("x", 9.0)}).budgets_kw == static


def test_budgets_never_exceed_the_capacity_on_random_summaries() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 6))
        names = [f"s{k}" for k in range(n)]
        static = static_shares_kw(float(rng.uniform(0, 500)), {s: rng.uniform(0, 9) for s in names})
        cap = sum(static.values())
        live = {
            s: _summary(s, float(rng.uniform(0, 300)), float(rng.uniform(0, 200) * rng.integers(2)))
            for s in names
            if rng.random() < 0.7
        }
        b = compute_budgets(cap, static, live)
        assert sum(b.budgets_kw.values()) == pytest.approx(cap, abs=1e-6)
        assert min(b.budgets_kw.values()) >= 0.0


def test_summary_sums_excess_and_headroom_per_block() -> None:
    primary = np.array([100.0, 50.0])
    demand = np.array([[120.0, 90.0, 130.0], [40.0, 70.0, 50.0]])
    s = summarize("s0", primary, demand, np.array([105.0, 10.0]), 2, 300.0, 1.0)
    assert s.excess_kw == (20.0, 20.0, 30.0)
    assert s.headroom_kw == (10.0, 10.0, 0.0)
    assert s.reserve_need_kw == 20.0  # the peak of the first two blocks only
    assert s.critical_over_kw == 5.0 and s.rated_kw == 150.0
    assert ShardSummary.from_json(s.to_json()) == s


def test_grants_and_summaries_refuse_what_is_not_one() -> None:
    grant = BudgetGrant(3, 7, "ctl-a", 1.5, 90.0, {"s0": 60.0, "s1": 30.0}, {"s0": "summary"})
    assert BudgetGrant.from_json(grant.to_json()) == grant and grant.version == "3.7"
    for bad in ("", "[]", '{"format": 1}', '{"format": 2, "token": 1}', "{nan"):
        with pytest.raises(ValueError):
            BudgetGrant.from_json(bad)
    raw = grant.to_json().replace("60.0", "-60.0")
    with pytest.raises(ValueError, match="negative"):
        BudgetGrant.from_json(raw)
    with pytest.raises(ValueError):
        ShardSummary.from_json(grant.to_json())


def test_a_shard_falls_back_to_its_static_share_when_the_coordinator_is_silent() -> None:
    grant = BudgetGrant(3, 1, "ctl-a", 0.0, 90.0, {"s0": 80.0, "s1": 10.0})
    seen = BudgetSeen()
    eff = effective_budget(seen, "s0", 60.0, 90.0, ttl_s=10.0, now_s=100.0)
    assert (eff.source, eff.budget_kw) == ("fallback", 60.0)  # nothing yet: never the whole 90
    seen = observe(seen, grant, revision=5, now_s=100.0)
    eff = effective_budget(seen, "s0", 60.0, 90.0, ttl_s=10.0, now_s=109.0)
    assert (eff.source, eff.budget_kw, eff.version) == ("coordinator", 80.0, "3.1")
    # The same revision read again does not refresh it: silence is measured from the first read.
    seen = observe(seen, grant, revision=5, now_s=109.0)
    eff = effective_budget(seen, "s0", 60.0, 90.0, ttl_s=10.0, now_s=110.5)
    assert (eff.source, eff.budget_kw) == ("fallback", 60.0)
    assert "silent for 10.5 s" in eff.reason
    # A new version brings it back; an absent key (None) keeps the last one until the TTL.
    seen = observe(seen, dataclasses.replace(grant, seq=2), revision=9, now_s=111.0)
    seen = observe(seen, None, revision=0, now_s=112.0)
    assert effective_budget(seen, "s0", 60.0, 90.0, 10.0, 112.0).budget_kw == 80.0
    # A shard not in the budgets falls back; a budget above the capacity is cut to it.
    assert effective_budget(seen, "s9", 5.0, 90.0, 10.0, 112.0).source == "fallback"
    big = observe(BudgetSeen(), BudgetGrant(1, 1, "c", 0.0, 90.0, {"s0": 900.0}), 1, 0.0)
    assert effective_budget(big, "s0", 60.0, 90.0, 10.0, 1.0).budget_kw == 90.0


def test_the_fast_loop_keeps_within_the_budget(
    make_site: SiteFactory, make_obs: ObsFactory
) -> None:
    site = make_site()  # 50 kW reserve, 100 kW primary per domain, 10 kW banks
    obs = make_obs(site, (250.0, 220.0), soc=(0.0, 0.0))  # far over: everything asks the reserve
    targets = Targets.reactive(site.n_domains, default_soc_target(site))
    whole = safety_loop(site, obs, targets)
    assert float(whole.reserve_kw.sum()) == pytest.approx(site.reserve.capacity_kw)
    budgeted = dataclasses.replace(obs, reserve_budget_kw=20.0)
    assert reserve_capacity_kw(site, budgeted) == 20.0
    dec = safety_loop(site, budgeted, targets)
    assert float(dec.reserve_kw.sum()) == pytest.approx(20.0)
    none_dec, _ = NonePolicy(site).decide(budgeted, None, None)
    assert float(none_dec.reserve_kw.sum()) == pytest.approx(20.0)
    # A budget above the site's reserve is the site's reserve.
    assert reserve_capacity_kw(site, dataclasses.replace(obs, reserve_budget_kw=500.0)) == 50.0


def test_the_planner_plans_with_the_budget_as_the_reserves_capacity(
    make_site: SiteFactory, make_obs: ObsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site()
    policy = PredictivePolicy(site)
    seen: list[float] = []

    def solve(s: SiteParams, inputs: PlanInputs, lead: int) -> Plan | None:
        seen.append(s.reserve.capacity_kw)
        return solve_plan(s, inputs, lead)

    monkeypatch.setattr(predictive_mod, "solve_plan", solve)
    fc = flat_forecast((140.0, 60.0), policy.horizons_s)
    obs = make_obs(site, (140.0, 60.0), soc=(0.1, 0.9))
    for budget, expected in ((None, 50.0), (20.0, 20.0), (80.0, 50.0)):
        state = policy.initial_state(site)
        dec, state = policy.decide(dataclasses.replace(obs, reserve_budget_kw=budget), state, fc)
        assert seen[-1] == expected
        assert state.plan is not None
        assert float(dec.reserve_kw.sum()) <= expected + 1e-6
