"""Model directories: round trip, and clear errors for corrupt or incompatible artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from wattwheel.adapters.model_artifact import (
    METADATA,
    ONNX,
    WEIGHTS,
    ModelArtifactError,
    describe_training_data,
    load_forecaster,
    load_model,
    read_metadata,
    save_model,
    shipped_model_dir,
)
from wattwheel.forecast.base import Forecaster, History
from wattwheel.forecast.lstm import LSTMConfig, LSTMForecaster

TINY = LSTMConfig(lookback=8, hidden=6, epochs=1, scale_rows=24, max_train_samples=500)


def _history(n_rows: int = 400) -> History:
    rng = np.random.default_rng(3)
    ts = 300.0 * np.arange(n_rows)
    values = 500.0 + np.cumsum(rng.normal(0, 2.0, size=(n_rows, 2)), axis=0)
    return History(ts, ("a", "b"), values)


@pytest.fixture(scope="module")
def model() -> LSTMForecaster:
    m = LSTMForecaster(TINY)
    m.fit(_history())
    return m


@pytest.fixture
def model_dir(tmp_path: Path, model: LSTMForecaster) -> Path:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,rack_id,power_w\n0,a,1\n")
    save_model(model, tmp_path / "m", describe_training_data([trace]), command="wattwheel train")
    return tmp_path / "m"


@pytest.mark.parametrize("backend", ["torch", "onnx", "auto"])
def test_round_trip_predicts_the_same(model: LSTMForecaster, model_dir: Path, backend: str) -> None:
    loaded = load_model(model_dir, backend=backend)
    assert (loaded.onnx is not None) == (backend != "torch")
    hist = _history(300)
    # Watts around 500; the saved calibration pools are float32, the graph runs in float32.
    np.testing.assert_allclose(
        loaded.predict(hist, [300, 900]).values, model.predict(hist, [300, 900]).values, rtol=1e-6
    )


def test_metadata_records_what_reproduces_the_model(model_dir: Path) -> None:
    meta = read_metadata(model_dir)
    assert meta["horizons_min"] == [5.0, 10.0, 15.0]
    assert meta["quantiles"] == [0.05, 0.5, 0.95]
    assert meta["lookback"] == 8 and meta["step_s"] == 300.0 and meta["seed"] == 0
    assert len(meta["training_data"]["sha256"]) == 64
    assert {"torch", "numpy", "wattwheel", "python"} <= set(meta["versions"])
    assert "val_mae_norm" in meta["validation_metrics"]
    assert meta["command"] == "wattwheel train"


def test_corrupt_weights_rejected(model_dir: Path) -> None:
    (model_dir / WEIGHTS).write_bytes(b"not a torch file")
    with pytest.raises(ModelArtifactError, match="corrupt"):
        load_model(model_dir)


def test_unreadable_weights_with_matching_hash_rejected(model_dir: Path) -> None:
    (model_dir / WEIGHTS).write_bytes(b"garbage")
    meta = json.loads((model_dir / METADATA).read_text())
    meta["files"][WEIGHTS] = hashlib.sha256(b"garbage").hexdigest()
    (model_dir / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="cannot be read"):
        load_model(model_dir, backend="torch")


def test_unreadable_onnx_graph_with_matching_hash_rejected(model_dir: Path) -> None:
    (model_dir / ONNX).write_bytes(b"garbage")
    meta = json.loads((model_dir / METADATA).read_text())
    meta["files"][ONNX] = hashlib.sha256(b"garbage").hexdigest()
    (model_dir / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match=r"model\.onnx cannot be read"):
        load_model(model_dir, backend="onnx")


def test_incompatible_configuration_rejected(model_dir: Path) -> None:
    meta = json.loads((model_dir / METADATA).read_text())
    meta["model"]["config"]["hidden"] = 64  # weights were trained with 6 units
    (model_dir / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="incompatible"):
        load_model(model_dir, backend="torch")
    meta["model"]["config"]["lookback"] = 9  # the graph was exported with 8 steps
    (model_dir / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="incompatible"):
        load_model(model_dir, backend="onnx")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.update(format="something-else"), "not a wattwheel-forecast-model"),
        (lambda m: m.update(kind="prophet"), "unknown model kind"),
    ],
)
def test_incompatible_metadata_rejected(model_dir: Path, edit: object, message: str) -> None:
    meta = json.loads((model_dir / METADATA).read_text())
    edit(meta)  # type: ignore[operator]
    (model_dir / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match=message):
        load_model(model_dir)


def test_missing_and_invalid_metadata(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelArtifactError, match="not a directory"):
        load_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelArtifactError, match="missing"):
        load_model(empty)
    (model_dir / METADATA).write_text("{not json")
    with pytest.raises(ModelArtifactError, match="not valid JSON"):
        load_model(model_dir)


def test_load_forecaster_baselines_and_directories(model_dir: Path) -> None:
    assert load_forecaster("persistence").name == "persistence"
    loaded = load_forecaster(model_dir)
    assert isinstance(loaded, Forecaster) and loaded.name == "lstm"


def test_shipped_model_loads_and_predicts() -> None:
    shipped = load_forecaster()
    meta = read_metadata(shipped_model_dir())
    assert meta["command"].startswith("wattwheel train")
    assert meta["step_s"] == 300.0
    rng = np.random.default_rng(0)
    ts = 600.0 + 300.0 * np.arange(400)
    values = 700_000.0 + np.cumsum(rng.normal(0, 2_000, (400, 3)), axis=0)
    fc = shipped.predict(History(ts, ("p6", "p7", "p8"), values), [300, 600, 900])
    assert fc.values.shape == (3, 3, 3)
    assert np.all(np.diff(fc.values, axis=2) >= 0)
    np.testing.assert_allclose(fc.point[:, 0] / values[-1], 1.0, atol=0.05)
