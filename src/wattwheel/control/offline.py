"""``optimum``: the whole-trace plan with perfect foresight, and the LP bound it comes from.

The planner's block model is solved once over the entire trace, one block per trace step, with
perfect knowledge of demand and the reserve's on/start decisions relaxed to [0, 1] (an LP:
integrality over thousands of steps is not tractable). The model is the plant's: the same
flywheel energy balance with its standby loss (fixed part plus ω² part, at the step's starting
energy, never zero: an empty bank holds ω_min from the feed), the same cost weights, overload
priced exactly, no terminal debt cost and no safety-floor penalty. Everything the plant adds
only costs more: speed derating, the measurement lag at the start of each step, the reserve's
integral starts and minimum on-time, deadlines on deferred work, breaker trips. So
``lower_bound`` (the LP objective, ``lp_lower_bound`` in ``bench.json``) bounds what any
policy can cost on this plant, up to the one approximation left: the plant's reserve delivers
for the part of its first step after the start delay while the LP's start-delay rows
count that block's reserve power at full price - a few cost units per reserve start, and only
where a start falls in a step.

The ``optimum`` policy replays that schedule through the same fast loop and plant as every
other policy (targets only: SoC, reserve arming, shifts, deferral), so its metrics are
comparable; it is a good causal-free schedule, not the bound itself, and with the measurement
lag it can cost more than ``oracle``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import Decision, Observation
from wattwheel.control.fast_loop import Targets, default_soc_target, safety_loop
from wattwheel.control.planner import PlanInputs, _Builder
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast

FloatArray = NDArray[np.float64]
#: Above this many (domain x step) cells the LP is not attempted.
MAX_CELLS = 120_000


@dataclass(frozen=True)
class Schedule:
    """Per step and domain (T, D): the optimum's targets for the fast loop."""

    soc_target: FloatArray
    reserve_on: NDArray[np.bool_]
    shift_out_kw: FloatArray
    shift_in_kw: FloatArray
    defer_kw: FloatArray
    repay_kw: FloatArray
    lower_bound: float


def solve_offline(
    site: SiteParams, demand_kw: FloatArray, noncritical_kw: FloatArray, dt_s: float
) -> Schedule | None:
    """Solve the whole trace (``demand_kw`` (T, D)). None if too large or not solved."""
    n_steps, n_dom = demand_kw.shape
    if n_steps * n_dom > MAX_CELLS:
        return None
    lead = int(math.ceil(float(site.flex.shift_lead_s.max(initial=0.0)) / dt_s - 1e-9))
    zeros = np.zeros((n_dom, max(lead, 1)))
    inputs = PlanInputs(
        demand_kw=demand_kw.T.copy(),
        noncritical_kw=noncritical_kw.T.copy(),
        energy_kwh=site.kes_initial_soc * site.kes.capacity_kwh,
        debt_kwh=np.zeros(n_dom),
        reserve_on=np.zeros(n_dom, dtype=bool),
        reserve_min_on_left_s=np.zeros(n_dom),
        reserve_allowed=np.ones(n_dom, dtype=bool),
        fixed_shift_out_kw=zeros,
        fixed_shift_in_kw=zeros.copy(),
    )
    builder = _Builder(site, inputs, lead, block_s=dt_s, relaxed=True)
    x = builder.lp.solve(time_limit_s=600.0)
    if x is None:
        return None
    cap = np.where(site.kes.capacity_kwh > 0, site.kes.capacity_kwh, 1.0)

    def grid(cols: NDArray[np.int64]) -> FloatArray:
        out: FloatArray = x[cols].reshape(n_dom, n_steps).T
        return out

    shift_out = np.zeros((n_steps, n_dom))
    shift_in = np.zeros((n_steps, n_dom))
    # A shift commanded at t takes effect at t + lead: command now what the plan has there.
    if n_steps > lead:
        shift_out[: n_steps - lead] = grid(builder.out)[lead:]
        shift_in[: n_steps - lead] = grid(builder.inn)[lead:]
    return Schedule(
        soc_target=np.clip(grid(builder.energy) / cap, 0.0, 1.0),
        # One machine: on for every domain it may feed.
        reserve_on=np.repeat((x[builder.on] > 0.5)[:, None], n_dom, axis=1),
        shift_out_kw=shift_out,
        shift_in_kw=shift_in,
        defer_kw=grid(builder.defer),
        repay_kw=grid(builder.repay),
        lower_bound=float(np.dot(np.asarray(builder.lp.cost), x)) + builder.constant,
    )


class OfflineOptimumPolicy:
    """Replays a precomputed :class:`Schedule` through the fast loop (step index from time)."""

    name = "optimum"
    forecast_period_s = 0.0
    uses_kes = True

    def __init__(self, site: SiteParams, schedule: Schedule, start_s: float, dt_s: float) -> None:
        self.site = site
        self.schedule = schedule
        self.start_s = start_s
        self.dt_s = dt_s

    def initial_state(self, site: SiteParams) -> Any:
        return None

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        t = int(round((obs.now_s - self.start_s) / self.dt_s))
        sch = self.schedule
        if not 0 <= t < sch.soc_target.shape[0]:
            targets = Targets.reactive(self.site.n_domains, default_soc_target(self.site))
        else:
            soc = sch.soc_target[t]
            if self.site.max_grid_ramp_kw_per_s is not None:
                soc = np.full(self.site.n_domains, default_soc_target(self.site))
            targets = Targets(
                soc,
                sch.reserve_on[t],
                sch.shift_out_kw[t],
                sch.shift_in_kw[t],
                sch.defer_kw[t],
                sch.repay_kw[t],
            )
        return safety_loop(self.site, obs, targets), state
