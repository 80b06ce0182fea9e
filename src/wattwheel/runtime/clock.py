"""Time for the live loop, injected: the real clock and a fake one for tests and benchmarks.

The runtime never calls ``time`` or ``asyncio.sleep`` directly; it asks its :class:`Clock`, so a
test can run hours of ticks in milliseconds and check exactly when things happen.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock epoch seconds plus a monotonic timer and a sleep that honours the same time."""

    def now_s(self) -> float:
        """Epoch seconds (timestamps of decisions, samples and events)."""
        ...

    def monotonic_s(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards (durations, deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (0 or negative: just yield)."""
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.perf_counter`` and ``asyncio.sleep``."""

    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """A manual clock: time moves only when the test calls :meth:`advance`, which wakes every
    sleeper whose wake-up time has come (in time order).

    ``real_monotonic`` measures durations (tick latency) for real while scheduling stays virtual.
    """

    def __init__(self, start_s: float = 1_700_000_000.0, real_monotonic: bool = False) -> None:
        self._now_s = start_s
        self._real_monotonic = real_monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_s(self) -> float:
        return self._now_s

    def monotonic_s(self) -> float:
        return time.perf_counter() if self._real_monotonic else self._now_s

    def advance(self, seconds: float) -> None:
        """Move time forward and wake the sleepers that are due."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        self._now_s += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now_s + 1e-9:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def n_sleepers(self) -> int:
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now_s + seconds, next(self._order), fut))
        await fut
