"""Forecasting and planning run in threads below the fast loop's OS priority (issue 11: ten
shard processes' solves must not hold the cores their ticks wait for)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from wattwheel.runtime.workers import planning_executor

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's"
)


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_planning_threads_run_below_the_loop() -> None:
    executor = planning_executor(nice=3)
    try:
        theirs = executor.submit(_nice).result(timeout=10)
    finally:
        executor.shutdown()
    assert theirs == min(_nice() + 3, 19)
    assert _nice() == os.getpriority(os.PRIO_PROCESS, 0)  # the caller's own is untouched
