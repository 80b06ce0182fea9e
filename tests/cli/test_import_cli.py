"""``wattwheel import ...`` end to end through Typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wattwheel.cli import _register, app
from wattwheel.sim.trace_io import read_trace

_register()
runner = CliRunner()


def _google(tmp_path: Path, name: str, utils: list[float]) -> Path:
    path = tmp_path / name
    lines = [f"{i},{600_000_000 + 300_000_000 * i},pdu,{u}" for i, u in enumerate(utils)]
    path.write_text("index,time,pdu,measured_power_util\n" + "\n".join(lines) + "\n")
    return path


def test_import_google_power(tmp_path: Path) -> None:
    a = _google(tmp_path, "cella_pdu6.csv", [0.5, 0.6, 0.7])
    b = _google(tmp_path, "cella_pdu7.csv", [0.4, 0.4, 0.4])
    out = tmp_path / "out" / "trace.csv"
    result = runner.invoke(
        app, ["import", "google-power", str(a), str(b), "--rating-kw", "1000", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "2 rack(s) x 3 steps of 300 s" in result.output
    trace = read_trace(out)
    assert trace.rack_ids == ("cella_pdu6", "cella_pdu7")
    np.testing.assert_allclose(trace.power_w, [[5e5, 4e5], [6e5, 4e5], [7e5, 4e5]])


def test_import_google_power_bad_file_exits_2_with_message(tmp_path: Path) -> None:
    a = _google(tmp_path, "p.csv", [0.5, 2.0])
    result = runner.invoke(
        app,
        ["import", "google-power", str(a), "--rating-kw", "1000", "--out", str(tmp_path / "o.csv")],
    )
    assert result.exit_code == 2
    assert "line 3" in result.output and "outside [0, 1.5]" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_import_utilization(tmp_path: Path) -> None:
    src = tmp_path / "u.csv"
    src.write_text("cpu_util_percent,mem\n0,1\n50,1\n100,1\n")
    out = tmp_path / "t.csv"
    args = ["import", "utilization", str(src), "--step-s", "10", "--idle-w", "100"]
    args += ["--max-w", "300", "--servers", "6", "--racks", "2", "--noise", "0", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    trace = read_trace(out)
    assert trace.rack_ids == ("rack01", "rack02")
    np.testing.assert_allclose(trace.power_w[:, 0], [300, 600, 900])  # 3 x (100 + 200 u)
    np.testing.assert_allclose(trace.power_w[:, 1], [300, 300, 600])  # lagged by one row


def test_import_utilization_bad_option(tmp_path: Path) -> None:
    src = tmp_path / "u.csv"
    src.write_text("cpu_util_percent\n0\n50\n")
    args = ["import", "utilization", str(src), "--step-s", "10", "--idle-w", "400"]
    args += ["--max-w", "300", "--servers", "6", "--out", str(tmp_path / "t.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "max_w = 300.0: must be >= idle_w" in result.output


def test_import_ai_training(tmp_path: Path) -> None:
    out = tmp_path / "ai.csv"
    args = ["import", "ai-training", "--nodes", "4", "--racks", "2", "--duration-s", "120"]
    result = runner.invoke(app, [*args, "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trace = read_trace(out)
    assert trace.rack_ids == ("gpu01", "gpu02") and trace.n_steps == 120
    per_node_kw = trace.power_w[:, 0] / 4 / 1e3
    assert per_node_kw.min() == pytest.approx(1.6, abs=0.15)
    assert 6.0 <= per_node_kw.max() <= 7.5
    again = tmp_path / "again.csv"
    runner.invoke(app, [*args, "--seed", "3", "--out", str(again)])
    assert again.read_text() == out.read_text()


def test_import_ai_training_bad_period(tmp_path: Path) -> None:
    args = ["import", "ai-training", "--nodes", "4", "--racks", "2", "--duration-s", "120"]
    result = runner.invoke(app, [*args, "--period-s", "2", "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2
    assert "period_s = 2.0: must exceed" in result.output


def test_import_ai_training_realistic(tmp_path: Path) -> None:
    out = tmp_path / "jobs.csv"
    args = ["import", "ai-training", "--realistic", "--nodes", "4", "--racks", "3"]
    more = ["--duration-s", "60", "--step-s", "0.1", "--seed", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, *more])
    assert result.exit_code == 0, result.output
    trace = read_trace(out)
    assert trace.rack_ids == ("gpu01", "gpu02", "gpu03") and trace.n_steps == 600
    assert trace.power_w.max() <= 3 * 4 * 10_000.0  # never above every node at peak
    bad = runner.invoke(app, [*args[:-1], "1", *more])
    assert bad.exit_code == 2
    assert "racks = 1" in bad.output
