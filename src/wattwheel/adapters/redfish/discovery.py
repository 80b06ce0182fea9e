"""Discover power resources from a Redfish service root, sans-I/O (like h11).

`discover_resources()` is a generator that yields the URI it needs next and receives that payload
(or None when the device does not serve it), so the same walk runs over recorded payloads in tests
(`run_discovery`) and over HTTP in the client. Nothing assumes one vendor's layout: every resource
is reached through the links of the payload before it.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace

from wattwheel.adapters.redfish.codec import (
    SERVICE_ROOT_URI,
    collection_members,
    is_server_power_sensor,
    link,
    parse_chassis,
    parse_environment_metrics,
    parse_outlet,
    parse_power_control_limits,
    parse_power_limit_control,
    parse_power_subsystem_capacity,
    parse_service_root,
    placement_rack,
    power_control_members,
)
from wattwheel.adapters.redfish.values import (
    ChassisLinks,
    DiscoveredServer,
    JsonObject,
    OutletReading,
    PowerLimitTarget,
    ReadingSource,
    RedfishInventory,
    RedfishPayloadError,
)

# How many members of a Sensors collection discovery reads before giving up on a power sensor.
MAX_SENSORS_SCANNED = 16
Walk = Generator[str, JsonObject | None, RedfishInventory]


def discover_resources(root_uri: str = SERVICE_ROOT_URI) -> Walk:
    """Walk a service from its root: yields URIs to GET, receives payloads, returns an inventory.

    Send None for a resource the device does not serve (404, error): that branch is skipped.
    """
    root = yield root_uri
    if root is None:
        raise RedfishPayloadError(root_uri, "", "service root unavailable")
    links = parse_service_root(root, root_uri)
    servers: list[DiscoveredServer] = []
    if links.chassis_uri is not None:
        for chassis_uri in (yield from _members(links.chassis_uri)):
            chassis = yield chassis_uri
            if chassis is None:
                continue
            server = yield from _discover_chassis(parse_chassis(chassis, chassis_uri))
            if server is not None:
                servers.append(server)
    outlets: list[OutletReading] = []
    if links.power_equipment_uri is not None:
        outlets = yield from _discover_outlets(links.power_equipment_uri)
    return RedfishInventory(servers=tuple(servers), outlets=tuple(outlets))


def _members(collection_uri: str) -> Generator[str, JsonObject | None, list[str]]:
    payload = yield collection_uri
    return [] if payload is None else collection_members(payload, collection_uri)


def _discover_chassis(
    links: ChassisLinks,
) -> Generator[str, JsonObject | None, DiscoveredServer | None]:
    sources: list[ReadingSource] = []
    targets: list[PowerLimitTarget] = []
    if links.power_uri is not None:
        power = yield links.power_uri
        if power is not None and power_control_members(power, links.power_uri):
            sources.append(ReadingSource("power_control", links.power_uri))
            targets.extend(parse_power_control_limits(power, links.power_uri))
    if links.environment_metrics_uri is not None:
        env = yield links.environment_metrics_uri
        uri = links.environment_metrics_uri
        if env is not None and parse_environment_metrics(env, uri, links.chassis_uri) is not None:
            sources.append(ReadingSource("environment_metrics", uri))
    if links.controls_uri is not None:
        for control_uri in (yield from _members(links.controls_uri)):
            control = yield control_uri
            target = None if control is None else parse_power_limit_control(control, control_uri)
            if target is not None:
                targets.append(target)
    if not sources and links.sensors_uri is not None:
        sensor_uri = yield from _find_power_sensor(links.sensors_uri)
        if sensor_uri is not None:
            sources.append(ReadingSource("sensor", sensor_uri))
    if not sources:
        return None  # a chassis with no power reading is not a server we can manage
    capacity_w = None
    if links.power_subsystem_uri is not None:
        subsystem = yield links.power_subsystem_uri
        if subsystem is not None:
            capacity_w = parse_power_subsystem_capacity(subsystem, links.power_subsystem_uri)
    return DiscoveredServer(
        chassis_uri=links.chassis_uri,
        chassis_id=links.chassis_id,
        reading_sources=tuple(sources),
        limit_targets=tuple(targets),
        capacity_w=capacity_w,
        rack=links.rack,
    )


def _find_power_sensor(sensors_uri: str) -> Generator[str, JsonObject | None, str | None]:
    members = yield from _members(sensors_uri)
    # Sensor ids usually say what they measure; look at "...Power..." ones first to keep
    # discovery of a BMC with dozens of sensors to a few requests.
    ordered = sorted(members, key=lambda m: "power" not in m.rsplit("/", 1)[-1].lower())
    for sensor_uri in ordered[:MAX_SENSORS_SCANNED]:
        sensor = yield sensor_uri
        if sensor is not None and is_server_power_sensor(sensor, sensor_uri):
            return sensor_uri
    return None


def _discover_outlets(
    power_equipment_uri: str,
) -> Generator[str, JsonObject | None, list[OutletReading]]:
    equipment = yield power_equipment_uri
    if equipment is None:
        return []
    rack_pdus_uri = link(equipment, "RackPDUs", power_equipment_uri)
    if rack_pdus_uri is None:
        return []
    outlets: list[OutletReading] = []
    for pdu_uri in (yield from _members(rack_pdus_uri)):
        pdu = yield pdu_uri
        outlets_uri = None if pdu is None else link(pdu, "Outlets", pdu_uri)
        if pdu is None or outlets_uri is None:
            continue
        rack = placement_rack(pdu, pdu_uri)
        for outlet_uri in (yield from _members(outlets_uri)):
            outlet = yield outlet_uri
            if outlet is not None:
                outlets.append(replace(parse_outlet(outlet, outlet_uri), rack=rack))
    return outlets


def run_discovery(
    payloads: Mapping[str, JsonObject], root_uri: str = SERVICE_ROOT_URI
) -> RedfishInventory:
    """Drive `discover_resources` over already-fetched payloads keyed by URI (recorded data)."""
    walk = discover_resources(root_uri)
    try:
        uri = next(walk)
        while True:
            uri = walk.send(payloads.get(uri))
    except StopIteration as done:
        inventory: RedfishInventory = done.value
        return inventory
