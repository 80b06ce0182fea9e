"""Workload-side levers as bench policy suffixes, and what each lever costs (issue 10).

* ``+floor``: the GPU power floor on ramp-down (:mod:`wattwheel.domain.power_floor`); its cost
  is ``floor_energy_kwh``.
* ``+rampup``: the ramp-up limit at job start, commanded by the HPMC through the scheduler hook
  (``docs/scheduler-hook.md``, request kind ``ramp_limit``) at the site's
  ``max_grid_ramp_kw_per_s`` per rack. The simulator regenerates the scenario's synthetic trace
  from its job recipe (``jobs.toml`` beside the site file: the layout ``wattwheel import
  ai-training --realistic`` was run with) with the job (re)starts ramped
  (:func:`wattwheel.sim.synthetic_jobs.synthesize_jobs_ramped`); its cost is
  ``rampup_delayed_work_kwh`` and ``rampup_delay_s`` (work done later, not lost).
* storage (the flywheel through the converter's own loop, policy ``converter``): its costs are
  ``kes_losses_kwh``, ``kes_cycles_per_day`` and ``kes_power_needed_share_of_rack_peak`` (the
  largest bank power any domain used, over that domain's peak demand of the work itself).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from wattwheel.domain.errors import ConfigError, WattwheelError
from wattwheel.sim.scenario import Scenario, build_scenario
from wattwheel.sim.simulator import SimResult
from wattwheel.sim.synthetic_jobs import JobsLayout, default_jobs, synthesize_jobs_ramped

S_PER_DAY = 86_400.0
JOBS_RECIPE = "jobs.toml"


def load_jobs_recipe(site_path: Path) -> JobsLayout | None:
    """The job recipe beside a site file (``jobs.toml``), or None when there is none."""
    path = site_path.parent / JOBS_RECIPE
    if not path.is_file():
        return None
    raw = tomllib.loads(path.read_text())
    keys = {"racks", "nodes_per_rack", "duration_s", "step_s", "seed"}
    unknown = set(raw) - keys
    if unknown:
        raise ConfigError(str(path), sorted(unknown), f"unknown keys; known: {sorted(keys)}")
    try:
        return JobsLayout(
            racks=int(raw["racks"]),
            nodes_per_rack=int(raw["nodes_per_rack"]),
            duration_s=float(raw["duration_s"]),
            step_s=float(raw["step_s"]),
            seed=int(raw["seed"]),
        )
    except KeyError as exc:
        raise ConfigError(str(path), exc.args[0], "missing key") from None


def with_rampup(scenario: Scenario, recipe: JobsLayout | None) -> tuple[Scenario, dict[str, float]]:
    """The scenario with its job (re)starts ramped at the site's ramp limit per rack, and the
    lever's cost. The recipe must reproduce the scenario's trace exactly without the lever."""
    rate = scenario.site.max_grid_ramp_kw_per_s
    if recipe is None:
        raise WattwheelError(f"+rampup needs the scenario's job recipe ({JOBS_RECIPE})")
    if rate is None:
        raise WattwheelError("+rampup needs the site's max_grid_ramp_kw_per_s")
    jobs = default_jobs(recipe.racks, recipe.nodes_per_rack, recipe.duration_s)
    plain = synthesize_jobs_ramped(recipe, jobs, None, None).trace
    if plain.power_w.shape != scenario.trace.power_w.shape or not np.allclose(
        plain.power_w, scenario.trace.power_w, atol=0.05
    ):
        raise WattwheelError(f"{JOBS_RECIPE} does not reproduce this scenario's trace")
    ramped = synthesize_jobs_ramped(recipe, jobs, None, rate)
    rebuilt = build_scenario(scenario.config, ramped.trace)
    out = dataclasses.replace(rebuilt, site=scenario.site)
    cost = {
        "rampup_delayed_work_kwh": ramped.delayed_work_kwh,
        "rampup_delay_s": ramped.delay_s,
        "rampup_starts": float(ramped.starts),
        "rampup_limit_kw_per_s": float(rate),
    }
    return out, cost


def add_lever_costs(scenario: Scenario, results: Mapping[str, SimResult]) -> None:
    """Per run: storage cycles per day and the bank power it needed, as a share of the rack
    peak of the work (the unchanged scenario's demand)."""
    duration_s = scenario.demand_kw.shape[0] * scenario.dt_s
    peak = np.maximum(scenario.demand_kw.max(axis=0), 1e-9)
    for res in results.values():
        m = res.site_metrics
        m["kes_cycles_per_day"] = m.get("kes_equivalent_cycles", 0.0) * S_PER_DAY / duration_s
        kes = np.abs(res.series["kes_kw"]).max(axis=0, initial=0.0)
        m["kes_power_needed_share_of_rack_peak"] = float((kes / peak).max(initial=0.0))
