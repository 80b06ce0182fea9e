"""The runtime's I/O concerns, one small Protocol each (fakes live in :mod:`.fakes`).

The runtime sits below the adapters in the layering, so it names what it needs here and the
edges (``adapters/ports.py``) wrap the concrete Redfish / SNMP / MQTT / Modbus / scheduler
clients to fit. Every method must come back without raising on a device fault (adapters return
stale or failed results); the runtime still guards each call with a timeout and a catch-all so a
misbehaving device cannot stop the loop. Power in watts at this boundary, like the wire formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from wattwheel.domain.converter import ConverterSettings
from wattwheel.domain.shifts import ShiftOrder
from wattwheel.domain.telemetry import PowerSample, TelemetrySource
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.state import DecisionRecord, EventRecord

__all__ = [
    "FlywheelPort",
    "FlywheelStatusW",
    "OutletActuator",
    "RecordSink",
    "ReservePort",
    "ReserveStatus",
    "SchedulerPort",
    "ServerCapActuator",
    "TelemetrySource",
]


class ServerCapActuator(Protocol):
    """Writes per-server power limits (Redfish BMCs, IPMI DCMI...)."""

    async def set_caps(self, caps_w: Mapping[str, float | None]) -> dict[str, bool]:
        """Apply ``server_id -> cap`` (W; None lifts the cap). Returns which writes succeeded."""
        ...


class OutletActuator(Protocol):
    """Switches PDU outlets (SNMP rPDU, Redfish ``#Outlet.PowerControl``). Sheds NON-critical
    outlets only: the runtime never asks to switch off an outlet its inventory marks critical,
    and adapters refuse it as well."""

    async def set_outlets(self, states: Mapping[str, bool]) -> dict[str, bool]:
        """``outlet_key -> on`` (outlet keys come from the inventory). Which writes succeeded."""
        ...


@dataclass(frozen=True)
class FlywheelStatusW:
    """One bank's status in watts as the controller reports it (``stale``: last good reading)."""

    soc: float
    power_w: float
    max_charge_w: float
    max_discharge_w: float
    stale: bool = False


class FlywheelPort(Protocol):
    """One flywheel bank per power domain (a SunSpec controller over Modbus TCP)."""

    async def read(self) -> FlywheelStatusW | None:
        """The bank's status; None if it never answered."""
        ...

    async def write_setpoint(self, power_w: float) -> bool:
        """Command ``power_w`` (+ discharge / - charge). False if it did not get through."""
        ...


class ConverterPort(Protocol):
    """A flywheel bank whose converter runs its own feed-power loop (SunSpec vendor model
    64220): the controller sets its parameters, the converter regulates the feed itself. A
    :class:`FlywheelPort` may also implement this; the runtime checks with ``hasattr``."""

    async def write_converter(self, settings: ConverterSettings) -> bool:
        """Write one domain's parameters (arrays of shape (1,)); False if they did not get
        through or the bank has no such loop."""
        ...


@dataclass(frozen=True)
class ReserveStatus:
    """The shared reserve as seen by one domain (``mode``: 0 off, 1 starting, 2 on)."""

    mode: int
    ready_in_s: float
    min_on_left_s: float
    delivered_kw: float


class ReservePort(Protocol):
    """The oversubscribed reserve power system (per-domain transfer switch)."""

    async def read(self) -> dict[str, ReserveStatus]:
        """Status per domain id (domains it does not report are treated as unknown)."""
        ...

    async def command(self, domain_id: str, on: bool, power_kw: float, warm: bool = False) -> bool:
        """Request (or release) the reserve for a domain with an assigned power (kW);
        ``warm``: the domain's plan wants it pre-warmed (never a start)."""
        ...


class SchedulerPort(Protocol):
    """Shift/defer requests to the workload scheduler (webhook or MQTT topic)."""

    async def request(
        self, now_s: float, shifts: Sequence[ShiftOrder], defer_kw: Mapping[str, float]
    ) -> bool:
        """Send these shift orders (each replaces its (source, target) pair's previous one;
        domains by index in the site) and, if any, deferral levels per domain (kW). False if
        the scheduler did not get them all."""
        ...


class RampLimitPort(Protocol):
    """A scheduler that also takes the ramp-up limit at job start (``ramp_limit`` requests). A
    :class:`SchedulerPort` may implement this; the runtime checks with ``hasattr``."""

    async def ramp_limit(
        self, now_s: float, ramp_kw_per_s: Mapping[str, float], duration_s: float
    ) -> bool:
        """Ask for these limits per domain id (kW/s), in force for ``duration_s`` from
        ``now_s`` (each replaces the domain's previous one). False if not all delivered."""
        ...


class RecordSink(Protocol):
    """Where the audit trail goes (the store; blocking calls, run off the event loop)."""

    def write_telemetry(self, samples: Sequence[PowerSample]) -> object: ...

    def write_forecast(self, forecast: Forecast) -> object: ...

    def write_decisions(self, records: Sequence[DecisionRecord]) -> object: ...

    def write_event(self, event: EventRecord) -> object: ...
