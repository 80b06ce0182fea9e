"""The emulated flywheel controller: physics through the register image, then over TCP."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from pymodbus.client import AsyncModbusTcpClient

from wattwheel.adapters.modbus.codec import decode_raw, walk_models
from wattwheel.adapters.modbus.flywheel_map import SetpointContext, decode_status, encode_setpoint
from wattwheel.adapters.modbus.models import load_layout
from wattwheel.emulate.modbus import FlywheelBankConfig, FlywheelController, start_flywheel_emulator


class ManualClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


# 1 module of 100 kW / 1000 Wh usable, ω_min = ω_max/2, no derating in range, η = 0.95.
CONFIG = FlywheelBankConfig(
    modules=1,
    module_power_w=100_000.0,
    module_energy_wh=1000.0,
    speed_min_ratio=0.5,
    base_speed_ratio=0.5,
    charge_efficiency=0.95,
    discharge_efficiency=0.95,
    standby_loss_fraction=0.0,
    initial_soc=0.8,
)


def _blocks(controller: FlywheelController) -> dict[int, list[int]]:
    base = controller.base_address
    return {
        loc.model_id: controller.image[loc.address - base : loc.address - base + loc.length + 2]
        for loc in walk_models(controller.image, base)
    }


def _command(controller: FlywheelController, power_w: float, revert_s: int = 0) -> None:
    locations = {loc.model_id: loc for loc in controller.locations}
    ctx = SetpointContext.from_block(locations[124], _blocks(controller)[124])
    for address, registers in encode_setpoint(power_w, ctx, revert_s):
        assert controller.write(address, registers)


def test_discharge_removes_the_hand_computed_energy() -> None:
    clock = ManualClock()
    controller = FlywheelController(CONFIG, clock)
    _command(controller, 38_000.0)
    clock.now_s = 10.0
    controller.tick()
    # 38 kW for 10 s at η_d = 0.95 takes 40 kW x 10 s = 111.11 Wh from the rotor: 800 -> 688.89.
    assert controller.bank.soc == pytest.approx(0.68889, abs=1e-5)
    status = decode_status(_blocks(controller))
    assert status.soc == pytest.approx(0.689)  # 0.1 % resolution on the wire
    assert status.energy_available_wh == pytest.approx(689.0)
    assert status.power_w == pytest.approx(38_000.0)


def test_charge_stores_eta_c_times_the_energy() -> None:
    clock = ManualClock()
    controller = FlywheelController(CONFIG, clock)
    _command(controller, -36_000.0)
    clock.now_s = 10.0
    controller.tick()
    # 36 kW x 10 s x 0.95 = 95 Wh into the rotor: 800 -> 895 Wh.
    assert controller.bank.soc == pytest.approx(0.895, abs=1e-9)
    assert decode_status(_blocks(controller)).power_w == pytest.approx(-36_000.0)


def test_standby_loss_grows_with_speed_squared() -> None:
    clock = ManualClock()
    config = replace(CONFIG, standby_loss_fraction=0.01, standby_fixed_share=0.0)
    controller = FlywheelController(config, clock)
    clock.now_s = 1.0
    controller.tick()
    # Hold at SoC 0.8: (ω/ω_max)² = 0.25 + 0.8 x 0.75 = 0.85 -> loss 0.01 x 100 kW x 0.85 for 1 s.
    assert controller.bank.soc == pytest.approx(0.8 - 850.0 / 3600.0 / 1000.0, abs=1e-9)


def test_standby_loss_has_a_fixed_part() -> None:
    clock = ManualClock()
    config = replace(CONFIG, standby_loss_fraction=0.01, standby_fixed_share=0.4)
    controller = FlywheelController(config, clock)
    clock.now_s = 1.0
    controller.tick()
    # 0.01 x 100 kW x (0.4 + 0.6 x 0.85) = 910 W for 1 s.
    assert controller.bank.soc == pytest.approx(0.8 - 910.0 / 3600.0 / 1000.0, abs=1e-9)


def test_power_limit_derates_below_base_speed() -> None:
    config = replace(CONFIG, base_speed_ratio=0.7, initial_soc=0.1)
    controller = FlywheelController(config, ManualClock())
    # SoC 0.1: ω/ω_max = sqrt(0.25 + 0.075) = 0.5701; limit = 100 kW x 0.5701 / 0.7 = 81.44 kW.
    status = decode_status(_blocks(controller))
    assert status.max_discharge_w == pytest.approx(81_440.0, abs=50.0)


def test_setpoint_reverts_to_hold_when_not_renewed() -> None:
    clock = ManualClock()
    controller = FlywheelController(CONFIG, clock)
    _command(controller, 50_000.0, revert_s=5)
    for second in range(1, 9):
        clock.now_s = float(second)
        controller.tick()
    assert controller.setpoint_w == 0.0
    assert decode_status(_blocks(controller)).power_w == 0.0


def test_write_to_read_only_register_is_refused() -> None:
    controller = FlywheelController(CONFIG, ManualClock())
    before = list(controller.image)
    soc_address = next(loc for loc in controller.locations if loc.model_id == 713).address + 4
    assert not controller.write(soc_address, [1000])
    assert controller.image == before


def test_config_round_trips_through_the_domain_parameters() -> None:
    params = CONFIG.physics_params()
    assert FlywheelBankConfig.from_physics(params, 0, initial_soc=0.8) == CONFIG


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match=r"initial_soc = 1\.5"):
        FlywheelBankConfig(initial_soc=1.5)


async def test_wall_clock_ticks_advance_the_bank() -> None:
    handle = await start_flywheel_emulator(
        replace(CONFIG, standby_loss_fraction=0.01), port=0, tick_s=0.02
    )
    try:
        await asyncio.sleep(0.2)
    finally:
        await handle.stop()
    assert handle.controller.bank.soc < 0.8  # standby loss over ~0.2 s of wall time
    assert decode_raw(load_layout(802).point("Hb"), [_blocks(handle.controller)[802][18]]) > 0


async def test_served_over_modbus_tcp() -> None:
    handle = await start_flywheel_emulator(CONFIG, port=0, tick_s=None, clock=ManualClock())
    client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
    try:
        assert await client.connect()
        marker = await client.read_holding_registers(40000, count=4, device_id=1)
        assert marker.registers == [0x5375, 0x6E53, 1, 66]
        refused = await client.write_registers(40002, [7], device_id=1)
        assert refused.isError() and refused.exception_code == 2
    finally:
        client.close()
        await handle.stop()


async def test_one_bank_per_unit_id() -> None:
    banks = {1: CONFIG, 2: replace(CONFIG, initial_soc=0.3)}
    handle = await start_flywheel_emulator(banks, port=0, tick_s=None, clock=ManualClock())
    client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
    try:
        assert await client.connect()
        socs = []
        for unit in (1, 2):
            # 713 SoC sits at 40160 + 4 in this map (0.1 % units).
            reply = await client.read_holding_registers(40164, count=1, device_id=unit)
            socs.append(reply.registers[0])
    finally:
        client.close()
        await handle.stop()
    assert socs == [800, 300]


async def test_two_requests_in_one_segment_are_both_answered_and_writes_logged() -> None:
    """A client that timed out asks again: its two requests can reach the server in one TCP
    segment. Both are answered, in order (pymodbus alone left the second one unanswered until
    more data came); each accepted write is logged with the client's address."""
    log: list[dict[str, object]] = []
    handle = await start_flywheel_emulator(
        CONFIG, port=0, tick_s=None, clock=ManualClock(), write_log=log.append
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)

        def read_holding(tid: int, address: int, count: int) -> bytes:
            pdu = bytes([3]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
            return (
                tid.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big") + b"\1" + pdu
            )

        writer.write(read_holding(1, 40000, 2) + read_holding(2, 40002, 2))
        await writer.drain()
        tids = []
        for _ in range(2):
            head = await asyncio.wait_for(reader.readexactly(6), 5.0)
            await reader.readexactly(int.from_bytes(head[4:6], "big"))
            tids.append(int.from_bytes(head[:2], "big"))
        assert tids == [1, 2]
        local_port = writer.get_extra_info("sockname")[1]
        writer.close()
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port)
        await client.connect()
        storage = next(loc for loc in handle.controller.locations if loc.model_id == 124)
        await client.write_registers(storage.address + 2, [0], device_id=1)
        client.close()
        assert len(log) == 1 and log[0]["setpoint"] is True and log[0]["unit"] == 1
        assert str(log[0]["peer"]).startswith("127.0.0.1:")
        assert str(log[0]["peer"]) != f"127.0.0.1:{local_port}"
    finally:
        await handle.stop()
