"""A thin etcd v3 client over the JSON gRPC gateway (``/v3/...`` over HTTP with httpx), and the
runtime's :class:`~wattwheel.runtime.leader.LeaseStore` on top of it.

Several endpoints (the members of an etcd cluster) can be given: a request that gets no answer
moves the client to the next member for the following requests. Each request has a timeout
shorter than the elector's renewal period, so a hung member costs one renewal, not the lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import TypeVar

import httpx

from wattwheel.adapters.etcd import codec
from wattwheel.adapters.etcd.codec import EtcdError, Json, KeyValue
from wattwheel.runtime.leader import KeyOwner

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class EtcdUnavailable(Exception):
    """No usable answer from the etcd member asked (connection, timeout, malformed reply)."""


class EtcdClient:
    """etcd v3 leases and keys; ``endpoints`` like ``http://10.0.0.5:2379``; ``timeout_s`` per
    request. ``transport`` replaces httpx's (tests inject faults with it)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoints = _checked_endpoints(endpoints)
        if timeout_s <= 0:
            raise ValueError(f"etcd timeout_s must be > 0, not {timeout_s}")
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._current = 0

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def endpoint(self) -> str:
        """The member the next request goes to."""
        return self.endpoints[self._current]

    async def grant(self, ttl_s: int) -> int:
        """A new lease of ``ttl_s`` s; its id."""
        return codec.parse_grant(await self._post("/v3/lease/grant", codec.grant_request(ttl_s)))

    async def keep_alive(self, lease_id: int) -> int:
        """Renew once; the lease's TTL (s), 0 if it does not exist any more."""
        msg = await self._post("/v3/lease/keepalive", codec.lease_request(lease_id))
        return codec.parse_keepalive(msg)

    async def revoke(self, lease_id: int) -> None:
        """Drop the lease and its keys (a lease that is already gone is fine)."""
        try:
            await self._post("/v3/lease/revoke", codec.lease_request(lease_id))
        except EtcdError as exc:
            if exc.code != codec.NOT_FOUND:
                raise

    async def create_if_absent(self, key: str, value: str, lease_id: int) -> KeyOwner:
        """Create ``key`` bound to the lease unless it exists; who holds it now."""
        msg = await self.txn(codec.create_if_absent_txn(key, value, lease_id))
        return codec.parse_create_if_absent(msg, value, lease_id)

    async def delete_if_owned(self, key: str, lease_id: int) -> bool:
        """Delete ``key`` if it is bound to the lease; whether it was."""
        msg = await self.txn(codec.delete_if_owned_txn(key, lease_id))
        return bool(msg.get("succeeded", False))

    async def txn(self, request: Json) -> Json:
        """A raw transaction (``compare`` / ``success`` / ``failure`` in gateway JSON)."""
        return await self._post("/v3/kv/txn", request)

    async def put(self, key: str, value: str, lease_id: int = 0) -> int:
        """Put ``key`` (bound to the lease unless 0); the store's revision after it. A lease
        that does not exist any more raises :class:`EtcdError` (code ``NOT_FOUND``)."""
        msg = await self._post("/v3/kv/put", codec.put_request(key, value, lease_id))
        return int(msg.get("header", {}).get("revision", 0))

    async def range(self, key: str, prefix: bool = False) -> list[KeyValue]:
        """The key (or every key under the prefix)."""
        msg = await self._post("/v3/kv/range", codec.range_request(key, prefix))
        return codec.parse_range(msg)

    async def delete_range(self, key: str, prefix: bool = False) -> int:
        """Delete the key (or every key under the prefix); how many were deleted."""
        msg = await self._post("/v3/kv/deleterange", codec.delete_range_request(key, prefix))
        return codec.parse_deleted(msg)

    async def watch_deletions(self, prefix: str) -> AsyncIterator[str]:
        """Each key under ``prefix`` deleted (or expired with its lease) from now on, as it
        happens (a streamed ``/v3/watch``). Ends with :class:`EtcdUnavailable` when the
        stream breaks; the caller watches again."""
        body = {"create_request": {**codec.range_request(prefix, prefix=True)}}
        url = self.endpoint + "/v3/watch"
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        try:
            async with self._http.stream("POST", url, json=body, timeout=timeout) as reply:
                async for line in reply.aiter_lines():
                    if not line.strip():
                        continue
                    for key in codec.parse_watch_deletions(json.loads(line)):
                        yield key
        except httpx.HTTPError as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise EtcdUnavailable(f"{url}: malformed watch message: {exc}") from exc
        raise EtcdUnavailable(f"{url}: the watch stream ended")

    async def _post(self, path: str, body: Json) -> Json:
        url = self.endpoint + path
        try:
            response = await self._http.post(url, json=body)
            return codec.decode_body(response.content)
        except httpx.HTTPError as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # includes json.JSONDecodeError
            raise EtcdUnavailable(f"{url}: malformed reply: {exc}") from exc


