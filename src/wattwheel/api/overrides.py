"""Operator overrides under ``/api/v1/overrides``: pin a cap, force or forbid the reserve,
maintenance mode. Operator token only. The routes validate the body; the desk (:mod:`.desk`)
applies the command and records it as an event (who, when, why) in the store's audit trail and
the live stream."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from wattwheel.api.auth import Operator
from wattwheel.api.desk import CommandRefused, Desk

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


def build_override_router(desk: Desk) -> APIRouter:
    """The routes parse and validate; ``desk`` applies (here or in the control process)."""
    r = APIRouter(prefix="/overrides", tags=["overrides"])

    def run(command: str, **args: Any) -> dict[str, Any]:
        try:
            return desk.run(command, args)
        except CommandRefused as exc:
            raise HTTPException(exc.status, exc.detail) from exc

    @r.post(
        "/cap",
        status_code=status.HTTP_201_CREATED,
        summary="Pin the most a rack or domain may draw",
        responses={409: {"description": "the pin is below the critical load it carries now"}},
    )
    def pin_cap(body: PinCap, who: Operator) -> dict[str, Any]:
        return run(
            "pin_cap",
            scope=body.scope,
            target=body.target,
            cap_kw=body.cap_kw,
            actor=who.name,
            reason=body.reason,
            ttl_s=body.ttl_s,
        )

    @r.delete("/cap/{scope}/{target}", summary="Remove a pinned cap")
    def unpin_cap(scope: Literal["rack", "domain"], target: str, who: Operator) -> dict[str, Any]:
        return run("clear", kind="pin_cap", target=target, scope=scope, actor=who.name)

    @r.post(
        "/reserve",
        status_code=status.HTTP_201_CREATED,
        summary="Force the reserve on for a domain, or forbid it",
    )
    def reserve(body: ReserveOverride, who: Operator) -> dict[str, Any]:
        return run(
            "set_reserve",
            domain_id=body.domain_id,
            action=body.action,
            actor=who.name,
            reason=body.reason,
            ttl_s=body.ttl_s,
        )

    @r.delete("/reserve/{domain_id}", summary="Remove a reserve override")
    def clear_reserve(domain_id: str, who: Operator) -> dict[str, Any]:
        return run("clear", kind="reserve", target=domain_id, scope="domain", actor=who.name)

    @r.post(
        "/maintenance",
        status_code=status.HTTP_201_CREATED,
        summary="Enter maintenance mode (safety actions only, settings held)",
    )
    def maintenance(body: Maintenance, who: Operator) -> dict[str, Any]:
        return run("set_maintenance", actor=who.name, reason=body.reason, ttl_s=body.ttl_s)

    @r.delete("/maintenance", summary="Leave maintenance mode")
    def end_maintenance(who: Operator) -> dict[str, Any]:
        return run("clear", kind="maintenance", target="site", scope="site", actor=who.name)

    return r
