"""``wattwheel train`` and ``wattwheel backtest``: the forecaster's training and evaluation.

* ``train --trace T [T ...] --out MODEL_DIR [--horizons 5,10,15 --epochs N --seed S
  --lookback L --hidden U]``: train the global LSTM on every rack of the traces (traces with the
  same time step are aligned on one grid; missing cells are gaps the model learns to skip) and
  write a model directory (:mod:`wattwheel.adapters.model_artifact`).
* ``backtest --model MODEL_DIR --trace T --out DIR``: rolling-origin evaluation of the model and
  of the persistence, seasonal-naive and AR baselines on a trace. The first ``--fit-fraction``
  of the trace fits the baselines (their parameters and intervals); forecasts are then made from
  every ``--stride``-th row of the rest. The model is never retrained, and by default
  (``--calibration model``) keeps the intervals it was calibrated with on its own training data,
  so nothing of the test trace reaches it; ``--calibration fit`` recalibrates it on the fit part,
  ``--calibration online`` also updates every forecaster's calibration after each origin from
  the rows up to it. The choice is printed and written in the report. Writes
  ``DIR/backtest.json`` and ``DIR/backtest.html`` (forecast bands vs actuals at their target
  time).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wattwheel.adapters.model_artifact import (
    ModelArtifactError,
    describe_training_data,
    load_model,
    save_model,
    with_ar_blend,
)
from wattwheel.cli import app
from wattwheel.domain.errors import WattwheelError
from wattwheel.domain.trace import Trace
from wattwheel.forecast.backtest import (
    BacktestRun,
    learn_on_past,
    naive_scale,
    rolling_origin,
    score,
)
from wattwheel.forecast.base import FloatArray, Forecaster, History
from wattwheel.forecast.baselines import (
    ARForecaster,
    PersistenceForecaster,
    SeasonalNaiveForecaster,
)
from wattwheel.forecast.conformal import ConformalForecaster
from wattwheel.forecast.exog import feed_to_exog
from wattwheel.forecast.lstm import LSTMConfig, LSTMForecaster
from wattwheel.forecast.statsforecast_adapter import (
    StatsForecastForecaster,
    autoets_factory,
    mstl_factory,
    statsforecast_available,
)
from wattwheel.sim.trace_io import read_trace

console = Console(stderr=True)
ExogOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--exog",
        help="Feed CSV (timestamp[,rack_id],<columns>...), known-ahead; repeatable. "
        "See wattwheel.forecast.exog for the format.",
    ),
]


# ------------------------------------------------------------------------------------- train
@app.command()
def train(
    trace: Annotated[
        list[Path], typer.Option("--trace", help="Trace file(s); more may follow as arguments.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    more_traces: Annotated[
        list[Path] | None, typer.Argument(help="More trace files (as in --trace T1 T2 ...).")
    ] = None,
    horizons: Annotated[
        str, typer.Option(help="Horizons in minutes, comma-separated.")
    ] = "5,10,15",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping).")] = 30,
    seed: Annotated[int, typer.Option(help="Seed: same data + seed = same model.")] = 0,
    lookback: Annotated[int, typer.Option(help="Input window in steps of the trace.")] = 48,
    hidden: Annotated[int, typer.Option(help="LSTM hidden units.")] = 32,
    threads: Annotated[int, typer.Option(help="Torch threads for training.")] = 1,
    exog: ExogOption = None,
    data_note: Annotated[
        str | None,
        typer.Option(help="How the training traces were made (kept in the metadata)."),
    ] = None,
) -> None:
    """Train the global LSTM forecaster on one or more traces and save a model directory
    (torch weights for training, and the ONNX graph that inference runs)."""
    paths = [*trace, *(more_traces or [])]
    feeds = list(exog or [])
    try:
        config = LSTMConfig(
            horizons_min=_parse_horizons(horizons),
            epochs=epochs,
            seed=seed,
            lookback=lookback,
            hidden=hidden,
            num_threads=threads,
        )
        history = merge_traces([read_trace(p) for p in paths], [p.stem for p in paths])
        history = with_feeds(history, feeds)
        model = LSTMForecaster(config)
        with _bar("training") as (progress, task):
            progress.update(task, total=epochs)

            def on_epoch(epoch: int, total: int, train_loss: float, val_loss: float) -> None:
                progress.update(
                    task, completed=epoch, description=f"epoch {epoch} val {val_loss:.4f}"
                )

            model.fit(history, progress=on_epoch)
            progress.update(task, completed=epochs)
        command = _train_command(paths, out, horizons, epochs, seed, lookback, hidden, threads)
        command += "".join(f" --exog {shlex.quote(str(f))}" for f in feeds)
        data = describe_training_data([*paths, *feeds])
        if data_note:
            data["note"] = data_note
        save_model(model, out, data, command=command)
    except (WattwheelError, ValueError) as exc:
        _fail(exc)
    state = model.state
    assert state is not None
    metrics = state.metrics
    typer.echo(
        f"wrote {out}: {len(history.series_ids)} series x {history.values.shape[0]} steps of "
        f"{history.step_s:g} s, {state.epochs_run} epochs; validation MAE (normalised) "
        f"{metrics['val_mae_norm']} vs persistence {metrics['val_persistence_mae_norm']}"
    )


def merge_traces(traces: Sequence[Trace], labels: Sequence[str]) -> History:
    """One History from traces on the same step: the union time grid, NaN where a trace has no
    row. Rack ids that repeat across traces are prefixed with the file label."""
    if not traces:
        raise ValueError("no trace given")
    step = traces[0].step_s
    for tr, label in zip(traces, labels, strict=True):
        if not np.isclose(tr.step_s, step):
            raise ValueError(f"trace {label!r} has a {tr.step_s:g} s step, the first {step:g} s")
        phase = (tr.timestamps_s[0] - traces[0].timestamps_s[0]) / step
        if abs(phase - round(phase)) > 1e-6:
            raise ValueError(f"trace {label!r} is not on the same time grid as the first trace")
    start = min(float(t.timestamps_s[0]) for t in traces)
    end = max(float(t.timestamps_s[-1]) for t in traces)
    timestamps = start + step * np.arange(round((end - start) / step) + 1, dtype=np.float64)
    seen = [r for t in traces for r in t.rack_ids]
    names = sorted({name for t in traces for name in t.exog})
    ids: list[str] = []
    columns: list[FloatArray] = []
    exog: dict[str, list[FloatArray]] = {name: [] for name in names}
    for tr, label in zip(traces, labels, strict=True):
        rows = np.round((tr.timestamps_s - start) / step).astype(np.int64)
        for j, rack in enumerate(tr.rack_ids):
            columns.append(_on_grid(timestamps.shape[0], rows, tr.power_w[:, j]))
            for name in names:
                src = tr.exog.get(name)
                values = np.full(rows.shape[0], np.nan) if src is None else src[:, j]
                exog[name].append(_on_grid(timestamps.shape[0], rows, values))
            ids.append(f"{label}/{rack}" if seen.count(rack) > 1 else rack)
    stacked = {name: np.stack(cols, axis=1) for name, cols in exog.items()}
    return History(timestamps, tuple(ids), np.stack(columns, axis=1), stacked)


def _on_grid(n_rows: int, rows: NDArray[np.int64], values: FloatArray) -> FloatArray:
    col = np.full(n_rows, np.nan)
    col[rows] = values
    return col


def read_feed(path: Path) -> tuple[FloatArray, dict[str, FloatArray], list[str] | None]:
    """A feed CSV: (timestamps in seconds, name -> values, rack id per row or None)."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"feed {path}: cannot read it as CSV: {exc}") from None
    if "timestamp" not in frame.columns:
        raise ValueError(f"feed {path}: no 'timestamp' column (columns: {list(frame.columns)})")
    raw_ts = frame.pop("timestamp")
    numeric = pd.to_numeric(raw_ts, errors="coerce")
    if numeric.notna().all():
        ts = numeric.to_numpy(dtype=np.float64)
    else:
        parsed = pd.to_datetime(raw_ts, utc=True, errors="coerce")
        if parsed.isna().any():
            line = int(np.flatnonzero(parsed.isna().to_numpy())[0]) + 2
            raise ValueError(f"feed {path}, line {line}: timestamp {raw_ts.iloc[line - 2]!r}")
        ts = (parsed.astype("int64") / 1e9).to_numpy(dtype=np.float64)
    racks = frame.pop("rack_id").astype(str).tolist() if "rack_id" in frame.columns else None
    columns: dict[str, FloatArray] = {}
    for name in frame.columns:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise ValueError(f"feed {path}, line {line}: column {name!r} is not numeric")
        columns[str(name)] = values.to_numpy(dtype=np.float64)
    if not columns:
        raise ValueError(f"feed {path}: no value column besides timestamp/rack_id")
    return ts, columns, racks


