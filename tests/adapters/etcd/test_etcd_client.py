"""The etcd client and lease store against a real etcd started on free ports."""

from __future__ import annotations

import asyncio
import logging

import pytest
from etcd_server import EtcdServer

from services import free_port
from wattwheel.adapters.etcd.client import EtcdClient, EtcdLeaseStore, EtcdUnavailable
from wattwheel.adapters.etcd.codec import EtcdError

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

KEY = "/wattwheel/dc1/leader/row-a"


async def test_lease_key_lifecycle(etcd: EtcdServer) -> None:
    async with EtcdClient(etcd.url) as client:
        lease = await client.grant(2)
        assert await client.keep_alive(lease) == 2
        first = await client.create_if_absent(KEY, "ctl-1", lease)
        assert first.created and first.holder == "ctl-1" and first.lease_id == lease
        other_lease = await client.grant(2)
        second = await client.create_if_absent(KEY, "ctl-2", other_lease)
        # the second campaign sees the first holder and its fencing token
        assert not second.created
        assert (second.holder, second.lease_id) == ("ctl-1", lease)
        assert second.create_revision == first.create_revision
        [kv] = await client.range(KEY)
        assert (kv.value, kv.lease_id, kv.create_revision) == (
            "ctl-1",
            lease,
            first.create_revision,
        )
        assert len(await client.range("/wattwheel/dc1/", prefix=True)) == 1
        await client.revoke(lease)  # drops the key with it
        assert await client.range(KEY) == []
        assert await client.keep_alive(lease) == 0
        await client.revoke(lease)  # already gone: fine
        third = await client.create_if_absent(KEY, "ctl-2", other_lease)
        assert third.created and third.create_revision > first.create_revision
        assert await client.delete_range(KEY) == 1


async def test_lease_expires_on_its_own(etcd: EtcdServer) -> None:
    async with EtcdClient(etcd.url) as client:
        lease = await client.grant(1)
        await client.create_if_absent(KEY, "ctl-1", lease)
        await asyncio.sleep(2.0)  # TTL 1 s plus etcd's expiry-check lag
        assert await client.range(KEY) == []
        with pytest.raises(EtcdError, match="lease not found"):
            await client.create_if_absent(KEY, "ctl-1", lease)


async def test_unreachable_member_raises_and_rotates(etcd: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead, etcd.url], timeout_s=0.5) as client:
        with pytest.raises(EtcdUnavailable, match=dead):
            await client.grant(2)
        assert client.endpoint == etcd.url
        assert await client.grant(2) > 0


async def test_lease_store_returns_none_and_logs_once(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = EtcdLeaseStore(EtcdClient(etcd.url, timeout_s=0.5))
    lease = await store.grant(2)
    assert lease is not None
    etcd.stop()
    caplog.set_level(logging.DEBUG, logger="wattwheel.adapters.etcd")
    assert await store.keep_alive(lease) is None
    assert await store.create_if_absent(KEY, "ctl-1", lease) is None
    assert await store.revoke(lease) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keep-alive" in warnings[0].getMessage()
    etcd.start()
    assert await store.keep_alive(lease) == 2  # etcd restores (and extends) leases on restart
    assert "answers again" in caplog.records[-1].getMessage()
    await store.client.aclose()


def test_bad_endpoints_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EtcdClient([])
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1:2379'"):
        EtcdClient("127.0.0.1:2379")


async def test_watch_reports_expiry_and_resignation_and_delete_is_owner_only(
    etcd: EtcdServer,
) -> None:
    async with EtcdClient(etcd.url) as client, EtcdClient(etcd.url) as watching:
        store = EtcdLeaseStore(watching)
        seen: list[tuple[float, str]] = []

        async def watch() -> None:
            async for key in store.deletions("/wattwheel/dc1/", retry_s=0.2):
                seen.append((asyncio.get_running_loop().time(), key))

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.5)  # the watch is open
        mine, other = await client.grant(1), await client.grant(5)
        await client.create_if_absent(KEY, "ctl-1", mine)
        await client.create_if_absent("/wattwheel/dc1/coordinator", "ctl-2", other)
        assert not await client.delete_if_owned(KEY, other), "not bound to that lease"
        assert [kv.value for kv in await client.range(KEY)] == ["ctl-1"]
        put_s = asyncio.get_running_loop().time()
        await asyncio.sleep(2.5)  # TTL 1 s plus etcd's expiry-check lag
        assert [k for _, k in seen] == [KEY], "the expiry, as it happened"
        assert seen[0][0] - put_s < 2.0
        assert await client.delete_if_owned("/wattwheel/dc1/coordinator", other)
        await asyncio.sleep(0.3)
        assert [k for _, k in seen] == [KEY, "/wattwheel/dc1/coordinator"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
