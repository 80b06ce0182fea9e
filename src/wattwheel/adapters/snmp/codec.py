"""APC PowerNet-MIB rack PDU codec: SNMP variable bindings <-> typed readings and commands.

Pure: works on ``OID string -> value`` mappings (the client turns pysnmp objects into ``int``,
``bytes``, ``str`` or ``None`` for noSuchObject/noSuchInstance/endOfMibView), so it is tested
on recorded walks without a network.

Objects used (PowerNet-MIB, enterprise 318):

==========================================  ==============================  =================
object                                      OID                             unit / values
==========================================  ==============================  =================
rPDUIdentDevicePowerWatts                   1.3.6.1.4.1.318.1.1.12.1.16.0   W
rPDU2DeviceStatusPower.N                    ...1.1.26.4.3.1.5.N             0.01 kW (x10 = W)
rPDU2OutletMeteredStatusName.N              ...1.1.26.9.4.3.1.3.N           text
rPDU2OutletMeteredStatusNumber.N            ...1.1.26.9.4.3.1.4.N           outlet number
rPDU2OutletMeteredStatusPower.N             ...1.1.26.9.4.3.1.7.N           W
rPDUOutletControlOutletCommand.N            ...1.1.12.3.3.1.1.4.N           1 on, 2 off (read
                                                                            = state; write =
                                                                            immediateOn/Off)
rPDU2OutletSwitchedStatusState.N            ...1.1.26.9.2.3.1.5.N           1 off, 2 on
rPDU2OutletSwitchedControlCommand.N         ...1.1.26.9.2.4.1.5.N           1 immediateOn,
                                                                            2 immediateOff
==========================================  ==============================  =================

The hundredths-of-kW scale of rPDU2DeviceStatusPower is checked against the recordings:
apc-8641 reports 121 (1210 W) next to rPDUIdentDevicePowerWatts = 1230 W, apc-8932 reports 16
(160 W) next to 160 W. Agents that do not implement an object answer -1 (apc-7902b); that is
read as "not available", never as a power.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.telemetry import PowerSample

#: A decoded SNMP value: INTEGER/Gauge/Counter -> int, OCTET STRING -> bytes, OID -> str,
#: noSuchObject / noSuchInstance / endOfMibView -> None.
SnmpValue = int | bytes | str | None

APC = "1.3.6.1.4.1.318.1.1"
RPDU_IDENT_DEVICE_POWER_W = f"{APC}.12.1.16.0"
RPDU2_DEVICE_STATUS_POWER = f"{APC}.26.4.3.1.5"
RPDU2_OUTLET_METERED_ENTRY = f"{APC}.26.9.4.3.1"
RPDU2_OUTLET_METERED_NAME = f"{RPDU2_OUTLET_METERED_ENTRY}.3"
RPDU2_OUTLET_METERED_NUMBER = f"{RPDU2_OUTLET_METERED_ENTRY}.4"
RPDU2_OUTLET_METERED_POWER = f"{RPDU2_OUTLET_METERED_ENTRY}.7"
RPDU_OUTLET_CONTROL_NAME = f"{APC}.12.3.3.1.1.2"
RPDU_OUTLET_CONTROL_COMMAND = f"{APC}.12.3.3.1.1.4"
RPDU2_OUTLET_SWITCHED_NAME = f"{APC}.26.9.2.3.1.3"
RPDU2_OUTLET_SWITCHED_STATE = f"{APC}.26.9.2.3.1.5"
RPDU2_OUTLET_SWITCHED_COMMAND = f"{APC}.26.9.2.4.1.5"

#: rPDUOutletControlOutletCommand and rPDU2OutletSwitchedControlCommand share these codes.
IMMEDIATE_ON = 1
IMMEDIATE_OFF = 2
#: rPDU2OutletSwitchedStatusState codes.
RPDU2_STATE_OFF = 1
RPDU2_STATE_ON = 2
#: Value an APC agent returns for an object it does not implement.
NOT_AVAILABLE = -1

#: Which outlet-control table a command goes to: the original rPDU or the rPDU2 (2G) one.
ControlTable = Literal["rpdu", "rpdu2"]


class SnmpCodecError(WattwheelError):
    """A variable binding has the wrong type or an impossible value; names the OID."""


@dataclass(frozen=True)
class OutletReading:
    """One outlet. ``power_w`` None = not metered; ``is_on`` None = state not reported."""

    number: int
    name: str | None
    power_w: float | None
    is_on: bool | None


@dataclass(frozen=True)
class PduReading:
    """A whole PDU: its total active power (W, None if not reported) and its outlets."""

    device_power_w: float | None
    outlets: tuple[OutletReading, ...]


def decode_device_power_w(values: Mapping[str, SnmpValue]) -> float | None:
    """Total PDU power in watts: rPDUIdentDevicePowerWatts, else rPDU2DeviceStatusPower.1 x 10."""
    watts = _optional_int(values, RPDU_IDENT_DEVICE_POWER_W)
    if watts is not None:
        return float(watts)
    hundredths_kw = _optional_int(values, f"{RPDU2_DEVICE_STATUS_POWER}.1")
    return None if hundredths_kw is None else hundredths_kw * 10.0


def decode_outlets(values: Mapping[str, SnmpValue]) -> tuple[OutletReading, ...]:
    """Outlets found in the metered table and/or the control tables, sorted by number."""
    numbers: set[int] = set()
    for prefix in (
        RPDU2_OUTLET_METERED_POWER,
        RPDU_OUTLET_CONTROL_COMMAND,
        RPDU2_OUTLET_SWITCHED_STATE,
    ):
        numbers.update(_indexes(values, prefix))
    return tuple(_decode_outlet(values, n) for n in sorted(numbers))


def decode_pdu(values: Mapping[str, SnmpValue]) -> PduReading:
    """Device and outlet readings from one GET + walk of a PDU."""
    return PduReading(decode_device_power_w(values), decode_outlets(values))


def outlet_server_id(number: int) -> str:
    """The ``server_id`` an outlet's samples carry (outlet names are free text, numbers stable)."""
    return f"outlet-{number}"


