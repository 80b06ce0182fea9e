"""``seed``: the seed document's HPMC pseudocode taken literally (SEED.md), for comparison.

    reserve_threshold = primary_capacity + kes_capacity
    IF predicted_power > reserve_threshold:
        KES.charge(predicted_power - reserve_threshold); initiate load shifting
    IF actual_power > reserve_threshold: ReservePower.activate()
    loop: IF kes_level < threshold AND predicted_power > primary_capacity: KES.charge(rate)

Where the pseudocode is silent we do the obvious thing, and say so:
* ``kes_capacity`` is read as the bank's rated power (kW), the only reading that makes the sum
  with primary capacity (kW) meaningful; ``threshold`` (a SoC) is taken as 0.5 and ``rate`` as
  the bank's rated power.
* Discharge is not mentioned: when actual demand exceeds primary capacity the bank discharges to
  cover the excess, net of any charge the rules above command (they are applied literally, even
  when they charge during a peak).
* The activated reserve covers the excess beyond primary + KES; it is released when actual
  demand falls back below the threshold (minimum on-time permitting).
* "Initiate dynamic load shifting (details omitted)": we request a shift of the predicted
  excess over the threshold to the other domains, in proportion to their current headroom.
* Recharge below capacity is not mentioned: the bank recharges toward full within the headroom.
* No capping: the seed has none, so an excess nothing covers is an overload.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wattwheel.control.base import Decision, Observation
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast

SOC_THRESHOLD = 0.5


class SeedPolicy:
    name = "seed"
    uses_kes = True

    def __init__(self, site: SiteParams) -> None:
        self.site = site
        self.forecast_period_s = site.plan_period_s
        self.horizons_s = (site.plan_period_s,)

    def initial_state(self, site: SiteParams) -> Any:
        return {"predicted_kw": None}

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        site = self.site
        if forecast is not None:
            fc = forecast.rows_for(site.domain_names)
            # A forecast missing a domain is no forecast: fall back on the actual power.
            state["predicted_kw"] = None if fc is None else fc.point[:, 0] / 1000.0
        actual = obs.demand_kw - obs.shift_out_kw + obs.shift_in_kw + obs.due_repay_kw
        predicted = actual if state["predicted_kw"] is None else state["predicted_kw"]
        predicted = np.where(np.isfinite(predicted), predicted, actual)
        kes_power = site.kes.rated_power_kw
        threshold = site.primary_kw + kes_power
        charge = np.where(predicted > threshold, predicted - threshold, 0.0)
        charge = np.where(
            (obs.kes_soc < SOC_THRESHOLD) & (predicted > site.primary_kw),
            np.maximum(charge, kes_power),
            charge,
        )
        excess = actual - site.primary_kw
        discharge = np.clip(excess, 0.0, obs.kes_max_discharge_kw)
        headroom = np.maximum(-excess, 0.0)
        recharge = np.minimum(
            np.minimum(headroom, obs.kes_max_charge_kw),
            (1 - obs.kes_soc) * site.kes.capacity_kwh * 3600 / obs.dt_s,
        )
        kes_kw = discharge - np.maximum(charge, np.where(excess > 0, 0.0, recharge))
        kes_kw = np.clip(kes_kw, -obs.kes_max_charge_kw, obs.kes_max_discharge_kw)
        reserve_on = actual > threshold
        reserve_kw = np.maximum(actual - site.primary_kw - np.maximum(kes_kw, 0.0), 0.0)
        out_kw, in_kw = _literal_shift(site, predicted, threshold)
        z = np.zeros(site.n_domains)
        reasons = tuple(
            f"predicted {p:.1f} kW vs threshold {th:.1f} kW; actual {a:.1f} kW"
            for p, th, a in zip(predicted, threshold, actual, strict=True)
        )
        dec = Decision(
            kes_kw,
            z,
            reserve_on,
            np.where(reserve_on, reserve_kw, 0.0),
            out_kw,
            in_kw,
            z.copy(),
            z.copy(),
            np.ones(site.n_domains),
            reasons,
        )
        return dec, state


def _literal_shift(
    site: SiteParams, predicted: np.ndarray, threshold: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    want = np.minimum(np.maximum(predicted - threshold, 0.0), site.flex.shift_max_kw)
    headroom = np.maximum(site.primary_kw - predicted, 0.0) * (want <= 0)
    total_room = float(headroom.sum())
    moved = min(float(want.sum()), total_room)
    if moved <= 0:
        z = np.zeros(site.n_domains)
        return z, z.copy()
    out = want * (moved / float(want.sum()))
    inn = headroom * (moved / total_room)
    return out, inn
