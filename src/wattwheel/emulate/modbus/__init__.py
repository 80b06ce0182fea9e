"""A SunSpec flywheel controller over Modbus TCP, following the domain flywheel physics."""

from wattwheel.emulate.modbus.bank import FlywheelBank, FlywheelBankConfig
from wattwheel.emulate.modbus.server import (
    FlywheelController,
    FlywheelEmulatorHandle,
    start_flywheel_emulator,
)

__all__ = [
    "FlywheelBank",
    "FlywheelBankConfig",
    "FlywheelController",
    "FlywheelEmulatorHandle",
    "start_flywheel_emulator",
]