def _checked_endpoints(endpoints: str | Sequence[str]) -> tuple[str, ...]:
    items = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
    if not items:
        raise ValueError("etcd endpoints: give at least one URL like http://127.0.0.1:2379")
    for url in items:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"etcd endpoint {url!r} must be an http:// or https:// URL")
    return tuple(url.rstrip("/") for url in items)


class EtcdLeaseStore:
    """:class:`~wattwheel.runtime.leader.LeaseStore` on an :class:`EtcdClient`: failures become
    None/False, logged once at WARNING (then DEBUG) until etcd answers again."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self._down = False

    async def grant(self, ttl_s: int) -> int | None:
        try:
            lease_id = await self.client.grant(ttl_s)
        except (EtcdUnavailable, EtcdError) as exc:
            self._failed("lease grant", exc)
            return None
        return self._ok(lease_id)

    async def keep_alive(self, lease_id: int) -> int | None:
        try:
            ttl_s = await self.client.keep_alive(lease_id)
        except (EtcdUnavailable, EtcdError) as exc:
            self._failed("lease keep-alive", exc)
            return None
        return self._ok(ttl_s)

    async def revoke(self, lease_id: int) -> bool:
        try:
            await self.client.revoke(lease_id)
        except (EtcdUnavailable, EtcdError) as exc:
            self._failed("lease revoke", exc)
            return False
        return self._ok(True)

    async def create_if_absent(self, key: str, holder: str, lease_id: int) -> KeyOwner | None:
        try:
            owner = await self.client.create_if_absent(key, holder, lease_id)
        except (EtcdUnavailable, EtcdError) as exc:
            # includes "requested lease not found": the next keep-alive reports the lost lease
            self._failed(f"campaign for {key}", exc)
            return None
        return self._ok(owner)

    async def deletions(self, prefix: str, retry_s: float) -> AsyncIterator[str]:
        """Keys under ``prefix`` as they are deleted, for ever: a broken watch is opened again
        after ``retry_s`` (an event missed meanwhile is caught by the elector's polling)."""
        while True:
            try:
                async for key in self.client.watch_deletions(prefix):
                    yield key
            except (EtcdUnavailable, EtcdError) as exc:
                self._failed(f"watch of {prefix}", exc)
            await asyncio.sleep(retry_s)

    async def delete_if_owned(self, key: str, lease_id: int) -> bool:
        try:
            await self.client.delete_if_owned(key, lease_id)
        except (EtcdUnavailable, EtcdError) as exc:
            self._failed(f"resignation of {key}", exc)
            return False
        return self._ok(True)

    def _failed(self, what: str, exc: Exception) -> None:
        level = logging.DEBUG if self._down else logging.WARNING
        log.log(level, "etcd %s failed (%s): %s", what, self.client.endpoint, exc)
        self._down = True
        return None

    def _ok(self, value: _T) -> _T:
        if self._down:
            log.warning("etcd answers again (%s)", self.client.endpoint)
        self._down = False
        return value
