"""SunSpec codec on hand-computed registers (no sockets)."""

from __future__ import annotations

import math

import pytest

from wattwheel.adapters.modbus.codec import (
    ModelLocation,
    SunSpecValueError,
    build_image,
    decode_model,
    decode_raw,
    encode_model,
    encode_raw,
    walk_models,
)
from wattwheel.adapters.modbus.flywheel_map import (
    FlywheelNameplate,
    FlywheelState,
    FlywheelStatus,
    SetpointContext,
    build_flywheel_image,
    carry_writable,
    decode_setpoint,
    decode_status,
    encode_setpoint,
    fit_scale_factor,
)
from wattwheel.adapters.modbus.models import SunSpecModelError, load_layout

NI16 = 0x8000  # int16 / sunssf "not implemented"
NU16 = 0xFFFF  # uint16 / enum16 "not implemented"


def test_layouts_match_the_sunspec_models() -> None:
    assert [load_layout(m).length for m in (1, 124, 802, 713)] == [66, 24, 62, 7]
    storage = load_layout(124)
    offsets = {n: storage.point(n).offset for n in ("StorCtl_Mod", "OutWRte", "InWRte")}
    assert offsets == {"StorCtl_Mod": 5, "OutWRte": 12, "InWRte": 13}
    assert load_layout(802).point("W").offset == 47
    assert load_layout(802).point("NCyc").size == 2
    assert storage.point("InWRte").writable and not storage.point("ChaState").writable


def test_unknown_point_is_named() -> None:
    with pytest.raises(SunSpecModelError, match="no point 'Nope'"):
        load_layout(713).point("Nope")
    with pytest.raises(SunSpecModelError, match=r"\['WHRtgg'\]"):
        encode_model(load_layout(713), {"WHRtgg": 1.0})


@pytest.mark.parametrize(
    ("model", "name", "raw", "registers"),
    [
        (802, "W", -1, [0xFFFF]),  # int16 two's complement
        (802, "W", None, [NI16]),
        (802, "SoC", None, [NU16]),
        (802, "ChaSt", 4, [4]),
        (802, "W_SF", -2, [0xFFFE]),
        (802, "NCyc", 70000, [0x0001, 0x1170]),  # uint32 high word first
        (802, "NCyc", None, [0xFFFF, 0xFFFF]),
        (1, "Mn", "wattwheel", [0x7761, 0x7474, 0x7768, 0x6565, 0x6C00] + [0] * 11),
    ],
)
def test_raw_points_round_trip(
    model: int, name: str, raw: int | str | None, registers: list[int]
) -> None:
    point = load_layout(model).point(name)
    assert encode_raw(point, raw) == registers
    assert decode_raw(point, registers) == raw


def test_raw_out_of_range_is_named() -> None:
    with pytest.raises(SunSpecValueError, match="WHRtg: raw value 70000"):
        encode_raw(load_layout(713).point("WHRtg"), 70000)
    with pytest.raises(SunSpecValueError, match="W: raw value -32768"):
        encode_raw(load_layout(802).point("W"), -32768)  # that is the not-implemented value


def test_model_713_block_is_hand_computed() -> None:
    values = {"WHRtg": 2840.0, "WHAvail": 2272.0, "SoC": 80.0, "SoH": 100.0, "Sta": 0}
    values |= {"WH_SF": 0, "Pct_SF": -1}
    block = encode_model(load_layout(713), values)
    assert block == [713, 7, 2840, 2272, 800, 1000, 0, 0, 0xFFFF]
    assert decode_model(load_layout(713), block) == {"ID": 713, "L": 7, **values}


def test_scaled_point_without_its_scale_factor_is_refused() -> None:
    with pytest.raises(SunSpecValueError, match="WHRtg needs its scale factor WH_SF"):
        encode_model(load_layout(713), {"WHRtg": 2840.0})


def test_value_with_unimplemented_scale_factor_decodes_to_none() -> None:
    block = [713, 7, 2840, 2272, 800, 1000, 0, NI16, NI16]
    assert decode_model(load_layout(713), block)["WHRtg"] is None


