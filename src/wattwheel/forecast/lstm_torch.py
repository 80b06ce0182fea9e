"""The torch half of the LSTM forecaster: the network, its training, torch inference and the
ONNX export. Only ``wattwheel train``, fine-tuning and torch inference import this module
(``pip install 'wattwheel[train]'``); a controller host runs the exported graph through
:mod:`wattwheel.forecast.lstm_onnx` instead.

Pure: no file I/O (the exported graph is returned as bytes), no clock.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from wattwheel.forecast.base import History
from wattwheel.forecast.features import N_BASE_CHANNELS, SeriesArrays

if TYPE_CHECKING:
    from wattwheel.forecast.lstm import IntArray, LSTMForecaster, ProgressFn

FloatArray = NDArray[np.float64]


class QuantileLSTM(nn.Module):
    """LSTM encoder + head giving non-crossing quantiles of the normalised change."""

    def __init__(
        self,
        n_channels: int,
        lookback: int,
        hidden: int,
        n_horizons: int,
        quantiles: Sequence[float],
        n_future: int = 0,
    ) -> None:
        super().__init__()
        self.n_h, self.n_q = n_horizons, len(quantiles)
        self.n_future = n_future
        # The level closest to 0.5 anchors the others: increments above and below it are >= 0.
        self.anchor = int(np.argmin(np.abs(np.asarray(quantiles) - 0.5)))
        self.lstm = nn.LSTM(n_channels, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + n_future, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_horizons * self.n_q),
        )
        self.skip = nn.Linear(lookback, n_horizons)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """(B, L, C) windows and (B, F) future exog -> (B, H, Q) increasing along Q."""
        out, _ = self.lstm(x)
        h_last = out[:, -1]
        if self.n_future:
            h_last = torch.cat([h_last, future], dim=1)
        raw = self.head(h_last).view(-1, self.n_h, self.n_q)
        median = raw[:, :, self.anchor] + self.skip(x[:, :, 0])
        up = torch.cumsum(nn.functional.softplus(raw[:, :, self.anchor + 1 :]), dim=2)
        down = torch.cumsum(nn.functional.softplus(raw[:, :, : self.anchor].flip(2)), dim=2)
        parts = [(median[:, :, None] - down).flip(2), median[:, :, None], median[:, :, None] + up]
        return torch.cat(parts, dim=2)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (B, H, Q) quantiles against (B, H) targets; NaN targets ignored."""
    valid = torch.isfinite(target)
    diff = torch.where(valid, target, torch.zeros_like(target))[:, :, None] - pred
    loss = torch.maximum(quantiles * diff, (quantiles - 1) * diff)
    weight = valid[:, :, None].to(loss.dtype)
    return (loss * weight).sum() / (weight.sum() * pred.shape[2]).clamp(min=1.0)


# ------------------------------------------------------------------------------ the network
def new_net(model: LSTMForecaster) -> QuantileLSTM:
    """An untrained network shaped for ``model``'s configuration and trained state."""
    state, cfg = model._state(), model.config
    n_exog = len(state.exog_names)
    return QuantileLSTM(
        N_BASE_CHANNELS + n_exog,
        cfg.lookback,
        cfg.hidden,
        len(state.steps),
        cfg.quantiles,
        n_future=n_exog * len(state.steps),
    )


def load_net(model: LSTMForecaster, weights: Mapping[str, Any]) -> QuantileLSTM:
    net = new_net(model)
    try:
        net.load_state_dict(dict(weights))
    except RuntimeError as exc:
        raise ValueError(f"weights do not match the model configuration: {exc}") from exc
    return net


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def run(
    net: nn.Module, x: NDArray[np.float32], future: NDArray[np.float32], threads: int
) -> FloatArray:
    """Torch inference: (B, H, Q) float64."""
    with _TorchThreads(threads), torch.no_grad():
        net.eval()
        out = net(torch.from_numpy(x), torch.from_numpy(future))
    return np.asarray(out.double().numpy(), dtype=np.float64)


def export_onnx(model: LSTMForecaster, target: Any) -> None:
    """Write the trained network as an ONNX graph to ``target`` (a path or a binary file object
    the caller opened): inputs ``x`` (B, L, C) and, with exogenous columns, ``future`` (B, F);
    output ``q`` (B, H, Q); the batch size is dynamic."""
    net = model.net
    if net is None:
        raise ValueError("no trained network to export")
    state, cfg = model._state(), model.config
    n_exog = len(state.exog_names)
    # Traced with a batch of one (the exporter's advice for LSTMs); the batch axis is dynamic.
    x = torch.zeros(1, cfg.lookback, N_BASE_CHANNELS + n_exog)
    future = torch.zeros(1, n_exog * len(state.steps))
    names = ["x", "future"] if n_exog else ["x"]
    axes = {name: {0: "batch"} for name in [*names, "q"]}
    net.eval()
    with _TorchThreads(cfg.num_threads), warnings.catch_warnings():
        # The tracer's notes on the LSTM's shape checks are about other input shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x, future),
            target,
            input_names=names,
            output_names=["q"],
            dynamic_axes=axes,
            dynamo=False,
        )


