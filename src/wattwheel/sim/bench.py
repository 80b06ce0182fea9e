"""Run every policy on one scenario and collect what ``bench.json`` and the report need."""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwheel.control.base import Policy
from wattwheel.control.offline import MAX_CELLS, OfflineOptimumPolicy, solve_offline
from wattwheel.control.registry import make_policy
from wattwheel.domain import grid_signal, power_floor
from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.power_floor import PowerFloor
from wattwheel.forecast.base import Forecaster
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.forecast.rolling_ar import (
    DEFAULT_FIT_ROWS,
    DEFAULT_REFIT_ROWS,
    RollingARForecaster,
)
from wattwheel.forecast.schedule import JobSchedule
from wattwheel.forecast.scheduled import with_known_jobs
from wattwheel.sim import levers
from wattwheel.sim.scenario import Scenario
from wattwheel.sim.simulator import SimResult, simulate
from wattwheel.sim.synthetic_jobs import JobsLayout

ALL_POLICIES = ("none", "reactive", "seed", "predictive", "oracle", "optimum")

ProgressFactory = Callable[[str, int], Callable[[int], None]]

#: What the baseline forecaster was trained on (bench.json ``forecaster_training``).
BASELINE_TRAINING: dict[str, Any] = {
    "model": "persistence",
    "training_data": None,
    "note": "no parameters to train; its intervals are calibrated online from the benched "
    "trace's past only (what a controller has measured so far)",
}


@dataclass(frozen=True)
class ForecasterSpec:
    """How to build a fresh forecaster for one policy run, and which data its model saw.

    ``build`` is called once per run, so no run sees another run's calibration state.
    """

    name: str
    build: Callable[[], Forecaster]
    trained_on: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BenchRun:
    scenario: Scenario
    results: dict[str, SimResult]
    forecaster_names: dict[str, str]
    forecaster_training: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    #: processes the policy runs used, and the whole bench's wall time (s)
    workers: int = 1
    wall_seconds: float = 0.0


def with_schedule(spec: ForecasterSpec, schedule: JobSchedule) -> ForecasterSpec:
    """``spec``'s forecaster with the known jobs' load added, calibrated as a whole
    (``forecast.scheduled.with_known_jobs``)."""
    trained = {
        **spec.trained_on,
        "schedule": f"{schedule.n_jobs} known jobs, each used from its submission time on",
    }
    # A partial, not a lambda: parallel bench workers unpickle it to build their own.
    return ForecasterSpec(
        f"{spec.name}+schedule", functools.partial(_scheduled, spec.build, schedule), trained
    )


def _scheduled(build: Callable[[], Forecaster], schedule: JobSchedule) -> Forecaster:
    return with_known_jobs(build(), schedule)


def baseline_forecaster() -> Forecaster:
    """A fresh persistence forecaster; the simulator calibrates it online from the past."""
    return PersistenceForecaster()


BASELINE = ForecasterSpec("persistence", baseline_forecaster, BASELINE_TRAINING)

#: What the AR forecaster was trained on (bench.json ``forecaster_training``).
AR_TRAINING: dict[str, Any] = {
    "model": "ar",
    # The same shape as a trained model's (no files): ``source`` says what it was fitted on.
    "training_data": {
        "files": [],
        "source": "the benched trace's past only (measured before each decision), refitted online",
    },
    "note": "AR(24) pooled over the domains, no parameters before the run; refitted at the "
    f"simulator's explicit update, every {DEFAULT_REFIT_ROWS} new rows, on the last "
    f"{DEFAULT_FIT_ROWS} measured rows before the decision (persistence until the past is long "
    "enough); its intervals are calibrated online from its own past residuals",
}


def ar_forecaster() -> Forecaster:
    """A fresh AR fitted only on the measured past (:mod:`wattwheel.forecast.rolling_ar`)."""
    return RollingARForecaster()


AR = ForecasterSpec("ar", ar_forecaster, AR_TRAINING)

#: ``predictive+NAME`` (or ``seed+NAME``) runs the controller on this forecaster instead of the
#: trained model: the side-by-side of forecasters under one controller.
FORECASTER_VARIANTS: dict[str, ForecasterSpec] = {"persistence": BASELINE, "ar": AR}