def test_block_header_is_checked() -> None:
    with pytest.raises(SunSpecValueError, match="ID=802 L=7"):
        decode_model(load_layout(713), [802, 7, 0, 0, 0, 0, 0, 0, 0])


def test_image_has_marker_models_and_end() -> None:
    block = [713, 7, 2840, 2272, 800, 1000, 0, 0, 0xFFFF]
    image = build_image([block])
    assert image == [0x5375, 0x6E53, *block, 0xFFFF, 0]
    assert walk_models(image, 40000) == [ModelLocation(713, 40002, 7)]


def test_walk_refuses_a_map_without_marker_or_end() -> None:
    with pytest.raises(SunSpecValueError, match="no SunSpec marker"):
        walk_models([0, 0, 713, 7], 40000)
    with pytest.raises(SunSpecValueError, match="no end model"):
        walk_models([0x5375, 0x6E53, 713, 7, 1, 2, 3, 4, 5, 6, 7], 40000)


def _recorded_802_block() -> list[int]:
    """A model 802 block written down register by register (offsets from the 802 spec)."""
    regs = [NU16] * 64
    regs[0], regs[1] = 802, 62
    regs[3] = 2840  # WHRtg, WHRtg_SF (53) = 0
    regs[4], regs[5] = 40000, 40000  # WChaRteMax / WDisChaRteMax x10 (SF 54 = 1) = 400 kW
    regs[11] = 805  # SoC 80.5 %, SoC_SF (56) = -1
    regs[16] = 3  # ChaSt DISCHARGING
    regs[22] = 3  # State CONNECTED
    regs[34] = 8000  # V 800.0, V_SF (59) = -1
    regs[45], regs[46] = 3125, 5000  # AChaMax 312.5 A, ADisChaMax 500.0 A, AMax_SF (62) = -1
    regs[47] = 10000  # W x10 = 100 kW discharging, W_SF (63) = 1
    for offset in (44, 48, 49):  # A, ReqW: int16 not implemented
        regs[offset] = NI16
    for offset in range(52, 64):  # every scale factor not implemented, then set those used
        regs[offset] = NI16
    regs[53], regs[54], regs[56], regs[59], regs[62], regs[63] = 0, 1, 0xFFFF, 0xFFFF, 0xFFFF, 1
    return regs


def test_status_from_a_recorded_802_block_alone() -> None:
    status = decode_status({802: _recorded_802_block()})
    assert status.soc == pytest.approx(0.805)
    assert status.power_w == pytest.approx(100_000.0)
    assert status.energy_rated_wh == pytest.approx(2840.0)
    assert status.energy_available_wh == pytest.approx(0.805 * 2840.0)  # no 713: SoC x WHRtg
    assert status.max_charge_w == pytest.approx(312.5 * 800.0)  # derated: 250 kW < 400 kW
    assert status.max_discharge_w == pytest.approx(400_000.0)  # 500 A x 800 V = 400 kW
    assert status.state is FlywheelState.DISCHARGING


def test_status_prefers_713_and_reports_fault() -> None:
    capacity = [713, 7, 2840, 2000, 704, 1000, 2, 0, 0xFFFF]  # SoC 70.4 %, Sta ERROR
    status = decode_status({802: _recorded_802_block(), 713: capacity})
    assert status.soc == pytest.approx(0.704)
    assert status.energy_available_wh == pytest.approx(2000.0)
    assert status.state is FlywheelState.FAULT


def test_absurd_soc_is_refused() -> None:
    capacity = [713, 7, 2840, 2000, 1234, 1000, 0, 0, 0xFFFF]  # SoC 123.4 %
    with pytest.raises(SunSpecValueError, match=r"SoC = 123\.4 %"):
        decode_status({802: _recorded_802_block(), 713: capacity})


def test_status_needs_802() -> None:
    with pytest.raises(SunSpecValueError, match="802"):
        decode_status({713: [713, 7, 2840, 2000, 704, 1000, 0, 0, 0xFFFF]})


