"""Scheduler hook: ask the workload scheduler to shift or defer non-critical work.

:mod:`.requests` is the pure JSON codec (documented in ``docs/scheduler-hook.md``); :mod:`.hook`
the Protocol and an in-memory fake; :mod:`.webhook` (HTTP POST) and :mod:`.mqtt` (QoS 1 publish)
the two transports.
"""

from wattwheel.adapters.scheduler.hook import FakeSchedulerHook, SchedulerHook
from wattwheel.adapters.scheduler.requests import (
    Ack,
    DeferRequest,
    SchedulerRequest,
    SchedulerRequestError,
    ShiftRequest,
)

__all__ = [
    "Ack",
    "DeferRequest",
    "FakeSchedulerHook",
    "SchedulerHook",
    "SchedulerRequest",
    "SchedulerRequestError",
    "ShiftRequest",
]
