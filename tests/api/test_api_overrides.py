"""Operator overrides change what the loop reads and are recorded (who, when, why) as events in
the store and the live state."""

from __future__ import annotations

from api_support import DOMAINS, OPERATOR, TOKENS, VIEWER, Api, auth
from fastapi.testclient import TestClient

from wattwheel.api import create_app
from wattwheel.runtime.inventory import Inventory, ServerInfo

OP = auth(OPERATOR)


def _events(api: Api, kind: str) -> list[dict[str, object]]:
    r = api.client.get("/api/v1/events", params={"kind": kind}, headers=auth(VIEWER))
    assert r.status_code == 200
    return list(r.json()["events"])


def test_pin_cap_recorded_and_visible_to_the_loop(api: Api) -> None:
    body = {
        "scope": "domain",
        "target": "row-b",
        "cap_kw": 55.0,
        "reason": "PDU swap",
        "ttl_s": 600,
    }
    r = api.client.post("/api/v1/overrides/cap", json=body, headers=OP)
    assert r.status_code == 201
    ov = r.json()
    assert (ov["actor"], ov["reason"], ov["cap_kw"]) == ("olga", "PDU swap", 55.0)
    assert ov["created_s"] == api.now[0] and ov["expires_s"] == api.now[0] + 600
    pinned = api.overrides.pinned_cap_kw(DOMAINS, api.now[0])
    assert pinned[1] == 55.0
    [ev] = _events(api, "override.pin_cap")
    assert ev["actor"] == "olga" and "PDU swap" in str(ev["message"])
    assert ev["domain_id"] == "row-b"
    assert api.state.recent_events(1)[0].kind == "override.pin_cap"
    listed = api.client.get("/api/v1/overrides", headers=auth(VIEWER)).json()["overrides"]
    assert [o["target"] for o in listed] == ["row-b"]
    r = api.client.delete("/api/v1/overrides/cap/domain/row-b", headers=OP)
    assert r.status_code == 200
    assert [e["kind"] for e in _events(api, "override.clear")] == ["override.clear"]
    assert api.client.delete("/api/v1/overrides/cap/domain/row-b", headers=OP).status_code == 404


def test_rack_pin_shows_on_racks(api: Api) -> None:
    body = {"scope": "rack", "target": "row-a-r2", "cap_kw": 20.0, "reason": "hot spot"}
    assert api.client.post("/api/v1/overrides/cap", json=body, headers=OP).status_code == 201
    racks = api.client.get("/api/v1/racks", headers=auth(VIEWER)).json()["racks"]
    assert {r["rack_id"]: r["pinned_cap_kw"] for r in racks}["row-a-r2"] == 20.0
    body["target"] = "no-such-rack"
    assert api.client.post("/api/v1/overrides/cap", json=body, headers=OP).status_code == 404


def test_reserve_force_forbid(api: Api) -> None:
    for action, code in (("force", 1), ("forbid", -1)):
        body = {"domain_id": "row-a", "action": action, "reason": "genset test"}
        assert (
            api.client.post("/api/v1/overrides/reserve", json=body, headers=OP).status_code == 201
        )
        assert api.overrides.reserve_override(DOMAINS, api.now[0]).tolist() == [code, 0]
    assert len(_events(api, "override.reserve")) == 2
    assert api.client.delete("/api/v1/overrides/reserve/row-a", headers=OP).status_code == 200
    assert api.overrides.reserve_override(DOMAINS, api.now[0]).tolist() == [0, 0]


def test_maintenance_mode(api: Api) -> None:
    r = api.client.post(
        "/api/v1/overrides/maintenance", json={"reason": "UPS swap", "ttl_s": 60}, headers=OP
    )
    assert r.status_code == 201
    assert api.state.mode == "maintenance" and api.overrides.maintenance(api.now[0])
    status = api.client.get("/api/v1/status", headers=auth(VIEWER)).json()
    assert status["maintenance"] is True and status["overrides_active"] == 1
    api.now[0] += 61  # expired
    assert not api.overrides.maintenance(api.now[0])
    assert api.client.delete("/api/v1/overrides/maintenance", headers=OP).status_code == 404


def test_bad_override_bodies_are_rejected(api: Api) -> None:
    c = api.client
    bad = [
        ("/cap", {"scope": "domain", "target": "row-a", "cap_kw": -1, "reason": "x"}, 422),
        ("/cap", {"scope": "domain", "target": "row-a", "cap_kw": 5}, 422),  # no reason
        ("/cap", {"scope": "domain", "target": "nowhere", "cap_kw": 5, "reason": "x"}, 404),
        ("/reserve", {"domain_id": "row-a", "action": "maybe", "reason": "x"}, 422),
        ("/maintenance", {"reason": "x", "ttl_s": 0}, 422),
    ]
    for path, body, code in bad:
        assert c.post("/api/v1/overrides" + path, json=body, headers=OP).status_code == code, body
    assert api.overrides.active(api.now[0]) == []


