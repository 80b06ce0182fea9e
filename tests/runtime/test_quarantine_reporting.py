"""Whole messages a transport quarantined (the MQTT ingester's rejections) reach the runtime:
counted as ``input`` errors (``wattwheel_errors_total{kind="input"}``) and the first of each
reason is a ``telemetry.quarantine`` event."""

from __future__ import annotations

from test_loop import build

from wattwheel.adapters.mqtt.quarantine import Quarantine
from wattwheel.adapters.ports import MqttTelemetry


async def test_quarantined_messages_are_counted_and_evented_once_per_reason() -> None:
    quarantine = Quarantine()
    mqtt = MqttTelemetry(quarantine=quarantine)
    rt, clock, bmc, _, _ = build(extra_sources={"mqtt": mqtt})
    t = clock.now_s()
    for payload in (b"[[[", b"x" * 3):
        quarantine.add("wattwheel/s/telemetry/a1", "not-json", "payload is not JSON", t, payload)
    quarantine.add("wattwheel/s/telemetry/a1", "number", "an integer of 400 digits", t, b"")
    await rt.tick()
    before = rt.state.errors.get("input", 0)
    assert before == 3
    quarantine.add("wattwheel/s/telemetry/a1", "number", "an integer of 400 digits", t, b"")
    clock.advance(1.0)
    bmc.now_s = clock.now_s()
    await rt.tick()
    assert rt.state.errors["input"] == 4
    events = [e for e in rt.state.recent_events() if e.kind == "telemetry.quarantine"]
    assert sorted(e.message.split("(")[1].split(";")[0] for e in events) == ["not-json", "number"]
    assert all(e.message.startswith("mqtt: rejected on arrival") for e in events)
