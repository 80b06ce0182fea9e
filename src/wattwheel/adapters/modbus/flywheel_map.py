"""How a flywheel bank (KES) is presented through battery-oriented SunSpec models. Pure.

SunSpec has no flywheel model, so a flywheel controller publishes the storage models written for
batteries. The mapping used by wattwheel (emulator and client alike):

- usable energy ½I(ω_max² − ω_min²) of the bank (Wh) -> 713 ``WHRtg`` and 802 ``WHRtg``;
- speed-based usable SoC = (ω² − ω_min²)/(ω_max² − ω_min²) -> 713 ``SoC``, 802 ``SoC`` and
  124 ``ChaState`` (all in %);
- usable energy stored now, SoC × WHRtg (SoH = 100 %) -> 713 ``WHAvail``;
- nameplate charge/discharge power (W) -> 802 ``WChaRteMax``/``WDisChaRteMax``, 124 ``WChaMax``;
- power available *now*, derated below base speed (P ≤ τ_max·ω) and by the energy left for one
  control period -> 802 ``AChaMax``/``ADisChaMax`` × ``V`` (a BMS's dynamic current limits);
- DC-link voltage of the drive (V) -> 802 ``V`` and 124 ``InBatV``;
- power flowing now (W, **positive = discharging**) -> 802 ``W`` (and ``A`` = W / V);
- an "amp-hour" rating WHRtg / V (an equivalent: the rotor has none) -> 802 ``AHRtg``, and
  124 ``StorAval`` in the same Ah;
- charge status / bank state -> 802 ``ChaSt`` / ``State`` (FAULT = 99), 713 ``Sta``;
- charge/discharge setpoint -> 124 ``StorCtl_Mod`` bits + ``InWRte``/``OutWRte`` (% of
  ``WChaMax``, both directions; 124 names OutWRte "% WDisChaMax", equal to WChaMax here);
- setpoint watchdog: revert to hold if not renewed -> 124 ``InOutWRte_RvrtTms`` (s).

802 ``Typ`` is OTHER (99): the bank is not electrochemical. The sign of 802 ``W`` is not fixed by
the model text; wattwheel documents and uses "positive = power out of the bank".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from wattwheel.adapters.modbus.codec import (
    ModelLocation,
    SunSpecValueError,
    Value,
    build_image,
    decode_model,
    encode_model,
    encode_raw,
    unscale,
)
from wattwheel.adapters.modbus.converter_map import CONVERTER, converter_values
from wattwheel.adapters.modbus.models import ModelLayout, load_layout
from wattwheel.domain.converter import ConverterSpec

COMMON, STORAGE_CONTROL, BATTERY_BASE, STORAGE_CAPACITY = 1, 124, 802, 713
FLYWHEEL_MODELS = (COMMON, STORAGE_CONTROL, BATTERY_BASE, STORAGE_CAPACITY)
# StorCtl_Mod bits (model 124): bit 0 = charge rate applies, bit 1 = discharge rate applies.
CHARGE_BIT, DISCHARGE_BIT = 1 << 0, 1 << 1
# Fixed resolutions chosen for the flywheel image: SoC and rates in 0.1 % / 0.01 %.
PCT_SF, RATE_SF = -1, -2
_CHA_ST = {1: "off", 2: "empty", 3: "discharging", 4: "charging", 5: "full", 6: "holding"}
_BATTERY_STATE_FAULT = 99
_STA_ERROR = 2
_TYPE_OTHER = 99


class FlywheelState(StrEnum):
    """Bank state as the controller reports it (802 ChaSt, or fault from 802 State/713 Sta)."""

    OFF = "off"
    EMPTY = "empty"
    DISCHARGING = "discharging"
    CHARGING = "charging"
    FULL = "full"
    HOLDING = "holding"
    FAULT = "fault"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class FlywheelStatus:
    """One reading of a flywheel bank.

    ``soc`` in [0, 1] (speed-based usable SoC); ``power_w`` positive when discharging, negative
    when charging; energies in Wh; ``max_*_w`` are the limits available now (speed-derated).
    """

    soc: float
    power_w: float
    energy_available_wh: float
    energy_rated_wh: float
    max_charge_w: float
    max_discharge_w: float
    state: FlywheelState


@dataclass(frozen=True, slots=True)
class FlywheelNameplate:
    """Static data of a bank, as published in models 1, 124, 802 and 713."""

    energy_rated_wh: float
    max_charge_w: float
    max_discharge_w: float
    dc_bus_v: float = 800.0
    manufacturer: str = "wattwheel"
    model: str = "KES-EMU"
    serial: str = "0001"
    version: str = "1"
    #: The converter's own feed-power loop (vendor model 64220 after 713; None: absent).
    converter: ConverterSpec | None = None


def fit_scale_factor(max_abs_value: float, signed: bool, finest: int = 0) -> int:
    """Smallest exponent >= ``finest`` with which ``max_abs_value`` fits an int16/uint16."""
    limit = 0x7FFF if signed else 0xFFFE
    sf = finest
    while abs(max_abs_value) / 10.0**sf > limit:
        sf += 1
    return sf


# --- building the image (emulator side) ------------------------------------------------------


def _common_values(plate: FlywheelNameplate) -> dict[str, Value]:
    return {
        "Mn": plate.manufacturer,
        "Md": plate.model,
        "Vr": plate.version,
        "SN": plate.serial,
        "DA": 1,
    }


def _charge_status(status: FlywheelStatus) -> int:
    by_state = {v: k for k, v in _CHA_ST.items()}
    return by_state.get(status.state.value, 6)


def _storage_control_values(plate: FlywheelNameplate, status: FlywheelStatus) -> dict[str, Value]:
    w_sf = fit_scale_factor(max(plate.max_charge_w, plate.max_discharge_w), signed=False)
    ah_rtg = plate.energy_rated_wh / plate.dc_bus_v
    ah_sf = fit_scale_factor(ah_rtg, signed=False, finest=-2)  # 0.01 Ah when it fits
    return {
        "WChaMax": plate.max_charge_w,
        "WChaMax_SF": w_sf,
        # A flywheel follows a step within one control period: ramp limit 100 % WChaMax / s.
        "WChaGra": 100,
        "WDisChaGra": 100,
        "WChaDisChaGra_SF": 0,
        "StorCtl_Mod": 0,
        "MinRsvPct": 0.0,
        "MinRsvPct_SF": PCT_SF,
        "ChaState": 100.0 * status.soc,
        "ChaState_SF": PCT_SF,
        "StorAval": status.soc * ah_rtg,
        "StorAval_SF": ah_sf,
        "InBatV": plate.dc_bus_v,
        "InBatV_SF": -1,
        "ChaSt": _charge_status(status),
        "OutWRte": 0.0,
        "InWRte": 0.0,
        "InOutWRte_SF": RATE_SF,
        "InOutWRte_WinTms": 0,
        "InOutWRte_RvrtTms": 0,
        "InOutWRte_RmpTms": 0,
        "ChaGriSet": 1,
    }


def _battery_values(
    plate: FlywheelNameplate, status: FlywheelStatus, heartbeat: int
) -> dict[str, Value]:
    w_sf = fit_scale_factor(max(plate.max_charge_w, plate.max_discharge_w), signed=True)
    a_max = max(plate.max_charge_w, plate.max_discharge_w) / plate.dc_bus_v
    a_sf = fit_scale_factor(a_max, signed=True, finest=-1)
    ah_rtg = plate.energy_rated_wh / plate.dc_bus_v
    fault = status.state is FlywheelState.FAULT
    return {
        "AHRtg": ah_rtg,
        "AHRtg_SF": fit_scale_factor(ah_rtg, signed=False, finest=-2),
        "WHRtg": plate.energy_rated_wh,
        "WHRtg_SF": fit_scale_factor(plate.energy_rated_wh, signed=False),
        "WChaRteMax": plate.max_charge_w,
        "WDisChaRteMax": plate.max_discharge_w,
        "WChaDisChaMax_SF": w_sf,
        "SoCMax": 100.0,
        "SoCMin": 0.0,
        "SoC": 100.0 * status.soc,
        "SoH": 100.0,
        "SoC_SF": PCT_SF,
        "SoH_SF": 0,
        "ChaSt": _charge_status(status),
        "LocRemCtl": 0,
        "Hb": heartbeat % 0xFFFF,
        "CtrlHb": 0,
        "AlmRst": 0,
        "Typ": _TYPE_OTHER,
        "State": _BATTERY_STATE_FAULT if fault else 3,
        "Evt1": 0,
        "Evt2": 0,
        "EvtVnd1": 0,
        "EvtVnd2": 0,
        "V": plate.dc_bus_v,
        "V_SF": -1,
        "CellV_SF": 0,
        "A": status.power_w / plate.dc_bus_v,
        "A_SF": a_sf,
        "AChaMax": status.max_charge_w / plate.dc_bus_v,
        "ADisChaMax": status.max_discharge_w / plate.dc_bus_v,
        "AMax_SF": a_sf,
        "W": status.power_w,
        "W_SF": w_sf,
        "SetOp": 1,
        "SetInvState": 3,
    }


def _capacity_values(plate: FlywheelNameplate, status: FlywheelStatus) -> dict[str, Value]:
    return {
        "WHRtg": plate.energy_rated_wh,
        "WHAvail": status.energy_available_wh,
        "WH_SF": fit_scale_factor(plate.energy_rated_wh, signed=False),
        "SoC": 100.0 * status.soc,
        "SoH": 100.0,
        "Pct_SF": PCT_SF,
        "Sta": _STA_ERROR if status.state is FlywheelState.FAULT else 0,
    }


def build_flywheel_image(
    plate: FlywheelNameplate, status: FlywheelStatus, heartbeat: int = 0
) -> list[int]:
    """The full SunSpec register map (from the marker on) of a bank in ``status``.

    Setpoint registers (124 StorCtl_Mod, InWRte, OutWRte, timers) read "hold"; the emulator
    carries the values a client wrote across refreshes with :func:`carry_writable`.
    """
    blocks = [
        encode_model(load_layout(COMMON), _common_values(plate)),
        encode_model(load_layout(STORAGE_CONTROL), _storage_control_values(plate, status)),
        encode_model(load_layout(BATTERY_BASE), _battery_values(plate, status, heartbeat)),
        encode_model(load_layout(STORAGE_CAPACITY), _capacity_values(plate, status)),
    ]
    if plate.converter is not None:
        feed_w = 10.0 * max(plate.max_charge_w, plate.max_discharge_w)
        blocks.append(
            encode_model(load_layout(CONVERTER), converter_values(plate.converter, feed_w))
        )
    return build_image(blocks)


def carry_writable(
    previous: Sequence[int], fresh: Sequence[int], locations: Sequence[ModelLocation], base: int
) -> list[int]:
    """``fresh`` with the writable (RW) points of each model copied from ``previous``."""
    merged = list(fresh)
    for loc in locations:
        layout = load_layout(loc.model_id)
        for point in layout.points.values():
            if point.writable:
                start = loc.address - base + point.offset
                merged[start : start + point.size] = previous[start : start + point.size]
    return merged


# --- reading the image (client side) ---------------------------------------------------------


def _number(values: Mapping[str, Value], name: str) -> float | None:
    value = values.get(name)
    return float(value) if isinstance(value, int | float) else None


def _required(value: float | None, what: str) -> float:
    if value is None or math.isnan(value):
        raise SunSpecValueError(f"flywheel status: {what} is not implemented by the controller")
    return value


def _limit_w(battery: Mapping[str, Value], rate: str, amps: str, fallback: float | None) -> float:
    nameplate = _number(battery, rate)
    amps_now, volts = _number(battery, amps), _number(battery, "V")
    derated = amps_now * volts if amps_now is not None and volts is not None else None
    candidates = [v for v in (nameplate, derated) if v is not None]
    return min(candidates) if candidates else _required(fallback, f"802 {rate}")


def _state(battery: Mapping[str, Value], capacity: Mapping[str, Value]) -> FlywheelState:
    if battery.get("State") == _BATTERY_STATE_FAULT or capacity.get("Sta") == _STA_ERROR:
        return FlywheelState.FAULT
    cha_st = battery.get("ChaSt")
    return (
        FlywheelState(_CHA_ST.get(cha_st, "unknown"))
        if isinstance(cha_st, int)
        else (FlywheelState.UNKNOWN)
    )


def decode_status(blocks: Mapping[int, Sequence[int]]) -> FlywheelStatus:
    """A :class:`FlywheelStatus` from the register blocks of models 802, 713 (and 124).

    ``blocks`` maps a model ID to its registers (from ``ID``). 713 is preferred for SoC and
    energies, 802 for power and limits; 124 ``WChaMax`` is the last resort for limits.
    """
    if BATTERY_BASE not in blocks:
        raise SunSpecValueError("flywheel status needs SunSpec model 802 (battery base)")
    battery = decode_model(load_layout(BATTERY_BASE), blocks[BATTERY_BASE])
    capacity = (
        decode_model(load_layout(STORAGE_CAPACITY), blocks[STORAGE_CAPACITY])
        if STORAGE_CAPACITY in blocks
        else {}
    )
    control = (
        decode_model(load_layout(STORAGE_CONTROL), blocks[STORAGE_CONTROL])
        if STORAGE_CONTROL in blocks
        else {}
    )
    soc_pct = _number(capacity, "SoC")
    soc = _required(soc_pct if soc_pct is not None else _number(battery, "SoC"), "SoC") / 100.0
    if not 0.0 <= soc <= 1.0:
        raise SunSpecValueError(f"flywheel status: SoC = {100 * soc:.1f} % is outside [0, 100] %")
    rated = _number(capacity, "WHRtg")
    rated_wh = _required(rated if rated is not None else _number(battery, "WHRtg"), "WHRtg")
    available = _number(capacity, "WHAvail")
    w_cha_max = _number(control, "WChaMax")
    return FlywheelStatus(
        soc=soc,
        power_w=_required(_number(battery, "W"), "802 W"),
        energy_available_wh=available if available is not None else soc * rated_wh,
        energy_rated_wh=rated_wh,
        max_charge_w=_limit_w(battery, "WChaRteMax", "AChaMax", w_cha_max),
        max_discharge_w=_limit_w(battery, "WDisChaRteMax", "ADisChaMax", w_cha_max),
        state=_state(battery, capacity),
    )


# --- setpoints -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetpointContext:
    """What a setpoint write needs from the controller's model 124 block."""

    location: ModelLocation
    w_cha_max: float
    rate_sf: int

    @classmethod
    def from_block(cls, location: ModelLocation, block: Sequence[int]) -> SetpointContext:
        """Read WChaMax and InOutWRte_SF from a model 124 block at ``location``."""
        values = decode_model(load_layout(STORAGE_CONTROL), block)
        w_cha_max = _required(_number(values, "WChaMax"), "124 WChaMax")
        rate_sf = values.get("InOutWRte_SF")
        if not isinstance(rate_sf, int):
            raise SunSpecValueError("124 InOutWRte_SF is not implemented: cannot write rates")
        if w_cha_max <= 0:
            raise SunSpecValueError(f"124 WChaMax = {w_cha_max} W: cannot scale a rate")
        return cls(location=location, w_cha_max=w_cha_max, rate_sf=rate_sf)