def with_feeds(history: History, feeds: Sequence[Path]) -> History:
    """``history`` with the columns of each feed file added to its exog (as-of aligned)."""
    exog = dict(history.exog)
    for path in feeds:
        ts, columns, racks = read_feed(path)
        for name, arr in feed_to_exog(
            ts, columns, history.timestamps_s, history.series_ids, racks
        ).items():
            if name in exog:
                raise ValueError(f"feed {path}: column {name!r} is already an exogenous column")
            exog[name] = arr
    return History(history.timestamps_s, history.series_ids, history.values, exog)


# ---------------------------------------------------------------------------------- backtest
@app.command()
def backtest(
    model: Annotated[Path, typer.Option("--model", help="Model directory from `train`.")],
    trace: Annotated[Path, typer.Option("--trace", help="Trace to evaluate on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the report.")],
    fit_fraction: Annotated[
        float, typer.Option(help="Leading share of the trace used to fit/calibrate.")
    ] = 0.5,
    stride: Annotated[int, typer.Option(help="Forecast from every N-th row.")] = 1,
    season_s: Annotated[float, typer.Option(help="Seasonal-naive season, seconds.")] = 86_400.0,
    ar_lags: Annotated[int, typer.Option(help="Lags of the AR baseline.")] = 24,
    exog: ExogOption = None,
    statsforecast: Annotated[
        bool,
        typer.Option(
            "--statsforecast", help="Also score statsforecast AutoETS and MSTL (if installed)."
        ),
    ] = False,
    calibration: Annotated[
        str,
        typer.Option(
            help="model: keep the model's own intervals (nothing of the test trace reaches "
            "it); fit: recalibrate them on the fit part; online: also update every "
            "forecaster's calibration after each origin"
        ),
    ] = "model",
) -> None:
    """Rolling-origin backtest of a model and the baselines; writes backtest.json and plots."""
    try:
        lstm = load_model(model)
        history = with_feeds(History.from_trace(read_trace(trace)), list(exog or []))
        extra = _statsforecast_models(history.step_s, season_s) if statsforecast else None
        report, runs = run_backtest(
            lstm,
            history,
            fit_fraction,
            stride,
            season_s,
            ar_lags,
            extra,
            calibration,
            wrap=lambda m: with_ar_blend(model, m),
        )
    except (WattwheelError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"calibration: {report['calibration']}")
    report["model_dir"] = str(model)
    report["trace"] = str(trace)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backtest.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_plot(out, history, runs, report["horizons_min"])
    _print_table(report)
    typer.echo(f"wrote {out / 'backtest.json'} and {out / 'backtest.html'}")


