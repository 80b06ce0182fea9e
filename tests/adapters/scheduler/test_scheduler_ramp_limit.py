"""The ramp-up limit at job start: a scheduler request the HPMC sends (issue 10)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from wattwheel.adapters.scheduler import FakeSchedulerHook, RampLimitRequest, SchedulerRequestError
from wattwheel.adapters.scheduler.plan import ramp_limit_requests
from wattwheel.adapters.scheduler.requests import decode_request, encode_request, idempotency_key

NEW_YEAR_2026 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

RAMP = RampLimitRequest(
    site="dc1",
    domain="gpu01",
    ramp_w_per_s=1000.0,
    start_at_s=NEW_YEAR_2026,
    duration_s=60.0,
    issued_at_s=NEW_YEAR_2026,
    reason="grid ramp limit 1 kW/s",
)


def test_ramp_limit_body_is_the_documented_json() -> None:
    assert json.loads(encode_request(RAMP)) == {
        "request_id": "ramp_limit:gpu01",
        "schema": "wattwheel.scheduler/v1",
        "kind": "ramp_limit",
        "site": "dc1",
        "domain": "gpu01",
        "ramp_w_per_s": 1000.0,
        "start_at": "2026-01-01T00:00:00Z",
        "duration_s": 60.0,
        "issued_at": "2026-01-01T00:00:00Z",
        "reason": "grid ramp limit 1 kW/s",
        "revision": 1_767_225_600_000,
    }


def test_ramp_limit_round_trips_and_its_key_carries_the_revision() -> None:
    back = decode_request(encode_request(RAMP))
    assert isinstance(back, RampLimitRequest)
    assert back.ramp_w_per_s == RAMP.ramp_w_per_s and back.domain == RAMP.domain
    assert back.request_id == "ramp_limit:gpu01"
    later = replace(RAMP, issued_at_s=NEW_YEAR_2026 + 60)
    assert idempotency_key(RAMP) != idempotency_key(later)
    assert idempotency_key(RAMP).startswith("ramp_limit:gpu01@")


@pytest.mark.parametrize(
    ("field", "value"),
    [("ramp_w_per_s", 0.0), ("ramp_w_per_s", float("nan")), ("duration_s", 0.0), ("domain", "")],
)
async def test_invalid_ramp_limit_names_the_field(field: str, value: object) -> None:
    bad = replace(RAMP, **{field: value})
    with pytest.raises(SchedulerRequestError, match=field):
        encode_request(bad)
    with pytest.raises(SchedulerRequestError, match=field):
        await FakeSchedulerHook().request(bad)


def test_decoding_a_ramp_limit_without_its_rate_names_it() -> None:
    body = json.loads(encode_request(RAMP))
    del body["ramp_w_per_s"]
    with pytest.raises(SchedulerRequestError, match="ramp_w_per_s"):
        decode_request(json.dumps(body).encode())


def test_plan_sends_one_limit_per_domain_that_has_one() -> None:
    out = ramp_limit_requests(
        "dc1", ["a", "b", "c"], [1.0, None, 2.5], now_s=NEW_YEAR_2026, duration_s=60.0
    )
    assert [(r.domain, r.ramp_w_per_s) for r in out] == [("a", 1000.0), ("c", 2500.0)]
    assert all(r.duration_s == 60.0 and r.start_at_s == NEW_YEAR_2026 for r in out)
