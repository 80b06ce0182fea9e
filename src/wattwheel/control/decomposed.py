"""The planning MILP decomposed into per-shard MILPs, coordinated by reserve budgets and
fixed cross-domain transfers.

The site-wide MILP (:mod:`wattwheel.control.planner`) couples its domains in two places only:
the shared reserve (per block, the domains' reserve power sums to at most its capacity) and
load shifts (per block from the lead time on, what leaves domains equals what arrives at
others). Everything else - balances, flywheel energy, reserve start/min-on logic, debt - is per
domain, and so is every cost term. The decomposition here:

1. **Shards.** The domains are cut into shards (by default contiguous groups of
   ``shard_size`` domains, as ``serve --shards`` cuts them). Each shard is one sub-problem:
   the unchanged :func:`~wattwheel.control.planner.solve_plan` on the site restricted to the
   shard's domains; shifts among a shard's own domains stay its MILP's decision.
2. **Transfers (cross-shard shifts, fixed by the coordinator).** From the lead block on,
   each shard's surplus of forecast excess it can shift away (over primary, within the shift
   limits and the non-critical load) over its own headroom is matched with the other shards'
   surplus headroom, both scaled to the smaller total, so each block's exports equal its
   imports (:func:`transfers_kw`). They enter the shards as data: demand net of them,
   non-critical load less the exports, each domain's shift limit less what they use.
3. **Reserve budget.** The shared reserve's capacity ``C`` is split among the shards in
   proportion to each shard's remaining forecast excess: ``w_s = max_k Σ_{d∈s}
   max(demand_{d,k} − primary_d, 0)`` over the blocks where the reserve may start
   (``reserve_blocks``), and shard ``s`` plans with a reserve of capacity ``C·w_s / Σw`` (by
   domain count when nothing is over). The budgets sum to ``C``, so the shards' plans together
   never ask the reserve for more than it has, in any block. The coordinator needs the
   forecasts and hands back one capacity and a transfer profile per domain: O(domains ×
   blocks) array work, no iteration.
4. **Merge.** The first-block actions are concatenated in site order (the transfers added to
   the lead block's shift levels); the expected cost is the sum of the shards' objectives plus
   the transfers' shift cost. Every cost term of the site-wide MILP is per domain and the
   merged solution satisfies the site-wide rows (budgets sum to ``C``; transfers and each
   shard's own shifts balance), so that sum *is* the site-wide objective evaluated at the
   merged solution: comparable with the monolithic plan's ``expected_cost`` term for term.

What it gives up against the monolithic MILP: cross-domain shifts are a fixed rule, not
optimised (the MILP also shifts work ahead of an excess so a bank can charge, and away from a
domain that is under primary but short of stored energy; measured on the default scenario's
replicas this is most of the cost gap, see the README "Scale"), and the reserve split is
fixed before solving (a shard that does not need its budget does not hand it over).
With one shard the sub-problem is the site-wide problem with the whole reserve: the plan is
the monolithic one. A shard's solve depends only on its own size, so with one process per
shard (``serve --only-shard``) a plan's wall time stays flat as domains grow; solved one after
another in one process it grows linearly. No I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.planner import Plan, PlanInputs, solve_plan
from wattwheel.domain.site import SiteParams

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Solver = Callable[[SiteParams, PlanInputs, int], Plan | None]


def contiguous_shards(n_domains: int, shard_size: int) -> list[IntArray]:
    """Domain indices cut into contiguous shards of ``shard_size`` (the last may be smaller)."""
    if n_domains < 1 or shard_size < 1:
        raise ValueError(f"need n_domains >= 1 and shard_size >= 1, got {n_domains}, {shard_size}")
    return [
        np.arange(a, min(a + shard_size, n_domains), dtype=np.int64)
        for a in range(0, n_domains, shard_size)
    ]


@dataclass(frozen=True)
class Coordination:
    """What the coordinator hands the shards: reserve budgets and the fixed cross-domain
    transfers (kW per domain and block; zero before the lead time)."""

    budgets_kw: FloatArray
    export_kw: FloatArray
    import_kw: FloatArray
    #: The transfers' shift cost (the site-wide MILP's ``shifted_energy_kwh`` on what leaves).
    transfer_cost: float


def transfers_kw(
    site: SiteParams, inputs: PlanInputs, lead_blocks: int, shards: Sequence[IntArray]
) -> tuple[FloatArray, FloatArray]:
    """(export, import), each (D, K). From the lead block on, a domain's *want* is the forecast
    excess it can shift away (over primary, within its shift limit and its non-critical load)
    and its *room* the headroom of a domain under primary (within its shift limit). Within a
    shard they net out (that is the shard's own MILP's to decide); a shard's surplus want is
    matched with the other shards' surplus room, both scaled to the smaller total, so every
    block's exports equal its imports. One shard: no transfers."""
    demand, prim = inputs.demand_kw, site.primary_kw[:, None]
    shift_max = site.flex.shift_max_kw[:, None]
    want = np.minimum(np.maximum(demand - prim, 0.0), np.minimum(shift_max, inputs.noncritical_kw))
    room = np.minimum(np.maximum(prim - demand, 0.0), shift_max)
    want[:, :lead_blocks] = 0.0
    room[:, :lead_blocks] = 0.0
    # Each shard's surplus, given back to its domains in proportion to their want (room).
    for idx in shards:
        w, r = want[idx].sum(axis=0), room[idx].sum(axis=0)
        want[idx] *= _ratio(np.maximum(w - r, 0.0), w)
        room[idx] *= _ratio(np.maximum(r - w, 0.0), r)
    flow = np.minimum(want.sum(axis=0), room.sum(axis=0))
    return want * _ratio(flow, want.sum(axis=0)), room * _ratio(flow, room.sum(axis=0))


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out: FloatArray = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out


