"""Wiring of the site coordination for ``serve --only-shard`` (one process per shard):
the static shares from the whole site, the etcd store, and the runtime's hooks
(:mod:`wattwheel.runtime.coordination`, ``docs/redundancy.md``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wattwheel.adapters.etcd.client import EtcdClient
from wattwheel.adapters.etcd.coordination import EtcdCoordinationStore
from wattwheel.control.reserve_budget import static_shares_kw
from wattwheel.domain.site import SiteParams
from wattwheel.runtime.coordination import ShardCoordination
from wattwheel.runtime.leader import COORDINATOR
from wattwheel.runtime.loop import Runtime

#: How often a shard process publishes its summary and reads the budgets (the coordinator
#: computes and publishes them at the same period).
COORDINATION_PERIOD_S = 1.0


def static_shares(site: SiteParams, shard_of: Mapping[str, str]) -> dict[str, float]:
    """Each shard's static share of the reserve (kW), from the whole site: capacity x the
    shard's share of the site's rated load (the sum of its domains' primary feeds)."""
    rated: dict[str, float] = {}
    for d, kw in zip(site.domain_names, site.primary_kw, strict=True):
        rated[shard_of[d]] = rated.get(shard_of[d], 0.0) + float(kw)
    return static_shares_kw(site.reserve.capacity_kw, rated)


def coordination_store(
    etcd_urls: Sequence[str], site_name: str, ttl_s: int
) -> tuple[EtcdCoordinationStore | None, list[Callable[[], Any]]]:
    """The etcd store (on the loop it will be used on) and its closers; None without etcd."""
    if not etcd_urls:
        return None, []
    client = EtcdClient(list(etcd_urls), timeout_s=0.5)
    store = EtcdCoordinationStore(client, site_name, ttl_s=max(ttl_s, 2))
    return store, [store.close, client.aclose]


def attach_coordination(
    runtime: Runtime,
    leadership: Any,
    store: EtcdCoordinationStore | None,
    shard: str,
    static_kw: Mapping[str, float],
    instance_id: str,
    ttl_s: float,
) -> ShardCoordination:
    """A :class:`ShardCoordination` for ``shard``'s process, hooked into the runtime (its
    planner and fast loop use the budget each tick) and its events."""
    elector = leadership.elector
    clock = runtime.clock

    def leads() -> bool:
        return elector is not None and bool(elector.may_command(shard, clock.monotonic_s()))

    def token() -> int | None:
        return None if elector is None else elector.fencing_token(COORDINATOR)

    coord = ShardCoordination(
        store,
        clock,
        runtime.site,
        shard,
        static_kw,
        leads_shard=leads,
        coordinates=leadership.coordinating,
        token=token,
        instance_id=instance_id,
        ttl_s=ttl_s,
        period_s=COORDINATION_PERIOD_S,
        event=runtime.event,
        latest_forecast=lambda: runtime.latest_forecast,
        last_obs=lambda: runtime.last_obs,
    )
    runtime.reserve_budget = coord.budget_kw
    return coord
