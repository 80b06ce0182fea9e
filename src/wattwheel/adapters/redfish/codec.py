"""Redfish JSON <-> typed power values. Pure: no sockets, no clock, no logging.

Vendors lay out power differently (DMTF DSP0268): older BMCs expose
`Chassis/{id}/Power` (`PowerControl[].PowerConsumedWatts`, `PowerLimit.LimitInWatts`), newer
ones `EnvironmentMetrics`, `Sensors` and `Controls/{id}` (a Control with `SetPoint`), rack PDUs
`PowerEquipment/RackPDUs/{id}/Outlets/{id}`. Each function here decodes one resource, whatever
layout it came from; `discovery` follows the links between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from wattwheel.adapters.redfish.values import (
    ChassisLinks,
    JsonObject,
    OutletReading,
    PowerLimitRangeError,
    PowerLimitTarget,
    ReadingSource,
    RedfishPayloadError,
    RequestBody,
    RootLinks,
    ServerPowerReading,
)

SERVICE_ROOT_URI = "/redfish/v1/"
# Physical contexts of a Control or Sensor that describe the whole server rather than a part.
_WHOLE_SERVER_CONTEXTS = frozenset({"Chassis", "SystemBoard", "PowerSupply", "Rectifier"})


# ---------------------------------------------------------------- field access


def _require_object(payload: object, uri: str, field_path: str = "") -> JsonObject:
    if not isinstance(payload, Mapping):
        raise RedfishPayloadError(uri, field_path, f"expected a JSON object, got {_kind(payload)}")
    return payload


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _optional_number(obj: JsonObject, name: str, uri: str, path: str = "") -> float | None:
    """A numeric field or None when absent/null; error when present with another type."""
    value = obj.get(name)
    field_path = f"{path}{name}"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RedfishPayloadError(uri, field_path, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise RedfishPayloadError(uri, field_path, f"expected a finite number, got {value!r}")
    return float(value)


def _optional_str(obj: JsonObject, name: str, uri: str, path: str = "") -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RedfishPayloadError(uri, f"{path}{name}", f"expected a string, got {value!r}")
    return value


def _link(obj: JsonObject, name: str, uri: str, path: str = "") -> str | None:
    """The `@odata.id` of a navigation property, or None when the property is absent."""
    value = obj.get(name)
    if value is None:
        return None
    ref = _require_object(value, uri, f"{path}{name}")
    target = ref.get("@odata.id")
    if not isinstance(target, str) or not target.startswith("/"):
        raise RedfishPayloadError(
            uri, f"{path}{name}/@odata.id", f"expected an absolute URI path, got {target!r}"
        )
    return target


def link(payload: object, name: str, uri: str) -> str | None:
    """The URI a resource's navigation property `name` points to, or None when absent."""
    return _link(_require_object(payload, uri), name, uri)


def _resource_id(payload: JsonObject, uri: str) -> str:
    value = payload.get("Id")
    if isinstance(value, str) and value:
        return value
    return uri.rstrip("/").rsplit("/", 1)[-1]


def odata_id(payload: object, uri: str) -> str:
    """A resource's own `@odata.id`, falling back to the URI it was fetched from."""
    obj = _require_object(payload, uri)
    value = obj.get("@odata.id")
    if value is None:
        return uri
    if not isinstance(value, str):
        raise RedfishPayloadError(uri, "@odata.id", f"expected a string, got {value!r}")
    return value


# ---------------------------------------------------------------- decoding


def collection_members(payload: object, uri: str) -> list[str]:
    """The member URIs of a resource collection."""
    obj = _require_object(payload, uri)
    members = obj.get("Members")
    if not isinstance(members, list):
        raise RedfishPayloadError(uri, "Members", f"expected an array, got {_kind(members)}")
    found: list[str] = []
    for index, member in enumerate(members):
        ref = _require_object(member, uri, f"Members/{index}")
        target = ref.get("@odata.id")
        if not isinstance(target, str) or not target.startswith("/"):
            raise RedfishPayloadError(
                uri, f"Members/{index}/@odata.id", f"expected a URI path, got {target!r}"
            )
        found.append(target)
    return found


