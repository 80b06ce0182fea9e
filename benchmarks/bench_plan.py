"""Plan wall time and cost of the decomposed planner against the site-wide MILP (issue 11).

Synthetic sites of N domains from the bundled default scenario (``cella-oversub``, 3 domains):
domain ``i`` is a copy of base domain ``i % 3`` (its primary feed, flywheel, flexibility)
replaying the base domain's demand shifted by ``(i // 3) · --shift-steps`` trace steps (1 h by
default), so the copies peak at different times. The shared reserve keeps the scenario's
oversubscription: its capacity is scaled by N / 3 (one reserve machine, sized for the site).

Each plan call is made at a time where a base domain is over primary within the forecast
horizon (``--calls`` of them, evenly spread over the trace), on the *true* demand of the next
blocks as the forecast (a solver benchmark: what is timed and compared is the MILP, not a
forecaster), flywheels at half charge, reserve off, no debt, no shift in flight.

- decomposed (:class:`wattwheel.control.decomposed.DecomposedPlanner`, built once per size:
  the shards' parameters are cut once per site): shards of ``--shard-size`` contiguous domains,
  one LP per shard for its export values (the first price), at most ``--rounds`` price rounds
  and two repair solves (two candidate exchange schedules). ``median_ms``/``p99_ms`` is the
  plan's wall time with one process per shard (as ``serve --only-shard`` runs them): the
  coordinator's own time (price updates, balancing, budgets, merge) plus, for every solve
  round, the slowest shard's time in it (slicing its inputs and building its model in the
  first round, updating its costs/bounds, solving, reading its solution). ``serial_*`` is every
  shard solved one after another in one process (the call's whole wall time);
  ``shard_solve_*`` the distribution of single shards' solve rounds (what one shard process
  waits for, besides the coordinator).
- monolithic (:func:`wattwheel.control.planner.solve_plan`, HiGHS 2 s limit) up to
  ``--monolithic-max`` domains; ``cost_gap_pct`` is (Σ decomposed − Σ monolithic) / Σ
  monolithic of the plans' objectives over the calls where both finished: the decomposed one
  found a plan and the monolithic one did within HiGHS's 2 s limit (a call whose wall time
  reaches the limit counts as not finished; its build time is in that wall time, so this may
  drop a call that finished just under it). The decomposed objective is the site-wide one
  evaluated at the merged plan (see the module's docstring). ``--compare`` sizes (6 and 12
  domains) are run for that comparison too (``cost_sites``), since the site-wide MILP does
  not finish at 48 domains on a loaded machine; ``cost_gap_vs_monolithic_pct`` is the largest
  gap over every size compared.

    python benchmarks/bench_plan.py --domains 3,48,480 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wattwheel.control.decomposed import DecomposedPlanner, contiguous_shards, cut_domains
from wattwheel.control.planner import Plan, PlanInputs, solve_plan
from wattwheel.domain.site import SiteParams
from wattwheel.sim.scenario import bundled_site, load_scenario

FloatArray = NDArray[np.float64]
HIGHS_LIMIT_S = 2.0


def synthetic_site(
    base: SiteParams, demand_kw: FloatArray, n: int, shift_steps: int
) -> tuple[SiteParams, FloatArray]:
    """``n`` domains replicated from ``base`` (see the module docstring) and their (T, n)
    demand."""
    nb = base.n_domains
    idx = np.arange(n, dtype=np.int64) % nb
    site: SiteParams = cut_domains(base, idx, nb)
    copies = np.arange(n) // nb
    site = dataclasses.replace(
        site,
        domain_names=tuple(f"{base.domain_names[b]}-{c}" for b, c in zip(idx, copies, strict=True)),
        domain_racks=tuple(
            tuple(f"{r}-{c}" for r in base.domain_racks[b])
            for b, c in zip(idx, copies, strict=True)
        ),
        reserve=dataclasses.replace(base.reserve, capacity_kw=base.reserve.capacity_kw * n / nb),
    )
    demand = np.column_stack(
        [np.roll(demand_kw[:, b], -int(c) * shift_steps) for b, c in zip(idx, copies, strict=True)]
    )
    return site, demand


def plan_times(
    base: SiteParams, demand_kw: FloatArray, blocks: int, risk: int, calls: int
) -> list[int]:
    """``calls`` trace rows where a base domain is over primary within ``risk`` blocks."""
    t_max = demand_kw.shape[0] - blocks
    over = np.array(
        [np.any(demand_kw[t : t + risk] > base.primary_kw) for t in range(t_max)], dtype=bool
    )
    busy = np.flatnonzero(over)
    pick = np.linspace(0, busy.size - 1, calls).round().astype(int)
    return [int(busy[i]) for i in pick]


def inputs_at(
    site: SiteParams, demand_kw: FloatArray, t: int, blocks: int, risk: int, lead: int
) -> PlanInputs:
    d = demand_kw[t : t + blocks].T.copy()
    n = site.n_domains
    z = np.zeros(n)
    return PlanInputs(
        demand_kw=d,
        noncritical_kw=d * site.flex.noncritical_fraction[:, None],
        energy_kwh=0.5 * site.kes.capacity_kwh,
        debt_kwh=z,
        reserve_on=np.zeros(n, dtype=bool),
        reserve_min_on_left_s=z.copy(),
        reserve_allowed=np.ones(n, dtype=bool),
        fixed_shift_out_kw=np.zeros((n, max(lead, 1))),
        fixed_shift_in_kw=np.zeros((n, max(lead, 1))),
        reserve_blocks=risk,
    )


def decomposed_call(
    planner: DecomposedPlanner, inputs: PlanInputs, lead: int, shard_ms: list[float]
) -> tuple[Plan | None, float, float, float, int]:
    """(plan, wall ms with one process per shard, wall ms serial, coordination ms, solve
    rounds); each shard's solve time (per round) is appended to ``shard_ms``."""
    t0 = time.perf_counter()
    plan, info = planner.solve_with_info(inputs, lead, timer=time.perf_counter)
    serial_ms = (time.perf_counter() - t0) * 1e3
    if plan is None:
        return None, math.nan, math.nan, math.nan, len(info.solve_s)
    coord_ms = info.coordination_s * 1e3
    for times in info.solve_s:
        shard_ms.extend(t * 1e3 for t in times)
    slowest_ms = sum(max(times) for times in info.solve_s if times) * 1e3
    return plan, coord_ms + slowest_ms, serial_ms, coord_ms, len(info.solve_s)