def reserve_budgets_kw(
    site: SiteParams, inputs: PlanInputs, shards: Sequence[IntArray]
) -> FloatArray:
    """Each shard's share of the reserve capacity (kW), in proportion to its peak forecast
    excess over primary in the blocks the reserve may start in; by domain count when no shard
    is over. Sums to the capacity."""
    n_blk = inputs.demand_kw.shape[1]
    blocks = n_blk if inputs.reserve_blocks is None else max(min(inputs.reserve_blocks, n_blk), 1)
    over_kw = np.maximum(inputs.demand_kw[:, :blocks] - site.primary_kw[:, None], 0.0)
    weight = np.array([float(over_kw[idx].sum(axis=0).max()) for idx in shards])
    if weight.sum() <= 0.0:
        weight = np.array([float(idx.size) for idx in shards])
    budgets: FloatArray = site.reserve.capacity_kw * weight / weight.sum()
    return budgets


def coordinate(
    site: SiteParams, inputs: PlanInputs, shards: Sequence[IntArray], lead_blocks: int
) -> tuple[Coordination, list[tuple[SiteParams, PlanInputs]]]:
    """The coordination step: the transfers, then each shard's site (its domains, its reserve
    budget, the shift limit the transfers leave) and inputs (demand net of the transfers)."""
    export, imp = transfers_kw(site, inputs, lead_blocks, shards)
    net = dataclasses.replace(
        inputs,
        demand_kw=inputs.demand_kw - export + imp,
        noncritical_kw=inputs.noncritical_kw - export,
    )
    budgets = reserve_budgets_kw(site, net, shards)
    used_kw = np.maximum(export, imp).max(axis=1, initial=0.0)
    flex = dataclasses.replace(
        site.flex, shift_max_kw=np.maximum(site.flex.shift_max_kw - used_kw, 0.0)
    )
    left = dataclasses.replace(site, flex=flex)
    problems = []
    for idx, budget in zip(shards, budgets, strict=True):
        sub_site: SiteParams = cut_domains(left, idx, site.n_domains)
        sub_site = dataclasses.replace(
            sub_site, reserve=dataclasses.replace(site.reserve, capacity_kw=float(budget))
        )
        sub_inputs: PlanInputs = cut_domains(net, idx, site.n_domains)
        problems.append((sub_site, sub_inputs))
    dt_h = site.plan_period_s / 3600.0
    cost = float(site.costs.get("shifted_energy_kwh", 0.0)) * dt_h * float(export.sum())
    return Coordination(budgets, export, imp, cost), problems


