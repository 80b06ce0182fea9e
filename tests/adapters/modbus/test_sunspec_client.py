"""The SunSpec client against the emulated flywheel controller, over real Modbus TCP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from wattwheel.adapters.modbus.client import SunSpecFlywheelClient
from wattwheel.adapters.modbus.flywheel_map import FlywheelState, FlywheelStatus
from wattwheel.adapters.modbus.link import FakeFlywheelLink
from wattwheel.emulate.modbus import (
    FlywheelBankConfig,
    FlywheelEmulatorHandle,
    start_flywheel_emulator,
)


class ManualClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


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


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[FlywheelEmulatorHandle, ManualClock]]:
    clock = ManualClock()
    handle = await start_flywheel_emulator(CONFIG, port=0, tick_s=None, clock=clock)
    yield handle, clock
    await handle.stop()


async def test_discovers_models_by_walking_the_chain(
    emulator: tuple[FlywheelEmulatorHandle, ManualClock],
) -> None:
    handle, _ = emulator
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=1.0)
    try:
        models = await client.discover()
    finally:
        await client.close()
    # 40000 "SunS"; model 1 at 40002 (L 66); 124 at 40070 (L 24); 802 at 40096; 713 at 40160;
    # the converter's vendor model 64220 at 40169 (L 14).
    assert {m: (loc.address, loc.length) for m, loc in models.items()} == {
        1: (40002, 66),
        124: (40070, 24),
        802: (40096, 62),
        713: (40160, 7),
        64220: (40169, 14),
    }


async def test_map_at_another_base_address_is_found() -> None:
    handle = await start_flywheel_emulator(CONFIG, port=0, tick_s=None, base_address=50000)
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=1.0)
    try:
        models = await client.discover()
    finally:
        await client.close()
        await handle.stop()
    assert models[124].address == 50070


async def test_discharge_setpoint_lowers_soc_by_the_expected_energy(
    emulator: tuple[FlywheelEmulatorHandle, ManualClock],
) -> None:
    handle, clock = emulator
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=1.0)
    try:
        first = await client.read()
        assert not first.stale and first.status is not None
        assert first.status.soc == pytest.approx(0.8)
        assert first.status.energy_available_wh == pytest.approx(800.0)
        assert await client.write_setpoint(38_000.0)
        clock.now_s = 10.0
        handle.controller.tick()
        after = await client.read()
    finally:
        await client.close()
    assert after.status is not None and not after.stale
    # 38 kW for 10 s at η_d = 0.95: 40 kW x 10 s = 111.1 Wh leave the rotor -> 688.9 Wh.
    assert after.status.energy_available_wh == pytest.approx(689.0)
    assert after.status.soc == pytest.approx(0.689)
    assert after.status.power_w == pytest.approx(38_000.0)
    assert after.status.state is FlywheelState.DISCHARGING


async def test_setpoint_beyond_the_rating_is_clamped(
    emulator: tuple[FlywheelEmulatorHandle, ManualClock],
) -> None:
    handle, _ = emulator
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=1.0)
    try:
        assert await client.write_setpoint(-250_000.0)
        assert not await client.write_setpoint(float("nan"))
    finally:
        await client.close()
    assert handle.controller.setpoint_w == pytest.approx(-100_000.0)


async def test_dead_controller_gives_stale_reading_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = await start_flywheel_emulator(CONFIG, port=0, tick_s=None, clock=ManualClock())
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=0.5)
    good = await client.read()
    await handle.stop()
    caplog.set_level(logging.DEBUG, logger="wattwheel.adapters.modbus.client")
    try:
        readings = [await client.read() for _ in range(3)]
        written = await client.write_setpoint(10_000.0)
        restarted = await start_flywheel_emulator(CONFIG, port=handle.port, tick_s=None)
        recovered = await client.read()
        await restarted.stop()
    finally:
        await client.close()
    assert not recovered.stale and recovered.status is not None
    assert all(r.stale and r.status == good.status for r in readings)
    assert readings[0].read_at_s == good.read_at_s
    assert not written
    ours = [r for r in caplog.records if r.name == "wattwheel.adapters.modbus.client"]
    levels = [r.levelno for r in ours]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 3 + [logging.INFO]


async def test_controller_that_hangs_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # accept, read, never answer
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = SunSpecFlywheelClient("127.0.0.1", port, timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        reading = await client.read()
    finally:
        await client.close()
        server.close()
    assert reading.stale and reading.status is None
    assert loop.time() - started < 5.0


async def test_hung_emulator_times_out_then_recovers(
    emulator: tuple[FlywheelEmulatorHandle, ManualClock],
) -> None:
    handle, _ = emulator
    client = SunSpecFlywheelClient("127.0.0.1", handle.port, timeout_s=0.2)
    try:
        good = await client.read()
        handle.hang()
        hung = await client.read()
        handle.answer()
        again = await client.read()
    finally:
        await client.close()
    assert hung.stale and hung.status == good.status
    assert not again.stale


async def test_fake_link_records_and_goes_dead() -> None:
    status = FlywheelStatus(0.5, 0.0, 500.0, 1000.0, 1e5, 1e5, FlywheelState.HOLDING)
    fake = FakeFlywheelLink(status)
    assert await fake.write_setpoint(5_000.0)
    assert (await fake.read()).status == FlywheelStatus(
        0.5, 5_000.0, 500.0, 1000.0, 1e5, 1e5, FlywheelState.HOLDING
    )
    fake.dead = True
    assert (await fake.read()).stale
    assert not await fake.write_setpoint(1.0)
    assert fake.setpoints_w == [5_000.0]
