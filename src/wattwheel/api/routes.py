"""Read routes under ``/api/v1``: status, domains, racks, forecasts, decisions, flywheel, events.

Live values come from :class:`LiveState`; the decision audit log and events come from the store
(paged with ``before_id``) and fall back to the in-memory ring when the database is down, saying
so in ``source``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from wattwheel.adapters.store.base import StoreUnavailable
from wattwheel.adapters.store.models import model_history_for
from wattwheel.api.auth import require_viewer
from wattwheel.api.context import ApiContext
from wattwheel.runtime.state import jsonable

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
#: Row ids are 64-bit signed integers in every store: a larger ``before_id`` is a 422, not a 500.
MAX_ROW_ID = 2**63 - 1
BeforeId = Annotated[
    int | None, Query(ge=1, le=MAX_ROW_ID, description="return rows with id < before_id")
]


def _page(rows: Sequence[tuple[int, Any]], limit: int, key: str) -> dict[str, Any]:
    items = [{"id": i, **jsonable(r)} for i, r in rows]
    next_before = rows[-1][0] if len(rows) == limit else None
    return {key: items, "next_before_id": next_before, "source": "store"}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def status_route(ctx: ApiContext) -> Callable[..., dict[str, Any]]:
    def status() -> dict[str, Any]:
        """Controller mode, freshness, loop latency, counters and store health."""
        now = ctx.clock()
        lat = ctx.state.latency()
        last = ctx.state.last_tick_s
        return {
            "site": ctx.site_name,
            "mode": ctx.state.mode,
            "degraded": ctx.state.degraded(),
            "policy": ctx.state.policy,
            "now_s": now,
            "last_tick_s": _finite(last),
            "tick_age_s": _finite(now - last),
            "loop_latency_ms": {
                "count": lat.count,
                "last": _finite(lat.last_s * 1e3),
                "p50": _finite(lat.p50_s * 1e3),
                "p99": _finite(lat.p99_s * 1e3),
                "max": _finite(lat.max_s * 1e3),
            },
            "domains": len(ctx.state.domain_ids),
            "racks": len(ctx.state.racks()),
            "telemetry_ingested": ctx.state.telemetry_ingested,
            "errors": ctx.state.error_counts(),
            "tick_failures": ctx.state.tick_failures,
            "overrides_active": len(ctx.overrides.active(now)),
            "maintenance": ctx.overrides.maintenance(now),
            "leadership": ctx.state.leadership() if ctx.state.leadership else None,
            "reserve_budget": ctx.state.reserve_budget() if ctx.state.reserve_budget else None,
            "tasks": ctx.state.tasks() if ctx.state.tasks else [],
            "store": ctx.store_health(),
            "stream_subscribers": ctx.state.n_subscribers,
        }

    return status


def ticks_route(ctx: ApiContext) -> Callable[..., dict[str, Any]]:
    def ticks(
        after: Annotated[int, Query(ge=0, le=2**62, description="ticks already seen")] = 0,
    ) -> dict[str, Any]:
        """Fast-loop tick durations after the first ``after`` ticks (the last 1,000 at most)."""
        count, durations = ctx.state.tick_latencies_after(after)
        return {"count": count, "latency_ms": [round(d * 1e3, 3) for d in durations]}

    return ticks


def build_read_router(ctx: ApiContext) -> APIRouter:
    # Every read needs a viewer token (or anonymous reads enabled); none uses the principal.
    r = APIRouter(tags=["read"], dependencies=[Depends(require_viewer)])
    r.add_api_route("/status", status_route(ctx), methods=["GET"], summary="Controller status")
    r.add_api_route(
        "/loop/ticks", ticks_route(ctx), methods=["GET"], summary="Recent tick durations"
    )

    @r.get("/domains", summary="Latest snapshot of every power domain")
    def domains() -> dict[str, Any]:
        return {"domains": [jsonable(s) for s in ctx.state.domains()]}

    @r.get("/domains/{domain_id}", summary="One domain with its recent history")
    def domain(
        domain_id: str, history: Annotated[int, Query(ge=0, le=10_000)] = 300
    ) -> dict[str, Any]:
        snap = ctx.state.domain(domain_id)
        if snap is None:
            raise HTTPException(404, f"unknown domain {domain_id!r}")
        rows = ctx.state.history(domain_id, history) if history else []
        return {"domain": jsonable(snap), "history": [jsonable(s) for s in rows]}

    @r.get("/racks", summary="Every rack: power, applied cap and pinned cap")
    def racks(domain_id: str | None = None) -> dict[str, Any]:
        pins = ctx.overrides.rack_caps_kw(ctx.clock())
        return {
            "racks": [
                {**jsonable(x), "pinned_cap_kw": pins.get(x.rack_id)}
                for x in ctx.state.racks(domain_id)
            ]
        }

    @r.get("/models", summary="Forecasting model history (continuous learning)")
    def models(limit: Limit = 100) -> dict[str, Any]:
        """Every model version, newest first, with its status and rolling-backtest metrics,
        and the learner's state (None when ``serve`` runs without ``--learn``)."""
        learner = ctx.state.learning() if ctx.state.learning else None
        history = model_history_for(ctx.store)
        if history is None:
            return {"models": [], "learner": learner, "source": "none"}
        try:
            rows = history.models(limit)
        except StoreUnavailable as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc
        return {"models": [jsonable(r) for r in rows], "learner": learner, "source": "store"}

    @r.get("/forecasts", summary="Latest forecast band per domain (or stored history)")
    def forecasts(
        series_id: str | None = None, history: bool = False, limit: Limit = 100
    ) -> dict[str, Any]:
        if history:
            try:
                rows = ctx.store.forecasts(series_id=series_id, limit=limit)
            except StoreUnavailable as exc:
                raise HTTPException(503, f"store unavailable: {exc}") from exc
            return {"forecasts": [{"id": i, **jsonable(f)} for i, f in rows]}
        return {
            "forecasts": [
                {
                    "domain_id": s.domain_id,
                    "timestamp_s": s.timestamp_s,
                    "bands": [jsonable(b) for b in s.forecast],
                }
                for s in ctx.state.domains()
                if series_id is None or s.domain_id == series_id
            ]
        }

    @r.get("/decisions", summary="The decision audit log, newest first")
    def decisions(
        domain_id: str | None = None, before_id: BeforeId = None, limit: Limit = 100
    ) -> dict[str, Any]:
        try:
            rows = ctx.store.decisions(domain_id=domain_id, before_id=before_id, limit=limit)
            return _page(rows, limit, "decisions")
        except StoreUnavailable:
            recent = [
                d
                for d in ctx.state.recent_decisions(1000)
                if domain_id is None or d.domain_id == domain_id
            ][:limit]
            return {
                "decisions": [jsonable(d) for d in recent],
                "next_before_id": None,
                "source": "memory",
            }

    @r.get("/telemetry", summary="Stored power samples, newest first")
    def telemetry(
        rack_id: str | None = None,
        since_s: Annotated[
            float | None, Query(allow_inf_nan=False, description="epoch seconds")
        ] = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        try:
            rows = ctx.store.telemetry(rack_id=rack_id, since_s=since_s, limit=limit)
        except StoreUnavailable as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc
        return {"samples": [{"id": i, **jsonable(s)} for i, s in rows]}

    @r.get("/flywheel", summary="Flywheel (KES) bank per domain")
    def flywheel() -> dict[str, Any]:
        return {
            "banks": [
                {
                    "domain_id": s.domain_id,
                    "soc": _finite(s.kes_soc),
                    "kes_kw": _finite(s.kes_kw),
                    "soc_target": _finite(s.soc_target),
                    "max_discharge_kw": _finite(s.kes_max_discharge_kw),
                    "timestamp_s": s.timestamp_s,
                }
                for s in ctx.state.domains()
            ]
        }

    @r.get("/events", summary="Events (overrides, mode changes, faults), newest first")
    def events(
        kind: Annotated[str | None, Query(description="kind prefix, e.g. 'override'")] = None,
        before_id: BeforeId = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        try:
            return _page(
                ctx.store.events(kind=kind, before_id=before_id, limit=limit), limit, "events"
            )
        except StoreUnavailable:
            recent = [
                e for e in ctx.state.recent_events(1000) if kind is None or e.kind.startswith(kind)
            ][:limit]
            return {
                "events": [jsonable(e) for e in recent],
                "next_before_id": None,
                "source": "memory",
            }

    @r.get("/overrides", summary="Operator overrides in force")
    def overrides() -> dict[str, Any]:
        return {"overrides": [jsonable(o) for o in ctx.overrides.active(ctx.clock())]}

    return r
