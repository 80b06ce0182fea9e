"""Turn a Decision into device commands (pure): per-server caps by priority-aware
water-filling, the writes that actually changed, and which non-critical outlets to shed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.allocation import Servers, allocate
from wattwheel.runtime.inventory import Inventory

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: A domain cap below this (kW) is numerical noise, not worth limiting servers for.
MIN_CAP_KW = 0.05
#: A cap that moves by less than this fraction of the server's range is not rewritten.
CAP_DEADBAND = 0.02


@dataclass(frozen=True)
class CapPlan:
    """Caps per server (W, NaN: uncapped) and the rack budgets they add up to (W)."""

    cap_w: FloatArray
    rack_budget_w: dict[str, float]
    unmet_critical_w: float


def plan_caps(
    inv: Inventory,
    server_demand_w: FloatArray,
    cap_kw: FloatArray,
    rack_pins_kw: Mapping[str, float] | None = None,
    guessed: BoolArray | None = None,
) -> CapPlan:
    """Per domain with ``cap_kw > 0``: budget = its servers' demand - cap, water-filled
    (critical first, then by priority, never below a server's minimum cap). A rack pinned by an
    operator draws at most its pin, shared the same way, except that its critical servers are
    never capped: if they alone exceed the pin, the non-critical ones get their minimum caps and
    the pin is not met (the API refuses such pins up front). Other servers stay uncapped.

    ``guessed`` marks servers whose demand was never read below a cap (a guess). Such a server
    is served before the non-critical classes, and left uncapped when fully served, so that its
    next reading shows its demand: a server held at a cap computed from a guess would read at
    that cap for good, and the guess would stand for its demand. The price is one tick in which
    the guess, not the demand, is budgeted (the next tick caps on the reading, by priority)."""
    caps = np.full(len(inv.servers), np.nan)
    racks: dict[str, float] = {}
    unmet = 0.0
    unknown = np.zeros(len(inv.servers), dtype=bool) if guessed is None else guessed
    for d in np.flatnonzero(cap_kw > MIN_CAP_KW):
        members, ids, racks_of = inv.domain_servers(int(d))
        budget = max(float(server_demand_w[members].sum()) - float(cap_kw[d]) * 1000.0, 0.0)
        alloc = allocate(_servers(inv, members, server_demand_w, unknown, ids, racks_of), budget)
        served = alloc.unmet_demand_w <= 1e-6
        # Critical servers are served first and never limited: leave them uncapped.
        free = inv.critical[members] | (unknown[members] & served)
        caps[members] = np.where(free, np.nan, alloc.cap_w)
        racks.update(alloc.rack_budget_w)
        unmet += alloc.unmet_critical_w
    for rack, pin_kw in (rack_pins_kw or {}).items():
        r = inv.rack_index.get(rack)
        if r is None:
            continue
        members = np.flatnonzero(inv.server_rack == r)
        current = np.where(np.isnan(caps[members]), inv.max_cap_w[members], caps[members])
        budget = min(pin_kw * 1000.0, float(current.sum()))
        demand_w = server_demand_w.copy()  # whole-site, as _servers indexes it by members
        demand_w[members] = np.minimum(demand_w[members], current)
        alloc = allocate(_servers(inv, members, demand_w), budget)
        pinned = np.minimum(current, alloc.cap_w)
        caps[members] = np.where(inv.critical[members], caps[members], pinned)
        # What the rack may draw now: its non-critical caps plus its critical servers' demand.
        racks[rack] = float(np.where(inv.critical[members], demand_w[members], pinned).sum())
        unmet += alloc.unmet_critical_w
    return CapPlan(caps, racks, unmet)


def _servers(
    inv: Inventory,
    members: NDArray[np.int64],
    demand_w: FloatArray,
    guessed: BoolArray | None = None,
    server_ids: tuple[str, ...] | None = None,
    rack_ids: tuple[str, ...] | None = None,
) -> Servers:
    priority = inv.priority[members]
    if guessed is not None and priority.size:
        # Above every class, in their own order among themselves.
        lift = int(priority.max()) - int(priority.min()) + 1
        priority = priority + lift * guessed[members].astype(priority.dtype)
    return Servers(
        server_ids=(
            server_ids
            if server_ids is not None
            else tuple(inv.servers[i].server_id for i in members)
        ),
        rack_ids=rack_ids
        if rack_ids is not None
        else tuple(inv.servers[i].rack_id for i in members),
        demand_w=np.maximum(np.nan_to_num(demand_w[members]), 0.0),
        min_cap_w=inv.min_cap_w[members],
        max_cap_w=inv.max_cap_w[members],
        priority=priority,
        critical=inv.critical[members],
    )


def cap_changes(
    inv: Inventory, applied_w: FloatArray, wanted_w: FloatArray
) -> dict[str, float | None]:
    """The writes needed to go from ``applied_w`` to ``wanted_w`` (NaN = uncapped; None lifts)."""
    was_free, now_free = np.isnan(applied_w), np.isnan(wanted_w)
    span = inv.max_cap_w - inv.min_cap_w
    # NaN on either side compares False: a cap set or lifted is the first term's.
    with np.errstate(invalid="ignore"):
        moved = np.abs(applied_w - wanted_w) > CAP_DEADBAND * span
    changed = np.flatnonzero((was_free != now_free) | moved)
    caps: NDArray[np.object_] = wanted_w[changed].astype(object)
    caps[now_free[changed]] = None  # None lifts the cap
    return dict(zip(map(inv.server_ids.__getitem__, changed.tolist()), caps.tolist(), strict=True))


def outlets_to_shed(
    inv: Inventory, shortfall_kw: FloatArray, server_power_w: FloatArray, already_off: set[str]
) -> list[str]:
    """Non-critical outlets to switch off so each domain sheds ``shortfall_kw``: lowest
    priority first, then the largest load. Critical servers' outlets are never chosen."""
    chosen: list[str] = []
    for d in np.flatnonzero(shortfall_kw > 1e-6):
        need_w = float(shortfall_kw[d]) * 1000.0
        cand = [
            i
            for i in np.flatnonzero(inv.server_domain == d)
            if not inv.critical[i]
            and inv.servers[i].outlet is not None
            and inv.servers[i].outlet not in already_off
        ]
        cand.sort(key=lambda i: (inv.priority[i], -server_power_w[i]))
        for i in cand:
            if need_w <= 0:
                break
            chosen.append(str(inv.servers[i].outlet))
            need_w -= float(server_power_w[i])
    return chosen
