"""Redfish (DMTF DSP0266/DSP0268) server and PDU power: pure codec, async client, Protocol."""

from wattwheel.adapters.redfish.client import RedfishClient
from wattwheel.adapters.redfish.protocol import FakeServerPowerDevice, ServerPowerDevice
from wattwheel.adapters.redfish.values import (
    DiscoveredServer,
    OutletReading,
    PowerLimitRangeError,
    PowerLimitTarget,
    RedfishInventory,
    RedfishPayloadError,
    ServerPowerReading,
)

__all__ = [
    "DiscoveredServer",
    "FakeServerPowerDevice",
    "OutletReading",
    "PowerLimitRangeError",
    "PowerLimitTarget",
    "RedfishClient",
    "RedfishInventory",
    "RedfishPayloadError",
    "ServerPowerDevice",
    "ServerPowerReading",
]
