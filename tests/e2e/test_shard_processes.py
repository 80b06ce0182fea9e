"""One process per shard, as a user runs it: ``wattwheel emulate`` (cella-oversub, three
domains, MQTT through a Mosquitto started here) and two ``wattwheel serve --shards 2
--only-shard sK`` processes. Each runs its shard's domains only, takes its racks' telemetry
only (its own MQTT topics and Redfish servers: nothing of the other shard reaches it to be
rejected), and is the only client that writes its domains' flywheels. With etcd, two processes
for the same shard elect one leader of it, and the other takes over when the leader dies; the
shard processes also elect one site coordinator (``test_shard_coordinator.py``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.etcd.etcd_server import ETCD, EtcdServer
from services import Mosquitto, free_port

pytestmark = [pytest.mark.service, pytest.mark.slow]

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]
SHARDS = {"s0": ["pdu6", "pdu7"], "s1": ["pdu8"]}
DEADLINE_S = 120.0  # generous: the machine may be loaded


def _start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            WATTWHEEL + args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _get(url: str) -> Any:
    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_two_shard_processes_each_run_and_command_their_own_domains(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    devices, writes = tmp_path / "devices.json", tmp_path / "writes.jsonl"
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "emulate.log"]
    try:
        procs.append(
            _start(
                [
                    "emulate",
                    "--speed",
                    "60",
                    "--devices",
                    str(devices),
                    "--mqtt-url",
                    f"127.0.0.1:{mosquitto.port}",
                    "--write-log",
                    str(writes),
                ],
                logs[0],
                tmp_path,
            )
        )
        deadline = time.monotonic() + 60
        while not devices.exists():
            assert procs[0].poll() is None, logs[0].read_text()[-3000:]
            assert time.monotonic() < deadline, "emulate wrote no device map within 60 s"
            time.sleep(0.2)
        device_map = json.loads(devices.read_text())
        units, rack_map = device_map["modbus"]["units"], device_map["domains"]
        urls = {}
        for shard in SHARDS:
            port = free_port()
            urls[shard] = f"http://127.0.0.1:{port}/api/v1"
            logs.append(tmp_path / f"serve-{shard}.log")
            procs.append(
                _start(
                    [
                        "serve",
                        "--devices",
                        str(devices),
                        "--port",
                        str(port),
                        "--db",
                        "memory://",
                        "--policy",
                        "reactive",
                        "--shards",
                        "2",
                        "--only-shard",
                        shard,
                    ],
                    logs[-1],
                    tmp_path,
                )
            )
        # Both shards tick on fresh telemetry of their own racks.
        deadline = time.monotonic() + DEADLINE_S
        status: dict[str, Any] = {}
        while True:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            status = {s: _get(f"{u}/status") for s, u in urls.items()}
            ready = all(
                st is not None
                and st["loop_latency_ms"]["count"] >= 10
                and st["telemetry_ingested"] > 0
                for st in status.values()
            )
            if ready:
                break
            assert time.monotonic() < deadline, f"shards not ticking on telemetry: {status}"
            time.sleep(1.0)
        for shard, domains in SHARDS.items():
            st = status[shard]
            assert st["domains"] == len(domains), st
            listed = _get(f"{urls[shard]}/domains")["domains"]
            assert sorted(d["domain_id"] for d in listed) == domains, listed
            # Nothing of the other shard reached this process to be rejected (without its own
            # topics, the other shard's racks arrive, and are refused as unknown or absurd).
            others = [r for d, racks in rack_map.items() if d not in domains for r in racks]
            events = _get(f"{urls[shard]}/events?kind=telemetry&limit=1000")["events"]
            assert not [e for e in events if any(r in e["message"] for r in others)], events
            roles = [r["role"] for r in st["leadership"] or []]
            assert roles == [shard], st["leadership"]
        # Each flywheel is written by one process: the one running its domain's shard.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            rows = [json.loads(line) for line in writes.read_text().splitlines() if line]
            by_unit: dict[int, set[str]] = {}
            for row in rows:
                by_unit.setdefault(int(row["unit"]), set()).add(str(row["peer"]))
            if set(by_unit) == {int(u) for u in units.values()}:
                break
            assert time.monotonic() < deadline, f"flywheels not all commanded: {by_unit}"
            time.sleep(1.0)
        writers: dict[int, set[str]] = {}
        for row in rows:
            writers.setdefault(int(row["unit"]), set()).add(str(row["peer"]))
        s0_units = {int(units[d]) for d in SHARDS["s0"]}
        s1_units = {int(units[d]) for d in SHARDS["s1"]}
        s0_clients = set().union(*(writers[u] for u in s0_units))
        s1_clients = set().union(*(writers[u] for u in s1_units))
        assert s0_clients and s1_clients and not s0_clients & s1_clients, writers
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for log in logs:  # shown by pytest when the test failed
            if log.exists():
                print(f"----- {log.name}\n{log.read_text()[-3000:]}")


def _emulate(
    tmp_path: Path, args: list[str], logs: list[Path]
) -> tuple[subprocess.Popen[bytes], Path]:
    devices = tmp_path / "devices.json"
    logs.append(tmp_path / "emulate.log")
    proc = _start(
        ["emulate", "--speed", "60", "--devices", str(devices), *args], logs[-1], tmp_path
    )
    deadline = time.monotonic() + 60
    while not devices.exists():
        assert proc.poll() is None, logs[-1].read_text()[-3000:]
        assert time.monotonic() < deadline, "emulate wrote no device map within 60 s"
        time.sleep(0.2)
    return proc, devices


def _leading(url: str) -> list[str] | None:
    st = _get(f"{url}/status")
    if st is None:
        return None
    return [r["role"] for r in st["leadership"] or [] if r["leading"]]


def test_two_processes_of_one_shard_elect_one_leader_and_fail_over(tmp_path: Path) -> None:
    if not Path(ETCD).exists():
        pytest.skip(f"etcd binary not found at {ETCD}")
    etcd = EtcdServer(tmp_path / "etcd")
    (tmp_path / "etcd").mkdir()
    etcd.start()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        emulator, devices = _emulate(tmp_path, ["--no-mqtt"], logs)
        procs.append(emulator)
        urls: dict[str, str] = {}
        for name, shard in (("s0", "s0"), ("s1-a", "s1"), ("s1-b", "s1")):
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}/api/v1"
            logs.append(tmp_path / f"serve-{name}.log")
            procs.append(
                _start(
                    [
                        "serve",
                        "--devices",
                        str(devices),
                        "--port",
                        str(port),
                        "--db",
                        "memory://",
                        "--policy",
                        "reactive",
                        "--etcd",
                        etcd.url,
                        "--instance-id",
                        name,
                        "--lease-ttl-s",
                        "3",
                        "--device-timeout",
                        "0.5",
                        "--shards",
                        "2",
                        "--only-shard",
                        shard,
                    ],
                    logs[-1],
                    tmp_path,
                )
            )
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            leading = {name: _leading(url) for name, url in urls.items()}
            shards = {
                n: [r for r in (roles or []) if r != "coordinator"] for n, roles in leading.items()
            }
            pair = [shards["s1-a"], shards["s1-b"]]
            one_of_pair = None not in leading.values() and sorted(pair, key=len) == [[], ["s1"]]
            coordinators = [n for n, roles in leading.items() if "coordinator" in (roles or [])]
            if shards["s0"] == ["s0"] and one_of_pair and len(coordinators) == 1:
                break
            assert time.monotonic() < deadline, f"no single leader per role: {leading}"
            time.sleep(0.5)
        # Every shard process campaigns for the site coordinator role too (reserve budgets).
        for url in urls.values():
            roles = [r["role"] for r in _get(f"{url}/status")["leadership"]]
            assert "coordinator" in roles, roles
        leader = "s1-a" if shards["s1-a"] == ["s1"] else "s1-b"
        other = "s1-b" if leader == "s1-a" else "s1-a"
        victim = procs[1 + list(urls).index(leader)]
        victim.kill()
        victim.wait(timeout=10)
        deadline = time.monotonic() + DEADLINE_S
        while "s1" not in (_leading(urls[other]) or []):
            assert time.monotonic() < deadline, f"{other} did not take over s1"
            time.sleep(0.5)
        # s0 leads its shard throughout, or again after a starved moment (a process starved
        # past the lease margin demotes itself and re-leads; one whose flywheel writes kept
        # failing on a loaded box resigns and campaigns again after 30 s: docs/redundancy.md).
        deadline = time.monotonic() + 60.0
        while "s0" not in (_leading(urls["s0"]) or []):
            assert time.monotonic() < deadline, "s0 does not lead its shard"
            time.sleep(0.5)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        etcd.stop()
        for log in logs:  # shown by pytest when the test failed
            if log.exists():
                print(f"----- {log.name}\n{log.read_text()[-3000:]}")


def _port_with_two_free_above() -> int:
    for _ in range(100):
        port = free_port()
        try:
            for k in (1, 2):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + k))
        except OSError:
            continue
        return port
    raise RuntimeError("no three consecutive free ports")


def test_serve_spawn_starts_one_process_per_shard_and_stops_them(tmp_path: Path) -> None:
    port = _port_with_two_free_above()  # the shard processes take port + 1 and port + 2
    log = tmp_path / "serve-spawn.log"
    parent = _start(
        ["serve", "--db", "memory://", "--policy", "reactive", "--shards", "2", "--spawn",
         "--port", str(port)],
        log,
        tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert parent.poll() is None, log.read_text()[-3000:]
            status = [_get(f"http://127.0.0.1:{port + k}/api/v1/status") for k in (1, 2)]
            if all(st is not None and st["loop_latency_ms"]["count"] >= 3 for st in status):
                break
            assert time.monotonic() < deadline, f"shard processes not ticking: {status}"
            time.sleep(0.5)
        assert [st["domains"] for st in status] == [2, 1]  # cella-oversub: pdu6,pdu7 | pdu8
        assert [[r["role"] for r in st["leadership"]] for st in status] == [["s0"], ["s1"]]
    finally:
        parent.send_signal(signal.SIGINT)  # passed on to the shard processes
        code = parent.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    for k in (1, 2):
        assert _get(f"http://127.0.0.1:{port + k}/api/v1/status") is None
