"""The Redfish emulator over real HTTP (uvicorn on a free port), driven by the wattwheel client."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wattwheel.adapters.redfish import RedfishClient
from wattwheel.domain.errors import ConfigError
from wattwheel.emulate.redfish import (
    LimitRange,
    RunningServer,
    SiteState,
    StaticPowerSource,
    TlsFiles,
    build_redfish_app,
    serve,
    serve_in_thread,
)
from wattwheel.emulate.redfish.service import MAX_SESSIONS

AUTH = ("admin", "wattwheel")
SERVERS = ["srv-1", "srv-2"]
SRV1 = "/redfish/v1/Chassis/srv-1"


@pytest.fixture
def source() -> StaticPowerSource:
    return StaticPowerSource({"srv-1": 450.0, "srv-2": 300.0})


@pytest.fixture
def emulator(source: StaticPowerSource) -> Iterator[RunningServer]:
    app = build_redfish_app(SERVERS, source, limits=LimitRange(min_w=100.0, max_w=1000.0))
    with serve_in_thread(app) as running:
        yield running


@pytest.fixture
def http(emulator: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, auth=AUTH, timeout=5.0) as client:
        yield client


async def test_cap_reduces_consumed_power(
    emulator: RunningServer, source: StaticPowerSource
) -> None:
    async with RedfishClient(emulator.url, username=AUTH[0], password=AUTH[1]) as client:
        before = {r.chassis_uri: r.power_w for r in await client.read_power()}
        assert before == {SRV1: 450.0, "/redfish/v1/Chassis/srv-2": 300.0}
        assert await client.set_power_limit(320.0, chassis_uri=SRV1) == 320.0
        capped = {r.chassis_uri: r for r in await client.read_power()}
        assert (capped[SRV1].power_w, capped[SRV1].limit_w) == (320.0, 320.0)
        assert capped["/redfish/v1/Chassis/srv-2"].power_w == 300.0  # untouched
        source.set("srv-1", 250.0)  # demand below the cap: the cap does not bind
        assert {r.chassis_uri: r.power_w for r in await client.read_power()}[SRV1] == 250.0
    # The client chose Controls/PowerLimit: the emulator offers it.
    assert client.inventory is not None
    target = client.inventory.servers[0].preferred_limit
    assert target is not None and target.kind == "control_setpoint"


async def test_many_caps_at_once(emulator: RunningServer) -> None:
    async with RedfishClient(emulator.url, username=AUTH[0], password=AUTH[1]) as client:
        written = await client.set_power_limits({"srv-1": 200.0, "srv-2": 5.0, "srv-9": 300.0})
        samples = {s.server_id: s.power_w for s in await client.read()}
    # srv-2's 5 W is below the BMC's 100 W floor: clamped; srv-9 does not exist.
    assert written == {"srv-1": 200.0, "srv-2": 100.0, "srv-9": None}
    assert samples == {"srv-1": 200.0, "srv-2": 100.0}


def test_every_view_of_a_server_agrees(http: httpx.Client) -> None:
    patch = {"PowerControl": [{"PowerLimit": {"LimitInWatts": 400}}]}
    assert http.patch(f"{SRV1}/Power", json=patch).status_code == 200
    control = http.get(f"{SRV1}/Controls/PowerLimit").json()
    env = http.get(f"{SRV1}/EnvironmentMetrics").json()
    sensor = http.get(f"{SRV1}/Sensors/TotalPower").json()
    outlet = http.get("/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/srv-1").json()
    assert control["SetPoint"] == env["PowerLimitWatts"]["SetPoint"] == 400
    assert control["Sensor"]["Reading"] == env["PowerWatts"]["Reading"] == 400
    assert sensor["Reading"] == outlet["PowerWatts"]["Reading"] == 400
    # Lifting the limit (null) restores the uncapped demand.
    lift = {"PowerControl": [{"PowerLimit": {"LimitInWatts": None}}]}
    assert (
        http.patch(f"{SRV1}/Power", json=lift).json()["PowerControl"][0]["PowerConsumedWatts"]
        == 450
    )


@pytest.mark.parametrize(
    ("uri", "body", "message_id"),
    [
        (f"{SRV1}/Controls/PowerLimit", {"SetPoint": 50}, "PropertyValueOutOfRange"),
        (f"{SRV1}/Controls/PowerLimit", {"SetPoint": "high"}, "PropertyValueTypeError"),
        (f"{SRV1}/Controls/PowerLimit", {"AllowableMax": 5000}, "PropertyNotWritable"),
        (f"{SRV1}/Controls/PowerLimit", {"Bogus": 1}, "PropertyUnknown"),
        (
            f"{SRV1}/Power",
            {"PowerControl": [{"PowerLimit": {"LimitInWatts": 1001}}]},
            "PropertyValueOutOfRange",
        ),
        (
            f"{SRV1}/Power",
            {"PowerControl": [{"PowerConsumedWatts": 1}]},
            "PropertyNotWritable",
        ),
    ],
)
def test_bad_patch_is_a_400_with_a_redfish_error(
    http: httpx.Client, uri: str, body: dict[str, object], message_id: str
) -> None:
    response = http.patch(uri, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["@Message.ExtendedInfo"][0]["MessageId"] == f"Base.1.19.{message_id}"
    assert http.get(f"{SRV1}/Controls/PowerLimit").json()["SetPoint"] == 1000  # unchanged


def test_patch_where_not_allowed_is_405_with_allow(http: httpx.Client) -> None:
    response = http.patch(f"{SRV1}/EnvironmentMetrics", json={"PowerLimitWatts": {"SetPoint": 1}})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_stale_etag_is_refused(http: httpx.Client, source: StaticPowerSource) -> None:
    uri = f"{SRV1}/Controls/PowerLimit"
    etag = http.get(uri).headers["ETag"]
    source.set("srv-1", 451.0)  # the reading, hence the representation, changed
    refused = http.patch(uri, json={"SetPoint": 500}, headers={"If-Match": etag})
    assert refused.status_code == 412
    fresh = http.get(uri).headers["ETag"]
    assert http.patch(uri, json={"SetPoint": 500}, headers={"If-Match": fresh}).status_code == 200


async def test_outlet_off_drops_the_server_to_zero(emulator: RunningServer) -> None:
    outlet_uri = "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/srv-2"
    async with RedfishClient(emulator.url, username=AUTH[0], password=AUTH[1]) as client:
        assert await client.set_outlet(outlet_uri, on=False)
        outlets = {o.uri: o for o in await client.read_outlets()}
        servers = {r.chassis_uri: r.power_w for r in await client.read_power()}
    assert (outlets[outlet_uri].power_on, outlets[outlet_uri].power_w) == (False, 0.0)
    assert servers["/redfish/v1/Chassis/srv-2"] == 0.0


def test_outlet_action_rejects_unknown_state(http: httpx.Client) -> None:
    target = "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/srv-1/Actions/Outlet.PowerControl"
    response = http.post(target, json={"PowerState": "Sideways"})
    assert response.status_code == 400
    assert "ActionParameterValueNotInList" in response.json()["error"]["code"]


def test_authentication_basic_and_sessions(emulator: RunningServer) -> None:
    with httpx.Client(base_url=emulator.url, timeout=5.0) as anonymous:
        assert anonymous.get("/redfish/v1/").status_code == 200  # the root is public
        denied = anonymous.get("/redfish/v1/Chassis")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        assert anonymous.get("/redfish/v1/Chassis", auth=("admin", "nope")).status_code == 401
        bad_login = {"UserName": "admin", "Password": "nope"}
        assert (
            anonymous.post("/redfish/v1/SessionService/Sessions", json=bad_login).status_code == 401
        )

        login = {"UserName": "admin", "Password": "wattwheel"}
        created = anonymous.post("/redfish/v1/SessionService/Sessions", json=login)
        assert created.status_code == 201
        token, location = created.headers["X-Auth-Token"], created.headers["Location"]
        headers = {"X-Auth-Token": token}
        assert anonymous.get("/redfish/v1/Chassis", headers=headers).status_code == 200
        sessions = anonymous.get("/redfish/v1/SessionService/Sessions", headers=headers).json()
        assert {"@odata.id": location} in sessions["Members"]
        assert anonymous.delete(location, headers=headers).status_code == 204
        assert anonymous.get("/redfish/v1/Chassis", headers=headers).status_code == 401


def test_metadata_odata_and_unknown_uris(http: httpx.Client) -> None:
    metadata = http.get("/redfish/v1/$metadata")
    assert metadata.headers["content-type"].startswith("application/xml")
    namespaces = {
        include.get("Namespace")
        for include in ET.fromstring(metadata.text).iter(
            "{http://docs.oasis-open.org/odata/ns/edmx}Include"
        )
    }
    assert {"Chassis.v1_28_0", "Control.v1_7_0", "Outlet.v1_4_4"} <= namespaces
    odata = http.get("/redfish/v1/odata").json()
    assert {"name": "Chassis", "kind": "Singleton", "url": "/redfish/v1/Chassis"} in odata["value"]
    missing = http.get("/redfish/v1/Chassis/nope")
    assert missing.status_code == 404
    assert "ResourceMissingAtURI" in missing.json()["error"]["code"]
    head = http.head(SRV1)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["OData-Version"] == "4.0"


def test_bad_configuration_names_the_key(source: StaticPowerSource) -> None:
    with pytest.raises(ConfigError, match="servers"):
        build_redfish_app(["ok", "has space"], source)
    with pytest.raises(ConfigError, match="duplicate"):
        build_redfish_app(["a", "a"], source)
    with pytest.raises(ConfigError, match="limit_range"):
        LimitRange(min_w=500.0, max_w=100.0)


async def test_one_pdu_per_rack(source: StaticPowerSource) -> None:
    racks = {"rack-a": ["srv-1"], "rack-b": ["srv-2"]}
    app = build_redfish_app(SERVERS, source, racks=racks)
    login = {"username": AUTH[0], "password": AUTH[1]}
    with serve_in_thread(app) as emulator:
        async with RedfishClient(emulator.url, include_outlets=True, **login) as client:
            outlets = {o.uri: o.power_w for o in await client.read_outlets()}
            switched = await client.set_outlet(
                "/redfish/v1/PowerEquipment/RackPDUs/rack-b/Outlets/srv-2", on=False
            )
            powers = {r.chassis_uri: r.power_w for r in await client.read_power()}
            samples = {(s.kind, s.rack_id, s.server_id): s.power_w for s in await client.read()}
    # Each chassis states its rack (Location.Placement.Rack); an unpowered server reads 0 W.
    assert samples == {
        ("server", "rack-a", "srv-1"): 450.0,
        ("server", "rack-b", "srv-2"): 0.0,
        ("outlet", "rack-a", "srv-1"): 450.0,  # the PDU states its rack too
        ("outlet", "rack-b", "srv-2"): 0.0,
    }
    assert outlets == {
        "/redfish/v1/PowerEquipment/RackPDUs/rack-a/Outlets/srv-1": 450.0,
        "/redfish/v1/PowerEquipment/RackPDUs/rack-b/Outlets/srv-2": 300.0,
    }
    assert switched
    assert powers == {SRV1: 450.0, "/redfish/v1/Chassis/srv-2": 0.0}


@pytest.mark.parametrize(
    ("racks", "words"),
    [
        ({"a": ["srv-1"]}, "in no rack"),
        ({"a": ["srv-1", "srv-2", "srv-9"]}, "not in the server list"),
        ({"a": ["srv-1", "srv-2"], "b": ["srv-2"]}, "duplicate"),
    ],
)
def test_bad_racks_are_refused(
    source: StaticPowerSource, racks: dict[str, list[str]], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        build_redfish_app(SERVERS, source, racks=racks)


async def test_serve_in_the_running_loop_and_cancel(source: StaticPowerSource) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve(build_redfish_app(SERVERS, source), "127.0.0.1", port))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(100):
            try:
                root = await client.get("/redfish/v1/")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
        assert root.json()["Chassis"] == {"@odata.id": "/redfish/v1/Chassis"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with socket.socket() as again:  # the port is released
        again.bind(("127.0.0.1", port))


async def test_client_session_auth_logs_in_again_when_its_session_is_gone(
    emulator: RunningServer, http: httpx.Client
) -> None:
    sessions_uri = "/redfish/v1/SessionService/Sessions"
    async with RedfishClient(
        emulator.url, username=AUTH[0], password=AUTH[1], session_auth=True
    ) as client:
        assert (await client.read_power())[0].power_w == 450.0
        first = http.get(sessions_uri).json()["Members"]
        assert len(first) == 1
        assert http.delete(first[0]["@odata.id"]).status_code == 204  # an admin kills it
        assert (await client.read_power())[0].power_w == 450.0  # renewed transparently
        assert not client.failing
        second = http.get(sessions_uri).json()["Members"]
        assert len(second) == 1 and second != first
    assert http.get(sessions_uri).json()["Members"] == []  # aclose() logged out


async def test_wrong_password_is_a_logged_failure_not_an_exception(
    emulator: RunningServer,
) -> None:
    for session_auth in (False, True):
        async with RedfishClient(
            emulator.url, username="admin", password="wrong", session_auth=session_auth
        ) as client:
            assert await client.read_power() == []
            assert client.failing


class _BrokenSource:
    def power_w(self, server_id: str) -> float:
        if server_id == "srv-2":
            raise RuntimeError("trace exhausted")
        return 123.0


def test_a_failing_power_source_shows_as_no_reading(caplog: pytest.LogCaptureFixture) -> None:
    with (
        serve_in_thread(build_redfish_app(SERVERS, _BrokenSource())) as emulator,
        httpx.Client(base_url=emulator.url, auth=AUTH, timeout=5.0) as http,
    ):
        for _ in range(3):
            broken = http.get("/redfish/v1/Chassis/srv-2/Power")
        fine = http.get(f"{SRV1}/Power")
    assert broken.status_code == 200
    assert broken.json()["PowerControl"][0]["PowerConsumedWatts"] is None
    assert fine.json()["PowerControl"][0]["PowerConsumedWatts"] == 123.0
    assert sum("trace exhausted" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TlsFiles(str(cert), str(key))


async def test_https_with_the_bmc_certificate_as_trust_root(
    source: StaticPowerSource, tls_files: TlsFiles
) -> None:
    with serve_in_thread(build_redfish_app(SERVERS, source), tls=tls_files) as emulator:
        assert emulator.url.startswith("https://")
        login = {"username": AUTH[0], "password": AUTH[1]}
        async with RedfishClient(emulator.url, verify_tls=tls_files.certfile, **login) as trusting:
            assert len(await trusting.read_power()) == 2
        async with RedfishClient(emulator.url, **login) as default_trust:
            assert await default_trust.read_power() == []  # unknown CA: refused, not raised
            assert default_trust.failing


def test_session_limit(emulator: RunningServer) -> None:
    login = {"UserName": AUTH[0], "Password": AUTH[1]}
    with httpx.Client(base_url=emulator.url, timeout=5.0) as anonymous:
        statuses = [
            anonymous.post("/redfish/v1/SessionService/Sessions", json=login).status_code
            for _ in range(MAX_SESSIONS + 1)
        ]
    assert statuses == [201] * MAX_SESSIONS + [503]


def test_a_cap_binds_after_the_correction_time(source: StaticPowerSource) -> None:
    now_s = [100.0]
    state = SiteState(SERVERS, source, LimitRange(), cap_delay_s=2.0, monotonic=lambda: now_s[0])
    state.set_limit("srv-1", 300.0)
    assert state.snapshot("srv-1").consumed_w == 450.0  # still correcting
    now_s[0] += 1.9
    assert state.snapshot("srv-1").consumed_w == 450.0
    state.set_limit("srv-1", 200.0)  # rewritten mid-correction: the old limit stays in force
    now_s[0] += 1.0
    assert state.snapshot("srv-1").consumed_w == 450.0
    now_s[0] += 1.0
    snapshot = state.snapshot("srv-1")
    assert (snapshot.consumed_w, snapshot.limit_w) == (200.0, 200.0)
    with pytest.raises(ConfigError, match="cap_delay_s"):
        SiteState(SERVERS, source, LimitRange(), cap_delay_s=-1.0)
