"""The one I/O interface the runtime needs from a server-power device, and an in-memory fake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from wattwheel.adapters.redfish.values import ServerPowerReading


class ServerPowerDevice(Protocol):
    """Reads server input power and writes server power limits (watts)."""

    async def read_power(self) -> list[ServerPowerReading]:
        """One reading per server; `stale`/None values instead of exceptions on failure."""
        ...

    async def set_power_limit(self, watts: float, chassis_uri: str | None = None) -> float | None:
        """Cap one server (all when `chassis_uri` is None); the watts written, or None."""
        ...


class FakeServerPowerDevice:
    """In-memory servers whose consumed power is min(demand, limit), like a capped BMC.

    `online = False` makes it behave like a silent device: stale readings, refused limits.
    """

    def __init__(
        self, demand_w: Mapping[str, float], min_limit_w: float = 100.0, max_limit_w: float = 2000.0
    ) -> None:
        self.demand_w = dict(demand_w)
        self.min_limit_w = min_limit_w
        self.max_limit_w = max_limit_w
        self.limit_w = {uri: max_limit_w for uri in demand_w}
        self.online = True

    async def read_power(self) -> list[ServerPowerReading]:
        return [
            ServerPowerReading(
                chassis_uri=uri,
                resource_uri=uri,
                power_w=min(demand, self.limit_w[uri]),
                limit_w=self.limit_w[uri],
                stale=not self.online,
            )
            for uri, demand in self.demand_w.items()
        ]

    async def set_power_limit(self, watts: float, chassis_uri: str | None = None) -> float | None:
        if not self.online or watts != watts:
            return None
        value = float(round(min(max(watts, self.min_limit_w), self.max_limit_w)))
        for uri in self.limit_w:
            if chassis_uri in (None, uri):
                self.limit_w[uri] = value
        return value
