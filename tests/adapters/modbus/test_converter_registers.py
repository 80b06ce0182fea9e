"""The converter loop's parameters over Modbus (vendor model 64220): codec, client, emulator."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
import pytest

from wattwheel.adapters.modbus.client import SunSpecFlywheelClient
from wattwheel.adapters.modbus.codec import ModelLocation, SunSpecValueError, encode_model
from wattwheel.adapters.modbus.converter_map import (
    CONVERTER,
    ConverterParams,
    converter_values,
    decode_converter,
    encode_converter_params,
)
from wattwheel.adapters.modbus.models import load_layout
from wattwheel.domain.converter import ConverterSettings, ConverterSpec
from wattwheel.emulate.modbus import (
    FlywheelBankConfig,
    FlywheelEmulatorHandle,
    start_flywheel_emulator,
)

SPEC = ConverterSpec(control_period_s=0.01, measurement_latency_s=0.03, bandwidth_hz=12.5)
PARAMS = ConverterParams(True, 1000.0, 0.0, 45_000.0, 0.3, 0.7, 30.0)


def _block(params: ConverterParams | None = None) -> list[int]:
    return encode_model(load_layout(CONVERTER), converter_values(SPEC, 350_000.0, params))


def _apply(block: list[int], writes: list[tuple[int, list[int]]]) -> list[int]:
    out = list(block)
    for address, regs in writes:
        out[address : address + len(regs)] = regs
    return out


def test_model_layout_is_the_documented_one() -> None:
    layout = load_layout(CONVERTER)
    assert layout.length == 14
    writable = [n for n, p in layout.points.items() if p.writable]
    assert writable == ["Ena", "RmpLim", "FloorW", "CeilW", "SoCLo", "SoCHi", "SmoTms"]


def test_nameplate_and_parameters_round_trip() -> None:
    spec, params = decode_converter(_block(PARAMS))
    assert spec == SPEC
    assert params == PARAMS
    # Disabled by default; 0 W/s reads as "no ramp limit".
    _, default = decode_converter(_block())
    assert not default.enabled and math.isinf(default.ramp_limit_w_per_s)


def test_writes_put_the_parameters_first_and_enable_last() -> None:
    block = _block()
    writes = encode_converter_params(PARAMS, ModelLocation(CONVERTER, 0, 14), block)
    layout = load_layout(CONVERTER)
    assert [a for a, _ in writes] == [layout.point("RmpLim").offset, layout.point("Ena").offset]
    assert decode_converter(_apply(block, writes))[1] == PARAMS


@pytest.mark.parametrize(
    ("change", "point"),
    [
        ({"floor_w": 50_000.0}, "FloorW"),
        ({"soc_low": 0.8}, "SoCLo"),
        ({"soc_high": 1.5}, "SoCHi"),
        ({"ramp_limit_w_per_s": float("nan")}, "RmpLim"),
        ({"ceiling_w": 1e9}, "CeilW"),
    ],
)
def test_invalid_parameters_name_the_point(change: dict[str, float], point: str) -> None:
    bad = replace(PARAMS, **change)  # type: ignore[arg-type]
    with pytest.raises(SunSpecValueError, match=point):
        encode_converter_params(bad, ModelLocation(CONVERTER, 0, 14), _block())


def test_params_from_the_hpmcs_settings_are_in_watts() -> None:
    settings = ConverterSettings(
        ramp_limit_kw_per_s=np.array([1.0, 2.0]),
        floor_kw=np.zeros(2),
        ceiling_kw=np.array([45.0, 40.0]),
        soc_low=np.full(2, 0.3),
        soc_high=np.full(2, 0.7),
    )
    p = ConverterParams.from_settings(settings, 1)
    assert (p.ramp_limit_w_per_s, p.ceiling_w, p.enabled) == (2000.0, 40_000.0, True)
    back = p.settings()
    assert back.ceiling_kw[0] == pytest.approx(40.0)


@pytest.fixture
async def emulator() -> AsyncIterator[FlywheelEmulatorHandle]:
    handle = await start_flywheel_emulator(
        FlywheelBankConfig(modules=1, converter=SPEC), port=0, tick_s=None
    )
    yield handle
    await handle.stop()


async def test_client_reads_and_sets_the_converter_over_modbus(
    emulator: FlywheelEmulatorHandle,
) -> None:
    client = SunSpecFlywheelClient("127.0.0.1", emulator.port, timeout_s=2.0)
    try:
        seen = await client.read_converter()
        assert seen is not None
        assert seen[0] == SPEC and not seen[1].enabled
        assert await client.write_converter(PARAMS)
        again = await client.read_converter()
    finally:
        await client.close()
    assert again is not None and again[1] == PARAMS
    # The emulator holds what was written (and keeps it across its refreshes).
    emulator.controller.tick()
    held = emulator.controller.converter
    assert held is not None and held[1] == PARAMS


async def test_a_bank_without_the_model_reads_none_and_refuses_a_write() -> None:
    handle = await start_flywheel_emulator(
        FlywheelBankConfig(modules=1, converter=None), port=0, tick_s=None
    )
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=2.0)
    try:
        assert await client.read_converter() is None
        assert not await client.write_converter(PARAMS)
    finally:
        await client.close()
        await handle.stop()


async def test_the_runtime_port_writes_the_hpmcs_settings_in_watts(
    emulator: FlywheelEmulatorHandle,
) -> None:
    from wattwheel.adapters.ports import SunSpecFlywheel

    settings = ConverterSettings(
        ramp_limit_kw_per_s=np.array([1.0]),
        floor_kw=np.zeros(1),
        ceiling_kw=np.array([38.5]),
        soc_low=np.array([0.3]),
        soc_high=np.array([0.7]),
    )
    client = SunSpecFlywheelClient("127.0.0.1", emulator.port, timeout_s=2.0)
    try:
        assert await SunSpecFlywheel(client).write_converter(settings)
    finally:
        await client.close()
    held = emulator.controller.converter
    assert held is not None
    assert held[1].enabled and held[1].ramp_limit_w_per_s == pytest.approx(1000.0)
    assert held[1].ceiling_w == pytest.approx(38_500.0, abs=10.0)  # W_SF: 10 W steps
