"""Shift and defer requests to a workload scheduler, and their JSON wire format. Pure.

The body is documented in ``docs/scheduler-hook.md`` (schema ``wattwheel.scheduler/v1``). Both
transports (webhook, MQTT topic) carry the same JSON document, so a scheduler integration is
written once.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

SCHEMA = "wattwheel.scheduler/v1"


class SchedulerRequestError(ValueError):
    """A request (or a body claiming to be one) is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class ShiftRequest:
    """Move non-critical work of ``power_w`` watts out of ``domain``.

    ``to_domain`` is a domain with headroom (None: the scheduler picks one); the shift should take
    effect at ``start_at_s`` (epoch s, after the shift lead time) and last ``duration_s``.
    """

    site: str
    domain: str
    power_w: float
    start_at_s: float
    duration_s: float
    issued_at_s: float
    to_domain: str | None = None
    reason: str = ""
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeferRequest:
    """Postpone non-critical work of ``power_w`` watts in ``domain`` from ``start_at_s`` for
    ``duration_s``; the postponed work is a debt that must run before ``deadline_s`` (epoch s).
    """

    site: str
    domain: str
    power_w: float
    start_at_s: float
    duration_s: float
    deadline_s: float
    issued_at_s: float
    reason: str = ""
    request_id: str | None = None


SchedulerRequest = ShiftRequest | DeferRequest


@dataclass(frozen=True, slots=True)
class Ack:
    """What became of a request.

    ``delivered``: the transport got it to the scheduler (webhook 2xx / broker PUBACK).
    ``accepted``: the scheduler's answer when the transport carries one (webhook JSON), True for
    a bare 2xx, False for a refusal (4xx), None when unknown (MQTT, or not delivered).
    """

    request_id: str
    delivered: bool
    accepted: bool | None
    detail: str = ""


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def _epoch(text: object, field: str) -> float:
    if not isinstance(text, str):
        raise SchedulerRequestError(f"{field}: expected an ISO 8601 time, got {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SchedulerRequestError(f"{field}: {text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise SchedulerRequestError(f"{field}: {text!r} has no time zone")
    return moment.timestamp()


def validate(request: SchedulerRequest) -> None:
    """Raise :class:`SchedulerRequestError` naming the first invalid field."""
    checks: list[tuple[str, bool]] = [
        ("site", bool(request.site)),
        ("domain", bool(request.domain)),
        ("power_w", math.isfinite(request.power_w) and request.power_w > 0),
        ("duration_s", math.isfinite(request.duration_s) and request.duration_s > 0),
        ("start_at_s", math.isfinite(request.start_at_s)),
        ("issued_at_s", math.isfinite(request.issued_at_s)),
    ]
    if isinstance(request, DeferRequest):
        end_s = request.start_at_s + request.duration_s
        checks.append(
            ("deadline_s", math.isfinite(request.deadline_s) and request.deadline_s >= end_s)
        )
    for field, ok in checks:
        if not ok:
            raise SchedulerRequestError(
                f"{type(request).__name__}.{field} = {getattr(request, field)!r} is invalid"
            )


def _fields(request: SchedulerRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "shift" if isinstance(request, ShiftRequest) else "defer",
        "site": request.site,
        "domain": request.domain,
        "power_w": float(request.power_w),
        "start_at": _iso(request.start_at_s),
        "duration_s": float(request.duration_s),
        "issued_at": _iso(request.issued_at_s),
        "reason": request.reason,
    }
    if isinstance(request, ShiftRequest):
        body["to_domain"] = request.to_domain
    else:
        body["deadline"] = _iso(request.deadline_s)
    return body


def idempotency_key(request: SchedulerRequest) -> str:
    """The request's id, or a digest of its content: resending the same request (a retry, a
    restarted controller) reuses the same key, so the scheduler can drop duplicates."""
    if request.request_id:
        return request.request_id
    canonical = json.dumps(_fields(request), sort_keys=True, separators=(",", ":"))
    return "ww-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def encode_request(request: SchedulerRequest) -> bytes:
    """The JSON body (UTF-8) of a request; validates it first."""
    validate(request)
    body = {"request_id": idempotency_key(request), **_fields(request)}
    return json.dumps(body, separators=(",", ":")).encode()


def _get(body: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(field)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SchedulerRequestError(f"{field}: expected {kind}, got {value!r}")
    return value


def decode_request(payload: bytes) -> SchedulerRequest:
    """Parse a request body (what a scheduler receives); errors name the field."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchedulerRequestError(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        raise SchedulerRequestError(f"schema: expected {SCHEMA!r}")
    kind: Literal["shift", "defer"] = _get(body, "kind", str)
    common = {
        "site": _get(body, "site", str),
        "domain": _get(body, "domain", str),
        "power_w": float(_get(body, "power_w", (int, float))),
        "start_at_s": _epoch(body.get("start_at"), "start_at"),
        "duration_s": float(_get(body, "duration_s", (int, float))),
        "issued_at_s": _epoch(body.get("issued_at"), "issued_at"),
        "reason": str(body.get("reason", "")),
        "request_id": _get(body, "request_id", str),
    }
    request: SchedulerRequest
    if kind == "shift":
        to_domain = body.get("to_domain")
        if to_domain is not None and not isinstance(to_domain, str):
            raise SchedulerRequestError(f"to_domain: expected a string or null, got {to_domain!r}")
        request = ShiftRequest(**common, to_domain=to_domain)
    elif kind == "defer":
        request = DeferRequest(**common, deadline_s=_epoch(body.get("deadline"), "deadline"))
    else:
        raise SchedulerRequestError(f"kind: expected 'shift' or 'defer', got {kind!r}")
    validate(request)
    return request


def decode_webhook_reply(request_id: str, status: int, payload: bytes) -> Ack:
    """The Ack for a webhook HTTP reply that is final (2xx, or a 4xx refusal).

    A 2xx JSON body may say ``{"accepted": false, "detail": "..."}``; a 2xx without one means
    accepted. 409 Conflict means the idempotency key was seen already: delivered before.
    """
    detail = ""
    accepted: bool | None = 200 <= status < 300 or status == 409
    try:
        body = json.loads(payload) if payload else {}
    except (ValueError, UnicodeDecodeError):
        body = {}
    if isinstance(body, dict):
        if isinstance(body.get("accepted"), bool) and 200 <= status < 300:
            accepted = body["accepted"]
        detail = str(body.get("detail", ""))
    if not detail and status >= 300:
        detail = f"HTTP {status}"
    return Ack(
        request_id, delivered=200 <= status < 300 or status == 409, accepted=accepted, detail=detail
    )
