"""The device-map watcher: untouched or rewritten with the same bytes is fine; changed or gone is
a problem, reported once; back to the wired content clears it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from wattwheel.adapters.devicemap_watch import DeviceMapWatch


def test_changes_are_reported_once_and_cleared(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text('{"redfish": {"url": "http://127.0.0.1:4001"}}')
    seen: list[str | None] = []
    watch = DeviceMapWatch(path, seen.append)
    watch.report(watch.check())
    assert seen == []
    path.write_text('{"redfish":  {"url": "http://127.0.0.1:4001"}}')  # same map, new bytes
    watch.report(watch.check())
    assert seen == []
    path.write_text('{"redfish": {"url": "http://127.0.0.1:4999"}}')  # restarted, new port
    os.utime(path, ns=(1, 1))  # any move of mtime or size makes it read the map again
    watch.report(watch.check())
    watch.report(watch.check())
    assert len(seen) == 1 and seen[0] is not None and "changed since serve started" in seen[0]
    path.unlink()
    watch.report(watch.check())
    assert seen[-1] is not None and "is gone" in seen[-1]
    path.write_text('{"redfish": {"url": "http://127.0.0.1:4001"}}')
    watch.report(watch.check())
    assert seen[-1] is None and len(seen) == 3


def test_run_polls_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text("{}")
    seen: list[str | None] = []
    watch = DeviceMapWatch(path, seen.append, period_s=0.01)

    async def scenario() -> None:
        task = asyncio.ensure_future(watch.run())
        path.write_text('{"changed": true}')
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert seen and seen[0] is not None


def test_the_baseline_is_the_map_serve_was_wired_from(tmp_path: Path) -> None:
    # The file changed between serve reading it and the watcher starting: still reported.
    path = tmp_path / "devices.json"
    path.write_text('{"port": 2}')
    seen: list[str | None] = []
    watch = DeviceMapWatch(path, seen.append, wired={"port": 1})
    watch.report(watch.check())
    assert seen and seen[0] is not None
    path.write_text("{not json")
    assert "cannot be read as JSON" in str(watch.check())
