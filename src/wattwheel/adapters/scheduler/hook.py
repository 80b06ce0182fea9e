"""The scheduler-hook I/O concern: one Protocol and an in-memory fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from wattwheel.adapters.scheduler.requests import (
    Ack,
    SchedulerRequest,
    idempotency_key,
    validate,
)


class SchedulerHook(Protocol):
    """Sends shift/defer requests to the workload scheduler."""

    async def request(self, request: SchedulerRequest) -> Ack:
        """Send ``request``; never raises on a transport fault (returns an undelivered Ack).

        An invalid request raises :class:`SchedulerRequestError`: that is a bug of the caller,
        not a fault of the scheduler.
        """
        ...


@dataclass
class FakeSchedulerHook:
    """Records requests; answers ``accept`` (or undelivered while ``down``)."""

    accept: bool = True
    down: bool = False
    requests: list[SchedulerRequest] = field(default_factory=list)

    async def request(self, request: SchedulerRequest) -> Ack:
        validate(request)
        key = idempotency_key(request)
        if self.down:
            return Ack(key, delivered=False, accepted=None, detail="fake scheduler is down")
        self.requests.append(request)
        return Ack(key, delivered=True, accepted=self.accept)
