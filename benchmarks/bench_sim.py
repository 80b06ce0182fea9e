"""Simulator speed: wall time per simulated step per domain for each policy on the default
scenario (median of several runs), and the planning-call distribution of ``predictive``.

    .venv/bin/python benchmarks/bench_sim.py [--runs 3] [--steps 2016]

Ratios are against ``reactive`` (the fast loop alone) measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics

from wattwheel.sim.bench import baseline_forecaster, run_policy
from wattwheel.sim.scenario import Scenario, bundled_site, load_scenario

POLICIES = ("none", "reactive", "seed", "predictive", "oracle")


def _head(sc: Scenario, steps: int) -> Scenario:
    n = min(steps, sc.demand_kw.shape[0])
    return Scenario(
        sc.config, sc.site, sc.trace, sc.timestamps_s[:n], sc.demand_kw[:n], sc.critical_kw[:n]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2016, help="steps per run (one week)")
    args = parser.parse_args()
    full = load_scenario(bundled_site())
    sc = _head(full, args.steps)
    n_dom = sc.site.n_domains
    per_step: dict[str, float] = {}
    solves: list[float] = []
    for name in POLICIES:
        times = []
        for _ in range(args.runs):
            fc = baseline_forecaster() if name in ("seed", "predictive") else None
            res = run_policy(sc, name, fc)
            times.append(res.site_metrics["wall_seconds"])
            if name == "predictive":
                solves.extend(res.solver_seconds)
        per_step[name] = 1e6 * statistics.median(times) / (sc.demand_kw.shape[0] * n_dom)
    base = per_step["reactive"]
    print(f"{sc.site.name}: {sc.demand_kw.shape[0]} steps x {n_dom} domains, {args.runs} runs")
    for name, us in per_step.items():
        print(f"  {name:<11} {us:8.0f} us/step/domain   x{us / base:5.1f} vs reactive")
    if solves:
        ordered = sorted(solves)
        q = [1e3 * ordered[min(int(p * len(ordered)), len(ordered) - 1)] for p in (0.5, 0.9, 0.99)]
        print(
            f"  predictive planning solves: {len(ordered)}; median {q[0]:.1f} ms, "
            f"p90 {q[1]:.1f} ms, p99 {q[2]:.1f} ms, max {1e3 * ordered[-1]:.1f} ms"
        )


if __name__ == "__main__":
    main()
