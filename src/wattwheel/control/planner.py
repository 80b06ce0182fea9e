"""The planning loop: a receding-horizon MILP over quantile forecasts (HiGHS).

Blocks k = 0..K−1 of length Δ = plan period; block 0 starts now. Every block's demand is a
forecast (the caller picks the level: :mod:`wattwheel.control.predictive` prices the median),
made from what was measured up to the decision time (less the measurement latency): the
demand the plan will meet is never an input to it. The measured demand is the fast loop's,
which acts on it every period within the plan's targets.
Per domain d and block k the decision variables are flywheel discharge/charge, capped load,
reserve power, shifts out/in (only from the block the lead time reaches; earlier blocks carry
what was already scheduled), deferral and repayment (a debt with a terminal cost), and an
overload slack. The shared reserve is **one machine**: one on/start binary per block for the
site (start delay, minimum on-time, its running time and starts priced once), its capacity
shared by the domains it may feed. Changing a domain's net shift level from one block to the
next costs ``REVERSAL_SHARE`` of shifting that power (moving work back is not free). The
balance is

    demand − out + in − cap − defer + repay − dis + chg − reserve − overload ≤ primary

and the flywheel energy follows the same physics as the plant: standby loss affine in stored
energy (:func:`wattwheel.domain.flywheel.standby_loss_coefficients`: the fixed auxiliaries plus
the ω² drag, never zero - an empty bank still turns at ω_min, so keeping it there is a charge
that covers the loss), taken at the block's starting energy. The objective is the site file's
cost weights applied to what the plan would meter, plus a penalty for dipping below a safety
SoC floor that keeps enough energy to ride through an unforecast spike while the reserve
starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.lp import LinearProgram
from wattwheel.domain import flywheel
from wattwheel.domain.site import SiteParams

FloatArray = NDArray[np.float64]
S_PER_H = 3600.0
SHORTFALL_SHARE_OF_CAP = 0.05
#: Cost of changing a domain's shift level, as a share of shifting the same energy.
REVERSAL_SHARE = 0.5


@dataclass(frozen=True)
class PlanInputs:
    """Per-domain inputs; ``demand_kw``/``noncritical_kw`` are (D, K), forecast (block 0 too)."""

    demand_kw: FloatArray
    noncritical_kw: FloatArray
    energy_kwh: FloatArray
    debt_kwh: FloatArray
    reserve_on: NDArray[np.bool_]
    reserve_min_on_left_s: FloatArray
    reserve_allowed: NDArray[np.bool_]
    fixed_shift_out_kw: FloatArray  # (D, L) blocks before the lead time reaches
    fixed_shift_in_kw: FloatArray
    #: The reserve may start only in blocks ``< reserve_blocks`` (the forecast horizon).
    reserve_blocks: int | None = None


@dataclass(frozen=True)
class Plan:
    """The first-block actions (and the shift level for block L), per domain."""

    soc_target: FloatArray
    reserve_arm: NDArray[np.bool_]
    shift_out_kw: FloatArray
    shift_in_kw: FloatArray
    defer_kw: FloatArray
    repay_kw: FloatArray
    expected_cost: float
    #: The reserve is planned now or in the next block: pre-warm it (never a start).
    reserve_prewarm: NDArray[np.bool_] | None = None


def soc_floor(site: SiteParams) -> FloatArray:
    """Safety SoC: energy for the bank's rated power over the reserve start delay plus one
    plan period of surprise, at least 25 %."""
    kes = site.kes
    need_kwh = kes.rated_power_kw * (site.reserve.start_delay_s + site.plan_period_s) / S_PER_H
    cap = np.where(kes.capacity_kwh > 0, kes.capacity_kwh, 1.0)
    return np.clip(need_kwh / cap, 0.25, 0.9)


def solve_plan(site: SiteParams, inputs: PlanInputs, lead_blocks: int) -> Plan | None:
    """Build and solve the MILP. Returns None if HiGHS finds no solution (caller falls back)."""
    builder = _Builder(site, inputs, lead_blocks)
    x = builder.lp.solve(time_limit_s=2.0)
    if x is None:
        return None
    return builder.extract(x)


class _Builder:
    def __init__(
        self,
        site: SiteParams,
        inp: PlanInputs,
        lead_blocks: int,
        block_s: float | None = None,
        relaxed: bool = False,
        exchange: bool = False,
    ) -> None:
        self.site, self.inp = site, inp
        self.n_dom, self.n_blk = inp.demand_kw.shape
        self.block_s = site.plan_period_s if block_s is None else block_s
        self.relaxed = relaxed
        #: With ``exchange``, each block's shift balance (from the lead block on) is
        #: ``Σ out − Σ in = exch_k`` instead of 0: the net power this group of domains sends
        #: to domains outside it (:mod:`wattwheel.control.decomposed`), cost 0 here.
        self.exchange = exchange
        #: Row index of each block's shared-reserve capacity row (``Σ res ≤ capacity``).
        self.reserve_rows: list[int] = []
        self.dt_h = self.block_s / S_PER_H
        self.lead = lead_blocks
        self.lp = LinearProgram()
        self._variables()
        self._rows()

    def _cost(self, name: str) -> float:
        return float(self.site.costs.get(name, 0.0))

    def _variables(self) -> None:
        s, inp, lp, dt_h = self.site, self.inp, self.lp, self.dt_h
        D, K = self.n_dom, self.n_blk
        kes = s.kes
        eta_c, eta_d = kes.charge_efficiency, kes.discharge_efficiency
        tp, loss = self._cost("kes_throughput_kwh"), self._cost("kes_losses_kwh")
        p_kes = np.repeat(kes.rated_power_kw, K)
        cost_dis = dt_h * (tp + loss * (1 / np.repeat(eta_d, K) - 1))
        cost_chg = dt_h * (tp + loss * (1 - np.repeat(eta_c, K)))
        self.dis = lp.add_vars(D * K, 0.0, p_kes, cost_dis)
        self.chg = lp.add_vars(D * K, 0.0, p_kes, cost_chg)
        self.energy = lp.add_vars(D * K, 0.0, np.repeat(kes.capacity_kwh, K))  # end of block
        floor_kwh = np.repeat(soc_floor(s) * kes.capacity_kwh, K)
        # Dipping below the safety floor is priced at a twentieth of capping per kWh and block:
        # worth it to avoid capping, not to save a little standby loss. With perfect foresight
        # (the offline optimum) there are no surprises to keep energy for.
        short_cost = (
            0.0 if self.relaxed else SHORTFALL_SHARE_OF_CAP * self._cost("capped_energy_kwh")
        )
        self.short = lp.add_vars(D * K, 0.0, floor_kwh, short_cost)
        cap_hi = (inp.noncritical_kw * (1 - s.flex.cap_floor_fraction)[:, None]).ravel()
        self.cap = lp.add_vars(D * K, 0.0, cap_hi, dt_h * self._cost("capped_energy_kwh"))
        allowed = np.repeat(inp.reserve_allowed.astype(float), K)
        # The shared reserve is one machine: one on/start per block for the whole site (its
        # running time and starts are paid once), its power shared by the domains it may feed.
        machine = np.full(K, float(inp.reserve_allowed.any()))
        if inp.reserve_blocks is not None:
            # Beyond the forecast horizon the reserve is not planned at all: its start can be
            # decided once the excess is in sight, and there the flywheel's energy is what a
            # plan made now can still change.
            machine = machine * (np.arange(K) < inp.reserve_blocks)
        allowed = allowed * np.tile(machine, D)
        self.res = lp.add_vars(
            D * K, 0.0, s.reserve.capacity_kw * allowed, dt_h * self._cost("reserve_energy_kwh")
        )
        self.on = lp.add_vars(
            K,
            0.0,
            machine,
            dt_h * S_PER_H * self._cost("reserve_seconds"),
            integer=not self.relaxed,
        )
        self.start = lp.add_vars(K, 0.0, machine, self._cost("reserve_activations"))
        shift_hi = np.repeat(s.flex.shift_max_kw, K)
        c_shift = dt_h * self._cost("shifted_energy_kwh")
        self.out = lp.add_vars(D * K, 0.0, shift_hi, c_shift)
        self.inn = lp.add_vars(D * K, 0.0, shift_hi, 0.0)
        defer_hi = np.repeat(s.flex.defer_max_kw, K)
        self.defer = lp.add_vars(D * K, 0.0, defer_hi, dt_h * self._cost("deferred_energy_kwh"))
        self.repay = lp.add_vars(D * K, 0.0, np.repeat(s.primary_kw, K), 0.0)
        self.debt = lp.add_vars(D * K, 0.0, np.inf, 0.0)
        # The planner adds 1 per kW-block so it never plans an overload it could avoid even
        # where the site prices overload at 0; the relaxed (offline) model prices it exactly.
        over_cost = dt_h * self._cost("overload_energy_kwh") + (0.0 if self.relaxed else 1.0)
        self.over = lp.add_vars(D * K, 0.0, np.inf, over_cost)
        # Reserve power that does not arrive because the reserve is still starting.
        self.lost = lp.add_vars(D * K, 0.0, np.inf, 0.0)
        if self.exchange:
            reach = float(s.flex.shift_max_kw.sum())
            movable = (np.arange(K) >= self.lead).astype(float)
            self.exch = lp.add_vars(K, -reach * movable, reach * movable, 0.0)
        # Standby loss, priced as the plant meters it: block k loses (a·E_{k−1} + b)·Δ, so
        # a·Δ goes on the energy at the end of blocks 0..K−2 and the rest is a constant.
        a, b = self._loss_coefs()
        for d in range(D):
            for k in range(K - 1):
                self.lp.cost[self.energy[d * K + k]] += loss * a[d] * dt_h
        self.constant = float(loss * dt_h * np.sum(a * inp.energy_kwh + b * K))

    def _loss_coefs(self) -> tuple[FloatArray, FloatArray]:
        """Standby loss = a·E + b (kW), the plant's model."""
        return flywheel.standby_loss_coefficients(self.site.kes)

    def _rows(self) -> None:
        s, inp, lp = self.site, self.inp, self.lp
        D, K, dt_h = self.n_dom, self.n_blk, self.dt_h
        a, b = self._loss_coefs()
        kes = s.kes
        floor_kwh = soc_floor(s) * kes.capacity_kwh
        min_on_blocks = max(int(math.ceil(s.reserve.min_on_s / self.block_s)), 1)
        big = s.reserve.capacity_kw
        for d in range(D):
            for k in range(K):
                i = d * K + k
                # Balance: demand − out + in − cap − defer + repay − dis + chg − res − over ≤ P.
                lp.add_row(
                    [
                        self.out[i],
                        self.inn[i],
                        self.cap[i],
                        self.defer[i],
                        self.repay[i],
                        self.dis[i],
                        self.chg[i],
                        self.res[i],
                        self.lost[i],
                        self.over[i],
                    ],
                    [-1, 1, -1, -1, 1, -1, 1, -1, 1, -1],
                    hi=float(s.primary_kw[d] - inp.demand_kw[d, k]),
                )
                # Energy: E_k = (1 − a·Δ)E_{k−1} + η_c·chg·Δ − dis·Δ/η_d − b·Δ.
                cols = [self.energy[i], self.chg[i], self.dis[i]]
                coefs = [1.0, -kes.charge_efficiency[d] * dt_h, dt_h / kes.discharge_efficiency[d]]
                rhs = -b[d] * dt_h
                if k == 0:
                    rhs += (1 - a[d] * dt_h) * inp.energy_kwh[d]
                else:
                    cols.append(self.energy[i - 1])
                    coefs.append(-(1 - a[d] * dt_h))
                lp.add_row(cols, coefs, lo=rhs, hi=rhs)
                lp.add_row([self.energy[i], self.short[i]], [1, 1], lo=float(floor_kwh[d]))
                # Reserve: delivers only when on, and nothing until its start delay has passed.
                lp.add_row([self.res[i], self.on[k]], [1, -big], hi=0.0)
                self._start_delay_rows(d, k, big)
                # Shifts: only what leaves the non-critical load; fixed before the lead time.
                lp.add_row(
                    [self.out[i], self.cap[i], self.defer[i]],
                    [1, 1, 1],
                    hi=float(inp.noncritical_kw[d, k]),
                )
                if k < self.lead:
                    lo_o = float(inp.fixed_shift_out_kw[d, k])
                    lo_i = float(inp.fixed_shift_in_kw[d, k])
                    lp.add_row([self.out[i]], [1], lo=lo_o, hi=lo_o)
                    lp.add_row([self.inn[i]], [1], lo=lo_i, hi=lo_i)
                # Debt: D_k = D_{k−1} + (defer − repay)Δ.
                cols = [self.debt[i], self.defer[i], self.repay[i]]
                coefs = [1.0, -dt_h, dt_h]
                rhs = inp.debt_kwh[d] if k == 0 else 0.0
                if k > 0:
                    cols.append(self.debt[i - 1])
                    coefs.append(-1.0)
                lp.add_row(cols, coefs, lo=rhs, hi=rhs)
            # Debt left at the end must be repaid later: price it like deferring it again (the
            # plant does not charge it, so the relaxed whole-trace bound leaves it out).
            if not self.relaxed:
                self.lp.cost[self.debt[d * K + K - 1]] += self._cost("deferred_energy_kwh")
        self._machine_rows(min_on_blocks)
        for k in range(K):
            self.reserve_rows.append(len(lp.row_lo))
            lp.add_row(
                [int(self.res[d * K + k]) for d in range(D)], [1.0] * D, hi=s.reserve.capacity_kw
            )
            if k >= self.lead:
                cols = [int(self.out[d * K + k]) for d in range(D)]
                cols += [int(self.inn[d * K + k]) for d in range(D)]
                coefs = [1.0] * D + [-1.0] * D
                if self.exchange:
                    cols.append(int(self.exch[k]))
                    coefs.append(-1.0)
                lp.add_row(cols, coefs, lo=0.0, hi=0.0)
        self._reversal_rows()
        # Receiving shifted work needs headroom in the destination (its own balance row above).

    def _machine_rows(self, min_on_blocks: int) -> None:
        """The reserve machine's starts and minimum on-time (one machine for the site)."""
        inp, lp, K = self.inp, self.lp, self.n_blk
        running = bool(inp.reserve_on.any())
        min_on_left_s = float(np.max(np.where(inp.reserve_on, inp.reserve_min_on_left_s, 0.0)))
        for k in range(K):
            if k == 0:
                lp.add_row([self.start[0], self.on[0]], [1, -1], lo=-float(running))
            else:
                lp.add_row([self.start[k], self.on[k], self.on[k - 1]], [1, -1, 1], lo=0.0)
            in_sight = inp.reserve_blocks is None or k < inp.reserve_blocks
            for j in range(max(0, k - min_on_blocks + 1), k + 1) if in_sight else ():
                lp.add_row([self.on[k], self.start[j]], [1, -1], lo=0.0)
            if running and k * self.block_s < min_on_left_s:
                lp.add_row([self.on[k]], [1], lo=1.0)

    def _reversal_rows(self) -> None:
        """Changing a domain's net shift level (out − in) from one block to the next moves work
        again (migration back, cache warm-up): each kW of change costs ``REVERSAL_SHARE`` of
        a shifted kW over a block. A shift that flips direction pays it twice; one that holds
        its level pays nothing more."""
        share = REVERSAL_SHARE * self._cost("shifted_energy_kwh") * self.dt_h
        if share <= 0 or self.relaxed:
            return
        D, K, lp = self.n_dom, self.n_blk, self.lp
        first = max(self.lead, 1)
        if first >= K:
            return
        rev = lp.add_vars(D * (K - first), 0.0, np.inf, share)
        for d in range(D):
            for k in range(first, K):
                i, r = d * K + k, int(rev[d * (K - first) + k - first])
                net = [
                    int(self.out[i]),
                    int(self.inn[i]),
                    int(self.out[i - 1]),
                    int(self.inn[i - 1]),
                ]
                lp.add_row([r, *net], [1.0, -1.0, 1.0, 1.0, -1.0], lo=0.0)
                lp.add_row([r, *net], [1.0, 1.0, -1.0, -1.0, 1.0], lo=0.0)

    def _start_delay_rows(self, d: int, k: int, big: float) -> None:
        """lost_k >= res_k while a start is within the delay, and a fraction of it in the block
        where the delay ends: ``lost ≥ res − C·(1 − started)`` (exact for binary starts)."""
        K, lp = self.n_blk, self.lp
        i = d * K + k
        full, frac = divmod(self.site.reserve.start_delay_s / self.block_s, 1.0)
        blocking = [k - j for j in range(int(full)) if k - j >= 0]
        if blocking:
            cols = [int(self.lost[i]), int(self.res[i])] + [int(self.start[c]) for c in blocking]
            lp.add_row(cols, [1.0, -1.0] + [-big] * len(blocking), lo=-big)
        if frac > 1e-9 and k - int(full) >= 0:
            j = k - int(full)
            lp.add_row(
                [int(self.lost[i]), int(self.res[i]), int(self.start[j])],
                [1.0, -frac, -frac * big],
                lo=-frac * big,
            )

    def extract(self, x: FloatArray) -> Plan:
        D, K = self.n_dom, self.n_blk
        cap = np.where(self.site.kes.capacity_kwh > 0, self.site.kes.capacity_kwh, 1.0)
        first = np.arange(D) * K
        lead = min(self.lead, K - 1)
        objective = float(np.dot(np.asarray(self.lp.cost), x)) + self.constant
        # Block 0 is a forecast too: where it expects an excess, the discharge it plans for it
        # is the fast loop's to make on the measured excess, not a target to drain toward
        # beforehand. The target is the energy the plan keeps apart from that discharge.
        kes = self.site.kes
        over0 = self.inp.demand_kw[:, 0] > self.site.primary_kw
        kept = x[self.dis[first]] * self.dt_h / kes.discharge_efficiency
        energy = x[self.energy[first]] + np.where(over0, kept, 0.0)
        return Plan(
            soc_target=np.clip(energy / cap, 0.0, 1.0),
            reserve_arm=np.full(D, x[self.on[0]] > 0.5) & self.inp.reserve_allowed,
            shift_out_kw=x[self.out[first + lead]],
            shift_in_kw=x[self.inn[first + lead]],
            defer_kw=x[self.defer[first]],
            repay_kw=x[self.repay[first]],
            expected_cost=objective,
            reserve_prewarm=np.full(D, bool(np.any(x[self.on[: min(2, K)]] > 0.5)))
            & self.inp.reserve_allowed,
        )
