"""The HPMC with the flywheel converter's own loop: it sets parameters, the converter acts.

Under a grid ramp limit the HPMC (1 s measurement latency) cannot chase AI-training swings of
a few seconds; the converter can (:mod:`wattwheel.domain.converter`). So each control period
this policy writes the converter's parameters - what it would send over SunSpec/Modbus
(``docs/sunspec-flywheel.md``) - and leaves the bank's power to it:

* ramp limit: the site's ``max_grid_ramp_kw_per_s`` (none: unlimited);
* ceiling: primary capacity, and never more than the most the HPMC has measured the domain
  draw so far (so smoothing never raises the feed's peak above the work's own);
* floor: 0 kW (the converter holds no minimum draw);
* SoC band: ``SOC_BAND`` around the middle, room to absorb swings both ways.

With ``job_rampup`` (policy ``converter+rampup``) it also asks the workload scheduler to ramp
job (re)starts up at the site's ramp limit (``Decision.job_ramp_kw_per_s``; live, a
``ramp_limit`` request through the scheduler hook; in the simulator the bench regenerates the
synthetic jobs with ramped starts, :mod:`wattwheel.sim.levers`).

Capping, deferral repayment and the reserve are the fast safety loop's (DESIGN §2), decided
on the HPMC's (late) measurement as in ``reactive``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from wattwheel.control.base import Decision, Observation
from wattwheel.control.fast_loop import Targets, default_soc_target, safety_loop
from wattwheel.domain.converter import ConverterSettings, ConverterSpec
from wattwheel.domain.site import SiteParams
from wattwheel.forecast.base import Forecast

#: SoC band the converter keeps the bank in.
SOC_BAND = (0.3, 0.7)


def converter_settings(site: SiteParams, peak_seen_kw: np.ndarray) -> ConverterSettings:
    """The parameters the HPMC writes to each domain's converter."""
    n = site.n_domains
    ramp = site.max_grid_ramp_kw_per_s
    limit = math.inf if ramp is None else ramp
    return ConverterSettings(
        ramp_limit_kw_per_s=np.full(n, limit),
        floor_kw=np.zeros(n),
        ceiling_kw=np.minimum(site.primary_kw, peak_seen_kw),
        soc_low=np.full(n, SOC_BAND[0]),
        soc_high=np.full(n, SOC_BAND[1]),
    )


class ConverterPolicy:
    """``converter``: storage through the converter's own loop, parameters from the HPMC."""

    forecast_period_s = 0.0
    uses_kes = True

    def __init__(
        self,
        site: SiteParams,
        spec: ConverterSpec | None = None,
        name: str = "converter",
        job_rampup: bool = False,
    ) -> None:
        self.site = site
        #: Ask the scheduler for the ramp-up limit at job start too.
        self.job_rampup = job_rampup
        #: The converter the simulator's plant runs (its own loop, not the HPMC's).
        self.converter_spec = spec or ConverterSpec()
        self.name = name

    def initial_state(self, site: SiteParams) -> Any:
        return np.zeros(site.n_domains)

    def decide(
        self, obs: Observation, state: Any, forecast: Forecast | None
    ) -> tuple[Decision, Any]:
        site = self.site
        seen = np.where(np.isfinite(obs.demand_kw), obs.demand_kw, 0.0)
        peak = np.maximum(np.asarray(state, dtype=np.float64), seen)
        targets = Targets.reactive(site.n_domains, default_soc_target(site))
        base = safety_loop(site, obs, targets)
        ramp = site.max_grid_ramp_kw_per_s
        job_ramp = np.full(site.n_domains, ramp) if self.job_rampup and ramp else None
        dec = dataclasses.replace(
            base,
            kes_kw=np.zeros(site.n_domains),
            converter=converter_settings(site, peak),
            job_ramp_kw_per_s=job_ramp,
        )
        return dec, peak