def _context() -> SetpointContext:
    block = [NU16] * 26
    block[0], block[1], block[2] = 124, 24, 40000  # WChaMax 40000 x10 = 400 kW
    block[18], block[25] = 1, 0xFFFE  # WChaMax_SF = 1, InOutWRte_SF = -2
    return SetpointContext.from_block(ModelLocation(124, 40070, 24), block)


def test_discharge_setpoint_registers() -> None:
    # 100 kW of 400 kW = 25.00 % -> 2500 at SF -2; OutWRte at 40070+12, RvrtTms at +15, mode +5.
    writes = encode_setpoint(100_000.0, _context(), revert_s=30)
    assert writes == [(40082, [2500, 0]), (40085, [30]), (40075, [0b10])]


def test_charge_and_hold_setpoint_registers() -> None:
    assert encode_setpoint(-40_000.0, _context()) == [
        (40082, [0, 1000]),
        (40085, [0]),
        (40075, [0b01]),
    ]
    assert encode_setpoint(0.0, _context())[-1] == (40075, [0])


def test_setpoint_beyond_wchamax_or_nan_is_refused() -> None:
    with pytest.raises(SunSpecValueError, match=r"exceeds WChaMax = 400000\.0 W"):
        encode_setpoint(400_001.0, _context())
    with pytest.raises(SunSpecValueError, match="NaN"):
        encode_setpoint(math.nan, _context())


def _plate() -> FlywheelNameplate:
    return FlywheelNameplate(
        energy_rated_wh=2840.0, max_charge_w=400_000.0, max_discharge_w=400_000.0
    )


def _status(soc: float = 0.8, power_w: float = 0.0) -> FlywheelStatus:
    return FlywheelStatus(
        soc=soc,
        power_w=power_w,
        energy_available_wh=soc * 2840.0,
        energy_rated_wh=2840.0,
        max_charge_w=300_000.0,
        max_discharge_w=400_000.0,
        state=FlywheelState.HOLDING,
    )


def _blocks(image: list[int]) -> dict[int, list[int]]:
    return {
        loc.model_id: image[loc.address - 40000 : loc.address - 40000 + loc.length + 2]
        for loc in walk_models(image, 40000)
    }


def test_flywheel_image_round_trips_through_status() -> None:
    image = build_flywheel_image(_plate(), _status(0.5, -25_000.0))
    assert [loc.model_id for loc in walk_models(image, 40000)] == [1, 124, 802, 713]
    status = decode_status(_blocks(image))
    assert status.soc == pytest.approx(0.5)
    assert status.power_w == pytest.approx(-25_000.0)
    assert status.energy_available_wh == pytest.approx(1420.0)
    assert status.max_charge_w == pytest.approx(300_000.0)
    assert status.max_discharge_w == pytest.approx(400_000.0)


def test_written_setpoint_decodes_back_and_survives_a_refresh() -> None:
    image = build_flywheel_image(_plate(), _status())
    locations = walk_models(image, 40000)
    ctx = SetpointContext.from_block(locations[1], _blocks(image)[124])
    for address, registers in encode_setpoint(150_000.0, ctx):
        image[address - 40000 : address - 40000 + len(registers)] = registers
    assert decode_setpoint(load_layout(124), _blocks(image)[124]) == pytest.approx(150_000.0)
    fresh = build_flywheel_image(_plate(), _status(0.7))
    merged = carry_writable(image, fresh, locations, 40000)
    assert decode_setpoint(load_layout(124), _blocks(merged)[124]) == pytest.approx(150_000.0)
    assert decode_status(_blocks(merged)).soc == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("value", "signed", "finest", "sf"),
    [
        (400_000.0, False, 0, 1),
        (65_534.0, False, 0, 0),
        (40_000.0, True, 0, 1),
        (3.55, False, -2, -2),
    ],
)
def test_fit_scale_factor(value: float, signed: bool, finest: int, sf: int) -> None:
    assert fit_scale_factor(value, signed, finest) == sf
