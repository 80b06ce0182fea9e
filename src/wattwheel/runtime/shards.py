"""One controller process per shard: the part of a site a shard's process runs.

A shard is a set of power domains (``serve --shard NAME=DOMAIN,...``; by default one shard
per domain, or ``N`` contiguous groups with :func:`split_shards`). ``serve --only-shard NAME``
runs the fast loop, the planner and the telemetry of that shard alone, on a site restricted
to its domains (:func:`shard_site`) and an inventory restricted to its racks
(:func:`shard_inventory`): its arrays are sized by the shard, not by the site, so adding racks
adds processes, not latency. What the shards share is left to the site's shared devices and
the coordinator role (see ``docs/redundancy.md`` and the README "Scale").
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams
from wattwheel.runtime.inventory import Inventory


def split_shards(domain_ids: Sequence[str], n: int) -> list[str]:
    """``n`` shards of contiguous domains, as ``--shard`` specs (``s0=d0,d1``, ...); the first
    ``len(domain_ids) % n`` shards hold one domain more."""
    if not 1 <= n <= len(domain_ids):
        raise ConfigError(
            "--shards", n, f"expected 1..{len(domain_ids)} (one domain at least each)"
        )
    size, extra = divmod(len(domain_ids), n)
    specs, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        specs.append(f"s{k}=" + ",".join(domain_ids[start:end]))
        start = end
    return specs


def _subset(value: Any, idx: np.ndarray[Any, Any], n_domains: int) -> Any:
    """A per-domain field restricted to ``idx`` (anything else unchanged)."""
    if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n_domains:
        return value[idx].copy()
    if isinstance(value, tuple) and len(value) == n_domains:
        return tuple(value[i] for i in idx)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _subset(getattr(value, f.name), idx, n_domains)
            for f in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    return value


def shard_site(site: SiteParams, domains: Sequence[str]) -> SiteParams:
    """The site as one shard's process sees it: only ``domains`` (in site order), every
    per-domain array cut to them. Site-wide values (the shared reserve, costs, periods) stay."""
    unknown = [d for d in domains if d not in site.domain_names]
    if unknown or not domains:
        raise ConfigError("--only-shard", list(domains), f"unknown domains {unknown}")
    wanted = set(domains)
    idx = np.array([i for i, d in enumerate(site.domain_names) if d in wanted], dtype=np.int64)
    cut: SiteParams = _subset(site, idx, site.n_domains)
    return cut


def shard_inventory(inventory: Inventory, site: SiteParams) -> Inventory:
    """The servers of ``site``'s racks (a shard's), in the inventory's order."""
    racks = {r for rs in site.domain_racks for r in rs}
    servers = [s for s in inventory.servers if s.rack_id in racks]
    return Inventory(servers, site.domain_names, site.domain_racks)


def shard_phase_s(name: str, period_s: float, shard_names: Sequence[str] = ()) -> float:
    """Where in the control period shard ``name``'s process ticks (``RuntimeConfig.phase_s``),
    so that the processes of one site do not all wake at once. With the site's shard names
    the shards are spread evenly over the period (sorted names: every process works out the
    same spread); a shard not among them gets a point set by a hash of its name."""
    names = sorted(set(shard_names))
    if name in names:
        return period_s * names.index(name) / len(names)
    return period_s * (zlib.crc32(name.encode()) / 2**32)
