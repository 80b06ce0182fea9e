"""The shard coordination store against a real etcd: summaries and the grant bound to each
process's lease (gone when the process stops renewing it), revisions that move with each put,
a lost lease replaced at the next publish, and no answer reported as None / False."""

from __future__ import annotations

import asyncio

import pytest
from etcd_server import EtcdServer

from services import free_port
from wattwheel.adapters.etcd.client import EtcdClient
from wattwheel.adapters.etcd.coordination import EtcdCoordinationStore

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]


async def test_summaries_and_grant_live_with_their_processes_lease(etcd: EtcdServer) -> None:
    async with EtcdClient(etcd.url) as a_client, EtcdClient(etcd.url) as b_client:
        a, b = EtcdCoordinationStore(a_client, "dc1", 2), EtcdCoordinationStore(b_client, "dc1", 2)
        assert await a.summaries() == {} and await a.grant() is None
        assert await a.publish_summary("s0", '{"x": 1}')
        assert await b.publish_summary("s1", '{"x": 2}')
        assert await b.publish_grant('{"g": 1}')
        got = await a.summaries()
        assert got is not None and {k: v[0] for k, v in got.items()} == {
            "s0": '{"x": 1}',
            "s1": '{"x": 2}',
        }
        first = await a.grant()
        assert first is not None and first[0] == '{"g": 1}'
        assert await b.publish_grant('{"g": 2}')
        second = await a.grant()
        assert second is not None and second[1] > first[1]  # a new revision per put
        # The election prefix is not touched (the electors' watches stay quiet).
        assert await a_client.range("/wattwheel/dc1/", prefix=True) == []
        # b stops renewing (a dead process): its summary and grant go with its lease.
        await asyncio.sleep(3.5)
        assert await a.publish_summary("s0", '{"x": 3}')  # a renews on publishing
        got = await a.summaries()
        assert got is not None and set(got) == {"s0"}
        assert await a.grant() is None
        # b comes back: its lease is gone, it takes a new one and publishes again.
        assert await b.publish_summary("s1", '{"x": 4}')
        got = await a.summaries()
        assert got is not None and set(got) == {"s0", "s1"}
        await b.close()  # revoked: its keys go at once
        got = await a.summaries()
        assert got is not None and set(got) == {"s0"}


async def test_no_answer_is_none_or_false() -> None:
    async with EtcdClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.3) as client:
        store = EtcdCoordinationStore(client, "dc1", 2)
        assert await store.summaries() is None
        assert await store.grant() is None
        assert not await store.publish_summary("s0", "{}")
        assert not await store.publish_grant("{}")
