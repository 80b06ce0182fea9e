"""``serve --api-nice / --api-cpus``: the CPU split (pure), and a real API process started by
:class:`ApiProcess` with a niceness and a CPU set, read back from ``/proc`` for every thread."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wattwheel.adapters.store import MemoryStore
from wattwheel.api.context import ApiContext
from wattwheel.api.desk import LocalDesk
from wattwheel.api.host import ApiProcess, listen_socket
from wattwheel.api.placement import describe, parse_cpus, split_cpus
from wattwheel.runtime.state import Overrides
from wattwheel.runtime.state_mirror import MirroredLiveState, StateMirror


def test_cpu_lists_parse_like_the_kernels() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2-3") == {0, 2, 3}
    assert parse_cpus(" 4 - 5 ,7") == {4, 5, 7}
    for bad in ("", "a", "1-", "-1", "3-2", "1,,2", "1.5"):
        with pytest.raises(ValueError, match="not a CPU list"):
            parse_cpus(bad)


def test_auto_gives_the_api_the_last_cpu_and_the_loop_the_others() -> None:
    assert split_cpus("auto", {0, 1}) == ({0}, {1})
    assert split_cpus("AUTO", {0, 1, 2, 3}) == ({0, 1, 2}, {3})
    assert split_cpus("auto", {2, 5}) == ({2}, {5})  # serve itself restricted (taskset)
    assert split_cpus("auto", {0}) is None  # one CPU: nothing to split
    assert split_cpus("off", {0, 1, 2, 3}) is None


def test_an_explicit_list_must_leave_the_loop_a_cpu_it_may_use() -> None:
    assert split_cpus("2-3", {0, 1, 2, 3}) == ({0, 1}, {2, 3})
    assert split_cpus("0", {0, 1}) == ({1}, {0})
    with pytest.raises(ValueError, match="not available"):
        split_cpus("4", {0, 1, 2, 3})
    with pytest.raises(ValueError, match="leaves no CPU to the control loop"):
        split_cpus("0-1", {0, 1})
    with pytest.raises(ValueError, match="not a CPU list"):
        split_cpus("fast", {0, 1})
    assert "control loop on CPU 0,1, API process on CPU 2,3" in describe(({0, 1}, {2, 3}))


def _threads(pid: int) -> list[int]:
    return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]


def _nice(pid: int) -> int:
    """Field 19 of /proc/PID/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
@pytest.mark.timeout(120)
def test_the_api_process_runs_at_the_niceness_and_on_the_cpus_it_was_given() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    api_cpus = cpus[-1:]  # one CPU (the only one on a 1-CPU host: still a real mask)
    state = MirroredLiveState(["pdu1"], StateMirror())
    store, overrides = MemoryStore(), Overrides()
    ctx = ApiContext(state, store, overrides, time.time, "demo")
    init = {
        "tokens": {},
        "anonymous_read": True,
        "site_name": "demo",
        "domain_ids": ["pdu1"],
        "db_url": "memory://",
        "max_body_bytes": 65536,
        "keepalive_s": 15.0,
        "log_level": "WARNING",
        "nice": 7,
        "cpus": api_cpus,
    }
    listen = listen_socket("127.0.0.1", 0)
    api = ApiProcess(listen, init, state, LocalDesk(ctx), store, lambda: _extras(ctx))
    api.start()
    try:
        deadline = time.monotonic() + 60
        while api.health()["pid"] is None or not api._beats:  # serving: all threads started
            assert time.monotonic() < deadline, api.health()
            time.sleep(0.1)
        pid = int(api.health()["pid"])
        assert _nice(pid) == os.nice(0) + 7
        threads = _threads(pid)
        assert len(threads) >= 2  # the channel reader and uvicorn's loop at least
        for tid in threads:
            assert sorted(os.sched_getaffinity(tid)) == api_cpus, tid
            assert _nice(tid) == os.nice(0) + 7, tid
    finally:
        api.stop()
        listen.close()


def _extras(ctx: ApiContext) -> dict[str, object]:
    return {
        "leadership": None,
        "tasks": [],
        "disagreements": None,
        "store": ctx.store_health(),
        "overrides": [],
        "learning": None,
    }
