"""Turn the controller's shift orders and deferral levels into scheduler requests. Pure.

Shifts: the world model (:mod:`wattwheel.domain.shifts`) turns per-domain levels into one order
per (source, destination) pair, each replacing the pair's previous one; here each order becomes
a :class:`ShiftRequest` whose ``request_id`` names its pair and whose ``revision`` is the order's.
Deferrals: one request per domain deferring work now (``Decision.defer_kw``).
Ramp-up limits at job start: one :class:`RampLimitRequest` per domain with a limit, renewed each
plan period (``ramp_limit_requests``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from wattwheel.adapters.scheduler.requests import (
    DeferRequest,
    RampLimitRequest,
    SchedulerRequest,
    ShiftRequest,
    pair_request_id,
)
from wattwheel.domain.shifts import ShiftOrder

_W_PER_KW = 1000.0


def _check_lengths(domains: Sequence[str], **arrays: Sequence[float]) -> None:
    for name, values in arrays.items():
        if len(values) != len(domains):
            raise ValueError(f"{name} has {len(values)} entries for {len(domains)} domains")


def shift_requests(
    site: str,
    domains: Sequence[str],
    orders: Sequence[ShiftOrder],
    *,
    now_s: float,
    reason: str = "",
) -> list[ShiftRequest]:
    """One request per order (domains by index in ``domains``); 0 W ends a pair's shift."""
    requests = []
    for order in orders:
        source = domains[order.source]
        target = None if order.target is None else domains[order.target]
        requests.append(
            ShiftRequest(
                site,
                source,
                max(order.kw, 0.0) * _W_PER_KW,
                order.start_s,
                order.end_s - order.start_s,
                now_s,
                to_domain=target,
                reason=reason,
                request_id=pair_request_id(source, target),
                revision=order.revision,
            )
        )
    return requests


def defer_requests(
    site: str,
    domains: Sequence[str],
    defer_kw: Sequence[float],
    deadline_s: Sequence[float],
    *,
    now_s: float,
    duration_s: float,
    min_power_w: float = 1.0,
    reason: str = "",
) -> list[DeferRequest]:
    """One request per domain deferring work now; due within that domain's ``deadline_s``."""
    _check_lengths(domains, defer_kw=defer_kw, deadline_s=deadline_s)
    return [
        DeferRequest(
            site,
            domain,
            kw * _W_PER_KW,
            now_s,
            duration_s,
            now_s + max(due_s, duration_s),
            now_s,
            reason=reason,
        )
        for domain, kw, due_s in zip(domains, defer_kw, deadline_s, strict=True)
        if math.isfinite(kw) and kw * _W_PER_KW >= min_power_w
    ]


def ramp_limit_requests(
    site: str,
    domains: Sequence[str],
    ramp_kw_per_s: Sequence[float | None],
    *,
    now_s: float,
    duration_s: float,
    reason: str = "",
) -> list[RampLimitRequest]:
    """One request per domain with a limit (None or non-finite: no lever there), in force for
    ``duration_s`` from now; each replaces the domain's previous one."""
    _check_lengths(domains, ramp_kw_per_s=[0.0 if r is None else r for r in ramp_kw_per_s])
    return [
        RampLimitRequest(site, domain, rate * _W_PER_KW, now_s, duration_s, now_s, reason=reason)
        for domain, rate in zip(domains, ramp_kw_per_s, strict=True)
        if rate is not None and math.isfinite(rate) and rate > 0
    ]


def plan_requests(
    site: str,
    domains: Sequence[str],
    *,
    shifts: Sequence[ShiftOrder],
    defer_kw: Sequence[float],
    defer_deadline_s: Sequence[float],
    now_s: float,
    period_s: float,
    reason: str = "",
) -> list[SchedulerRequest]:
    """All shift and defer requests of one send (deferrals last one plan period)."""
    out: list[SchedulerRequest] = list(
        shift_requests(site, domains, shifts, now_s=now_s, reason=reason)
    )
    defers = defer_requests(
        site, domains, defer_kw, defer_deadline_s, now_s=now_s, duration_s=period_s, reason=reason
    )
    return out + list(defers)
