"""A workload schedule as a known additive component over any forecaster.

:class:`ScheduleAwareForecaster` splits each series into the load of the batch jobs the scheduler
has announced and the rest: ``y(t) = base(t) + jobs(t)``. The inner forecaster (LSTM, AR,
persistence, ...) sees and forecasts only ``base`` (the history less the load of the jobs known
at its last row); the wrapper adds back the load the known jobs will draw at each target time.
A job starting within the horizon thus raises the forecast from its start on, and a job ending
lowers it, by the job's power: what the inner forecaster could not have seen coming.

Information: at a history ending at ``end_s`` only jobs with ``submit_s <= end_s`` are used (a
real controller knows a job once it is submitted, not before). Jobs already running are in the
measured history and are removed from it the same way, so ``base`` stays free of the jobs'
steps.

Side-effect free (DESIGN §8): :meth:`predict` changes neither the wrapper nor the inner
forecaster. :meth:`update` is the explicit online step and passes the base history on to an
inner forecaster that learns online.

Calibration: an inner forecaster calibrated on the base load never sees the surprise of a job
it did not know at the forecast time (by the time the target is scored the job is known and
removed from the base), so its intervals are too narrow when jobs are submitted late. Calibrate
the sum instead: :func:`with_known_jobs` puts a :class:`ConformalForecaster` around the wrapper,
which scores each whole forecast (known load included) against what was measured.
Pure numpy: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wattwheel.forecast.base import FloatArray, Forecast, Forecaster, History
from wattwheel.forecast.calibration import horizon_steps
from wattwheel.forecast.conformal import ConformalForecaster
from wattwheel.forecast.schedule import JobSchedule


class ScheduleAwareForecaster:
    """Any forecaster plus the load of the jobs a schedule announces. See the module docstring.

    Args:
        inner: forecaster of the load without the scheduled jobs (never modified by predict).
        schedule: the jobs, with series named like the histories' series (racks or domains).
    """

    def __init__(self, inner: Forecaster, schedule: JobSchedule) -> None:
        self.inner = inner
        self.schedule = schedule
        self.name = f"{inner.name}+schedule"

    def base_history(self, history: History) -> History:
        """``history`` less the load of the jobs known at its last row."""
        known = self._known(history)
        load = known.load_w(history.timestamps_s, history.step_s)
        return History(
            history.timestamps_s, history.series_ids, history.values - load, dict(history.exog)
        )

    def known_load_w(self, history: History, horizons_s: Sequence[float]) -> FloatArray:
        """(S, H) load of the known jobs at each horizon's target row."""
        steps = horizon_steps(horizons_s, history.step_s)
        targets = history.end_s + np.asarray(steps, dtype=np.float64) * history.step_s
        return self._known(history).load_w(targets, history.step_s).T

    def fit(self, history: History) -> None:
        self.inner.fit(self.base_history(history))

    def predict(
        self,
        history: History,
        horizons_s: Sequence[float],
        future_exog: Mapping[str, FloatArray] | None = None,
    ) -> Forecast:
        raw = self.inner.predict(self.base_history(history), horizons_s, future_exog)
        add = self.known_load_w(history, horizons_s)
        return Forecast(
            raw.issued_at_s,
            raw.series_ids,
            raw.horizons_s,
            raw.quantiles,
            raw.values + add[:, :, None],
            raw.point + add,
        )

    def update(self, history: History, horizons_s: Sequence[float]) -> None:
        """Pass the base history to an inner forecaster that learns online (else nothing)."""
        update = getattr(self.inner, "update", None)
        if callable(update):
            update(self.base_history(history), horizons_s)

    def _known(self, history: History) -> JobSchedule:
        return self.schedule.known_at(history.end_s).for_series(history.series_ids)


def with_known_jobs(inner: Forecaster, schedule: JobSchedule) -> ConformalForecaster:
    """``inner`` plus the schedule's known jobs, calibrated as a whole (see the module
    docstring): what the simulator, ``bench --schedule`` and the benchmark use."""
    return ConformalForecaster(ScheduleAwareForecaster(inner, schedule))
