"""Supervision of the background tasks (pollers, planner, store flusher, flywheel workers,
ingesters, the elector): a task that crashes is logged, counted, shown in ``/api/v1/status``
and ``/metrics``, and restarted after a backoff that doubles with each crash in a row (reset
once the task has run for a while). A task that returns when it was meant to run forever is
restarted the same way. Cancellation (shutdown) is never caught.

Tasks may run on different event loops (the pollers have their own thread): the bookkeeping is
guarded by a lock, and the API reads a copy.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from wattwheel.runtime.clock import Clock

log = logging.getLogger(__name__)
TaskState = Literal["running", "backoff", "done"]


@dataclass(frozen=True)
class TaskHealth:
    """One supervised task, as ``/api/v1/status`` shows it."""

    name: str
    state: TaskState
    restarts: int = 0
    last_error: str | None = None
    last_error_s: float | None = None
    started_s: float | None = None


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``first_s`` doubling up to ``max_s``; a task that ran ``healthy_s``
    before crashing starts again from ``first_s``."""

    first_s: float = 0.5
    max_s: float = 30.0
    healthy_s: float = 60.0


class Supervisor:
    """Runs tasks, restarts them when they crash (see the module docstring).

    Args:
        clock: for the backoff sleeps and the timestamps shown.
        on_crash: called with ``(task name, message, first)`` on each crash (``first``: the
            first crash in a row), e.g. to count it in the live state and record an event.
    """

    def __init__(
        self,
        clock: Clock,
        on_crash: Callable[[str, str, bool], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.clock = clock
        self.on_crash = on_crash
        self.backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._health: dict[str, TaskHealth] = {}

    def health(self) -> list[TaskHealth]:
        with self._lock:
            return sorted(self._health.values(), key=lambda h: h.name)

    def snapshot(self) -> list[dict[str, object]]:
        """Every task's health as plain values (for ``/api/v1/status`` and ``/metrics``)."""
        return [dict(vars(h)) for h in self.health()]

    def restarts(self) -> dict[str, int]:
        with self._lock:
            return {n: h.restarts for n, h in self._health.items()}

    def _running(self, name: str) -> None:
        with self._lock:
            old = self._health.get(name, TaskHealth(name, "running"))
            self._health[name] = replace(old, state="running", started_s=self.clock.now_s())

    def _done(self, name: str) -> None:
        with self._lock:
            self._health[name] = replace(self._health[name], state="done")

    def spawn(
        self, name: str, factory: Callable[[], Awaitable[None]], forever: bool = True
    ) -> asyncio.Task[None]:
        """Start ``factory()`` supervised on the running loop."""
        return asyncio.ensure_future(self.supervise(name, factory, forever))

    async def supervise(
        self, name: str, factory: Callable[[], Awaitable[None]], forever: bool = True
    ) -> None:
        """Run ``factory()`` until cancelled; restart it when it raises (or returns, when
        ``forever``). ``forever=False``: a task that returns is done (e.g. a warm-up)."""
        delay_s = self.backoff.first_s
        in_a_row = 0
        while True:
            started = self.clock.monotonic_s()
            self._running(name)
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                if in_a_row == 0:
                    log.error("task %s crashed, restarting it: %s", name, message, exc_info=exc)
                else:
                    log.warning("task %s crashed again (%d in a row): %s", name, in_a_row, message)
            else:
                if not forever:
                    self._done(name)
                    return
                message = "returned (it should run until stopped)"
                log.warning("task %s %s, restarting it", name, message)
            if self.clock.monotonic_s() - started >= self.backoff.healthy_s:
                delay_s, in_a_row = self.backoff.first_s, 0
            with self._lock:
                old = self._health[name]
                self._health[name] = replace(
                    old,
                    state="backoff",
                    restarts=old.restarts + 1,
                    last_error=message,
                    last_error_s=self.clock.now_s(),
                )
            if self.on_crash is not None:
                self.on_crash(name, message, in_a_row == 0)
            in_a_row += 1
            await self.clock.sleep(delay_s)
            delay_s = min(delay_s * 2, self.backoff.max_s)
