"""Turn a controller decision's per-domain shift/defer levels into scheduler requests. Pure.

The policies decide in kW per power domain (``Decision.shift_out_kw``, ``shift_in_kw``,
``defer_kw``); the scheduler wants named requests. A shift out of a domain is split over the
domains taking load in, in proportion to what each takes (``to_domain`` None when no domain is
named as taking it: the scheduler then chooses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from wattwheel.adapters.scheduler.requests import DeferRequest, SchedulerRequest, ShiftRequest

_W_PER_KW = 1000.0


def _check_lengths(domains: Sequence[str], **arrays: Sequence[float]) -> None:
    for name, values in arrays.items():
        if len(values) != len(domains):
            raise ValueError(f"{name} has {len(values)} entries for {len(domains)} domains")


def shift_requests(
    site: str,
    domains: Sequence[str],
    shift_out_kw: Sequence[float],
    shift_in_kw: Sequence[float],
    *,
    now_s: float,
    lead_s: float,
    duration_s: float,
    min_power_w: float = 1.0,
    reason: str = "",
) -> list[ShiftRequest]:
    """One request per (source, destination) pair, effective after ``lead_s``."""
    _check_lengths(domains, shift_out_kw=shift_out_kw, shift_in_kw=shift_in_kw)
    taking = [(d, kw) for d, kw in zip(domains, shift_in_kw, strict=True) if kw > 0]
    total_in_kw = sum(kw for _, kw in taking)
    requests: list[ShiftRequest] = []
    for source, out_kw in zip(domains, shift_out_kw, strict=True):
        if not math.isfinite(out_kw) or out_kw * _W_PER_KW < min_power_w:
            continue
        targets: list[tuple[str | None, float]] = [
            (d, kw / total_in_kw) for d, kw in taking if d != source
        ]
        targets = targets or [(None, 1.0)]
        share_sum = sum(share for _, share in targets)
        for target, share in targets:
            power_w = out_kw * _W_PER_KW * share / share_sum
            if power_w >= min_power_w:
                requests.append(
                    ShiftRequest(
                        site,
                        source,
                        power_w,
                        now_s + lead_s,
                        duration_s,
                        now_s,
                        to_domain=target,
                        reason=reason,
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


def plan_requests(
    site: str,
    domains: Sequence[str],
    *,
    shift_out_kw: Sequence[float],
    shift_in_kw: Sequence[float],
    defer_kw: Sequence[float],
    defer_deadline_s: Sequence[float],
    now_s: float,
    shift_lead_s: float,
    period_s: float,
    reason: str = "",
) -> list[SchedulerRequest]:
    """All shift and defer requests of one plan period."""
    shifts: list[SchedulerRequest] = list(
        shift_requests(
            site,
            domains,
            shift_out_kw,
            shift_in_kw,
            now_s=now_s,
            lead_s=shift_lead_s,
            duration_s=period_s,
            reason=reason,
        )
    )
    defers = defer_requests(
        site, domains, defer_kw, defer_deadline_s, now_s=now_s, duration_s=period_s, reason=reason
    )
    return shifts + list(defers)