def shard_problems(
    site: SiteParams, inputs: PlanInputs, shards: Sequence[IntArray], lead_blocks: int = 0
) -> list[tuple[SiteParams, PlanInputs]]:
    """Each shard's site and inputs as :func:`coordinate` makes them."""
    return coordinate(site, inputs, shards, lead_blocks)[1]


def merge_plans(
    plans: Sequence[Plan],
    shards: Sequence[IntArray],
    n_domains: int,
    coordination: Coordination | None = None,
    lead_blocks: int = 0,
) -> Plan:
    """The shards' first-block actions in site order (plus the transfers at the lead block);
    the cost is the sum of theirs plus the transfers'."""
    order = np.concatenate(list(shards))

    def cat(get: Callable[[Plan], Any], dtype: Any) -> Any:
        out = np.zeros(n_domains, dtype=dtype)
        out[order] = np.concatenate([np.asarray(get(p), dtype=dtype) for p in plans])
        return out

    shift_out, shift_in = cat(lambda p: p.shift_out_kw, float), cat(lambda p: p.shift_in_kw, float)
    extra = 0.0
    if coordination is not None:
        k = min(lead_blocks, coordination.export_kw.shape[1] - 1)
        shift_out = shift_out + coordination.export_kw[:, k]
        shift_in = shift_in + coordination.import_kw[:, k]
        extra = coordination.transfer_cost
    return Plan(
        soc_target=cat(lambda p: p.soc_target, float),
        reserve_arm=cat(lambda p: p.reserve_arm, bool),
        shift_out_kw=shift_out,
        shift_in_kw=shift_in,
        defer_kw=cat(lambda p: p.defer_kw, float),
        repay_kw=cat(lambda p: p.repay_kw, float),
        expected_cost=float(sum(p.expected_cost for p in plans)) + extra,
        reserve_prewarm=cat(
            lambda p: p.reserve_arm if p.reserve_prewarm is None else p.reserve_prewarm, bool
        ),
    )


def solve_decomposed(
    site: SiteParams,
    inputs: PlanInputs,
    lead_blocks: int,
    shards: Sequence[IntArray] | None = None,
    solve: Solver = solve_plan,
) -> Plan | None:
    """Plan shard by shard (one domain per shard unless ``shards`` is given) under reserve
    budgets; None when any shard has no solution (the caller falls back, as for
    :func:`~wattwheel.control.planner.solve_plan`)."""
    shards = contiguous_shards(site.n_domains, 1) if shards is None else shards
    coordination, problems = coordinate(site, inputs, shards, lead_blocks)
    plans = []
    for sub_site, sub_inputs in problems:
        plan = solve(sub_site, sub_inputs, lead_blocks)
        if plan is None:
            return None
        plans.append(plan)
    return merge_plans(plans, shards, site.n_domains, coordination, lead_blocks)


def cut_domains(value: Any, idx: IntArray, n_domains: int) -> Any:
    """``value`` with every per-domain array (leading axis of length ``n_domains``) and the
    per-domain name tuples cut to ``idx``, through nested frozen dataclasses; the rest kept
    (the breaker curve is a tuple too, but not one per domain)."""
    if isinstance(value, np.ndarray):
        return value[idx].copy() if value.ndim >= 1 and value.shape[0] == n_domains else value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.name in _PER_DOMAIN_TUPLES:
                fields[f.name] = tuple(v[int(i)] for i in idx)
            else:
                fields[f.name] = cut_domains(v, idx, n_domains)
        return dataclasses.replace(value, **fields)
    return value


_PER_DOMAIN_TUPLES = frozenset({"domain_names", "domain_racks"})
