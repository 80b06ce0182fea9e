"""Forecasts waiting for their targets: the bookkeeping shared by the online learners (the
conformal calibration and the online blend), which score an earlier forecast once the row of
its target time has arrived in a later history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from wattwheel.forecast.base import FloatArray, History


class Awaiting(Protocol):
    """A forecast issued at ``issued_at_s`` for ``steps`` (history steps ahead) per horizon."""

    issued_at_s: float
    series_ids: tuple[str, ...]
    steps: tuple[int, ...]
    done: set[int]


P = TypeVar("P", bound=Awaiting)


def score_arrived(
    pending: list[P], history: History, score: Callable[[P, int, int, FloatArray], None]
) -> list[P]:
    """Call ``score(forecast, h, step, actual)`` for every horizon ``h`` of every forecast whose
    target row has arrived in ``history`` (``actual``: that row, (S,)); each horizon is scored
    once (a target already older than the history is only marked done). Returns the forecasts
    still waiting; those for other series are dropped (they can no longer be scored)."""
    end, step_s = history.end_s, history.step_s
    kept: list[P] = []
    for p in pending:
        if p.series_ids != history.series_ids:
            continue
        for h, step in enumerate(p.steps):
            if h in p.done:
                continue
            back = round((end - (p.issued_at_s + step * step_s)) / step_s)
            if back < 0:
                continue
            p.done.add(h)
            if back < history.values.shape[0]:
                score(p, h, step, history.values[-1 - back])
        if len(p.done) < len(p.steps):
            kept.append(p)
    return kept
