"""Read routes return the live state and the stored audit log (paged), and fall back to the
in-memory ring when the database is down."""

from __future__ import annotations

from api_support import VIEWER, Api, auth

from wattwheel.domain.telemetry import PowerSample

H = auth(VIEWER)


def test_status(api: Api) -> None:
    s = api.client.get("/api/v1/status", headers=H).json()
    assert s["site"] == "demo" and s["mode"] == "normal" and s["policy"] == "predictive"
    assert s["domains"] == 2 and s["racks"] == 8 and s["telemetry_ingested"] == 40
    assert s["loop_latency_ms"]["count"] == 5 and 4.0 <= s["loop_latency_ms"]["p50"] <= 8.0
    assert s["tick_age_s"] == 1.0
    assert s["store"] == {
        "healthy": True,
        "pending_items": 0,
        "spilled_items": 0,
        "spill_bytes": 0,
        "spill_max_bytes": 0,
        "durable": False,
        "dropped": 0,
    }


def test_domains_history_flywheel_forecasts(api: Api) -> None:
    doms = api.client.get("/api/v1/domains", headers=H).json()["domains"]
    assert [d["domain_id"] for d in doms] == ["row-a", "row-b"]
    one = api.client.get("/api/v1/domains/row-a", headers=H).json()
    assert len(one["history"]) == 5 and one["domain"]["primary_kw"] == 500.0
    assert api.client.get("/api/v1/domains/nope", headers=H).status_code == 404
    banks = api.client.get("/api/v1/flywheel", headers=H).json()["banks"]
    assert banks[0] == {
        "domain_id": "row-a",
        "soc": 0.62,
        "kes_kw": -12.0,
        "soc_target": 0.8,
        "max_discharge_kw": 40.0,
        "timestamp_s": api.now[0] - 1,
    }
    fc = api.client.get("/api/v1/forecasts", params={"series_id": "row-b"}, headers=H).json()
    [row] = fc["forecasts"]
    assert [b["horizon_s"] for b in row["bands"]] == [300.0, 600.0, 900.0]
    assert row["bands"][0]["p05_kw"] < row["bands"][0]["p50_kw"] < row["bands"][0]["p95_kw"]


def test_decisions_paged_from_the_store(api: Api) -> None:
    c = api.client
    p1 = c.get("/api/v1/decisions", params={"domain_id": "row-a", "limit": 3}, headers=H).json()
    assert p1["source"] == "store"
    assert [d["reason"].split(":")[0] for d in p1["decisions"]] == ["tick 4", "tick 3", "tick 2"]
    p2 = c.get(
        "/api/v1/decisions",
        params={"domain_id": "row-a", "limit": 3, "before_id": p1["next_before_id"]},
        headers=H,
    ).json()
    assert [d["reason"].split(":")[0] for d in p2["decisions"]] == ["tick 1", "tick 0"]
    assert p2["next_before_id"] is None
    assert c.get("/api/v1/decisions", params={"limit": 0}, headers=H).status_code == 422


def test_store_down_falls_back_to_memory(api: Api) -> None:
    api.store.available = False
    r = api.client.get("/api/v1/decisions", params={"limit": 4}, headers=H).json()
    assert r["source"] == "memory" and len(r["decisions"]) == 4
    assert (
        api.client.get("/api/v1/forecasts", params={"history": True}, headers=H).status_code == 503
    )


def test_telemetry_from_the_store(api: Api) -> None:
    api.store.write_telemetry(
        [PowerSample("mqtt", f"r{i % 2}", None, float(i), 10.0 * i) for i in range(6)]
    )
    r = api.client.get("/api/v1/telemetry", params={"rack_id": "r1", "limit": 2}, headers=H)
    assert [s["timestamp_s"] for s in r.json()["samples"]] == [5.0, 3.0]
    api.store.available = False
    assert api.client.get("/api/v1/telemetry", headers=H).status_code == 503


def test_status_reports_leadership_when_the_runtime_knows_it(api: Api) -> None:
    from dataclasses import asdict

    from wattwheel.runtime.leader import COORDINATOR, FakeElector

    assert api.client.get("/api/v1/status", headers=H).json()["leadership"] is None
    elector = FakeElector(["row-a", COORDINATOR])
    elector.demote("row-a")
    api.state.leadership = lambda: [asdict(r) for r in elector.status(0.0)]
    roles = {r["role"]: r for r in api.client.get("/api/v1/status", headers=H).json()["leadership"]}
    assert roles["row-a"]["leading"] is False and roles["row-a"]["fencing_token"] is None
    assert roles[COORDINATOR]["leading"] is True and roles[COORDINATOR]["fencing_token"] == 2
