"""The planning MILP decomposed into per-shard MILPs, coordinated by prices (dual
decomposition) with a final repair that makes the merged plan feasible for the site.

The site-wide MILP (:mod:`wattwheel.control.planner`) couples its domains in three places: the
shared reserve's capacity (per block, the domains' reserve power sums to at most ``C``), the
reserve being **one machine** (one on/start schedule, its running time and starts paid once),
and load shifts (per block from the lead time on, what leaves domains equals what arrives at
others). Everything else - balances, flywheel energy, debt, reversals - and every other cost
term is per domain. The decomposition here:

1. **Shards.** The domains are cut into contiguous shards (``shard_size`` domains, as
   ``serve --shards`` cuts them). :class:`DecomposedPlanner` cuts the site's per-domain
   parameters once per site; a call only slices the inputs (views, O(domains)). Each shard is
   the site-wide model (:class:`~wattwheel.control.planner._Builder`, unchanged rows) on its
   domains with the whole reserve capacity ``C``, plus one *exchange* column per block from
   the lead block on: its shift balance is ``Σ out − Σ in = e_k`` (net power sent to other
   shards) instead of 0. Shifts among a shard's own domains stay its MILP's decision.
2. **Each shard's own value of a transfer (one LP per shard).** Before the price rounds each
   shard solves its model as an LP (the machine's on/off relaxed) with its exchange fixed at
   0: minus the dual of each block's exchange column is what exporting one more kW in that
   block is worth to the shard (positive: it would cap, discharge or run the reserve without
   it; near 0: it has headroom to spare). That is the shard's side of the site-wide MILP's
   shift-balance dual, and the site's price lies between the shards' values: above the
   largest, every shard would rather import; below the smallest, export.
3. **Price rounds** (at most ``rounds``). Each round every shard solves its MILP with a price
   ``λ_k`` per kW-block on its net export (``+λ_k·e_k``: exporters pay it, importers earn it)
   and ``μ_k ≥ 0`` added to its reserve power's cost. Each shard's model is built once per call
   and passed to HiGHS once; the value LP and later rounds only change costs, bounds and the
   machine's integrality in the same HiGHS instance. The first round prices each block's
   exports at the median of the shards' values (2) weighted by each shard's shift reach (the
   price at which the shards that would export could send as much as those that would import
   could take, were each to trade its whole reach), and the reserve at 0; without the values
   (``first_price_from_values=False``, or an LP without a solution) at the larger of the cost
   of shifting a kW for a block and 1 % of capping it. Between rounds the coordinator
   updates each block's price on its own, by bracketing: a block with more exports than imports
   (beyond ``balance_tol`` of the traded power) raises ``λ_k`` - by a step that grows by
   ``price_growth`` (default 4) each round until
   the sign of the imbalance flips, then by bisection between the last prices on either side
   (more imports lower it the same way); the same for ``μ_k`` on the reserve asked for beyond
   ``C`` (and lowered toward 0 while capacity is left over). The rounds stop early when every
   block is within the tolerance and no block asks for more than ``C``.
4. **Repair (one more solve per shard and candidate).** Candidate exchange schedules, each
   balancing exactly (exports = imports in every block): (a) per block, the convex combination
   of the shards' exchanges in the latest round with surplus exports and the latest with
   surplus imports that balances (each shard's exchange then lies between two it could do),
   or, if all rounds had the same sign, the round closest to balance; with more than one
   round and ``candidates`` >= 2 (the default) also (b) the rounds' average of each shard's
   exchange (the ergodic primal average of the price search; it keeps the trades of blocks
   where the last rounds, priced just above the many shards' zero values, traded nothing at
   all) and, with ``candidates`` >= 3, (c) the last
   round's exchanges. In each, whichever side of a block is larger is scaled down to the
   other, so exports = imports.
   The reserve is split into per-shard, per-block budgets that sum to ``C``: the last round's
   use, scaled down to ``C`` where it asked for more, plus what is left in proportion to each
   shard's peak forecast excess in the blocks the reserve may start in. The machine's schedule
   is the union of the shards' last-round schedules: in the repair a shard may run the machine
   only where that schedule does, at a thousandth of its running and start costs (the machine
   is paid once, by the merge). For each candidate, each shard solves again with its exchange
   fixed and its reserve row bounded by its budget (bounds changed in the same HiGHS
   instance); the candidate whose merged cost (5) is lowest is kept (the first on a tie).
5. **Merge.** The first-block actions are concatenated in site order; the reserve is armed
   (pre-warmed) for every allowed domain where the merged machine schedule runs in block 0
   (blocks 0-1), as the site-wide plan arms it. The expected cost is the sum of the shards'
   objectives without the machine's running and start terms, plus those terms once for the
   union of the shards' schedules (its starts counted from that union). The merged solution
   satisfies every site-wide row (exports = imports per block; budgets sum to ``C``; each
   shard's reserve power runs only where the union runs; the union of schedules that each
   keep the minimum on-time keeps it, and a start in the union is never later than the shard's
   own), so this cost is the site-wide objective at a feasible point: comparable with the
   monolithic plan's ``expected_cost`` term for term, never below the monolithic optimum.

Given a smaller reserve capacity for the call (a shard process's budget of the shared
reserve), ``C`` is that capacity for the coordinator (the over-ask it prices and the budgets
that sum to it); the shards' models keep the site's capacity as their bound.

With one shard there is no exchange and no round: the sub-problem is the site-wide problem and
the plan is the monolithic one. Solves per shard and call: the value LP, the price rounds and
one repair per candidate (7 by default). A shard's solve depends only on its own size, so with
one process per shard a plan's wall time is the rounds' slowest shards plus the coordinator's
O(domains) array work; solved one after another in one process it grows linearly with the
shards. No I/O; no clock (a caller that
times the rounds passes a ``timer``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import highspy
import numpy as np
from numpy.typing import NDArray

from wattwheel.control.lp import run
from wattwheel.control.planner import S_PER_H, Plan, PlanInputs, _Builder, solve_plan
from wattwheel.domain.site import SiteParams

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
#: HiGHS's time limit for one shard's solve, as for the site-wide plan.
TIME_LIMIT_S = 2.0
#: In the repair, the machine's running and start costs are scaled by this: a shard joins a
#: machine another shard runs without paying for it again, and still turns off what it does
#: not use (the merge pays the machine once).
REPAIR_MACHINE_COST_SHARE = 1e-3
_CONTINUOUS = highspy.HighsVarType.kContinuous
_INTEGER = highspy.HighsVarType.kInteger


def contiguous_shards(n_domains: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of contiguous shards of ``shard_size`` domains (the last may be smaller)."""
    if n_domains < 1 or shard_size < 1:
        raise ValueError(f"need n_domains >= 1 and shard_size >= 1, got {n_domains}, {shard_size}")
    return [(a, min(a + shard_size, n_domains)) for a in range(0, n_domains, shard_size)]


