"""`$metadata` (CSDL) and the OData service document of the emulated service."""

from __future__ import annotations

from typing import Any

ROOT = "/redfish/v1"

# (namespace, versioned namespace or None) for every type the emulator serves.
SCHEMAS: tuple[tuple[str, str | None], ...] = (
    ("ServiceRoot", "ServiceRoot.v1_20_0"),
    ("Resource", "Resource.v1_23_0"),
    ("Chassis", "Chassis.v1_28_0"),
    ("ChassisCollection", None),
    ("Power", "Power.v1_7_3"),
    ("PowerSubsystem", "PowerSubsystem.v1_1_3"),
    ("Sensor", "Sensor.v1_12_0"),
    ("SensorCollection", None),
    ("EnvironmentMetrics", "EnvironmentMetrics.v1_5_0"),
    ("Control", "Control.v1_7_0"),
    ("ControlCollection", None),
    ("PowerEquipment", "PowerEquipment.v1_2_3"),
    ("PowerDistribution", "PowerDistribution.v1_6_0"),
    ("PowerDistributionCollection", None),
    ("Outlet", "Outlet.v1_4_4"),
    ("OutletCollection", None),
    ("SessionService", "SessionService.v1_2_0"),
    ("Session", "Session.v1_8_0"),
    ("SessionCollection", None),
    ("Message", "Message.v1_3_0"),
)


def metadata_xml() -> str:
    """The service's CSDL document: references to the DMTF schemas it uses."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
    ]
    for namespace, versioned in SCHEMAS:
        parts.append(
            f'  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/{namespace}_v1.xml">'
        )
        parts.append(f'    <edmx:Include Namespace="{namespace}"/>')
        if versioned is not None:
            parts.append(f'    <edmx:Include Namespace="{versioned}"/>')
        parts.append("  </edmx:Reference>")
    parts += [
        "  <edmx:DataServices>",
        '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">',
        '      <EntityContainer Name="Service" Extends="ServiceRoot.v1_20_0.ServiceContainer"/>',
        "    </Schema>",
        "  </edmx:DataServices>",
        "</edmx:Edmx>",
        "",
    ]
    return "\n".join(parts)


def service_document() -> dict[str, Any]:
    """The OData service document at /redfish/v1/odata."""
    singletons = [
        ("Service", f"{ROOT}/"),
        ("Chassis", f"{ROOT}/Chassis"),
        ("PowerEquipment", f"{ROOT}/PowerEquipment"),
        ("SessionService", f"{ROOT}/SessionService"),
        ("Sessions", f"{ROOT}/SessionService/Sessions"),
    ]
    return {
        "@odata.context": f"{ROOT}/$metadata",
        "value": [{"name": n, "kind": "Singleton", "url": u} for n, u in singletons],
    }
