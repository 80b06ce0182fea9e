"""The JSON bodies of the emulated Redfish resources (shapes of DMTF's public-rackmount1/pdu).

Each builder takes the current state and returns a fresh payload, so every GET shows the power
drawn right now. Schema versions are those of DMTF Redfish 2025.4 (DSP8010).
"""

from __future__ import annotations

from typing import Any

from wattwheel.emulate.redfish.state import ServerSnapshot

ROOT = "/redfish/v1"
CONTROL_ID = "PowerLimit"
SENSOR_ID = "TotalPower"
OUTLET_ACTION = "Outlet.PowerControl"

Payload = dict[str, Any]
_OK = {"State": "Enabled", "Health": "OK"}


def link(uri: str) -> dict[str, str]:
    return {"@odata.id": uri}


def chassis_uri(server_id: str) -> str:
    return f"{ROOT}/Chassis/{server_id}"


def rack_pdu_uri(rack_id: str) -> str:
    return f"{ROOT}/PowerEquipment/RackPDUs/{rack_id}"


def outlet_uri(rack_id: str, server_id: str) -> str:
    return f"{rack_pdu_uri(rack_id)}/Outlets/{server_id}"


def _resource(uri: str, odata_type: str, resource_id: str, name: str) -> Payload:
    type_name = odata_type.rpartition(".")[2]
    return {
        "@odata.id": uri,
        "@odata.type": f"#{odata_type}",
        "@odata.context": f"{ROOT}/$metadata#{type_name}.{type_name}",
        "Id": resource_id,
        "Name": name,
    }


def collection(uri: str, type_name: str, name: str, members: list[str]) -> Payload:
    """A resource collection, e.g. `type_name="ChassisCollection"`."""
    return {
        "@odata.id": uri,
        "@odata.type": f"#{type_name}.{type_name}",
        "@odata.context": f"{ROOT}/$metadata#{type_name}.{type_name}",
        "Name": name,
        "Members@odata.count": len(members),
        "Members": [link(m) for m in members],
    }


# ---------------------------------------------------------------- service-level resources


def service_root(service_uuid: str) -> Payload:
    body = _resource(f"{ROOT}/", "ServiceRoot.v1_20_0.ServiceRoot", "RootService", "Root Service")
    body.update(
        {
            "RedfishVersion": "1.20.0",
            "UUID": service_uuid,
            "Product": "wattwheel Redfish emulator",
            "Vendor": "wattwheel",
            "Chassis": link(f"{ROOT}/Chassis"),
            "PowerEquipment": link(f"{ROOT}/PowerEquipment"),
            "SessionService": link(f"{ROOT}/SessionService"),
            "Links": {"Sessions": link(f"{ROOT}/SessionService/Sessions")},
        }
    )
    return body


def session_service(timeout_s: int) -> Payload:
    uri = f"{ROOT}/SessionService"
    body = _resource(uri, "SessionService.v1_2_0.SessionService", "SessionService", "Sessions")
    body.update(
        {
            "ServiceEnabled": True,
            "SessionTimeout": timeout_s,
            "Sessions": link(f"{uri}/Sessions"),
            "Status": _OK,
        }
    )
    return body


def session(session_id: str, user_name: str) -> Payload:
    uri = f"{ROOT}/SessionService/Sessions/{session_id}"
    body = _resource(uri, "Session.v1_8_0.Session", session_id, "User Session")
    body["UserName"] = user_name
    return body


# ---------------------------------------------------------------- one chassis per server


def chassis(s: ServerSnapshot) -> Payload:
    uri = chassis_uri(s.server_id)
    body = _resource(uri, "Chassis.v1_28_0.Chassis", s.server_id, f"Server {s.server_id}")
    body.update(
        {
            "ChassisType": "RackMount",
            "Manufacturer": "wattwheel",
            "Model": "Emulated 1U server",
            "PowerState": "On" if s.outlet_on else "Off",
            "Location": {"Placement": {"Rack": s.rack_id}},
            "Status": _OK,
            "PowerSubsystem": link(f"{uri}/PowerSubsystem"),
            "EnvironmentMetrics": link(f"{uri}/EnvironmentMetrics"),
            "Sensors": link(f"{uri}/Sensors"),
            "Controls": link(f"{uri}/Controls"),
            # Deprecated by DMTF but still what most installed BMCs offer; clients read both.
            "Power": link(f"{uri}/Power"),
            "Links": {"PowerOutlets": [link(outlet_uri(s.rack_id, s.server_id))]},
        }
    )
    return body


def power(s: ServerSnapshot) -> Payload:
    uri = f"{chassis_uri(s.server_id)}/Power"
    body = _resource(uri, "Power.v1_7_3.Power", "Power", "Power")
    body["PowerControl"] = [
        {
            "@odata.id": f"{uri}#/PowerControl/0",
            "MemberId": "0",
            "Name": "Server Input Power",
            "PowerConsumedWatts": s.consumed_w,
            "PowerCapacityWatts": s.limits.max_w,
            "PowerLimit": {
                "LimitInWatts": s.limit_w,
                "LimitException": "LogEventOnly",
                "CorrectionInMs": round(s.cap_delay_s * 1000),
            },
            "RelatedItem": [link(chassis_uri(s.server_id))],
            "Status": _OK,
        }
    ]
    return body


