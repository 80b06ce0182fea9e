"""/metrics exposes the wattwheel_* names with domain labels; the OpenAPI document is valid."""

from __future__ import annotations

from api_support import VIEWER, Api, auth
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from wattwheel.api.metrics import METRIC_HELP


def test_metrics_expose_every_name(api: Api) -> None:
    api.state.count_error("device", 2)
    r = api.client.get("/metrics", headers=auth(VIEWER))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in METRIC_HELP:
        assert name in families, name
    demand = {s.labels["domain"]: s.value for s in families["wattwheel_demand_kw"].samples}
    assert set(demand) == {"row-a", "row-b"}
    assert demand["row-a"] == api.state.domain("row-a").demand_kw  # type: ignore[union-attr]
    soc = {s.labels["domain"]: s.value for s in families["wattwheel_kes_soc"].samples}
    assert soc == {"row-a": 0.62, "row-b": 0.62}
    lat = families["wattwheel_loop_latency_seconds"].samples
    count = [s.value for s in lat if s.name.endswith("_count")]
    assert count == [5.0]
    inf = [s.value for s in lat if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert inf == [5.0]
    ingested = [
        s.value
        for s in families["wattwheel_telemetry_ingested"].samples
        if s.name.endswith("_total")
    ]
    assert ingested == [40.0]
    errors = {
        s.labels["kind"]: s.value
        for s in families["wattwheel_errors"].samples
        if s.name.endswith("_total")
    }
    assert errors == {"device": 2.0}
    modes = {s.labels["mode"]: s.value for s in families["wattwheel_mode"].samples}
    assert modes["normal"] == 1.0 and modes["maintenance"] == 0.0


def test_openapi_document_is_valid(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json", headers=auth(VIEWER)).json()
    validate(doc)
    paths = set(doc["paths"])
    for p in (
        "/api/v1/status",
        "/api/v1/domains",
        "/api/v1/racks",
        "/api/v1/forecasts",
        "/api/v1/decisions",
        "/api/v1/flywheel",
        "/api/v1/events",
        "/api/v1/stream",
        "/api/v1/overrides/cap",
        "/api/v1/overrides/reserve",
        "/api/v1/overrides/maintenance",
    ):
        assert p in paths, p
