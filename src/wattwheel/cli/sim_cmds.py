"""Simulation commands: ``simulate`` (one policy), ``bench`` (all of them), ``demo``."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wattwheel.cli import app
from wattwheel.domain.errors import ConfigError, WattwheelError
from wattwheel.domain.profiles import PROFILES, CostProfile, parse_profiles
from wattwheel.sim.batch_schedule import scenario_schedule
from wattwheel.sim.bench import (
    ALL_POLICIES,
    BASELINE,
    BenchRun,
    ForecasterSpec,
    bench_payload,
    default_workers,
    run_bench,
    run_policy,
    with_schedule,
    write_bench_json,
)
from wattwheel.sim.levers import load_jobs_recipe
from wattwheel.sim.profiles import profiles_payload, run_profiles
from wattwheel.sim.report import write_report
from wattwheel.sim.scenario import Scenario, bundled_site, load_scenario, with_latency

console = Console(stderr=True)
TABLE_METRICS = (
    ("cost_total", "cost"),
    ("reserve_energy_kwh", "reserve kWh"),
    ("reserve_activations", "starts"),
    ("overload_energy_kwh", "overload kWh"),
    ("breaker_trips", "trips"),
    ("capped_energy_kwh", "capped kWh"),
    ("critical_capped_energy_kwh", "crit. capped"),
    ("shifted_energy_kwh", "shifted kWh"),
    ("kes_losses_kwh", "KES loss kWh"),
    ("wall_seconds", "wall s"),
)

SiteOpt = Annotated[Path, typer.Option("--site", help="site file (TOML)", exists=False)]
TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="trace (default: the one the site file names)")
]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]
ScheduleOpt = Annotated[
    Path | None,
    typer.Option(
        "--schedule",
        help="batch schedule CSV (job_id,submit_s,start_s,end_s,rack_id,power_w; see "
        "wattwheel.sim.batch_schedule): predictive+schedule plans on the forecast plus the "
        "known jobs' load, each job from its submission on",
    ),
]
LatencyOpt = Annotated[
    float | None,
    typer.Option(
        "--latency-s",
        help="measurement latency (s) the controller acts with (default: the site file's "
        "measurement_latency_s, 1 s unless it says otherwise)",
        min=0.0,
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="forecast model directory for `predictive` (default: the "
        "shipped LSTM when it fits the trace's step; 'none' for the baseline)",
    ),
]


WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="policy runs at once, each in its own process (default: one per CPU; 1: serial, "
        "in this process); the results are the serial ones",
        min=1,
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn wattwheel's own errors into one clear line and exit code 2."""
    try:
        yield
    except WattwheelError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _progress() -> tuple[Progress, Callable[[str, int], Callable[[int], None]]]:
    bar = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )

    def factory(name: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(name, total=total)
        if not sys.stderr.isatty():
            console.print(f"simulating {name} ({total:,} steps)...")
        return lambda done: bar.update(task, completed=done)

    return bar, factory


def _model_spec(model: Path | None, scenario: Scenario) -> ForecasterSpec | None:
    """The forecaster ``predictive`` uses: a model directory, a baseline name, or (default)
    the shipped model trained at the trace's step; None means the persistence baseline."""
    if model is not None and str(model) == "none":
        return None
    from wattwheel.adapters.model_artifact import (
        BASELINES,
        load_forecaster,
        shipped_model_for_step,
        training_summary,
    )

    if model is not None and str(model) in BASELINES:
        name = str(model)
        if name == "ar":
            raise WattwheelError("--model ar needs fitting: train a model directory instead")
        return ForecasterSpec(
            name, functools.partial(load_forecaster, name), {**BASELINE.trained_on, "model": name}
        )
    if model is None:
        found = shipped_model_for_step(scenario.dt_s)
        if found is None:
            console.print(
                f"no shipped forecast model for this trace's {scenario.dt_s:g} s step: "
                "predictive uses the persistence baseline"
            )
            return None
        model = found
    path = model
    summary = training_summary(path)
    # A partial, not a lambda: parallel bench workers unpickle it to build their own.
    return ForecasterSpec("lstm", functools.partial(load_forecaster, path), summary)


def _table(run: BenchRun) -> Table:
    table = Table(title=f"wattwheel bench — {run.scenario.site.name}")
    table.add_column("policy")
    table.add_column("forecaster")
    for _, label in TABLE_METRICS:
        table.add_column(label, justify="right")
    for name, res in run.results.items():
        m = res.site_metrics
        table.add_row(
            name,
            run.forecaster_names[name],
            *(f"{m[k]:,.1f}" if k != "breaker_trips" else f"{m[k]:.0f}" for k, _ in TABLE_METRICS),
        )
    return table


@app.command()
def simulate(
    site: SiteOpt,
    out: OutOpt,
    trace: TraceOpt = None,
    policy: Annotated[
        str, typer.Option("--policy", help=f"one of {', '.join(ALL_POLICIES)}")
    ] = "predictive",
    model: ModelOpt = None,
    latency_s: LatencyOpt = None,
    schedule: ScheduleOpt = None,
) -> None:
    """Replay a trace through the site and one policy; write metrics.json and report.html.
    With ``--schedule`` the policy's forecast includes the known jobs' load."""
    with _errors():
        scenario = with_latency(load_scenario(site, trace), latency_s)
        spec = _model_spec(model, scenario) or BASELINE
        if schedule is not None:
            spec = with_schedule(spec, scenario_schedule(scenario, schedule))
        fc = spec.build() if policy in ("predictive", "seed") else None
        bar, factory = _progress()
        with bar:
            result = run_policy(scenario, policy, fc, factory(policy, scenario.demand_kw.shape[0]))
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(
            json.dumps(
                {"policy": policy, "site": result.site_metrics, "domains": result.domain_metrics},
                indent=2,
            )
        )
        write_report(
            out / "report.html",
            scenario.site,
            {policy: result},
            f"wattwheel — {scenario.site.name} — {policy}",
            {policy: spec.trained_on} if fc is not None else None,
        )
        console.print(
            f"cost_total {result.site_metrics['cost_total']:,.2f}; "
            f"wrote {out}/metrics.json, report.html"
        )


@app.command()
def bench(
    site: SiteOpt,
    out: OutOpt,
    trace: TraceOpt = None,
    model: ModelOpt = None,
    policies: Annotated[str, typer.Option("--policies", help="comma-separated subset")] = ",".join(
        ALL_POLICIES
    ),
    profile: Annotated[
        str | None,
        typer.Option("--profile", help=f"one cost profile ({', '.join(PROFILES)})"),
    ] = None,
    profiles: Annotated[
        str | None,
        typer.Option("--profiles", help="a sweep: comma-separated cost profiles, or 'all'"),
    ] = None,
    latency_s: LatencyOpt = None,
    schedule: ScheduleOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Run every policy on the same trace; write bench.json and report.html.

    With ``--profile`` or ``--profiles`` every policy is re-run under each named cost profile
    (the policies plan with the profile's weights); ``bench.json`` then has a ``profiles``
    section with each profile's weights, policy table and ordering checks.
    """
    with _errors():
        if profile is not None and profiles is not None:
            raise ConfigError("--profile", profile, "give --profile or --profiles, not both")
        spec = profiles if profiles is not None else profile
        if spec is None:
            _bench(site, trace, out, model, policies.split(","), latency_s, schedule, workers)
        else:
            chosen = parse_profiles(spec)
            _bench_profiles(
                site,
                trace,
                out,
                model,
                policies.split(","),
                chosen,
                latency_s,
                schedule,
                workers,
            )


def _bench_profiles(
    site: Path,
    trace: Path | None,
    out: Path,
    model: Path | None,
    policies: list[str],
    chosen: tuple[CostProfile, ...],
    latency_s: float | None = None,
    schedule: Path | None = None,
    workers: int | None = None,
) -> None:
    scenario = with_latency(load_scenario(site, trace), latency_s)
    forecaster = _model_spec(model, scenario)
    jobs = None if schedule is None else scenario_schedule(scenario, schedule)
    bar, factory = _progress()
    n_workers = workers or default_workers(len(policies) + 1)

    def one(sc: Scenario) -> BenchRun:
        return run_bench(sc, policies, forecaster, factory, jobs, n_workers)

    with bar:
        runs = run_profiles(scenario, chosen, one)
    out.mkdir(parents=True, exist_ok=True)
    first = runs[chosen[0].name]
    payload = bench_payload(first)
    payload["profile"] = chosen[0].name
    payload["profiles"] = profiles_payload(runs)
    (out / "bench.json").write_text(json.dumps(payload, indent=2))
    write_report(
        out / "report.html",
        first.scenario.site,
        first.results,
        f"wattwheel bench — {scenario.site.name} — profile {chosen[0].name}",
        first.forecaster_training,
    )
    wide = Console(width=max(Console().width, 150))
    for name, run in runs.items():
        table = _table(run)
        table.title = f"{table.title} — profile {name}"
        wide.print(table)
        checks = payload["profiles"][name]["checks"]
        console.print(
            "  " + ", ".join(f"{k}: {_check_text(v)}" for k, v in checks.items()),
        )
    console.print(f"wrote {out / 'bench.json'} and {out / 'report.html'}")


def _check_text(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _bench(
    site: Path,
    trace: Path | None,
    out: Path,
    model: Path | None,
    policies: list[str],
    latency_s: float | None = None,
    schedule: Path | None = None,
    workers: int | None = None,
) -> BenchRun:
    scenario = with_latency(load_scenario(site, trace), latency_s)
    spec = _model_spec(model, scenario)
    jobs = None if schedule is None else scenario_schedule(scenario, schedule)
    if spec is not None:
        data = spec.trained_on.get("training_data") or {}
        names = ", ".join(f.get("name", "?") for f in data.get("files", [])) or "no data"
        console.print(f"predictive forecaster: {spec.name}, its model trained on {names}")
    bar, factory = _progress()
    # The job recipe of a synthetic trace (for ``+rampup``), when the site's own trace is used.
    recipe = load_jobs_recipe(site) if trace is None else None
    with bar:
        run = run_bench(
            scenario,
            policies,
            spec,
            factory,
            jobs,
            workers or default_workers(len(policies) + 1),
            recipe=recipe,
        )
    out.mkdir(parents=True, exist_ok=True)
    write_bench_json(out / "bench.json", run)
    write_report(
        out / "report.html",
        scenario.site,
        run.results,
        f"wattwheel bench — {scenario.site.name}",
        run.forecaster_training,
    )
    Console(width=max(Console().width, 150)).print(_table(run))
    _timing_note(run)
    console.print(f"wrote {out / 'bench.json'} and {out / 'report.html'}")
    return run


def _timing_note(run: BenchRun) -> None:
    timing = bench_payload(run)["timing"]
    for name, t in timing.items():
        extra = ""
        if "decide_ms_median" in t:
            extra = (
                f", planning solves: {t['decide_calls_with_forecast']:.0f}, median "
                f"{t['decide_ms_median']:.1f} ms, p99 {t['decide_ms_p99']:.1f} ms"
            )
        console.print(
            f"  {name}: {t['ms_per_step']:.2f} ms per step, "
            f"{t['us_per_step_per_domain']:.0f} µs per step per domain{extra}"
        )
    where = "serially" if run.workers == 1 else f"in {run.workers} processes"
    console.print(f"  all runs {where}: {run.wall_seconds:.1f} s")


@app.command()
def demo(
    out: OutOpt = Path("out/demo"),
    scenario: Annotated[str, typer.Option("--scenario", help="bundled scenario")] = "cella-oversub",
    workers: WorkersOpt = None,
) -> None:
    """Bench every policy on the bundled default scenario and print the table."""
    with _errors():
        path = bundled_site(scenario)
        console.print(f"wattwheel demo: {path.parent.name} ({path})")
        _bench(path, None, out, None, list(ALL_POLICIES), workers=workers)
