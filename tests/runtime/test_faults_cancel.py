"""A guarded device call honours its task's cancellation even when asyncio.wait_for swallowed
it (Python 3.11: the call's result and the cancel landed in the same loop step). A runtime
stopped in that step ticked on and whoever awaited it hung (issue 8, broker-restart test)."""

from __future__ import annotations

import asyncio

from wattwheel.runtime.faults import FaultBook, guarded


async def test_guarded_honours_a_cancellation_its_wait_swallowed() -> None:
    ready = asyncio.Event()
    after: list[str] = []

    async def device_read() -> int:
        await ready.wait()
        return 1

    async def ticking() -> None:
        while True:
            await guarded(FaultBook(), "device", "d", device_read, 5.0, 0)
            after.append("went on")
            await asyncio.Event().wait()  # an idle loop would wait here for ever

    task = asyncio.create_task(ticking())
    await asyncio.sleep(0.01)
    ready.set()
    task.cancel()  # same step as the result
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and after == [], "the cancelled task went on"
