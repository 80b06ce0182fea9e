"""Forecaster speed and held-out accuracy.

- inference: the shipped 5-minute LSTM (``wattwheel/data/models/dcutil-300s-lstm``) predicting
  5/10/15 minutes ahead for 1,000 racks from a 400-row history (random-walk power around
  700 kW), median of ``--runs`` calls after one warm-up, through ONNX Runtime (what a controller
  host runs, no torch) and through torch; as served, with the model's AR blend
  (``forecast/hybrid.py``; set ``OPENBLAS_NUM_THREADS=1`` on a loaded machine); then through the
  conformal wrapper with its explicit online update after each forecast (what the simulator and
  the runtime do); persistence and AR for reference;
- training: ``LSTMForecaster.fit`` with the shipped model's settings on the bundled
  cella-oversub trace (Google PDUs 6/7/8 at 1,000 kW), median of ``--train-runs`` runs.

    .venv/bin/python benchmarks/bench_forecast.py [--runs 20] [--train-runs 1] [--threads 2]

``--heldout SHARED_DATA`` (e.g. ``../shared/data``) backtests every shipped model on a series it
never saw, through the CLI, with the model's own calibration and with online conformal
calibration: the 5-minute model on Google's three PDUs, the 10 s model on the alibaba-fast
scenario's day, the 1 s model on the ai-training scenario; it prints one table.

``--loo DATA_DIR`` (e.g. ``../shared/data/google-power-2019``) instead runs the leave-one-PDU-out
evaluation through the CLI, exactly as a user would: ``wattwheel import google-power`` each PDU
at 1,000 kW, ``wattwheel train`` on two, ``wattwheel backtest --calibration online`` on the
third, for all three; it prints the MAE per horizon of lstm / persistence / ar and the LSTM's
coverage_90.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from wattwheel.adapters.model_artifact import load_forecaster, load_model, shipped_model_dir
from wattwheel.forecast.base import History
from wattwheel.forecast.baselines import ARForecaster, PersistenceForecaster
from wattwheel.forecast.conformal import ConformalForecaster, predict_and_learn
from wattwheel.forecast.lstm import LSTMForecaster
from wattwheel.sim.trace_io import read_trace

N_RACKS, N_ROWS = 1000, 400
HORIZONS_S = (300.0, 600.0, 900.0)
TRACE = Path(str(resources.files("wattwheel") / "scenarios" / "cella-oversub" / "trace.csv"))


def racks_history(n_rows: int, step: int) -> History:
    """1,000 racks, random walks around 700 kW, ending ``step`` rows later than step 0."""
    rng = np.random.default_rng(0)
    total = n_rows + 64
    walk = 700_000.0 + np.cumsum(rng.normal(0, 2_000, (total, N_RACKS)), axis=0)
    ts = 600.0 + 300.0 * np.arange(total)
    sl = slice(step, step + n_rows)
    return History(ts[sl], tuple(f"rack{i}" for i in range(N_RACKS)), walk[sl])


def median_ms(call: Callable[[int], object], runs: int) -> float:
    call(0)  # warm-up (allocations, first-use calibration)
    times = []
    for i in range(1, runs + 1):
        t0 = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_inference(runs: int) -> None:
    histories = [racks_history(N_ROWS, i) for i in range(runs + 1)]
    for backend in ("onnx", "torch"):
        model = load_model(shipped_model_dir(), backend=backend)
        ms = median_ms(lambda i, m=model: m.predict(histories[i], HORIZONS_S), runs)
        print(f"lstm inference ({backend}), {N_RACKS} racks x 3 horizons: {ms:.1f} ms median")
    blended = load_forecaster(shipped_model_dir(), online=False)
    ms = median_ms(lambda i: blended.predict(histories[i], HORIZONS_S), runs)
    print(
        f"lstm + online AR blend (onnx, two local ARs fitted per call), {N_RACKS} racks x 3 "
        f"horizons: {ms:.1f} ms median"
    )
    served = load_forecaster(shipped_model_dir(), online=True)
    ms = median_ms(lambda i: predict_and_learn(served, histories[i], HORIZONS_S), runs)
    print(
        f"served forecaster (onnx, conformal + online AR blend), {N_RACKS} racks x 3 horizons, "
        f"predict + explicit update (what a controller pays per period): {ms:.1f} ms median"
    )
    wrapped = ConformalForecaster(load_model(shipped_model_dir()))

    def predict_and_update(i: int) -> None:
        wrapped.predict(histories[i], HORIZONS_S)
        wrapped.update(histories[i], HORIZONS_S)

    ms = median_ms(predict_and_update, runs)
    print(
        f"lstm inference (onnx), {N_RACKS} racks x 3 horizons, conformal wrapper: predict + "
        f"explicit update: {ms:.1f} ms median"
    )
    persistence = PersistenceForecaster()
    persistence.fit(histories[0])
    ms = median_ms(lambda i: persistence.predict(histories[i], HORIZONS_S), runs)
    print(f"persistence inference, {N_RACKS} racks x 3 horizons: {ms:.1f} ms median")
    ar = ARForecaster()
    ar.fit(histories[0])
    ms = median_ms(lambda i: ar.predict(histories[i], HORIZONS_S), runs)
    print(f"ar inference, {N_RACKS} racks x 3 horizons: {ms:.1f} ms median")


def bench_training(runs: int) -> None:
    trace = read_trace(TRACE)
    history = History.from_trace(trace)
    config = load_model(shipped_model_dir()).config
    times, epochs = [], []
    for _ in range(runs):
        model = LSTMForecaster(config)
        t0 = time.perf_counter()
        model.fit(history)
        times.append(time.perf_counter() - t0)
        assert model.state is not None
        epochs.append(model.state.epochs_run)
    print(
        f"lstm training on the 3 Google PDUs ({history.values.shape[0]} steps x "
        f"{history.values.shape[1]} racks, {epochs[-1]} epochs incl. early stop): "
        f"{statistics.median(times):.1f} s median of {runs}"
    )


def run(args: list[str]) -> None:
    print("$ " + shlex.join(args), flush=True)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def leave_one_out(data_dir: Path, epochs: int, seed: int) -> None:
    """Import, train on two PDUs, backtest on the third; print the table."""
    cli = str(Path(sys.executable).with_name("wattwheel"))
    pdus = ("cella_pdu6", "cella_pdu7", "cella_pdu8")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for pdu in pdus:
            src = str(data_dir / f"{pdu}.csv")
            out = str(work / f"{pdu}.csv")
            run([cli, "import", "google-power", src, "--rating-kw", "1000", "--out", out])
        for test in pdus:
            train = [str(work / f"{p}.csv") for p in pdus if p != test]
            model = str(work / f"model-no-{test}")
            t0 = time.perf_counter()
            run(
                [
                    cli,
                    "train",
                    "--trace",
                    *train,
                    "--out",
                    model,
                    "--epochs",
                    str(epochs),
                    "--seed",
                    str(seed),
                ]
            )
            train_s = time.perf_counter() - t0
            bt = work / f"bt-{test}"
            run(
                [
                    cli,
                    "backtest",
                    "--model",
                    model,
                    "--trace",
                    str(work / f"{test}.csv"),
                    "--out",
                    str(bt),
                    "--calibration",
                    "online",
                ]
            )
            rows.append((test, train_s, json.loads((bt / "backtest.json").read_text())))
    print_loo(rows)


def print_loo(rows: list[tuple[str, float, dict[str, object]]]) -> None:
    print("\nleave-one-PDU-out, MAE in kW at 5 / 10 / 15 min; LSTM coverage_90")
    print("| held-out PDU | lstm | persistence | ar | lstm coverage_90 | train s |")
    print("|---|---|---|---|---|---|")
    wins = True
    for test, train_s, report in rows:
        models = report["models"]
        assert isinstance(models, dict)
        cells = []
        for name in ("lstm", "persistence", "ar"):
            cells.append(" / ".join(f"{v / 1e3:.3f}" for v in models[name]["mae"]))
        cov = " / ".join(f"{v:.3f}" for v in models["lstm"]["coverage_90"])
        print(f"| {test} | {cells[0]} | {cells[1]} | {cells[2]} | {cov} | {train_s:.0f} |")
        lstm = models["lstm"]
        for h in range(len(lstm["mae"])):
            base = min(models["persistence"]["mae"][h], models["ar"]["mae"][h])
            wins &= lstm["mae"][h] <= base and 0.87 <= lstm["coverage_90"][h] <= 0.93
    print("LSTM <= persistence and AR at every horizon, coverage in [0.87, 0.93]:", wins)


#: (resolution label, shipped model directory name, held-out trace, backtest stride).
HELDOUT = (
    ("5 min", "dcutil-300s-lstm", "google-pdus", 1),
    ("10 s", "alibaba-10s-lstm", "alibaba-fast", 4),
    ("1 s", "ai-training-1s-lstm", "ai-training", 3),
)


def held_out(data_dir: Path) -> None:
    """Backtest each shipped model on a series it never saw, through the CLI, with the model's
    own calibration and with online conformal calibration; print one table."""
    cli = str(Path(sys.executable).with_name("wattwheel"))
    scenarios = Path(str(resources.files("wattwheel") / "scenarios"))
    models = Path(str(resources.files("wattwheel") / "data" / "models"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pdus = [str(data_dir / "google-power-2019" / f"cella_pdu{i}.csv") for i in (6, 7, 8)]
        google = str(work / "google-pdus.csv")
        run([cli, "import", "google-power", *pdus, "--rating-kw", "1000", "--out", google])
        for label, model, trace_name, stride in HELDOUT:
            trace = (
                google if trace_name == "google-pdus" else str(scenarios / trace_name / "trace.csv")
            )
            for calibration in ("model", "online"):
                out = work / f"bt-{model}-{calibration}"
                args = [cli, "backtest", "--model", str(models / model), "--trace", trace]
                args += ["--out", str(out), "--stride", str(stride), "--calibration", calibration]
                run(args)
                report = json.loads((out / "backtest.json").read_text())
                rows.append((label, trace_name, calibration, report))
    print("\nheld-out backtests (fit part = first half; MAE in kW per horizon)")
    print(
        "| step | held-out trace | horizons | calibration | lstm | persistence | ar | lstm cov_90 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, trace_name, calibration, report in rows:
        m = report["models"]
        hz = "/".join(_fmt_min(h) for h in report["horizons_min"])
        cells = [
            " / ".join(f"{v / 1e3:.3f}" for v in m[n]["mae"]) for n in ("lstm", "persistence", "ar")
        ]
        cov = " / ".join(f"{v:.3f}" for v in m["lstm"]["coverage_90"])
        print(f"| {label} | {trace_name} | {hz} | {calibration} | {' | '.join(cells)} | {cov} |")


def _fmt_min(minutes: float) -> str:
    return f"{minutes:g} min" if minutes >= 1 else f"{minutes * 60:g} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="inference calls (median)")
    parser.add_argument("--train-runs", type=int, default=1, help="training runs (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--loo", type=Path, help="Google power-2019 folder: leave-one-out run")
    parser.add_argument("--epochs", type=int, default=30, help="epochs for --loo")
    parser.add_argument("--seed", type=int, default=0, help="seed for --loo")
    parser.add_argument(
        "--heldout", type=Path, help="shared data folder: backtest every shipped model"
    )
    args = parser.parse_args()
    if args.loo is not None:
        leave_one_out(args.loo, args.epochs, args.seed)
        return
    if args.heldout is not None:
        held_out(args.heldout)
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_inference(max(args.runs, 5))
    if args.train_runs > 0:
        bench_training(args.train_runs)


if __name__ == "__main__":
    main()
