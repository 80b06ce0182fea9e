"""`wattwheel train` and `wattwheel backtest` end to end on a small synthetic trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wattwheel.cli import _register, app, forecast_cmds
from wattwheel.domain.trace import Trace
from wattwheel.sim.trace_io import write_trace

_register()
runner = CliRunner()


def _trace(path: Path, racks: tuple[str, ...], seed: int, n_rows: int = 700) -> Path:
    rng = np.random.default_rng(seed)
    ts = 300.0 * np.arange(n_rows)
    cycle = 1 + 0.1 * np.sin(2 * np.pi * ts / 86_400)[:, None]
    power = 50_000.0 * cycle + np.cumsum(rng.normal(0, 200, (n_rows, len(racks))), axis=0)
    write_trace(Trace(ts, racks, np.abs(power)), path)
    return path


def test_train_then_backtest(tmp_path: Path) -> None:
    a = _trace(tmp_path / "a.csv", ("r1", "r2"), seed=1)
    b = _trace(tmp_path / "b.csv", ("r1",), seed=2)
    test = _trace(tmp_path / "test.csv", ("x",), seed=3)
    model = tmp_path / "model"
    args = ["train", "--trace", str(a), str(b), "--out", str(model), "--epochs", "1"]
    result = runner.invoke(app, [*args, "--lookback", "8", "--hidden", "4"])
    assert result.exit_code == 0, result.output
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["command"].startswith("wattwheel train --trace")
    assert [f["name"] for f in meta["training_data"]["files"]] == ["a.csv", "b.csv"]

    out = tmp_path / "bt"
    result = runner.invoke(
        app,
        [
            "backtest",
            "--model",
            str(model),
            "--trace",
            str(test),
            "--out",
            str(out),
            "--stride",
            "7",
            "--ar-lags",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "backtest.json").read_text())
    assert report["horizons_min"] == [5.0, 10.0, 15.0]
    assert set(report["models"]) == {"lstm", "persistence", "seasonal_naive", "ar"}
    for scores in report["models"].values():
        assert set(scores) >= {
            "mae",
            "rmse",
            "mase",
            "pinball",
            "coverage_90",
            "width_90",
            "winkler_90",
        }
        assert all(len(v) == 3 for v in scores.values())
        assert all(np.isfinite(scores["mae"]))
    assert (out / "backtest.html").stat().st_size > 1000


def test_backtest_rejects_a_corrupt_model(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metadata.json").write_text("{}")
    test = _trace(tmp_path / "t.csv", ("x",), seed=3, n_rows=100)
    result = runner.invoke(
        app,
        [
            "backtest",
            "--model",
            str(tmp_path / "m"),
            "--trace",
            str(test),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert "not a wattwheel-forecast-model" in result.output


def test_train_and_backtest_with_a_feed(tmp_path: Path) -> None:
    a = _trace(tmp_path / "a.csv", ("r1", "r2"), seed=1, n_rows=500)
    test = _trace(tmp_path / "test.csv", ("x",), seed=3, n_rows=300)
    feed = tmp_path / "weather.csv"
    rows = [f"{t},{20 + (t // 3600) % 5}" for t in range(0, 500 * 300, 900)]
    feed.write_text("timestamp,temp_c\n" + "\n".join(rows) + "\n")
    model = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "train",
            "--trace",
            str(a),
            "--out",
            str(model),
            "--epochs",
            "1",
            "--lookback",
            "8",
            "--hidden",
            "4",
            "--exog",
            str(feed),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["model"]["trained"]["exog_names"] == ["temp_c"]
    assert "--exog" in meta["command"]
    out = tmp_path / "bt"
    args = ["backtest", "--model", str(model), "--trace", str(test), "--out", str(out)]
    result = runner.invoke(app, [*args, "--stride", "9", "--ar-lags", "4", "--exog", str(feed)])
    assert result.exit_code == 0, result.output
    # Without the feed the model cannot run: a clear error, not a crash.
    result = runner.invoke(app, [*args, "--stride", "9"])
    assert result.exit_code == 2 and "temp_c" in result.output


def test_bad_feed_is_named(tmp_path: Path) -> None:
    a = _trace(tmp_path / "a.csv", ("r1",), seed=1, n_rows=300)
    feed = tmp_path / "bad.csv"
    feed.write_text("timestamp,temp_c\n0,20\n300,warm\n")
    result = runner.invoke(
        app, ["train", "--trace", str(a), "--out", str(tmp_path / "m"), "--exog", str(feed)]
    )
    assert result.exit_code == 2
    assert "line 3" in result.output and "temp_c" in result.output


def test_statsforecast_flag_without_the_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the dev extra installs statsforecast: the machine without it is made here
    monkeypatch.setattr(forecast_cmds, "statsforecast_available", lambda: False)
    a = _trace(tmp_path / "a.csv", ("r1",), seed=1, n_rows=400)
    model = tmp_path / "model"
    args = ["train", "--trace", str(a), "--out", str(model), "--epochs", "1", "--lookback", "8"]
    assert runner.invoke(app, [*args, "--hidden", "4"]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "backtest",
            "--model",
            str(model),
            "--trace",
            str(a),
            "--out",
            str(tmp_path / "o"),
            "--statsforecast",
        ],
    )
    assert result.exit_code == 2 and "pip install statsforecast" in result.output