def run_backtest(
    lstm: LSTMForecaster,
    history: History,
    fit_fraction: float = 0.5,
    stride: int = 1,
    season_s: float = 86_400.0,
    ar_lags: int = 24,
    extra: Mapping[str, Forecaster] | None = None,
    calibration: str = "model",
    wrap: Callable[[Forecaster], Forecaster] | None = None,
) -> tuple[dict[str, Any], dict[str, BacktestRun]]:
    """Fit the baselines on the leading part, then score every model (and ``extra`` ones, e.g.
    the statsforecast comparisons) on the rest; ``calibration`` as in ``backtest``; ``wrap``
    (e.g. the model directory's AR blend) is applied to the calibrated model."""
    if not 0 < fit_fraction < 1:
        raise ValueError(f"--fit-fraction must be in (0, 1), got {fit_fraction}")
    if calibration not in CALIBRATION_MODES:
        raise ValueError(
            f"--calibration must be one of {', '.join(CALIBRATION_MODES)}, got {calibration!r}"
        )
    horizons_min = list(lstm.config.horizons_min)
    horizons_s = [60.0 * h for h in horizons_min]
    start = int(history.values.shape[0] * fit_fraction)
    past = History(
        history.timestamps_s[: start + 1],
        history.series_ids,
        history.values[: start + 1],
        {k: v[: start + 1] for k, v in history.exog.items()},
    )
    if calibration != "model":
        lstm.calibrate(past)
    model: Forecaster = lstm if wrap is None else wrap(lstm)
    # A point combination that learns online (the AR blend's weights) learns on the fit part,
    # as the baselines are fitted on it; with --calibration online it goes on learning.
    learned = learn_on_past(model, history, horizons_s, start, stride)
    models: dict[str, Forecaster] = {"lstm": model}
    if calibration == "online":
        models["lstm"] = ConformalForecaster(model)
    baselines = {
        "persistence": PersistenceForecaster(horizons_s=horizons_s),
        "seasonal_naive": SeasonalNaiveForecaster(season_s=season_s, horizons_s=horizons_s),
        "ar": ARForecaster(lags=ar_lags, horizons_s=horizons_s),
    }
    for name, baseline in baselines.items():
        baseline.fit(past)
        models[name] = baseline
    for name, other in (extra or {}).items():
        other.fit(past)
        models[name] = other
    mase = naive_scale(past.values)
    runs: dict[str, BacktestRun] = {}
    with _bar("backtest") as (progress, task):
        for name, forecaster in models.items():
            progress.update(task, description=name, completed=0)

            def on_origin(done: int, total: int) -> None:
                if done % 200 == 0 or done == total:
                    progress.update(task, completed=done, total=total)

            runs[name] = rolling_origin(
                forecaster,
                history,
                horizons_s,
                start,
                stride,
                on_origin,
                update=calibration == "online",
            )
    report: dict[str, Any] = {
        "calibration": CALIBRATION_MODES[calibration],
        "horizons_min": horizons_min,
        "models": {name: score(run, mase) for name, run in runs.items()},
        "units": "W",
        "fit_rows": start + 1,
        "origins": int(runs["lstm"].origins.size),
        "stride": stride,
        "series": list(history.series_ids),
        "lstm_point_learned_on_fit_part": learned,
    }
    return report, runs


