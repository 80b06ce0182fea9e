"""``wattwheel serve --learn`` as a real process: three days of PDU telemetry already in its
SQLite store, the learner rebuilds the site's domain demand from it, scores the shipped model,
fine-tunes it in the worker process, and ``GET /api/v1/models`` shows the shadow with its
parent and the live model's rolling-backtest metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import free_port
from wattwheel.adapters.model_jobs import torch_missing
from wattwheel.adapters.store import open_store
from wattwheel.domain.telemetry import PowerSample
from wattwheel.sim.trace_io import read_trace

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "src/wattwheel/scenarios/cella-oversub/trace.csv"
WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
DAYS = 3


def _store_history(db: Path, end_s: float) -> None:
    """The bundled site's three PDUs (racks cella_pdu6/7/8), 5-minute readings ending now."""
    trace = read_trace(TRACE)
    rows, power = DAYS * 288, trace.power_w
    store = open_store(f"sqlite:///{db}")
    samples = [
        PowerSample("pdu", rack, None, end_s - 300.0 * (rows - i), float(power[i, j]), "pdu")
        for i in range(rows)
        for j, rack in enumerate(trace.rack_ids)
    ]
    store.write_telemetry(samples)
    store.close()


def _models(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{url}/models", timeout=5.0)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


@pytest.mark.skipif(torch_missing() is not None, reason="fine-tuning needs torch")
def test_serve_learn_fine_tunes_on_stored_telemetry_and_lists_the_versions(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.db"
    _store_history(db, time.time())
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1"
    args = ["serve", "--port", str(port), "--db", f"sqlite:///{db}", "--model", "auto"]
    args += ["--learn", "--learn-dir", str(tmp_path / "models"), "--learn-cycle-s", "2"]
    args += ["--finetune-every-s", "1"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            WATTWHEEL + args,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    body: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + 300.0  # spawn, import torch, score, fine-tune: loaded box
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            body = _models(url)
            # The list is read from the store, the learner's state from the control process's
            # latest push (every 0.2 s): wait until both show the new shadow.
            if (
                body
                and any(m["version"] == "v1" for m in body["models"])
                and body["learner"].get("shadow") == "v1"
            ):
                break
            time.sleep(1.0)
        assert body is not None, log.read_text()[-3000:]
        versions = {m["version"]: m for m in body["models"]}
        assert "v1" in versions, (body, log.read_text()[-3000:])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    v0, v1 = versions["v0"], versions["v1"]
    assert v0["status"] == "live" and v0["parent"] is None
    assert v0["metrics"]["scored_origins"] > 500  # the stored days, minus the model's lookback
    assert v0["metrics"]["rolling_mae"] > 0
    assert v1["parent"] == "v0" and v1["status"] == "shadow"
    assert v1["metrics"]["train_rows"] == DAYS * 288
    assert (Path(v1["model_dir"]) / "model.onnx").is_file()
    assert body["learner"]["fine_tuning"] == "on"
    assert body["learner"]["shadow"] == "v1"
