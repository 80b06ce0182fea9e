"""Redfish (DMTF DSP0266/DSP0268) server and PDU power: pure codec, async client, Protocol.

- `codec`: one payload -> typed values (`ServerPowerReading`, `PowerLimitTarget`,
  `OutletReading`) and the PATCH/POST bodies that set a limit or switch an outlet;
- `discovery`: the sans-I/O walk from the service root to every power resource;
- `client.RedfishClient`: httpx; `discover()`, `read_power()`, `read()` (a domain
  `TelemetrySource`), `set_power_limit(watts)`, `read_outlets()`, `set_outlet(uri, on)`; never
  raises on a device fault (stale/None readings, None/False results, one WARNING per fault);
- `protocol.ServerPowerDevice` and its in-memory `FakeServerPowerDevice`.
"""

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
