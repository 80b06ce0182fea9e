"""The baseline policies: ``none`` (reserve covers every excess) and ``reactive`` (fast loop)."""

from __future__ import annotations

from typing import Any

import numpy as np

from wattwheel.control.base import Decision, Observation, reserve_capacity_kw
from wattwheel.control.fast_loop import Targets, default_soc_target, safety_loop
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast


class NonePolicy:
    """No flywheel, no capping, no shifting: the reserve covers every excess (baseline cost).

    It starts the reserve when demand exceeds primary and keeps it on while it does; during the
    start delay, and beyond the shared reserve's capacity, the excess is an overload."""

    name = "none"
    forecast_period_s = 0.0
    uses_kes = False

    def __init__(self, site: SiteParams) -> None:
        self.site = site

    def initial_state(self, site: SiteParams) -> Any:
        return None

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        excess = np.maximum(
            obs.demand_kw + obs.shift_in_kw + obs.due_repay_kw - self.site.primary_kw, 0.0
        )
        dec = Decision.idle(self.site.n_domains)
        on = excess > 0
        want = excess.copy()
        total = float(want.sum())
        cap = reserve_capacity_kw(self.site, obs)
        if total > cap:
            want *= cap / total
        reasons = tuple(
            f"excess {e:.1f} kW -> reserve" if e > 0 else "within primary" for e in excess
        )
        return (
            Decision(
                dec.kes_kw,
                dec.cap_kw,
                on,
                want,
                dec.shift_out_kw,
                dec.shift_in_kw,
                dec.defer_kw,
                dec.repay_kw,
                np.zeros(self.site.n_domains),
                reasons,
            ),
            None,
        )


class ReactivePolicy:
    """The fast safety loop alone: flywheel, then capping, then the reserve; recharge to full."""

    name = "reactive"
    forecast_period_s = 0.0
    uses_kes = True

    def __init__(self, site: SiteParams) -> None:
        self.site = site

    def initial_state(self, site: SiteParams) -> Any:
        return None

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        targets = Targets.reactive(self.site.n_domains, default_soc_target(self.site))
        return safety_loop(self.site, obs, targets), None
