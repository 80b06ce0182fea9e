"""Capacity search speed: the same ``wattwheel capacity`` job serially in this process and on a
local Ray instance with 2 workers, in one run; prints one JSON line.

    .venv/bin/python benchmarks/bench_capacity.py [--days 2] [--runs 1] \\
        [--policies none,reactive,predictive] [--kes-fractions 0,0.05,0.1]

``ray_s`` includes starting the local Ray instance and putting the inputs in its object store
(``ray_startup_s`` of it), as a user would pay it; ``speedup = serial_s / ray_s`` (median of
``--runs``). ``equal`` says whether both found the same answers and the same metrics for every
candidate. No cache is used: every candidate is simulated in both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from wattwheel.cli.capacity_cmds import load_window, parse_fractions, parse_policies
from wattwheel.sim.capacity import (
    Cache,
    Candidate,
    CapacityInputs,
    CapacitySettings,
    Executor,
    PointKey,
    PointResult,
    SerialExecutor,
    make_inputs,
    parse_limits,
    run_capacity,
)
from wattwheel.sim.capacity_ray import RayExecutor
from wattwheel.sim.growth import baseline_servers
from wattwheel.sim.scenario import bundled_site


class _Recording:
    """Wraps an executor and keeps every candidate's metrics, for the equality check."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.seen: dict[Candidate, dict[str, float]] = {}

    def submit(self, cand: Candidate) -> None:
        self.inner.submit(cand)

    def wait(self) -> tuple[Candidate, dict[str, float]]:
        cand, metrics = self.inner.wait()
        self.seen[cand] = metrics
        return cand, metrics

    def close(self) -> None:
        self.inner.close()


def _run(
    inputs: CapacityInputs, settings: CapacitySettings, ray: bool, workers: int
) -> tuple[float, float, dict[PointKey, PointResult], dict[Candidate, dict[str, float]]]:
    started = time.perf_counter()
    inner: Executor = RayExecutor(inputs, num_cpus=workers) if ray else SerialExecutor(inputs)
    startup = time.perf_counter() - started
    rec = _Recording(inner)
    results = run_capacity(inputs, settings, rec, Cache(None, "bench"))
    return time.perf_counter() - started, startup, results, rec.seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policies", default="none,reactive,predictive")
    parser.add_argument("--kes-fractions", default="0,0.05,0.1")
    args = parser.parse_args()
    scenario, _ = load_window(bundled_site(), None, 0.0, args.days)
    fractions = parse_fractions(args.kes_fractions)
    inputs = make_inputs(scenario, fractions, None, scenario.site.servers_per_rack, "traces")
    base = baseline_servers(scenario, scenario.site.servers_per_rack)
    settings = CapacitySettings(
        policies=parse_policies(args.policies),
        kes_fractions=fractions,
        limits=parse_limits("noncritical_capped_pct<=1,reserve_hours_per_year<=50"),
        servers_per_rack=scenario.site.servers_per_rack,
        growth="traces",
        baseline_servers=base,
        step=max(1, round(base * 0.05)),
        upper=int(base * 1.5),
        resolution=max(1, round(base * 0.005)),
    )
    serial_s, ray_s, startup_s = [], [], []
    equal = True
    candidates = 0
    for _ in range(args.runs):
        s_wall, _, s_res, s_seen = _run(inputs, settings, False, args.workers)
        r_wall, r_start, r_res, r_seen = _run(inputs, settings, True, args.workers)
        serial_s.append(s_wall)
        ray_s.append(r_wall)
        startup_s.append(r_start)
        equal = equal and s_res == r_res and s_seen == r_seen
        candidates = len(s_seen)
    serial, ray = statistics.median(serial_s), statistics.median(ray_s)
    print(
        json.dumps(
            {
                "bench": "capacity",
                "days": args.days,
                "policies": list(settings.policies),
                "kes_fractions": list(fractions),
                "candidates_simulated": candidates,
                "runs": args.runs,
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "serial_s": round(serial, 2),
                "ray_s": round(ray, 2),
                "ray_startup_s": round(statistics.median(startup_s), 2),
                "speedup": round(serial / ray, 3),
                "equal": equal,
            }
        )
    )


if __name__ == "__main__":
    main()
