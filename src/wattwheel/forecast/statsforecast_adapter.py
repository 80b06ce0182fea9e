"""statsforecast models (AutoETS, MSTL) behind the Forecaster protocol, for comparison.

statsforecast is optional (``pip install statsforecast``); importing this module works without
it, and :func:`statsforecast_available` says whether the real models can be built. The adapter
refits a local model per series on the last ``window`` rows at every ``predict`` (that is how
these models are used: they have no global state), asks for ``mean`` and the ``lo-L``/``hi-L``
intervals at the levels matching the requested quantiles (q and 1-q share the level
``100 (1 - 2 min(q, 1-q))``), and maps them back onto our (S, H, Q) Forecast. The median is the
model's mean. Gaps are forward-filled first (these models take no NaN).

The model object only needs ``forecast(y=..., h=..., level=[...]) -> dict`` (statsforecast's
model API), so tests use a fake with the same method.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from wattwheel.forecast.base import DEFAULT_QUANTILES, FloatArray, Forecast, History
from wattwheel.forecast.calibration import horizon_steps
from wattwheel.forecast.fill import tail_filled


class LocalModel(Protocol):
    """The part of a statsforecast model the adapter uses."""

    def forecast(self, y: FloatArray, h: int, *, level: list[int]) -> dict[str, Any]: ...


def statsforecast_available() -> bool:
    return importlib.util.find_spec("statsforecast") is not None


def autoets_factory(season_steps: int) -> Callable[[], LocalModel]:
    """statsforecast AutoETS with this season length (in grid steps)."""
    from statsforecast.models import AutoETS  # type: ignore[import-not-found,unused-ignore]

    return lambda: AutoETS(season_length=season_steps)


def mstl_factory(season_steps: Sequence[int]) -> Callable[[], LocalModel]:
    """statsforecast MSTL with these seasonalities and an AutoETS (no season) trend model."""
    from statsforecast.models import MSTL, AutoETS  # type: ignore[import-not-found,unused-ignore]

    return lambda: MSTL(season_length=list(season_steps), trend_forecaster=AutoETS(model="ZZN"))


class StatsForecastForecaster:
    """A local statsforecast model per series, refitted on the tail at each ``predict``.

    Args:
        name: how it is reported (e.g. ``"autoets"``).
        model_factory: builds a fresh model (see :func:`autoets_factory`).
        quantiles: levels returned, symmetric pairs around 0.5 (plus 0.5 itself).
        window: rows of history each fit sees.
    """

    def __init__(
        self,
        name: str,
        model_factory: Callable[[], LocalModel],
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        window: int = 2016,
    ) -> None:
        self.name = name
        self.model_factory = model_factory
        self.quantiles = tuple(float(q) for q in quantiles)
        self.window = window
        self._levels = {q: _level_of(q) for q in self.quantiles if abs(q - 0.5) > 1e-12}

    def fit(self, history: History) -> None:
        """Nothing to learn globally: each predict fits the series it is given."""

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        steps = horizon_steps(horizons_s, history.step_s)
        filled = tail_filled(history.values, self.window, history.series_ids)
        levels = sorted(set(self._levels.values()))
        n_s, n_h, n_q = filled.shape[1], len(steps), len(self.quantiles)
        values = np.empty((n_s, n_h, n_q))
        for s in range(n_s):
            out = self.model_factory().forecast(y=filled[:, s], h=max(steps), level=levels)
            rows = np.asarray(steps) - 1
            for j, q in enumerate(self.quantiles):
                values[s, :, j] = np.asarray(out[self._key(q)], dtype=np.float64)[rows]
        values = np.maximum.accumulate(values, axis=2)
        point = values[:, :, int(np.argmin(np.abs(np.asarray(self.quantiles) - 0.5)))]
        return Forecast(
            issued_at_s=history.end_s,
            series_ids=history.series_ids,
            horizons_s=tuple(float(h) for h in horizons_s),
            quantiles=self.quantiles,
            values=values,
            point=point,
        )

    def _key(self, q: float) -> str:
        if q not in self._levels:
            return "mean"
        return f"{'lo' if q < 0.5 else 'hi'}-{self._levels[q]}"


def _level_of(q: float) -> int:
    """The central interval level (percent) whose lower or upper edge is quantile ``q``."""
    level = 100.0 * (1.0 - 2.0 * min(q, 1.0 - q))
    if abs(level - round(level)) > 1e-6:
        raise ValueError(f"quantile {q} needs a non-integer interval level {level}")
    return round(level)
