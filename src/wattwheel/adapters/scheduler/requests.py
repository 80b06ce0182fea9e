"""Shift, defer and ramp-limit requests to a workload scheduler, and their JSON wire format.
Pure.

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
    effect at ``start_at_s`` (epoch s, after the shift lead time) and last ``duration_s`` (the
    plan period in force). Its ``request_id`` names the (domain, to_domain) pair: a request
    **replaces** the previous one with the same id from its ``start_at_s`` on (shifts never add
    up); ``revision`` orders them (default: ``issued_at_s`` in ms) and ``power_w`` 0 ends the
    pair's shift.
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
    revision: int | None = None


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


@dataclass(frozen=True, slots=True)
class RampLimitRequest:
    """Ramp up job (re)starts in ``domain`` at no more than ``ramp_w_per_s`` watts per second
    (the workload-side lever "ramp-up limit at job start" of NVIDIA's GB300 power smoothing:
    the job launcher raises the starting job's GPU power limits gradually from idle).

    In force from ``start_at_s`` for ``duration_s`` (the plan period; the controller renews it,
    so a silent controller leaves no limit behind for longer than a period). Its ``request_id``
    is ``ramp_limit:<domain>``: a new request **replaces** the domain's previous one;
    ``revision`` orders them (default: ``issued_at_s`` in ms).
    """

    site: str
    domain: str
    ramp_w_per_s: float
    start_at_s: float
    duration_s: float
    issued_at_s: float
    reason: str = ""
    request_id: str | None = None
    revision: int | None = None


SchedulerRequest = ShiftRequest | DeferRequest | RampLimitRequest


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


def pair_request_id(domain: str, to_domain: str | None) -> str:
    """The request id of every shift of one (source, target) pair: ``shift:<from>-><to|*>``."""
    return f"shift:{domain}->{'*' if to_domain is None else to_domain}"


def revision_of(request: ShiftRequest | RampLimitRequest) -> int:
    """A shift or ramp-limit request's revision: its own, or its issue time in ms."""
    if request.revision is not None:
        return request.revision
    return int(round(request.issued_at_s * 1000.0))


def validate(request: SchedulerRequest) -> None:
    """Raise :class:`SchedulerRequestError` naming the first invalid field."""
    if isinstance(request, RampLimitRequest):
        _validate_ramp(request)
        return
    # A shift of 0 W ends its pair's shift; a deferral of nothing is no request.
    least_w = 0.0 if isinstance(request, ShiftRequest) else math.nextafter(0.0, 1.0)
    checks: list[tuple[str, bool]] = [
        ("site", bool(request.site)),
        ("domain", bool(request.domain)),
        ("power_w", math.isfinite(request.power_w) and request.power_w >= least_w),
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


def _validate_ramp(request: RampLimitRequest) -> None:
    checks: list[tuple[str, bool]] = [
        ("site", bool(request.site)),
        ("domain", bool(request.domain)),
        ("ramp_w_per_s", math.isfinite(request.ramp_w_per_s) and request.ramp_w_per_s > 0),
        ("duration_s", math.isfinite(request.duration_s) and request.duration_s > 0),
        ("start_at_s", math.isfinite(request.start_at_s)),
        ("issued_at_s", math.isfinite(request.issued_at_s)),
    ]
    for field, ok in checks:
        if not ok:
            raise SchedulerRequestError(
                f"RampLimitRequest.{field} = {getattr(request, field)!r} is invalid"
            )


def _fields(request: SchedulerRequest) -> dict[str, Any]:
    if isinstance(request, RampLimitRequest):
        return {
            "schema": SCHEMA,
            "kind": "ramp_limit",
            "site": request.site,
            "domain": request.domain,
            "ramp_w_per_s": float(request.ramp_w_per_s),
            "start_at": _iso(request.start_at_s),
            "duration_s": float(request.duration_s),
            "issued_at": _iso(request.issued_at_s),
            "reason": request.reason,
            "revision": revision_of(request),
        }
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
        body["revision"] = revision_of(request)
    else:
        body["deadline"] = _iso(request.deadline_s)
    return body


def request_id(request: SchedulerRequest) -> str:
    """The id in the body: a shift's (source, target) pair id, a deferral's own id or a
    digest of its content (a deferral is a debt of its own: deferrals add up)."""
    if request.request_id:
        return request.request_id
    if isinstance(request, RampLimitRequest):
        return f"ramp_limit:{request.domain}"
    if isinstance(request, ShiftRequest):
        return pair_request_id(request.domain, request.to_domain)
    canonical = json.dumps(_fields(request), sort_keys=True, separators=(",", ":"))
    return "ww-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def idempotency_key(request: SchedulerRequest) -> str:
    """What the scheduler may drop duplicates by: resending the same request (a retry, QoS 1
    redelivery, a restarted controller) reuses it. A shift's is ``<request_id>@<revision>``
    (its id is shared by every request of its pair); a deferral's is its ``request_id``."""
    if isinstance(request, ShiftRequest | RampLimitRequest):
        return f"{request_id(request)}@{revision_of(request)}"
    return request_id(request)


def encode_request(request: SchedulerRequest) -> bytes:
    """The JSON body (UTF-8) of a request; validates it first."""
    validate(request)
    body = {"request_id": request_id(request), **_fields(request)}
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
    kind: Literal["shift", "defer", "ramp_limit"] = _get(body, "kind", str)
    if kind == "ramp_limit":
        return _decode_ramp(body)
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
        revision = body.get("revision")
        if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool)):
            raise SchedulerRequestError(f"revision: expected an integer, got {revision!r}")
        request = ShiftRequest(**common, to_domain=to_domain, revision=revision)
    elif kind == "defer":
        request = DeferRequest(**common, deadline_s=_epoch(body.get("deadline"), "deadline"))
    else:
        raise SchedulerRequestError(
            f"kind: expected 'shift', 'defer' or 'ramp_limit', got {kind!r}"
        )
    validate(request)
    return request


def _decode_ramp(body: dict[str, Any]) -> RampLimitRequest:
    revision = body.get("revision")
    if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool)):
        raise SchedulerRequestError(f"revision: expected an integer, got {revision!r}")
    request = RampLimitRequest(
        site=_get(body, "site", str),
        domain=_get(body, "domain", str),
        ramp_w_per_s=float(_get(body, "ramp_w_per_s", (int, float))),
        start_at_s=_epoch(body.get("start_at"), "start_at"),
        duration_s=float(_get(body, "duration_s", (int, float))),
        issued_at_s=_epoch(body.get("issued_at"), "issued_at"),
        reason=str(body.get("reason", "")),
        request_id=_get(body, "request_id", str),
        revision=revision,
    )
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