def offline_policy(scenario: Scenario) -> OfflineOptimumPolicy | None:
    """The whole-trace optimum replayed as a policy, or None where it is not tractable."""
    noncritical = scenario.demand_kw - scenario.critical_kw
    schedule = solve_offline(scenario.site, scenario.demand_kw, noncritical, scenario.dt_s)
    if schedule is None:
        return None
    return OfflineOptimumPolicy(
        scenario.site, schedule, float(scenario.timestamps_s[0]), scenario.dt_s
    )


def run_policy(
    scenario: Scenario,
    name: str,
    forecaster: Forecaster | None,
    progress: Callable[[int], None] | None = None,
    recipe: JobsLayout | None = None,
) -> SimResult:
    base, *options = name.split("+")
    floor_kwh = None
    rampup: dict[str, float] = {}
    if "rampup" in options:  # first: it regenerates the work; a floor acts on its draw
        scenario, rampup = levers.with_rampup(scenario, recipe)
    if "floor" in options:
        scenario, floor_kwh = with_power_floor(scenario, PowerFloor())
    policy: Policy
    if base == "optimum":
        offline = offline_policy(scenario)
        if offline is None:
            raise WattwheelError("the offline optimum is not tractable for this trace")
        policy = offline
    else:
        policy = make_policy(base, scenario.site)
    policy.name = name
    if "rampup" in options and hasattr(policy, "job_rampup"):
        policy.job_rampup = True  # it commands the lever the regenerated trace applies
    result = simulate(
        scenario, policy, forecaster=forecaster, oracle=(base == "oracle"), progress=progress
    )
    if isinstance(policy, OfflineOptimumPolicy):
        result.site_metrics["lp_lower_bound"] = policy.schedule.lower_bound
    if floor_kwh is not None:
        result.site_metrics["floor_energy_kwh"] = floor_kwh
    result.site_metrics.update(rampup)
    return result


def with_power_floor(scenario: Scenario, floor: PowerFloor) -> tuple[Scenario, float]:
    """The scenario as the meters see it with the GPUs' power floor on ramp-down (policy
    suffix ``+floor``: a workload-side lever local to each rack, see
    :mod:`wattwheel.domain.power_floor`) and the energy the floor burns (kWh). The critical
    part is the work's, unchanged."""
    floored = power_floor.apply_floor(scenario.demand_kw, scenario.dt_s, floor)
    burned = power_floor.floor_energy_kwh(scenario.demand_kw, floored, scenario.dt_s)
    return dataclasses.replace(scenario, demand_kw=floored), burned


def _run_planned(
    scenario: Scenario,
    name: str,
    spec: ForecasterSpec | None,
    progress: Callable[[int], None] | None,
    recipe: JobsLayout | None = None,
) -> SimResult:
    """One policy run with a forecaster built fresh for it (in this process or a worker's)."""
    forecaster = spec.build() if spec is not None else None
    return run_policy(scenario, name, forecaster, progress, recipe)


