"""The device map's schema (the JSON ``wattwheel emulate`` writes and ``serve`` reads; fields in
``docs/live.md``). :func:`check_device_map` validates a parsed map against it: a missing or
mistyped key raises one :class:`ConfigError` naming the key (``devices.snmp.port``), never a
``KeyError`` deep in the wiring. Sections are optional (a device that is not there is not
wired); unknown keys are kept (newer emulators may add some).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattwheel.domain.errors import ConfigError

DEVICE_MAP_FORMAT = "wattwheel-device-map"
Port = Annotated[int, Field(ge=1, le=65535)]
Period = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Watts = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class RedfishSection(_Section):
    url: str
    username: str | None = None
    password: str | None = None
    poll_s: Period = 5.0


class SnmpSection(_Section):
    host: str
    port: Port
    poll_s: Period = 5.0


class MqttSection(_Section):
    """Login and TLS keys are checked by ``adapters.mqtt.config.broker_from_map``."""

    host: str
    port: Port
    site: str


class ModbusSection(_Section):
    host: str
    port: Port
    units: dict[str, Annotated[int, Field(ge=0, le=247)]]
    revert_s: Annotated[int, Field(ge=0)] | None = None


class SchedulerMqttSection(_Section):
    site: str
    host: str
    port: Port


class ServerRow(_Section):
    server_id: str
    rack_id: str
    critical: bool
    priority: int
    min_cap_w: Watts
    max_cap_w: Watts
    outlet: str | None = None


class DeviceMap(_Section):
    format: Literal["wattwheel-device-map"]
    domains: dict[str, list[str]]
    inventory: list[ServerRow]
    redfish: RedfishSection | None = None
    snmp: SnmpSection | None = None
    mqtt: MqttSection | None = None
    modbus: ModbusSection | None = None
    reserve_url: str | None = None
    scheduler_url: str | None = None
    scheduler_mqtt: SchedulerMqttSection | None = None


def check_device_map(data: Any) -> Mapping[str, Any]:
    """``data`` if it fits :class:`DeviceMap`; else ConfigError naming the first bad key."""
    if not isinstance(data, Mapping):
        raise ConfigError("devices", type(data).__name__, "expected a JSON object")
    if data.get("format") != DEVICE_MAP_FORMAT:
        raise ConfigError("devices.format", data.get("format"), f"expected {DEVICE_MAP_FORMAT!r}")
    try:
        DeviceMap.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(["devices", *(str(p) for p in first["loc"])])
        why = "missing" if first["type"] == "missing" else str(first["msg"])
        value = None if first["type"] == "missing" else first.get("input")
        if isinstance(value, Mapping | list):
            value = f"<{type(value).__name__}>"
        more = len(exc.errors()) - 1
        raise ConfigError(key, value, why + (f" (and {more} more)" if more else "")) from None
    return data