def parse_service_root(payload: object, uri: str = SERVICE_ROOT_URI) -> RootLinks:
    """The links of a service root that lead to power resources."""
    obj = _require_object(payload, uri)
    links = obj.get("Links")
    sessions = (
        _link(_require_object(links, uri, "Links"), "Sessions", uri, "Links/")
        if links is not None
        else None
    )
    return RootLinks(
        chassis_uri=_link(obj, "Chassis", uri),
        power_equipment_uri=_link(obj, "PowerEquipment", uri),
        sessions_uri=sessions,
    )


def parse_chassis(payload: object, uri: str) -> ChassisLinks:
    """The power-related links a chassis offers (any subset; vendors differ)."""
    obj = _require_object(payload, uri)
    return ChassisLinks(
        chassis_uri=odata_id(obj, uri),
        chassis_id=_resource_id(obj, uri),
        rack=placement_rack(obj, uri),
        power_uri=_link(obj, "Power", uri),
        power_subsystem_uri=_link(obj, "PowerSubsystem", uri),
        sensors_uri=_link(obj, "Sensors", uri),
        environment_metrics_uri=_link(obj, "EnvironmentMetrics", uri),
        controls_uri=_link(obj, "Controls", uri),
    )


def placement_rack(payload: object, uri: str) -> str | None:
    """`Location.Placement.Rack` of a chassis or PDU: the rack the operator says it is in."""
    location = _require_object(payload, uri).get("Location")
    if location is None:
        return None
    placement = _require_object(location, uri, "Location").get("Placement")
    if placement is None:
        return None
    placement_obj = _require_object(placement, uri, "Location/Placement")
    return _optional_str(placement_obj, "Rack", uri, "Location/Placement/")


def power_control_members(payload: object, uri: str) -> list[JsonObject]:
    """The members of `Power.PowerControl` (empty when the array is absent)."""
    obj = _require_object(payload, uri)
    members = obj.get("PowerControl")
    if members is None:
        return []
    if not isinstance(members, list):
        raise RedfishPayloadError(uri, "PowerControl", f"expected an array, got {_kind(members)}")
    return [_require_object(m, uri, f"PowerControl/{i}") for i, m in enumerate(members)]


def parse_power_control(payload: object, uri: str, chassis_uri: str) -> ServerPowerReading:
    """`Power.PowerControl[0]`: consumed watts and the limit in force (null = no limit).

    Member 0 is the whole-chassis input power in every layout seen; later members, when present,
    split it by domain and would double count if summed.
    """
    members = power_control_members(payload, uri)
    if not members:
        raise RedfishPayloadError(uri, "PowerControl", "no PowerControl member to read")
    member = members[0]
    limit_obj = member.get("PowerLimit")
    limit_w = None
    if limit_obj is not None:
        limit = _require_object(limit_obj, uri, "PowerControl/0/PowerLimit")
        limit_w = _optional_number(limit, "LimitInWatts", uri, "PowerControl/0/PowerLimit/")
    return ServerPowerReading(
        chassis_uri=chassis_uri,
        resource_uri=uri,
        power_w=_optional_number(member, "PowerConsumedWatts", uri, "PowerControl/0/"),
        limit_w=limit_w,
    )


def parse_power_control_limits(payload: object, uri: str) -> list[PowerLimitTarget]:
    """Every PowerControl member that carries a writable `PowerLimit` object."""
    targets: list[PowerLimitTarget] = []
    for index, member in enumerate(power_control_members(payload, uri)):
        limit_obj = member.get("PowerLimit")
        if limit_obj is None:
            continue
        path = f"PowerControl/{index}/"
        limit = _require_object(limit_obj, uri, f"{path}PowerLimit")
        targets.append(
            PowerLimitTarget(
                kind="power_control_limit",
                uri=f"{uri}#/PowerControl/{index}",
                min_w=None,
                # A limit above what the supplies can deliver is meaningless.
                max_w=_optional_number(member, "PowerCapacityWatts", uri, path),
                current_w=_optional_number(limit, "LimitInWatts", uri, f"{path}PowerLimit/"),
            )
        )
    return targets