@dataclass
class CallInfo:
    """How a call went: price rounds solved, whether the repair solved again, the largest
    export/import imbalance (kW) and reserve over-ask (kW) of the last price round, and, with a
    timer, each solve round's per-shard solve times and the coordinator's own time (s)."""

    rounds: int = 0
    repaired: bool = False
    imbalance_kw: float = 0.0
    reserve_over_kw: float = 0.0
    solve_s: list[list[float]] = field(default_factory=list)
    coordination_s: float = 0.0
    #: (S, K) of the merged plan: each shard's net export and reserve power per block.
    exchange_kw: FloatArray | None = None
    reserve_kw: FloatArray | None = None


class DecomposedPlanner:
    """Per-shard MILPs with price coordination (the module's docstring) for one site."""

    def __init__(
        self,
        site: SiteParams,
        shard_size: int = 3,
        rounds: int = 4,
        balance_tol: float = 0.02,
        price_growth: float = 4.0,
        candidates: int = 2,
        first_price_from_values: bool = True,
    ) -> None:
        if rounds < 1:
            raise ValueError(f"need rounds >= 1, got {rounds}")
        self.site = site
        self.rounds = rounds
        self.balance_tol = balance_tol
        self.price_growth = price_growth
        self.candidates = candidates
        self.first_price_from_values = first_price_from_values
        self.shards = contiguous_shards(site.n_domains, shard_size)
        # Cut once per site: the shards' parameters (each with the whole reserve capacity).
        self.sub_sites: list[SiteParams] = [
            cut_domains(site, slice(a, b), site.n_domains) for a, b in self.shards
        ]
        #: Each shard's shift reach (kW): the most it can send or take in a block.
        self.reach_kw = np.array([float(s.flex.shift_max_kw.sum()) for s in self.sub_sites])
        self.dt_h = site.plan_period_s / S_PER_H
        self.on_cost = self.dt_h * S_PER_H * float(site.costs.get("reserve_seconds", 0.0))
        self.start_cost = float(site.costs.get("reserve_activations", 0.0))
        shift_ref = self.dt_h * float(site.costs.get("shifted_energy_kwh", 0.0))
        capped_ref = self.dt_h * float(site.costs.get("capped_energy_kwh", 0.0))
        #: First exchange price and first step (per kW-block): shifting a kW for a block.
        self.lambda_step = max(shift_ref, 0.01 * capped_ref, 1e-3)
        reserve_ref = self.dt_h * float(site.costs.get("reserve_energy_kwh", 0.0))
        self.mu_step = max(reserve_ref, 0.01 * capped_ref, 1e-3)

    def solve(
        self, inputs: PlanInputs, lead_blocks: int, reserve_kw: float | None = None
    ) -> Plan | None:
        """The merged plan; None when a shard has no solution (the caller falls back, as for
        :func:`~wattwheel.control.planner.solve_plan`). ``reserve_kw``: the reserve capacity
        to plan with instead of the site's (a shard process's budget of it)."""
        return self.solve_with_info(inputs, lead_blocks, reserve_kw=reserve_kw)[0]

    def solve_with_info(
        self,
        inputs: PlanInputs,
        lead_blocks: int,
        timer: Callable[[], float] | None = None,
        reserve_kw: float | None = None,
    ) -> tuple[Plan | None, CallInfo]:
        info = CallInfo()
        t_start = timer() if timer else 0.0
        cap_kw = float(self.site.reserve.capacity_kw if reserve_kw is None else reserve_kw)
        if len(self.shards) == 1:
            t0 = timer() if timer else 0.0
            site = self.site
            if reserve_kw is not None:
                site = replace(site, reserve=replace(site.reserve, capacity_kw=cap_kw))
            plan = solve_plan(site, inputs, lead_blocks)
            if timer:
                info.solve_s.append([timer() - t0])
            info.rounds = 1
            return plan, info
        models: list[_Shard] = []
        plan = self._coordinate(inputs, lead_blocks, info, timer, models, cap_kw)
        if timer:
            info.coordination_s = timer() - t_start - sum(sum(r) for r in info.solve_s)
        # Freeing the shards' models is theirs too (one process each), left out of the
        # coordinator's time above.
        models.clear()
        return plan, info

    def _coordinate(
        self,
        inputs: PlanInputs,
        lead: int,
        info: CallInfo,
        timer: Callable[[], float] | None,
        models: list[_Shard],
        cap_kw: float,
    ) -> Plan | None:
        n_blk = inputs.demand_kw.shape[1]
        lam = np.zeros(n_blk)
        lam[lead:] = self.lambda_step
        mu = np.zeros(n_blk)
        lam_br = _Bracket(n_blk, self.lambda_step, floor=-np.inf, growth=self.price_growth)
        mu_br = _Bracket(n_blk, self.mu_step, floor=0.0, growth=self.price_growth)
        if self.first_price_from_values:
            values = self._export_values(inputs, lead, info, timer, models)
            if values is not None:
                lam[lead:] = _weighted_median(values, self.reach_kw)[lead:]
        hist_e: list[FloatArray] = []
        hist_m: list[FloatArray] = []
        tol = np.zeros(n_blk)
        use = np.zeros((len(self.shards), n_blk))
        for r in range(self.rounds):
            times: list[float] = []
            for i, (a, b) in enumerate(self.shards):
                t0 = timer() if timer else 0.0
                if i >= len(models):
                    # A shard's own work (its process's, one per shard): its inputs' slice
                    # and its model.
                    models.append(_Shard(self.sub_sites[i], _cut_inputs(inputs, a, b), lead))
                models[i].price(lam, mu)
                ok = models[i].solve()
                if timer:
                    times.append(timer() - t0)
                if not ok:
                    info.solve_s.append(times)
                    return None
            info.solve_s.append(times)
            info.rounds = r + 1
            e = np.array([m.exchange_kw for m in models])
            use = np.array([m.reserve_kw for m in models])
            m_k = e.sum(axis=0)
            tol = self.balance_tol * 0.5 * np.abs(e).sum(axis=0) + 1e-6
            over = use.sum(axis=0) - cap_kw
            hist_e.append(e)
            hist_m.append(m_k)
            info.imbalance_kw = float(np.abs(m_k).max(initial=0.0))
            info.reserve_over_kw = float(max(over.max(initial=0.0), 0.0))
            if np.all(np.abs(m_k) <= tol) and info.reserve_over_kw <= 1e-6:
                break
            if r + 1 < self.rounds:
                lam = lam_br.update(lam, m_k, tol)
                mu = mu_br.update(mu, over, np.full(n_blk, 1e-6))
        cands = [_balanced_exchange(hist_e, hist_m, tol)]
        if self.candidates >= 2 and len(hist_e) > 1:
            avg = np.mean(hist_e, axis=0)
            cands.append(np.column_stack([_scale_to_balance(c) for c in avg.T]))
        if self.candidates >= 3 and len(hist_e) > 1:
            cands.append(np.column_stack([_scale_to_balance(c) for c in hist_e[-1].T]))
        budgets = self._budgets(inputs, use, cap_kw)
        machine = np.max([m.on for m in models], axis=0)
        best: list[_Result] | None = None
        best_cost = np.inf
        for e_fix in cands:
            times = []
            for i, model in enumerate(models):
                t0 = timer() if timer else 0.0
                model.repair(e_fix[i], budgets[i], machine)
                ok = model.solve(final=True)
                if timer:
                    times.append(timer() - t0)
                if not ok:
                    info.solve_s.append(times)
                    return None
            info.solve_s.append(times)
            got = [m.result() for m in models]
            cost = self._merged_cost(got, inputs)
            if cost < best_cost:
                best, best_cost = got, cost
        assert best is not None
        for model, res in zip(models, best, strict=True):
            model.restore(res)
        info.repaired = True
        info.exchange_kw = np.array([m.exchange_kw for m in models])
        info.reserve_kw = np.array([m.reserve_kw for m in models])
        return self._merge(models, inputs)

    def _export_values(
        self,
        inputs: PlanInputs,
        lead: int,
        info: CallInfo,
        timer: Callable[[], float] | None,
        models: list[_Shard],
    ) -> FloatArray | None:
        """(S, K) each shard's marginal value of exporting a kW in each block with nothing
        exchanged (:meth:`_Shard.export_values`), one LP solve per shard, its model built here
        (module docstring, 2); None if a shard's LP has no solution."""
        times: list[float] = []
        values = []
        for i, (a, b) in enumerate(self.shards):
            t0 = timer() if timer else 0.0
            models.append(_Shard(self.sub_sites[i], _cut_inputs(inputs, a, b), lead))
            v = models[i].export_values()
            if timer:
                times.append(timer() - t0)
            if v is None:
                break
            values.append(v)
        info.solve_s.append(times)
        return np.array(values) if len(values) == len(self.shards) else None

    def _budgets(self, inputs: PlanInputs, use: FloatArray, cap_kw: float) -> FloatArray:
        """(S, K) reserve budgets summing to ``cap_kw`` in every block (module docstring, 4)."""
        total = use.sum(axis=0)
        weight = _excess_weights(self.site, inputs, self.shards)
        scaled = use * _ratio(np.full_like(total, cap_kw), total)
        topped = use + np.maximum(cap_kw - total, 0.0) * weight[:, None]
        out: FloatArray = np.where(total > cap_kw, scaled, topped)
        return out

    def _machine_cost(self, machine: FloatArray, inputs: PlanInputs) -> float:
        """The machine's running and start costs, once, for the schedule ``machine``."""
        prev = np.concatenate([[float(bool(inputs.reserve_on.any()))], machine[:-1]])
        starts = np.maximum(machine - prev, 0.0)
        return self.on_cost * float(machine.sum()) + self.start_cost * float(starts.sum())

    def _merged_cost(self, results: Sequence[_Result], inputs: PlanInputs) -> float:
        machine = np.max([r.on for r in results], axis=0)
        return float(sum(r.cost_without_machine for r in results)) + self._machine_cost(
            machine, inputs
        )

    def _merge(self, models: Sequence[_Shard], inputs: PlanInputs) -> Plan:
        plans = [m.plan for m in models if m.plan is not None]
        machine = np.max([m.on for m in models], axis=0)
        machine_cost = self._machine_cost(machine, inputs)
        allowed = inputs.reserve_allowed
        cat = np.concatenate
        return Plan(
            soc_target=cat([p.soc_target for p in plans]),
            reserve_arm=np.full(self.site.n_domains, machine[0] > 0.5) & allowed,
            shift_out_kw=cat([p.shift_out_kw for p in plans]),
            shift_in_kw=cat([p.shift_in_kw for p in plans]),
            defer_kw=cat([p.defer_kw for p in plans]),
            repay_kw=cat([p.repay_kw for p in plans]),
            expected_cost=float(sum(m.cost_without_machine for m in models)) + machine_cost,
            reserve_prewarm=np.full(self.site.n_domains, bool(np.any(machine[:2] > 0.5))) & allowed,
        )


