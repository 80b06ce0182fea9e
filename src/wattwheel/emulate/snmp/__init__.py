"""Virtual APC rack PDUs over real SNMP, driven by the trace (one PDU per rack)."""

from wattwheel.emulate.snmp.agent import SnmpEmulatorHandle, start_snmp_emulator
from wattwheel.emulate.snmp.pdu import RackPowerSource, StaticRackPower, VirtualPdu

__all__ = [
    "RackPowerSource",
    "SnmpEmulatorHandle",
    "StaticRackPower",
    "VirtualPdu",
    "start_snmp_emulator",
]
