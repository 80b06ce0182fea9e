"""The MQTT telemetry emulator publishing to a real Mosquitto, read back by the ingester."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services import Mosquitto
from wattwheel.adapters.mqtt.client import Backoff, BrokerAddress, MqttIngester
from wattwheel.adapters.mqtt.codec import telemetry_filter
from wattwheel.domain.telemetry import PowerSample
from wattwheel.emulate.mqtt import site_samples, start_mqtt_emulator
from wattwheel.emulate.snmp import StaticRackPower

pytestmark = pytest.mark.timeout(60)


def test_site_samples_split_racks_into_servers() -> None:
    power = StaticRackPower({"r1": 900.0, "r2": 100.0})
    samples = site_samples(["r1", "r2"], power, 5.0, servers={"r1": ["a", "b", "c"]})
    assert [(s.rack_id, s.server_id, s.power_w, s.kind) for s in samples] == [
        ("r1", "a", 300.0, "server"),
        ("r1", "b", 300.0, "server"),
        ("r1", "c", 300.0, "server"),
        ("r2", None, 100.0, "rack"),
    ]
    assert all(s.timestamp_s == 5.0 for s in samples)


@pytest.mark.service
async def test_emulator_publishes_the_source_power(mosquitto: Mosquitto) -> None:
    received: list[PowerSample] = []

    async def sink(batch: list[PowerSample]) -> None:
        received.extend(batch)

    broker = BrokerAddress(port=mosquitto.port)
    ingester = MqttIngester(broker, telemetry_filter("dc9"), sink, client_id="emu-test")
    task = asyncio.create_task(ingester.run())
    await asyncio.wait_for(ingester.subscribed.wait(), 10)
    power = StaticRackPower({"r1": 1500.0, "r2": 250.0})
    emulator = await start_mqtt_emulator(
        ["r1", "r2"], power, broker, "dc9", period_s=0.05, backoff=Backoff(0.05, 0.2)
    )
    try:
        async with asyncio.timeout(10):
            while {s.rack_id for s in received} != {"r1", "r2"}:
                await asyncio.sleep(0.02)
            power.set("r1", 3000.0)
            while not any(s.rack_id == "r1" and s.power_w == 3000.0 for s in received):
                await asyncio.sleep(0.02)
    finally:
        await emulator.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert {s.power_w for s in received if s.rack_id == "r2"} == {250.0}
    assert all(s.kind == "rack" and s.source == "mqtt:emulate:mqtt" for s in received)
    assert emulator.publisher.dropped_samples == 0
