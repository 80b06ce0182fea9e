"""ONNX Runtime runs the exported LSTM like torch does (issue 11: parity within 1e-4)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from wattwheel.adapters.model_artifact import ONNX, load_model, shipped_models_root
from wattwheel.forecast.base import History
from wattwheel.forecast.features import N_BASE_CHANNELS
from wattwheel.forecast.lstm import LSTMConfig, LSTMForecaster
from wattwheel.forecast.lstm_onnx import OnnxRunner
from wattwheel.forecast.lstm_torch import export_onnx

TINY = LSTMConfig(lookback=10, hidden=8, epochs=1, scale_rows=24, max_train_samples=800)


def _history(n_rows: int = 500, exog: bool = False) -> History:
    rng = np.random.default_rng(7)
    ts = 300.0 * np.arange(n_rows)
    values = 800.0 + np.cumsum(rng.normal(0, 3.0, size=(n_rows, 3)), axis=0)
    extra = {"sched_w": rng.normal(0, 1.0, size=(n_rows, 3))} if exog else {}
    return History(ts, ("a", "b", "c"), values, extra)


@pytest.mark.parametrize("exog", [False, True])
def test_exported_graph_matches_torch_within_1e_4(exog: bool) -> None:
    model = LSTMForecaster(TINY)
    model.fit(_history(exog=exog))
    graph = io.BytesIO()
    export_onnx(model, graph)
    runner = OnnxRunner(graph.getvalue())
    n_future = (1 if exog else 0) * len(model.config.horizons_min)
    rng = np.random.default_rng(1)
    for batch in (1, 1000):  # the batch axis is dynamic
        x = rng.normal(0, 2.0, (batch, TINY.lookback, N_BASE_CHANNELS + int(exog)))
        fut = rng.normal(0, 1.0, (batch, n_future))
        via_torch = model.run_net(x, fut)
        via_onnx = runner(x.astype(np.float32), fut.astype(np.float32))
        assert via_onnx.shape == via_torch.shape == (batch, 3, 3)
        np.testing.assert_allclose(via_onnx, via_torch, atol=1e-4, rtol=0)


def test_shipped_models_run_the_same_with_onnx_and_torch() -> None:
    dirs = [d for d in sorted(shipped_models_root().iterdir()) if (d / ONNX).is_file()]
    assert dirs, "no shipped model has an ONNX graph"
    rng = np.random.default_rng(2)
    for model_dir in dirs:
        onnx_model = load_model(model_dir, backend="onnx")
        torch_model = load_model(model_dir, backend="torch")
        (lookback, channels), _ = onnx_model.net_shapes()
        x = rng.normal(0, 2.0, (64, lookback, channels))
        fut = np.zeros((64, 0))
        np.testing.assert_allclose(
            onnx_model.run_net(x, fut), torch_model.run_net(x, fut), atol=1e-4, rtol=0
        )


def test_a_model_on_onnx_runtime_can_be_copied_and_pickled() -> None:
    """Capacity runs deep-copy the forecaster per candidate and Ray pickles it to workers."""
    import copy
    import pickle

    from wattwheel.adapters.model_artifact import load_forecaster, shipped_model_dir

    forecaster = load_forecaster(shipped_model_dir())
    hist = History(300.0 * np.arange(400), ("a",), 7e5 + np.cumsum(np.ones((400, 1)), axis=0))
    expected = forecaster.predict(hist, [300.0]).values
    for clone in (copy.deepcopy(forecaster), pickle.loads(pickle.dumps(forecaster))):
        np.testing.assert_array_equal(clone.predict(hist, [300.0]).values, expected)
