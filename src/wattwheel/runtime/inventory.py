"""What the runtime controls: every server with its rack, domain, criticality, priority, cap
range and PDU outlet. Built from the site (a deterministic default layout) or read from the
device map; plain JSON values so the emulator can hand it to ``serve``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams

IntArray = NDArray[np.int64]

#: Non-critical servers cycle through these priorities (larger is served first).
DEFAULT_PRIORITIES: tuple[int, ...] = (3, 2, 1)


@dataclass(frozen=True)
class ServerInfo:
    """One server. ``outlet`` is its PDU outlet key (``"<rack>/<n>"``), None if not switchable."""

    server_id: str
    rack_id: str
    critical: bool
    priority: int
    min_cap_w: float
    max_cap_w: float
    outlet: str | None = None


class Inventory:
    """Servers in a fixed order with index arrays for vectorised aggregation.

    Args:
        servers: every server (unique ids).
        domain_ids: the power domains, in site order.
        domain_racks: per domain, its rack ids; every server's rack must be in one.
    """

    def __init__(
        self,
        servers: Sequence[ServerInfo],
        domain_ids: Sequence[str],
        domain_racks: Sequence[Sequence[str]],
    ) -> None:
        if len(domain_ids) != len(domain_racks):
            raise ConfigError("inventory.domains", list(domain_ids), "one rack list per domain")
        self.domain_ids: tuple[str, ...] = tuple(domain_ids)
        self.servers = tuple(servers)
        self.rack_ids: tuple[str, ...] = tuple(r for racks in domain_racks for r in racks)
        self.rack_index = {r: i for i, r in enumerate(self.rack_ids)}
        if len(self.rack_index) != len(self.rack_ids):
            raise ConfigError("inventory.racks", None, "a rack is listed in two domains")
        self.rack_domain: IntArray = np.array(
            [d for d, racks in enumerate(domain_racks) for _ in racks], dtype=np.int64
        )
        #: every server's id, in inventory order
        self.server_ids: tuple[str, ...] = tuple(s.server_id for s in self.servers)
        self.server_index = {s: i for i, s in enumerate(self.server_ids)}
        if len(self.server_index) != len(self.servers):
            raise ConfigError("inventory.servers", None, "server ids are not unique")
        unknown = [s.server_id for s in self.servers if s.rack_id not in self.rack_index]
        if unknown:
            raise ConfigError("inventory.servers", unknown[:3], "servers in racks of no domain")
        self.server_rack: IntArray = np.array(
            [self.rack_index[s.rack_id] for s in self.servers], dtype=np.int64
        )
        self.server_domain: IntArray = self.rack_domain[self.server_rack]
        self.critical = np.array([s.critical for s in self.servers], dtype=bool)
        self.priority = np.array([s.priority for s in self.servers], dtype=np.int64)
        self.min_cap_w = np.array([s.min_cap_w for s in self.servers], dtype=float)
        self.max_cap_w = np.array([s.max_cap_w for s in self.servers], dtype=float)
        self.servers_per_rack = np.bincount(self.server_rack, minlength=len(self.rack_ids))
        self.n_domains = len(domain_racks)
        self._outlets: dict[str, ServerInfo] | None = None
        self._domain_servers: dict[int, tuple[IntArray, tuple[str, ...], tuple[str, ...]]] = {}

    @property
    def n_racks(self) -> int:
        return len(self.rack_ids)

    def outlets(self) -> dict[str, ServerInfo]:
        """Outlet key -> the server behind it (built once; do not mutate)."""
        if self._outlets is None:
            self._outlets = {s.outlet: s for s in self.servers if s.outlet is not None}
        return self._outlets

    def domain_servers(self, d: int) -> tuple[IntArray, tuple[str, ...], tuple[str, ...]]:
        """Domain ``d``'s server indices, their ids and their racks (built once: a tick that caps
        a domain of 4,000 servers must not rebuild them; do not mutate)."""
        found = self._domain_servers.get(d)
        if found is None:
            members = np.flatnonzero(self.server_domain == d)
            found = (
                members,
                tuple(self.servers[i].server_id for i in members),
                tuple(self.servers[i].rack_id for i in members),
            )
            self._domain_servers[d] = found
        return found

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.servers]

    @staticmethod
    def from_json(
        rows: Sequence[Mapping[str, Any]],
        domain_ids: Sequence[str],
        domain_racks: Sequence[Sequence[str]],
    ) -> Inventory:
        """Read :meth:`to_json` output back; a bad row raises ConfigError naming it."""
        servers = []
        for i, row in enumerate(rows):
            try:
                servers.append(
                    ServerInfo(
                        server_id=str(row["server_id"]),
                        rack_id=str(row["rack_id"]),
                        critical=bool(row["critical"]),
                        priority=int(row["priority"]),
                        min_cap_w=float(row["min_cap_w"]),
                        max_cap_w=float(row["max_cap_w"]),
                        outlet=None if row.get("outlet") is None else str(row["outlet"]),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"inventory[{i}]", row, f"bad server entry ({exc})") from None
        return Inventory(servers, domain_ids, domain_racks)


def default_inventory(
    site: SiteParams, min_cap_w: float, max_cap_w: float, servers_per_rack: int | None = None
) -> Inventory:
    """The layout the emulator serves: ``<rack>-s<NN>`` servers behind outlets ``<rack>/<N>``.

    In each rack the first ``round((1 - noncritical_fraction) * n)`` servers are critical; the
    others cycle through :data:`DEFAULT_PRIORITIES`.
    """
    n = servers_per_rack or site.servers_per_rack
    servers = []
    for d, racks in enumerate(site.domain_racks):
        n_critical = int(round((1.0 - float(site.flex.noncritical_fraction[d])) * n))
        for rack in racks:
            for k in range(n):
                critical = k < n_critical
                servers.append(
                    ServerInfo(
                        server_id=f"{rack}-s{k + 1:02d}",
                        rack_id=rack,
                        critical=critical,
                        priority=10
                        if critical
                        else DEFAULT_PRIORITIES[k % len(DEFAULT_PRIORITIES)],
                        min_cap_w=min_cap_w,
                        max_cap_w=max_cap_w,
                        outlet=f"{rack}/{k + 1}",
                    )
                )
    return Inventory(servers, site.domain_names, site.domain_racks)
