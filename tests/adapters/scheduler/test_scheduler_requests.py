"""Scheduler request JSON codec and the in-package fake."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from wattwheel.adapters.scheduler import (
    DeferRequest,
    FakeSchedulerHook,
    SchedulerRequestError,
    ShiftRequest,
)
from wattwheel.adapters.scheduler.requests import (
    decode_request,
    decode_webhook_reply,
    encode_request,
    idempotency_key,
)

NEW_YEAR_2026 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

SHIFT = ShiftRequest(
    site="dc1",
    domain="row-a",
    power_w=12_000.0,
    start_at_s=NEW_YEAR_2026 + 300,
    duration_s=600.0,
    issued_at_s=NEW_YEAR_2026,
    to_domain="row-b",
    reason="p95 forecast exceeds primary capacity at 00:07",
    request_id="r-1",
)
DEFER = DeferRequest(
    site="dc1",
    domain="row-a",
    power_w=8_000.0,
    start_at_s=NEW_YEAR_2026,
    duration_s=900.0,
    deadline_s=NEW_YEAR_2026 + 3600,
    issued_at_s=NEW_YEAR_2026,
)


def test_shift_body_is_the_documented_json() -> None:
    assert json.loads(encode_request(SHIFT)) == {
        "request_id": "r-1",
        "schema": "wattwheel.scheduler/v1",
        "kind": "shift",
        "site": "dc1",
        "domain": "row-a",
        "to_domain": "row-b",
        "power_w": 12000.0,
        "start_at": "2026-01-01T00:05:00Z",
        "duration_s": 600.0,
        "issued_at": "2026-01-01T00:00:00Z",
        "reason": "p95 forecast exceeds primary capacity at 00:07",
        "revision": round(NEW_YEAR_2026 * 1000),
    }


def test_defer_body_round_trips_with_a_content_key() -> None:
    body = json.loads(encode_request(DEFER))
    assert body["kind"] == "defer" and body["deadline"] == "2026-01-01T01:00:00Z"
    assert body["request_id"].startswith("ww-") and len(body["request_id"]) == 35
    decoded = decode_request(encode_request(DEFER))
    assert decoded == replace(DEFER, request_id=body["request_id"])
    assert decode_request(encode_request(SHIFT)) == replace(
        SHIFT, revision=round(NEW_YEAR_2026 * 1000)
    )


def test_shift_ids_name_the_pair_and_keys_the_revision() -> None:
    # Every request of a (source, target) pair has the same id (a new one replaces the last);
    # the key a scheduler drops duplicates by adds the revision.
    bare = replace(SHIFT, request_id=None)
    later = replace(bare, issued_at_s=NEW_YEAR_2026 + 60, power_w=0.0)
    assert json.loads(encode_request(bare))["request_id"] == "shift:row-a->row-b"
    assert json.loads(encode_request(later))["request_id"] == "shift:row-a->row-b"
    assert idempotency_key(bare) == f"shift:row-a->row-b@{round(NEW_YEAR_2026 * 1000)}"
    assert idempotency_key(later) != idempotency_key(bare)
    anywhere = replace(bare, to_domain=None)
    assert json.loads(encode_request(anywhere))["request_id"] == "shift:row-a->*"
    # 0 W is a valid shift (it ends the pair's shift); a revision must be an integer.
    assert decode_request(encode_request(later)).power_w == 0.0
    with pytest.raises(SchedulerRequestError, match="revision"):
        body = json.loads(encode_request(bare))
        decode_request(json.dumps({**body, "revision": "7"}).encode())


def test_content_key_is_stable_and_content_sensitive() -> None:
    assert idempotency_key(DEFER) == idempotency_key(replace(DEFER))
    assert idempotency_key(DEFER) != idempotency_key(replace(DEFER, power_w=8_001.0))


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (replace(DEFER, power_w=-1.0), "power_w"),
        (replace(DEFER, power_w=math.nan), "power_w"),
        (replace(DEFER, deadline_s=NEW_YEAR_2026 + 60), "deadline_s"),
        (replace(SHIFT, domain=""), "domain"),
    ],
)
def test_invalid_requests_name_the_field(bad: ShiftRequest | DeferRequest, field: str) -> None:
    with pytest.raises(SchedulerRequestError, match=field):
        encode_request(bad)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"not json", "not JSON"),
        (b'{"schema": "other"}', "schema"),
        (encode_request(SHIFT).replace(b'"shift"', b'"move"'), "kind"),
        (encode_request(SHIFT).replace(b"2026-01-01T00:05:00Z", b"2026-01-01T00:05:00"), "zone"),
        (encode_request(SHIFT).replace(b"12000.0", b'"12 kW"'), "power_w"),
    ],
)
def test_malformed_bodies_name_the_problem(payload: bytes, field: str) -> None:
    with pytest.raises(SchedulerRequestError, match=field):
        decode_request(payload)


@pytest.mark.parametrize(
    ("status", "payload", "delivered", "accepted"),
    [
        (200, b"", True, True),
        (202, b'{"accepted": false, "detail": "no headroom"}', True, False),
        (409, b"", True, True),
        (400, b'{"detail": "bad domain"}', False, False),
    ],
)
def test_webhook_replies(status: int, payload: bytes, delivered: bool, accepted: bool) -> None:
    ack = decode_webhook_reply("r-1", status, payload)
    assert (ack.delivered, ack.accepted) == (delivered, accepted)


async def test_fake_hook_records_and_can_be_down() -> None:
    hook = FakeSchedulerHook()
    assert (await hook.request(SHIFT)).accepted
    hook.down = True
    ack = await hook.request(DEFER)
    assert not ack.delivered and ack.accepted is None
    assert hook.requests == [SHIFT]
