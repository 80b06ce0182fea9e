"""Mutable state of the emulated Redfish site: server power limits and PDU outlet switches.

Consumed power responds to caps the way a BMC's power limiter makes it: a server draws
min(demand, limit), and nothing while its outlet is off.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from wattwheel.domain.errors import ConfigError
from wattwheel.emulate.redfish.source import PowerSource

logger = logging.getLogger(__name__)

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
    rack_id: str
    cap_delay_s: float = 0.0


class SiteState:
    """Limits and outlet states of every emulated server; safe to use from any thread.

    `racks` maps a rack id to its servers; each rack gets its own PDU (one outlet per server).
    None puts every server behind one PDU with id "1". A new limit takes effect `cap_delay_s`
    seconds after it is written (a BMC's power limiter needs time to correct; 0 = at once),
    timed by `monotonic` (seconds).
    """

    def __init__(
        self,
        servers: Sequence[str],
        source: PowerSource,
        limits: LimitRange,
        racks: Mapping[str, Sequence[str]] | None = None,
        cap_delay_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(cap_delay_s) and cap_delay_s >= 0):
            raise ConfigError("cap_delay_s", cap_delay_s, "must be a finite number >= 0 s")
        _check_ids("servers", servers)
        self.server_ids: tuple[str, ...] = tuple(servers)
        self.racks = _check_racks(racks if racks is not None else {"1": servers}, self.server_ids)
        self._rack_of = {s: rack for rack, members in self.racks.items() for s in members}
        self.limits = limits
        self._source = source
        self._lock = threading.Lock()
        # Uncapped until someone writes a limit: the limit sits at the supply's maximum.
        self._limit_w = {s: limits.max_w for s in servers}
        self.cap_delay_s = cap_delay_s
        self._monotonic = monotonic
        # Per server: (limit in force before the last write, when the last write happened).
        self._previous: dict[str, tuple[float, float]] = {}
        self._outlet_on = dict.fromkeys(servers, True)
        self._source_failing = _OnceSet()

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._limit_w

    def snapshot(self, server_id: str) -> ServerSnapshot:
        """The server's consumed power now: min(demand, limit), 0 W when its outlet is off."""
        with self._lock:
            limit_w = self._limit_w[server_id]
            effective_w = self._effective_limit_w(server_id, limit_w)
            outlet_on = self._outlet_on[server_id]
        demand_w = self._demand_w(server_id)
        consumed_w: float | None
        if not outlet_on:
            consumed_w = 0.0
        elif math.isfinite(demand_w):
            consumed_w = round(min(max(demand_w, 0.0), effective_w), 1)
        else:
            consumed_w = None  # a broken feed shows as "no reading", never as a number
        rack_id = self._rack_of[server_id]
        return ServerSnapshot(
            server_id, consumed_w, limit_w, outlet_on, self.limits, rack_id, self.cap_delay_s
        )

    def _effective_limit_w(self, server_id: str, limit_w: float) -> float:
        previous = self._previous.get(server_id)
        if previous is None:
            return limit_w
        previous_w, written_s = previous
        return limit_w if self._monotonic() - written_s >= self.cap_delay_s else previous_w

    def _demand_w(self, server_id: str) -> float:
        """The source's demand; a source that fails shows as "no reading" (NaN), logged once."""
        try:
            demand_w = float(self._source.power_w(server_id))
        except Exception as error:  # a plug-in source must not take the BMC down with it
            if self._source_failing.add_if_new(server_id):
                logger.warning("power source failed for server %s: %r", server_id, error)
            return math.nan
        self._source_failing.discard(server_id)
        return demand_w

    def set_limit(self, server_id: str, limit_w: float | None) -> None:
        """Write a power limit in watts (None lifts it); the caller has checked the range."""
        with self._lock:
            now_s = self._monotonic()
            in_force_w = self._effective_limit_w(server_id, self._limit_w[server_id])
            self._previous[server_id] = (in_force_w, now_s)
            self._limit_w[server_id] = self.limits.max_w if limit_w is None else limit_w

    def set_outlet(self, server_id: str, on: bool) -> None:
        with self._lock:
            self._outlet_on[server_id] = on


class _OnceSet:
    """A thread-safe set that says whether an item was new (to log a fault once)."""

    def __init__(self) -> None:
        self._items: set[str] = set()
        self._lock = threading.Lock()

    def add_if_new(self, item: str) -> bool:
        with self._lock:
            new = item not in self._items
            self._items.add(item)
            return new

    def discard(self, item: str) -> None:
        with self._lock:
            self._items.discard(item)


def _check_ids(key: str, ids: Sequence[str]) -> None:
    if not ids:
        raise ConfigError(key, list(ids), "at least one id is needed")
    seen: set[str] = set()
    for item in ids:
        if not isinstance(item, str) or not _ID_PATTERN.match(item):
            raise ConfigError(key, item, "ids must match [A-Za-z0-9][A-Za-z0-9_.-]* (URI segment)")
        if item in seen:
            raise ConfigError(key, item, "duplicate id")
        seen.add(item)


def _check_racks(
    racks: Mapping[str, Sequence[str]], servers: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """Every server behind exactly one rack PDU, and no unknown server."""
    _check_ids("racks", list(racks))
    placed = [s for members in racks.values() for s in members]
    _check_ids("racks.servers", placed)
    unknown = sorted(set(placed) - set(servers))
    if unknown:
        raise ConfigError("racks", unknown, "servers not in the server list")
    missing = sorted(set(servers) - set(placed))
    if missing:
        raise ConfigError("racks", missing, "servers in no rack")
    return {rack: tuple(members) for rack, members in racks.items()}
