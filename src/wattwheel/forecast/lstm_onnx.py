"""Run the LSTM's exported graph with ONNX Runtime: inference without torch.

``wattwheel train`` writes ``model.onnx`` beside the torch weights
(:func:`wattwheel.forecast.lstm_torch.export_onnx`); a controller host installs
``wattwheel[live]`` (ONNX Runtime, no torch) and runs the same network through
:class:`OnnxRunner`. Parity with torch is tested to 1e-4 (tests/forecast/test_lstm_onnx.py).

Pure: the graph is given as bytes (the adapter reads the file), no clock.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class OnnxRunner:
    """A :class:`~wattwheel.forecast.lstm.NetRunner` over an ONNX Runtime session.

    Args:
        graph: the serialised ONNX model.
        threads: intra-op threads (one is fastest for this small network on a busy host).
    """

    def __init__(self, graph: bytes, threads: int = 1) -> None:
        self.graph, self.threads = graph, threads
        self._open()

    def __getstate__(self) -> dict[str, object]:
        # A session cannot be pickled or deep-copied (capacity runs copy forecasters, Ray ships
        # them to workers): the graph bytes travel and the copy opens its own session.
        return {"graph": self.graph, "threads": self.threads}

    def __setstate__(self, state: dict[str, object]) -> None:
        graph, threads = state["graph"], state["threads"]
        assert isinstance(graph, bytes) and isinstance(threads, int)
        self.graph, self.threads = graph, threads
        self._open()

    def _open(self) -> None:
        import onnxruntime as ort

        graph, threads = self.graph, self.threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ValueError(f"not a valid ONNX graph: {exc}") from None
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window shape (L, C), output shape (H, Q)) without the batch axis."""
        x = self.session.get_inputs()[0].shape[1:]
        q = self.session.get_outputs()[0].shape[1:]
        return tuple(int(d) for d in x), tuple(int(d) for d in q)

    def __call__(self, x: NDArray[np.float32], future: NDArray[np.float32]) -> FloatArray:
        feeds = {"x": x}
        if "future" in self.inputs:
            feeds["future"] = future
        out = self.session.run(["q"], feeds)[0]
        return np.asarray(out, dtype=np.float64)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