def pct(values: list[float], q: float) -> float:
    v = [x for x in values if math.isfinite(x)]
    return round(float(np.percentile(v, q)), 1) if v else math.nan


def run_size(
    args: argparse.Namespace, base: SiteParams, demand_kw: FloatArray, n: int
) -> dict[str, Any]:
    blocks = max(int(round(base.storage_horizon_s / base.plan_period_s)), 1)
    risk = max(int(round(base.horizon_s / base.plan_period_s)), 1)
    lead = int(
        math.ceil(float(base.flex.shift_lead_s.max(initial=0.0)) / base.plan_period_s - 1e-9)
    )
    site, demand = synthetic_site(base, demand_kw, n, args.shift_steps)
    times = plan_times(base, demand_kw, blocks, risk, args.calls)
    planner = DecomposedPlanner(site, args.shard_size, args.rounds, args.balance_tol)
    par_ms, ser_ms, mono_ms, coord_ms, shard_ms = [], [], [], [], []
    solve_rounds: list[int] = []
    dec_cost, mono_cost = 0.0, 0.0
    both = dec_fail = mono_fail = mono_limited = 0
    for t in times:
        inputs = inputs_at(site, demand, t, blocks, risk, lead)
        dec, wall_par, wall_ser, coord, n_rounds = decomposed_call(planner, inputs, lead, shard_ms)
        solve_rounds.append(n_rounds)
        coord_ms.append(coord)
        par_ms.append(wall_par)
        ser_ms.append(wall_ser)
        dec_fail += dec is None
        if n > args.monolithic_max:
            continue
        t0 = time.perf_counter()
        mono = solve_plan(site, inputs, lead)
        mono_ms.append((time.perf_counter() - t0) * 1e3)
        mono_fail += mono is None
        limited = mono_ms[-1] >= HIGHS_LIMIT_S * 1e3
        mono_limited += limited
        if dec is not None and mono is not None and not limited:
            both += 1
            dec_cost += dec.expected_cost
            mono_cost += mono.expected_cost
    out: dict[str, Any] = {
        "median_ms": pct(par_ms, 50),
        "p99_ms": pct(par_ms, 99),
        "serial_median_ms": pct(ser_ms, 50),
        "serial_p99_ms": pct(ser_ms, 99),
        "coordination_median_ms": pct(coord_ms, 50),
        "shard_solve_median_ms": pct(shard_ms, 50),
        "shard_solve_p99_ms": pct(shard_ms, 99),
        "shards": len(contiguous_shards(n, args.shard_size)),
        "solve_rounds_median": float(np.median(solve_rounds)),
        "solve_rounds_max": max(solve_rounds),
        "calls": len(times),
        "decomposed_failed": dec_fail,
    }
    if mono_ms:
        out.update(
            monolithic_median_ms=pct(mono_ms, 50),
            monolithic_p99_ms=pct(mono_ms, 99),
            monolithic_failed=mono_fail,
            monolithic_at_time_limit=mono_limited,
            compared_calls=both,
            cost_decomposed=round(dec_cost, 3),
            cost_monolithic=round(mono_cost, 3),
            cost_gap_pct=round(100.0 * (dec_cost - mono_cost) / abs(mono_cost), 3)
            if both and mono_cost
            else None,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", default="3,48,480", help="comma-separated site sizes")
    ap.add_argument("--calls", type=int, default=8, help="plan calls per size")
    ap.add_argument("--shard-size", type=int, default=3, help="domains per shard")
    ap.add_argument(
        "--rounds", type=int, default=4, help="price rounds at most (+ the value LP and 2 repairs)"
    )
    ap.add_argument(
        "--balance-tol",
        type=float,
        default=0.02,
        help="export/import imbalance (share of the traded power) that ends the rounds early",
    )
    ap.add_argument("--shift-steps", type=int, default=12, help="trace steps between copies")
    ap.add_argument("--monolithic-max", type=int, default=48, help="largest site for the MILP")
    ap.add_argument(
        "--compare", default="6,12", help="extra sizes run for the cost comparison only"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()
    scenario = load_scenario(bundled_site())
    sizes = [int(s) for s in args.domains.split(",")]
    load_before = os.getloadavg()
    result: dict[str, Any] = {"domains": {}}
    for n in sizes:
        result["domains"][str(n)] = run_size(args, scenario.site, scenario.demand_kw, n)
        if not args.json:
            print(n, result["domains"][str(n)], flush=True)
    extra = [int(s) for s in args.compare.split(",") if s]
    result["cost_sites"] = {
        str(n): run_size(args, scenario.site, scenario.demand_kw, n) for n in extra
    }
    if not args.json:
        print(result["cost_sites"], flush=True)
    compared = [*result["domains"].values(), *result["cost_sites"].values()]
    gaps = [v["cost_gap_pct"] for v in compared if v.get("cost_gap_pct") is not None]
    result["cost_gap_vs_monolithic_pct"] = max(gaps) if gaps else None
    big = [str(n) for n in sorted(sizes) if n >= 48]
    if len(big) >= 2:
        ratio = result["domains"][big[-1]]["p99_ms"] / result["domains"][big[0]]["p99_ms"]
        result[f"p99_ratio_{big[-1]}_vs_{big[0]}"] = round(ratio, 2)
        result["p99_flat_within_2x"] = bool(ratio <= 2.0)
    result["cost_within_2pct"] = bool(gaps) and max(gaps) <= 2.0
    result["shard_size"] = args.shard_size
    result["rounds"] = args.rounds
    result["timing"] = (
        "one process per shard: coordination + each solve round's slowest shard; "
        "serial_*: all shards in one process"
    )
    result["load_avg"] = [round(x, 1) for x in (*load_before, *os.getloadavg())]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