def test_non_finite_or_absurd_numbers_are_422(api: Api) -> None:
    # JSON as a client may really send it: Python's json (and so the API) parses NaN/Infinity.
    head = b'{"scope":"domain","target":"row-a","reason":"x",'
    headers = {**OP, "content-type": "application/json"}
    for tail in (
        b'"cap_kw":NaN}',
        b'"cap_kw":Infinity}',
        b'"cap_kw":-Infinity}',
        b'"cap_kw":1e308}',
        b'"cap_kw":1e400}',
        b'"cap_kw":' + b"9" * 400 + b"}",
        b'"cap_kw":5,"ttl_s":NaN}',
        b'"cap_kw":5,"ttl_s":Infinity}',
        b'"cap_kw":5,"ttl_s":1e308}',
        b'"cap_kw":5,"ttl_s":' + b"9" * 400 + b"}",
    ):
        r = api.client.post("/api/v1/overrides/cap", content=head + tail, headers=headers)
        assert r.status_code == 422, (tail[:40], r.status_code, r.text[:200])
    r = api.client.post(
        "/api/v1/overrides/maintenance", content=b'{"reason":"x","ttl_s":1e308}', headers=headers
    )
    assert r.status_code == 422 and "ttl_s" in r.text
    body = {"scope": "domain", "target": "row-a", "cap_kw": 5, "reason": "nul\u0000byte"}
    assert api.client.post("/api/v1/overrides/cap", json=body, headers=OP).status_code == 422
    assert api.overrides.active(api.now[0]) == []


def test_before_id_overflow_is_422(api: Api) -> None:
    for route in ("/api/v1/events", "/api/v1/decisions"):
        r = api.client.get(route, params={"before_id": 2**63}, headers=auth(VIEWER))
        assert r.status_code == 422, route
        r = api.client.get(route, params={"before_id": 2**63 - 1}, headers=auth(VIEWER))
        assert r.status_code == 200, route
    r = api.client.get("/api/v1/telemetry", params={"since_s": "nan"}, headers=auth(VIEWER))
    assert r.status_code == 422


def _half_critical_inventory() -> Inventory:
    """The fixture's racks (``<domain>-r0..3``), 4 servers each, the first 2 critical."""
    racks = [[f"{d}-r{j}" for j in range(4)] for d in DOMAINS]
    servers = [
        ServerInfo(f"{rack}-s{k}", rack, k < 2, 10 if k < 2 else 1, 100.0, 40_000.0)
        for group in racks
        for rack in group
        for k in range(4)
    ]
    return Inventory(servers, DOMAINS, racks)


def test_a_pin_below_the_critical_load_is_refused_with_409(api: Api) -> None:
    app = create_app(
        api.state,
        api.store,
        api.overrides,
        TOKENS,
        clock=lambda: api.now[0],
        inventory=_half_critical_inventory(),
    )
    rack = {x.rack_id: x for x in api.state.racks()}["row-a-r1"]
    critical_kw = rack.power_kw / 2
    with TestClient(app) as c:
        body = {"scope": "rack", "target": "row-a-r1", "cap_kw": 20.0, "reason": "hot aisle"}
        r = c.post("/api/v1/overrides/cap", json=body, headers=OP)
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert f"{critical_kw:.1f} kW of critical load" in detail
        assert "2 of its 4 servers are critical" in detail
        assert api.overrides.active(api.now[0]) == []
        body["cap_kw"] = round(critical_kw + 1.0, 1)
        assert c.post("/api/v1/overrides/cap", json=body, headers=OP).status_code == 201
        # A domain pin is the most the whole domain may draw: the same rule over its racks.
        domain_critical = sum(x.power_kw for x in api.state.racks("row-b")) / 2
        body = {"scope": "domain", "target": "row-b", "cap_kw": domain_critical - 5, "reason": "x"}
        r = c.post("/api/v1/overrides/cap", json=body, headers=OP)
        assert r.status_code == 409 and f"{domain_critical:.1f} kW" in r.json()["detail"]
        body["cap_kw"] = domain_critical + 5
        assert c.post("/api/v1/overrides/cap", json=body, headers=OP).status_code == 201
