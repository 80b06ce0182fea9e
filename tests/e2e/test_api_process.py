"""``wattwheel serve`` runs its HTTP API in a child process (issue 7 item 4), checked on real
processes: a ``serve`` on a device map with no devices (the modelled plant; the API's checks do
not need devices), its own SQLite store and tokens, the API process restarted after 3 s of
silence (``--api-stall-s 3``).

- Operator commands cross the process boundary with their semantics: 201 and the override read
  back at once (overrides, events), 404 for an unknown domain, 401 before the body, 413 over
  64 KiB, 422 for a non-finite cap.
- The API process killed with SIGKILL is restarted; ``/api/v1/status`` shows it (``tasks``:
  ``api-process`` with its restarts and last error, a ``task.crash`` event); the decisions
  (read from the database, beside the API) kept coming meanwhile.
- The API process stopped (SIGSTOP: blocked, its socket full) never stops the loop: decisions
  keep coming, and after 3 s without a heartbeat it is killed and replaced.
- ``serve`` killed with SIGKILL leaves no API process behind.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import free_port
from wattwheel.cli.live_wiring import DEVICE_MAP_FORMAT
from wattwheel.runtime.inventory import default_inventory
from wattwheel.sim.scenario import bundled_site, load_scenario

pytestmark = [pytest.mark.service, pytest.mark.slow, pytest.mark.timeout(300)]

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
OPERATOR = "apiproc-operator-token-0123"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}
MAX_GAP_S = 3.0


def _device_map() -> str:
    site = load_scenario(bundled_site(), None).site
    inventory = default_inventory(site, 100.0, 2000.0)
    return json.dumps(
        {
            "format": DEVICE_MAP_FORMAT,
            "inventory": inventory.to_json(),
            "domains": {
                d: list(r) for d, r in zip(site.domain_names, site.domain_racks, strict=True)
            },
        }
    )


def _until(what: str, timeout_s: float, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.25)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Served:
    url: str
    db: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}/api/v1{path}", params=params, headers=AUTH, timeout=10)
        r.raise_for_status()
        return r.json()

    def status(self) -> dict[str, Any] | None:
        """/status, or None while the API does not answer."""
        try:
            return dict(self.get("/status"))
        except httpx.HTTPError:
            return None

    def api_task(self) -> dict[str, Any] | None:
        st = self.status()
        if st is None:
            return None
        return next((t for t in st["tasks"] if t["name"] == "api-process"), None)

    def api_pid(self) -> int:
        task = _until("the API process's pid", 30, lambda: (self.api_task() or {}).get("pid"))
        return int(task)

    def decisions_between(self, t0: float, t1: float) -> list[float]:
        """Stamps of one domain's audit rows in [t0, t1] (read from the database directly)."""
        with sqlite3.connect(self.db, timeout=5) as con:
            rows = con.execute(
                "SELECT timestamp_s FROM decisions WHERE domain_id = 'pdu6' "
                "AND timestamp_s BETWEEN ? AND ? ORDER BY timestamp_s",
                (t0, t1),
            ).fetchall()
        return [float(t) for (t,) in rows]

    def assert_decided_throughout(self, t0: float, t1: float) -> None:
        def stored() -> list[float] | None:
            stamps = self.decisions_between(t0 - MAX_GAP_S, t1 + 5.0)
            return stamps if stamps and stamps[-1] >= t1 else None

        stamps = _until("audit rows past the window", 30, stored)
        window = [t0, *(t for t in stamps if t0 <= t <= t1), t1]
        gap = max(b - a for a, b in itertools.pairwise(window))
        assert gap < MAX_GAP_S, f"no decision for {gap:.1f} s while the API was down"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "tokens").write_text(f"o:operator:{OPERATOR}\n")
    devices = tmp_path / "devices.json"
    devices.write_text(_device_map())
    port, db, log = free_port(), tmp_path / "live.db", tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*WATTWHEEL, "serve", "--db", f"sqlite:///{db}", "--port", str(port),
             "--token-file", str(tmp_path / "tokens"), "--policy", "reactive",
             "--devices", str(devices), "--api-stall-s", "3"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    s = Served(f"http://127.0.0.1:{port}", db, proc, log)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            st = s.status()
            return st is not None and st["loop_latency_ms"]["count"] > 2 and db.exists()

        _until("serve answering with ticks", 90, ready)
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        print(f"----- serve.log\n{log.read_text(errors='replace')[-4000:]}")


