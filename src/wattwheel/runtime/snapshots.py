"""Build the live read model's rows (:mod:`.state`) from one tick's observation and decision."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.base import Decision, Observation
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast
from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.state import DomainSnapshot, ForecastBand, RackSnapshot, reserve_mode_name

FloatArray = NDArray[np.float64]


def forecast_bands(
    forecast: Forecast | None, domain_ids: tuple[str, ...]
) -> dict[str, tuple[ForecastBand, ...]]:
    """Per domain, the 5 / 50 / 95 % band at each horizon (kW)."""
    if forecast is None:
        return {}
    lo, mid, hi = (forecast.quantile(q) / 1000.0 for q in (0.05, 0.5, 0.95))
    index = {s: i for i, s in enumerate(forecast.series_ids)}
    out: dict[str, tuple[ForecastBand, ...]] = {}
    for d in domain_ids:
        i = index.get(d)
        if i is None:
            continue
        out[d] = tuple(
            ForecastBand(float(h), float(lo[i, j]), float(mid[i, j]), float(hi[i, j]))
            for j, h in enumerate(forecast.horizons_s)
        )
    return out


def domain_snapshots(
    site: SiteParams,
    obs: Observation,
    dec: Decision,
    bands: Mapping[str, tuple[ForecastBand, ...]],
) -> list[DomainSnapshot]:
    stale = obs.stale if obs.stale is not None else np.zeros(site.n_domains, dtype=bool)
    return [
        DomainSnapshot(
            domain_id=d,
            timestamp_s=obs.now_s,
            demand_kw=float(obs.demand_kw[i]),
            primary_kw=float(site.primary_kw[i]),
            kes_soc=float(obs.kes_soc[i]),
            kes_kw=float(dec.kes_kw[i]),
            kes_max_discharge_kw=float(obs.kes_max_discharge_kw[i]),
            soc_target=float(dec.soc_target[i]),
            reserve_mode=reserve_mode_name(int(obs.reserve_mode[i])),
            reserve_kw=float(dec.reserve_kw[i]),
            cap_kw=float(dec.cap_kw[i]),
            forecast=bands.get(d, ()),
            stale=bool(stale[i]),
            breaker_heat=float(obs.breaker_heat[i]),
        )
        for i, d in enumerate(site.domain_names)
    ]


def rack_snapshots(
    inv: Inventory, rack_power_w: FloatArray, rack_budget_w: Mapping[str, float], now_s: float
) -> list[RackSnapshot]:
    return [
        RackSnapshot(
            rack_id=r,
            domain_id=_domain_of(inv, i),
            power_kw=float(rack_power_w[i]) / 1000.0,
            cap_kw=(rack_budget_w[r] / 1000.0) if r in rack_budget_w else None,
            timestamp_s=now_s,
        )
        for i, r in enumerate(inv.rack_ids)
    ]


def _domain_of(inv: Inventory, rack_index: int) -> str:
    return inv.domain_ids[int(inv.rack_domain[rack_index])]