@dataclass
class _Result:
    """What the coordinator keeps of one shard's repair solve."""

    exchange_kw: FloatArray
    reserve_kw: FloatArray
    on: FloatArray
    cost_without_machine: float
    plan: Plan | None


class _Shard:
    """One shard's model, built once per call, passed to HiGHS once and re-solved there with
    other prices (costs) and, for the repair, other bounds."""

    def __init__(self, site: SiteParams, inputs: PlanInputs, lead: int) -> None:
        self.b = b = _Builder(site, inputs, lead, exchange=True)
        self.h = b.lp.highs(time_limit_s=TIME_LIMIT_S)
        self.cost = np.asarray(b.lp.cost)
        self.n_dom, self.n_blk = b.n_dom, b.n_blk
        self.res_cols = np.asarray(b.res, dtype=np.int32)
        self.exch_cols = np.asarray(b.exch, dtype=np.int32)
        self.on_cols = np.asarray(b.on, dtype=np.int32)
        self.start_cols = np.asarray(b.start, dtype=np.int32)
        self.on_hi = np.asarray(b.lp.upper)[b.on]
        self.exch_lo = np.asarray(b.lp.lower)[b.exch]
        self.exch_hi = np.asarray(b.lp.upper)[b.exch]
        self.exchange_kw: FloatArray = np.zeros(self.n_blk)
        self.reserve_kw: FloatArray = np.zeros(self.n_blk)
        self.on: FloatArray = np.zeros(self.n_blk)
        self.cost_without_machine = 0.0
        self.plan: Plan | None = None

    def export_values(self) -> FloatArray | None:
        """Each block's marginal value of exporting a kW (cost per kW-block) with nothing
        exchanged: minus the dual of the exchange column fixed at 0, in the LP with the machine's
        on/off relaxed; None if that LP has no solution. The model is left as it was."""
        h, k = self.h, self.n_blk
        zero = np.zeros(k)
        h.changeColsBounds(k, self.exch_cols, zero, zero)
        h.changeColsIntegrality(k, self.on_cols, np.full(k, _CONTINUOUS))
        h.run()
        ok = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        out: FloatArray | None = None
        if ok and h.getInfo().dual_solution_status == 2:
            out = -np.asarray(h.getSolution().col_dual)[self.exch_cols]
        h.changeColsIntegrality(k, self.on_cols, np.full(k, _INTEGER))
        h.changeColsBounds(k, self.exch_cols, self.exch_lo, self.exch_hi)
        return out

    def price(self, lam: FloatArray, mu: FloatArray) -> None:
        h = self.h
        h.changeColsCost(self.n_blk, self.exch_cols, np.asarray(lam, dtype=float))
        res = self.cost[self.res_cols] + np.tile(mu, self.n_dom)
        h.changeColsCost(res.size, self.res_cols, res)

    def repair(self, e_kw: FloatArray, budget_kw: FloatArray, machine: FloatArray) -> None:
        h, k = self.h, self.n_blk
        h.changeColsCost(k, self.exch_cols, np.zeros(k))
        h.changeColsCost(self.res_cols.size, self.res_cols, self.cost[self.res_cols])
        h.changeColsBounds(k, self.exch_cols, e_kw, e_kw)
        for row, budget in zip(self.b.reserve_rows, budget_kw, strict=True):
            h.changeRowBounds(row, -np.inf, max(float(budget), 0.0))
        h.changeColsBounds(k, self.on_cols, np.zeros(k), np.minimum(self.on_hi, machine))
        share = REPAIR_MACHINE_COST_SHARE
        h.changeColsCost(k, self.on_cols, share * self.cost[self.on_cols])
        h.changeColsCost(k, self.start_cols, share * self.cost[self.start_cols])

    def result(self) -> _Result:
        return _Result(
            self.exchange_kw, self.reserve_kw, self.on, self.cost_without_machine, self.plan
        )

    def restore(self, res: _Result) -> None:
        self.exchange_kw, self.reserve_kw, self.on = res.exchange_kw, res.reserve_kw, res.on
        self.cost_without_machine, self.plan = res.cost_without_machine, res.plan

    def solve(self, final: bool = False) -> bool:
        """Solve; what the coordinator reads of the solution is taken here, as the shard's own
        work (its exchange, reserve power and machine schedule; with ``final`` its plan and
        its cost without the machine)."""
        x = run(self.h)
        if x is None:
            return False
        self.exchange_kw = x[self.exch_cols]
        self.reserve_kw = x[self.res_cols].reshape(self.n_dom, self.n_blk).sum(axis=0)
        self.on = (x[self.on_cols] > 0.5).astype(float)
        if final:
            c = self.cost.copy()
            c[self.on_cols] = 0.0
            c[self.start_cols] = 0.0
            self.cost_without_machine = float(c @ x) + self.b.constant
            self.plan = self.b.extract(x)
        return True


