"""Scoring and fine-tuning forecasting models in a separate process (``serve --learn``).

Training holds the GIL and a core for seconds to minutes: in the controller's process it would
stall the fast loop's ticks. :class:`ProcessModelJobs` runs every job in one worker process
(spawned, so no lock or thread of the controller is inherited), at a lower CPU priority
(``nice`` +10) with one torch thread; the controller's thread only awaits the result. Models
are loaded in the worker (ONNX Runtime for scoring, torch for fine-tuning) and the fine-tuned
one is written as a model directory (:func:`wattwheel.adapters.model_artifact.save_model`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import math
import multiprocessing
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wattwheel.forecast.base import Forecast, History
from wattwheel.runtime.learning import Scores

#: Models kept loaded in the worker process, by directory.
_LOADED: dict[str, Any] = {}


def torch_missing() -> str | None:
    """Why fine-tuning cannot run in this installation, or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'wattwheel[train]')"
    return None


class ProcessModelJobs:
    """:class:`~wattwheel.runtime.learning.ModelJobs` in one worker process (module docstring).

    Args:
        nice: added to the worker's CPU niceness (the control loop keeps priority).
    """

    def __init__(self, nice: int = 10) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(nice,),
        )
        self._missing = torch_missing()

    def fine_tune_unavailable(self) -> str | None:
        return self._missing

    async def score(self, model_dir: str, history: History, since_s: float) -> Scores:
        scores: Scores = await self._run(score_job, model_dir, *_plain(history), since_s)
        return scores

    async def fine_tune(
        self, parent_dir: str, history: History, out_dir: str, epochs: int
    ) -> Mapping[str, Any]:
        metrics: Mapping[str, Any] = await self._run(
            fine_tune_job, parent_dir, *_plain(history), out_dir, epochs
        )
        return metrics

    async def _run(self, fn: Any, *args: Any) -> Any:
        future = self._pool.submit(fn, *args)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the worker: a fine-tune in progress is abandoned (its directory is not used)."""
        processes = dict(getattr(self._pool, "_processes", None) or {})
        for process in processes.values():
            process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _plain(history: History) -> tuple[list[float], list[str], list[list[float]]]:
    return (
        history.timestamps_s.tolist(),
        list(history.series_ids),
        np.asarray(history.values, dtype=np.float64).tolist(),
    )


def _history(ts: list[float], ids: list[str], values: list[list[float]]) -> History:
    return History(np.asarray(ts, dtype=np.float64), tuple(ids), np.asarray(values, dtype=float))


def _init_worker(nice: int) -> None:
    if nice:
        os.nice(nice)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _model(model_dir: str, backend: str = "auto") -> Any:
    from wattwheel.adapters.model_artifact import load_model

    key = f"{backend}:{model_dir}"
    if key not in _LOADED:
        _LOADED[key] = load_model(Path(model_dir), backend=backend)
    return _LOADED[key]


def score_job(
    model_dir: str, ts: list[float], ids: list[str], values: list[list[float]], since_s: float
) -> Scores:
    """First-horizon errors and interval misses at each origin at or after ``since_s``."""
    from wattwheel.forecast.backtest import rolling_origin
    from wattwheel.forecast.online import first_horizon_errors

    history = _history(ts, ids, values)
    model = _model(model_dir)
    horizon_s = float(model.config.horizons_s[0])
    steps = max(1, round(horizon_s / history.step_s))
    first = int(np.searchsorted(history.timestamps_s, since_s))
    first = max(first, model.config.lookback)
    if first >= history.values.shape[0] - steps:
        return ([], [], [])
    run = rolling_origin(_Tolerant(model), history, (horizon_s,), start=first)
    err, miss = first_horizon_errors(run)
    return (history.timestamps_s[run.origins].tolist(), err.tolist(), miss.tolist())


class _Tolerant:
    """A forecaster whose ``predict`` gives NaN for a series the model cannot forecast (a domain
    with no finite recent reading): that series scores nothing at that origin, the others do."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name

    def fit(self, history: History) -> None:
        self.model.fit(history)

    def predict(self, history: History, horizons_s: Any, future_exog: Any = None) -> Forecast:
        try:
            return self.model.predict(history, horizons_s, future_exog)  # type: ignore[no-any-return]
        except ValueError:
            pass
        qs = tuple(self.model.config.quantiles)
        values = np.full((len(history.series_ids), len(horizons_s), len(qs)), np.nan)
        for i, sid in enumerate(history.series_ids):
            one = History(history.timestamps_s, (sid,), history.values[:, i : i + 1])
            try:
                values[i] = self.model.predict(one, horizons_s).values[0]
            except ValueError:
                continue
        median = int(np.argmin(np.abs(np.asarray(qs) - 0.5)))
        horizons = tuple(float(h) for h in horizons_s)
        return Forecast(
            history.end_s, history.series_ids, horizons, qs, values, values[:, :, median]
        )


def fine_tune_job(
    parent_dir: str,
    ts: list[float],
    ids: list[str],
    values: list[list[float]],
    out_dir: str,
    epochs: int,
) -> dict[str, Any]:
    """Fine-tune the parent (torch) on the history and save it; its validation metrics."""
    import copy

    from wattwheel.adapters.model_artifact import read_metadata, save_model

    history = _history(ts, ids, values)
    model = copy.deepcopy(_model(parent_dir, backend="torch"))
    model.fine_tune(history, epochs=epochs)
    parent = read_metadata(Path(parent_dir))
    until = history.end_s if math.isfinite(history.end_s) else None
    save_model(
        model,
        Path(out_dir),
        training_data={
            "note": "fine-tuned by serve --learn on the stored demand history",
            "parent": parent_dir,
            "parent_training_data": parent.get("training_data"),
            "since_s": float(history.timestamps_s[0]),
            "until_s": until,
            "rows": int(history.values.shape[0]),
            "series": list(history.series_ids),
        },
        command=f"fine_tune(epochs={epochs})",
    )
    return dict(model.state.metrics)
