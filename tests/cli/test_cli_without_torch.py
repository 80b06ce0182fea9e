"""``wattwheel[live]`` and ``make demo`` install no torch (issue 11): the shipped models run on
ONNX Runtime, and training says what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Hide torch from the import system, then run wattwheel as a user would.
PROBE = """
import sys
sys.modules["torch"] = None  # import torch -> ModuleNotFoundError
{body}
"""

FORECAST = """
import numpy as np
from wattwheel.adapters.model_artifact import load_forecaster, shipped_model_for_step
from wattwheel.forecast.base import History
for step in (300.0, 10.0, 1.0):
    model_dir = shipped_model_for_step(step)
    assert model_dir is not None, step
    fc = load_forecaster(model_dir)
    lstm = getattr(fc.inner, "inner", fc.inner)  # under the AR blend, if the model has one
    assert lstm.onnx is not None and lstm.net is None, step
    ts = step * np.arange(400)
    hist = History(ts, ("a", "b"), 5000.0 + np.cumsum(np.ones((400, 2)), axis=0))
    out = fc.predict(hist, [60.0, 300.0])
    fc.update(hist, [60.0, 300.0])
    assert np.all(np.isfinite(out.values)), step
print("ok")
"""

CLI = """
sys.argv = ["wattwheel", *sys.argv[1:]]
from wattwheel.cli import main
main()
"""


def _run(body: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_shipped_models_forecast_without_torch() -> None:
    res = _run(FORECAST)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_train_without_torch_says_what_to_install(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = [f"{300 * i},a,{1000 + i % 7}" for i in range(600)]
    trace.write_text("timestamp,rack_id,power_w\n" + "\n".join(rows) + "\n")
    res = _run(CLI, "train", "--trace", str(trace), "--out", str(tmp_path / "m"))
    assert res.returncode == 2
    assert "wattwheel[train]" in res.stderr
