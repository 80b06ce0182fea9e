"""Operator overrides under ``/api/v1/overrides``: pin a cap, force or forbid the reserve,
maintenance mode. Operator token only. Every change is recorded as an event (who, when, why) in
the store's audit trail and pushed to the live stream."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from wattwheel.api.auth import Operator, Principal
from wattwheel.api.context import ApiContext
from wattwheel.runtime.state import EventRecord, Override, OverrideKind, jsonable

#: The longest an override may be set for; omit ``ttl_s`` for one that lasts until cleared.
MAX_TTL_S = 30 * 24 * 3600.0
#: No rack or domain draws a gigawatt: a larger "cap" is a typo, not a limit.
MAX_CAP_KW = 1e6
#: Printable text only: a control character (NUL above all) would break the audit log's store.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class _Body(BaseModel):
    reason: str = Field(
        ...,
        min_length=1,
        max_length=500,
        pattern=PRINTABLE,
        description="why (kept in the audit)",
    )
    ttl_s: float | None = Field(
        None,
        gt=0,
        le=MAX_TTL_S,
        allow_inf_nan=False,
        description="expires after this many seconds (at most 30 days); omitted: until cleared",
    )


class PinCap(_Body):
    scope: Literal["rack", "domain"] = Field(
        ..., description="pin a rack's or a domain's cap: the most it may draw"
    )
    target: str = Field(
        ..., min_length=1, max_length=200, pattern=PRINTABLE, description="rack id or domain id"
    )
    cap_kw: float = Field(
        ...,
        ge=0,
        le=MAX_CAP_KW,
        allow_inf_nan=False,
        description="the most the rack or domain may draw (kW); never below its critical load",
    )


class ReserveOverride(_Body):
    domain_id: str = Field(..., min_length=1, max_length=200, pattern=PRINTABLE)
    action: Literal["force", "forbid"]


class Maintenance(_Body):
    pass


def build_override_router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/overrides", tags=["overrides"])

    def record(kind: str, ov: Override, who: Principal, message: str) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(ov)
        ctx.record_event(
            EventRecord(
                ctx.clock(),
                kind,
                message,
                ov.target if ov.scope == "domain" else None,
                who.name,
                data,
            )
        )
        return data

    def cleared(kind: OverrideKind, target: str, scope: Any, who: Principal) -> dict[str, Any]:
        ov = ctx.overrides.clear(kind, target, scope)
        if ov is None:
            raise HTTPException(404, f"no {kind} override on {target!r}")
        return record("override.clear", ov, who, f"{who.name} cleared {kind} on {ov.target}")

    def check_domain(domain_id: str) -> None:
        if ctx.state.domain_ids and domain_id not in ctx.state.domain_ids:
            raise HTTPException(404, f"unknown domain {domain_id!r}")

    @r.post(
        "/cap",
        status_code=status.HTTP_201_CREATED,
        summary="Pin the most a rack or domain may draw",
        responses={409: {"description": "the pin is below the critical load it carries now"}},
    )
    def pin_cap(body: PinCap, who: Operator) -> dict[str, Any]:
        if body.scope == "domain":
            check_domain(body.target)
        elif ctx.state.racks() and body.target not in {x.rack_id for x in ctx.state.racks()}:
            raise HTTPException(404, f"unknown rack {body.target!r}")
        refusal = ctx.pins.refusal(body.scope, body.target, body.cap_kw) if ctx.pins else None
        if refusal is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, refusal)
        ov = ctx.overrides.pin_cap(
            body.target, body.scope, body.cap_kw, who.name, body.reason, ctx.clock(), body.ttl_s
        )
        return record(
            "override.pin_cap",
            ov,
            who,
            f"{who.name} pinned {body.scope} {body.target} at {body.cap_kw:g} kW: {body.reason}",
        )

    @r.delete("/cap/{scope}/{target}", summary="Remove a pinned cap")
    def unpin_cap(scope: Literal["rack", "domain"], target: str, who: Operator) -> dict[str, Any]:
        return cleared("pin_cap", target, scope, who)

    @r.post(
        "/reserve",
        status_code=status.HTTP_201_CREATED,
        summary="Force the reserve on for a domain, or forbid it",
    )
    def reserve(body: ReserveOverride, who: Operator) -> dict[str, Any]:
        check_domain(body.domain_id)
        ov = ctx.overrides.set_reserve(
            body.domain_id, body.action, who.name, body.reason, ctx.clock(), body.ttl_s
        )
        return record(
            "override.reserve",
            ov,
            who,
            f"{who.name} set reserve {body.action} on {body.domain_id}: {body.reason}",
        )

    @r.delete("/reserve/{domain_id}", summary="Remove a reserve override")
    def clear_reserve(domain_id: str, who: Operator) -> dict[str, Any]:
        return cleared("reserve", domain_id, "domain", who)

    @r.post(
        "/maintenance",
        status_code=status.HTTP_201_CREATED,
        summary="Enter maintenance mode (safety actions only, settings held)",
    )
    def maintenance(body: Maintenance, who: Operator) -> dict[str, Any]:
        ov = ctx.overrides.set_maintenance(who.name, body.reason, ctx.clock(), body.ttl_s)
        ctx.state.set_mode("maintenance")
        return record(
            "override.maintenance", ov, who, f"{who.name} entered maintenance mode: {body.reason}"
        )

    @r.delete("/maintenance", summary="Leave maintenance mode")
    def end_maintenance(who: Operator) -> dict[str, Any]:
        data = cleared("maintenance", "site", "site", who)
        ctx.state.set_mode("normal")  # the runtime sets its real mode on its next tick
        return data

    return r
