"""Leader election and fencing on a fake clock: hand-computed deadlines, an in-memory lease
store, a partitioned leader that demotes itself before its lease can expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from wattwheel.runtime.clock import FakeClock
from wattwheel.runtime.leader import (
    COORDINATOR,
    Elector,
    FakeElector,
    KeyOwner,
    LeaseStore,
    LeaseTiming,
    MemoryLeaseStore,
    commandable_domains,
    coordinator_key,
    leader_key,
)

# --- pure timing ---------------------------------------------------------------------------


def test_default_timing_is_thirds_of_the_ttl() -> None:
    timing = LeaseTiming(ttl_s=3)
    assert timing.margin == 1.0
    assert timing.keepalive_period == 1.0
    # renewed by a request sent at t=10: etcd cannot expire it before 13, we stop at 12
    assert timing.earliest_expiry_s(10.0) == 13.0
    assert timing.command_deadline_s(10.0) == 12.0
    assert timing.may_command(10.0, 11.999)
    assert not timing.may_command(10.0, 12.0)
    assert not timing.may_command(None, 10.0)


def test_explicit_margin_moves_the_deadline() -> None:
    timing = LeaseTiming(ttl_s=6, margin_s=0.5, keepalive_every_s=1.5)
    assert timing.command_deadline_s(100.0) == 105.5
    assert timing.may_command(100.0, 105.49)
    assert not timing.may_command(100.0, 105.5)
    # failover gap: 6 s TTL + 0.5 s expiry lag + 1 s campaign period
    assert timing.max_command_gap_s(campaign_every_s=1.0) == 7.5


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": True}, "ttl_s"),
        ({"ttl_s": 2.5}, "ttl_s"),
        ({"ttl_s": 3, "margin_s": 3.0}, "margin_s"),
        ({"ttl_s": 3, "margin_s": 0.0}, "margin_s"),
        ({"ttl_s": 3, "margin_s": 1.0, "keepalive_every_s": 2.0}, "keepalive_every_s"),
    ],
)
def test_bad_timing_is_refused_by_name(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        LeaseTiming(**kwargs)  # type: ignore[arg-type]


def test_keys() -> None:
    assert leader_key("dc1", "row-a") == "/wattwheel/dc1/leader/row-a"
    assert coordinator_key("dc1") == "/wattwheel/dc1/coordinator"
    with pytest.raises(ValueError, match="shard name 'a/b'"):
        leader_key("dc1", "a/b")
    with pytest.raises(ValueError, match="site name ''"):
        coordinator_key("")


def test_elector_refuses_reserved_or_duplicate_shards() -> None:
    store = MemoryLeaseStore(FakeClock(0.0))
    with pytest.raises(ValueError, match="reserved"):
        Elector(store, FakeClock(0.0), site="s", shards=[COORDINATOR], instance_id="a")
    with pytest.raises(ValueError, match="twice"):
        Elector(store, FakeClock(0.0), site="s", shards=["a", "a"], instance_id="a")
    with pytest.raises(ValueError, match="instance_id"):
        Elector(store, FakeClock(0.0), site="s", shards=["a"], instance_id=" ")
    with pytest.raises(ValueError, match="campaign_every_s"):
        Elector(store, FakeClock(0.0), site="s", shards=["a"], instance_id="a", campaign_every_s=0)
    with pytest.raises(ValueError, match="at least one"):
        Elector(store, FakeClock(0.0), site="s", shards=[], instance_id="a", coordinator=False)


# --- elector on a fake clock ----------------------------------------------------------------

STEP_S = 1 / 64  # exact in binary, so hand-computed deadlines are hit exactly


class Cuttable:
    """One instance's view of a shared store; ``cut`` plays a network partition."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.cut = False

    async def grant(self, ttl_s: int) -> int | None:
        return None if self.cut else await self.store.grant(ttl_s)

    async def keep_alive(self, lease_id: int) -> int | None:
        return None if self.cut else await self.store.keep_alive(lease_id)

    async def revoke(self, lease_id: int) -> bool:
        return False if self.cut else await self.store.revoke(lease_id)

    async def create_if_absent(self, key: str, holder: str, lease_id: int) -> KeyOwner | None:
        return None if self.cut else await self.store.create_if_absent(key, holder, lease_id)

    async def delete_if_owned(self, key: str, lease_id: int) -> bool:
        return False if self.cut else await self.store.delete_if_owned(key, lease_id)


