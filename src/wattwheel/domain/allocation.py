"""Priority-aware per-server power allocation: a domain budget → rack budgets → server caps.

This is what the iPDUs / BMCs apply (DESIGN §2). Every server's cap lies in
[min_cap_w, max_cap_w] (a BMC cannot limit below its minimum, nor usefully above its maximum).
The budget is shared by water-filling, in this order:

1. every server gets its minimum cap (a physical floor: if the minima alone exceed the budget,
   the allocation is over budget by ``over_budget_w`` and says so);
2. critical servers are raised to their demand;
3. the other servers are raised to their demand, one priority class at a time, highest first;
4. what is left of the budget is spread as headroom above demand, in the same order, up to
   each server's maximum cap (so a cap is not tighter than it needs to be).

Within one class, water-filling is max-min fair: every server gets the same extra watts until
it reaches its target, so a budget shortfall falls on the servers that ask the most.
A rack's budget is the sum of its servers' caps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.domain.errors import WattwheelError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class AllocationError(WattwheelError, ValueError):
    """The servers or the budget given to :func:`allocate` are unusable (names what and why)."""


@dataclass(frozen=True)
class Servers:
    """The servers of one budget (a domain), arrays of shape (N,).

    Attributes:
        server_ids: server names.
        rack_ids: the rack of each server.
        demand_w: power each server would draw uncapped (W).
        min_cap_w: lowest cap its BMC accepts (W).
        max_cap_w: highest cap worth setting, e.g. its nameplate (W).
        priority: larger is served first among non-critical servers.
        critical: critical servers are served before every non-critical one.
    """

    server_ids: tuple[str, ...]
    rack_ids: tuple[str, ...]
    demand_w: FloatArray
    min_cap_w: FloatArray
    max_cap_w: FloatArray
    priority: IntArray
    critical: BoolArray

    def __post_init__(self) -> None:
        _check_servers(self)

    @property
    def n_servers(self) -> int:
        return len(self.server_ids)


@dataclass(frozen=True)
class Allocation:
    """The result of :func:`allocate`.

    Attributes:
        cap_w: (N,) cap per server (W), in [min_cap_w, max_cap_w].
        rack_budget_w: rack id -> sum of its servers' caps (W).
        unmet_demand_w: (N,) demand above the cap (W), the load the cap will hold back.
        unmet_critical_w: critical demand not covered (W); 0 whenever the budget allows.
        over_budget_w: how far the minimum caps alone exceed the budget (W); 0 when feasible.
    """

    cap_w: FloatArray
    rack_budget_w: dict[str, float]
    unmet_demand_w: FloatArray
    unmet_critical_w: float
    over_budget_w: float


def allocate(servers: Servers, budget_w: float) -> Allocation:
    """Share ``budget_w`` (W) among ``servers`` by priority-aware water-filling."""
    if not math.isfinite(budget_w) or budget_w < 0:
        raise AllocationError(f"budget_w = {budget_w!r}: must be a finite number >= 0")
    demand = np.clip(servers.demand_w, servers.min_cap_w, servers.max_cap_w)
    cap = servers.min_cap_w.astype(float).copy()
    over_budget = max(float(cap.sum()) - budget_w, 0.0)
    room = max(budget_w - float(cap.sum()), 0.0)
    for members in _classes(servers):
        room -= _water_fill(cap, demand, members, room)
    for members in _classes(servers):
        room -= _water_fill(cap, servers.max_cap_w, members, room)
    unmet = np.maximum(servers.demand_w - cap, 0.0)
    names, rack_of = _rack_codes(servers.rack_ids)
    budgets = np.bincount(rack_of, weights=cap, minlength=len(names))
    return Allocation(
        cap_w=cap,
        rack_budget_w=dict(zip(names, budgets.tolist(), strict=True)),
        unmet_demand_w=unmet,
        unmet_critical_w=float(unmet[servers.critical].sum()),
        over_budget_w=over_budget,
    )


@functools.lru_cache(maxsize=256)
def _rack_codes(rack_ids: tuple[str, ...]) -> tuple[tuple[str, ...], IntArray]:
    """The racks in order of first appearance, and each server's position among them (a
    domain's servers come as the same tuple every tick: worked out once)."""
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(r, len(index)) for r in rack_ids), np.int64, len(rack_ids)
    )
    codes.setflags(write=False)
    return tuple(index), codes


def _classes(servers: Servers) -> list[IntArray]:
    """Server indices per service class: critical first, then priority classes, highest first."""
    out = [np.flatnonzero(servers.critical)]
    rest = ~servers.critical
    for p in sorted(set(servers.priority[rest].tolist()), reverse=True):
        out.append(np.flatnonzero(rest & (servers.priority == p)))
    return [m for m in out if m.size]


def _water_fill(cap: FloatArray, target: FloatArray, members: IntArray, room_w: float) -> float:
    """Raise ``cap[members]`` toward ``target[members]`` using at most ``room_w``, max-min fair
    (one common increment, each server stopping at its target). Updates ``cap`` in place and
    returns the watts used."""
    need = np.maximum(target[members] - cap[members], 0.0)
    total = float(need.sum())
    if total <= room_w:
        cap[members] += need
        return total
    level = _fill_level(need, room_w)
    extra = np.minimum(need, level)
    cap[members] += extra
    return float(extra.sum())


def _fill_level(need: FloatArray, room_w: float) -> float:
    """The increment L with sum(min(need, L)) = room_w (room_w < sum(need))."""
    ordered = np.sort(need)
    n = ordered.size
    if n == 0:
        return 0.0
    # Used when every server rises to ordered[i]: the ones below it in full, the rest to it.
    used_at = np.cumsum(ordered) + ordered * np.arange(n - 1, -1, -1)
    i = int(np.searchsorted(used_at, room_w, side="left"))
    if i >= n:
        return float(ordered[-1])
    base, used = (float(ordered[i - 1]), float(used_at[i - 1])) if i else (0.0, 0.0)
    return base + (room_w - used) / (n - i)


def _check_servers(s: Servers) -> None:
    n = len(s.server_ids)
    for name in ("demand_w", "min_cap_w", "max_cap_w", "priority", "critical"):
        arr = getattr(s, name)
        if arr.shape != (n,):
            raise AllocationError(f"{name} has shape {arr.shape}, expected ({n},) (one per server)")
    if len(s.rack_ids) != n:
        raise AllocationError(f"rack_ids has {len(s.rack_ids)} entries, expected {n}")
    if len(set(s.server_ids)) != n:
        raise AllocationError("server_ids are not unique")
    for name in ("demand_w", "min_cap_w", "max_cap_w"):
        arr = getattr(s, name)
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise AllocationError(
                f"{name} of server {s.server_ids[i]!r} is {arr[i]!r}: must be finite and >= 0"
            )
    low = s.min_cap_w > s.max_cap_w
    if low.any():
        i = int(np.argmax(low))
        raise AllocationError(
            f"server {s.server_ids[i]!r}: min_cap_w {s.min_cap_w[i]!r} > max_cap_w "
            f"{s.max_cap_w[i]!r}"
        )
