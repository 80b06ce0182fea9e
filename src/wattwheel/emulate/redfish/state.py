"""Mutable state of the emulated Redfish site: server power limits and PDU outlet switches.

Consumed power responds to caps the way a BMC's power limiter makes it: a server draws
min(demand, limit), and nothing while its outlet is off.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from wattwheel.domain.errors import ConfigError
from wattwheel.emulate.redfish.source import PowerSource

# Redfish resource ids become URI segments; keep them to characters that need no escaping.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class LimitRange:
    """The power limits a server's BMC accepts, in watts."""

    min_w: float = 100.0
    max_w: float = 2000.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_w) and math.isfinite(self.max_w)):
            raise ConfigError("limit_range", (self.min_w, self.max_w), "bounds must be finite")
        if not 0 < self.min_w < self.max_w:
            raise ConfigError("limit_range", (self.min_w, self.max_w), "need 0 < min_w < max_w")


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """One server as the Redfish resources show it (watts; consumed None if unknown)."""

    server_id: str
    consumed_w: float | None
    limit_w: float
    outlet_on: bool
    limits: LimitRange


class SiteState:
    """Limits and outlet states of every emulated server; safe to use from any thread."""

    def __init__(self, servers: Sequence[str], source: PowerSource, limits: LimitRange) -> None:
        _check_ids(servers)
        self.server_ids: tuple[str, ...] = tuple(servers)
        self.limits = limits
        self._source = source
        self._lock = threading.Lock()
        # Uncapped until someone writes a limit: the limit sits at the supply's maximum.
        self._limit_w = {s: limits.max_w for s in servers}
        self._outlet_on = dict.fromkeys(servers, True)

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._limit_w

    def snapshot(self, server_id: str) -> ServerSnapshot:
        """The server's consumed power now: min(demand, limit), 0 W when its outlet is off."""
        with self._lock:
            limit_w = self._limit_w[server_id]
            outlet_on = self._outlet_on[server_id]
        demand_w = self._source.power_w(server_id)
        consumed_w: float | None
        if not outlet_on:
            consumed_w = 0.0
        elif math.isfinite(demand_w):
            consumed_w = round(min(max(demand_w, 0.0), limit_w), 1)
        else:
            consumed_w = None  # a broken feed shows as "no reading", never as a number
        return ServerSnapshot(server_id, consumed_w, limit_w, outlet_on, self.limits)

    def set_limit(self, server_id: str, limit_w: float | None) -> None:
        """Write a power limit in watts (None lifts it); the caller has checked the range."""
        with self._lock:
            self._limit_w[server_id] = self.limits.max_w if limit_w is None else limit_w

    def set_outlet(self, server_id: str, on: bool) -> None:
        with self._lock:
            self._outlet_on[server_id] = on


def _check_ids(servers: Sequence[str]) -> None:
    if not servers:
        raise ConfigError("servers", list(servers), "at least one server is needed")
    seen: set[str] = set()
    for server_id in servers:
        if not isinstance(server_id, str) or not _ID_PATTERN.match(server_id):
            raise ConfigError(
                "servers", server_id, "ids must match [A-Za-z0-9][A-Za-z0-9_.-]* (URI segment)"
            )
        if server_id in seen:
            raise ConfigError("servers", server_id, "duplicate server id")
        seen.add(server_id)
