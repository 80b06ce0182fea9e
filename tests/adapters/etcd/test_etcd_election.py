"""Redundant controllers electing leaders on a real etcd, on the real clock: one leader per
role, a partitioned leader stops commanding before its successor can start, and an etcd outage
makes the leader fail safe and take over again when etcd is back.

Timing: TTL 2 s, margin and keep-alive period 2/3 s, campaigns every 0.25 s."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from etcd_server import EtcdServer

from wattwheel.adapters.etcd.client import EtcdClient, EtcdLeaseStore
from wattwheel.runtime.clock import SystemClock
from wattwheel.runtime.leader import COORDINATOR, Elector, LeaseTiming, leader_key

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

TIMING = LeaseTiming(ttl_s=2)
CLOCK = SystemClock()
SHARD = "row-a"


class CuttableTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, until ``cut``: then every request fails like a partition."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("partitioned by the test", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Controller:
    """One controller instance: its elector, its link to etcd, and when it led what."""

    name: str
    elector: Elector
    link: CuttableTransport
    client: EtcdClient
    promoted: dict[str, list[float]] = field(default_factory=dict)
    demoted: dict[str, list[float]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def intervals(self, role: str, end_s: float) -> list[tuple[float, float]]:
        """When this instance believed it could command ``role`` (open ones end at end_s)."""
        starts, ends = self.promoted.get(role, []), self.demoted.get(role, [])
        return [(s, ends[i] if i < len(ends) else end_s) for i, s in enumerate(starts)]


@pytest.fixture
async def make_controller(etcd: EtcdServer) -> AsyncIterator[Callable[[str], Controller]]:
    made: list[Controller] = []

    def make(name: str) -> Controller:
        link = CuttableTransport()
        client = EtcdClient(etcd.url, timeout_s=0.4, transport=link)
        ctl = Controller(name, None, link, client)  # type: ignore[arg-type]
        ctl.elector = Elector(
            EtcdLeaseStore(client),
            CLOCK,
            site="dc1",
            shards=[SHARD],
            instance_id=name,
            timing=TIMING,
            campaign_every_s=0.25,
            on_promote=lambda role, token: ctl.promoted.setdefault(role, []).append(
                CLOCK.monotonic_s()
            ),
            on_demote=lambda role, why: ctl.demoted.setdefault(role, []).append(
                CLOCK.monotonic_s()
            ),
        )
        ctl.task = asyncio.create_task(ctl.elector.run())
        made.append(ctl)
        return ctl

    yield make
    for ctl in made:
        if ctl.task is not None:
            ctl.task.cancel()
    await asyncio.gather(*(c.task for c in made if c.task), return_exceptions=True)
    for ctl in made:
        await ctl.client.aclose()


async def wait_until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Poll every 10 ms; the monotonic time it became true."""
    deadline = CLOCK.monotonic_s() + timeout_s
    while not predicate():
        if CLOCK.monotonic_s() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(0.01)
    return CLOCK.monotonic_s()


def assert_disjoint(*interval_lists: list[tuple[float, float]]) -> None:
    spans = sorted(span for spans in interval_lists for span in spans)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start, f"two leaders at once: {spans}"


async def test_exactly_one_leader_per_role(
    make_controller: Callable[[str], Controller],
) -> None:
    a, b = make_controller("A"), make_controller("B")
    await wait_until(lambda: any(c.elector.is_leader(SHARD) for c in (a, b)), 5.0)
    await wait_until(lambda: any(c.elector.is_leader(COORDINATOR) for c in (a, b)), 5.0)
    await asyncio.sleep(1.5)  # several renewals and campaigns later, still one each
    for role in (SHARD, COORDINATOR):
        leaders = [c for c in (a, b) if c.elector.is_leader(role)]
        assert len(leaders) == 1, role
        [other] = [c for c in (a, b) if c is not leaders[0]]
        assert other.elector.holder(role) == leaders[0].name
        assert other.promoted.get(role) is None
        assert leaders[0].elector.fencing_token(role) is not None