def test_operator_commands_keep_their_semantics_across_the_process_boundary(
    served: Served,
) -> None:
    url = f"{served.url}/api/v1/overrides"
    body = {"domain_id": "pdu6", "action": "forbid", "reason": "test", "ttl_s": 600}
    r = httpx.post(f"{url}/reserve", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 201, r.text
    made = r.json()
    # Read back at once: the state the controller changed reached the API before the answer.
    assert [o["id"] for o in served.get("/overrides")["overrides"]] == [made["id"]]
    assert served.status()["overrides_active"] == 1  # type: ignore[index]
    kinds = [e["kind"] for e in served.get("/events", kind="override")["events"]]
    assert kinds[0] == "override.reserve"
    r = httpx.post(f"{url}/reserve", json={**body, "domain_id": "nowhere"}, headers=AUTH)
    assert r.status_code == 404, r.text
    r = httpx.post(f"{url}/reserve", json=body)  # no token
    assert r.status_code == 401
    big = b'{"reason": "' + b"x" * (64 * 1024) + b'"}'
    r = httpx.post(f"{url}/maintenance", content=big, headers=AUTH)
    assert r.status_code == 413
    nan = '{"scope": "domain", "target": "pdu6", "cap_kw": NaN, "reason": "x"}'
    r = httpx.post(f"{url}/cap", content=nan, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = httpx.delete(f"{url}/reserve/pdu6", headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == made["id"]
    assert served.get("/overrides")["overrides"] == []
    r = httpx.delete(f"{url}/reserve/pdu6", headers=AUTH)
    assert r.status_code == 404


def test_a_killed_api_process_is_restarted_and_shown_while_the_loop_goes_on(
    served: Served,
) -> None:
    pid = served.api_pid()
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        task = served.api_task()
        return task if task and task["restarts"] >= 1 and task["pid"] not in (None, pid) else None

    task = _until("a new API process", 60, restarted)
    t1 = time.time()
    assert "exited with code -9" in str(task["last_error"]), task
    events = served.get("/events", kind="task.crash")["events"]
    assert any("api-process" in e["message"] for e in events), events
    assert served.status()["errors"].get("task", 0) >= 1  # type: ignore[index]
    served.assert_decided_throughout(t0, max(t1, t0 + 3.0))
    assert served.proc.poll() is None


def test_a_blocked_api_process_never_stops_the_loop_and_is_replaced(served: Served) -> None:
    pid = served.api_pid()
    t0 = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(2.0)  # blocked for a while: nothing reads the state the loop sends
        # Decisions keep coming while the API is frozen (read beside it, from the database).
        served.assert_decided_throughout(t0, time.time())

        def replaced() -> dict[str, Any] | None:
            task = served.api_task()  # answers again once the new process serves
            return task if task and task["pid"] not in (None, pid) else None

        task = _until("the blocked API process replaced", 60, replaced)
        assert "did not answer" in str(task["last_error"]), task
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    served.assert_decided_throughout(t0, time.time())


def test_serve_killed_leaves_no_api_process_behind(served: Served) -> None:
    pid = served.api_pid()
    assert _alive(pid)
    served.proc.kill()
    served.proc.wait(10)
    _until("the API process gone with serve", 15, lambda: not _alive(pid))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.url}/api/v1/status", headers=AUTH, timeout=3)


def test_serve_stopped_with_sigterm_shuts_down_cleanly(served: Served) -> None:
    """As systemd or Kubernetes stop it: SIGTERM runs the same shutdown as Ctrl-C (the API
    process ended, the store flushed and closed), and serve exits 0."""
    pid = served.api_pid()
    _until("decisions stored", 30, lambda: served.decisions_between(0, time.time() + 10))
    t_signal = time.time()
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0, served.log.read_text(errors="replace")[-3000:]
    assert not _alive(pid)
    # What the loop decided up to the signal was flushed on the way out (one row per second).
    last = served.decisions_between(0, t_signal + 30)[-1]
    assert last >= t_signal - 2.0, f"last stored decision {t_signal - last:.1f} s before SIGTERM"


def _nice(pid: int) -> int:
    """Field 19 of /proc/PID/stat (a thread id works too)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _thread_cpus(pid: int) -> dict[int, list[int]]:
    """Every thread of ``pid``: the CPUs it may run on."""
    tasks = Path(f"/proc/{pid}/task")
    return {int(t.name): sorted(os.sched_getaffinity(int(t.name))) for t in tasks.iterdir()}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_the_api_process_runs_below_the_loop_and_on_a_cpu_of_its_own(served: Served) -> None:
    """serve's defaults (--api-nice 10, --api-cpus auto), read back from /proc: the API
    process 10 below serve; with 2+ CPUs every API thread on the last CPU and every thread of
    the control process on the others."""
    pid, control = served.api_pid(), served.proc.pid
    assert _nice(pid) == _nice(control) + 10
    cpus = sorted(os.sched_getaffinity(0))
    api_threads, control_threads = _thread_cpus(pid), _thread_cpus(control)
    assert len(control_threads) >= 3  # the main thread, the control loop, the pollers ...
    if len(cpus) < 2:
        assert all(c == cpus for c in [*api_threads.values(), *control_threads.values()])
        return
    assert all(c == cpus[-1:] for c in api_threads.values()), api_threads
    assert all(c == cpus[:-1] for c in control_threads.values()), control_threads
