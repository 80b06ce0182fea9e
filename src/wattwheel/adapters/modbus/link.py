"""The flywheel controller I/O concern: one Protocol, its reading type, and an in-memory fake."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from wattwheel.adapters.modbus.flywheel_map import FlywheelStatus


@dataclass(frozen=True, slots=True)
class FlywheelReading:
    """The latest status of a bank and whether it is fresh.

    ``status`` is the last good status (None if the controller never answered); ``stale`` is
    True when this read failed and ``status`` is older; ``read_at_s`` is when ``status`` was read
    (the client's clock, seconds).
    """

    status: FlywheelStatus | None
    stale: bool
    read_at_s: float | None


class FlywheelLink(Protocol):
    """A flywheel controller: read its status, command a charge/discharge setpoint."""

    async def read(self) -> FlywheelReading:
        """The bank's status now; never raises on a device fault (returns a stale reading)."""
        ...

    async def write_setpoint(self, power_w: float) -> bool:
        """Command ``power_w`` (+ discharge / − charge, W); False if it did not get through."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


@dataclass
class FakeFlywheelLink:
    """In-memory :class:`FlywheelLink`: returns ``status``, records setpoints, can go dead."""

    status: FlywheelStatus
    dead: bool = False
    now_s: float = 0.0
    setpoints_w: list[float] = field(default_factory=list)
    _last_good_s: float | None = None

    async def read(self) -> FlywheelReading:
        if self.dead:
            return FlywheelReading(
                self.status if self._last_good_s is not None else None, True, self._last_good_s
            )
        self._last_good_s = self.now_s
        return FlywheelReading(self.status, False, self.now_s)

    async def write_setpoint(self, power_w: float) -> bool:
        if self.dead:
            return False
        self.setpoints_w.append(power_w)
        self.status = replace(self.status, power_w=power_w)
        return True

    async def close(self) -> None:
        return None
