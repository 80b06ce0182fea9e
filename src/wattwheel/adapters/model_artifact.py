"""Forecast model directories: save and load the LSTM with its metadata.

A model directory holds:

- ``metadata.json``: ``format`` (``"wattwheel-forecast-model"``), ``format_version``, ``kind``
  (``"lstm"``), the model configuration (horizons, quantiles, lookback, ...) and trained state
  (``step_s``, exogenous columns), the training data (file names, rows, series, sha256 of each
  file and of all of them), library versions (torch, numpy, wattwheel, python), validation
  metrics, seed, epochs, the command that reproduces it, and the sha256 of the other two files;
- ``weights.pt``: the network's ``state_dict`` (loaded with ``weights_only=True``: a model
  directory cannot run code), for training and fine-tuning (torch);
- ``model.onnx``: the same network exported to ONNX, for inference with ONNX Runtime (no torch;
  a directory written before this file existed is run with torch);
- ``calibration.npz``: the conformal residual pools per horizon step (float32).

Anything missing, corrupt (hash mismatch, unreadable) or incompatible (another format, a newer
format version, weights that do not fit the configuration) raises :class:`ModelArtifactError`
naming the file and the problem.

:func:`load_forecaster` is the one call the simulator, the predictive policy and the live
runtime need; without an argument it loads the model shipped in ``wattwheel/data/models``.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

import wattwheel
from wattwheel.domain.errors import WattwheelError
from wattwheel.forecast.base import Forecaster
from wattwheel.forecast.baselines import (
    ARForecaster,
    CalibratedPointForecaster,
    PersistenceForecaster,
    SeasonalNaiveForecaster,
)
from wattwheel.forecast.conformal import ConformalForecaster
from wattwheel.forecast.hybrid import (
    DEFAULT_AR_ROWS,
    DEFAULT_EXTRA_LAGS,
    ARBlendForecaster,
    OnlineBlendForecaster,
)
from wattwheel.forecast.lstm import LSTMForecaster

FORMAT = "wattwheel-forecast-model"
FORMAT_VERSION = 1
METADATA, WEIGHTS, CALIBRATION = "metadata.json", "weights.pt", "calibration.npz"
ONNX = "model.onnx"
#: ``load_model`` backends: ONNX Runtime when the directory has the graph (else torch), or one.
BACKENDS = ("auto", "onnx", "torch")
#: Residuals per horizon kept in a saved model (keeps the directory small).
SAVED_RESIDUALS = 4000
SHIPPED_MODEL = "dcutil-300s-lstm"
#: Names accepted by :func:`load_forecaster` instead of a directory.
BASELINES: dict[str, type[CalibratedPointForecaster]] = {
    "persistence": PersistenceForecaster,
    "seasonal_naive": SeasonalNaiveForecaster,
    "ar": ARForecaster,
}


class ModelArtifactError(WattwheelError):
    """A model directory is missing, corrupt or incompatible with this wattwheel."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"model {path}: {why}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_training_data(paths: Sequence[Path]) -> dict[str, Any]:
    """File names and hashes of the training traces, and one hash over all of them."""
    files = [{"name": p.name, "sha256": file_sha256(p)} for p in paths]
    combined = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    return {"files": files, "sha256": combined}


