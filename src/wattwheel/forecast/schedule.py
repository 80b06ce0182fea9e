"""Workload-schedule information: known batch jobs and the load they add (DESIGN §3, the seed's
"proactive scaling").

A :class:`JobSchedule` is what a batch scheduler knows: for each job, when it was submitted
(``submit_s``: from then on a controller may know about it), when it runs (``[start_s, end_s)``)
and how much power it adds to each series while it runs (``power_w``, (J, S)). A controller at
time ``now`` may use only the jobs with ``submit_s <= now`` (:meth:`JobSchedule.known_at`).

:meth:`JobSchedule.load_w` turns jobs into the power they add on a grid: a row at ``ts`` stands
for the mean over ``[ts, ts + step_s)`` (as a trace row does), so a job covering part of a step
adds that part of its power.

Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wattwheel.forecast.base import FloatArray


@dataclass(frozen=True)
class JobSchedule:
    """Batch jobs known to a scheduler.

    Attributes:
        series_ids: S names (racks or domains), column order of ``power_w``.
        submit_s / start_s / end_s: (J,) epoch seconds; ``submit_s <= start_s < end_s``.
        power_w: (J, S) power each job adds to each series while it runs (watts).
    """

    series_ids: tuple[str, ...]
    submit_s: FloatArray
    start_s: FloatArray
    end_s: FloatArray
    power_w: FloatArray

    def __post_init__(self) -> None:
        n = self.start_s.shape[0]
        if self.submit_s.shape != (n,) or self.end_s.shape != (n,):
            raise ValueError("submit_s, start_s and end_s must have one value per job")
        if self.power_w.shape != (n, len(self.series_ids)):
            raise ValueError(
                f"power_w must be (jobs, series) = ({n}, {len(self.series_ids)}), "
                f"got {self.power_w.shape}"
            )
        if n and not np.all(self.end_s > self.start_s):
            raise ValueError("every job must end after it starts")
        if n and not np.all(np.isfinite(self.power_w)):
            raise ValueError("job power must be finite")

    @property
    def n_jobs(self) -> int:
        return int(self.start_s.shape[0])

    @staticmethod
    def empty(series_ids: Sequence[str]) -> JobSchedule:
        z = np.zeros(0)
        return JobSchedule(tuple(series_ids), z, z.copy(), z.copy(), np.zeros((0, len(series_ids))))

    def select(self, mask: np.ndarray) -> JobSchedule:
        return JobSchedule(
            self.series_ids,
            self.submit_s[mask],
            self.start_s[mask],
            self.end_s[mask],
            self.power_w[mask],
        )

    def known_at(self, now_s: float) -> JobSchedule:
        """The jobs a controller at ``now_s`` knows: those submitted at or before it."""
        return self.select(self.submit_s <= now_s)

    def for_series(self, series_ids: Sequence[str]) -> JobSchedule:
        """Columns in ``series_ids`` order; a series the schedule does not name gets no load."""
        index = {s: i for i, s in enumerate(self.series_ids)}
        power = np.zeros((self.n_jobs, len(series_ids)))
        for j, s in enumerate(series_ids):
            if s in index:
                power[:, j] = self.power_w[:, index[s]]
        return JobSchedule(tuple(series_ids), self.submit_s, self.start_s, self.end_s, power)

    def grouped(self, groups: Mapping[str, Sequence[str]]) -> JobSchedule:
        """Series summed into groups (racks into domains): ``{group: [series, ...]}``."""
        index = {s: i for i, s in enumerate(self.series_ids)}
        power = np.zeros((self.n_jobs, len(groups)))
        for j, members in enumerate(groups.values()):
            cols = [index[m] for m in members if m in index]
            if cols:
                power[:, j] = self.power_w[:, cols].sum(axis=1)
        return JobSchedule(tuple(groups), self.submit_s, self.start_s, self.end_s, power)

    def load_w(self, timestamps_s: FloatArray, step_s: float) -> FloatArray:
        """(T, S) mean power the jobs add over each ``[ts, ts + step_s)``."""
        ts = np.asarray(timestamps_s, dtype=np.float64)
        out = np.zeros((ts.shape[0], len(self.series_ids)))
        if self.n_jobs == 0 or ts.size == 0:
            return out
        near = (self.end_s > ts.min()) & (self.start_s < ts.max() + step_s)
        if not near.any():
            return out
        start, end, power = self.start_s[near], self.end_s[near], self.power_w[near]
        lo = np.maximum(start[None, :], ts[:, None])
        hi = np.minimum(end[None, :], ts[:, None] + step_s)
        share = np.clip(hi - lo, 0.0, step_s) / step_s  # (T, J)
        return np.asarray(share @ power, dtype=np.float64)
