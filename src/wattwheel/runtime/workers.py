"""Per-device tasks that run beside the fast loop while :meth:`Runtime.run` runs.

A flywheel controller is read and commanded by its own task: the tick takes the latest status
(stale once older than its age limit) and hands over the setpoint it wants, the newest value
replacing one not yet sent. A request is never cancelled half-way by a tick deadline (a Modbus
client that loses a response mid-flight can mis-pair the next ones); the client's own timeout
bounds it, and a generous backstop bounds a client that has none.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import os
import threading
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from wattwheel.runtime.clock import Clock
from wattwheel.runtime.faults import FaultBook, guarded
from wattwheel.runtime.ports import FlywheelPort, FlywheelStatusW

T = TypeVar("T")


class FlywheelWorker:
    """Reads one bank every ``period_s`` and writes the latest requested setpoint (W)."""

    def __init__(
        self,
        name: str,
        port: FlywheelPort,
        book: FaultBook,
        clock: Clock,
        period_s: float,
        backstop_s: float = 5.0,
    ) -> None:
        self.name = name
        self.port = port
        self.book = book
        self.clock = clock
        self.period_s = period_s
        self.backstop_s = backstop_s
        self.latest: FlywheelStatusW | None = None
        self.read_at_s = -math.inf
        self._want: float | None = None
        self._wake = asyncio.Event()
        self.writes = 0

    def status(self, max_age_s: float) -> FlywheelStatusW | None:
        """The latest good status, marked stale when older than ``max_age_s``."""
        if self.latest is None:
            return None
        if self.clock.monotonic_s() - self.read_at_s > max_age_s:
            return replace(self.latest, stale=True)
        return self.latest

    def submit(self, power_w: float) -> None:
        """Ask for ``power_w`` (+ discharge / - charge); replaces a value not yet written."""
        self._want = power_w
        self._wake.set()

    async def run(self) -> None:
        # A task group: if one half crashes, the other is cancelled too (a supervisor then
        # restarts both; a gather would leave the survivor running beside the restarted pair).
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read_forever())
            group.create_task(self._write_forever())

    async def _read_forever(self) -> None:
        none: FlywheelStatusW | None = None
        while True:
            started = self.clock.monotonic_s()
            st = await guarded(
                self.book, "device", f"flywheel:{self.name}", self.port.read, self.backstop_s, none
            )
            if st is not None and not st.stale:
                self.latest, self.read_at_s = st, self.clock.monotonic_s()
            await self.clock.sleep(self.period_s - (self.clock.monotonic_s() - started))

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._want is None:
                continue
            value, self._want = self._want, None
            await guarded(
                self.book,
                "device",
                f"flywheel:{self.name}/setpoint",
                functools.partial(self._write, value),
                self.backstop_s,
                False,
            )

    async def _write(self, power_w: float) -> bool:
        if not await self.port.write_setpoint(power_w):
            raise ConnectionError(f"setpoint {power_w:.0f} W not accepted")
        self.writes += 1
        return True


class PollerThread:
    """An event loop in its own thread for the telemetry pollers.

    Parsing a burst of replies (240 Redfish resources, SNMP walks) is CPU work; on the fast
    loop's event loop it would delay a tick by the whole burst, in a thread only by the
    interpreter's switch interval. Sources polled here must not be used from the main loop.
    """

    def __init__(self, name: str = "wattwheel-pollers") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._futures: list[concurrent.futures.Future[None]] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._futures.append(future)
        return future

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel the pollers and end the thread."""
        for future in self._futures:
            future.cancel()
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


class LoopThread:
    """An event loop in its own thread for ``serve``'s control side (runtime, elector,
    ingesters), so that nothing the HTTP server's loop does (a request being read or parsed, a
    slow handler) can delay a tick. Clients that bind to an event loop when they are built
    (pymodbus) must be built on this loop: :meth:`run` a coroutine that builds them.
    :meth:`stop` cancels what was submitted, waits for its ``finally`` blocks (demotion, flush,
    closing clients), then ends the thread."""

    def __init__(self, name: str = "wattwheel-control") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the thread's loop (a task :meth:`stop` cancels and waits for)."""

        async def tracked() -> T:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            return await coro

        return asyncio.run_coroutine_threadsafe(tracked(), self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the thread's loop, from another event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout_s: float = 15.0) -> None:
        """Cancel what was submitted, wait for it to wind down, end the thread (blocking: from
        an event loop, call it in a worker thread)."""

        async def cancel_all() -> None:
            tasks = [t for t in self._tasks if not t.done()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive() and self.loop.is_running():
            with contextlib.suppress(Exception):  # timed out or the loop went away
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout_s)
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


#: How much lower than the fast loop the planning threads run (Linux nice steps).
PLANNING_NICE = 10


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's scheduling priority (Linux: niceness is per thread); a
    platform or sandbox that does not allow it leaves the thread as it is."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


def planning_executor(
    name: str = "wattwheel-plan", workers: int = 2, nice: int = PLANNING_NICE
) -> concurrent.futures.ThreadPoolExecutor:
    """Threads for forecasting and planning, ``nice`` steps below the loop's: a MILP solving
    (it releases the interpreter lock) competes for a core with the fast loop of its own and
    of the other shard processes, and the OS then runs the ticks first."""
    return concurrent.futures.ThreadPoolExecutor(
        workers, thread_name_prefix=name, initializer=_lower_priority, initargs=(nice,)
    )
