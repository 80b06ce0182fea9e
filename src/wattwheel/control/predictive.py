"""``predictive``: the full HPMC — the planning MILP over quantile forecasts steering the fast
safety loop. ``oracle`` is the same controller fed the true future by the simulator.

How the forecast's quantiles are used (issue 9 item 8):

* the plan prices the **median** (``PLAN_QUANTILE``): shifts, deferrals and the bank's energy
  are chosen for the demand it expects, which lets it move work from a domain whose bank is
  running out to one whose bank can still cover it;
* a **reactive floor** on the bank: where the site's ``risk_quantile`` exceeds a feed so soon
  that the headroom it leaves before could no longer refill the bank (its sight is the refill
  time at the forecast's headroom, not at rated power), the bank is refilled now to the
  safety floor plus the energy of the excesses in sight (at most full); elsewhere the plan
  runs it down (coasting, ``_hold_plan``);
* a domain **measured** over its feed in the last period is planned as staying there at
  least, so work is moved on a measured excess even where the forecast does not show it.

Fallbacks: no forecast yet, a forecast older than two plan periods, or a plan HiGHS cannot solve
all leave the fast loop on its reactive targets (recharge to full, no arming, no shifts).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import Decision, Observation, reserve_capacity_kw
from wattwheel.control.decomposed import DecomposedPlanner
from wattwheel.control.fast_loop import Targets, default_soc_target, safety_loop
from wattwheel.control.planner import Plan, PlanInputs, soc_floor, solve_plan
from wattwheel.domain import flywheel
from wattwheel.domain.reserve import is_running
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast

FloatArray = NDArray[np.float64]
S_PER_H = 3600.0
#: The plan prices what it expects: every block's demand at the forecast median. Planning
#: every block of every domain at a high quantile made every domain look over its feed at
#: once, so the plan never moved work from a domain whose bank was empty to one whose bank
#: could still cover it (the month's main saving, see the README).
PLAN_QUANTILE = 0.5


@dataclass
class PredictiveState:
    plan: Plan | None = None
    plan_time_s: float = -math.inf
    #: Shift levels this controller commanded, keyed by the second they take effect.
    scheduled: dict[int, tuple[FloatArray, FloatArray]] = field(default_factory=dict)
    fallbacks: int = 0
    #: Plans not solved because nothing in the horizon needs one (see ``_quiet``).
    skipped: int = 0
    #: Demand the fast loop measured in the previous period (kW, (D,)): the newest
    #: measurement a plan made now may use (the current period's is not known to it).
    last_measured_kw: FloatArray | None = None
    #: Per domain, the SoC the reactive floor holds the bank at from the newest forecast
    #: (0 where the risk quantile shows no excess the bank could not be refilled for later).
    floor_soc: FloatArray | None = None


class PredictivePolicy:
    """Receding-horizon planning over forecasts + the fast loop."""

    uses_kes = True

    def __init__(self, site: SiteParams, name: str = "predictive") -> None:
        self.name = name
        #: The simulator feeds this policy the true future instead of a forecaster's output.
        self.oracle = name == "oracle"
        self.site = site
        self.forecast_period_s = site.plan_period_s
        blocks = max(int(round(site.storage_horizon_s / site.plan_period_s)), 1)
        #: Blocks within the forecast horizon: planned at the risk quantile, reserve allowed.
        self.risk_blocks = max(int(round(site.horizon_s / site.plan_period_s)), 1)
        self.horizons_s = tuple(float(k * site.plan_period_s) for k in range(1, blocks + 1))
        self.lead_blocks = int(
            math.ceil(float(site.flex.shift_lead_s.max(initial=0.0)) / site.plan_period_s - 1e-9)
        )
        #: Sites with more domains than the site file's ``plan_decompose_above_domains`` are
        #: planned shard by shard with price coordination; the others with one MILP.
        self.decomposed: DecomposedPlanner | None = None
        if site.n_domains > site.plan_decompose_above_domains:
            self.decomposed = DecomposedPlanner(
                site, site.plan_shard_domains, site.plan_price_rounds
            )

    def initial_state(self, site: SiteParams) -> PredictiveState:
        return PredictiveState()

    def decide(
        self, obs: Observation, state: PredictiveState, forecast: Forecast | None
    ) -> tuple[Decision, PredictiveState]:
        if forecast is not None and obs.now_s - forecast.issued_at_s > 2 * self.forecast_period_s:
            forecast = None  # stale: issued more than two plan periods ago, not planned on
        if forecast is not None:
            plan = self._plan(obs, state, forecast)
            if plan is None:
                state.fallbacks += 1
            state.plan, state.plan_time_s = plan, obs.now_s
        fresh = (
            state.plan is not None and obs.now_s - state.plan_time_s < 2 * self.forecast_period_s
        )
        targets = (
            self._targets(state.plan, state.floor_soc)
            if fresh and state.plan
            else Targets.reactive(self.site.n_domains, default_soc_target(self.site))
        )
        decision = safety_loop(self.site, obs, targets)
        self._remember_shift(obs, state, decision)
        state.last_measured_kw = np.asarray(obs.demand_kw, dtype=np.float64).copy()
        return decision, state

    def _targets(self, plan: Plan, floor_soc: FloatArray | None) -> Targets:
        soc_target = plan.soc_target
        if floor_soc is not None:
            # The reactive floor: where the risk quantile shows an excess the bank could not
            # be refilled for later, it is refilled now (``_refill_due``); elsewhere the plan
            # may run it down.
            soc_target = np.maximum(soc_target, floor_soc)
        if self.site.max_grid_ramp_kw_per_s is not None:
            # Under a ramp limit the bank's SoC serves the swing buffer, not the plan.
            soc_target = np.full(self.site.n_domains, default_soc_target(self.site))
        return Targets(
            soc_target=soc_target,
            reserve_arm=plan.reserve_arm,
            shift_out_kw=plan.shift_out_kw,
            shift_in_kw=plan.shift_in_kw,
            defer_kw=plan.defer_kw,
            repay_kw=plan.repay_kw,
            reserve_prewarm=plan.reserve_prewarm,
        )

    def _plan(self, obs: Observation, state: PredictiveState, forecast: Forecast) -> Plan | None:
        site = self.site
        fc = forecast.rows_for(site.domain_names)
        if fc is None or len(fc.horizons_s) != len(self.horizons_s):
            return None  # a forecast that does not cover every domain: plan nothing, fall back
        # Every block, the one starting now included, is planned on the forecast: the plan
        # never sees the demand it will meet (the fast loop acts on the measured one).
        demand = fc.quantile(PLAN_QUANTILE) / 1000.0
        risky = fc.quantile(site.risk_quantile) / 1000.0
        if not np.all(np.isfinite(demand)) or (obs.stale is not None and obs.stale.any()):
            return None  # an invalid forecast or a stale reading: no plan, the fast loop holds
        last = state.last_measured_kw
        if last is not None:
            # Shift on measured excess too: a domain measured over its feed in the last period
            # is planned as staying there at least (excesses last several steps on these
            # traces, and a forecast may not see one it has not yet been shown).
            over = (last > site.primary_kw)[:, None]
            demand = np.where(over, np.maximum(demand, last[:, None]), demand)
            risky = np.where(over, np.maximum(risky, last[:, None]), risky)
        due, need_soc = self._refill_due(obs, risky)
        state.floor_soc = np.where(due, need_soc, 0.0)
        noncrit = demand * site.flex.noncritical_fraction[:, None]
        fixed_out, fixed_in = self._fixed_shifts(obs, state)
        if self._quiet(obs, demand, fixed_out, fixed_in):
            state.skipped += 1
            return self._hold_plan(obs)
        allowed = np.ones(site.n_domains, dtype=bool)
        if obs.reserve_override is not None:
            allowed = obs.reserve_override >= 0
        inputs = PlanInputs(
            demand_kw=demand,
            noncritical_kw=noncrit,
            energy_kwh=obs.kes_soc * site.kes.capacity_kwh,
            debt_kwh=obs.debt_kwh,
            reserve_on=is_running(obs.reserve_mode),
            reserve_min_on_left_s=obs.reserve_min_on_left_s,
            reserve_allowed=allowed,
            reserve_blocks=self.risk_blocks,
            fixed_shift_out_kw=fixed_out,
            fixed_shift_in_kw=fixed_in,
        )
        return self.solve(inputs, reserve_capacity_kw(site, obs))

    def solve(self, inputs: PlanInputs, reserve_kw: float | None = None) -> Plan | None:
        """The plan for ``inputs``: decomposed on a site above the threshold, else the
        site-wide MILP; with ``reserve_kw`` below the reserve's capacity (a shard process's
        budget of the shared reserve), planned with that, not all of it."""
        site = self.site
        budget_kw = None
        if reserve_kw is not None and reserve_kw < site.reserve.capacity_kw:
            budget_kw = reserve_kw
        if self.decomposed is not None:
            return self.decomposed.solve(inputs, self.lead_blocks, budget_kw)
        if budget_kw is not None:
            site = dataclasses.replace(
                site, reserve=dataclasses.replace(site.reserve, capacity_kw=budget_kw)
            )
        return solve_plan(site, inputs, self.lead_blocks)

    def _quiet(
        self, obs: Observation, demand_kw: FloatArray, fixed_out: FloatArray, fixed_in: FloatArray
    ) -> bool:
        """Nothing to plan: every domain stays under primary over the whole horizon at the
        planned quantile, no reserve is running, no debt, no shift in flight. The MILP's optimum
        is then known in closed form: no reserve, no shift, and the flywheel **coasting** - no
        charge to make up its standby loss (a charge costs conversion loss and wear and buys
        nothing the plan needs; discharging into the load instead costs more than the standby
        it saves within the horizon) - down to the safety floor, where it is held. Where the
        risk quantile comes near a feed, the reactive floor refills the bank (``_targets``)."""
        return bool(
            np.all(demand_kw < self.site.primary_kw[:, None])
            and not np.any(is_running(obs.reserve_mode))
            and np.all(obs.debt_kwh <= 1e-9)
            and not np.any(fixed_out)
            and not np.any(fixed_in)
        )

    def _hold_plan(self, obs: Observation) -> Plan:
        n = self.site.n_domains
        z = np.zeros(n)
        # Coast: the SoC the bank reaches this period without a charge (its standby loss is
        # not made up), never below the safety floor.
        kes = self.site.kes
        cap = np.where(kes.capacity_kwh > 0, kes.capacity_kwh, 1.0)
        loss_kwh = flywheel.standby_loss_kw(kes, obs.kes_soc) * obs.dt_s / S_PER_H
        target = np.maximum(obs.kes_soc - loss_kwh / cap, soc_floor(self.site))
        return Plan(target, np.zeros(n, dtype=bool), z, z.copy(), z.copy(), z.copy(), 0.0)

    def _refill_due(
        self, obs: Observation, risky_kw: FloatArray
    ) -> tuple[NDArray[np.bool_], FloatArray]:
        """The reactive floor, per domain: whether the bank must be refilled from this period
        on for an excess the risk quantile shows (``risky_kw``, (D, K)), and the SoC it needs.

        That SoC is the safety floor (for what no forecast shows) plus the energy of every
        excess the risk quantile shows in the plan's sight, at most full. Coasting one more
        period is fine only if the headroom the risk quantile leaves in the later blocks before
        the first such excess can still put back what the bank lacks by then: the bank refills
        at its power limit or at that headroom, whichever is less, losing its standby
        meanwhile. So the guard looks as far ahead as refilling takes at the forecast's
        headroom: next to an excess, where the feed leaves a few kW, far longer than at rated
        power (a guard that looked only as far as refilling at rated power takes met excesses
        with a bank it could no longer refill in time)."""
        site, kes = self.site, self.site.kes
        dt_h = site.plan_period_s / S_PER_H
        primary = site.primary_kw[:, None]
        over = risky_kw > primary
        cap = np.where(kes.capacity_kwh > 0, kes.capacity_kwh, 1.0)
        excess_kwh = np.sum(np.maximum(risky_kw - primary, 0.0), axis=1) * dt_h
        need_kwh = soc_floor(site) * kes.capacity_kwh + excess_kwh / kes.discharge_efficiency
        need_soc = np.minimum(need_kwh / cap, default_soc_target(site))
        charge_kw = np.minimum(
            np.maximum(primary - risky_kw, 0.0), flywheel.power_limit_kw(kes, obs.kes_soc)[:, None]
        )
        standby_kw = flywheel.standby_loss_kw(kes, need_soc)[:, None]
        stored_kwh = np.maximum(charge_kw * kes.charge_efficiency[:, None] - standby_kw, 0.0) * dt_h
        stored_kwh[:, 0] = 0.0  # this period coasts: that is the choice being weighed
        # What the blocks after this one and before block k can still put back.
        later_kwh = np.cumsum(stored_kwh, axis=1) - stored_kwh
        coast_kwh = flywheel.standby_loss_kw(kes, obs.kes_soc) * dt_h
        lack_kwh = np.maximum(need_soc - obs.kes_soc, 0.0) * kes.capacity_kwh + coast_kwh
        late = over & (later_kwh < lack_kwh[:, None] - 1e-9)
        due: NDArray[np.bool_] = np.any(late, axis=1) & (need_soc > obs.kes_soc - 1e-9)
        return due, need_soc

    def _fixed_shifts(
        self, obs: Observation, state: PredictiveState
    ) -> tuple[FloatArray, FloatArray]:
        n, lead = self.site.n_domains, self.lead_blocks
        out = np.zeros((n, max(lead, 1)))
        inn = np.zeros((n, max(lead, 1)))
        out[:, 0], inn[:, 0] = obs.shift_out_kw, obs.shift_in_kw
        for k in range(1, lead):
            key = int(round(obs.now_s + k * self.site.plan_period_s))
            if key in state.scheduled:
                out[:, k], inn[:, k] = state.scheduled[key]
        return out, inn

    def _remember_shift(self, obs: Observation, state: PredictiveState, dec: Decision) -> None:
        lead_s = float(self.site.flex.shift_lead_s.max(initial=0.0))
        state.scheduled[int(round(obs.now_s + lead_s))] = (dec.shift_out_kw, dec.shift_in_kw)
        for key in [k for k in state.scheduled if k < obs.now_s]:
            del state.scheduled[key]