class Recorder:
    """Promotions and demotions with the fake clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[float, str, str]] = []

    def promote(self, role: str, token: int) -> None:
        self.events.append((self.clock.monotonic_s(), "promote", role))

    def demote(self, role: str, reason: str) -> None:
        self.events.append((self.clock.monotonic_s(), "demote", role))

    def times(self, kind: str, role: str) -> list[float]:
        return [t for t, k, r in self.events if k == kind and r == role]


async def advance_to(clock: FakeClock, t_s: float) -> None:
    """Let every task run at the current time, then step time up to ``t_s``."""
    await _settle()
    while clock.monotonic_s() < t_s:
        clock.advance(STEP_S)
        await _settle()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    yield FakeClock(start_s=0.0)


def _elector(
    store: LeaseStore, clock: FakeClock, name: str, rec: Recorder, shards: tuple[str, ...] = ("a",)
) -> Elector:
    return Elector(
        store,
        clock,
        site="s",
        shards=shards,
        instance_id=name,
        timing=LeaseTiming(ttl_s=3),
        campaign_every_s=0.5,
        on_promote=rec.promote,
        on_demote=rec.demote,
    )


async def test_first_instance_leads_every_role_the_second_none(clock: FakeClock) -> None:
    store = MemoryLeaseStore(clock)
    rec_a, rec_b = Recorder(clock), Recorder(clock)
    a = _elector(store, clock, "A", rec_a, ("x", "y"))
    b = _elector(store, clock, "B", rec_b, ("x", "y"))
    task_a = asyncio.create_task(a.run())
    await advance_to(clock, 0.25)
    task_b = asyncio.create_task(b.run())
    await advance_to(clock, 5.0)
    for role in ("x", "y", COORDINATOR):
        assert a.is_leader(role) and not b.is_leader(role)
        assert b.holder(role) == "A"
        assert a.fencing_token(role) is not None
    assert len({a.fencing_token(r) for r in a.roles}) == 3  # one create revision per key
    assert rec_b.events == []
    # A renews every second from t=0; at t=5 the last renewal was sent at 5 -> deadline 7
    assert a.command_deadline_s("x") == 7.0
    [x, _, coord] = a.status(5.5)
    assert (x.role, x.key, x.leading, x.holder) == ("x", "/wattwheel/s/leader/x", True, "A")
    assert x.command_left_s == 1.5 and x.fencing_token == a.fencing_token("x")
    assert coord.key == "/wattwheel/s/coordinator"
    [bx, _, _] = b.status(5.5)
    assert (bx.leading, bx.holder, bx.fencing_token, bx.command_left_s) == (False, "A", None, None)
    task_a.cancel()
    task_b.cancel()
    await asyncio.gather(task_a, task_b, return_exceptions=True)


async def test_partitioned_leader_demotes_before_expiry_then_other_leads(clock: FakeClock) -> None:
    store = MemoryLeaseStore(clock)
    view_a = Cuttable(store)
    rec_a, rec_b = Recorder(clock), Recorder(clock)
    a = _elector(view_a, clock, "A", rec_a)
    b = _elector(store, clock, "B", rec_b)
    tasks = [asyncio.create_task(a.run())]
    await advance_to(clock, 0.25)
    tasks.append(asyncio.create_task(b.run()))
    await advance_to(clock, 5.5)
    assert a.is_leader("a")
    view_a.cut = True  # A's last renewal went out at t=5
    expired_at = None
    while clock.monotonic_s() < 12.0:
        await advance_to(clock, clock.monotonic_s() + STEP_S)
        if expired_at is None and store.holder(leader_key("s", "a")) is None:
            expired_at = clock.monotonic_s()
    # hand-computed: deadline 5 + 3 - 1 = 7; the in-memory store expires at exactly 5 + 3 = 8
    assert rec_a.times("demote", "a") == [7.0]
    assert expired_at == 8.0
    # B campaigns every 0.5 s from t=0.25: the first campaign at or after 8 is at 8.25
    assert rec_b.times("promote", "a") == [8.25]
    assert not a.may_command("a", 7.0)
    assert b.may_command("a", clock.monotonic_s())
    # A comes back: it learns its lease is gone, takes a new one, and stays a follower
    view_a.cut = False
    await advance_to(clock, 15.0)
    assert not a.is_leader("a") and b.is_leader("a")
    assert a.holder("a") == "B"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_short_outage_demotes_then_resumes_with_same_token(clock: FakeClock) -> None:
    store = MemoryLeaseStore(clock)
    view = Cuttable(store)
    rec = Recorder(clock)
    timing = LeaseTiming(ttl_s=3, keepalive_every_s=0.75)  # renewals at 0, 0.75, 1.5, 2.25, ...
    a = Elector(
        view,
        clock,
        site="s",
        shards=["a"],
        instance_id="A",
        timing=timing,
        on_promote=rec.promote,
        on_demote=rec.demote,
    )
    task = asyncio.create_task(a.run())
    await advance_to(clock, 2.5)
    token = a.fencing_token("a")
    view.cut = True  # last renewal sent at 2.25 -> deadline 4.25, the store keeps it until 5.25
    await advance_to(clock, 4.375)
    assert rec.times("demote", "a") == [4.25]
    assert not a.is_leader("a")
    view.cut = False  # the renewal at 4.5 reaches the store before it expires the lease
    await advance_to(clock, 6.0)
    assert a.is_leader("a")
    assert a.fencing_token("a") == token  # the key was never deleted: nobody led in between
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_cancel_resigns_and_hands_over_without_waiting_for_the_ttl(
    clock: FakeClock,
) -> None:
    store = MemoryLeaseStore(clock)
    rec_a, rec_b = Recorder(clock), Recorder(clock)
    a = _elector(store, clock, "A", rec_a)
    b = _elector(store, clock, "B", rec_b)
    task_a = asyncio.create_task(a.run())
    await advance_to(clock, 0.25)
    task_b = asyncio.create_task(b.run())
    await advance_to(clock, 3.0)
    task_a.cancel()
    await asyncio.gather(task_a, return_exceptions=True)
    assert rec_a.times("demote", "a") == [3.0]
    await advance_to(clock, 4.0)
    # revoked at 3: B's next campaign (3.25) wins, long before the TTL would have run out
    assert rec_b.times("promote", "a") == [3.25]
    task_b.cancel()
    await asyncio.gather(task_b, return_exceptions=True)


async def test_resign_demotes_at_once_hands_over_after_the_margin_and_holds_off(
    clock: FakeClock,
) -> None:
    store = MemoryLeaseStore(clock)
    rec_a, rec_b = Recorder(clock), Recorder(clock)
    a = _elector(store, clock, "A", rec_a)
    b = _elector(store, clock, "B", rec_b)
    tasks = [asyncio.create_task(a.run())]
    await advance_to(clock, 0.25)
    tasks.append(asyncio.create_task(b.run()))
    await advance_to(clock, 3.0)
    assert a.is_leader("a")
    resign = asyncio.create_task(a.resign("a", hold_off_s=10.0, reason="devices do not answer"))
    await advance_to(clock, 3.0)
    assert rec_a.times("demote", "a") == [3.0] and not a.may_command("a", 3.0)
    assert store.holder(leader_key("s", "a")) == "A", "kept for the margin: writes in flight"
    await advance_to(clock, 4.5)
    assert resign.done() and resign.result() is True
    # deleted at 3 + margin 1 = 4; B campaigns every 0.5 s from 0.25: leads at 4.25
    assert rec_b.times("promote", "a") == [4.25]
    assert a.is_leader(COORDINATOR), "only the shard was resigned"
    [st_a, _] = a.status(4.5)
    assert (st_a.resignations, st_a.holding_off_s) == (1, 8.5)
    # B goes at 6 (revokes): A does not campaign for the shard before its hold-off ends at 13
    tasks[1].cancel()
    await asyncio.gather(tasks[1], return_exceptions=True)
    await advance_to(clock, 14.0)
    again = [t for t in rec_a.times("promote", "a") if t > 3.0]
    assert len(again) == 1 and 13.0 <= again[0] <= 13.5, rec_a.events
    assert not await b.resign("a", 1.0, "not leading"), "B does not lead: nothing to resign"
    # A campaign answered after the resignation (it was in flight) does not lead again.
    a._hold_off_until["a"] = clock.monotonic_s() + 5.0
    a._promote("a", 999)
    assert a.fencing_token("a") != 999
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)


async def test_a_failing_callback_does_not_stop_the_elector(clock: FakeClock) -> None:
    def boom(role: str, token: int) -> None:
        raise RuntimeError("callback bug")

    store = MemoryLeaseStore(clock)
    a = Elector(store, clock, site="s", shards=["a"], instance_id="A", on_promote=boom)
    task = asyncio.create_task(a.run())
    await advance_to(clock, 1.0)
    assert a.is_leader("a") and a.is_leader(COORDINATOR)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_fake_elector_always_leads_and_plays_failover() -> None:
    seen: list[tuple[str, str]] = []
    fake = FakeElector(
        ["row-a", COORDINATOR],
        on_promote=lambda r, t: seen.append(("promote", r)),
        on_demote=lambda r, why: seen.append(("demote", r)),
    )
    assert fake.is_leader("row-a") and fake.may_command(COORDINATOR, 0.0)
    assert fake.fencing_token("row-a") == 1
    assert fake.command_deadline_s("row-a") == float("inf")
    fake.demote("row-a")
    assert not fake.may_command("row-a", 0.0) and fake.command_deadline_s("row-a") is None
    fake.promote("row-a")
    assert fake.fencing_token("row-a") == 3  # a new term, a new token
    task = asyncio.create_task(fake.run())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not fake.is_leader("row-a")
    assert sorted(seen[-2:]) == [("demote", COORDINATOR), ("demote", "row-a")]


def test_commandable_domains_follow_the_led_shards() -> None:
    shard_of = {"row-a1": "a", "row-a2": "a", "row-b1": "b"}
    fake = FakeElector(["a"])
    assert commandable_domains(fake, shard_of, 0.0) == {"row-a1", "row-a2"}
    fake.promote("b")
    assert commandable_domains(fake, shard_of, 0.0) == set(shard_of)
    fake.demote("a")
    assert commandable_domains(fake, shard_of, 0.0) == {"row-b1"}