def encode_setpoint(
    power_w: float, ctx: SetpointContext, revert_s: int = 0
) -> list[tuple[int, list[int]]]:
    """Register writes for a setpoint: ``power_w`` > 0 discharges, < 0 charges, 0 holds.

    Returns ``(address, registers)`` pairs to write in order: the rates (OutWRte, InWRte, as %
    of WChaMax), the revert timer (0 = none), and last the mode bits, so the device never
    applies a new mode with stale rates. ``|power_w|`` above WChaMax is an error: clamp first.
    """
    if math.isnan(power_w):
        raise SunSpecValueError("setpoint power_w is NaN")
    if abs(power_w) > ctx.w_cha_max * (1 + 1e-9):
        raise SunSpecValueError(
            f"setpoint {power_w} W exceeds WChaMax = {ctx.w_cha_max} W of the controller"
        )
    layout = load_layout(STORAGE_CONTROL)
    pct = 100.0 * abs(power_w) / ctx.w_cha_max
    out_point, in_point = layout.point("OutWRte"), layout.point("InWRte")
    out_pct = pct if power_w > 0 else 0.0
    in_pct = pct if power_w < 0 else 0.0
    mode = DISCHARGE_BIT if power_w > 0 else CHARGE_BIT if power_w < 0 else 0
    base = ctx.location.address
    rates = encode_raw(out_point, unscale(out_point, out_pct, ctx.rate_sf)) + encode_raw(
        in_point, unscale(in_point, in_pct, ctx.rate_sf)
    )
    revert = layout.point("InOutWRte_RvrtTms")
    mode_point = layout.point("StorCtl_Mod")
    return [
        (base + out_point.offset, rates),
        (base + revert.offset, encode_raw(revert, revert_s)),
        (base + mode_point.offset, encode_raw(mode_point, mode)),
    ]


def decode_setpoint(layout: ModelLayout, block: Sequence[int]) -> float:
    """The power setpoint (W, + discharge / − charge) a model 124 block commands.

    Each mode bit enables its rate; a negative rate reverses its direction, as in SunSpec.
    """
    values = decode_model(layout, block)
    mode = values.get("StorCtl_Mod")
    w_cha_max = _number(values, "WChaMax")
    if not isinstance(mode, int) or w_cha_max is None:
        return 0.0
    out_pct = _number(values, "OutWRte") or 0.0
    in_pct = _number(values, "InWRte") or 0.0
    discharge = out_pct if mode & DISCHARGE_BIT else 0.0
    charge = in_pct if mode & CHARGE_BIT else 0.0
    return (discharge - charge) / 100.0 * w_cha_max