def parse_power_limit_control(payload: object, uri: str) -> PowerLimitTarget | None:
    """A Control resource, if it is a whole-server power limit (ControlType Power, SetPoint)."""
    obj = _require_object(payload, uri)
    if obj.get("ControlType") != "Power" or "SetPoint" not in obj:
        return None
    context = obj.get("PhysicalContext")
    if context is not None and context not in _WHOLE_SERVER_CONTEXTS:
        return None  # a CPU or GPU power limit is not a server cap
    units = _optional_str(obj, "SetPointUnits", uri)
    if units is not None and units != "W":
        raise RedfishPayloadError(uri, "SetPointUnits", f"expected 'W', got {units!r}")
    return PowerLimitTarget(
        kind="control_setpoint",
        uri=odata_id(obj, uri),
        min_w=_optional_number(obj, "AllowableMin", uri),
        max_w=_optional_number(obj, "AllowableMax", uri),
        current_w=_optional_number(obj, "SetPoint", uri),
    )


def parse_environment_metrics(
    payload: object, uri: str, chassis_uri: str
) -> ServerPowerReading | None:
    """`EnvironmentMetrics.PowerWatts.Reading` and `PowerLimitWatts.SetPoint`, if reported."""
    obj = _require_object(payload, uri)
    power = obj.get("PowerWatts")
    if power is None:
        return None
    power_obj = _require_object(power, uri, "PowerWatts")
    limit = obj.get("PowerLimitWatts")
    limit_w = None
    if limit is not None:
        limit_obj = _require_object(limit, uri, "PowerLimitWatts")
        limit_w = _optional_number(limit_obj, "SetPoint", uri, "PowerLimitWatts/")
    return ServerPowerReading(
        chassis_uri=chassis_uri,
        resource_uri=uri,
        power_w=_optional_number(power_obj, "Reading", uri, "PowerWatts/"),
        limit_w=limit_w,
    )


def is_server_power_sensor(payload: object, uri: str) -> bool:
    """True for a Sensor that reads the whole chassis' power (not one CPU or outlet)."""
    obj = _require_object(payload, uri)
    if obj.get("ReadingType") != "Power":
        return False
    context = obj.get("PhysicalContext")
    if context is None:
        # No location given: only a sensor that says it is the total will do.
        return obj.get("ElectricalContext") == "Total"
    # "Total" alone is not enough: a power supply's input sensor is "Total" for that supply.
    return context in ("Chassis", "SystemBoard")


def parse_power_sensor(payload: object, uri: str, chassis_uri: str) -> ServerPowerReading:
    """A power Sensor's `Reading` (watts) and `ReadingTime`."""
    obj = _require_object(payload, uri)
    if obj.get("ReadingType") != "Power":
        raise RedfishPayloadError(
            uri, "ReadingType", f"expected 'Power', got {obj.get('ReadingType')!r}"
        )
    units = _optional_str(obj, "ReadingUnits", uri)
    if units is not None and units != "W":
        raise RedfishPayloadError(uri, "ReadingUnits", f"expected 'W', got {units!r}")
    return ServerPowerReading(
        chassis_uri=chassis_uri,
        resource_uri=uri,
        power_w=_optional_number(obj, "Reading", uri),
        timestamp=_optional_str(obj, "ReadingTime", uri),
    )


def parse_power_subsystem_capacity(payload: object, uri: str) -> float | None:
    """`PowerSubsystem.CapacityWatts`: what the supplies can deliver, in watts."""
    return _optional_number(_require_object(payload, uri), "CapacityWatts", uri)