def save_model(
    model: LSTMForecaster,
    model_dir: Path,
    training_data: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``model`` into ``model_dir`` (created if needed). Returns the metadata path."""
    import torch

    from wattwheel.forecast import lstm_torch

    model_dir.mkdir(parents=True, exist_ok=True)
    meta, weights, calibration = model.to_state()
    torch.save(weights, model_dir / WEIGHTS)
    lstm_torch.export_onnx(model, str(model_dir / ONNX))
    pools = {
        f"step_{k}": np.asarray(v, dtype=np.float32)[-SAVED_RESIDUALS:]
        for k, v in calibration.items()
    }
    np.savez_compressed(model_dir / CALIBRATION, **pools)  # type: ignore[arg-type]
    cfg = meta["config"]
    trained = meta["trained"]
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "lstm",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "horizons_min": list(cfg["horizons_min"]),
        "quantiles": list(cfg["quantiles"]),
        "lookback": cfg["lookback"],
        "step_s": trained["step_s"],
        "seed": cfg["seed"],
        "epochs": cfg["epochs"],
        "epochs_run": trained["epochs_run"],
        "validation_metrics": trained["metrics"],
        "training_data": dict(training_data or {}),
        "command": command,
        "versions": {
            "wattwheel": wattwheel.__version__,
            "torch": torch.__version__,
            "onnx_opset": _opset(model_dir / ONNX),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "files": {
            WEIGHTS: file_sha256(model_dir / WEIGHTS),
            ONNX: file_sha256(model_dir / ONNX),
            CALIBRATION: file_sha256(model_dir / CALIBRATION),
        },
        "model": meta,
    }
    path = model_dir / METADATA
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def _opset(path: Path) -> int | None:
    try:
        import onnx
    except ImportError:
        return None
    return int(max(o.version for o in onnx.load(str(path)).opset_import))


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The checked ``metadata.json`` of a model directory."""
    if not model_dir.is_dir():
        raise ModelArtifactError(model_dir, "is not a directory")
    path = model_dir / METADATA
    if not path.is_file():
        raise ModelArtifactError(model_dir, f"{METADATA} is missing (not a model directory?)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelArtifactError(model_dir, f"{METADATA} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelArtifactError(model_dir, f"{METADATA} is not a {FORMAT} file")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelArtifactError(
            model_dir,
            f"format_version {version!r} is not supported "
            f"(this wattwheel reads 1..{FORMAT_VERSION})",
        )
    if document.get("kind") != "lstm":
        raise ModelArtifactError(model_dir, f"unknown model kind {document.get('kind')!r}")
    for key in ("model", "files"):
        if not isinstance(document.get(key), dict):
            raise ModelArtifactError(model_dir, f"{METADATA} lacks the {key!r} section")
    return document


def load_model(model_dir: Path, backend: str = "auto") -> LSTMForecaster:
    """Load an LSTM model directory, checking format, hashes and shapes.

    ``backend``: ``"onnx"`` runs the exported graph with ONNX Runtime (no torch needed),
    ``"torch"`` the weights with torch (needed to fine-tune or re-save), ``"auto"`` ONNX when the
    directory has ``model.onnx`` and ONNX Runtime is installed, else torch.
    """
    from wattwheel.forecast.lstm_onnx import onnx_available

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    model_dir = Path(model_dir)
    document = read_metadata(model_dir)
    has_onnx = ONNX in document["files"]
    if backend == "auto":
        backend = "onnx" if has_onnx and onnx_available() else "torch"
    if backend == "onnx" and not has_onnx:
        raise ModelArtifactError(model_dir, f"has no {ONNX} (re-train it, or load it with torch)")
    for name in {WEIGHTS, CALIBRATION, *document["files"]}:
        _check_file(model_dir, name, document["files"].get(name))
    try:
        with np.load(model_dir / CALIBRATION) as npz:
            calibration = {k.removeprefix("step_"): npz[k].astype(np.float64).tolist() for k in npz}
    except Exception as exc:  # zip / npy format errors
        raise ModelArtifactError(model_dir, f"{CALIBRATION} cannot be read: {exc}") from None
    try:
        if backend == "onnx":
            return _load_onnx(model_dir, document, calibration)
        return _load_torch(model_dir, document, calibration)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelArtifactError(model_dir, f"incompatible model: {exc}") from None


def _load_onnx(
    model_dir: Path, document: Mapping[str, Any], calibration: dict[str, list[list[float]]]
) -> LSTMForecaster:
    from wattwheel.forecast.lstm_onnx import OnnxRunner

    try:
        runner = OnnxRunner((model_dir / ONNX).read_bytes())
    except ValueError as exc:
        raise ModelArtifactError(model_dir, f"{ONNX} cannot be read: {exc}") from None
    model = LSTMForecaster.from_onnx(document["model"], runner, calibration)
    expected = model.net_shapes()
    if runner.shapes() != expected:
        raise ModelArtifactError(
            model_dir,
            f"incompatible model: {ONNX} has input/output shapes {runner.shapes()}, the "
            f"configuration says {expected}",
        )
    return model


def _load_torch(
    model_dir: Path, document: Mapping[str, Any], calibration: dict[str, list[list[float]]]
) -> LSTMForecaster:
    try:
        import torch
    except ImportError:
        raise ModelArtifactError(
            model_dir,
            f"torch is not installed and the directory has no {ONNX}: install "
            "'wattwheel[train]' or re-train the model with this wattwheel",
        ) from None
    try:
        weights = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle/zip
        raise ModelArtifactError(model_dir, f"{WEIGHTS} cannot be read: {exc}") from None
    return LSTMForecaster.from_state(document["model"], weights, calibration)


def _check_file(model_dir: Path, name: str, expected: object) -> None:
    path = model_dir / name
    if not path.is_file():
        raise ModelArtifactError(model_dir, f"{name} is missing")
    if not isinstance(expected, str):
        raise ModelArtifactError(model_dir, f"{METADATA} has no sha256 for {name}")
    actual = file_sha256(path)
    if actual != expected:
        raise ModelArtifactError(
            model_dir,
            f"{name} is corrupt: sha256 {actual[:12]}... does not match the metadata's "
            f"{expected[:12]}...",
        )


def shipped_models_root() -> Path:
    """Directory holding the models shipped with wattwheel (one sub-directory each)."""
    return Path(str(resources.files("wattwheel") / "data" / "models"))


def shipped_model_dir() -> Path:
    """Directory of the default shipped model (5-minute steps; see its metadata for its data)."""
    return shipped_models_root() / SHIPPED_MODEL


def shipped_model_for_step(step_s: float) -> Path | None:
    """The shipped model trained at this time step (``step_s`` in its metadata), if any."""
    root = shipped_models_root()
    if not root.is_dir():
        return None
    for model_dir in sorted(p for p in root.iterdir() if (p / METADATA).is_file()):
        try:
            trained = float(read_metadata(model_dir)["step_s"])
        except (ModelArtifactError, KeyError, TypeError, ValueError):
            continue
        if abs(trained - step_s) <= 1e-6 * max(1.0, step_s):
            return model_dir
    return None


def training_summary(model_dir: Path) -> dict[str, Any]:
    """What a model directory says about the data it was trained on (for bench.json)."""
    document = read_metadata(Path(model_dir))
    return {
        "model": document.get("kind", "lstm"),
        "model_dir": str(model_dir),
        "step_s": document.get("step_s"),
        "created_utc": document.get("created_utc"),
        "training_data": document.get("training_data") or {},
        "command": document.get("command"),
    }


def load_forecaster(model: str | Path | None = None, online: bool = True) -> Forecaster:
    """A fresh forecaster: a model directory, a baseline name, or (None) the shipped model.

    Args:
        model: a model directory; ``"persistence"``, ``"seasonal_naive"`` or ``"ar"`` for a
            baseline (AR must then be fitted before use); ``"lstm"`` or None for the shipped LSTM.
        online: wrap a model in a :class:`~wattwheel.forecast.conformal.ConformalForecaster`
            whose calibration the caller updates explicitly (``update``) as data arrive
            (baselines calibrate themselves through their own ``update``).
    """
    if isinstance(model, str) and model in BASELINES:
        return BASELINES[model]()
    path = shipped_model_dir() if model is None or str(model) == "lstm" else Path(model)
    inner = with_ar_blend(path, load_model(path))
    return ConformalForecaster(inner) if online else inner


def with_ar_blend(model_dir: Path, model: Forecaster, online: bool = True) -> Forecaster:
    """``model`` combined with local ARs as the directory's ``metadata.json`` ``ar_blend`` says,
    else itself: an :class:`~wattwheel.forecast.hybrid.OnlineBlendForecaster` whose weights
    start at the section's (chosen on a validation split of its training data) and learn from
    the components' realised errors at each explicit ``update``; ``online=False`` (or
    ``"online": false`` in the section): the fixed weights only
    (:class:`~wattwheel.forecast.hybrid.ARBlendForecaster`)."""
    blend = read_metadata(Path(model_dir)).get("ar_blend")
    if not isinstance(blend, dict):
        return model
    online = online and bool(blend.get("online", True))
    try:
        horizons_s = [float(h) for h in blend["horizons_s"]]
        inner_weight = [float(w) for w in blend["inner_weight"]]
        ar_rows = int(blend.get("ar_rows", DEFAULT_AR_ROWS))
        ar_lags = int(blend.get("ar_lags", 24))
        if not online:
            return ARBlendForecaster(model, horizons_s, inner_weight, ar_rows, ar_lags)
        return OnlineBlendForecaster(
            model,
            horizons_s,
            inner_weight,
            ar_rows,
            ar_lags,
            extra_lags=[int(x) for x in blend.get("extra_lags", DEFAULT_EXTRA_LAGS)],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelArtifactError(Path(model_dir), f"bad ar_blend section: {exc}") from None
