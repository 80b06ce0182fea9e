"""The site coordinator among shard processes, as a user runs it: its own etcd, ``wattwheel
emulate`` and two ``wattwheel serve --shards 2 --only-shard sK --etcd`` processes. One of them
holds the coordinator role and publishes reserve budgets that sum to the reserve's capacity;
``kill -9`` of that process hands the role to the other, whose budgets resume (the dead shard
is held at its static share); with etcd frozen past ``--budget-ttl-s`` the shard falls back to
its static share (status and an event) and returns to budgets when etcd answers again.

``pytest -s`` prints one JSON line with the measured figures."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.etcd.etcd_server import ETCD, EtcdServer
from e2e.test_shard_processes import DEADLINE_S, _emulate, _get, _start, _stop
from services import free_port

pytestmark = [pytest.mark.service, pytest.mark.slow]

BUDGET_TTL_S = 6.0
LEASE_TTL_S = 2


def _budget(url: str) -> dict[str, Any] | None:
    st = _get(f"{url}/status")
    return None if st is None else st.get("reserve_budget")


def _serve(devices: Path, etcd_url: str, name: str, port: int) -> list[str]:
    return [
        "serve", "--devices", str(devices), "--port", str(port), "--db", "memory://",
        "--policy", "reactive", "--etcd", etcd_url, "--instance-id", name,
        "--lease-ttl-s", str(LEASE_TTL_S), "--device-timeout", "0.5", "--shards", "2",
        "--only-shard", name, "--budget-ttl-s", str(BUDGET_TTL_S),
    ]  # fmt: skip


def test_coordinator_budgets_fail_over_and_fall_back(tmp_path: Path) -> None:
    if not Path(ETCD).exists():
        pytest.skip(f"etcd binary not found at {ETCD}")
    (tmp_path / "etcd").mkdir()
    etcd = EtcdServer(tmp_path / "etcd")
    etcd.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[Path] = []
    figures: dict[str, Any] = {}
    try:
        emulator, devices = _emulate(tmp_path, ["--no-mqtt"], logs)
        procs["emulate"] = emulator
        urls: dict[str, str] = {}
        for name in ("s0", "s1"):
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}/api/v1"
            logs.append(tmp_path / f"serve-{name}.log")
            procs[name] = _start(_serve(devices, etcd.url, name, port), logs[-1], tmp_path)

        # Both shards run on the budgets of one coordinator.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for proc, log in zip(procs.values(), logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            budgets = {s: _budget(u) for s, u in urls.items()}
            if all(b is not None and b["source"] == "coordinator" for b in budgets.values()):
                holders = {b["coordinator"] for b in budgets.values() if b is not None}
                if len(holders) == 1:
                    break
            assert time.monotonic() < deadline, f"no budgets from a coordinator: {budgets}"
            time.sleep(0.5)
        coordinator = holders.pop()
        survivor = "s1" if coordinator == "s0" else "s0"
        # The coordinator process leads its shard and the coordinator role (waited for: on a
        # starved box a process can demote itself for a moment and lead again).
        deadline = time.monotonic() + 30.0
        while True:
            st = {s: _get(f"{u}/status") for s, u in urls.items()}
            leading = [r["role"] for r in st[coordinator]["leadership"] if r["leading"]]
            if (
                sorted(leading) == sorted([coordinator, "coordinator"])
                and st[coordinator]["reserve_budget"]["coordinating"]
                and not st[survivor]["reserve_budget"]["coordinating"]
            ):
                break
            assert time.monotonic() < deadline, (leading, st)
            time.sleep(0.2)
        b = st[coordinator]["reserve_budget"]
        capacity = b["capacity_kw"]
        assert set(b["budgets_kw"]) == {"s0", "s1"}
        assert sum(b["budgets_kw"].values()) <= capacity + 0.01
        # Each shard's static share is below the whole reserve (cella-oversub: 2 + 1 domains).
        static = {s: st[s]["reserve_budget"]["static_kw"] for s in urls}
        assert sum(static.values()) == pytest.approx(capacity, abs=0.01)
        assert all(0 < v < capacity for v in static.values()), static
        first_version = st[survivor]["reserve_budget"]["version"]

        # kill -9 the coordinator: the survivor takes the role and its budgets resume.
        procs[coordinator].kill()
        killed_at = time.monotonic()
        procs[coordinator].wait(timeout=10)
        fell_back = False
        deadline = time.monotonic() + DEADLINE_S
        while True:
            b = _budget(urls[survivor])
            if b is not None:
                fell_back = fell_back or b["source"] == "fallback"
                if b["source"] == "coordinator" and b["coordinator"] == survivor:
                    break
            assert time.monotonic() < deadline, f"{survivor} did not take over: {b}"
            time.sleep(0.05)
        figures["coordinator_failover_s"] = round(time.monotonic() - killed_at, 2)
        figures["fell_back_during_failover"] = fell_back
        assert b["version"] != first_version and b["coordinating"], b
        # The dead shard's summary goes with its lease: its static share is held for it.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            b = _budget(urls[survivor])
            assert b is not None
            if b["basis"] and b["basis"].get(coordinator) == "static":
                break
            assert time.monotonic() < deadline, f"dead shard not held at static: {b}"
            time.sleep(0.2)
        figures["dead_shard_static_after_s"] = round(time.monotonic() - killed_at, 2)
        assert b["budgets_kw"][coordinator] == pytest.approx(static[coordinator], abs=0.01)
        assert sum(b["budgets_kw"].values()) <= capacity + 0.01

        # etcd frozen past the TTL: the shard falls back to its static share, never the whole.
        assert etcd.proc is not None
        etcd.proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            deadline = time.monotonic() + DEADLINE_S
            while True:
                b = _budget(urls[survivor])
                if b is not None and b["source"] == "fallback":
                    break
                assert time.monotonic() < deadline, f"no fallback with etcd frozen: {b}"
                time.sleep(0.1)
            figures["fallback_after_freeze_s"] = round(time.monotonic() - frozen_at, 2)
            assert b["budget_kw"] == pytest.approx(static[survivor], abs=0.01)
            assert "silent" in b["reason"], b
            metrics = httpx.get(urls[survivor].replace("/api/v1", "/metrics"), timeout=5.0).text
            assert f'wattwheel_reserve_budget_fallback{{shard="{survivor}"}} 1.0' in metrics
        finally:
            etcd.proc.send_signal(signal.SIGCONT)
        thawed_at = time.monotonic()
        deadline = time.monotonic() + DEADLINE_S
        while True:
            b = _budget(urls[survivor])
            if b is not None and b["source"] == "coordinator":
                break
            assert time.monotonic() < deadline, f"budgets did not resume after etcd: {b}"
            time.sleep(0.1)
        figures["budgets_resumed_after_thaw_s"] = round(time.monotonic() - thawed_at, 2)
        events = _get(f"{urls[survivor]}/events?limit=1000")["events"]
        kinds = [e["kind"] for e in events]
        assert "coordination.fallback" in kinds and "coordination.budget" in kinds, kinds
        print(json.dumps(figures))
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)
        etcd.stop()
        for log in logs:  # shown by pytest when the test failed
            if log.exists():
                print(f"----- {log.name}\n{log.read_text()[-3000:]}")
