"""The pure Redfish codec on DMTF's recorded public-rackmount1 and public-pdu payloads."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from wattwheel.adapters.redfish.codec import (
    encode_outlet_power,
    encode_power_limit,
    is_server_power_sensor,
    parse_environment_metrics,
    parse_error_message,
    parse_outlet,
    parse_power_control,
    parse_power_limit_control,
    parse_power_sensor,
)
from wattwheel.adapters.redfish.discovery import run_discovery
from wattwheel.adapters.redfish.values import (
    OutletReading,
    PowerLimitRangeError,
    PowerLimitTarget,
    RedfishPayloadError,
)

Payloads = dict[str, dict[str, Any]]
CHASSIS = "/redfish/v1/Chassis/1U"


def test_discovery_finds_every_power_resource_of_the_1u_server(
    rackmount_payloads: Payloads,
) -> None:
    inventory = run_discovery(rackmount_payloads)
    assert [s.chassis_uri for s in inventory.servers] == [CHASSIS]
    server = inventory.servers[0]
    assert [(r.kind, r.uri) for r in server.reading_sources] == [
        ("power_control", f"{CHASSIS}/Power"),
        ("environment_metrics", f"{CHASSIS}/EnvironmentMetrics"),
    ]
    assert server.capacity_w == 2000.0
    assert server.rack == "WEB43"  # Location.Placement.Rack
    # The Control is preferred over the deprecated PowerControl limit when both exist.
    assert server.preferred_limit == PowerLimitTarget(
        "control_setpoint", f"{CHASSIS}/Controls/PowerLimit", 150.0, 1000.0, 500.0
    )
    kinds = sorted(t.kind for t in server.limit_targets)
    assert kinds == ["control_setpoint", "power_control_limit"]
    assert inventory.outlets == ()


def test_discovery_falls_back_to_a_power_sensor_when_only_sensors_exist(
    rackmount_payloads: Payloads,
) -> None:
    chassis = rackmount_payloads[CHASSIS]
    for name in ("Power", "EnvironmentMetrics", "Controls", "PowerSubsystem"):
        del chassis[name]
    server = run_discovery(rackmount_payloads).servers[0]
    # Scans "...Power..." sensors first and skips CPU1Power (PhysicalContext CPU).
    assert [(r.kind, r.uri) for r in server.reading_sources] == [
        ("sensor", f"{CHASSIS}/Sensors/TotalPower")
    ]
    assert server.preferred_limit is None
    assert server.capacity_w is None


def test_discovery_with_power_control_only_targets_limit_in_watts(
    rackmount_payloads: Payloads,
) -> None:
    del rackmount_payloads[CHASSIS]["Controls"]
    target = run_discovery(rackmount_payloads).servers[0].preferred_limit
    assert target is not None
    assert target.kind == "power_control_limit"
    assert target.uri == f"{CHASSIS}/Power#/PowerControl/0"
    assert (target.min_w, target.max_w, target.current_w) == (None, 800.0, 500.0)


def test_discovery_skips_resources_the_device_does_not_serve(rackmount_payloads: Payloads) -> None:
    del rackmount_payloads[f"{CHASSIS}/Power"]
    del rackmount_payloads[f"{CHASSIS}/Controls/PowerLimit"]
    server = run_discovery(rackmount_payloads).servers[0]
    assert [r.kind for r in server.reading_sources] == ["environment_metrics"]
    assert server.limit_targets == ()


def test_pdu_outlets_from_power_equipment(pdu_payloads: Payloads) -> None:
    inventory = run_discovery(pdu_payloads)
    outlets = {o.outlet_id: o for o in inventory.outlets}
    assert len(outlets) == 11
    a1 = outlets["A1"]
    assert a1.power_w == 197.4
    assert a1.power_on is True
    assert (
        a1.control_target == "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/A1/Outlet.PowerControl"
    )
    assert outlets["A5"].power_w is None  # A5 reports no PowerWatts
    total_w = sum(o.power_w for o in outlets.values() if o.power_w is not None)
    assert total_w == pytest.approx(
        197.4 + 384.5 + 349.9 + 228.3 + 321.6 + 426.5 + 56.8 + 394.1 + 355.4
    )


def test_power_control_reading(rackmount_payloads: Payloads) -> None:
    uri = f"{CHASSIS}/Power"
    reading = parse_power_control(rackmount_payloads[uri], uri, CHASSIS)
    assert (reading.power_w, reading.limit_w, reading.resource_uri) == (344.0, 500.0, uri)
    assert reading.stale is False


def test_environment_metrics_and_sensor_readings(rackmount_payloads: Payloads) -> None:
    env_uri, sensor_uri = f"{CHASSIS}/EnvironmentMetrics", f"{CHASSIS}/Sensors/TotalPower"
    env = parse_environment_metrics(rackmount_payloads[env_uri], env_uri, CHASSIS)
    assert env is not None
    assert (env.power_w, env.limit_w) == (374.0, 500.0)
    sensor = parse_power_sensor(rackmount_payloads[sensor_uri], sensor_uri, CHASSIS)
    assert (sensor.power_w, sensor.timestamp) == (374.0, "2019-08-13T04:14:33+06:00")


def test_power_sensor_classification(rackmount_payloads: Payloads) -> None:
    def sensor(name: str) -> bool:
        uri = f"{CHASSIS}/Sensors/{name}"
        return is_server_power_sensor(rackmount_payloads[uri], uri)

    assert sensor("TotalPower")
    assert not sensor("CPU1Power")  # one CPU, not the server
    assert not sensor("AmbientTemp")


def test_only_whole_server_power_controls_are_limits(rackmount_payloads: Payloads) -> None:
    uri = f"{CHASSIS}/Controls/CPU1Freq"
    assert parse_power_limit_control(rackmount_payloads[uri], uri) is None
    cpu_limit = copy.deepcopy(rackmount_payloads[f"{CHASSIS}/Controls/PowerLimit"])
    cpu_limit["PhysicalContext"] = "CPU"
    assert parse_power_limit_control(cpu_limit, uri) is None


def test_encode_setpoint_and_limit_in_watts() -> None:
    control = PowerLimitTarget("control_setpoint", f"{CHASSIS}/Controls/PowerLimit", 150.0, 1000.0)
    request = encode_power_limit(control, 420.4)
    assert (request.method, request.uri, request.body) == (
        "PATCH",
        f"{CHASSIS}/Controls/PowerLimit",
        {"SetPoint": 420},
    )
    member2 = PowerLimitTarget(
        "power_control_limit", f"{CHASSIS}/Power#/PowerControl/2", None, None
    )
    request = encode_power_limit(member2, 300)
    assert request.uri == f"{CHASSIS}/Power"
    assert request.body == {"PowerControl": [{}, {}, {"PowerLimit": {"LimitInWatts": 300}}]}


@pytest.mark.parametrize(
    ("watts", "words"),
    [(100.0, "AllowableMin 150"), (1200.0, "maximum 1000"), (math.nan, "> 0 W"), (-5.0, "> 0 W")],
)
def test_encode_rejects_limits_out_of_range(watts: float, words: str) -> None:
    control = PowerLimitTarget("control_setpoint", f"{CHASSIS}/Controls/PowerLimit", 150.0, 1000.0)
    with pytest.raises(PowerLimitRangeError, match=words):
        encode_power_limit(control, watts)


def test_outlet_power_control_action(pdu_payloads: Payloads) -> None:
    uri = "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/B2"
    outlet = parse_outlet(pdu_payloads[uri], uri)
    request = encode_outlet_power(outlet, on=False)
    assert (request.method, request.uri, request.body) == (
        "POST",
        f"{uri}/Outlet.PowerControl",
        {"PowerState": "Off"},
    )
    no_action = OutletReading(uri, "B2", 1.0, True, None)
    with pytest.raises(RedfishPayloadError, match="no PowerControl action"):
        encode_outlet_power(no_action, on=True)


def test_malformed_payloads_name_the_field_and_uri(rackmount_payloads: Payloads) -> None:
    uri = f"{CHASSIS}/Power"
    bad = copy.deepcopy(rackmount_payloads[uri])
    bad["PowerControl"][0]["PowerConsumedWatts"] = "lots"
    with pytest.raises(RedfishPayloadError) as caught:
        parse_power_control(bad, uri, CHASSIS)
    assert caught.value.uri == uri
    assert caught.value.field_path == "PowerControl/0/PowerConsumedWatts"
    assert "'lots'" in str(caught.value)

    rackmount_payloads["/redfish/v1/Chassis"]["Members"] = {"oops": 1}
    with pytest.raises(RedfishPayloadError, match="/redfish/v1/Chassis Members: expected an array"):
        run_discovery(rackmount_payloads)


def test_broken_link_is_reported() -> None:
    root = {"Chassis": {"href": "/redfish/v1/Chassis"}}
    with pytest.raises(RedfishPayloadError, match=r"Chassis/@odata\.id"):
        run_discovery({"/redfish/v1/": root})


def test_missing_service_root_is_an_error() -> None:
    with pytest.raises(RedfishPayloadError, match="service root unavailable"):
        run_discovery({})


def test_error_message_from_redfish_error_body() -> None:
    body = {
        "error": {
            "code": "Base.1.19.GeneralError",
            "message": "See ExtendedInfo",
            "@Message.ExtendedInfo": [{"Message": "The value '50' for SetPoint is out of range."}],
        }
    }
    assert parse_error_message(body) == "The value '50' for SetPoint is out of range."
    assert parse_error_message({"unexpected": True}) == "no Redfish error body"
