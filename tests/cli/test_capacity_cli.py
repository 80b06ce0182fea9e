"""``wattwheel capacity`` through the CLI: outputs, resume from the cache, clear errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from wattwheel.cli import _register, app
from wattwheel.sim.scenario import bundled_site

runner = CliRunner()
_register()
SMALL = [
    "--days",
    "1",
    "--policies",
    "reactive",
    "--kes-fractions",
    "0.05",
    "--step-pct",
    "5",
    "--max-factor",
    "1.1",
    "--resolution",
    "6",
    "--serial",
]


def _capacity(out: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["capacity", "--site", str(bundled_site()), "--out", str(out), *args])
    return res.exit_code, " ".join(res.output.split())  # the console may wrap a long line


def test_serial_run_writes_json_and_report_and_resumes(tmp_path: Path) -> None:
    code, output = _capacity(tmp_path, *SMALL)
    assert code == 0, output
    payload = json.loads((tmp_path / "capacity.json").read_text())
    point = payload["policies"]["reactive"]["kes_fraction"]["0.05"]
    assert payload["baseline_servers"] == 120
    assert point["max_servers"] >= 1 and point["binding"]
    assert payload["trace"]["steps"] == 288 and payload["trace"]["sha256"]
    assert payload["forecaster_trained_on"] is None  # no policy here forecasts
    assert payload["limits"]["user"] == {
        "noncritical_capped_pct": 1.0,
        "reserve_hours_per_year": 50,
    }
    html = (tmp_path / "capacity.html").read_text()
    assert "plotly" in html and point["binding"] in html
    simulated = len(list((tmp_path / "cache").glob("*.json")))
    assert simulated == payload["cache"]["hits"] + len(point["candidates"]) >= 2
    # Run again: every candidate comes from the cache, the answer is the same.
    code, output = _capacity(tmp_path, *SMALL)
    assert code == 0, output
    again = json.loads((tmp_path / "capacity.json").read_text())
    assert again["policies"] == payload["policies"]
    assert again["cache"]["hits"] == simulated


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_cluster_is_one_clear_line(tmp_path: Path) -> None:
    port = _closed_port()
    args = [a for a in SMALL if a != "--serial"]
    code, output = _capacity(tmp_path, *args, "--ray-address", f"127.0.0.1:{port}")
    assert code == 2
    assert output.count("error:") == 1 and output.startswith("error:"), output
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused" in output
    assert not (tmp_path / "capacity.json").exists()


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    for args, needle in (
        (["--limits", "reserve_hours<=5"], "unknown limit"),
        (["--policies", "none,magic"], "--policies"),
        (["--kes-fractions", "0,2"], "[0, 1]"),
        (["--days", "400"], "outside the trace"),
        (["--growth", "copies"], "--growth"),
        (["--ray-address", "127.0.0.1:1"], "exclude each other"),
    ):
        code, output = _capacity(tmp_path, "--serial", *args)
        assert code == 2, (args, output)
        assert needle in output, (args, output)
    code, output = _capacity(tmp_path, "--ray-address", "nonsense")
    assert code == 2 and "HOST:PORT" in output, output