def power_subsystem(s: ServerSnapshot) -> Payload:
    uri = f"{chassis_uri(s.server_id)}/PowerSubsystem"
    body = _resource(uri, "PowerSubsystem.v1_1_3.PowerSubsystem", "PowerSubsystem", "Power")
    body.update(
        {
            "CapacityWatts": s.limits.max_w,
            "Allocation": {"AllocatedWatts": s.limit_w, "RequestedWatts": s.limits.max_w},
            "Status": _OK,
        }
    )
    return body


def sensors(s: ServerSnapshot) -> Payload:
    uri = f"{chassis_uri(s.server_id)}/Sensors"
    return collection(uri, "SensorCollection", "Chassis sensors", [f"{uri}/{SENSOR_ID}"])


def total_power_sensor(s: ServerSnapshot, reading_time: str) -> Payload:
    uri = f"{chassis_uri(s.server_id)}/Sensors/{SENSOR_ID}"
    body = _resource(uri, "Sensor.v1_12_0.Sensor", SENSOR_ID, "Server input power")
    body.update(
        {
            "ReadingType": "Power",
            "ReadingUnits": "W",
            "Reading": s.consumed_w,
            "ReadingTime": reading_time,
            "ReadingRangeMin": 0,
            "ReadingRangeMax": s.limits.max_w,
            "PhysicalContext": "Chassis",
            "ElectricalContext": "Total",
            "Implementation": "Synthesized",
            "Status": _OK,
        }
    )
    return body


def environment_metrics(s: ServerSnapshot) -> Payload:
    base = chassis_uri(s.server_id)
    uri = f"{base}/EnvironmentMetrics"
    body = _resource(uri, "EnvironmentMetrics.v1_5_0.EnvironmentMetrics", "EnvironmentMetrics", "")
    body["Name"] = "Chassis Environment Metrics"
    body["PowerWatts"] = {"Reading": s.consumed_w, "DataSourceUri": f"{base}/Sensors/{SENSOR_ID}"}
    body["PowerLimitWatts"] = {
        "SetPoint": s.limit_w,
        "AllowableMin": s.limits.min_w,
        "AllowableMax": s.limits.max_w,
        "ControlMode": "Automatic",
        "DataSourceUri": f"{base}/Controls/{CONTROL_ID}",
    }
    return body


def controls(s: ServerSnapshot) -> Payload:
    uri = f"{chassis_uri(s.server_id)}/Controls"
    return collection(uri, "ControlCollection", "Chassis controls", [f"{uri}/{CONTROL_ID}"])


def power_limit_control(s: ServerSnapshot) -> Payload:
    base = chassis_uri(s.server_id)
    uri = f"{base}/Controls/{CONTROL_ID}"
    body = _resource(uri, "Control.v1_7_0.Control", CONTROL_ID, "Server Power Limit")
    body.update(
        {
            "PhysicalContext": "Chassis",
            "ControlType": "Power",
            "ControlMode": "Automatic",
            "SetPoint": s.limit_w,
            "SetPointUnits": "W",
            "AllowableMin": s.limits.min_w,
            "AllowableMax": s.limits.max_w,
            "Sensor": {"Reading": s.consumed_w, "DataSourceUri": f"{base}/Sensors/{SENSOR_ID}"},
            "Status": _OK,
        }
    )
    return body


# ---------------------------------------------------------------- the rack PDU feeding them


def power_equipment() -> Payload:
    uri = f"{ROOT}/PowerEquipment"
    body = _resource(uri, "PowerEquipment.v1_2_3.PowerEquipment", "PowerEquipment", "Power")
    body.update({"Status": _OK, "RackPDUs": link(f"{uri}/RackPDUs")})
    return body


def rack_pdu(rack_id: str) -> Payload:
    uri = rack_pdu_uri(rack_id)
    kind = "PowerDistribution.v1_6_0.PowerDistribution"
    body = _resource(uri, kind, rack_id, f"Rack PDU of rack {rack_id}")
    body.update(
        {
            "EquipmentType": "RackPDU",
            "Location": {"Placement": {"Rack": rack_id}},
            "Manufacturer": "wattwheel",
            "Model": "Emulated rack PDU",
            "Status": _OK,
            "Outlets": link(f"{uri}/Outlets"),
        }
    )
    return body


def outlet(s: ServerSnapshot) -> Payload:
    uri = outlet_uri(s.rack_id, s.server_id)
    body = _resource(uri, "Outlet.v1_4_4.Outlet", s.server_id, f"Outlet feeding {s.server_id}")
    body.update(
        {
            "PowerState": "On" if s.outlet_on else "Off",
            "PowerEnabled": True,
            "PowerWatts": {"Reading": s.consumed_w},
            "Status": _OK,
            "Actions": {
                f"#{OUTLET_ACTION}": {
                    "target": f"{uri}/Actions/{OUTLET_ACTION}",
                    "PowerState@Redfish.AllowableValues": ["On", "Off"],
                }
            },
        }
    )
    return body
