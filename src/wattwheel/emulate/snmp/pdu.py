"""A virtual APC rack PDU: the rack's trace power spread over switched, metered outlets.

It produces exactly the PowerNet-MIB objects :mod:`wattwheel.adapters.snmp.codec` reads
(rPDUIdentDevicePowerWatts, rPDU2DeviceStatusPower, the rPDU2 metered outlet table, the rPDU
outlet-control and rPDU2 switched tables) and accepts outlet on/off commands on both control
tables. A switched-off outlet draws 0 W and the device total drops by its share, so shedding
is visible in the readings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from wattwheel.adapters.snmp import codec
from wattwheel.adapters.snmp.snmprec import format_snmprec

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"


class RackPowerSource(Protocol):
    """The power a rack draws right now, in watts (the trace-driven site plugs in here)."""

    def power_w(self, rack_id: str) -> float: ...


class StaticRackPower:
    """A :class:`RackPowerSource` held in memory, settable from any thread (tests, demos)."""

    def __init__(self, power_w: Mapping[str, float]) -> None:
        self._lock = threading.Lock()
        self._power_w = dict(power_w)

    def set(self, rack_id: str, power_w: float) -> None:
        with self._lock:
            self._power_w[rack_id] = power_w

    def power_w(self, rack_id: str) -> float:
        with self._lock:
            return self._power_w.get(rack_id, 0.0)


class PduCommandError(ValueError):
    """A SET the virtual PDU does not accept; names the OID and value."""


class VirtualPdu:
    """One rack's PDU with ``outlet_count`` outlets sharing the rack power equally."""

    def __init__(self, rack_id: str, outlet_count: int = 8) -> None:
        if outlet_count < 1:
            raise ValueError(f"outlet_count must be >= 1, got {outlet_count}")
        self.rack_id = rack_id
        self.outlet_count = outlet_count
        self._on = [True] * outlet_count
        self._lock = threading.Lock()

    def outlet_on(self, outlet: int) -> bool:
        return self._on[outlet - 1]

    def outlet_states(self) -> tuple[bool, ...]:
        """On (True) / off per outlet, outlet 1 first."""
        return tuple(self._on)

    def outlet_power_w(self, rack_power_w: float) -> list[float]:
        """Each outlet's draw in watts: an equal share of the rack, 0 when switched off."""
        share_w = max(rack_power_w, 0.0) / self.outlet_count
        return [share_w if on else 0.0 for on in self._on]

    def values(self, rack_power_w: float) -> dict[str, int | bytes | str]:
        """The MIB objects for the current rack power (watts) and outlet states."""
        outlets_w = self.outlet_power_w(rack_power_w)
        total_w = sum(outlets_w)
        found: dict[str, int | bytes | str] = {
            SYS_DESCR: f"wattwheel virtual APC rPDU for rack {self.rack_id}",
            SYS_NAME: f"pdu-{self.rack_id}",
            codec.RPDU_IDENT_DEVICE_POWER_W: round(total_w),
            f"{codec.RPDU2_DEVICE_STATUS_POWER}.1": round(total_w / 10.0),  # hundredths of kW
        }
        for number, power_w in enumerate(outlets_w, start=1):
            on = self._on[number - 1]
            name = f"{self.rack_id}-outlet-{number}"
            found[f"{codec.RPDU2_OUTLET_METERED_NAME}.{number}"] = name
            found[f"{codec.RPDU2_OUTLET_METERED_NUMBER}.{number}"] = number
            found[f"{codec.RPDU2_OUTLET_METERED_POWER}.{number}"] = round(power_w)
            found[f"{codec.RPDU_OUTLET_CONTROL_NAME}.{number}"] = name
            found[f"{codec.RPDU_OUTLET_CONTROL_COMMAND}.{number}"] = (
                codec.IMMEDIATE_ON if on else codec.IMMEDIATE_OFF
            )
            found[f"{codec.RPDU2_OUTLET_SWITCHED_NAME}.{number}"] = name
            found[f"{codec.RPDU2_OUTLET_SWITCHED_STATE}.{number}"] = (
                codec.RPDU2_STATE_ON if on else codec.RPDU2_STATE_OFF
            )
            found[f"{codec.RPDU2_OUTLET_SWITCHED_COMMAND}.{number}"] = (
                codec.IMMEDIATE_ON if on else codec.IMMEDIATE_OFF
            )
        return found

    def is_writable(self, oid: str) -> bool:
        return self._command_outlet(oid) is not None

    def apply_set(self, oid: str, value: int) -> None:
        """Apply an immediateOn/immediateOff SET on either control table."""
        outlet = self._command_outlet(oid)
        if outlet is None:
            raise PduCommandError(f"{oid} is not an outlet command object")
        if value not in (codec.IMMEDIATE_ON, codec.IMMEDIATE_OFF):
            raise PduCommandError(f"{oid}: unsupported command {value} (1 = on, 2 = off)")
        with self._lock:
            self._on[outlet - 1] = value == codec.IMMEDIATE_ON

    def write_snmprec(self, path: Path, rack_power_w: float) -> None:
        """A static snmpsim recording of this PDU with writable (writecache) outlet commands."""
        values = self.values(rack_power_w)
        writable = {oid for oid in values if self.is_writable(oid)}
        path.write_text(format_snmprec(values, writecache=writable))

    def _command_outlet(self, oid: str) -> int | None:
        for prefix in (codec.RPDU_OUTLET_CONTROL_COMMAND, codec.RPDU2_OUTLET_SWITCHED_COMMAND):
            tail = oid.removeprefix(prefix + ".")
            if tail != oid and tail.isdigit() and 1 <= int(tail) <= self.outlet_count:
                return int(tail)
        return None


def write_site_snmprec(
    racks: Iterable[str], source: RackPowerSource, directory: Path, outlet_count: int = 8
) -> list[Path]:
    """One ``<rack>.snmprec`` per rack (a snapshot of ``source`` now) for ``snmpsim``.

    Serve with ``snmpsim-command-responder --data-dir=DIRECTORY``; the community of each PDU is
    its rack id and the outlet commands are writable (writecache).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for rack_id in racks:
        path = directory / f"{rack_id}.snmprec"
        VirtualPdu(rack_id, outlet_count).write_snmprec(path, source.power_w(rack_id))
        paths.append(path)
    return paths
