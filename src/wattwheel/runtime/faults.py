"""Calling devices from the loop: a timeout per call, faults logged once and counted.

:func:`guarded` never raises (except cancellation): a call that times out or raises yields the
fallback value, the device is logged at WARNING the first time, at DEBUG while it keeps failing
and at INFO when it recovers, and each fault is counted by kind for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("wattwheel.runtime.devices")
T = TypeVar("T")


class FaultBook:
    """Which devices are failing now, and how many faults of each kind happened.

    Args:
        on_fault: called with ``(kind, device, message, first)`` on every fault (``first``:
            the device was healthy before), e.g. to count it in the live state or log an event.
    """

    def __init__(self, on_fault: Callable[[str, str, str, bool], None] | None = None) -> None:
        self.failing: set[str] = set()
        self.counts: dict[str, int] = {}
        self._on_fault = on_fault

    def fault(self, kind: str, device: str, message: str) -> None:
        first = device not in self.failing
        self.failing.add(device)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if first:
            log.warning(
                "%s %s failed: %s (logged once; DEBUG until it recovers)", kind, device, message
            )
        else:
            log.debug("%s %s still failing: %s", kind, device, message)
        if self._on_fault is not None:
            self._on_fault(kind, device, message, first)

    def ok(self, device: str) -> None:
        if device in self.failing:
            self.failing.discard(device)
            log.info("%s answers again", device)


async def guarded(
    book: FaultBook,
    kind: str,
    device: str,
    call: Callable[[], Awaitable[T]],
    timeout_s: float,
    fallback: T,
) -> T:
    """``await call()`` within ``timeout_s``; on timeout or error, ``fallback`` (fault noted)."""
    try:
        result = await asyncio.wait_for(call(), timeout_s)
        # On Python 3.11 wait_for swallows a cancellation that lands in the step the call
        # returns; the task's cancel request is still pending: honour it (a stopped runtime
        # otherwise ticked on and its shutdown hung, issue 8).
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
    except TimeoutError:
        book.fault(kind, device, f"no answer within {timeout_s:g} s")
        return fallback
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a device must never take the loop down
        book.fault(kind, device, f"{type(exc).__name__}: {exc}")
        return fallback
    book.ok(device)
    return result
