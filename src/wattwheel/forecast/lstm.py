"""A global LSTM quantile forecaster (trained with PyTorch, run with ONNX Runtime or PyTorch on
CPU) with split-conformal calibration.

One model for every series: inputs are normalised per series by a rolling volatility scale
(:mod:`wattwheel.forecast.features`), so it transfers to racks it never saw, of any size. It
predicts the *change* from the last value at each configured horizon directly (a persistence
residual: at 5-15 minutes persistence is already strong, the network only has to learn the
correction), as quantiles that cannot cross (a median plus cumulative softplus increments), and
is trained with the pinball loss. A linear skip from the input window to the median adds an AR
term the LSTM corrects.

After training, quantile offsets per horizon are calibrated on a held-out tail of the training
data (split conformal, :class:`~wattwheel.forecast.calibration.ResidualCalibrator`), and
:meth:`LSTMForecaster.calibrate` replaces that pool from another history.
:meth:`LSTMForecaster.predict` is side-effect free (DESIGN §8): online calibration from new data
is the job of :class:`~wattwheel.forecast.conformal.ConformalForecaster`, an explicit wrapper
over any forecaster.
:meth:`LSTMForecaster.fine_tune` continues training on new data.

This module is numpy only: training and torch inference live in :mod:`wattwheel.forecast.lstm_torch`
(imported only when needed, so a controller host runs the exported model through ONNX Runtime,
:mod:`wattwheel.forecast.lstm_onnx`, without torch installed).

Pure: no file I/O (see ``wattwheel.adapters.model_artifact``), no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from wattwheel.forecast.base import DEFAULT_HORIZONS_MIN, DEFAULT_QUANTILES, Forecast, History
from wattwheel.forecast.calibration import ResidualCalibrator, horizon_steps
from wattwheel.forecast.features import (
    N_BASE_CHANNELS,
    SeriesArrays,
    future_exog_at,
    prepare,
    targets,
    windows,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Called after each epoch with (epoch, epochs, train loss, validation loss).
ProgressFn = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class LSTMConfig:
    """Hyper-parameters (all plain data: they go into the model's metadata).

    Attributes:
        horizons_min: horizons the network predicts directly, minutes.
        quantiles: quantile levels, increasing, in (0, 1).
        lookback: input window, in grid steps of the trace's own resolution.
        hidden: LSTM hidden units.
        scale_rows: rows of the rolling volatility scale.
        epochs: maximum training epochs (early stopping on the validation tail).
        patience: epochs without validation improvement before stopping.
        batch_size, lr, weight_decay: optimiser settings (AdamW).
        val_fraction: time tail of each training series held out for early stopping and for the
            split-conformal calibration.
        max_train_samples: cap on (origin, series) pairs per epoch (long 10 s traces).
        seed: seeds numpy and torch: same data + seed + threads -> same model.
        num_threads: torch intra-op threads for training (one: this small LSTM gains little
            from a second thread, and loses a lot when the cores are shared).
        calibration_window: residuals kept per horizon for calibration.
    """

    horizons_min: tuple[float, ...] = tuple(float(h) for h in DEFAULT_HORIZONS_MIN)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    lookback: int = 48
    hidden: int = 32
    scale_rows: int = 288
    epochs: int = 30
    patience: int = 6
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.25
    max_train_samples: int = 100_000
    seed: int = 0
    num_threads: int = 1
    calibration_window: int = 20_000

    def __post_init__(self) -> None:
        if not self.horizons_min or any(h <= 0 for h in self.horizons_min):
            raise ValueError(f"horizons_min must be positive minutes, got {self.horizons_min!r}")
        if list(self.horizons_min) != sorted(set(self.horizons_min)):
            raise ValueError(f"horizons_min must increase, got {self.horizons_min!r}")
        if self.lookback < 2:
            raise ValueError(f"lookback must be at least 2 steps, got {self.lookback}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")

    @property
    def horizons_s(self) -> tuple[float, ...]:
        return tuple(60.0 * h for h in self.horizons_min)


@dataclass
class TrainedState:
    """What the model learned from data, besides the weights (saved in the metadata)."""

    step_s: float
    steps: tuple[int, ...]
    exog_names: tuple[str, ...] = ()
    exog_stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    epochs_run: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


class NetRunner(Protocol):
    """Runs the trained network: (B, L, C) windows and (B, F) future exog, float32, to (B, H, Q)
    normalised quantile changes (increasing along Q). Torch (``lstm_torch``) or ONNX Runtime
    (``lstm_onnx``)."""

    def __call__(self, x: NDArray[np.float32], future: NDArray[np.float32]) -> FloatArray: ...


class LSTMForecaster:
    """The global LSTM behind the Forecaster protocol. See the module docstring."""

    name = "lstm"

    def __init__(self, config: LSTMConfig | None = None, inference_threads: int = 1) -> None:
        """``inference_threads``: torch threads for ``predict`` (one is fastest for a batch of
        racks on a busy 2-core host: the extra thread mostly waits); training uses
        ``config.num_threads``."""
        self.config = config or LSTMConfig()
        self.inference_threads = inference_threads
        self.calibrator = ResidualCalibrator(self.config.quantiles, self.config.calibration_window)
        self.state: TrainedState | None = None
        #: The torch module (training, or inference where no ONNX graph is loaded).
        self.net: Any = None
        #: The exported graph under ONNX Runtime: inference without torch.
        self.onnx: NetRunner | None = None

    # ------------------------------------------------------------------------------ training
    def fit(self, history: History, progress: ProgressFn | None = None) -> None:
        """Train from scratch on every series of ``history`` and calibrate on its held-out tail
        (needs torch: ``pip install 'wattwheel[train]'``)."""
        _check(history)
        cfg = self.config
        steps = horizon_steps(cfg.horizons_s, history.step_s)
        names = tuple(sorted(history.exog))
        stats = {n: _standardise_stats(history.exog[n]) for n in names}
        self.state = TrainedState(
            step_s=history.step_s, steps=steps, exog_names=names, exog_stats=stats
        )
        self.onnx = None
        _torch().fit(self, history, progress)

    def fine_tune(
        self,
        history: History,
        epochs: int = 3,
        lr_factor: float = 0.3,
        progress: ProgressFn | None = None,
    ) -> None:
        """Continue training on new data at a lower learning rate, then recalibrate (torch)."""
        self._state()
        _check(history)
        self._check_step(history.step_s)
        _torch().fine_tune(self, history, epochs, lr_factor, progress)
        self.onnx = None  # the exported graph holds the old weights

    def split(
        self, n_rows: int, n_series: int
    ) -> tuple[tuple[IntArray, IntArray], tuple[IntArray, IntArray]]:
        """(origins, series) pairs for training and for the held-out time tail."""
        cfg, state = self.config, self._state()
        max_step = max(state.steps)
        split = int(n_rows * (1 - cfg.val_fraction))
        first = cfg.lookback - 1
        train_o = np.arange(first, split - max_step, dtype=np.int64)
        val_o = np.arange(max(split, first), n_rows - max_step, dtype=np.int64)
        return _pairs(train_o, n_series), _pairs(val_o, n_series)

    def batch(
        self, arrays: SeriesArrays, raw: FloatArray, origins: IntArray, series: IntArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(x, future exog, targets) for (origin, series) pairs, normalised units."""
        steps = self._state().steps
        x = windows(arrays, origins, series, self.config.lookback)
        fut = future_exog_at(arrays, origins, series, steps)
        y = targets(arrays, raw, origins, series, steps)
        return x, fut, y

    def calibrate_on(self, pred: FloatArray, y: FloatArray) -> None:
        """Split conformal: residuals of held-out (B, H, Q) predictions vs (B, H) targets become
        the calibration pool."""
        self.calibrator = ResidualCalibrator(self.config.quantiles, self.config.calibration_window)
        for h, step in enumerate(self._state().steps):
            self.calibrator.add(step, y[:, h, None] - pred[:, h, :])

    def validation_metrics(self, pred: FloatArray, y: FloatArray, loss: float) -> dict[str, Any]:
        """Normalised-unit MAE of the median vs persistence (a zero change), per horizon."""
        anchor = _median_index(self.config.quantiles)
        return {
            "val_pinball_norm": loss,
            "val_mae_norm": np.nanmean(np.abs(y - pred[:, :, anchor]), axis=0).round(5).tolist(),
            "val_persistence_mae_norm": np.nanmean(np.abs(y), axis=0).round(5).tolist(),
            "val_samples": int(y.shape[0]),
        }

    # ---------------------------------------------------------------------------- prediction
    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        """Calibrated quantiles (S, H, Q) in the history's units at ``horizons_s``.

        A history on a finer grid than the model's (its step an integer fraction of the
        model's, e.g. 10 s telemetry for a 5-minute model) is averaged into blocks of the model's
        step ending at the last row (wrap the model in a
        :class:`~wattwheel.forecast.conformal.ConformalForecaster` fed the raw readings to widen
        the intervals to the finer noise).

        Horizons between the trained ones are interpolated linearly in steps (a zero change at
        step 0). Beyond the longest trained horizon the model knows nothing better than its last
        horizon: the median change is held and the spread around it grows like a random walk
        (sqrt of the step ratio), so a planner with a longer horizon still gets an honest, wider
        band rather than an exception.
        """
        state = self._state()
        _check(history)
        cfg = self.config
        rows = max(cfg.lookback, cfg.scale_rows) + 1
        coarse = self._at_model_step(history, rows)
        steps = horizon_steps(horizons_s, state.step_s)
        rows = min(coarse.values.shape[0], rows)
        tail = coarse.tail(rows)
        arrays = self._arrays(tail, last_scale_only=True)
        n_series = tail.values.shape[1]
        origins = np.full(n_series, rows - 1, dtype=np.int64)
        series = np.arange(n_series, dtype=np.int64)
        if not np.all(np.isfinite(arrays.filled[-1])):
            bad = [tail.series_ids[i] for i in np.flatnonzero(~np.isfinite(arrays.filled[-1]))][:5]
            raise ValueError(
                f"no finite value in the recent history of series {bad}: cannot forecast"
            )
        x = windows(arrays, origins, series, cfg.lookback)
        fut = _future_block(arrays, future_exog, state, steps, origins, series)
        norm = self.run_net(x, fut)  # (S, Htrained, Q)
        last = arrays.filled[-1]
        scale = arrays.scale[-1]
        calibrated = norm + self.calibrator.offsets_for(state.steps)[None, :, :]
        at_steps = _interpolate_steps(calibrated, state.steps, steps, _median_index(cfg.quantiles))
        values = np.maximum.accumulate(
            last[:, None, None] + scale[:, None, None] * at_steps, axis=2
        )
        point = values[:, :, _median_index(cfg.quantiles)]
        return Forecast(
            issued_at_s=history.end_s,
            series_ids=history.series_ids,
            horizons_s=tuple(float(h) for h in horizons_s),
            quantiles=cfg.quantiles,
            values=values,
            point=point,
        )

    def calibrate(self, history: History) -> None:
        """Recalibrate (replace the residual pool) from a whole history, e.g. a new site's past."""
        state = self._state()
        _check(history)
        self._check_step(history.step_s)
        arrays = self._arrays(history)
        raw = np.asarray(history.values, dtype=np.float64)
        first = self.config.lookback - 1
        origins = np.arange(first, raw.shape[0] - max(state.steps), dtype=np.int64)
        if origins.size == 0:
            raise ValueError(f"history too short to calibrate: {raw.shape[0]} rows")
        o, s = _pairs(origins, raw.shape[1])
        x, fut, y = self.batch(arrays, raw, o, s)
        self.calibrate_on(self.run_net(x, fut), y)

    # ------------------------------------------------------------------------------ plumbing
    def _arrays(self, history: History, last_scale_only: bool = False) -> SeriesArrays:
        state = self._state()
        return prepare(
            history.timestamps_s,
            history.values,
            history.exog,
            state.exog_names,
            state.exog_stats,
            self.config.scale_rows,
            last_scale_only,
        )

    def _state(self) -> TrainedState:
        if self.state is None:
            raise ValueError(
                "the LSTM forecaster is not trained: call fit(history) or load a model"
            )
        return self.state

    def net_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window shape (L, C), output shape (H, Q)) the configuration implies."""
        state, cfg = self._state(), self.config
        channels = N_BASE_CHANNELS + len(state.exog_names)
        return (cfg.lookback, channels), (len(state.steps), len(cfg.quantiles))

    def run_net(self, x: FloatArray, future: FloatArray) -> FloatArray:
        """(B, H, Q) network output for (B, L, C) windows, through ONNX Runtime when the model
        was loaded from its exported graph, else through torch (built untrained if absent)."""
        xf = np.ascontiguousarray(x, dtype=np.float32)
        ff = np.ascontiguousarray(future, dtype=np.float32)
        if self.onnx is not None:
            return self.onnx(xf, ff)
        lstm_torch = _torch()
        if self.net is None:
            self.net = lstm_torch.new_net(self)
        return np.asarray(lstm_torch.run(self.net, xf, ff, self.inference_threads))

    def _at_model_step(self, history: History, rows: int) -> History:
        """``history`` itself on the model's grid, or its last ``rows`` blocks averaged onto it
        when its step divides the model's; otherwise the step mismatch error."""
        trained = self._state().step_s
        ratio = trained / history.step_s
        k = round(ratio)
        if math.isclose(ratio, 1.0, rel_tol=1e-6) or k < 2 or abs(ratio - k) > 1e-6:
            self._check_step(history.step_s)
            return history
        return coarsen(history, k, rows)

    def _check_step(self, step_s: float) -> None:
        trained = self._state().step_s
        if not math.isclose(step_s, trained, rel_tol=1e-6):
            raise ValueError(
                f"the model was trained on a {trained:g} s grid but the history has a "
                f"{step_s:g} s step: train a model at this resolution"
            )

    # Plain-data round trip (the adapter writes it to disk).
    def to_state(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[list[float]]]]:
        """(config + trained state as plain data, torch weights, calibration pools)."""
        state = self._state()
        if self.net is None:
            raise ValueError(
                "this model has no torch weights (loaded from ONNX only): it cannot be saved "
                "or fine-tuned; load it with torch installed"
            )
        meta = {"config": asdict(self.config), "trained": asdict(state)}
        return meta, _torch().weights_of(self.net), self.calibrator.state()

    @classmethod
    def from_meta(
        cls, meta: Mapping[str, Any], calibration: dict[str, list[list[float]]]
    ) -> LSTMForecaster:
        """A forecaster with configuration, trained state and calibration, but no network yet."""
        cfg_data = dict(meta["config"])
        for key in ("horizons_min", "quantiles"):
            cfg_data[key] = tuple(float(v) for v in cfg_data[key])
        model = cls(replace(LSTMConfig(), **cfg_data))
        t = dict(meta["trained"])
        model.state = TrainedState(
            step_s=float(t["step_s"]),
            steps=tuple(int(s) for s in t["steps"]),
            exog_names=tuple(t.get("exog_names", ())),
            exog_stats={k: (float(v[0]), float(v[1])) for k, v in t.get("exog_stats", {}).items()},
            epochs_run=int(t.get("epochs_run", 0)),
            metrics=dict(t.get("metrics", {})),
        )
        model.calibrator.load_state(calibration)
        return model

    @classmethod
    def from_state(
        cls,
        meta: Mapping[str, Any],
        weights: Mapping[str, Any],
        calibration: dict[str, list[list[float]]],
    ) -> LSTMForecaster:
        """Rebuild a forecaster from :meth:`to_state` output (torch). Raises ValueError if
        inconsistent."""
        model = cls.from_meta(meta, calibration)
        model.net = _torch().load_net(model, weights)
        return model

    @classmethod
    def from_onnx(
        cls,
        meta: Mapping[str, Any],
        runner: NetRunner,
        calibration: dict[str, list[list[float]]],
    ) -> LSTMForecaster:
        """A forecaster whose network runs through ``runner`` (ONNX Runtime: no torch)."""
        model = cls.from_meta(meta, calibration)
        model.onnx = runner
        return model