def parse_reading(
    source: ReadingSource, payload: object, chassis_uri: str
) -> ServerPowerReading | None:
    """Decode a payload fetched from one of a server's reading sources."""
    if source.kind == "power_control":
        return parse_power_control(payload, source.uri, chassis_uri)
    if source.kind == "environment_metrics":
        return parse_environment_metrics(payload, source.uri, chassis_uri)
    return parse_power_sensor(payload, source.uri, chassis_uri)


def parse_outlet(payload: object, uri: str) -> OutletReading:
    """A PDU Outlet: `PowerWatts.Reading`, `PowerState` and the PowerControl action target."""
    obj = _require_object(payload, uri)
    power = obj.get("PowerWatts")
    power_w = None
    if power is not None:
        power_obj = _require_object(power, uri, "PowerWatts")
        power_w = _optional_number(power_obj, "Reading", uri, "PowerWatts/")
    state = _optional_str(obj, "PowerState", uri)
    if state not in (None, "On", "Off", "PoweringOn", "PoweringOff", "Paused"):
        raise RedfishPayloadError(uri, "PowerState", f"unknown power state {state!r}")
    target = None
    actions = obj.get("Actions")
    if actions is not None:
        action = _require_object(actions, uri, "Actions").get("#Outlet.PowerControl")
        if action is not None:
            target = _optional_str(
                _require_object(action, uri, "Actions/#Outlet.PowerControl"),
                "target",
                uri,
                "Actions/#Outlet.PowerControl/",
            )
    return OutletReading(
        uri=odata_id(obj, uri),
        outlet_id=_resource_id(obj, uri),
        power_w=power_w,
        power_on=None if state is None else state in ("On", "PoweringOn"),
        control_target=target,
    )


def parse_error_message(payload: object) -> str:
    """The human message of a Redfish error body (`error.@Message.ExtendedInfo[].Message`)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("error"), Mapping):
        return "no Redfish error body"
    error = payload["error"]
    messages = [
        str(info["Message"])
        for info in error.get("@Message.ExtendedInfo", [])
        if isinstance(info, Mapping) and "Message" in info
    ]
    return "; ".join(messages) or str(error.get("message", error.get("code", "unknown error")))


# ---------------------------------------------------------------- encoding


def encode_power_limit(target: PowerLimitTarget, watts: float) -> RequestBody:
    """The PATCH that sets a server power limit, in whole watts, through `target`.

    Whole watts because BMCs commonly reject fractional limits; the range check names the
    bounds the device advertised.
    """
    if not math.isfinite(watts) or watts <= 0:
        raise PowerLimitRangeError(f"power limit for {target.uri} must be > 0 W, got {watts!r}")
    value = round(watts)
    if target.min_w is not None and value < target.min_w:
        raise PowerLimitRangeError(
            f"power limit {value} W for {target.uri} is below its AllowableMin {target.min_w} W"
        )
    if target.max_w is not None and value > target.max_w:
        raise PowerLimitRangeError(
            f"power limit {value} W for {target.uri} is above its maximum {target.max_w} W"
        )
    if target.kind == "control_setpoint":
        return RequestBody("PATCH", target.patch_uri, {"SetPoint": value})
    # Redfish PATCH on an array: an empty object leaves that member unchanged (DSP0266 §7.8).
    members: list[dict[str, Any]] = [{} for _ in range(target.member_index)]
    members.append({"PowerLimit": {"LimitInWatts": value}})
    return RequestBody("PATCH", target.patch_uri, {"PowerControl": members})


def encode_outlet_power(outlet: OutletReading, on: bool) -> RequestBody:
    """The `#Outlet.PowerControl` action that switches an outlet on or off."""
    if outlet.control_target is None:
        raise RedfishPayloadError(
            outlet.uri, "Actions/#Outlet.PowerControl", "outlet offers no PowerControl action"
        )
    return RequestBody("POST", outlet.control_target, {"PowerState": "On" if on else "Off"})
