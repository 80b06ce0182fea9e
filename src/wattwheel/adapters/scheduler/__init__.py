"""Scheduler hook: ask the workload scheduler to shift or defer non-critical work, or to
ramp job starts up gradually (``RampLimitRequest``).

:mod:`.requests` is the pure JSON codec (documented in ``docs/scheduler-hook.md``); :mod:`.hook`
the Protocol and an in-memory fake; :mod:`.webhook` (HTTP POST) and :mod:`.mqtt` (QoS 1 publish)
the two transports.
"""

from wattwheel.adapters.scheduler.hook import FakeSchedulerHook, SchedulerHook
from wattwheel.adapters.scheduler.requests import (
    Ack,
    DeferRequest,
    RampLimitRequest,
    SchedulerRequest,
    SchedulerRequestError,
    ShiftRequest,
)

__all__ = [
    "Ack",
    "DeferRequest",
    "FakeSchedulerHook",
    "RampLimitRequest",
    "SchedulerHook",
    "SchedulerRequest",
    "SchedulerRequestError",
    "ShiftRequest",
]
