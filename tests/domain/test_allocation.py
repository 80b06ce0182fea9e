"""Per-server allocation: hand-computed water-filling cases and Hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwheel.domain.allocation import AllocationError, Servers, allocate


def servers(
    demand: list[float],
    *,
    critical: list[bool] | None = None,
    priority: list[int] | None = None,
    min_cap: float | list[float] = 100.0,
    max_cap: float | list[float] = 500.0,
    racks: list[str] | None = None,
) -> Servers:
    n = len(demand)
    return Servers(
        server_ids=tuple(f"s{i}" for i in range(n)),
        rack_ids=tuple(racks or ["r0"] * n),
        demand_w=np.array(demand, dtype=float),
        min_cap_w=np.broadcast_to(np.asarray(min_cap, dtype=float), (n,)).copy(),
        max_cap_w=np.broadcast_to(np.asarray(max_cap, dtype=float), (n,)).copy(),
        priority=np.array(priority or [0] * n, dtype=np.int64),
        critical=np.array(critical or [False] * n, dtype=bool),
    )


def test_budget_covering_demand_spreads_the_rest_as_headroom() -> None:
    # demand 300+200 = 500 W, budget 700 W: both get their demand, then the 200 W left is
    # spread max-min fair up to max 500 W: +100 W each -> 400 W and 300 W.
    alloc = allocate(servers([300.0, 200.0]), 700.0)
    np.testing.assert_allclose(alloc.cap_w, [400.0, 300.0])
    assert alloc.unmet_critical_w == 0.0
    assert alloc.over_budget_w == 0.0


def test_critical_servers_get_their_demand_first() -> None:
    # Budget 600 W; minimum caps take 3 x 100 = 300 W. The critical server (demand 350 W) is
    # raised by 250 W to its demand first (50 W left), then the two others share 50 W equally.
    alloc = allocate(servers([350.0, 400.0, 400.0], critical=[True, False, False]), 600.0)
    np.testing.assert_allclose(alloc.cap_w, [350.0, 125.0, 125.0])
    assert alloc.unmet_critical_w == 0.0
    np.testing.assert_allclose(alloc.unmet_demand_w, [0.0, 275.0, 275.0])


def test_priority_classes_are_served_in_order_then_max_min_fair() -> None:
    # Budget 900 W; minima 4 x 100 = 400 W, 500 W to share. Priority 2 (demands 300, 150) first:
    # +200 and +50 -> 300 and 150 (250 W used, 250 W left). Priority 1 (demands 400, 400):
    # +125 each -> 225 and 225. Nothing left for headroom.
    alloc = allocate(servers([300.0, 150.0, 400.0, 400.0], priority=[2, 2, 1, 1]), 900.0)
    np.testing.assert_allclose(alloc.cap_w, [300.0, 150.0, 225.0, 225.0])


def test_water_filling_stops_small_servers_at_their_demand() -> None:
    # One class, budget 600 W; minima 3 x 100 = 300 W, 300 W to share. Needs above minimum:
    # 20, 200, 300. Level L with min(20,L)+min(200,L)+min(300,L) = 300 -> 20 + 2L = 300, L = 140.
    alloc = allocate(servers([120.0, 300.0, 400.0]), 600.0)
    np.testing.assert_allclose(alloc.cap_w, [120.0, 240.0, 240.0])


def test_minimum_caps_above_budget_are_reported_not_hidden() -> None:
    # Three servers at a 100 W floor cannot fit in 250 W: caps stay at the floor and the
    # allocation says it is 50 W over budget.
    alloc = allocate(servers([300.0, 300.0, 300.0], critical=[True, False, False]), 250.0)
    np.testing.assert_allclose(alloc.cap_w, [100.0, 100.0, 100.0])
    assert alloc.over_budget_w == pytest.approx(50.0)
    assert alloc.unmet_critical_w == pytest.approx(200.0)


def test_rack_budgets_are_the_sum_of_their_servers_caps() -> None:
    alloc = allocate(servers([300.0, 200.0, 250.0], racks=["a", "b", "a"]), 750.0)
    # Demands fit (750 W exactly): caps = demands; rack a = 300 + 250, rack b = 200.
    assert alloc.rack_budget_w == pytest.approx({"a": 550.0, "b": 200.0})


def test_demand_below_minimum_cap_keeps_the_minimum() -> None:
    alloc = allocate(servers([40.0, 300.0], max_cap=[100.0, 500.0]), 400.0)
    # s0 cannot be capped below 100 W nor needs more than its max 100 W; s1 gets the rest.
    np.testing.assert_allclose(alloc.cap_w, [100.0, 300.0])


@pytest.mark.parametrize(
    ("kwargs", "budget", "needle"),
    [
        ({"demand": [float("nan")]}, 100.0, "demand_w"),
        ({"demand": [-1.0]}, 100.0, "demand_w"),
        ({"demand": [10.0], "min_cap": 600.0}, 100.0, "min_cap_w"),
        ({"demand": [10.0]}, -5.0, "budget_w"),
        ({"demand": [10.0]}, float("inf"), "budget_w"),
    ],
)
def test_bad_inputs_name_what_is_wrong(
    kwargs: dict[str, object], budget: float, needle: str
) -> None:
    with pytest.raises(AllocationError, match=needle):
        allocate(servers(**kwargs), budget)  # type: ignore[arg-type]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(AllocationError, match="priority"):
        Servers(
            ("a", "b"),
            ("r", "r"),
            np.ones(2),
            np.zeros(2),
            np.ones(2),
            np.zeros(3, dtype=np.int64),
            np.zeros(2, dtype=bool),
        )


@st.composite
def server_sets(draw: st.DrawFn) -> tuple[Servers, float]:
    n = draw(st.integers(1, 12))
    floats = st.floats(0.0, 1000.0, allow_nan=False)
    lo = np.array(draw(st.lists(st.floats(0.0, 200.0), min_size=n, max_size=n)))
    span = np.array(draw(st.lists(floats, min_size=n, max_size=n)))
    demand = np.array(draw(st.lists(st.floats(0.0, 1500.0), min_size=n, max_size=n)))
    crit = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    prio = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    budget = draw(st.floats(0.0, 15_000.0))
    s = Servers(
        tuple(f"s{i}" for i in range(n)),
        tuple(f"r{i % 3}" for i in range(n)),
        demand,
        lo,
        lo + span,
        prio,
        crit,
    )
    return s, budget


@settings(max_examples=300, deadline=None)
@given(server_sets())
def test_never_over_budget_and_critical_first(case: tuple[Servers, float]) -> None:
    s, budget = case
    alloc = allocate(s, budget)
    tol = 1e-6 * max(budget, 1.0)
    # Caps respect each server's range.
    assert np.all(alloc.cap_w >= s.min_cap_w - 1e-9)
    assert np.all(alloc.cap_w <= s.max_cap_w + 1e-9)
    floor = float(s.min_cap_w.sum())
    if floor <= budget:
        assert float(alloc.cap_w.sum()) <= budget + tol
        assert alloc.over_budget_w == 0.0
    else:
        # Only the physical floor may exceed the budget.
        np.testing.assert_allclose(alloc.cap_w, s.min_cap_w, atol=1e-9)
        assert alloc.over_budget_w == pytest.approx(floor - budget)
    # Critical servers are never below their demand (within their cap range) when the
    # budget can hold every floor plus the critical demand.
    want = np.clip(s.demand_w, s.min_cap_w, s.max_cap_w)
    crit_need = float(np.where(s.critical, want, s.min_cap_w).sum())
    if crit_need <= budget:
        assert np.all(alloc.cap_w[s.critical] >= want[s.critical] - 1e-6)
    # Leftover budget is never wasted while someone is held below its maximum cap.
    if float(s.max_cap_w.sum()) <= budget:
        # (atol: a max cap of 1e-266 W vanishes in the float sum it is compared by)
        np.testing.assert_allclose(alloc.cap_w, s.max_cap_w, atol=1e-9)
    elif floor <= budget:
        assert float(alloc.cap_w.sum()) == pytest.approx(budget, rel=1e-9, abs=1e-6)
    assert sum(alloc.rack_budget_w.values()) == pytest.approx(float(alloc.cap_w.sum()))
    # Priority order: while a server is held below its demand, every server of a lower class
    # sits at its floor.
    rank = np.where(s.critical, 10, s.priority)
    short = alloc.cap_w < want - 1e-6
    for i in np.flatnonzero(short):
        lower = rank < rank[i]
        np.testing.assert_allclose(alloc.cap_w[lower], s.min_cap_w[lower], atol=1e-6)