#: ``backtest --calibration`` choices, as the report states them.
CALIBRATION_MODES = {
    "model": "the model's intervals as calibrated on its own training data (nothing of this "
    "trace reaches them; an online AR blend's weights learned on the fit part); baselines "
    "fitted and calibrated on the fit part",
    "fit": "the model's intervals recalibrated on the fit part of this trace (before the "
    "first origin); baselines fitted and calibrated on the fit part",
    "online": "recalibrated on the fit part, then every forecaster's calibration updated after "
    "each origin from the rows up to it (uses this trace's past at each origin)",
}


# ----------------------------------------------------------------------------------- helpers
def _statsforecast_models(step_s: float, season_s: float) -> dict[str, Forecaster]:
    if not statsforecast_available():
        raise ValueError(
            "--statsforecast needs the statsforecast package (pip install statsforecast)"
        )
    season = max(1, round(season_s / step_s))
    return {
        "autoets": StatsForecastForecaster("autoets", autoets_factory(season)),
        "mstl": StatsForecastForecaster("mstl", mstl_factory([season])),
    }


def _parse_horizons(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--horizons must be minutes separated by commas, got {text!r}") from None
    if not values:
        raise ValueError("--horizons is empty")
    return values


def _train_command(
    paths: Sequence[Path],
    out: Path,
    horizons: str,
    epochs: int,
    seed: int,
    lookback: int,
    hidden: int,
    threads: int,
) -> str:
    args = ["wattwheel", "train", "--trace", *(str(p) for p in paths), "--out", str(out)]
    args += ["--horizons", horizons, "--epochs", str(epochs), "--seed", str(seed)]
    args += ["--lookback", str(lookback), "--hidden", str(hidden), "--threads", str(threads)]
    return shlex.join(args)


def _bar(what: str) -> Any:
    progress = Progress(
        TextColumn(f"[bold]{what}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    return _BarContext(progress)


class _BarContext:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __enter__(self) -> tuple[Progress, Any]:
        self.progress.start()
        return self.progress, self.progress.add_task("", total=None)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _fail(exc: Exception) -> Any:
    kind = "model" if isinstance(exc, ModelArtifactError) else "input"
    typer.echo(f"error ({kind}): {exc}", err=True)
    raise typer.Exit(code=2)


def _print_table(report: dict[str, Any]) -> None:
    table = Table(title="rolling-origin backtest (MAE in kW; coverage of the 90 % interval)")
    table.add_column("model")
    for h in report["horizons_min"]:
        table.add_column(f"MAE {h:g} min", justify="right")
    for h in report["horizons_min"]:
        table.add_column(f"cov {h:g}", justify="right")
    for name, m in report["models"].items():
        maes = [f"{v / 1e3:.3f}" for v in m["mae"]]
        covs = [f"{v:.3f}" for v in m["coverage_90"]]
        table.add_row(name, *maes, *covs)
    Console().print(table)


def _write_plot(
    out: Path, history: History, runs: dict[str, BacktestRun], horizons_min: Sequence[float]
) -> None:
    """Forecast bands (LSTM q05-q95) and points vs actuals, first series, last ~3 days."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    run = runs["lstm"]
    n_show = min(run.origins.size, int(3 * 86_400 / history.step_s))
    sel = slice(run.origins.size - n_show, run.origins.size)
    steps = [round(h * 60 / history.step_s) or 1 for h in horizons_min]
    fig = make_subplots(
        rows=len(horizons_min),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f"{h:g} min ahead" for h in horizons_min],
    )
    for i, step in enumerate(steps):
        t_hours = (history.timestamps_s[run.origins[sel] + step] - history.timestamps_s[0]) / 3600
        lo, hi = run.values[sel, 0, i, 0] / 1e3, run.values[sel, 0, i, -1] / 1e3
        row = i + 1
        fig.add_trace(go.Scatter(x=t_hours, y=hi, line={"width": 0}, showlegend=False), row, 1)
        fig.add_trace(
            go.Scatter(
                x=t_hours,
                y=lo,
                fill="tonexty",
                line={"width": 0},
                name="LSTM 90 % interval",
                fillcolor="rgba(31,119,180,0.25)",
                showlegend=i == 0,
            ),
            row,
            1,
        )
        for name, color in (("lstm", "#1f77b4"), ("persistence", "#ff7f0e")):
            pts = runs[name].point[sel, 0, i] / 1e3
            fig.add_trace(
                go.Scatter(
                    x=t_hours,
                    y=pts,
                    name=name,
                    line={"color": color, "width": 1},
                    showlegend=i == 0,
                ),
                row,
                1,
            )
        actual = run.actual[sel, 0, i] / 1e3
        fig.add_trace(
            go.Scatter(
                x=t_hours,
                y=actual,
                name="actual",
                line={"color": "black", "width": 1},
                showlegend=i == 0,
            ),
            row,
            1,
        )
    fig.update_layout(
        title=f"{history.series_ids[0]}: forecasts vs actuals (kW)", height=300 * len(steps)
    )
    fig.update_xaxes(title_text="hours since trace start", row=len(steps), col=1)
    # "directory": plotly.min.js is written beside the page, so it opens offline.
    fig.write_html(out / "backtest.html", include_plotlyjs="directory")