def default_workers(runs: int) -> int:
    """Worker processes for ``runs`` independent policy runs: one per CPU this process may use,
    at most one per run."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, runs))


def _expected_length(name: str, spec: ForecasterSpec | None) -> int:
    """Sort key, the longest expected run first (per-step times of the default demo on this
    2-core machine, README "Simulation throughput"): predictive on a trained model (its
    forecaster costs most), the oracle (twice the planning solves), ``seed`` on a trained model,
    predictive on a baseline forecaster, then the rest (the fast loop alone, the offline
    optimum's one LP)."""
    base = name.split("+")[0]
    trained = spec is not None and spec is not BASELINE and spec is not AR
    if base == "predictive":
        return 0 if trained else 3
    if base == "seed":
        return 2 if trained else 3
    return 1 if base == "oracle" else 4


def run_bench(
    scenario: Scenario,
    policies: Sequence[str] = ALL_POLICIES,
    model: ForecasterSpec | None = None,
    progress: ProgressFactory | None = None,
    schedule: JobSchedule | None = None,
    workers: int = 1,
    recipe: JobsLayout | None = None,
) -> BenchRun:
    """Every policy on the same trace, each forecasting run with a forecaster built fresh for
    it (results do not depend on the order of the runs). With a trained model, ``predictive``
    uses it and ``predictive+persistence`` shows the same controller on the baseline;
    ``predictive+ar`` (asked for by name) shows it on an AR fitted online on the trace's past
    only (:data:`FORECASTER_VARIANTS`; each run is listed once). With a
    ``schedule``, ``predictive+schedule`` is the same controller planning on the same
    forecaster plus the known jobs' load.

    ``workers`` > 1 runs the policies in that many worker processes at once (spawned: each
    builds its own forecaster from ``model.build``, which must then be picklable, e.g. a
    module-level function or a :func:`functools.partial` of one). The runs share nothing, so
    the results are those of the serial runs; a run's progress is reported when it ends.
    ``recipe`` is the synthetic trace's job recipe, for ``+rampup`` runs (:mod:`.levers`).
    """
    plan: list[tuple[str, ForecasterSpec | None, str]] = []
    for name in policies:
        base = name.split("+")[0]  # a suffix (``+floor``) keeps the base policy's forecaster
        if base in ("predictive", "seed"):
            variant = [
                FORECASTER_VARIANTS[o] for o in name.split("+")[1:] if o in FORECASTER_VARIANTS
            ]
            chosen = variant[0] if variant else (model or BASELINE)
            plan.append((name, chosen, chosen.name))
            if name == "predictive" and schedule is not None:
                known = with_schedule(chosen, schedule)
                plan.append(("predictive+schedule", known, known.name))
            if name == "predictive" and model is not None:
                plan.append(("predictive+persistence", BASELINE, BASELINE.name))
        elif base == "optimum" and scenario.demand_kw.size > MAX_CELLS:
            continue  # not tractable: skipped, and the report says so by its absence
        else:
            plan.append((name, None, "truth" if base in ("oracle", "optimum") else "-"))
    plan = [p for i, p in enumerate(plan) if p[0] not in {q[0] for q in plan[:i]}]  # once each
    started = time.perf_counter()
    workers = max(1, min(workers, len(plan)))
    results: dict[str, SimResult] = {}
    names: dict[str, str] = {}
    training: dict[str, Mapping[str, Any]] = {}
    steps = scenario.demand_kw.shape[0]
    callbacks = {name: progress(name, steps) if progress else None for name, _, _ in plan}
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            # The longest runs first (a free worker takes the next run submitted): the pool
            # then ends with the short ones spread over the workers, not with one long run.
            futures = {
                name: pool.submit(_run_planned, scenario, name, spec, None, recipe)
                for name, spec, _ in sorted(plan, key=lambda p: _expected_length(p[0], p[1]))
            }
            for name, future in futures.items():
                results[name] = future.result()
                cb = callbacks[name]
                if cb is not None:
                    cb(steps)
    else:
        for name, spec, _ in plan:
            results[name] = _run_planned(scenario, name, spec, callbacks[name], recipe)
    for name, spec, fc_name in plan:
        names[name] = fc_name
        if spec is not None:
            training[name] = dict(spec.trained_on)
    results = {name: results[name] for name, _, _ in plan}
    add_grid_signal_metrics(scenario, results)
    levers.add_lever_costs(scenario, results)
    return BenchRun(scenario, results, names, training, workers, time.perf_counter() - started)


def add_grid_signal_metrics(scenario: Scenario, results: Mapping[str, SimResult]) -> None:
    """Ramp statistics and the 0.1-20 Hz band power of each run's recorded grid signal
    (:mod:`wattwheel.domain.grid_signal`), into its site metrics. The band figure is relative to
    the ``none`` run's and absent without one or where the step is too coarse."""
    dt = scenario.dt_s
    limit = scenario.site.max_grid_ramp_kw_per_s
    bands: dict[str, float | None] = {}
    for name, res in results.items():
        grid = res.series["grid_kw"]
        for key, value in grid_signal.ramp_metrics(grid, dt, limit).items():
            res.site_metrics.setdefault(key, value)  # the plant's own max ramp stands
        bands[name] = grid_signal.band_power(grid.sum(axis=1), dt)
    reference = bands.get("none")
    if reference is None:
        return
    for name, res in results.items():
        power = bands[name]
        if power is not None:
            res.site_metrics["grid_band_power_reduction_db"] = grid_signal.band_power_reduction_db(
                power, reference
            )


def grid_signal_note(scenario: Scenario, policies: Sequence[str]) -> dict[str, Any]:
    """How the grid-signal metrics were computed (``bench.json`` ``grid_signal``)."""
    edges = grid_signal.band_edges_hz(scenario.dt_s)
    if edges is None:
        note = (
            f"no grid_band_power_reduction_db: a {scenario.dt_s:g} s step resolves only up to "
            f"{0.5 / scenario.dt_s:g} Hz (needs a step <= {grid_signal.MAX_BAND_STEP_S} s)"
        )
    elif "none" not in policies:
        note = "no grid_band_power_reduction_db: it is relative to the none policy, not run"
    else:
        note = "site grid signal's Welch band power vs the none policy's, 10 log10(none / policy)"
    return {
        "band_hz": list(edges) if edges else None,
        "ramp_limit_kw_per_s": scenario.site.max_grid_ramp_kw_per_s,
        "ramps": "per feed (domain) between consecutive steps; p99 and share over steps of the "
        "worst feed's ramp",
        "note": note,
    }


def bench_payload(run: BenchRun) -> dict[str, Any]:
    sc = run.scenario
    n_dom = sc.site.n_domains
    timing = {}
    for name, res in run.results.items():
        steps = res.site_metrics["steps"]
        timing[name] = {
            "wall_seconds": res.site_metrics["wall_seconds"],
            "ms_per_step": 1e3 * res.site_metrics["wall_seconds"] / steps,
            "us_per_step_per_domain": 1e6 * res.site_metrics["wall_seconds"] / (steps * n_dom),
            **_solver_stats(res.solver_seconds),
        }
    return {
        "policies": {name: res.site_metrics for name, res in run.results.items()},
        "domains": {name: res.domain_metrics for name, res in run.results.items()},
        "forecasters": run.forecaster_names,
        "grid_signal": grid_signal_note(sc, list(run.results)),
        "forecaster_training": run.forecaster_training,
        "settings": {
            # The age of the measurements every policy acted on (DESIGN §8 "Information").
            "measurement_latency_s": sc.site.measurement_latency_s,
            "flywheel_presets": _presets(sc),
            # Policy runs in parallel processes: each run's wall time is its own process's.
            "bench_workers": run.workers,
            "bench_wall_seconds": round(run.wall_seconds, 3),
        },
        "timing": timing,
        "site": {
            "name": sc.site.name,
            "domains": list(sc.site.domain_names),
            "racks": [list(r) for r in sc.site.domain_racks],
            "primary_kw": sc.site.primary_kw.round(3).tolist(),
            "kes_power_kw": sc.site.kes.rated_power_kw.round(3).tolist(),
            "kes_energy_kwh": sc.site.kes.capacity_kwh.round(3).tolist(),
            "reserve_kw": round(sc.site.reserve.capacity_kw, 3),
            "steps": int(sc.demand_kw.shape[0]),
            "step_s": sc.dt_s,
        },
    }


def _presets(sc: Scenario) -> list[str | None]:
    """The flywheel class each domain's bank was built from (None: no preset named)."""
    cfg = sc.config
    base = cfg.domain_defaults.kes.get("preset")
    return [d.kes.get("preset", base) for d in cfg.domains]


def _solver_stats(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def pct(p: float) -> float:
        return 1e3 * ordered[min(int(p * len(ordered)), len(ordered) - 1)]

    return {
        "decide_calls_with_forecast": float(len(ordered)),
        "decide_ms_median": 1e3 * statistics.median(ordered),
        "decide_ms_p90": pct(0.9),
        "decide_ms_p99": pct(0.99),
        "decide_ms_max": 1e3 * ordered[-1],
    }


def write_bench_json(path: Path, run: BenchRun) -> None:
    path.write_text(json.dumps(bench_payload(run), indent=2, sort_keys=False))
