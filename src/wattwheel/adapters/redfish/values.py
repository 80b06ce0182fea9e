"""Typed values the Redfish codec produces and consumes; errors that name the field and URI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wattwheel.domain.errors import WattwheelError

JsonObject = Mapping[str, Any]
LimitKind = Literal["control_setpoint", "power_control_limit"]
ReadingKind = Literal["power_control", "environment_metrics", "sensor"]


class RedfishPayloadError(WattwheelError):
    """A Redfish payload lacks a field or holds a value of the wrong type."""

    def __init__(self, uri: str, field_path: str, why: str) -> None:
        self.uri = uri
        self.field_path = field_path
        self.why = why
        where = f"{uri} {field_path}" if field_path else uri
        super().__init__(f"Redfish payload {where}: {why}")


class PowerLimitRangeError(WattwheelError, ValueError):
    """A requested power limit is outside what the device allows."""


@dataclass(frozen=True, slots=True)
class ServerPowerReading:
    """One server's input power, in watts, as its BMC reports it.

    `power_w` is None when the BMC reports no value (server off, sensor absent) or has never
    answered; `stale` is True when the value is the last one seen before the device went silent.
    `timestamp` is the device's own ISO 8601 reading time when it gives one.
    """

    chassis_uri: str
    resource_uri: str
    power_w: float | None
    limit_w: float | None = None
    timestamp: str | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class PowerLimitTarget:
    """Where and within which range (watts, None = not stated) a server power limit is written.

    `uri` is the resource to PATCH; for `power_control_limit` it carries a JSON pointer fragment
    naming the PowerControl member (`.../Power#/PowerControl/0`).
    """

    kind: LimitKind
    uri: str
    min_w: float | None
    max_w: float | None
    current_w: float | None = None

    @property
    def patch_uri(self) -> str:
        """The URI the PATCH goes to (without the member fragment)."""
        return self.uri.split("#", 1)[0]

    @property
    def member_index(self) -> int:
        """Index of the PowerControl member for `power_control_limit`; 0 for a Control."""
        _, _, fragment = self.uri.partition("#")
        tail = fragment.rsplit("/", 1)[-1]
        return int(tail) if tail.isdigit() else 0


@dataclass(frozen=True, slots=True)
class OutletReading:
    """One PDU outlet: power in watts (None if not reported) and on/off state.

    `rack` is the PDU's Location.Placement.Rack when the PDU states it.
    """

    uri: str
    outlet_id: str
    power_w: float | None
    power_on: bool | None
    control_target: str | None
    stale: bool = False
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class ReadingSource:
    """A resource from which a server's power can be read."""

    kind: ReadingKind
    uri: str


@dataclass(frozen=True, slots=True)
class DiscoveredServer:
    """A chassis with at least one power reading source, and the limits it accepts."""

    chassis_uri: str
    chassis_id: str
    reading_sources: tuple[ReadingSource, ...]
    limit_targets: tuple[PowerLimitTarget, ...]
    capacity_w: float | None = None
    rack: str | None = None  # Chassis Location.Placement.Rack, when the BMC states it

    @property
    def preferred_limit(self) -> PowerLimitTarget | None:
        """A Control SetPoint when offered (the current schema), else the PowerControl limit."""
        for kind in ("control_setpoint", "power_control_limit"):
            for target in self.limit_targets:
                if target.kind == kind:
                    return target
        return None


@dataclass(frozen=True, slots=True)
class RedfishInventory:
    """Everything power-related found under one service root."""

    servers: tuple[DiscoveredServer, ...] = ()
    outlets: tuple[OutletReading, ...] = ()


@dataclass(frozen=True, slots=True)
class RootLinks:
    chassis_uri: str | None
    power_equipment_uri: str | None
    sessions_uri: str | None


@dataclass(frozen=True, slots=True)
class ChassisLinks:
    chassis_uri: str
    chassis_id: str
    rack: str | None = None
    power_uri: str | None = None
    power_subsystem_uri: str | None = None
    sensors_uri: str | None = None
    environment_metrics_uri: str | None = None
    controls_uri: str | None = None


@dataclass(frozen=True, slots=True)
class RequestBody:
    """An HTTP request to send: method, path and JSON body."""

    method: Literal["PATCH", "POST"]
    uri: str
    body: dict[str, Any] = field(default_factory=dict)
