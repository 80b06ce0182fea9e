"""``wattwheel capacity``: how many servers the site can host, per policy and flywheel size,
within operating limits (each candidate a whole simulation; serial or on Ray)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import wattwheel
from wattwheel.cli import app
from wattwheel.cli.sim_cmds import ModelOpt, OutOpt, SiteOpt, TraceOpt, _errors, console
from wattwheel.domain.errors import ConfigError
from wattwheel.forecast.base import Forecaster
from wattwheel.sim.bench import BASELINE, ForecasterSpec
from wattwheel.sim.capacity import (
    CAPACITY_POLICIES,
    BracketSearch,
    Cache,
    CapacityInputs,
    CapacitySettings,
    Executor,
    PointKey,
    PointResult,
    SerialExecutor,
    capacity_payload,
    inputs_digest,
    make_inputs,
    parse_limits,
    run_capacity,
)
from wattwheel.sim.capacity_report import write_capacity_report
from wattwheel.sim.growth import GROWTH_METHODS, GrowthMethod, baseline_servers
from wattwheel.sim.scenario import (
    Scenario,
    build_scenario,
    default_trace_path,
    load_site_config,
)
from wattwheel.sim.trace_io import read_trace

DEFAULT_LIMITS = "noncritical_capped_pct<=1,reserve_hours_per_year<=50"
DAY_S = 86400.0


def load_window(
    site: Path, trace: Path | None, start_day: float, days: float | None
) -> tuple[Scenario, Path]:
    """The scenario on ``days`` days of the trace from ``start_day`` (the whole trace by
    default); the site's relative capacities resolve on that window."""
    config = load_site_config(site)
    path = trace or default_trace_path(site, config)
    full = read_trace(path)
    steps_per_day = DAY_S / full.step_s
    start = int(round(start_day * steps_per_day))
    stop = full.n_steps if days is None else start + int(round(days * steps_per_day))
    if start < 0 or start >= full.n_steps - 1 or stop > full.n_steps or stop - start < 2:
        span = full.n_steps / steps_per_day
        raise ConfigError(
            "--start-day/--days", (start_day, days), f"outside the trace ({span:.2f} days long)"
        )
    return build_scenario(config, full.window(start, stop)), path


def parse_fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError("--kes-fractions", text, "expected numbers like 0,0.05,0.1") from None
    if not values or any(not math.isfinite(v) or v < 0 or v > 1 for v in values):
        raise ConfigError("--kes-fractions", text, "each fraction must be in [0, 1]")
    return tuple(sorted(set(values)))


def parse_policies(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in CAPACITY_POLICIES]
    if bad or not names:
        raise ConfigError("--policies", text, f"choose from {', '.join(CAPACITY_POLICIES)}")
    return names


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_id(model: Path | None, forecaster: Forecaster | None, scenario: Scenario) -> str:
    if forecaster is None:
        return "persistence (calibrated online from each candidate's past)"
    from wattwheel.adapters.model_artifact import shipped_model_for_step

    folder = model or shipped_model_for_step(scenario.dt_s)
    digest = hashlib.sha256()
    if folder is not None:
        for f in sorted(Path(folder).glob("*")):
            if f.is_file():
                digest.update(f.name.encode() + _file_sha256(f).encode())
    return f"{getattr(forecaster, 'name', type(forecaster).__name__)} {digest.hexdigest()[:16]}"


def _trained_on(spec: ForecasterSpec | None, needs_model: bool) -> dict[str, Any] | None:
    if not needs_model:
        return None
    return dict((spec or BASELINE).trained_on)


class _Bars:
    """One progress row per point: candidates simulated so far and the current bracket."""

    def __init__(self, keys: list[PointKey]) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = Progress(
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not self.tty,
        )
        self.tasks = {k: self.bar.add_task(self._label(k, None), total=None) for k in keys}

    @staticmethod
    def _label(key: PointKey, search: BracketSearch | None) -> str:
        head = f"{key.policy} kes={key.kes_fraction:g}"
        if search is None:
            return head
        lo = "?" if search.lo is None else str(search.lo)
        hi = "?" if search.hi is None else str(search.hi)
        return f"{head} [{lo}, {hi})"

    def update(self, key: PointKey, search: BracketSearch) -> None:
        done = search.done
        self.bar.update(
            self.tasks[key],
            description=self._label(key, search),
            completed=search.evaluated,
            total=search.evaluated if done else None,
        )
        if done and not self.tty:
            console.print(f"done: {self._label(key, search)} after {search.evaluated} candidates")


def _executor(
    inputs: CapacityInputs, serial: bool, ray_address: str | None, workers: int
) -> tuple[Executor, dict[str, Any]]:
    if serial:
        return SerialExecutor(inputs), {"kind": "serial"}
    from wattwheel.sim.capacity_ray import RayExecutor

    ex = RayExecutor(inputs, address=ray_address, num_cpus=workers)
    kind = "ray-cluster" if ray_address else "ray-local"
    return ex, {"kind": kind, "address": ray_address, "nodes": ex.nodes, "workers": workers}


def _summary(results: dict[PointKey, PointResult], base: int) -> None:
    console.print(f"baseline: {base} servers")
    for key, res in results.items():
        console.print(
            f"  {key.policy:<11} kes={key.kes_fraction:<5g} max_servers={res.max_servers:<6} "
            f"extra={res.extra_servers_pct:+.2f} %  binding={res.binding}"
        )