def pdu_samples(
    reading: PduReading, source: str, rack_id: str, timestamp_s: float
) -> list[PowerSample]:
    """The PDU total (kind ``pdu``) and each metered outlet (kind ``outlet``) as samples."""
    samples: list[PowerSample] = []
    if reading.device_power_w is not None:
        samples.append(
            PowerSample(source, rack_id, None, timestamp_s, reading.device_power_w, "pdu")
        )
    for outlet in reading.outlets:
        if outlet.power_w is not None:
            samples.append(
                PowerSample(
                    source,
                    rack_id,
                    outlet_server_id(outlet.number),
                    timestamp_s,
                    outlet.power_w,
                    "outlet",
                )
            )
    return samples


def encode_outlet_command(outlet: int, on: bool, table: ControlTable = "rpdu") -> tuple[str, int]:
    """The (OID, INTEGER) a SET needs to switch ``outlet`` on or off immediately."""
    if isinstance(outlet, bool) or not isinstance(outlet, int) or outlet < 1:
        raise SnmpCodecError(f"outlet number must be a positive integer, got {outlet!r}")
    prefix = {"rpdu": RPDU_OUTLET_CONTROL_COMMAND, "rpdu2": RPDU2_OUTLET_SWITCHED_COMMAND}
    if table not in prefix:
        raise SnmpCodecError(f"unknown outlet control table {table!r} (use 'rpdu' or 'rpdu2')")
    return f"{prefix[table]}.{outlet}", IMMEDIATE_ON if on else IMMEDIATE_OFF


def check_set_response(oid: str, sent: int, values: Mapping[str, SnmpValue]) -> None:
    """Raise unless the agent echoed the value it was sent for ``oid``."""
    got = values.get(oid)
    if got is None:
        raise SnmpCodecError(f"{oid}: the agent has no writable object there (noSuchInstance)")
    if got != sent:
        raise SnmpCodecError(f"{oid}: sent {sent}, the agent answered {got!r}")


def _decode_outlet(values: Mapping[str, SnmpValue], index: int) -> OutletReading:
    number = _optional_int(values, f"{RPDU2_OUTLET_METERED_NUMBER}.{index}")
    power = _optional_int(values, f"{RPDU2_OUTLET_METERED_POWER}.{index}")
    return OutletReading(
        number=index if number is None else number,
        name=_outlet_name(values, index),
        power_w=None if power is None else float(power),
        is_on=_decode_state(values, index),
    )


def _outlet_name(values: Mapping[str, SnmpValue], index: int) -> str | None:
    for column in (RPDU2_OUTLET_METERED_NAME, RPDU2_OUTLET_SWITCHED_NAME, RPDU_OUTLET_CONTROL_NAME):
        name = _optional_text(values, f"{column}.{index}")
        if name is not None:
            return name
    return None


def _decode_state(values: Mapping[str, SnmpValue], index: int) -> bool | None:
    # The rPDU command column is read first: every APC agent in the recordings implements it,
    # and an outlet switched through either table shows up there. Other codes (reboot in
    # progress, pending delayed commands) say nothing firm about power: None.
    command = _optional_int(values, f"{RPDU_OUTLET_CONTROL_COMMAND}.{index}")
    if command is not None:
        return {IMMEDIATE_ON: True, IMMEDIATE_OFF: False}.get(command)
    state2 = _optional_int(values, f"{RPDU2_OUTLET_SWITCHED_STATE}.{index}")
    if state2 is None:
        return None
    return {RPDU2_STATE_ON: True, RPDU2_STATE_OFF: False}.get(state2)


def _indexes(values: Mapping[str, SnmpValue], column: str) -> set[int]:
    prefix = column + "."
    found: set[int] = set()
    for oid in values:
        if oid.startswith(prefix):
            tail = oid[len(prefix) :]
            if not tail.isdigit():
                raise SnmpCodecError(f"{oid}: expected a single numeric index after {column}")
            found.add(int(tail))
    return found


def _optional_int(values: Mapping[str, SnmpValue], oid: str) -> int | None:
    value = values.get(oid)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnmpCodecError(f"{oid}: expected an INTEGER, got {type(value).__name__} {value!r}")
    if value == NOT_AVAILABLE:
        return None
    if value < 0:
        raise SnmpCodecError(f"{oid}: negative value {value} is not a power or a state")
    return value


def _optional_text(values: Mapping[str, SnmpValue], oid: str) -> str | None:
    value = values.get(oid)
    if value is None:
        return None
    if not isinstance(value, bytes | str):
        raise SnmpCodecError(
            f"{oid}: expected an OCTET STRING, got {type(value).__name__} {value!r}"
        )
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    return text.strip() or None
