"""The shard processes' coordination store on etcd
(:class:`~wattwheel.runtime.coordination.CoordinationStore`).

Keys (outside the election prefix ``/wattwheel/<site>/``, so publishing does not wake the
electors' watches):

- ``/wattwheel-coordination/<site>/summary/<shard>``: the shard's summary, put by its leader;
- ``/wattwheel-coordination/<site>/grant``: the coordinator's budgets.

Every key is bound to a lease of this process (TTL ``ttl_s``, renewed at most every
``ttl_s / 3`` when it publishes, and it publishes every coordination period): the summary of a
shard whose process died, and the grant of a dead coordinator, are gone within the TTL. A lost
lease (expired while etcd was unreachable) is replaced by a new one at the next publish.
Failures are logged once and returned as None / False.
"""

from __future__ import annotations

import logging
import time

from wattwheel.adapters.etcd.client import EtcdClient, EtcdUnavailable
from wattwheel.adapters.etcd.codec import EtcdError

log = logging.getLogger(__name__)

PREFIX = "/wattwheel-coordination"


class EtcdCoordinationStore:
    def __init__(self, client: EtcdClient, site: str, ttl_s: int = 3) -> None:
        if ttl_s < 2:
            raise ValueError(f"coordination lease TTL must be >= 2 s, not {ttl_s}")
        self.client = client
        self.ttl_s = ttl_s
        self.summary_prefix = f"{PREFIX}/{site}/summary/"
        self.grant_key = f"{PREFIX}/{site}/grant"
        self._lease_id: int | None = None
        self._renewed_s = -float("inf")
        self._down = False

    async def publish_summary(self, shard: str, text: str) -> bool:
        return await self._put(self.summary_prefix + shard, text)

    async def summaries(self) -> dict[str, tuple[str, int]] | None:
        try:
            kvs = await self.client.range(self.summary_prefix, prefix=True)
        except (EtcdUnavailable, EtcdError) as exc:
            self._failed("read of the shard summaries", exc)
            return None
        self._ok()
        return {kv.key[len(self.summary_prefix) :]: (kv.value, kv.mod_revision) for kv in kvs}

    async def publish_grant(self, text: str) -> bool:
        return await self._put(self.grant_key, text)

    async def grant(self) -> tuple[str, int] | None:
        try:
            kvs = await self.client.range(self.grant_key)
        except (EtcdUnavailable, EtcdError) as exc:
            self._failed("read of the budget grant", exc)
            return None
        self._ok()
        return (kvs[0].value, kvs[0].mod_revision) if kvs else None

    async def close(self) -> None:
        """Revoke the lease: this process's keys go at once (a clean shutdown)."""
        if self._lease_id is not None:
            try:
                await self.client.revoke(self._lease_id)
            except (EtcdUnavailable, EtcdError) as exc:
                log.debug("etcd coordination lease revoke failed: %s", exc)
            self._lease_id = None

    async def _put(self, key: str, value: str) -> bool:
        try:
            lease_id = await self._lease()
            await self.client.put(key, value, lease_id)
        except (EtcdUnavailable, EtcdError) as exc:
            if isinstance(exc, EtcdError):
                self._lease_id = None  # e.g. "requested lease not found": a new one next time
            self._failed(f"put of {key}", exc)
            return False
        self._ok()
        return True

    async def _lease(self) -> int:
        now_s = time.monotonic()
        if self._lease_id is not None and now_s - self._renewed_s < self.ttl_s / 3:
            return self._lease_id
        if self._lease_id is not None:
            if await self.client.keep_alive(self._lease_id) > 0:
                self._renewed_s = now_s
                return self._lease_id
            self._lease_id = None  # expired: its keys are gone, put them again on a new one
        self._lease_id = await self.client.grant(self.ttl_s)
        self._renewed_s = now_s
        return self._lease_id

    def _failed(self, what: str, exc: Exception) -> None:
        level = logging.DEBUG if self._down else logging.WARNING
        log.log(level, "etcd coordination: %s failed (%s): %s", what, self.client.endpoint, exc)
        self._down = True

    def _ok(self) -> None:
        if self._down:
            log.warning("etcd coordination: etcd answers again (%s)", self.client.endpoint)
        self._down = False