# ----------------------------------------------------------------------------------- training
def fit(model: LSTMForecaster, history: History, progress: ProgressFn | None) -> None:
    """Train a new network from scratch (the model's trained state is already set)."""
    cfg = model.config
    with _TorchThreads(cfg.num_threads):
        torch.manual_seed(cfg.seed)
        model.net = new_net(model)
        _train(model, history, cfg.epochs, cfg.lr, progress)


def fine_tune(
    model: LSTMForecaster,
    history: History,
    epochs: int,
    lr_factor: float,
    progress: ProgressFn | None,
) -> None:
    state = model._state()
    if model.net is None:
        raise ValueError("no torch weights to fine-tune (the model was loaded from ONNX only)")
    with _TorchThreads(model.config.num_threads):
        torch.manual_seed(model.config.seed + 1 + state.epochs_run)
        _train(model, history, epochs, model.config.lr * lr_factor, progress)


def _train(
    model: LSTMForecaster, history: History, epochs: int, lr: float, progress: ProgressFn | None
) -> None:
    state, net, cfg = model._state(), model.net, model.config
    arrays = model._arrays(history)
    raw = np.asarray(history.values, dtype=np.float64)
    train_idx, val_idx = model.split(raw.shape[0], raw.shape[1])
    if train_idx[0].size == 0 or val_idx[0].size == 0:
        raise ValueError(
            f"history too short to train: {raw.shape[0]} rows, need more than "
            f"{cfg.lookback + max(state.steps)} rows in each of the train and validation parts"
        )
    rng = np.random.default_rng(cfg.seed + state.epochs_run)
    x_val, f_val, y_val = (_t(a) for a in model.batch(arrays, raw, *val_idx))
    qs = torch.tensor(cfg.quantiles, dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    best = (_loss(net, x_val, f_val, y_val, qs), weights_of(net))
    stale = 0
    for epoch in range(epochs):
        train_loss = _epoch(model, net, opt, arrays, raw, train_idx, rng, qs)
        val_loss = _loss(net, x_val, f_val, y_val, qs)
        state.epochs_run += 1
        if progress is not None:
            progress(epoch + 1, epochs, train_loss, val_loss)
        if val_loss < best[0] - 1e-6:
            best, stale = (val_loss, weights_of(net)), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    net.load_state_dict(best[1])
    net.eval()
    with torch.no_grad():
        pred = net(x_val, f_val).double().numpy()
    y = y_val.double().numpy()
    model.calibrate_on(pred, y)
    state.metrics = model.validation_metrics(pred, y, best[0])


def _epoch(
    model: LSTMForecaster,
    net: QuantileLSTM,
    opt: torch.optim.Optimizer,
    arrays: SeriesArrays,
    raw: FloatArray,
    idx: tuple[IntArray, IntArray],
    rng: np.random.Generator,
    qs: torch.Tensor,
) -> float:
    cfg = model.config
    order = rng.permutation(idx[0].size)[: cfg.max_train_samples]
    net.train()
    total, batches = 0.0, 0
    for start in range(0, order.size, cfg.batch_size):
        take = order[start : start + cfg.batch_size]
        x, fut, y = (_t(a) for a in model.batch(arrays, raw, idx[0][take], idx[1][take]))
        opt.zero_grad()
        loss = pinball_loss(net(x, fut), y, qs)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        total += float(loss.detach())
        batches += 1
    return total / max(batches, 1)


def _loss(
    net: QuantileLSTM, x: torch.Tensor, fut: torch.Tensor, y: torch.Tensor, qs: torch.Tensor
) -> float:
    net.eval()
    with torch.no_grad():
        return float(pinball_loss(net(x, fut), y, qs))


def _t(a: FloatArray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class _TorchThreads:
    """Cap torch's intra-op threads for a block (2 cores are shared), then restore them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.before = 0

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        if self.n > 0 and self.n != self.before:
            torch.set_num_threads(self.n)
        # Denormal floats in the recurrent state can slow a CPU LSTM several-fold.
        torch.set_flush_denormal(True)

    def __exit__(self, *exc: object) -> None:
        torch.set_flush_denormal(False)
        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)
