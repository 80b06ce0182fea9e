"""Bench every policy under several cost profiles (``wattwheel bench --profiles ...``).

Each profile changes the site's cost weights, and the policies plan with those weights, so a
profile is a whole new bench run (not a re-pricing of one run's metrics). ``lead_checks``
states, per profile, whether the orderings the project promises hold: predictive <= reactive
< none and predictive <= seed in ``cost_total``, with zero breaker trips and zero critical
capping for predictive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from wattwheel.domain.profiles import CostProfile
from wattwheel.sim.bench import BenchRun, bench_payload
from wattwheel.sim.scenario import Scenario

RunBench = Callable[[Scenario], BenchRun]


def with_profile(scenario: Scenario, prof: CostProfile) -> Scenario:
    """The same scenario with the site's cost weights under ``prof``."""
    site = dataclasses.replace(scenario.site, costs=prof.apply(scenario.site.costs))
    return dataclasses.replace(scenario, site=site)


def run_profiles(
    scenario: Scenario, profiles: Sequence[CostProfile], run_bench: RunBench
) -> dict[str, BenchRun]:
    """One bench run per profile, in order."""
    return {p.name: run_bench(with_profile(scenario, p)) for p in profiles}


def lead_checks(costs: dict[str, dict[str, float]]) -> dict[str, bool | None]:
    """The promised orderings on one profile's site metrics (None where a policy is absent)."""

    def cost(name: str) -> float | None:
        m = costs.get(name)
        return None if m is None else m["cost_total"]

    pred, react, none, seed = (cost(n) for n in ("predictive", "reactive", "none", "seed"))
    out: dict[str, bool | None] = {
        "predictive_le_reactive": None if pred is None or react is None else pred <= react,
        "reactive_lt_none": None if react is None or none is None else react < none,
        "predictive_le_seed": None if pred is None or seed is None else pred <= seed,
    }
    if "predictive" in costs:
        m = costs["predictive"]
        out["predictive_safe"] = m["breaker_trips"] == 0 and m["critical_capped_energy_kwh"] == 0
    return out


def oracle_gain_captured(
    costs: dict[str, dict[str, float]], policy: str = "predictive"
) -> float | None:
    """Share of the oracle's saving over reactive that ``policy`` achieves (1 = all of it)."""
    try:
        pred, react, oracle = (costs[n]["cost_total"] for n in (policy, "reactive", "oracle"))
    except KeyError:
        return None
    gain = react - oracle
    if gain <= 0:
        return None
    return (react - pred) / gain


def profiles_payload(runs: dict[str, BenchRun]) -> dict[str, Any]:
    """``bench.json``'s ``profiles`` section: per profile, weights, policy table and checks."""
    out: dict[str, Any] = {}
    for name, run in runs.items():
        body = bench_payload(run)
        checks: dict[str, Any] = dict(lead_checks(body["policies"]))
        checks["oracle_gain_captured"] = oracle_gain_captured(body["policies"])
        # The side-by-side of forecasters under one controller: each predictive variant's share.
        checks["oracle_gain_captured_by_policy"] = {
            p: oracle_gain_captured(body["policies"], p)
            for p in body["policies"]
            if p.split("+")[0] == "predictive"
        }
        out[name] = {
            "costs": dict(run.scenario.site.costs),
            "policies": body["policies"],
            "forecasters": body["forecasters"],
            "forecaster_training": body["forecaster_training"],
            "checks": checks,
        }
    return out