async def test_partitioned_leader_stops_before_the_successor_starts(
    make_controller: Callable[[str], Controller], etcd: EtcdServer
) -> None:
    a = make_controller("A")
    await wait_until(lambda: a.elector.is_leader(SHARD), 5.0)
    b = make_controller("B")
    await asyncio.sleep(0.5)
    assert not b.elector.is_leader(SHARD)
    both_seen: list[float] = []

    async def sample() -> None:  # what each side would answer right before a command write
        while True:
            now_s = CLOCK.monotonic_s()
            if a.elector.may_command(SHARD, now_s) and b.elector.may_command(SHARD, now_s):
                both_seen.append(now_s)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    async with EtcdClient(etcd.url) as observer:
        [held_by_a] = await observer.range(leader_key("dc1", SHARD))
        a.link.cut = True
        cut_s = CLOCK.monotonic_s()
        demoted_s = await wait_until(lambda: bool(a.demoted.get(SHARD)), TIMING.ttl_s)
        # A stopped while etcd still held its key: nobody else could have been elected yet
        [still] = await observer.range(leader_key("dc1", SHARD))
        assert still.lease_id == held_by_a.lease_id
        promoted_s = await wait_until(lambda: bool(b.promoted.get(SHARD)), 3.0)
        # B's key is a new one, created after A's lease expired (B may take the key within
        # milliseconds of the expiry, so the gap itself is not sampled: the revisions order it)
        [held_by_b] = await observer.range(leader_key("dc1", SHARD))
    sampler.cancel()
    assert held_by_b.value != held_by_a.value and held_by_b.lease_id != held_by_a.lease_id
    assert held_by_b.create_revision > held_by_a.mod_revision
    # A stops within TTL - margin of its last renewal (<= cut time), before B starts
    assert demoted_s - cut_s <= TIMING.ttl_s - TIMING.margin + 0.05
    assert demoted_s < promoted_s
    end_s = CLOCK.monotonic_s()
    assert_disjoint(a.intervals(SHARD, end_s), b.intervals(SHARD, end_s))
    assert both_seen == []
    assert b.elector.fencing_token(SHARD) != a.elector.fencing_token(SHARD)
    # A heals: it finds its lease gone and follows B
    a.link.cut = False
    await wait_until(lambda: a.elector.holder(SHARD) == "B", 2.0)
    assert not a.elector.is_leader(SHARD) and b.elector.is_leader(SHARD)


async def test_etcd_outage_fails_safe_then_leads_again(
    make_controller: Callable[[str], Controller], etcd: EtcdServer
) -> None:
    a, b = make_controller("A"), make_controller("B")
    await wait_until(lambda: any(c.elector.is_leader(SHARD) for c in (a, b)), 5.0)
    etcd.stop()
    stopped_s = CLOCK.monotonic_s()
    # every leader of every role stops commanding within TTL - margin (no renewal got through)
    await wait_until(
        lambda: not any(c.elector.is_leader(r) for c in (a, b) for r in (SHARD, COORDINATOR)),
        TIMING.ttl_s - TIMING.margin + 0.1,
    )

    # ``is_leader`` (what gates every command) turned false by then; the demotion callback is
    # the watchdog's job and may run a little later on a loaded machine, but before the lease
    # can expire in etcd.
    def demotions() -> list[float]:
        return [t for c in (a, b) for ts in c.demoted.values() for t in ts]

    await wait_until(lambda: bool(demotions()), TIMING.margin)
    assert all(t - stopped_s < TIMING.ttl_s for t in demotions())
    await asyncio.sleep(0.5)
    etcd.start()
    await wait_until(lambda: any(c.elector.is_leader(SHARD) for c in (a, b)), 6.0)
    await wait_until(lambda: any(c.elector.is_leader(COORDINATOR) for c in (a, b)), 6.0)
    assert sum(c.elector.is_leader(SHARD) for c in (a, b)) == 1
    end_s = CLOCK.monotonic_s()
    assert_disjoint(a.intervals(SHARD, end_s), b.intervals(SHARD, end_s))


async def test_stopped_leader_hands_over_without_waiting_for_the_ttl(
    make_controller: Callable[[str], Controller],
) -> None:
    a = make_controller("A")
    await wait_until(lambda: a.elector.is_leader(SHARD), 5.0)
    b = make_controller("B")
    await asyncio.sleep(0.3)
    assert a.task is not None
    a.task.cancel()  # a clean shutdown revokes the lease
    await asyncio.gather(a.task, return_exceptions=True)
    stopped_s = CLOCK.monotonic_s()
    promoted_s = await wait_until(lambda: b.elector.is_leader(SHARD), TIMING.ttl_s)
    assert promoted_s - stopped_s < TIMING.ttl_s / 2
    assert a.demoted[SHARD][-1] <= stopped_s < b.promoted[SHARD][0]