def coarsen(history: History, k: int, max_blocks: int) -> History:
    """Average blocks of ``k`` rows (ending at the last row) into one row each.

    NaN readings are skipped within a block (a block with none stays NaN); exogenous columns take
    the block's last value. At least two blocks are returned (the first is repeated one block
    earlier if the history is shorter), so the result always has a time step.
    """
    n_rows = history.values.shape[0]
    n_blocks = max(1, min(max_blocks, n_rows // k))
    take = min(n_rows, n_blocks * k)
    vals = np.asarray(history.values[-take:], dtype=np.float64)
    pad = n_blocks * k - take
    if pad:
        vals = np.concatenate([np.full((pad, vals.shape[1]), np.nan), vals])
    blocks = vals.reshape(n_blocks, k, -1)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=1)
    total = np.where(finite, blocks, 0.0).sum(axis=1)
    means = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    step = history.step_s * k
    ts = history.end_s - step * np.arange(n_blocks - 1, -1, -1, dtype=np.float64)
    exog = {
        name: np.asarray(v[-1::-k][:n_blocks][::-1], dtype=np.float64)
        for name, v in history.exog.items()
    }
    if n_blocks == 1:
        means = np.concatenate([means, means])
        ts = np.array([ts[0] - step, ts[0]])
        exog = {name: np.concatenate([v, v]) for name, v in exog.items()}
    return History(ts, history.series_ids, means, exog)


def _future_block(
    arrays: SeriesArrays,
    future_exog: Mapping[str, FloatArray] | None,
    state: TrainedState,
    wanted_steps: tuple[int, ...],
    origins: IntArray,
    series: IntArray,
) -> FloatArray:
    """(S, H*E) known-future exog at the trained steps, horizon-major like
    :func:`~wattwheel.forecast.features.future_exog_at`.

    ``future_exog`` rows are aligned with the requested horizons (``wanted_steps``); each trained
    step takes the row of the nearest requested step. Without it the last known value is held.
    """
    n_exog = len(state.exog_names)
    if n_exog == 0:
        return np.zeros((origins.shape[0], 0))
    if future_exog is None:
        last = arrays.exog[origins, series]  # (S, E)
        return np.tile(last, (1, len(state.steps)))
    wanted = np.asarray(wanted_steps)
    cols = []
    for step in state.steps:
        row = int(np.argmin(np.abs(wanted - step)))
        for name in state.exog_names:
            if name not in future_exog:
                raise ValueError(f"future_exog lacks column {name!r} the model was trained on")
            arr = np.asarray(future_exog[name], dtype=np.float64)
            if arr.shape[0] != wanted.shape[0]:
                raise ValueError(
                    f"future_exog[{name!r}] has {arr.shape[0]} rows, one per horizon "
                    f"({wanted.shape[0]}) expected"
                )
            mean, std = state.exog_stats[name]
            fallback = arrays.exog[origins, series, state.exog_names.index(name)]
            cols.append(np.where(np.isfinite(arr[row]), (arr[row] - mean) / std, fallback))
    return np.stack(cols, axis=1)


def _interpolate_steps(
    norm: FloatArray, trained: tuple[int, ...], wanted: tuple[int, ...], anchor: int
) -> FloatArray:
    """(S, H_wanted, Q) by linear interpolation in steps, with zero change at step 0; beyond
    the last trained step, level ``anchor`` (the median) is held and the others spread by
    sqrt(step / last step)."""
    knots = np.array((0, *trained), dtype=np.float64)
    padded = np.concatenate([np.zeros_like(norm[:, :1]), norm], axis=1)
    out = np.empty((norm.shape[0], len(wanted), norm.shape[2]))
    for i, step in enumerate(wanted):
        if step > knots[-1]:
            last = padded[:, -1]
            median = last[:, anchor : anchor + 1]
            out[:, i] = median + (last - median) * np.sqrt(step / knots[-1])
            continue
        j = int(np.searchsorted(knots, step))
        if knots[j] == step:
            out[:, i] = padded[:, j]
        else:
            w = (step - knots[j - 1]) / (knots[j] - knots[j - 1])
            out[:, i] = (1 - w) * padded[:, j - 1] + w * padded[:, j]
    return out


def _median_index(quantiles: Sequence[float]) -> int:
    return int(np.argmin(np.abs(np.asarray(quantiles) - 0.5)))


def _pairs(origins: IntArray, n_series: int) -> tuple[IntArray, IntArray]:
    o = np.repeat(origins, n_series)
    s = np.tile(np.arange(n_series, dtype=np.int64), origins.size)
    return o, s


def _standardise_stats(values: FloatArray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    std = float(finite.std())
    return float(finite.mean()), std if std > 0 else 1.0


def _check(history: History) -> None:
    if history.values.ndim != 2 or history.values.shape[0] < 2:
        raise ValueError(f"history values must be (T >= 2, S), got {history.values.shape}")


def _torch() -> Any:
    """The torch half of this module (training, torch inference); torch is optional."""
    try:
        from wattwheel.forecast import lstm_torch
    except ImportError as exc:  # torch is not installed (the lean live install)
        raise ValueError(
            f"this needs PyTorch ({exc}): install the training extra, pip install "
            "'wattwheel[train]', or load a model directory that has model.onnx"
        ) from None
    return lstm_torch