@app.command()
def capacity(
    site: SiteOpt,
    out: OutOpt,
    trace: TraceOpt = None,
    policies: Annotated[
        str, typer.Option("--policies", help=f"comma-separated: {', '.join(CAPACITY_POLICIES)}")
    ] = "none,reactive,predictive",
    kes_fractions: Annotated[
        str,
        typer.Option("--kes-fractions", help="flywheel power as a fraction of each domain's peak"),
    ] = "0,0.05,0.1",
    limits: Annotated[
        str, typer.Option("--limits", help="NAME<=X,... (breaker trips and critical capping = 0)")
    ] = DEFAULT_LIMITS,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="join this Ray cluster (HOST:PORT)")
    ] = None,
    serial: Annotated[bool, typer.Option("--serial", help="no Ray: run in this process")] = False,
    workers: Annotated[int, typer.Option("--workers", help="CPUs of a local Ray", min=1)] = 2,
    model: ModelOpt = None,
    start_day: Annotated[float, typer.Option("--start-day", help="window start (days)")] = 0.0,
    days: Annotated[
        float | None, typer.Option("--days", help="window length (days; default: all)")
    ] = None,
    servers_per_rack: Annotated[
        int | None,
        typer.Option("--servers-per-rack", help="servers per trace rack (default: site file)"),
    ] = None,
    growth: Annotated[
        str, typer.Option("--growth", help="new load: 'traces' (donor racks) or 'naive'")
    ] = "traces",
    step_pct: Annotated[
        float, typer.Option("--step-pct", help="first bracket step, % of baseline", min=0.01)
    ] = 5.0,
    max_factor: Annotated[
        float, typer.Option("--max-factor", help="search up to this x baseline", min=1.0)
    ] = 3.0,
    resolution: Annotated[
        int | None, typer.Option("--resolution", help="stop when the bracket is this narrow")
    ] = None,
) -> None:
    """Largest number of servers the site can host per policy and flywheel size within the
    limits; writes capacity.json and capacity.html (finished candidates cached in OUT/cache)."""
    with _errors():
        _capacity(
            site=site,
            out=out,
            trace=trace,
            policies=parse_policies(policies),
            fractions=parse_fractions(kes_fractions),
            limits_text=limits,
            ray_address=ray_address,
            serial=serial,
            workers=workers,
            model=model,
            window=(start_day, days),
            servers_per_rack=servers_per_rack,
            growth=growth,
            search=(step_pct, max_factor, resolution),
        )


def _capacity(
    *,
    site: Path,
    out: Path,
    trace: Path | None,
    policies: tuple[str, ...],
    fractions: tuple[float, ...],
    limits_text: str,
    ray_address: str | None,
    serial: bool,
    workers: int,
    model: Path | None,
    window: tuple[float, float | None],
    servers_per_rack: int | None,
    growth: str,
    search: tuple[float, float, int | None],
) -> None:
    from wattwheel.cli.sim_cmds import _model_spec

    limits = parse_limits(limits_text)
    if serial and ray_address:
        raise ConfigError(
            "--serial/--ray-address", ray_address, "the two options exclude each other"
        )
    if growth not in GROWTH_METHODS:
        raise ConfigError("--growth", growth, f"choose from {', '.join(GROWTH_METHODS)}")
    method: GrowthMethod = "traces" if growth == "traces" else "naive"
    scenario, trace_path = load_window(site, trace, *window)
    spr = servers_per_rack or scenario.site.servers_per_rack
    if spr < 1:
        raise ConfigError("--servers-per-rack", spr, "must be >= 1")
    needs_model = any(p in ("predictive", "seed") for p in policies)
    spec = _model_spec(model, scenario) if needs_model else None
    forecaster = spec.build() if spec is not None else None
    inputs = make_inputs(scenario, fractions, forecaster, spr, method)
    base = baseline_servers(scenario, spr)
    step_pct, max_factor, res = search
    settings = CapacitySettings(
        policies=policies,
        kes_fractions=fractions,
        limits=limits,
        servers_per_rack=spr,
        growth=method,
        baseline_servers=base,
        step=max(1, round(base * step_pct / 100.0)),
        upper=int(base * max_factor),
        resolution=res if res is not None else max(1, round(base * 0.005)),
    )
    model_id = _model_id(model, forecaster, scenario) if needs_model else "-"
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(out / "cache", inputs_digest(inputs, model_id))
    executor, exec_info = _executor(inputs, serial, ray_address, workers)
    bars = _Bars([PointKey(p, f) for p in policies for f in fractions])
    started = time.perf_counter()
    with bars.bar:
        results = run_capacity(inputs, settings, executor, cache, bars.update)
    wall = time.perf_counter() - started
    provenance = {
        "site": {"path": str(site), "sha256": _file_sha256(site), "name": scenario.site.name},
        "trace": {
            "path": str(trace_path),
            "sha256": _file_sha256(trace_path),
            "start_day": window[0],
            "days": scenario.demand_kw.shape[0] * scenario.dt_s / DAY_S,
            "steps": int(scenario.demand_kw.shape[0]),
            "step_s": scenario.dt_s,
            "racks": list(scenario.trace.rack_ids),
        },
        "forecaster": model_id,
        # Which data the forecast model saw (DESIGN §8): out of sample, or not.
        "forecaster_trained_on": _trained_on(spec, needs_model),
        "executor": exec_info,
        "cache": {"hits": cache.hits, "dir": str(out / "cache")},
        "wall_seconds": round(wall, 3),
        "wattwheel_version": wattwheel.__version__,
    }
    payload = capacity_payload(results, settings, provenance)
    (out / "capacity.json").write_text(json.dumps(payload, indent=2))
    title = f"wattwheel capacity — {scenario.site.name}"
    write_capacity_report(out / "capacity.html", payload, title)
    _summary(results, base)
    console.print(f"wrote {out / 'capacity.json'} and {out / 'capacity.html'} in {wall:.1f} s")