class _Bracket:
    """Per-block price search: a step (doubling) until the imbalance changes sign, then
    bisection between the last prices on either side; never below ``floor``."""

    def __init__(self, n: int, step: float, floor: float, growth: float = 2.0) -> None:
        self.floor = floor
        self.growth = growth
        self.lo = np.full(n, floor)
        self.hi = np.full(n, np.inf)
        self.step = np.full(n, step)

    def update(self, price: FloatArray, excess: FloatArray, tol: FloatArray) -> FloatArray:
        up = excess > tol
        down = (excess < -tol) & (price > self.floor)
        self.lo = np.where(up, price, self.lo)
        self.hi = np.where(down, price, self.hi)
        both = np.isfinite(self.lo) & np.isfinite(self.hi)
        mid = 0.5 * (np.where(both, self.lo, 0.0) + np.where(both, self.hi, 0.0))
        new = np.where(up, np.where(both, mid, price + self.step), price)
        new = np.where(down, np.where(both, mid, price - self.step), new)
        self.step = np.where((up | down) & ~both, self.growth * self.step, self.step)
        out: FloatArray = np.maximum(new, self.floor)
        return out


def _balanced_exchange(
    hist_e: Sequence[FloatArray], hist_m: Sequence[FloatArray], tol: FloatArray
) -> FloatArray:
    """(S, K) exchanges with exports = imports in every block (module docstring, 4)."""
    n_shards, n_blk = hist_e[0].shape
    out = np.zeros((n_shards, n_blk))
    m = np.array(hist_m)  # (R, K)
    for k in range(n_blk):
        pos = np.flatnonzero(m[:, k] > tol[k])
        neg = np.flatnonzero(m[:, k] < -tol[k])
        if pos.size and neg.size and np.abs(m[:, k]).min() > tol[k]:
            a, b = int(pos[-1]), int(neg[-1])
            theta = -m[b, k] / (m[a, k] - m[b, k])
            e = theta * hist_e[a][:, k] + (1.0 - theta) * hist_e[b][:, k]
        else:
            e = hist_e[int(np.argmin(np.abs(m[:, k])))][:, k]
        out[:, k] = _scale_to_balance(e)
    return out


