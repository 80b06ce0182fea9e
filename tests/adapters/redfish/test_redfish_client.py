"""The Redfish client over real HTTP against DMTF's mockups (served by conftest.MockupServer)."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from wattwheel.adapters.redfish import FakeServerPowerDevice, RedfishClient, ServerPowerDevice

Payloads = dict[str, dict[str, Any]]
CHASSIS = "/redfish/v1/Chassis/1U"
CLIENT_LOGGER = "wattwheel.adapters.redfish.client"


async def test_discover_and_read_power_consumed_watts(
    rackmount_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    server = serve_mockup(rackmount_payloads)
    async with RedfishClient(server.url) as client:
        inventory = await client.discover()
        assert inventory is not None
        assert [s.chassis_uri for s in inventory.servers] == [CHASSIS]
        readings = await client.read_power()
    assert len(readings) == 1
    reading = readings[0]
    assert (reading.chassis_uri, reading.power_w, reading.limit_w) == (CHASSIS, 344.0, 500.0)
    assert reading.stale is False


async def test_read_gives_power_samples_for_the_domain(
    rackmount_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    server = serve_mockup(rackmount_payloads)
    async with RedfishClient(server.url, clock=lambda: 1_700_000_000.0) as client:
        samples = await client.read()
    assert len(samples) == 1
    sample = samples[0]
    assert (sample.rack_id, sample.server_id, sample.power_w, sample.kind) == (
        "WEB43",
        "1U",
        344.0,
        "server",
    )
    assert sample.source == f"redfish:{server.url}"
    assert sample.timestamp_s == 1_700_000_000.0  # PowerControl carries no reading time


async def test_read_uses_the_sensor_reading_time_and_default_rack(
    rackmount_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    chassis = rackmount_payloads[CHASSIS]
    for name in ("Power", "EnvironmentMetrics", "Location"):
        del chassis[name]
    server = serve_mockup(rackmount_payloads)
    async with RedfishClient(server.url) as unplaced:
        assert await unplaced.read() == []  # no rack anywhere: refused, not guessed
    async with RedfishClient(server.url, rack_id="r7") as client:
        (sample,) = await client.read()
    assert (sample.rack_id, sample.power_w) == ("r7", 374.0)
    assert sample.timestamp_s == datetime.fromisoformat("2019-08-13T04:14:33+06:00").timestamp()


async def test_pdu_outlets_as_samples(
    pdu_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    server = serve_mockup(pdu_payloads)
    # The DMTF PDU states a row, not a rack: the configured rack applies.
    async with RedfishClient(server.url, rack_id="r12", include_outlets=True) as client:
        samples = await client.read()
    assert {s.kind for s in samples} == {"outlet"}
    by_outlet = {s.server_id: s.power_w for s in samples}
    assert len(by_outlet) == 9  # A4 and A5 report no PowerWatts
    assert by_outlet["B3"] == 426.5
    assert {s.rack_id for s in samples} == {"r12"}


async def test_set_limit_through_controls_setpoint_and_read_it_back(
    rackmount_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    server = serve_mockup(rackmount_payloads)
    async with RedfishClient(server.url) as client:
        assert await client.set_power_limit(420.0) == 420.0
        # Above AllowableMax (1000 W): clamped to the nearest cap the BMC accepts.
        assert await client.set_power_limit(5000.0) == 1000.0
        await client.discover()  # re-read the Control as a new client would
        assert client.inventory is not None
        target = client.inventory.servers[0].preferred_limit
    assert target is not None and target.kind == "control_setpoint"
    assert target.current_w == 1000.0
    patches = [(uri, body) for method, uri, body in server.requests if method == "PATCH"]
    assert patches == [
        (f"{CHASSIS}/Controls/PowerLimit", {"SetPoint": 420}),
        (f"{CHASSIS}/Controls/PowerLimit", {"SetPoint": 1000}),
    ]


async def test_set_limit_through_power_control_when_no_controls(
    rackmount_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    # An older BMC layout: no Controls collection, only Power.PowerControl.
    del rackmount_payloads[CHASSIS]["Controls"]
    server = serve_mockup(rackmount_payloads)
    async with RedfishClient(server.url) as client:
        assert await client.set_power_limit(450.0) == 450.0
        readings = await client.read_power()
    assert readings[0].limit_w == 450.0
    assert readings[0].power_w == 344.0
    assert server.payloads[f"{CHASSIS}/Power"]["PowerControl"][0]["PowerLimit"] == {
        "LimitInWatts": 450,
        "LimitException": "LogEventOnly",
        "CorrectionInMs": 50,
    }


async def test_pdu_outlets_read_and_switched_off(
    pdu_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    server = serve_mockup(pdu_payloads)
    outlet_uri = "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/C1"
    async with RedfishClient(server.url) as client:
        outlets = {o.uri: o for o in await client.read_outlets()}
        assert outlets[outlet_uri].power_w == 56.8
        assert outlets[outlet_uri].power_on is True
        assert await client.set_outlet(outlet_uri, on=False) is True
        after = {o.uri: o for o in await client.read_outlets()}
        assert await client.set_outlet("/redfish/v1/nowhere", on=False) is False
    assert after[outlet_uri].power_on is False
    assert ("POST", f"{outlet_uri}/Outlet.PowerControl", {"PowerState": "Off"}) in server.requests


async def test_device_that_stops_answering_gives_stale_readings_logged_once(
    rackmount_payloads: Payloads,
    serve_mockup: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve_mockup(rackmount_payloads)
    caplog.set_level(logging.DEBUG, logger=CLIENT_LOGGER)
    async with RedfishClient(server.url, timeout_s=1.0) as client:
        fresh = await client.read_power()
        server.stop()
        silent = [await client.read_power() for _ in range(3)]
        assert await client.set_power_limit(400.0) is None
        assert client.failing
        records = [r for r in caplog.records if r.name == CLIENT_LOGGER]
        assert [r.levelno for r in records].count(logging.WARNING) == 1
        assert [r.levelno for r in records].count(logging.DEBUG) >= 3

        # The device comes back on the same address: fresh readings, recovery logged once.
        serve_mockup(rackmount_payloads, port=server.port)
        back = await client.read_power()
    for readings in silent:
        assert readings[0].stale is True
        assert readings[0].power_w == fresh[0].power_w  # the last value seen, flagged stale
    assert back[0].stale is False
    assert not client.failing
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_device_silent_from_the_start_yields_nothing_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A socket that accepts connections but never answers: each request hits the timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with RedfishClient(url, timeout_s=0.2) as client:
            assert await client.discover() is None
            assert await client.read_power() == []
            assert await client.set_power_limit(300.0) is None
            assert await client.set_outlet("/redfish/v1/x", on=False) is False
    warnings = [
        r for r in caplog.records if r.name == CLIENT_LOGGER and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1
    assert "Timeout" in warnings[0].getMessage()


async def test_malformed_reading_is_a_stale_reading_not_an_exception() -> None:
    # httpx.MockTransport is enough here: the point is the payload, not the wire.
    root = {"Chassis": {"@odata.id": "/redfish/v1/Chassis"}}
    payloads: dict[str, Any] = {
        "/redfish/v1/": root,
        "/redfish/v1/Chassis": {"Members": [{"@odata.id": CHASSIS}]},
        CHASSIS: {"Id": "1U", "Power": {"@odata.id": f"{CHASSIS}/Power"}},
        f"{CHASSIS}/Power": {"PowerControl": [{"PowerConsumedWatts": 200}]},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        payload = payloads.get(request.url.path)
        return httpx.Response(200, json=payload) if payload else httpx.Response(404)

    async with RedfishClient("http://bmc", transport=httpx.MockTransport(handler)) as client:
        assert (await client.read_power())[0].power_w == 200.0
        payloads[f"{CHASSIS}/Power"] = {"PowerControl": [{"PowerConsumedWatts": "NaN-ish"}]}
        reading = (await client.read_power())[0]
    assert reading.stale is True
    assert reading.power_w == 200.0


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        RedfishClient("http://bmc", timeout_s=0)


async def test_in_package_fake_behaves_like_a_capped_bmc() -> None:
    device: ServerPowerDevice = FakeServerPowerDevice({"a": 500.0, "b": 80.0}, min_limit_w=100.0)
    assert await device.set_power_limit(50.0, chassis_uri="a") == 100.0  # clamped to the floor
    readings = {r.chassis_uri: r.power_w for r in await device.read_power()}
    assert readings == {"a": 100.0, "b": 80.0}
    assert await device.set_power_limit(math.nan) is None


async def test_one_broken_resource_is_logged_once_while_others_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = {"Chassis": {"@odata.id": "/redfish/v1/Chassis"}}
    payloads: dict[str, Any] = {"/redfish/v1/": root, "/redfish/v1/Chassis": {"Members": []}}
    for name, power in (("good", 100), ("bad", 200)):
        uri = f"/redfish/v1/Chassis/{name}"
        payloads["/redfish/v1/Chassis"]["Members"].append({"@odata.id": uri})
        payloads[uri] = {"Id": name, "Power": {"@odata.id": f"{uri}/Power"}}
        payloads[f"{uri}/Power"] = {"PowerControl": [{"PowerConsumedWatts": power}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/redfish/v1/Chassis/bad/Power" and discovered:
            return httpx.Response(500, json={"error": {"message": "sensor bus hung"}})
        payload = payloads.get(request.url.path)
        return httpx.Response(200, json=payload) if payload else httpx.Response(404)

    discovered = False
    caplog.set_level(logging.DEBUG, logger=CLIENT_LOGGER)
    async with RedfishClient("http://bmc", transport=httpx.MockTransport(handler)) as client:
        await client.discover()
        discovered = True
        for _ in range(4):
            readings = {r.chassis_uri: r for r in await client.read_power()}
    assert readings["/redfish/v1/Chassis/good"].power_w == 100.0
    assert readings["/redfish/v1/Chassis/bad"].stale is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sensor bus hung" in warnings[0].getMessage()


async def test_a_vanished_resource_triggers_rediscovery(
    rackmount_payloads: Payloads, serve_mockup: Callable[..., Any]
) -> None:
    server = serve_mockup(rackmount_payloads)
    async with RedfishClient(server.url) as client:
        assert (await client.read_power())[0].resource_uri == f"{CHASSIS}/Power"
        # A firmware update drops the deprecated Power resource and its link.
        del server.payloads[f"{CHASSIS}/Power"]
        del server.payloads[CHASSIS]["Power"]
        del server.payloads[f"{CHASSIS}/EnvironmentMetrics"]
        assert (await client.read_power())[0].stale is True
        after = (await client.read_power())[0]
    # EnvironmentMetrics is gone too (404, skipped); only the Sensors path is left.
    assert (after.stale, after.resource_uri, after.power_w) == (
        False,
        f"{CHASSIS}/Sensors/TotalPower",
        374.0,
    )
