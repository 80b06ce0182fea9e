"""Shift orders and deferral levels -> scheduler requests (hand-computed)."""

from __future__ import annotations

import numpy as np

from wattwheel.adapters.scheduler import DeferRequest, ShiftRequest
from wattwheel.adapters.scheduler.plan import plan_requests, shift_requests
from wattwheel.domain.shifts import ShiftBook, pair_levels

DOMAINS = ["row-a", "row-b", "row-c"]


def test_orders_become_requests_named_by_their_pair() -> None:
    book = ShiftBook(3)
    levels = pair_levels(np.array([30.0, 0.0, 0.0]), np.array([0.0, 10.0, 20.0]))
    orders = book.orders_due(1000.0, levels, lead_s=300.0, period_s=60.0)
    requests = shift_requests("dc1", DOMAINS, orders, now_s=1000.0)
    rev = 1_000_000
    assert requests == [
        ShiftRequest(
            "dc1", "row-a", 10_000.0, 1300.0, 60.0, 1000.0, to_domain="row-b",
            request_id="shift:row-a->row-b", revision=rev,
        ),
        ShiftRequest(
            "dc1", "row-a", 20_000.0, 1300.0, 60.0, 1000.0, to_domain="row-c",
            request_id="shift:row-a->row-c", revision=rev,
        ),
    ]  # fmt: skip


def test_shift_without_destination_lets_the_scheduler_choose() -> None:
    orders = ShiftBook(3).orders_due(
        0.0, pair_levels(np.array([0.0, 5.0, 0.0]), np.zeros(3)), lead_s=60.0, period_s=60.0
    )
    requests = shift_requests("dc1", DOMAINS, orders, now_s=0.0)
    assert [(r.domain, r.to_domain, r.power_w, r.request_id) for r in requests] == [
        ("row-b", None, 5_000.0, "shift:row-b->*")
    ]


def test_plan_makes_shifts_and_defers_with_deadlines() -> None:
    requests = plan_requests(
        "dc1",
        DOMAINS,
        shifts=[],
        defer_kw=[0.0, 4.0, 0.0005],  # 0.5 W is below the 1 W floor: dropped
        defer_deadline_s=[3600.0, 1800.0, 3600.0],
        now_s=100.0,
        period_s=60.0,
    )
    assert requests == [DeferRequest("dc1", "row-b", 4_000.0, 100.0, 60.0, 1900.0, 100.0)]