def _scale_to_balance(e: FloatArray) -> FloatArray:
    exports, imports = float(np.maximum(e, 0.0).sum()), float(np.maximum(-e, 0.0).sum())
    if exports <= 0.0 or imports <= 0.0:
        return np.zeros_like(e)
    out: FloatArray
    if exports > imports:
        out = np.where(e > 0, e * (imports / exports), e)
    else:
        out = np.where(e < 0, e * (exports / imports), e)
    return out


def _excess_weights(
    site: SiteParams, inputs: PlanInputs, shards: Sequence[tuple[int, int]]
) -> FloatArray:
    """Each shard's share of its peak forecast excess over primary in the blocks the reserve
    may start in (by domain count when nothing is over); sums to 1."""
    n_blk = inputs.demand_kw.shape[1]
    blocks = n_blk if inputs.reserve_blocks is None else max(min(inputs.reserve_blocks, n_blk), 1)
    over_kw = np.maximum(inputs.demand_kw[:, :blocks] - site.primary_kw[:, None], 0.0)
    weight = np.array([float(over_kw[a:b].sum(axis=0).max()) for a, b in shards])
    if weight.sum() <= 0.0:
        weight = np.array([float(b - a) for a, b in shards])
    out: FloatArray = weight / weight.sum()
    return out


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out: FloatArray = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out


