"""Redfish readings -> domain PowerSamples."""

from __future__ import annotations

from wattwheel.adapters.redfish.samples import epoch_s, outlet_samples, server_samples
from wattwheel.adapters.redfish.values import (
    DiscoveredServer,
    OutletReading,
    ServerPowerReading,
)

URI = "/redfish/v1/Chassis/7"


def _server(rack: str | None) -> dict[str, DiscoveredServer]:
    return {URI: DiscoveredServer(URI, "7", (), (), rack=rack)}


def test_fresh_readings_become_samples_and_stale_ones_do_not() -> None:
    fresh = ServerPowerReading(URI, f"{URI}/Power", 250.0, timestamp="2026-01-01T00:00:00Z")
    stale = ServerPowerReading(URI, f"{URI}/Power", 240.0, stale=True)
    empty = ServerPowerReading(URI, f"{URI}/Power", None)
    batch = server_samples([fresh, stale, empty], _server("r1"), "redfish:x", None, 99.0)
    assert [(s.rack_id, s.server_id, s.power_w, s.kind) for s in batch.samples] == [
        ("r1", "7", 250.0, "server")
    ]
    assert batch.samples[0].timestamp_s == 1_767_225_600.0  # the device's own time, UTC


def test_rack_comes_from_the_device_else_the_configuration_else_nowhere() -> None:
    reading = ServerPowerReading(URI, URI, 100.0)
    assert server_samples([reading], _server(None), "s", "cfg", 5.0).samples[0].rack_id == "cfg"
    assert server_samples([reading], _server("dev"), "s", "cfg", 5.0).samples[0].rack_id == "dev"
    nowhere = server_samples([reading], _server(None), "s", None, 5.0)
    assert (nowhere.samples, nowhere.unplaced) == ([], [URI])


def test_outlet_samples() -> None:
    on = OutletReading("/o/1", "1", 80.0, True, None, rack="r2")
    silent = OutletReading("/o/2", "2", None, True, None, rack="r2")
    batch = outlet_samples([on, silent], "s", None, 7.0)
    assert [(s.rack_id, s.server_id, s.power_w, s.kind, s.timestamp_s) for s in batch.samples] == [
        ("r2", "1", 80.0, "outlet", 7.0)
    ]


def test_reading_times() -> None:
    assert epoch_s("1970-01-01T00:01:00+00:00", 0.0) == 60.0
    assert epoch_s("1970-01-01T00:01:00", 0.0) == 60.0  # no offset: UTC
    assert epoch_s("yesterday", 42.0) == 42.0
    assert epoch_s(None, 42.0) == 42.0
