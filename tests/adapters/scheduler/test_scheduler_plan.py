"""Per-domain decision levels -> scheduler requests (hand-computed splits)."""

from __future__ import annotations

import pytest

from wattwheel.adapters.scheduler import DeferRequest, ShiftRequest
from wattwheel.adapters.scheduler.plan import plan_requests, shift_requests

DOMAINS = ["row-a", "row-b", "row-c"]


def test_shift_is_split_over_the_domains_taking_load() -> None:
    requests = shift_requests(
        "dc1",
        DOMAINS,
        [30.0, 0.0, 0.0],
        [0.0, 10.0, 20.0],
        now_s=1000.0,
        lead_s=300.0,
        duration_s=60.0,
    )
    assert requests == [
        ShiftRequest("dc1", "row-a", 10_000.0, 1300.0, 60.0, 1000.0, to_domain="row-b"),
        ShiftRequest("dc1", "row-a", 20_000.0, 1300.0, 60.0, 1000.0, to_domain="row-c"),
    ]


def test_shift_without_destination_lets_the_scheduler_choose() -> None:
    requests = shift_requests(
        "dc1", DOMAINS, [0.0, 5.0, 0.0], [0.0, 0.0, 0.0], now_s=0.0, lead_s=60.0, duration_s=60.0
    )
    assert [(r.domain, r.to_domain, r.power_w) for r in requests] == [("row-b", None, 5_000.0)]


def test_plan_makes_shifts_and_defers_with_deadlines() -> None:
    requests = plan_requests(
        "dc1",
        DOMAINS,
        shift_out_kw=[0.0, 0.0, 0.0],
        shift_in_kw=[0.0, 0.0, 0.0],
        defer_kw=[0.0, 4.0, 0.0005],  # 0.5 W is below the 1 W floor: dropped
        defer_deadline_s=[3600.0, 1800.0, 3600.0],
        now_s=100.0,
        shift_lead_s=300.0,
        period_s=60.0,
    )
    assert requests == [DeferRequest("dc1", "row-b", 4_000.0, 100.0, 60.0, 1900.0, 100.0)]


def test_length_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match="shift_in_kw has 2 entries for 3 domains"):
        shift_requests("dc1", DOMAINS, [0.0] * 3, [0.0] * 2, now_s=0, lead_s=0, duration_s=1)