def _cut_inputs(inputs: PlanInputs, a: int, b: int) -> PlanInputs:
    """The inputs of domains [a, b) (views, no copy)."""
    return PlanInputs(
        demand_kw=inputs.demand_kw[a:b],
        noncritical_kw=inputs.noncritical_kw[a:b],
        energy_kwh=inputs.energy_kwh[a:b],
        debt_kwh=inputs.debt_kwh[a:b],
        reserve_on=inputs.reserve_on[a:b],
        reserve_min_on_left_s=inputs.reserve_min_on_left_s[a:b],
        reserve_allowed=inputs.reserve_allowed[a:b],
        fixed_shift_out_kw=inputs.fixed_shift_out_kw[a:b],
        fixed_shift_in_kw=inputs.fixed_shift_in_kw[a:b],
        reserve_blocks=inputs.reserve_blocks,
    )


def solve_decomposed(
    site: SiteParams, inputs: PlanInputs, lead_blocks: int, shard_size: int = 1, rounds: int = 4
) -> Plan | None:
    """One call of :class:`DecomposedPlanner` (one domain per shard by default)."""
    return DecomposedPlanner(site, shard_size, rounds).solve(inputs, lead_blocks)


def cut_domains(value: Any, idx: IntArray | slice, n_domains: int) -> Any:
    """``value`` with every per-domain array (leading axis of length ``n_domains``) and the
    per-domain name tuples cut to ``idx``, through nested frozen dataclasses; the rest kept
    (the breaker curve is a tuple too, but not one per domain)."""
    if isinstance(value, np.ndarray):
        return value[idx].copy() if value.ndim >= 1 and value.shape[0] == n_domains else value
    if is_dataclass(value) and not isinstance(value, type):
        kw = {}
        for f in fields(value):
            v = getattr(value, f.name)
            if f.name in _PER_DOMAIN_TUPLES:
                kw[f.name] = (
                    tuple(v[idx]) if isinstance(idx, slice) else tuple(v[int(i)] for i in idx)
                )
            else:
                kw[f.name] = cut_domains(v, idx, n_domains)
        return replace(value, **kw)
    return value


_PER_DOMAIN_TUPLES = frozenset({"domain_names", "domain_racks"})


def _weighted_median(values: FloatArray, weights: FloatArray) -> FloatArray:
    """Per block (column of ``values``, (S, K)), the lower weighted median of the shards'
    values, each weighted by ``weights`` (S,): the price at which the weight of the shards
    valuing an export above it first reaches that of the shards valuing it below."""
    order = np.argsort(values, axis=0, kind="stable")
    v = np.take_along_axis(values, order, axis=0)
    cum = np.cumsum(weights[order], axis=0)
    idx = np.argmax(cum >= 0.5 * cum[-1], axis=0)
    out: FloatArray = v[idx, np.arange(values.shape[1])]
    return out
