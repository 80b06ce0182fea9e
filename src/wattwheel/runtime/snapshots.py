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
    """Per domain, the 5 / 50 / 95 % band at each horizon (kW). The same forecast is
    published every tick until the next one: its bands are worked out once."""
    if forecast is None:
        return {}
    key = (id(forecast), domain_ids)
    cached = _BANDS.get(key)
    if cached is not None and cached[0] is forecast:
        return cached[1]
    bands = _forecast_bands(forecast, domain_ids)
    _BANDS.clear()  # one forecast at a time is published
    _BANDS[key] = (forecast, bands)
    return bands


#: the bands of the forecast published last (kept with it: an id alone may be reused)
_BANDS: dict[tuple[int, tuple[str, ...]], tuple[Forecast, dict[str, tuple[ForecastBand, ...]]]] = {}


def _forecast_bands(
    forecast: Forecast, domain_ids: tuple[str, ...]
) -> dict[str, tuple[ForecastBand, ...]]:
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
    domain_of = [inv.domain_ids[d] for d in inv.rack_domain.tolist()]
    power_kw = (rack_power_w / 1000.0).tolist()
    return [
        RackSnapshot(
            rack_id=r,
            domain_id=dom,
            power_kw=kw,
            cap_kw=(rack_budget_w[r] / 1000.0) if r in rack_budget_w else None,
            timestamp_s=now_s,
        )
        for r, dom, kw in zip(inv.rack_ids, domain_of, power_kw, strict=True)
    ]
