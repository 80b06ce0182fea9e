"""Modbus TCP / SunSpec flywheel controller adapter: pure codec + thin pymodbus client.

- :mod:`.models` lays out SunSpec models from pysunspec2's JSON definitions;
- :mod:`.codec` turns typed values into registers and back (scale factors, not-implemented);
- :mod:`.flywheel_map` presents a flywheel bank through models 1, 124, 802 and 713;
- :mod:`.link` is the I/O Protocol with an in-memory fake; :mod:`.client` the real client.
"""

from wattwheel.adapters.modbus.flywheel_map import FlywheelState, FlywheelStatus
from wattwheel.adapters.modbus.link import FakeFlywheelLink, FlywheelLink, FlywheelReading

__all__ = ["FakeFlywheelLink", "FlywheelLink", "FlywheelReading", "FlywheelState", "FlywheelStatus"]
